//! The connection driver: reads requests one after the other, lets the [`Handler`] decide, and
//! answers locally or forwards (see `forward.rs`). Requests are handled strictly in order; after
//! any error the connection is answered (when possible) and closed, so a pipeline can never
//! desync.

mod forward;
mod head;
mod local;
mod write;

use std::future::Future;

use bytes::BytesMut;
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    time::{Instant, timeout},
};

use self::head::{HeadRead, Shutdown};
use super::{
    BodyFraming, BodyMode, Dispatch, ExchangeId, Handler, HttpError, Limits, Method, RequestHead,
    RequestParser, ResponseHead, Upstreams,
    body::{self, Decoder, IoFail, RelayError, Staged, Transfer},
    chunked::ChunkedDecoder,
};

/// How a connection ended.
#[derive(Debug)]
pub enum ConnectionEnd {
    /// The client closed between requests.
    ClientClosed,
    /// No new request within the idle (or, for a silent new connection, header) timeout.
    IdleTimeout,
    /// The shutdown signal fired while the connection was idle.
    Shutdown,
    /// The last exchange asked to close (`Connection: close`, HTTP/1.0, unread body).
    Closed,
    /// Closed because of this error, after answering the client when that was possible.
    Failed(HttpError),
}

/// What happened on one connection.
#[derive(Debug)]
pub struct ConnectionSummary {
    /// Requests read (valid or not).
    pub requests: u32,
    /// Requests sent upstream.
    pub forwarded: u32,
    /// Largest total capacity of the connection's buffers at any point (read buffers of both
    /// sides, write buffer, and the buffered-body buffer): what the connection really held.
    pub peak_buffered: usize,
    /// Why it ended.
    pub end: ConnectionEnd,
}

/// Serves one client connection until it closes, fails, idles out, or `shutdown` fires.
///
/// `connection_id` prefixes every [`ExchangeId`] (use a counter or the socket cookie).
/// `shutdown` is a graceful stop: once it completes, an in-flight request finishes (with
/// `Connection: close`) and an idle connection closes at once. A
/// `CancellationToken::cancelled()` or a `watch` channel's `changed()` both fit.
pub async fn serve_connection<D, H, U, F>(
    downstream: D,
    handler: &mut H,
    upstreams: &U,
    limits: &Limits,
    connection_id: u64,
    shutdown: F,
) -> ConnectionSummary
where
    D: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
    U: Upstreams<Key = H::Upstream>,
    F: Future<Output = ()>,
{
    let shutdown = std::pin::pin!(shutdown);
    let mut conn = Conn {
        io: downstream,
        handler,
        upstreams,
        limits,
        connection_id,
        shutdown: Shutdown {
            fut: shutdown,
            fired: false,
        },
        down: BytesMut::with_capacity(limits.io_buffer),
        up: BytesMut::new(),
        out: Staged::default(),
        body: BytesMut::new(),
        parser: RequestParser::default(),
        head: RequestHead::default(),
        resp: ResponseHead::default(),
        sequence: 0,
        forwarded: 0,
        peak: 0,
    };
    let end = conn.run().await;
    ConnectionSummary {
        requests: conn.sequence,
        forwarded: conn.forwarded,
        peak_buffered: conn.peak,
        end,
    }
}

/// The state of one exchange, for [`Finished`] and for the keep-alive decision.
#[derive(Debug)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent facts about one exchange, not a state machine"
)]
struct Exchange {
    id: ExchangeId,
    started: Instant,
    is_head: bool,
    status: Option<u16>,
    forwarded: bool,
    sent_continue: bool,
    request_bytes: u64,
    response_bytes: u64,
    close: bool,
}

impl Exchange {
    fn new(id: ExchangeId, started: Instant) -> Self {
        Self {
            id,
            started,
            is_head: false,
            status: None,
            forwarded: false,
            sent_continue: false,
            request_bytes: 0,
            response_bytes: 0,
            close: false,
        }
    }
}

