//! Test fixtures: a counting HTTP/1.1 upstream, connectors to it, a handler, and a client.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, duplex},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

use crate::{
    BodyMode, ConnectionSummary, Connector, Dispatch, ErrorSource, ExchangeId, Handler, Headers,
    HttpError, Inspected, Limits, LocalResponse, Pool, PoolConfig, RequestHead, ResponseHead,
    ResponseInspector, serve_connection,
};

/// The content type of the test handler's own answers, so that tests can tell them from the
/// upstream's.
pub const ANSWER_TYPE: &str = "text/x-test-handler";

/// An answer of the test handler: `reason` as the body.
pub fn answer(status: u16, reason: &str) -> LocalResponse {
    let mut headers = Headers::default();
    headers
        .insert("Content-Type", ANSWER_TYPE)
        .expect("valid field");
    LocalResponse {
        status,
        headers,
        body: Bytes::copy_from_slice(reason.as_bytes()),
    }
}

/// What the test upstream received in one complete request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub chunked: bool,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Counters of the test upstream.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections: AtomicUsize,
    pub bytes: AtomicUsize,
    pub requests: AtomicUsize,
    /// Connections that ended in the middle of a request.
    pub aborted: AtomicUsize,
    pub seen: Mutex<Vec<Seen>>,
}

impl Stats {
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::SeqCst)
    }
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
    pub fn seen(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A test upstream on a loopback TCP port.
pub struct TcpUpstream {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    task: JoinHandle<()>,
}

impl Drop for TcpUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TcpUpstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream address");
        let stats = Arc::new(Stats::default());
        let task_stats = Arc::clone(&stats);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_upstream(stream, Arc::clone(&task_stats)));
            }
        });
        Self { addr, stats, task }
    }
}

/// Connects to a [`TcpUpstream`] by address.
pub struct TcpConnector;

impl Connector for TcpConnector {
    type Key = SocketAddr;
    type Stream = TcpStream;

    async fn connect(&self, key: &SocketAddr) -> std::io::Result<TcpStream> {
        let stream = TcpStream::connect(key).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// An in-memory upstream: each connect spawns the test server on a duplex pair (for tests on
/// paused time, where real sockets would let the clock jump).
#[derive(Default)]
pub struct DuplexConnector {
    pub stats: Arc<Stats>,
}

impl Connector for DuplexConnector {
    type Key = SocketAddr;
    type Stream = DuplexStream;

    async fn connect(&self, _key: &SocketAddr) -> std::io::Result<DuplexStream> {
        let (near, far) = duplex(256 * 1024);
        tokio::spawn(serve_upstream(far, Arc::clone(&self.stats)));
        Ok(near)
    }
}

/// A connector that never connects.
pub struct HangingConnector;

impl Connector for HangingConnector {
    type Key = SocketAddr;
    type Stream = DuplexStream;

    async fn connect(&self, _key: &SocketAddr) -> std::io::Result<DuplexStream> {
        std::future::pending().await
    }
}

pub fn pool<C: Connector>(connector: C) -> Pool<C> {
    Pool::new(
        connector,
        PoolConfig {
            max_idle_per_key: 4,
            idle_timeout: Duration::from_secs(30),
        },
    )
}

/// Limits small enough that the size cases are cheap to build.
pub fn test_limits() -> Limits {
    Limits {
        max_request_line: 1024,
        max_head: 4096,
        max_headers: 32,
        max_buffered_body: 1024,
        io_buffer: 16 * 1024,
        header_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        body_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        response_timeout: Duration::from_secs(5),
        linger_timeout: Duration::from_millis(200),
        ..Limits::default()
    }
}

/// What [`TestHandler::finish`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub id: ExchangeId,
    pub status: Option<u16>,
    pub forwarded: bool,
    pub request_body_bytes: u64,
    pub response_body_bytes: u64,
    pub error: Option<ErrorSource>,
}

/// Forwards everything to one upstream, except `/deny*` (403) ; buffers `/buffer*` and
/// `/Bundle*` bodies; swaps `Authorization` for the integration's credential and adds a
/// correlation id, as the real handler will.
pub struct TestHandler {
    pub upstream: SocketAddr,
    pub finished: Arc<Mutex<Vec<Finished>>>,
    pub bodies: Arc<Mutex<Vec<Option<Vec<u8>>>>>,
    /// How responses are inspected.
    pub inspect: Inspect,
    /// What each inspector saw (the decoded body) and whether it was told the end.
    pub seen_by_inspector: Arc<Mutex<Vec<SeenBody>>>,
}

impl TestHandler {
    pub fn new(upstream: SocketAddr) -> Self {
        Self {
            upstream,
            finished: Arc::default(),
            bodies: Arc::default(),
            inspect: Inspect::Off,
            seen_by_inspector: Arc::default(),
        }
    }
}

/// What one test inspector saw (the decoded body) and whether it was told the end.
pub type SeenBody = (Vec<u8>, bool);

/// What the test handler's response inspector does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Inspect {
    /// No inspector.
    #[default]
    Off,
    /// Only observes (the body goes out as the upstream framed it).
    Observe,
    /// Holds the whole body; refuses it at the end when it contains this.
    Hold { refuse_if: &'static [u8] },
    /// Releases at once and upper-cases the body; cuts it off after this many bytes.
    Stream { cut_after: Option<usize> },
}

/// The test handler's inspector; what it saw goes to [`TestHandler::inspected`].
#[derive(Debug)]
pub struct TestInspector {
    mode: Inspect,
    seen: Vec<u8>,
    ended: bool,
}

impl TestInspector {
    fn refusal() -> LocalResponse {
        answer(403, "the inspector refused the response")
    }
}

impl ResponseInspector for TestInspector {
    fn observes(&self) -> bool {
        self.mode == Inspect::Observe
    }

