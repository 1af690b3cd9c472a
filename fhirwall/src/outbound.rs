//! The agent's own HTTP client, for what it sends on its own behalf: AuditEvents to a collector
//! (`audit export --fhir`) and token requests to authorization servers (`broker`). hyper over a
//! kept-alive connection, one request at a time, TLS via rustls (ring provider) with the
//! system's trust roots and optionally a private CA. Response bodies are read up to a bound.

use std::{path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{Uri, client::conn::http1::SendRequest, header};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("bad URL {url:?}: {reason}")]
    BadUrl { url: String, reason: &'static str },
    #[error("TLS setup for {host} failed")]
    Tls {
        host: String,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot read the PEM file {path}")]
    CaFile {
        path: String,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP with {url} failed")]
    Http {
        url: String,
        #[source]
        source: hyper::Error,
    },
    #[error("the response of {url} is larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
}

/// What came back.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
}

const TIMEOUT: Duration = Duration::from_secs(30);
/// The largest response body read to keep the connection; a larger one closes it.
const MAX_RESPONSE_BODY: usize = 1024 * 1024;

/// Where events are `POSTed`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, as sent in the request line.
    pub path: String,
}

impl Target {
    /// Parses `http://host[:port]/path` or `https://...`; IPv6 hosts in brackets.
    pub fn parse(url: &str) -> Result<Self, OutboundError> {
        let bad = |reason| OutboundError::BadUrl {
            url: url.to_owned(),
            reason,
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("expected http:// or https://")),
        };
        let authority = uri.authority().ok_or_else(|| bad("expected a host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("credentials in the URL are not accepted"));
        }
        let port = match authority.port_u16() {
            Some(port) => port,
            // Anything after the host is a port, and one that does not parse is refused.
            None if authority.as_str() != authority.host() => return Err(bad("bad port")),
            None if tls => 443,
            None => 80,
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("expected a host"));
        }
        Ok(Self {
            url: url.to_owned(),
            tls,
            host: host.to_owned(),
            port,
            path: uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
        })
    }

    /// The `Host` header: the authority as written.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A client for one target; reconnects as needed.
pub struct Client {
    target: Target,
    tls: Option<TlsConnector>,
    connection: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    /// A client trusting the system's roots.
    pub fn new(target: Target) -> Result<Self, OutboundError> {
        Self::with_ca(target, None)
    }

    /// A client trusting the system's roots and the certificates in `ca_file` (PEM).
    pub fn with_ca(target: Target, ca_file: Option<&Path>) -> Result<Self, OutboundError> {
        let tls = target
            .tls
            .then(|| tls_connector(&target.host, ca_file))
            .transpose()?;
        Ok(Self {
            target,
            tls,
            connection: None,
        })
    }

    #[must_use]
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// POSTs `body` and returns the response status (the body is read and dropped).
    pub async fn post(&mut self, content_type: &str, body: Bytes) -> Result<u16, OutboundError> {
        let accept = [("Accept", "application/fhir+json")];
        self.send(content_type, &accept, body)
            .await
            .map(|r| r.status)
    }

    /// POSTs `body` with `headers` added, and returns the response with its body. The
    /// connection is dropped after any error.
    pub async fn send(
        &mut self,
        content_type: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Response, OutboundError> {
        let result = tokio::time::timeout(TIMEOUT, self.try_send(content_type, headers, body))
            .await
            .unwrap_or_else(|_| {
                Err(self.io_error("timed out", std::io::ErrorKind::TimedOut.into()))
            });
        if result.is_err() {
            self.connection = None;
        }
        result
    }

    async fn try_send(
        &mut self,
        content_type: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Response, OutboundError> {
        let mut sender = match self.connection.take() {
            Some(sender) if !sender.is_closed() => sender,
            _ => self.connect().await?,
        };
        sender.ready().await.map_err(|e| self.http_error(e))?;
        let mut request = hyper::Request::post(&self.target.path)
            .header(header::HOST, self.target.authority())
            .header(header::CONTENT_TYPE, content_type)
            .header(header::USER_AGENT, "fhirwall");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|_| OutboundError::BadUrl {
                url: self.target.url.clone(),
                reason: "not a request target",
            })?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.http_error(e))?;
        let status = response.status().as_u16();
        // The connection is kept only when the whole (bounded) body was read.
        match Limited::new(response.into_body(), MAX_RESPONSE_BODY)
            .collect()
            .await
        {
            Ok(body) => {
                self.connection = Some(sender);
                Ok(Response {
                    status,
                    body: body.to_bytes(),
                })
            }
            Err(_) => Err(OutboundError::TooLarge {
                url: self.target.url.clone(),
                limit: MAX_RESPONSE_BODY,
            }),
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, OutboundError> {
        let t = &self.target;
        let tcp = TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|e| self.io_error("connecting", e))?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return self.handshake(tcp).await;
        };
        let name = ServerName::try_from(t.host.clone()).map_err(|_| OutboundError::BadUrl {
            url: t.url.clone(),
            reason: "host is not a valid TLS server name",
        })?;
        let stream = tls
            .connect(name, tcp)
            .await
            .map_err(|e| self.io_error("TLS handshake", e))?;
        self.handshake(stream).await
    }

