//! A minimal HTTP/1.1 client for pushing `AuditEvents`: one POST at a time on a kept-alive
//! connection, TLS via rustls (ring provider) with the system's trust roots. Only what the
//! exporter needs; the response body is read (to keep the connection usable) and discarded.

use std::{sync::Arc, time::Duration};

use rustls::pki_types::ServerName;
use tokio::{
    io::{
        AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _,
        BufReader,
    },
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, client::TlsStream};

use super::AuditError;

const TIMEOUT: Duration = Duration::from_secs(30);
/// Longest status line or header we accept from the collector.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Where events are `POSTed`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Target {
    /// Parses `http://host[:port]/path` or `https://...`; IPv6 hosts in brackets.
    pub fn parse(url: &str) -> Result<Self, AuditError> {
        let bad = |reason| AuditError::BadUrl {
            url: url.to_owned(),
            reason,
        };
        let (tls, rest) = match url.split_once("://") {
            Some(("https", rest)) => (true, rest),
            Some(("http", rest)) => (false, rest),
            _ => return Err(bad("expected http:// or https://")),
        };
        let (authority, path) = rest
            .find('/')
            .map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
        if authority.is_empty() || authority.contains('@') {
            return Err(bad(
                "expected a host (credentials in the URL are not accepted)",
            ));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') => (h, p.parse().map_err(|_| bad("bad port"))?),
            _ => (authority, if tls { 443 } else { 80 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || path.contains(char::is_whitespace) {
            return Err(bad("bad host or path"));
        }
        Ok(Self {
            url: url.to_owned(),
            tls,
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A client for one target; reconnects as needed.
pub struct Client {
    target: Target,
    tls: Option<TlsConnector>,
    conn: Option<BufReader<Box<dyn Io>>>,
}

impl Client {
    pub fn new(target: Target) -> Result<Self, AuditError> {
        let tls = target
            .tls
            .then(|| tls_connector(&target.host))
            .transpose()?;
        Ok(Self {
            target,
            tls,
            conn: None,
        })
    }

    /// POSTs `body` and returns the response status. The connection is dropped after any error.
    pub async fn post(&mut self, content_type: &str, body: &[u8]) -> Result<u16, AuditError> {
        let result = tokio::time::timeout(TIMEOUT, self.try_post(content_type, body)).await;
        let result = result.unwrap_or_else(|_| {
            Err(self.io_error("timed out", std::io::ErrorKind::TimedOut.into()))
        });
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    async fn try_post(&mut self, content_type: &str, body: &[u8]) -> Result<u16, AuditError> {
        if self.conn.is_none() {
            self.conn = Some(BufReader::new(self.connect().await?));
        }
        let t = &self.target;
        let host = if t.host.contains(':') {
            format!("[{}]", t.host)
        } else {
            t.host.clone()
        };
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {host}:{}\r\nContent-Type: {content_type}\r\nAccept: application/fhir+json\r\nContent-Length: {}\r\nUser-Agent: fhirwall\r\n\r\n",
            t.path,
            t.port,
            body.len()
        );
        let url = t.url.clone();
        let Some(conn) = self.conn.as_mut() else {
            return Err(AuditError::WriterGone);
        };
        let io = |e| AuditError::Io {
            what: format!("sending to {url}"),
            source: e,
        };
        conn.get_mut()
            .write_all(head.as_bytes())
            .await
            .map_err(io)?;
        conn.get_mut().write_all(body).await.map_err(io)?;
        conn.get_mut().flush().await.map_err(io)?;
        let (status, close) = read_response(conn, &url).await?;
        if close {
            self.conn = None;
        }
        Ok(status)
    }

    async fn connect(&self) -> Result<Box<dyn Io>, AuditError> {
        let t = &self.target;
        let tcp = TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|e| self.io_error("connecting", e))?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let name = ServerName::try_from(t.host.clone()).map_err(|_| AuditError::BadUrl {
            url: t.url.clone(),
            reason: "host is not a valid TLS server name",
        })?;
        let stream: TlsStream<TcpStream> = tls
            .connect(name, tcp)
            .await
            .map_err(|e| self.io_error("TLS handshake", e))?;
        Ok(Box::new(stream))
    }

    fn io_error(&self, what: &str, source: std::io::Error) -> AuditError {
        AuditError::Io {
            what: format!("{what} with {}", self.target.url),
            source,
        }
    }
}

fn tls_connector(host: &str) -> Result<TlsConnector, AuditError> {
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable individual system certificates are skipped; an empty store fails every
    // handshake with a clear certificate error rather than silently trusting anything.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| AuditError::Tls {
            host: host.to_owned(),
            source,
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Reads one response, discarding the body. Returns the status and whether the server will close.
async fn read_response<R: AsyncRead + Unpin>(
    conn: &mut BufReader<R>,
    url: &str,
) -> Result<(u16, bool), AuditError> {
    let bad = |reason: &str| AuditError::HttpResponse {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let io = |e| AuditError::Io {
        what: format!("reading from {url}"),
        source: e,
    };
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = conn.read_until(b'\n', &mut head).await.map_err(io)?;
        if n == 0 {
            return Err(bad("connection closed before the response"));
        }
        if head.len() > MAX_HEADER_BYTES {
            return Err(bad("response head too large"));
        }
        if head[before..] == *b"\r\n" || head[before..] == *b"\n" {
            break;
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(bad("unparseable status line or headers")),
    }
    let status = response.code.ok_or_else(|| bad("no status"))?;
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let chunked =
        header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = header("content-length")
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| bad("bad Content-Length"))
        })
        .transpose()?;
    if chunked {
        skip_chunked(conn, url).await?;
    } else if let Some(len) = length {
        tokio::io::copy(&mut conn.take(len), &mut tokio::io::sink())
            .await
            .map_err(io)?;
    } else if !(status == 204 || status == 304 || (100..200).contains(&status)) {
        // No framing: the body runs to the end of the connection.
        tokio::io::copy(conn, &mut tokio::io::sink())
            .await
            .map_err(io)?;
        return Ok((status, true));
    }
    Ok((status, close))
}

/// Skips a chunked body (RFC 9112 section 7.1), trailers included.
async fn skip_chunked<R: AsyncRead + Unpin>(
    conn: &mut BufReader<R>,
    url: &str,
) -> Result<(), AuditError> {
    let bad = |reason: &str| AuditError::HttpResponse {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let io = |e| AuditError::Io {
        what: format!("reading from {url}"),
        source: e,
    };
    loop {
        let mut line = String::new();
        if conn.read_line(&mut line).await.map_err(io)? == 0 || line.len() > 1024 {
            return Err(bad("bad chunk size line"));
        }
        let size_hex = line.trim().split(';').next().unwrap_or("");
        let size = u64::from_str_radix(size_hex, 16).map_err(|_| bad("bad chunk size"))?;
        if size == 0 {
            // Trailer section ends with an empty line.
            loop {
                line.clear();
                if conn.read_line(&mut line).await.map_err(io)? == 0 || line.trim().is_empty() {
                    return Ok(());
                }
            }
        }
        tokio::io::copy(&mut (&mut *conn).take(size), &mut tokio::io::sink())
            .await
            .map_err(io)?;
        let mut crlf = [0u8; 2];
        conn.read_exact(&mut crlf).await.map_err(io)?;
    }
}

#[cfg(test)]
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

    #[tokio::test]
    async fn reads_each_framing() {
        let cases: [(&[u8], u16, bool); 4] = [
            (b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}", 201, false),
            (b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", 503, true),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n", 200, false),
            (b"HTTP/1.1 200 OK\r\n\r\nrest of body", 200, true),
        ];
        for (bytes, status, close) in cases {
            let mut r = BufReader::new(bytes);
            assert_eq!(
                read_response(&mut r, "u")
                    .await
                    .unwrap_or_else(|e| panic!("{e}")),
                (status, close)
            );
        }
        let mut r = BufReader::new(&b"garbage\r\n\r\n"[..]);
        assert!(read_response(&mut r, "u").await.is_err());
    }
}
