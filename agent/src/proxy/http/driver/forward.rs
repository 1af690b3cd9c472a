//! Forwarding one request upstream and streaming the response back.
//!
//! Order matters for safety:
//! 1. the upstream request head and every body byte already received are staged (and, for
//!    chunked, decoded) before any upstream connection is taken: a framing error found there
//!    forwards nothing at all;
//! 2. `100 Continue` goes to the client only once an upstream connection exists;
//! 3. the rest of the body streams through a fixed-size buffer; a framing error in it aborts the
//!    upstream connection mid-request (it is never reused, so the upstream never sees a complete
//!    request) and answers the client 400;
//! 4. a request sent whole (no body left to stream) on a pooled connection that the upstream
//!    closed meanwhile is sent again on another connection, if its method is idempotent and no
//!    response byte came back;
//! 5. the response head is read under the response timeout; interim 1xx responses are dropped
//!    (the proxy answered `Expect` itself), 101 is refused (no upgrade was asked);
//! 6. the connection goes back to the pool only after a complete, length-delimited response with
//!    keep-alive and no extra bytes behind it.

use std::time::Duration;

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    time::{Instant, timeout, timeout_at},
};

use super::{
    Conn, Exchange, request_relay_error, response_relay_error,
    write::{Framing, put_request_head, put_response_head},
};
use crate::proxy::http::{
    Checkout, Handler, HttpError, ResponseBody, ResponseParser, Upstreams, Version,
    body::{self, Decoder, Encoding, RelayError},
    chunked::ChunkedDecoder,
};

/// Interim responses tolerated before the final one.
const MAX_INTERIM: usize = 8;

/// Connections tried for one request when pooled ones turn out to be stale.
const MAX_ATTEMPTS: usize = 3;

