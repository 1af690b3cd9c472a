//! Egress proxies: a workload's connections to a configured HTTP proxy are redirected to the
//! sidecar like FHIR connections, because a proxy is another way to the EHR.
//!
//! Only `CONNECT` tunnels are relayed, and only to a destination that is not protected: the
//! target is resolved here, checked against the protected upstreams (names and addresses, every
//! loopback address counting as 127.0.0.1, every port of a `protect_all_ports` address), and
//! handed to the proxy as the address that was checked, so a name that resolves differently
//! for the proxy cannot lead it to the EHR. Everything else (other methods, a target that
//! does not resolve, a protected one) is answered by the sidecar and not relayed; a refusal of
//! a protected target is audited. The workload's `Proxy-Authorization` is passed on.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use bytes::BytesMut;
use fhirwall_policy::Workload;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};
use tracing::warn;

use super::listener::Routes;
use crate::{
    audit::{AuditSink, Disposition, Record, WorkloadRecord},
    metrics::Metrics,
};

/// Largest `CONNECT` request head read.
const MAX_HEAD: usize = 8192;
/// Time to resolve a tunnel's target name.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The egress proxies, and what a tunnel must not reach beyond the routes' protected
/// destinations (`Routes::by_destination`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Guard {
    /// Addresses of the egress proxies (what the kernel redirects here).
    pub proxies: HashSet<SocketAddr>,
    /// Addresses whose every port is protected (`protect_all_ports`), with the upstream's name.
    pub all_ports: std::collections::HashMap<IpAddr, Arc<str>>,
    /// Upstream host names (lowercase), refused by name whatever they resolve to here.
    pub names: std::collections::HashMap<String, Arc<str>>,
}

impl Routes {
    /// The upstream a tunnel to `target` would reach, if any.
    #[must_use]
    pub fn tunnel_reaches(&self, target: SocketAddr) -> Option<&Arc<str>> {
        let ip = match target.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 @ IpAddr::V4(_) => v4,
        };
        let loopback = matches!(ip, IpAddr::V4(v4) if v4.is_loopback());
        let candidates = [
            Some(ip),
            loopback.then_some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ];
        candidates.into_iter().flatten().find_map(|ip| {
            self.by_destination
                .get(&SocketAddr::new(ip, target.port()))
                .or_else(|| self.egress.all_ports.get(&ip))
        })
    }
}

/// Why a tunnel was not relayed.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// Not a `CONNECT` with an authority-form target.
    NotConnect,
    /// The target does not resolve here.
    Unresolved,
    /// The target is a protected upstream.
    Protected { upstream: Arc<str>, target: String },
}

/// Everything a tunnel needs from the sidecar.
pub struct Tunnel<'a> {
    pub routes: &'a Routes,
    pub audit: &'a AuditSink,
    pub metrics: &'a Metrics,
    pub node: &'a str,
    pub mark: u32,
    pub header_timeout: Duration,
    pub connect_timeout: Duration,
}

