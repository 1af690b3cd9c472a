//! IHE ATNA syslog ([ITI-20]): every chain entry as one RFC 5424 message over TLS (RFC 5425,
//! octet-counted framing) to an Audit Record Repository, from a durable cursor.
//!
//! A message carries the entry whole in its structured data (`[fhirwall@32473 seq=.. prevHash=..
//! hash=.. entry=..]`, the entry's JSON exactly as hashed, escaped as RFC 5424 section 6.3.3
//! asks), so what the collector stores verifies as a chain (`fhirwall audit verify --against`).
//! A request entry's message is its IHE BALP AuditEvent in FHIR JSON; other entries
//! (completions, brokered tokens, retention markers) have no message part. BALP JSON rather than
//! DICOM XML: the same events the FHIR export sends, readable by the FHIR tooling a hospital's
//! audit repository increasingly is.
//!
//! Delivery: the cursor moves past a message only once the repository's TCP stack has
//! acknowledged all of its bytes (the socket's unacknowledged send queue, `SIOCOUTQ`, read after
//! each message). After a failure the exporter reconnects and sends again from the cursor, so
//! nothing the repository did not acknowledge is skipped, and nothing it acknowledged is sent
//! twice. What plain TLS syslog cannot tell the sender: a repository that acknowledged bytes and
//! then lost them (killed before reading its socket) loses them; RELP exists for that.
//! (32473 is the enterprise number RFC 5612 reserves for documentation.)
//!
//! [ITI-20]: https://profiles.ihe.net/ITI/TF/Volume2/ITI-20.html

use std::{
    os::fd::{AsRawFd as _, RawFd},
    path::PathBuf,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf},
    net::TcpStream,
};

use super::{AuditError, Entry, balp, export::Cursor, query::QueryRow};

/// `authpriv` (10) with severity `notice` (5): security events, as ATNA repositories file them.
const PRI: u8 = 10 * 8 + 5;
/// The structured data element's id.
const SD_ID: &str = "fhirwall@32473";
/// How long the repository may take to acknowledge what was sent.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how to stream.
#[derive(Clone, Debug)]
pub struct SyslogExport {
    pub db: PathBuf,
    pub cursor: String,
    /// `tls://HOST:PORT`.
    pub target: String,
    /// CA certificates (PEM) the repository's certificate is checked against, beside the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// A client certificate and key (PEM) for repositories that ask for one (ATNA nodes
    /// authenticate both ways).
    pub client: Option<(PathBuf, PathBuf)>,
    /// HOSTNAME of every message: this node's name.
    pub hostname: String,
    pub follow: bool,
    pub poll: Duration,
    pub max_backoff: Duration,
    /// Give up after this many failed attempts in a row (`None`: never, for `--follow`).
    pub max_attempts: Option<u32>,
}

/// One entry of the chain as the exporter reads it.
pub struct Link {
    pub seq: u64,
    pub prev_hash: String,
    pub hash: String,
    pub body: String,
}

/// The RFC 5424 message of one entry. A body that does not read as an entry (damaged) is
/// still sent, as it is, under MSGID `unreadable`: the repository's copy must hold every link.
#[must_use]
pub fn message(link: &Link, hostname: &str) -> String {
    let entry = Entry::from_body(link.seq, &link.body).ok();
    let time = super::record::rfc3339::format(
        &entry.as_ref().map_or_else(super::record::now, Entry::time),
    );
    let msgid = entry.as_ref().map_or("unreadable", Entry::kind);
    let balp = match entry {
        Some(Entry::Request(record)) => {
            let row = QueryRow {
                seq: link.seq,
                hash: link.hash.clone(),
                record,
                completion: None,
            };
            Some(balp::audit_event(&row).to_string())
        }
        _ => None,
    };
    let mut msg = format!(
        "<{PRI}>1 {time} {host} fhirwall - {msgid} [{SD_ID} seq=\"{}\" prevHash=\"{}\" hash=\"{}\" entry=\"{}\"]",
        link.seq,
        link.prev_hash,
        link.hash,
        sd_escape(&link.body),
        host = header_field(hostname),
    );
    if let Some(balp) = balp {
        // RFC 5424 section 6.4: a UTF-8 message starts with the BOM.
        msg.push_str(" \u{feff}");
        msg.push_str(&balp);
    }
    msg
}