    fn data(&mut self, data: &[u8], out: &mut bytes::BytesMut) -> Result<Inspected, LocalResponse> {
        self.seen.extend_from_slice(data);
        match self.mode {
            Inspect::Off | Inspect::Observe => Ok(Inspected::Release),
            Inspect::Hold { .. } => {
                out.extend_from_slice(data);
                Ok(Inspected::Hold)
            }
            Inspect::Stream { cut_after } => {
                if cut_after.is_some_and(|n| self.seen.len() > n) {
                    return Err(Self::refusal());
                }
                out.extend(data.iter().map(u8::to_ascii_uppercase));
                Ok(Inspected::Release)
            }
        }
    }

    fn end(&mut self, _out: &mut bytes::BytesMut) -> Result<Inspected, LocalResponse> {
        self.ended = true;
        match self.mode {
            Inspect::Hold { refuse_if } if find(&self.seen, refuse_if).is_some() => {
                Err(Self::refusal())
            }
            _ => Ok(Inspected::Release),
        }
    }
}

impl Handler for TestHandler {
    type Upstream = SocketAddr;
    type Inspector = TestInspector;

    fn inspect(
        &mut self,
        _id: ExchangeId,
        _head: &ResponseHead,
        has_body: bool,
    ) -> Option<TestInspector> {
        (self.inspect != Inspect::Off && has_body).then(|| TestInspector {
            mode: self.inspect,
            seen: Vec::new(),
            ended: false,
        })
    }

    fn inspected(&mut self, _id: ExchangeId, inspector: TestInspector) {
        self.seen_by_inspector
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((inspector.seen, inspector.ended));
    }

    fn body_mode(&mut self, _id: ExchangeId, head: &RequestHead) -> BodyMode {
        if head.path().starts_with(b"/buffer") || head.path().starts_with(b"/Bundle") {
            BodyMode::Buffer
        } else {
            BodyMode::Stream
        }
    }

    async fn decide(
        &mut self,
        id: ExchangeId,
        head: &mut RequestHead,
        body: Option<&[u8]>,
    ) -> Dispatch<SocketAddr> {
        self.bodies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(body.map(<[u8]>::to_vec));
        if head.path().starts_with(b"/deny") {
            return Dispatch::Respond(answer(403, "policy denies this request"));
        }
        head.headers
            .insert("Authorization", "Bearer integration-credential")
            .expect("valid field");
        head.headers
            .insert("X-Correlation-Id", id.to_string())
            .expect("valid field");
        Dispatch::Forward {
            upstream: self.upstream,
        }
    }

    fn finish(&mut self, outcome: &crate::Finished<'_>) {
        self.finished
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Finished {
                id: outcome.id,
                status: outcome.status,
                forwarded: outcome.forwarded,
                request_body_bytes: outcome.request_body_bytes,
                response_body_bytes: outcome.response_body_bytes,
                error: outcome.error.map(crate::HttpError::error_source),
            });
    }

    fn error_response(&self, err: &HttpError, _id: ExchangeId) -> Option<LocalResponse> {
        Some(answer(err.status()?, err.reason()))
    }
}