impl Tunnel<'_> {
    /// Serves one connection a workload made to the proxy at `proxy`.
    pub async fn serve(
        &self,
        mut client: TcpStream,
        proxy: SocketAddr,
        workload: &Workload,
        id: u64,
    ) {
        let Ok(Some(head)) =
            tokio::time::timeout(self.header_timeout, read_head(&mut client)).await
        else {
            return self.count("malformed");
        };
        let target = match self.target(&head).await {
            Ok(target) => target,
            Err(refusal) => return self.refuse(client, refusal, workload, id).await,
        };
        let upstream = match self.connect(proxy).await {
            Ok(s) => s,
            Err(e) => {
                warn!(%proxy, error = %e, "egress proxy unreachable");
                let _ = client
                    .write_all(answer(502, "the egress proxy is unreachable").as_bytes())
                    .await;
                return self.count("proxy-unreachable");
            }
        };
        self.count("relayed");
        relay(client, upstream, &head, target).await;
    }

    /// The checked address to tunnel to.
    async fn target(&self, head: &Head) -> Result<SocketAddr, Refusal> {
        let (host, port) = head.authority.as_ref().ok_or(Refusal::NotConnect)?;
        if let Some(upstream) = self.routes.egress.names.get(&host.to_ascii_lowercase()) {
            return Err(Refusal::Protected {
                upstream: Arc::clone(upstream),
                target: format!("{host}:{port}"),
            });
        }
        let addrs: Vec<SocketAddr> = if let Ok(ip) = host.parse::<IpAddr>() {
            vec![SocketAddr::new(ip, *port)]
        } else {
            let lookup = tokio::net::lookup_host((host.as_str(), *port));
            match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                Ok(Ok(found)) => found.collect(),
                _ => Vec::new(),
            }
        };
        // Every address the name has here must be unprotected, not only the one used.
        if let Some(upstream) = addrs.iter().find_map(|a| self.routes.tunnel_reaches(*a)) {
            return Err(Refusal::Protected {
                upstream: Arc::clone(upstream),
                target: format!("{host}:{port}"),
            });
        }
        addrs.first().copied().ok_or(Refusal::Unresolved)
    }

    async fn connect(&self, proxy: SocketAddr) -> std::io::Result<TcpStream> {
        let socket = super::socket::marked_socket(proxy, self.mark)?;
        tokio::time::timeout(self.connect_timeout, socket.connect(proxy))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
    }

    async fn refuse(&self, mut client: TcpStream, refusal: Refusal, workload: &Workload, id: u64) {
        let (status, text, result) = match &refusal {
            Refusal::NotConnect => (
                405,
                "only CONNECT tunnels are relayed through this proxy",
                "not-connect",
            ),
            Refusal::Unresolved => (502, "the tunnel's target does not resolve", "unresolved"),
            Refusal::Protected { .. } => (
                403,
                "the tunnel's target is a protected FHIR endpoint: connect to it directly",
                "refused",
            ),
        };
        if let Refusal::Protected { upstream, target } = refusal {
            let mut record = Record::new(
                format!("egress-{id:x}"),
                self.node,
                WorkloadRecord::from(workload),
                "CONNECT",
                target,
                Disposition::Deny,
            );
            record.upstream = Some(upstream.to_string());
            record.rule = Some("egress-proxy/connect".into());
            record.reason = Some(text.into());
            if let Err(e) = self.audit.commit(record).await {
                self.metrics.audit_failures.inc();
                warn!(error = %e, "egress proxy refusal not recorded");
            }
        }
        let _ = client.write_all(answer(status, text).as_bytes()).await;
        let _ = client.shutdown().await;
        self.count(result);
    }

    fn count(&self, result: &str) {
        self.metrics
            .egress_proxy_tunnels
            .with_label_values(&[result])
            .inc();
    }
}

/// A parsed `CONNECT` head: its authority, the headers passed on, and bytes read past it.
#[derive(Debug, Default)]
struct Head {
    authority: Option<(String, u16)>,
    proxy_authorization: Option<Vec<u8>>,
    rest: Vec<u8>,
}

/// Reads and parses a request head; `None` when it is not HTTP, too large, or cut short.
async fn read_head(client: &mut TcpStream) -> Option<Head> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if client.read_buf(&mut buf).await.ok()? == 0 {
            return None;
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => return Some(parse_head(&request, &buf[len..])),
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            _ => return None,
        }
    }
}

fn parse_head(request: &httparse::Request<'_, '_>, rest: &[u8]) -> Head {
    let authority = (request.method == Some("CONNECT"))
        .then_some(request.path)
        .flatten()
        .and_then(parse_authority);
    let proxy_authorization = request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("proxy-authorization"))
        .map(|h| h.value.to_vec());
    Head {
        authority,
        proxy_authorization,
        rest: rest.to_vec(),
    }
}

