//! The connection driver: reads requests one after the other, lets the [`Handler`] decide, and
//! answers locally or forwards (see `forward.rs`). Requests are handled strictly in order; after
//! any error the connection is answered (when possible) and closed, so a pipeline can never
//! desync.

mod forward;
mod write;

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, Waker},
};

use bytes::BytesMut;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    time::{Instant, timeout, timeout_at},
};

use super::{
    BodyFraming, BodyMode, Decision, ExchangeId, Handler, HttpError, Limits, LocalResponse, Method,
    Outcome, RequestHead, RequestParser, ResponseHead, Upstreams,
    body::{self, Decoder, IoFail, RelayError, Staged, Transfer},
    chunked::ChunkedDecoder,
};
use crate::proxy::outcome;

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

/// The graceful-stop signal, polled without being consumed twice.
struct Shutdown<'s, F> {
    fut: Pin<&'s mut F>,
    fired: bool,
}

impl<F: Future<Output = ()>> Shutdown<'_, F> {
    /// Whether the signal fired, without waiting.
    fn requested(&mut self) -> bool {
        if !self.fired {
            let mut cx = Context::from_waker(Waker::noop());
            self.fired = self.fut.as_mut().poll(&mut cx) == Poll::Ready(());
        }
        self.fired
    }

    /// Completes when the signal fires (at once if it already did).
    async fn wait(&mut self) {
        if !self.fired {
            self.fut.as_mut().await;
            self.fired = true;
        }
    }
}

/// The state of one exchange, for [`Outcome`] and for the keep-alive decision.
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

enum HeadRead {
    Request(Instant),
    Closed(ConnectionEnd),
    Refused(HttpError, Instant),
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
            if ex.close {
                return ConnectionEnd::Closed;
            }
        }
    }

    fn next_id(&mut self) -> ExchangeId {
        self.sequence += 1;
        ExchangeId {
            connection: self.connection_id,
            sequence: self.sequence,
        }
    }

    /// Total capacity of the connection's buffers.
    fn held(&self) -> usize {
        self.down.capacity() + self.up.capacity() + self.out.buf.capacity() + self.body.capacity()
    }

    fn sample(&mut self) {
        self.peak = self.peak.max(self.held());
    }

    /// Reads until a complete request head is parsed. The first request must arrive within the
    /// header timeout from accept; later ones may wait the idle timeout for their first byte,
    /// then have the header timeout from that byte.
    async fn read_head(&mut self, first: bool, accepted: Instant) -> HeadRead {
        let mut started = first.then_some(accepted);
        let idle_deadline = Instant::now() + self.limits.idle_timeout;
        loop {
            let partial = self.parser.has_partial(&self.down);
            if started.is_none() && partial {
                started = Some(Instant::now());
            }
            match self
                .parser
                .parse(&mut self.down, self.limits, &mut self.head)
            {
                Ok(true) => return HeadRead::Request(started.unwrap_or_else(Instant::now)),
                Ok(false) => {}
                Err(err) => return HeadRead::Refused(err, started.unwrap_or_else(Instant::now)),
            }
            let deadline = started.map_or(idle_deadline, |t| t + self.limits.header_timeout);
            self.down.reserve(self.limits.io_buffer);
            self.sample();
            let read = tokio::select! {
                biased;
                () = self.shutdown.wait(), if !partial => return HeadRead::Closed(ConnectionEnd::Shutdown),
                read = timeout_at(deadline, self.io.read_buf(&mut self.down)) => read,
            };
            let at = started.unwrap_or_else(Instant::now);
            match read {
                Err(_) if !partial => return HeadRead::Closed(ConnectionEnd::IdleTimeout),
                Ok(Ok(0)) if !partial => return HeadRead::Closed(ConnectionEnd::ClientClosed),
                Err(_) => {
                    return HeadRead::Refused(
                        HttpError::HeaderTimeout {
                            after: self.limits.header_timeout,
                        },
                        at,
                    );
                }
                Ok(Ok(0)) => return HeadRead::Refused(HttpError::DownstreamClosed, at),
                Ok(Err(source)) => {
                    return HeadRead::Refused(HttpError::DownstreamIo { source }, at);
                }
                Ok(Ok(_)) => {}
            }
        }
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
            Decision::Respond(response) => self.respond_local(ex, &response, decoder).await,
            Decision::Forward { upstream } => {
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

    /// Answers with the handler's response. An unread body is drained when small, else the
    /// connection closes after the answer.
    async fn respond_local(
        &mut self,
        ex: &mut Exchange,
        response: &LocalResponse,
        mut decoder: Decoder,
    ) -> Result<(), HttpError> {
        if !(200..=599).contains(&response.status) {
            return Err(HttpError::InvalidStatus {
                status: response.status,
            });
        }
        let unread = !decoder.is_done();
        // A client still waiting for `100 Continue` will not send its body: do not wait for it.
        let client_sends_body = ex.sent_continue || !self.head.expects_continue();
        let small = match decoder {
            Decoder::Length(n) => n <= self.limits.max_drain,
            _ => true,
        };
        let drain = unread && client_sends_body && small;
        ex.close = !self.head.keep_alive() || self.shutdown.requested() || (unread && !drain);
        self.write_local(response, ex.close, ex.is_head).await?;
        ex.status = Some(response.status);
        ex.response_bytes = if ex.is_head {
            0
        } else {
            response.body.len() as u64
        };
        if drain {
            let t = self.transfer(body::Encoding::Identity);
            if !body::discard(
                &mut self.io,
                &mut self.down,
                &mut decoder,
                self.limits.max_drain,
                t,
            )
            .await
            {
                ex.close = true;
            }
        }
        if ex.close && unread {
            self.linger().await;
        }
        Ok(())
    }

    /// Ends the connection after `err`: answers when nothing was sent yet, reports, lingers.
    async fn fail(&mut self, ex: &mut Exchange, err: HttpError) -> ConnectionEnd {
        // Whatever was staged for the upstream must never reach the client.
        self.out.buf.clear();
        let mut answered = false;
        if ex.status.is_none()
            && let Some(response) = outcome::for_error(&err, ex.id)
            && self.write_local(&response, true, ex.is_head).await.is_ok()
        {
            ex.status = Some(response.status);
            answered = true;
        }
        self.report(ex, Some(&err));
        if answered {
            self.linger().await;
        }
        ConnectionEnd::Failed(err)
    }

    fn report(&mut self, ex: &Exchange, error: Option<&HttpError>) {
        self.handler.finish(&Outcome {
            id: ex.id,
            status: ex.status,
            forwarded: ex.forwarded,
            request_body_bytes: ex.request_bytes,
            response_body_bytes: ex.response_bytes,
            duration: ex.started.elapsed(),
            error,
        });
    }

    /// Lingering close: stop sending, then read and drop what the client still sends for a
    /// bounded time, so the answer is not lost to a connection reset.
    async fn linger(&mut self) {
        let deadline = Instant::now() + self.limits.linger_timeout;
        let _ = timeout_at(deadline, self.io.shutdown()).await;
        let mut dropped = 0u64;
        while dropped <= self.limits.max_drain {
            self.down.clear();
            match timeout_at(deadline, self.io.read_buf(&mut self.down)).await {
                Ok(Ok(n)) if n > 0 => dropped += n as u64,
                _ => break,
            }
        }
        self.down.clear();
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
