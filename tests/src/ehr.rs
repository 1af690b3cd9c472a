//! A real EHR FHIR endpoint for the demo and the end-to-end tests: helios-hfs (FHIR R4, SQLite in
//! memory) on plain HTTP, behind Debian's nginx terminating TLS with a certificate from a private
//! EHR CA, the way many hospital FHIR servers sit behind a reverse proxy. nginx asks for (but
//! does not require) a client certificate, so integrations configured for mTLS show up in its
//! access log by name.
//!
//! Both processes run from a private directory (nginx with its own prefix and config; nothing
//! under /etc/nginx is read or written) and are stopped on drop.

pub mod certs;
mod search_parameters;

use std::{
    fs,
    net::{IpAddr, SocketAddr},
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU8, Ordering},
    time::Duration,
};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde_json::Value;

use self::certs::EhrCa;
use crate::{eventually, http1};

/// Whether helios-hfs and nginx are installed. Without them a laptop run skips (printing why);
/// with `CI` set this panics, because `cargo xtask setup` installs both.
#[must_use]
pub fn ehr_available(test: &str) -> bool {
    let missing: Vec<&str> = [("hfs", "--version"), ("nginx", "-v")]
        .into_iter()
        .filter(|(program, flag)| {
            !Command::new(program)
                .arg(flag)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|(program, _)| program)
        .collect();
    if missing.is_empty() {
        return true;
    }
    let reason = format!("needs {missing:?} on PATH (`cargo xtask setup` installs them)");
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: {reason}; CI must run the end-to-end tests, refusing to skip"
    );
    eprintln!("SKIPPED {test}: {reason}");
    false
}

/// Where the EHR's nginx checks bearer tokens (RFC 7662 introspection), and as whom.
#[derive(Clone, Debug)]
pub struct Introspection {
    /// The authorization server's address (plain HTTP on loopback).
    pub server: SocketAddr,
    pub client_id: String,
    pub client_secret: String,
    /// `Authorization` values let through without introspection: the static credentials an
    /// EHR still honours while it migrates (the demo's other integrations).
    pub legacy: Vec<String>,
}

/// A running hfs + nginx pair.
pub struct EhrServer {
    /// hfs itself, plain HTTP (not protected: only the TLS address is).
    pub http: SocketAddr,
    /// nginx, TLS: the address applications use and the policy protects.
    pub tls: SocketAddr,
    /// The EHR CA: trusted by the sidecar for this upstream; signs client certificates.
    pub ca: EhrCa,
    pub dir: PathBuf,
    introspection: Option<Introspection>,
    hfs: Option<Child>,
    nginx: Option<Child>,
}

/// A free port on a loopback address no other caller gets (`127.3.<pid>.<n>`): EHRs that tests
/// start side by side cannot end up on one address, where a readiness check would find another
/// test's server (a port found free on a shared address can be taken again before use).
///
/// # Panics
/// When no port is free there, or after 254 calls in one process.
#[must_use]
pub fn unique_loopback() -> SocketAddr {
    static NEXT: AtomicU8 = AtomicU8::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    assert!(n < 255, "out of unique loopback addresses");
    let pid = std::process::id().to_be_bytes();
    let ip = std::net::Ipv4Addr::new(127, 3, pid[3], n);
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("a free port on {ip}: {e}"))
}

impl EhrServer {
    /// Starts hfs on `http` and nginx on `tls` (both on loopback), everything under `dir`.
    pub fn start(dir: &Path, http: SocketAddr, tls: SocketAddr) -> anyhow::Result<Self> {
        Self::start_with(dir, http, tls, None)
    }