/// RFC 5425 section 4.3: `MSG-LEN SP SYSLOG-MSG`.
#[must_use]
pub fn frame(message: &str) -> Vec<u8> {
    let mut out = format!("{} ", message.len()).into_bytes();
    out.extend_from_slice(message.as_bytes());
    out
}

/// A PARAM-VALUE: `"`, `\` and `]` escaped with a backslash (RFC 5424 section 6.3.3).
fn sd_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + value.len() / 8);
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The reverse of [`sd_escape`].
#[must_use]
pub fn sd_unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some(next @ ('"' | '\\' | ']'))) => {
                out.push(next);
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

/// A header field: printable US-ASCII without spaces, at most 255 octets, `-` when empty.
fn header_field(value: &str) -> String {
    let v: String = value
        .chars()
        .filter(char::is_ascii_graphic)
        .take(255)
        .collect();
    if v.is_empty() { "-".into() } else { v }
}

/// The entry a line of a repository's file holds (an RFC 5424 message with this exporter's
/// structured data): `(seq, prevHash, hash, entry)`.
#[must_use]
pub fn parse_stored(line: &str) -> Option<(u64, String, String, String)> {
    let sd = &line[line.find(&format!("[{SD_ID} "))? + SD_ID.len() + 2..];
    let mut params = std::collections::HashMap::new();
    let mut rest = sd;
    loop {
        rest = rest.trim_start();
        if rest.starts_with(']') || rest.is_empty() {
            break;
        }
        let (name, after) = rest.split_once("=\"")?;
        // The value ends at the first quote not escaped by a backslash.
        let mut end = None;
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        let end = end?;
        params.insert(name.to_owned(), sd_unescape(&after[..end]));
        rest = &after[end + 1..];
    }
    Some((
        params.get("seq")?.parse().ok()?,
        params.remove("prevHash")?,
        params.remove("hash")?,
        params.remove("entry")?,
    ))
}

/// Streams entries after the cursor; returns how many were delivered.
pub async fn export_syslog(cfg: &SyslogExport) -> Result<u64, AuditError> {
    let conn = super::export::open_for_export(&cfg.db)?;
    let mut cursor = Cursor::load(&conn, &cfg.cursor)?;
    let (host, port) = parse_target(&cfg.target)?;
    let tls = connector(cfg, &host)?;
    let mut sender: Option<Sender> = None;
    let mut total = 0;
    let mut failures = 0u32;
    let mut backoff = Duration::from_millis(250);
    loop {
        let links = super::export::links_after(&conn, cursor.seq)?;
        if links.is_empty() {
            if !cfg.follow {
                return Ok(total);
            }
            tokio::time::sleep(cfg.poll).await;
            continue;
        }
        let frames: Vec<(u64, Vec<u8>)> = links
            .iter()
            .map(|l| (l.seq, frame(&message(l, &cfg.hostname))))
            .collect();
        let result = match sender.as_mut() {
            Some(s) => s.send(&frames).await,
            None => match Sender::connect(&tls, &host, port).await {
                Ok(s) => sender.insert(s).send(&frames).await,
                Err(e) => Err((None, e)),
            },
        };
        match result {
            Ok(last) => {
                cursor.save(&conn, last)?;
                total += frames.len() as u64;
                failures = 0;
                backoff = Duration::from_millis(250);
            }
            Err((acked, e)) => {
                sender = None;
                if let Some(acked) = acked {
                    total += frames.iter().filter(|(s, _)| *s <= acked).count() as u64;
                    cursor.save(&conn, acked)?;
                }
                failures += 1;
                let err = AuditError::Io {
                    what: format!("streaming to {}", cfg.target),
                    source: e,
                };
                if cfg.max_attempts.is_some_and(|max| failures >= max) {
                    return Err(err);
                }
                tracing::warn!(error = %super::writer::error_chain(&err), failures, "syslog delivery failed; reconnecting");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(cfg.max_backoff);
            }
        }
    }
}

/// `tls://HOST:PORT` -> `(HOST, PORT)`; IPv6 hosts in brackets.
fn parse_target(target: &str) -> Result<(String, u16), AuditError> {
    let bad = |reason| {
        AuditError::Outbound(crate::outbound::OutboundError::BadUrl {
            url: target.to_owned(),
            reason,
        })
    };
    let rest = target.strip_prefix("tls://").ok_or_else(|| {
        bad("expected tls://HOST:PORT (RFC 5425; plain TCP or UDP syslog is not offered)")
    })?;
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| bad("expected a port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse().map_err(|_| bad("bad port"))?;
    if host.is_empty() {
        return Err(bad("expected a host"));
    }
    Ok((host.to_owned(), port))
}

fn connector(cfg: &SyslogExport, host: &str) -> Result<tokio_rustls::TlsConnector, AuditError> {
    let client = cfg.client.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
    Ok(crate::outbound::tls_client(
        host,
        cfg.ca_file.as_deref(),
        client,
    )?)
}

/// A TLS connection to the repository, with how many bytes went down the TCP socket.
struct Sender {
    tls: tokio_rustls::client::TlsStream<Counting>,
    fd: RawFd,
    written: Arc<AtomicU64>,
}

impl Sender {
    async fn connect(
        tls: &tokio_rustls::TlsConnector,
        host: &str,
        port: u16,
    ) -> Result<Self, std::io::Error> {
        let tcp = TcpStream::connect((host, port)).await?;
        let _ = tcp.set_nodelay(true);
        let fd = tcp.as_raw_fd();
        let written = Arc::new(AtomicU64::new(0));
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| std::io::Error::other("the host is not a valid TLS server name"))?;
        let stream = Counting {
            inner: tcp,
            written: Arc::clone(&written),
        };
        let tls = tokio::time::timeout(ACK_TIMEOUT, tls.connect(name, stream))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        Ok(Self { tls, fd, written })
    }

    /// Writes each frame and waits until the repository acknowledged every byte: the last
    /// seq. On failure, the last seq whose bytes were all acknowledged before it, if any.
    async fn send(
        &mut self,
        frames: &[(u64, Vec<u8>)],
    ) -> Result<u64, (Option<u64>, std::io::Error)> {
        let mut ends: Vec<(u64, u64)> = Vec::with_capacity(frames.len());
        let mut acked_upto = None;
        for (seq, frame) in frames {
            let sent = async {
                self.tls.write_all(frame).await?;
                self.tls.flush().await
            };
            if let Err(e) = sent.await {
                return Err((acked_upto, e));
            }
            ends.push((*seq, self.written.load(Ordering::Relaxed)));
            acked_upto = self.acked(&ends).or(acked_upto);
        }
        let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
        loop {
            let last = ends.last().map(|(seq, _)| *seq);
            acked_upto = self.acked(&ends).or(acked_upto);
            if acked_upto == last {
                return acked_upto.ok_or_else(|| (None, std::io::Error::other("nothing to send")));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err((
                    acked_upto,
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the repository did not acknowledge",
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The last seq whose bytes the peer acknowledged, from the socket's unacknowledged send
    /// queue (`SIOCOUTQ`, tcp(7)).
    fn acked(&self, ends: &[(u64, u64)]) -> Option<u64> {
        let mut outq: libc::c_int = 0;
        // SAFETY: `fd` is the connected TCP socket this sender owns (inside `tls`), alive as long
        // as `self`; SIOCOUTQ writes one int through the pointer given.
        let rc = unsafe { libc::ioctl(self.fd, libc::TIOCOUTQ, &raw mut outq) };
        if rc != 0 {
            return None;
        }
        let acked = self
            .written
            .load(Ordering::Relaxed)
            .saturating_sub(u64::try_from(outq).unwrap_or(u64::MAX));
        ends.iter()
            .take_while(|(_, end)| *end <= acked)
            .last()
            .map(|(seq, _)| *seq)
    }
}

/// The TCP stream under TLS, counting the bytes written to it.
struct Counting {
    inner: TcpStream,
    written: Arc<AtomicU64>,
}

impl AsyncRead for Counting {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counting {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            self.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