struct Conn<'a, 's, D, H, U, F> {
    io: D,
    handler: &'a mut H,
    upstreams: &'a U,
    limits: &'a Limits,
    connection_id: u64,
    shutdown: Shutdown<'s, F>,
    /// Downstream read buffer; request heads are split off it, bodies stream through it.
    down: BytesMut,
    /// Upstream read buffer, reused across upstream connections.
    up: BytesMut,
    /// Write staging, used for one direction at a time.
    out: Staged,
    /// The whole body, when the handler asked for it.
    body: BytesMut,
    parser: RequestParser,
    head: RequestHead,
    resp: ResponseHead,
    sequence: u32,
    forwarded: u32,
    peak: usize,
}

impl<D, H, U, F> Conn<'_, '_, D, H, U, F>
where
    D: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
    U: Upstreams<Key = H::Upstream>,
    F: Future<Output = ()>,
{
    async fn run(&mut self) -> ConnectionEnd {
        let accepted = Instant::now();
        let mut first = true;
        loop {
            let started = match self.read_head(first, accepted).await {
                HeadRead::Request(started) => started,
                HeadRead::Closed(end) => return end,
                HeadRead::Refused(err, started) => {
                    let mut ex = Exchange::new(self.next_id(), started);
                    return self.fail(&mut ex, err).await;
                }
            };
            first = false;
            let mut ex = Exchange::new(self.next_id(), started);
            self.sample();
            if let Err(err) = self.serve(&mut ex).await {
                return self.fail(&mut ex, err).await;
            }
            self.report(&ex, None);
            self.head.release();
            self.trim();
            if ex.close {
                return ConnectionEnd::Closed;
            }
        }
    }

    fn next_id(&mut self) -> ExchangeId {
        self.sequence = self.sequence.wrapping_add(1);
        ExchangeId {
            connection: self.connection_id,
            sequence: self.sequence,
        }
    }

    /// Gives back buffers that grew past their working size (a big buffered Bundle, a large
    /// local answer), so an idle keep-alive connection holds a few kilobytes, not its peak.
    fn trim(&mut self) {
        let keep = 2 * self.limits.io_buffer;
        self.body.clear();
        if self.body.capacity() > keep {
            self.body = BytesMut::new();
        }
        if self.out.buf.capacity() > keep {
            self.out.buf = BytesMut::new();
        }
        if self.up.capacity() > keep {
            self.up = BytesMut::new();
        }
        if self.down.is_empty() && self.down.capacity() > keep {
            self.down = BytesMut::new();
        }
    }

    /// Total capacity of the connection's buffers.
    fn held(&self) -> usize {
        self.down.capacity() + self.up.capacity() + self.out.buf.capacity() + self.body.capacity()
    }

    fn sample(&mut self) {
        self.peak = self.peak.max(self.held());
    }

    /// One exchange, after its head was parsed. `Err` closes the connection.
    async fn serve(&mut self, ex: &mut Exchange) -> Result<(), HttpError> {
        ex.is_head = *self.head.method() == Method::Head;
        let mut decoder = match self.head.framing() {
            BodyFraming::None => Decoder::Done,
            BodyFraming::Length(n) => Decoder::Length(n),
            BodyFraming::Chunked => Decoder::Chunked(ChunkedDecoder::new(
                self.limits.max_chunk_line,
                self.limits.max_trailer,
            )),
        };
        let buffered =
            !decoder.is_done() && self.handler.body_mode(ex.id, &self.head) == BodyMode::Buffer;
        if buffered {
            if self.head.expects_continue() {
                self.send_continue(ex).await?;
            }
            self.collect_body(ex, &mut decoder).await?;
        }
        let body = buffered.then_some(&self.body[..]);
        let decision = self.handler.decide(ex.id, &mut self.head, body).await;
        match decision {
            Dispatch::Respond(response) => self.respond_local(ex, &response, decoder).await,
            Dispatch::Forward { upstream } => {
                self.forwarded += 1;
                self.forward(ex, &upstream, decoder, buffered).await
            }
        }
    }

    async fn send_continue(&mut self, ex: &mut Exchange) -> Result<(), HttpError> {
        let t = self.limits.body_timeout;
        body::write_all(&mut self.io, b"HTTP/1.1 100 Continue\r\n\r\n", t)
            .await
            .map_err(|f| down_write(f, t))?;
        match timeout(t, self.io.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(down_write(IoFail::Io(e), t)),
            Err(_) => return Err(down_write(IoFail::Timeout, t)),
        }
        ex.sent_continue = true;
        Ok(())
    }

    async fn collect_body(
        &mut self,
        ex: &mut Exchange,
        decoder: &mut Decoder,
    ) -> Result<(), HttpError> {
        self.body.clear();
        let t = self.transfer(body::Encoding::Identity);
        let cap = self.limits.max_buffered_body;
        let moved = body::collect(
            &mut self.io,
            &mut self.down,
            decoder,
            &mut self.body,
            cap,
            t,
        )
        .await
        .map_err(|e| request_relay_error(e, self.limits))?;
        ex.request_bytes = moved.bytes;
        self.peak = self.peak.max(moved.peak);
        Ok(())
    }

    fn transfer(&self, encoding: body::Encoding) -> Transfer {
        Transfer {
            io_buffer: self.limits.io_buffer,
            timeout: self.limits.body_timeout,
            encoding,
            others: self.up.capacity() + self.body.capacity(),
        }
    }
}