    /// HTTP/1.1 on an open stream; the connection task ends when the sender is dropped.
    async fn handshake<S>(&self, stream: S) -> Result<SendRequest<Full<Bytes>>, OutboundError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.http_error(e))?;
        tokio::spawn(connection);
        Ok(sender)
    }

    fn io_error(&self, what: &str, source: std::io::Error) -> OutboundError {
        OutboundError::Io {
            what: format!("{what} with {}", self.target.url),
            source,
        }
    }

    fn http_error(&self, source: hyper::Error) -> OutboundError {
        OutboundError::Http {
            url: self.target.url.clone(),
            source,
        }
    }
}

fn tls_connector(host: &str, ca_file: Option<&Path>) -> Result<TlsConnector, OutboundError> {
    tls_client(host, ca_file, None)
}

/// A TLS client trusting the system's roots and the certificates in `ca_file` (PEM), presenting
/// `client` (certificate chain and key files, PEM) when given.
pub fn tls_client(
    host: &str,
    ca_file: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> Result<TlsConnector, OutboundError> {
    let tls = |source| OutboundError::Tls {
        host: host.to_owned(),
        source,
    };
    let pem = |path: &Path| {
        let path = path.display().to_string();
        move |source| OutboundError::CaFile {
            path: path.clone(),
            source,
        }
    };
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable individual system certificates are skipped; an empty store fails every
    // handshake with a clear certificate error rather than silently trusting anything.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        for cert in CertificateDer::pem_file_iter(path).map_err(pem(path))? {
            roots.add(cert.map_err(pem(path))?).map_err(tls)?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls)?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(pem(cert))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(pem(cert))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(pem(key))?;
            builder.with_client_auth_cert(chain, key).map_err(tls)?
        }
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Reads one request (its head and its Content-Length body) from `stream` for the servers of
/// tests, `buf` keeping what arrived after it: the head, lower-cased, and the body; `None` once
/// the peer closed.
#[cfg(test)]
pub(crate) async fn read_request(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> Option<(String, Vec<u8>)> {
    use tokio::io::AsyncReadExt as _;
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                let body = buf[end + 4..end + 4 + length].to_vec();
                buf.drain(..end + 4 + length);
                return Some((head, body));
            }
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let ok = [
            (
                "https://siem.example/fhir/AuditEvent",
                true,
                "siem.example",
                443,
                "/fhir/AuditEvent",
            ),
            (
                "http://127.0.0.1:8080/AuditEvent",
                false,
                "127.0.0.1",
                8080,
                "/AuditEvent",
            ),
            ("http://[::1]:9/x", false, "::1", 9, "/x"),
            ("https://h", true, "h", 443, "/"),
        ];
        for (url, tls, host, port, path) in ok {
            let t = Target::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(
                (t.tls, t.host.as_str(), t.port, t.path.as_str()),
                (tls, host, port, path),
                "{url}"
            );
        }
        for bad in [
            "ftp://x/",
            "siem/AuditEvent",
            "https://",
            "https://user:pw@h/",
            "http://h:99999/",
            "http://h/a b",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    /// A collector that answers each request on a connection with the next canned response,
    /// recording how many connections it accepted.
    async fn canned(
        answers: &'static [&'static [u8]],
    ) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};

        use tokio::io::AsyncWriteExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/AuditEvent", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        tokio::spawn(async move {
            let mut next = answers.iter();
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                let mut buf = Vec::new();
                // Answer each request read with the next canned response.
                while read_request(&mut stream, &mut buf).await.is_some() {
                    let Some(answer) = next.next() else { return };
                    stream.write_all(answer).await.unwrap();
                    if answer.ends_with(b"rest of body") {
                        break;
                    }
                }
            }
        });
        (url, connections)
    }

    #[tokio::test]
    async fn reads_each_framing_and_keeps_the_connection_when_it_may() {
        use std::sync::atomic::Ordering;
        let (url, connections) = canned(&[
            b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n",
            b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\nrest of body",
            b"HTTP/1.1 204 No Content\r\n\r\n",
        ])
        .await;
        let mut client = Client::new(Target::parse(&url).unwrap()).unwrap();
        let mut statuses = Vec::new();
        for _ in 0..5 {
            statuses.push(
                client
                    .post("application/fhir+json", Bytes::from_static(b"{}"))
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(statuses, [201, 200, 503, 200, 204]);
        // Kept alive across the first three; `Connection: close` and a body that runs to the end
        // of the connection each need a new one.
        assert_eq!(connections.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_malformed_response_is_an_error() {
        let (url, _) = canned(&[b"garbage\r\n\r\n"]).await;
        let mut client = Client::new(Target::parse(&url).unwrap()).unwrap();
        let err = client
            .post("application/fhir+json", Bytes::from_static(b"{}"))
            .await
            .unwrap_err();
        assert!(matches!(err, OutboundError::Http { .. }), "{err:?}");
    }
}
