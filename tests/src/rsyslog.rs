//! A real Audit Record Repository for the central audit tests: Debian's rsyslog with its gnutls
//! driver, receiving RFC 5425 syslog over TLS on a loopback port and writing every message as
//! received (`RSYSLOG_SyslogProtocol23Format`) to one file. Runs from its own directory and
//! config (nothing under /etc/rsyslog* is used); stopped on drop.

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{eventually, pki::TestPki};

pub struct Rsyslog {
    pub addr: SocketAddr,
    /// The CA the repository's certificate is signed by (what the exporter trusts).
    pub ca_file: PathBuf,
    /// What it received, one message per line.
    pub file: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
}

/// Whether rsyslogd with its gnutls driver is installed; a laptop without it skips (printing
/// why), CI fails (`cargo xtask setup` installs both).
#[must_use]
pub fn available(test: &str) -> bool {
    let package = |name: &str| {
        Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", name])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
    };
    let installed = Path::new("/usr/sbin/rsyslogd").exists() && package("rsyslog-gnutls");
    if installed {
        return true;
    }
    let reason = "needs rsyslog and rsyslog-gnutls (`cargo xtask setup` installs them)";
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: {reason}; CI must run it, refusing to skip"
    );
    eprintln!("SKIPPED {test}: {reason}");
    false
}

impl Rsyslog {
    /// Starts rsyslogd listening with TLS on `addr`, everything under `dir`.
    pub fn start(dir: &Path, addr: SocketAddr) -> anyhow::Result<Self> {
        fs::create_dir_all(dir)?;
        let pki = TestPki::new(&dir.join("pki"), "fhirwall test repository CA")?;
        let server = pki.server(&["localhost", &addr.ip().to_string()])?;
        let file = dir.join("received.log");
        let config = format!(
            r#"# Written by fhirwall's tests: a private rsyslogd.
global(
  workDirectory="{dir}"
  maxMessageSize="64k"
  defaultNetstreamDriver="gtls"
  defaultNetstreamDriverCAFile="{ca}"
  defaultNetstreamDriverCertFile="{cert}"
  defaultNetstreamDriverKeyFile="{key}"
)
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imtcp" address="{ip}" port="{port}")
action(type="omfile" file="{file}" template="RSYSLOG_SyslogProtocol23Format")
"#,
            dir = dir.display(),
            ca = pki.ca_file.display(),
            cert = server.cert_file.display(),
            key = server.key_file.display(),
            ip = addr.ip(),
            port = addr.port(),
            file = file.display(),
        );
        fs::write(dir.join("rsyslog.conf"), config)?;
        let mut rsyslog = Self {
            addr,
            ca_file: pki.ca_file.clone(),
            file,
            dir: dir.to_owned(),
            child: None,
        };
        rsyslog.restart()?;
        Ok(rsyslog)
    }

    /// Stops rsyslogd (SIGTERM: it closes its connections and exits).
    pub fn stop(&mut self) {
        crate::ehr::stop(self.child.take());
    }

    /// Starts rsyslogd again (stopping it first if it runs).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let child = crate::spawn_server(
            Command::new("/usr/sbin/rsyslogd")
                .arg("-n")
                .arg("-f")
                .arg(self.dir.join("rsyslog.conf"))
                .arg("-i")
                .arg(self.dir.join("rsyslogd.pid")),
            &self.dir.join("rsyslogd.log"),
        )
        .context("starting rsyslogd")?;
        self.child = Some(child);
        let addr = self.addr;
        let ready = eventually(Duration::from_secs(20), || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                .ok()
                .map(|_| ())
        });
        if ready.is_none() {
            bail!(
                "rsyslogd did not listen on {addr}:\n{}",
                fs::read_to_string(self.dir.join("rsyslogd.log")).unwrap_or_default()
            );
        }
        Ok(())
    }

    /// What it has written so far, one message per line.
    #[must_use]
    pub fn received(&self) -> Vec<String> {
        fs::read_to_string(&self.file)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}