/// Runs the driver on the far end of a duplex pair; returns the client end and the driver task.
pub fn spawn_driver<C, H>(
    pool: Arc<Pool<C>>,
    handler: H,
    limits: Limits,
) -> (DuplexStream, JoinHandle<ConnectionSummary>)
where
    C: Connector<Key = SocketAddr> + 'static,
    H: Handler<Upstream = SocketAddr> + 'static,
{
    spawn_driver_with_shutdown(pool, handler, limits, std::future::pending())
}

pub fn spawn_driver_with_shutdown<C, H, F>(
    pool: Arc<Pool<C>>,
    mut handler: H,
    limits: Limits,
    shutdown: F,
) -> (DuplexStream, JoinHandle<ConnectionSummary>)
where
    C: Connector<Key = SocketAddr> + 'static,
    H: Handler<Upstream = SocketAddr> + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let (client, server) = duplex(1024 * 1024);
    let task = tokio::spawn(async move {
        serve_connection(server, &mut handler, &*pool, &limits, 7, shutdown).await
    });
    (client, task)
}

/// One response as the client read it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Raw head bytes, for hop-by-hop assertions.
    pub chunked: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 client over any stream.
pub struct Client<S> {
    pub io: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub fn new(io: S) -> Self {
        Self {
            io,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.expect("client write");
    }

    /// Reads more bytes; false at EOF or error.
    async fn fill(&mut self) -> bool {
        self.buf.reserve(64 * 1024);
        let read =
            tokio::time::timeout(Duration::from_mins(2), self.io.read_buf(&mut self.buf)).await;
        matches!(read, Ok(Ok(n)) if n > 0)
    }

    /// Reads one response (`head` tells whether it answers a HEAD request); `None` at EOF.
    pub async fn response(&mut self, head: bool) -> Option<Response> {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if !self.fill().await {
                return None;
            }
        };
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut headers);
        parsed
            .parse(&self.buf[..end])
            .expect("client parses response head");
        let status = parsed.code.expect("status");
        let headers: Vec<(String, String)> = parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        self.buf.drain(..end);
        let mut response = Response {
            status,
            headers,
            body: Vec::new(),
            chunked: false,
        };
        if head || status == 204 || status == 304 || (100..200).contains(&status) {
            return Some(response);
        }
        if response.header("transfer-encoding").is_some() {
            response.chunked = true;
            response.body = self.chunked_body().await?;
        } else if let Some(len) = response.header("content-length") {
            let len: usize = len.parse().expect("numeric length");
            while self.buf.len() < len {
                if !self.fill().await {
                    return None;
                }
            }
            response.body = self.buf.drain(..len).collect();
        } else {
            while self.fill().await {}
            response.body = std::mem::take(&mut self.buf);
        }
        Some(response)
    }

    async fn line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                return Some(line);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    async fn chunked_body(&mut self) -> Option<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await?;
            let size = usize::from_str_radix(std::str::from_utf8(&line).ok()?, 16).ok()?;
            if size == 0 {
                while !self.line().await?.is_empty() {}
                return Some(body);
            }
            while self.buf.len() < size + 2 {
                if !self.fill().await {
                    return None;
                }
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }

    /// Reads until EOF; returns whatever came.
    pub async fn rest(&mut self) -> Vec<u8> {
        while self.fill().await {}
        std::mem::take(&mut self.buf)
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The test upstream's per-connection loop.
pub async fn serve_upstream<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, stats: Arc<Stats>) {
    stats.connections.fetch_add(1, Ordering::SeqCst);
    let mut conn = UpConn {
        buf: Vec::new(),
        stats: Arc::clone(&stats),
    };
    loop {
        let Some(seen) = conn.request(&mut io).await else {
            if !conn.buf.is_empty() {
                stats.aborted.fetch_add(1, Ordering::SeqCst);
            }
            return;
        };
        stats.requests.fetch_add(1, Ordering::SeqCst);
        stats
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(seen.clone());
        if !respond(&mut io, &seen).await {
            return;
        }
    }
}

struct UpConn {
    buf: Vec<u8>,
    stats: Arc<Stats>,
}

impl UpConn {
    async fn fill<S: AsyncRead + Unpin>(&mut self, io: &mut S) -> bool {
        self.buf.reserve(16 * 1024);
        match io.read_buf(&mut self.buf).await {
            Ok(n) if n > 0 => {
                self.stats.bytes.fetch_add(n, Ordering::SeqCst);
                true
            }
            _ => false,
        }
    }

