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
//! 6. nothing of the response, head included, goes to the client (nor to the handler's inspector)
//!    before the handler releases it; the handler's answer instead replaces the whole response,
//!    and the upstream connection, its body unread, is not reused;
//! 7. the connection goes back to the pool only after a complete, length-delimited response with
//!    keep-alive and no extra bytes behind it.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    time::{Instant, timeout, timeout_at},
};

use super::{
    Conn, Exchange, request_relay_error, response_relay_error,
    write::{Framing, put_request_head, put_response_head},
};
use crate::{
    Checkout, Handler, HttpError, Inspected, LocalResponse, ResponseBody, ResponseInspector,
    ResponseParser, Upstreams, Version,
    body::{self, Decoder, Encoding, RelayError},
    chunked::{self, ChunkedDecoder},
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
        let moved = body::relay(
            &mut self.io,
            &mut self.down,
            decoder,
            up,
            &mut self.out,
            t,
            &mut |_| {},
        )
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

    /// Once the handler released the response, sends its head and streams the body to the
    /// client, through the handler's inspector when it asks for one. Returns whether the
    /// upstream connection may be reused.
    async fn relay_response(
        &mut self,
        ex: &mut Exchange,
        up: &mut U::Stream,
    ) -> Result<bool, HttpError> {
        if let Err(answer) = self.handler.release(ex.id).await {
            ex.close = !self.head.keep_alive() || self.shutdown.requested();
            return self.refuse(ex, &answer).await;
        }
        let kind = self.resp.body(self.head.method());
        let has_body = kind != ResponseBody::None;
        let Some(mut inspector) = self.handler.inspect(ex.id, &self.resp, has_body) else {
            return self.relay_plain(ex, up, kind, &mut |_| {}).await;
        };
        let result = if inspector.observes() || !has_body {
            let mut ignored = BytesMut::new();
            let mut observe = |data: &[u8]| {
                let _ = inspector.data(data, &mut ignored);
                ignored.clear();
            };
            let relayed = self.relay_plain(ex, up, kind, &mut observe).await;
            if relayed.is_ok() {
                let _ = inspector.end(&mut ignored);
            }
            relayed
        } else {
            self.relay_inspected(ex, up, kind, &mut inspector).await
        };
        self.handler.inspected(ex.id, inspector);
        result
    }

    /// The response as the upstream framed it (re-chunked when it was), bytes unchanged.
    async fn relay_plain(
        &mut self,
        ex: &mut Exchange,
        up: &mut U::Stream,
        kind: ResponseBody,
        observe: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<bool, HttpError> {
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
                let (framing, encoding) = changed_length_framing(ex, client_11);
                (framing, encoding, self.response_decoder(kind))
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
            observe,
        )
        .await
        .map_err(|e| response_relay_error(e, self.limits))?;
        ex.response_bytes = moved.bytes;
        self.peak = self.peak.max(moved.peak);
        Ok(self.resp.keep_alive() && kind != ResponseBody::UntilClose && self.up.is_empty())
    }

    /// The response through an inspector that may hold, change or refuse it. The head waits
    /// for the inspector's release (or the body's end, when it goes out with its final length);
    /// a refusal before that replaces the whole response, after it cuts the connection.
    async fn relay_inspected(
        &mut self,
        ex: &mut Exchange,
        up: &mut U::Stream,
        kind: ResponseBody,
        inspector: &mut H::Inspector,
    ) -> Result<bool, HttpError> {
        let client_11 = self.head.version() == Version::Http11;
        ex.close = !self.head.keep_alive() || self.shutdown.requested();
        let mut decoder = self.response_decoder(kind);
        let mut pending = BytesMut::new();
        let t = self.limits.body_timeout;
        loop {
            while !self.up.is_empty() && !decoder.is_done() {
                let step = decoder
                    .next(&self.up)
                    .map_err(|e| HttpError::BadResponse { reason: e.reason })?;
                let verdict = inspector.data(&self.up[step.data.clone()], &mut pending);
                self.up.advance(step.consumed);
                match verdict {
                    Ok(inspected) => self.emit(ex, inspected, &mut pending, client_11).await?,
                    Err(refusal) => return self.refuse(ex, &refusal).await,
                }
                if step.consumed == 0 {
                    break;
                }
            }
            if decoder.is_done() {
                break;
            }
            self.peak = self.peak.max(self.held() + pending.capacity());
            if ex.status.is_some() {
                // Released: what is staged goes out before waiting on a slow upstream.
                self.out
                    .flush(&mut self.io, t)
                    .await
                    .map_err(|f| response_relay_error(RelayError::Write(f), self.limits))?;
            }
            let n = body::read_some(up, &mut self.up, self.limits.io_buffer, t)
                .await
                .map_err(|f| response_relay_error(RelayError::Read(f), self.limits))?;
            if n == 0 && !decoder.finish_at_eof() {
                return Err(HttpError::UpstreamClosed);
            }
        }
        if let Err(refusal) = inspector.end(&mut pending) {
            return self.refuse(ex, &refusal).await;
        }
        if ex.status.is_none() {
            // Held to the end: out at once, with its length.
            put_response_head(
                &mut self.out.buf,
                &self.resp,
                Framing::Length(pending.len() as u64),
                ex.close,
            );
            ex.status = Some(self.resp.status());
            ex.response_bytes = pending.len() as u64;
            if !ex.is_head {
                self.out.buf.extend_from_slice(&pending);
            }
        } else {
            self.emit(ex, Inspected::Release, &mut pending, client_11)
                .await?;
            if client_11 {
                self.out.buf.extend_from_slice(chunked::LAST_CHUNK);
            }
        }
        self.peak = self.peak.max(self.held() + pending.capacity());
        self.out
            .flush(&mut self.io, t)
            .await
            .map_err(|f| response_relay_error(RelayError::Write(f), self.limits))?;
        Ok(self.resp.keep_alive() && kind != ResponseBody::UntilClose && self.up.is_empty())
    }

    /// Sends the head once the inspector releases it, then what the inspector wrote.
    async fn emit(
        &mut self,
        ex: &mut Exchange,
        inspected: Inspected,
        pending: &mut BytesMut,
        client_11: bool,
    ) -> Result<(), HttpError> {
        if ex.status.is_none() {
            if inspected == Inspected::Hold {
                return Ok(());
            }
            let (framing, _) = changed_length_framing(ex, client_11);
            put_response_head(&mut self.out.buf, &self.resp, framing, ex.close);
            ex.status = Some(self.resp.status());
        }
        if pending.is_empty() {
            return Ok(());
        }
        let encoding = if client_11 {
            Encoding::Chunked
        } else {
            Encoding::Identity
        };
        let t = self.limits.body_timeout;
        self.out
            .send(&mut self.io, pending, encoding, t)
            .await
            .map_err(|f| response_relay_error(RelayError::Write(f), self.limits))?;
        ex.response_bytes += pending.len() as u64;
        pending.clear();
        Ok(())
    }

    /// The handler did not release the response, or its inspector refused it: the answer
    /// replaces the response while nothing of it went out; after that, the response is cut off.
    /// Either way the upstream connection, whose body was not read to its end, is not reused.
    async fn refuse(
        &mut self,
        ex: &mut Exchange,
        refusal: &LocalResponse,
    ) -> Result<bool, HttpError> {
        if ex.status.is_some() {
            return Err(HttpError::ResponseCut);
        }
        if !(200..=599).contains(&refusal.status) {
            return Err(HttpError::InvalidStatus {
                status: refusal.status,
            });
        }
        self.write_local(refusal, ex.close, ex.is_head).await?;
        ex.status = Some(refusal.status);
        ex.response_bytes = if ex.is_head {
            0
        } else {
            refusal.body.len() as u64
        };
        Ok(false)
    }

    fn response_decoder(&self, kind: ResponseBody) -> Decoder {
        match kind {
            ResponseBody::None => Decoder::Done,
            ResponseBody::Length(n) => Decoder::Length(n),
            ResponseBody::Chunked => Decoder::Chunked(ChunkedDecoder::new(
                self.limits.max_chunk_line,
                self.limits.max_trailer,
            )),
            ResponseBody::UntilClose => Decoder::UntilClose,
        }
    }
}

/// Framing for a body whose length is not known up front: chunked to an HTTP/1.1 client; an
/// HTTP/1.0 client knows no chunked coding, so the body ends when the proxy closes.
fn changed_length_framing(ex: &mut Exchange, client_11: bool) -> (Framing, Encoding) {
    if client_11 {
        (Framing::Chunked, Encoding::Chunked)
    } else {
        ex.close = true;
        (Framing::Unframed, Encoding::Identity)
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