impl<D, H, U, F> Conn<'_, '_, D, H, U, F>
where
    D: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
    U: Upstreams<Key = H::Upstream>,
    F: Future<Output = ()>,
{
    pub(super) async fn forward(
        &mut self,
        ex: &mut Exchange,
        key: &U::Key,
        mut decoder: Decoder,
        buffered: bool,
    ) -> Result<(), HttpError> {
        let (framing, encoding) = if buffered {
            (Framing::Length(self.body.len() as u64), Encoding::Identity)
        } else {
            match &decoder {
                Decoder::Done => (Framing::Unframed, Encoding::Identity),
                Decoder::Length(n) => (Framing::Length(*n), Encoding::Identity),
                Decoder::Chunked(_) | Decoder::UntilClose => (Framing::Chunked, Encoding::Chunked),
            }
        };
        put_request_head(&mut self.out.buf, &self.head, framing);
        if buffered {
            self.out.buf.extend_from_slice(&self.body);
        } else {
            ex.request_bytes =
                body::stage_buffered(&mut self.down, &mut decoder, &mut self.out, encoding)
                    .map_err(|e| HttpError::BadRequest { reason: e.reason })?;
        }
        let mut up = if decoder.is_done() && self.head.method().is_idempotent() {
            self.send_whole(ex, key).await?
        } else {
            let mut up = connect(self.upstreams, key, self.limits.connect_timeout)
                .await?
                .stream;
            self.send_streaming(ex, &mut up, &mut decoder, encoding)
                .await?;
            self.read_response_head(&mut up).await?;
            up
        };
        let reusable = self.relay_response(ex, &mut up).await?;
        if reusable {
            self.upstreams.checkin(key, up);
        }
        Ok(())
    }

    /// Sends a request whose body (if any) is all staged, and reads the response head. A pooled
    /// connection the upstream closed while it sat idle fails before any response byte: then,
    /// and only then, the request goes again on another connection. Idempotent methods only
    /// (RFC 9110 section 9.2.2), and the staged bytes are kept until a response head arrives.
    async fn send_whole(
        &mut self,
        ex: &mut Exchange,
        key: &U::Key,
    ) -> Result<U::Stream, HttpError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let checkout = connect(self.upstreams, key, self.limits.connect_timeout).await?;
            let mut up = checkout.stream;
            ex.forwarded = true;
            let t = self.limits.body_timeout;
            let sent = body::write_all(&mut up, &self.out.buf, t).await;
            let result = match sent {
                Ok(()) => match timeout(t, up.flush()).await {
                    Ok(Ok(())) => self.read_response_head(&mut up).await,
                    Ok(Err(source)) => Err(HttpError::UpstreamIo { source }),
                    Err(_) => Err(HttpError::UpstreamTimeout { after: t }),
                },
                Err(fail) => Err(request_relay_error(RelayError::Write(fail), self.limits)),
            };
            match result {
                Ok(()) => {
                    self.out.buf.clear();
                    return Ok(up);
                }
                Err(HttpError::UpstreamClosed | HttpError::UpstreamIo { .. })
                    if checkout.reused && self.up.is_empty() && attempts < MAX_ATTEMPTS => {}
                Err(err) => return Err(err),
            }
        }
    }

    /// Sends the staged head and streams the rest of the body.
    async fn send_streaming(
        &mut self,
        ex: &mut Exchange,
        up: &mut U::Stream,
        decoder: &mut Decoder,
        encoding: Encoding,
    ) -> Result<(), HttpError> {
        if self.head.expects_continue() && !decoder.is_done() && !ex.sent_continue {
            self.send_continue(ex).await?;
        }
        ex.forwarded = true;
        let mut t = self.transfer(encoding);
        t.others = self.body.capacity() + self.up.capacity();
        let moved = body::relay(&mut self.io, &mut self.down, decoder, up, &mut self.out, t)
            .await
            .map_err(|e| request_relay_error(e, self.limits))?;
        ex.request_bytes += moved.bytes;
        self.peak = self.peak.max(moved.peak);
        Ok(())
    }

    /// Reads the final response head into `self.resp`, skipping interim responses.
    async fn read_response_head(&mut self, up: &mut U::Stream) -> Result<(), HttpError> {
        let deadline = Instant::now() + self.limits.response_timeout;
        let mut parser = ResponseParser::default();
        let mut interim = 0;
        self.up.clear();
        loop {
            while parser.parse(&mut self.up, self.limits, &mut self.resp)? {
                if self.resp.status() == 101 {
                    return Err(HttpError::BadResponse {
                        reason: "unrequested protocol switch",
                    });
                }
                if !self.resp.is_interim() {
                    return Ok(());
                }
                interim += 1;
                if interim > MAX_INTERIM {
                    return Err(HttpError::BadResponse {
                        reason: "too many interim responses",
                    });
                }
            }
            self.up.reserve(self.limits.io_buffer);
            self.sample();
            match timeout_at(deadline, up.read_buf(&mut self.up)).await {
                Err(_) => {
                    return Err(HttpError::UpstreamTimeout {
                        after: self.limits.response_timeout,
                    });
                }
                Ok(Ok(0)) => return Err(HttpError::UpstreamClosed),
                Ok(Err(source)) => return Err(HttpError::UpstreamIo { source }),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Sends the response head and streams the body to the client. Returns whether the upstream
    /// connection may be reused.
    async fn relay_response(
        &mut self,
        ex: &mut Exchange,
        up: &mut U::Stream,
    ) -> Result<bool, HttpError> {
        let kind = self.resp.body(self.head.method());
        let client_11 = self.head.version() == Version::Http11;
        ex.close = !self.head.keep_alive() || self.shutdown.requested();
        let (framing, encoding, mut decoder) = match kind {
            ResponseBody::None => {
                // HEAD and 304 may announce the length of the representation (RFC 9110 8.6).
                let declared =
                    (ex.is_head || self.resp.status() == 304).then(|| self.resp.content_length());
                (
                    declared
                        .flatten()
                        .map_or(Framing::Unframed, Framing::Length),
                    Encoding::Identity,
                    Decoder::Done,
                )
            }
            ResponseBody::Length(n) => (Framing::Length(n), Encoding::Identity, Decoder::Length(n)),
            ResponseBody::Chunked | ResponseBody::UntilClose => {
                let decoder = if kind == ResponseBody::Chunked {
                    Decoder::Chunked(ChunkedDecoder::new(
                        self.limits.max_chunk_line,
                        self.limits.max_trailer,
                    ))
                } else {
                    Decoder::UntilClose
                };
                if client_11 {
                    (Framing::Chunked, Encoding::Chunked, decoder)
                } else {
                    // An HTTP/1.0 client knows no chunked coding: the body ends when we close.
                    ex.close = true;
                    (Framing::Unframed, Encoding::Identity, decoder)
                }
            }
        };
        put_response_head(&mut self.out.buf, &self.resp, framing, ex.close);
        ex.status = Some(self.resp.status());
        let mut t = self.transfer(encoding);
        t.others = self.down.capacity() + self.body.capacity();
        let moved = body::relay(
            up,
            &mut self.up,
            &mut decoder,
            &mut self.io,
            &mut self.out,
            t,
        )
        .await
        .map_err(|e| response_relay_error(e, self.limits))?;
        ex.response_bytes = moved.bytes;
        self.peak = self.peak.max(moved.peak);
        Ok(self.resp.keep_alive() && kind != ResponseBody::UntilClose && self.up.is_empty())
    }
}

/// An upstream connection within the connect timeout. A free function: a `&self` held across the
/// await would make the whole connection state `Sync`-bound.
async fn connect<U: Upstreams>(
    upstreams: &U,
    key: &U::Key,
    after: Duration,
) -> Result<Checkout<U::Stream>, HttpError> {
    match timeout(after, upstreams.checkout(key)).await {
        Err(_) => Err(HttpError::UpstreamConnectTimeout { after }),
        Ok(Err(source)) => Err(HttpError::UpstreamConnect { source }),
        Ok(Ok(checkout)) => Ok(checkout),
    }
}