/// A failed write to the client.
fn down_write(fail: IoFail, after: std::time::Duration) -> HttpError {
    match fail {
        IoFail::Timeout => HttpError::WriteTimeout { after },
        IoFail::Closed => HttpError::DownstreamClosed,
        IoFail::Io(source) => HttpError::DownstreamIo { source },
    }
}

/// A failed request-body transfer (reading from the client, writing to the upstream).
fn request_relay_error(err: RelayError, limits: &Limits) -> HttpError {
    match err {
        RelayError::Read(IoFail::Timeout) => HttpError::BodyTimeout {
            after: limits.body_timeout,
        },
        RelayError::Read(IoFail::Closed) => HttpError::DownstreamClosed,
        RelayError::Read(IoFail::Io(source)) => HttpError::DownstreamIo { source },
        RelayError::Framing(e) => HttpError::BadRequest { reason: e.reason },
        RelayError::TooLarge => HttpError::BodyTooLarge {
            limit: limits.max_buffered_body,
        },
        RelayError::Write(IoFail::Timeout) => HttpError::UpstreamTimeout {
            after: limits.body_timeout,
        },
        RelayError::Write(IoFail::Closed) => HttpError::UpstreamClosed,
        RelayError::Write(IoFail::Io(source)) => HttpError::UpstreamIo { source },
    }
}

/// A failed response-body transfer (reading from the upstream, writing to the client).
fn response_relay_error(err: RelayError, limits: &Limits) -> HttpError {
    match err {
        RelayError::Read(IoFail::Timeout) => HttpError::UpstreamTimeout {
            after: limits.body_timeout,
        },
        RelayError::Read(IoFail::Closed) => HttpError::UpstreamClosed,
        RelayError::Read(IoFail::Io(source)) => HttpError::UpstreamIo { source },
        RelayError::Framing(e) => HttpError::BadResponse { reason: e.reason },
        RelayError::TooLarge => HttpError::BadResponse {
            reason: "response too large",
        },
        RelayError::Write(IoFail::Timeout) => HttpError::WriteTimeout {
            after: limits.body_timeout,
        },
        RelayError::Write(IoFail::Closed) => HttpError::DownstreamClosed,
        RelayError::Write(IoFail::Io(source)) => HttpError::DownstreamIo { source },
    }
}
