//! A real HTTP forward proxy (Debian's tinyproxy, installed by `cargo xtask setup`) on a
//! loopback address of its own, for the egress proxy tests. Killed on drop.

use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::Context as _;

use crate::{TempDir, agent::free_port, eventually};

pub struct TinyProxy {
    pub addr: SocketAddr,
    child: Child,
    _dir: TempDir,
}

impl TinyProxy {
    /// Starts tinyproxy on `ip` and waits until it accepts connections.
    pub fn start(ip: [u8; 4]) -> anyhow::Result<Self> {
        let addr = SocketAddr::from((ip, free_port()?));
        let dir = TempDir::new("fhirwall-tinyproxy")?;
        let config = dir.0.join("tinyproxy.conf");
        // No ConnectPort line: CONNECT is allowed to every port, as on many hospital proxies.
        fs::write(
            &config,
            format!(
                "User nobody\nGroup nogroup\nPort {port}\nListen {ip}\nTimeout 30\nLogLevel Warning\n\
                 MaxClients 32\nAllow 127.0.0.0/8\n",
                port = addr.port(),
                ip = addr.ip(),
            ),
        )?;
        let child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting tinyproxy (installed by `cargo xtask setup`)")?;
        let proxy = Self {
            addr,
            child,
            _dir: dir,
        };
        eventually(Duration::from_secs(10), || TcpStream::connect(addr).ok())
            .context("tinyproxy does not accept connections")?;
        Ok(proxy)
    }

    /// From this (unredirected) process: the status line of a `CONNECT` to `target` and, when
    /// the tunnel opens, the answer to `send` through it.
    pub fn connect_through(&self, target: &str, send: &[u8]) -> anyhow::Result<(String, Vec<u8>)> {
        connect_through(self.addr, target, send)
    }
}

/// A `CONNECT` to `target` through the proxy at `proxy`: its status line and, when the tunnel
/// opens, what comes back for `send` (read until the server closes).
pub fn connect_through(
    proxy: SocketAddr,
    target: &str,
    send: &[u8],
) -> anyhow::Result<(String, Vec<u8>)> {
    let mut stream = TcpStream::connect(proxy)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"
    )?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    let mut reply = Vec::new();
    if status.contains(" 200 ") {
        // No half-close: tinyproxy ends the tunnel at the client's EOF. `send` asks the server
        // to close when done.
        stream.write_all(send)?;
        let _ = reader.read_to_end(&mut reply);
    }
    Ok((status.trim_end().to_owned(), reply))
}

impl Drop for TinyProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