    /// Like [`EhrServer::start`]; with `introspection`, nginx lets a request through only when
    /// its bearer token is active at the authorization server (`auth_request` with njs), and
    /// logs the token and its client.
    pub fn start_with(
        dir: &Path,
        http: SocketAddr,
        tls: SocketAddr,
        introspection: Option<Introspection>,
    ) -> anyhow::Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let ca = EhrCa::create(&dir.join("pki"))?;
        let mut server = Self {
            http,
            tls,
            ca,
            dir: dir.to_owned(),
            introspection,
            hfs: None,
            nginx: None,
        };
        server.hfs = Some(server.spawn_hfs()?);
        server.wait_for_hfs()?;
        server.nginx = Some(server.spawn_nginx()?);
        server.wait_for_nginx()?;
        Ok(server)
    }

    /// `https://<ip>:<port>`, the FHIR base URL applications use.
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("https://{}", self.tls)
    }

    /// PUTs a resource with the id it carries straight to hfs (not through fhirwall): seeding
    /// data whose ids the tests name.
    pub fn put(&self, resource: &Value) -> anyhow::Result<Value> {
        let path = format!(
            "/{}/{}",
            resource["resourceType"].as_str().unwrap_or_default(),
            resource["id"].as_str().unwrap_or_default()
        );
        self.send("PUT", &path, resource)
    }

    /// POSTs a resource or a Bundle straight to hfs (not through fhirwall): seeding.
    pub fn post(&self, path: &str, resource: &Value) -> anyhow::Result<Value> {
        self.send("POST", path, resource)
    }

    fn send(&self, method: &'static str, path: &str, resource: &Value) -> anyhow::Result<Value> {
        let body = serde_json::to_vec(resource)?;
        let host = self.http.to_string();
        let response = http1::plain(
            self.http,
            &http1::Request {
                method,
                target: path,
                host: &host,
                headers: &[("Content-Type", "application/fhir+json")],
                body: Some(&body),
            },
        )?;
        if !(200..300).contains(&response.status) {
            bail!(
                "{method} {path} to hfs: {} {}",
                response.status,
                String::from_utf8_lossy(&response.body)
            );
        }
        Ok(response.json())
    }

    /// A GET straight to hfs (not through fhirwall): checking what the upstream holds.
    pub fn get(&self, target: &str) -> anyhow::Result<Value> {
        let host = self.http.to_string();
        let response = http1::plain(
            self.http,
            &http1::Request {
                method: "GET",
                target,
                host: &host,
                headers: &[("Accept", "application/fhir+json")],
                body: None,
            },
        )?;
        if response.status != 200 {
            bail!("GET {target} from hfs: {}", response.status);
        }
        Ok(response.json())
    }

    /// nginx's access log (method, path, status, client certificate subject per line).
    #[must_use]
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.dir.join("nginx/access.log")).unwrap_or_default()
    }

    fn spawn_hfs(&self) -> anyhow::Result<Child> {
        let home = self.dir.join("hfs");
        let data = home.join("data");
        fs::create_dir_all(&data)?;
        fs::write(
            data.join("search-parameters-r4.json"),
            serde_json::to_vec(&search_parameters::bundle())?,
        )?;
        let log = fs::File::create(home.join("hfs.log"))?;
        Command::new("hfs")
            .current_dir(&home)
            .args(["--host", &self.http.ip().to_string()])
            .args(["--port", &self.http.port().to_string()])
            .args(["--database-url", ":memory:"])
            .arg("--data-dir")
            .arg(&data)
            .args(["--base-url", &self.base_url()])
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a Ctrl-C meant for the demo must not stop the server
            // before the demo has shut the agent down.
            .process_group(0)
            .spawn()
            .context("starting hfs (helios FHIR server)")
    }

    fn wait_for_hfs(&mut self) -> anyhow::Result<()> {
        let ready = eventually(Duration::from_mins(1), || {
            if exited(&mut self.hfs) {
                return Some(false);
            }
            self.get("/metadata").ok().map(|_| true)
        });
        if ready != Some(true) {
            bail!(
                "hfs did not start on {}; its log:\n{}",
                self.http,
                fs::read_to_string(self.dir.join("hfs/hfs.log")).unwrap_or_default()
            );
        }
        Ok(())
    }

    fn spawn_nginx(&self) -> anyhow::Result<Child> {
        let prefix = self.dir.join("nginx");
        let temp = prefix.join("tmp");
        fs::create_dir_all(&temp)?;
        // nginx's workers run as nobody: they may have to spill a large body to a temp file.
        fs::set_permissions(&temp, fs::Permissions::from_mode(0o1777))?;
        let server = self.ca.server(&prefix, "ehr-fhir", self.tls.ip())?;
        if let Some(i) = &self.introspection {
            let legacy = format!("const LEGACY = {};\n", serde_json::to_string(&i.legacy)?);
            fs::write(prefix.join("introspect.js"), legacy + INTROSPECT_JS)?;
        }
        let config = nginx_config(&NginxSettings {
            prefix: &prefix,
            listen: self.tls,
            upstream: self.http,
            cert: &server.cert,
            key: &server.key,
            client_ca: &self.ca.cert,
            introspection: self.introspection.as_ref(),
        });
        let conf = prefix.join("nginx.conf");
        fs::write(&conf, config)?;
        Command::new("nginx")
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf)
            // Error log before the config is read: by default /var/log/nginx, not ours.
            .arg("-e")
            .arg(prefix.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(prefix.join("stderr.log"))?)
            .process_group(0)
            .spawn()
            .context("starting nginx")
    }

    fn wait_for_nginx(&mut self) -> anyhow::Result<()> {
        let tls = self.tls;
        let ready = eventually(Duration::from_secs(20), || {
            if exited(&mut self.nginx) {
                return Some(false);
            }
            std::net::TcpStream::connect_timeout(&tls, Duration::from_millis(200))
                .ok()
                .map(|_| true)
        });
        if ready != Some(true) {
            let prefix = self.dir.join("nginx");
            bail!(
                "nginx did not start on {tls}:\n{}{}",
                fs::read_to_string(prefix.join("stderr.log")).unwrap_or_default(),
                fs::read_to_string(prefix.join("error.log")).unwrap_or_default()
            );
        }
        Ok(())
    }
}