    async fn request<S: AsyncRead + Unpin>(&mut self, io: &mut S) -> Option<Seen> {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if !self.fill(io).await {
                return None;
            }
        };
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        req.parse(&self.buf[..end]).ok()?;
        let mut seen = Seen {
            method: req.method?.to_string(),
            target: req.path?.to_string(),
            headers: req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect(),
            body: Vec::new(),
            chunked: false,
        };
        let head = self.buf.drain(..end).count();
        debug_assert!(head > 0);
        if seen.header("transfer-encoding").is_some() {
            seen.chunked = true;
            seen.body = self.chunked(io).await?;
        } else if let Some(len) = seen.header("content-length") {
            let len: usize = len.parse().ok()?;
            while self.buf.len() < len {
                if !self.fill(io).await {
                    return None;
                }
            }
            seen.body = self.buf.drain(..len).collect();
        }
        Some(seen)
    }

    async fn chunked<S: AsyncRead + Unpin>(&mut self, io: &mut S) -> Option<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    let line = self.buf[..i].to_vec();
                    self.buf.drain(..i + 2);
                    break line;
                }
                if !self.fill(io).await {
                    return None;
                }
            };
            let size = usize::from_str_radix(std::str::from_utf8(&line).ok()?, 16).ok()?;
            while self.buf.len() < size + 2 {
                if !self.fill(io).await {
                    return None;
                }
            }
            if size == 0 {
                // The proxy never forwards trailers: the last chunk is followed by CRLF.
                if &self.buf[..2] != b"\r\n" {
                    return None;
                }
                self.buf.drain(..2);
                return Some(body);
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }
}

const PATTERN_LEN: usize = 64 * 1024;

/// Answers by path. Returns false when the connection must close.
async fn respond<S: AsyncWrite + Unpin>(io: &mut S, seen: &Seen) -> bool {
    let path = seen
        .target
        .split('?')
        .next()
        .unwrap_or_default()
        .to_string();
    let head = seen.method == "HEAD";
    let raw: Vec<u8> = match path.as_str() {
        "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: x-up\r\nX-Up: hop\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n".to_vec(),
        "/no-content" => b"HTTP/1.1 204 No Content\r\nX-Kind: 204\r\n\r\n".to_vec(),
        "/not-modified" => b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 12\r\n\r\n".to_vec(),
        "/interim" => b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        "/malformed" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec(),
        "/garbage" => b"SSH-2.0-OpenSSH_9.6\r\n\r\n".to_vec(),
        "/switch" => b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n".to_vec(),
        "/bad-chunk" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n".to_vec(),
        "/truncated" => {
            let _ = io.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc").await;
            return false;
        }
        "/close-delimited" => {
            let _ = io.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end").await;
            let _ = io.shutdown().await;
            return false;
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_hours(1)).await;
            return false;
        }
        p if p.starts_with("/big/") || p.starts_with("/bigchunked/") => {
            let n: usize = p.rsplit('/').next().and_then(|n| n.parse().ok()).unwrap_or(0);
            return send_big(io, n, p.starts_with("/bigchunked/")).await;
        }
        _ => {
            let body = format!(
                "{} {} body={} auth={}",
                seen.method,
                seen.target,
                seen.body.len(),
                seen.header("authorization").unwrap_or("-")
            );
            let mut raw = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive\r\n\r\n",
                body.len()
            )
            .into_bytes();
            if !head {
                raw.extend_from_slice(body.as_bytes());
            }
            raw
        }
    };
    io.write_all(&raw).await.is_ok() && io.flush().await.is_ok()
}

async fn send_big<S: AsyncWrite + Unpin>(io: &mut S, n: usize, chunked: bool) -> bool {
    let pattern: Vec<u8> = (0..PATTERN_LEN).map(big_byte).collect();
    let head = if chunked {
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_string()
    } else {
        format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n")
    };
    if io.write_all(head.as_bytes()).await.is_err() {
        return false;
    }
    let mut left = n;
    while left > 0 {
        let take = left.min(PATTERN_LEN);
        if chunked
            && io
                .write_all(format!("{take:x}\r\n").as_bytes())
                .await
                .is_err()
        {
            return false;
        }
        if io.write_all(&pattern[..take]).await.is_err() {
            return false;
        }
        if chunked && io.write_all(b"\r\n").await.is_err() {
            return false;
        }
        left -= take;
    }
    if chunked && io.write_all(b"0\r\n\r\n").await.is_err() {
        return false;
    }
    io.flush().await.is_ok()
}

/// The byte at `offset` of a `/big` body.
pub fn big_byte(offset: usize) -> u8 {
    u8::try_from((offset % PATTERN_LEN) % 251).unwrap_or_default()
}