/// `host:port` or `[v6]:port` (RFC 9110 section 9.3.6, authority-form).
fn parse_authority(authority: &str) -> Option<(String, u16)> {
    let (host, port) = authority.rsplit_once(':')?;
    let port = port.parse().ok().filter(|p| *p != 0)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'));
    valid.then(|| (host.to_owned(), port))
}

/// Sends the proxy the checked target, then relays both ways until either side closes.
async fn relay(mut client: TcpStream, mut proxy: TcpStream, head: &Head, target: SocketAddr) {
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n").into_bytes();
    if let Some(auth) = &head.proxy_authorization {
        request.extend_from_slice(b"Proxy-Authorization: ");
        request.extend_from_slice(auth);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(&head.rest);
    if proxy.write_all(&request).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut proxy).await;
}

fn answer(status: u16, text: &str) -> String {
    let reason = match status {
        403 => "Forbidden",
        405 => "Method Not Allowed",
        _ => "Bad Gateway",
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\nfhirwall: {text}\n",
        text.len() + 11
    )
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn routes() -> Routes {
        let ehr: Arc<str> = Arc::from("ehr");
        Routes {
            by_destination: [
                ("10.1.2.3:443".parse().unwrap(), Arc::clone(&ehr)),
                ("127.0.0.1:8080".parse().unwrap(), Arc::clone(&ehr)),
            ]
            .into(),
            egress: Guard {
                proxies: HashSet::new(),
                all_ports: [("10.1.2.3".parse().unwrap(), Arc::clone(&ehr))].into(),
                names: [("ehr.example".to_owned(), ehr)].into(),
            },
            ..Routes::default()
        }
    }

    #[test]
    fn protected_targets_are_found_whatever_their_spelling() {
        let r = routes();
        for target in [
            "10.1.2.3:443",
            "10.1.2.3:22", // every port of a protect_all_ports address
            "127.0.0.1:8080",
            "127.0.0.9:8080",          // any loopback address counts as 127.0.0.1
            "[::ffff:127.0.0.1]:8080", // IPv4-mapped
            "[::ffff:10.1.2.3]:443",
        ] {
            let t: SocketAddr = target.parse().unwrap();
            assert!(r.tunnel_reaches(t).is_some(), "{target}");
        }
        for target in ["10.1.2.4:443", "127.0.0.1:8081", "[::1]:8080"] {
            let t: SocketAddr = target.parse().unwrap();
            assert!(r.tunnel_reaches(t).is_none(), "{target}");
        }
    }

    #[test]
    fn authorities_are_parsed_strictly() {
        assert_eq!(
            parse_authority("ehr.example:443"),
            Some(("ehr.example".into(), 443))
        );
        assert_eq!(
            parse_authority("[2001:db8::1]:443"),
            Some(("2001:db8::1".into(), 443))
        );
        for bad in [
            "ehr.example",
            "ehr.example:0",
            ":443",
            "a b:443",
            "ehr:99999",
            "/x:1",
        ] {
            assert_eq!(parse_authority(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_connect_heads_carry_an_authority() {
        let parse = |text: &[u8]| {
            let mut headers = [httparse::EMPTY_HEADER; 8];
            let mut request = httparse::Request::new(&mut headers);
            let len = match request.parse(text).unwrap() {
                httparse::Status::Complete(len) => len,
                httparse::Status::Partial => panic!("partial"),
            };
            parse_head(&request, &text[len..])
        };
        let head = parse(b"CONNECT ehr.example:443 HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic eA==\r\n\r\n\x16\x03");
        assert_eq!(head.authority, Some(("ehr.example".into(), 443)));
        assert_eq!(
            head.proxy_authorization.as_deref(),
            Some(&b"Basic eA=="[..])
        );
        assert_eq!(head.rest, b"\x16\x03");
        let get = parse(b"GET http://ehr.example/Patient HTTP/1.1\r\nHost: ehr.example\r\n\r\n");
        assert_eq!(get.authority, None);
    }

    #[test]
    fn answers_are_well_formed() {
        let text = answer(403, "no");
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 403 Forbidden"));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }
}