impl Drop for EhrServer {
    fn drop(&mut self) {
        // nginx first (its master stops its workers on SIGTERM; a SIGKILL would orphan them).
        stop(self.nginx.take());
        stop(self.hfs.take());
    }
}

fn exited(child: &mut Option<Child>) -> bool {
    child
        .as_mut()
        .is_some_and(|c| c.try_wait().ok().flatten().is_some())
}

/// SIGTERM, a grace period, then SIGKILL.
pub fn stop(child: Option<Child>) {
    let Some(mut child) = child else {
        return;
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    if eventually(Duration::from_secs(10), || child.try_wait().ok().flatten()).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

struct NginxSettings<'a> {
    prefix: &'a Path,
    listen: SocketAddr,
    upstream: SocketAddr,
    cert: &'a Path,
    key: &'a Path,
    client_ca: &'a Path,
    introspection: Option<&'a Introspection>,
}

/// nginx's token check (njs): `Authorization: Bearer <token>` is introspected at the
/// authorization server; 204 (with the token's client in `X-Token-Client`) when it is active,
/// 401 otherwise, which `auth_request` turns into the answer. A `LEGACY` value (defined before
/// this) passes as it is.
const INTROSPECT_JS: &str = r"
async function introspect(r) {
    if (LEGACY.includes(r.headersIn.Authorization)) {
        r.headersOut['X-Token-Client'] = 'legacy';
        r.return(204);
        return;
    }
    const m = /^Bearer ([A-Za-z0-9._~+\/=-]+)$/.exec(r.headersIn.Authorization || '');
    if (!m) {
        r.return(401);
        return;
    }
    const reply = await r.subrequest('/_introspect', {
        method: 'POST',
        body: 'token=' + encodeURIComponent(m[1]),
    });
    let info = {};
    try {
        info = JSON.parse(reply.responseText);
    } catch (e) {
        info = {};
    }
    if (reply.status != 200 || info.active !== true) {
        r.return(401);
        return;
    }
    r.headersOut['X-Token-Client'] = info.client_id;
    r.return(204);
}
export default { introspect };
";

/// The `load_module`, `js_import` and locations of the token check, when there is one.
fn introspection_config(prefix: &Path, i: Option<&Introspection>) -> (String, String, String) {
    let Some(i) = i else {
        return (String::new(), String::new(), String::new());
    };
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", i.client_id, i.client_secret));
    let load = "load_module /usr/lib/nginx/modules/ngx_http_js_module.so;\n".to_owned();
    let import = format!(
        "    js_import ehr from {}/introspect.js;\n",
        prefix.display()
    );
    let locations = format!(
        r#"        location = /_auth {{
            internal;
            js_content ehr.introspect;
        }}
        location = /_introspect {{
            internal;
            proxy_method POST;
            proxy_set_header Authorization "Basic {basic}";
            proxy_set_header Content-Type application/x-www-form-urlencoded;
            proxy_pass http://{server}/token/introspection;
        }}
"#,
        server = i.server,
    );
    (load, import, locations)
}

/// A TLS terminator in front of hfs: HTTP/1.1 keep-alive to hfs, bodies streamed both ways, the
/// client certificate (optional) checked against the EHR CA and logged.
fn nginx_config(s: &NginxSettings<'_>) -> String {
    let p = s.prefix.display();
    let listen = match s.listen.ip() {
        IpAddr::V4(ip) => format!("{ip}:{}", s.listen.port()),
        IpAddr::V6(ip) => format!("[{ip}]:{}", s.listen.port()),
    };
    let (load, import, check_locations) = introspection_config(s.prefix, s.introspection);
    let (check, token_fields) = if s.introspection.is_some() {
        (
            "            auth_request /_auth;\n            auth_request_set $token_client $sent_http_x_token_client;\n",
            r#" token_client="$token_client" authorization="$http_authorization""#,
        )
    } else {
        ("", "")
    };
    format!(
        r#"# Generated by fhirwall's demo/tests: a private nginx, nothing under /etc/nginx is used.
{load}daemon off;
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{ worker_connections 512; }}
http {{
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    log_format ehr '$time_iso8601 $request_method $uri $status client_cert="$ssl_client_s_dn"{token_fields}';
{import}
    access_log {p}/access.log ehr;
    client_max_body_size 64m;
    upstream hfs {{
        server {upstream};
        keepalive 16;
    }}
    server {{
        listen {listen} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_client_certificate {ca};
        ssl_verify_client optional;
{check_locations}        location / {{
{check}            proxy_pass http://hfs;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Proto https;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 120s;
        }}
    }}
}}
"#,
        upstream = s.upstream,
        cert = s.cert.display(),
        key = s.key.display(),
        ca = s.client_ca.display(),
    )
}
