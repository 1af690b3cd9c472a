//! The boundary between the HTTP engine and the rest of the sidecar (FHIR classification, policy,
//! audit). It is narrow on purpose: a handler sees one parsed request at a time and returns a
//! decision, so classification and policy can be tested without any socket.

use std::{fmt, future::Future, time::Duration};

use bytes::{Bytes, BytesMut};

use super::{Headers, HttpError, RequestHead, ResponseHead};

/// Identifies one exchange: the connection (an id the caller chose at accept) and the request's
/// position on it. Carried in logs, audit records and `OperationOutcome` diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExchangeId {
    /// The id passed to [`serve_connection`](super::serve_connection).
    pub connection: u64,
    /// 1 for the first request on the connection, then 2, 3, ...
    pub sequence: u32,
}

impl fmt::Display for ExchangeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{}", self.connection, self.sequence)
    }
}

/// Whether the handler needs the request body before deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyMode {
    /// Decide on the head alone; if forwarded, the body streams through a fixed-size buffer.
    Stream,
    /// Read the whole body first (FHIR Bundles, form-encoded `_search`, PATCH), up to
    /// [`Limits::max_buffered_body`](super::Limits::max_buffered_body); beyond it the client gets
    /// 413. With `Expect: 100-continue` the proxy sends `100 Continue` to obtain the body.
    Buffer,
}

/// A response the proxy makes itself: a handler's answer, or its answer to an engine error
/// ([`Handler::error_response`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    /// Status code, 200 to 599.
    pub status: u16,
    /// Fields to send; framing fields are the proxy's and cannot be set here.
    pub headers: Headers,
    /// The whole body (sent with `Content-Length`, omitted for HEAD requests).
    pub body: Bytes,
}

/// What the handler decided for one request.
#[derive(Debug)]
pub enum Dispatch<U> {
    /// Send the (possibly rewritten) request to this upstream.
    Forward {
        /// Passed to [`Upstreams::checkout`](super::Upstreams::checkout).
        upstream: U,
    },
    /// Answer locally; nothing is forwarded.
    Respond(LocalResponse),
}

/// How an exchange ended, reported to [`Handler::finish`] once per request the proxy read (also
/// for requests refused before the handler saw them).
#[derive(Debug)]
pub struct Finished<'a> {
    /// The exchange.
    pub id: ExchangeId,
    /// Status sent to the client, if a response head went out.
    pub status: Option<u16>,
    /// Whether the request head was sent upstream.
    pub forwarded: bool,
    /// Request body bytes read from the client (decoded, without chunk framing).
    pub request_body_bytes: u64,
    /// Response body bytes written to the client (without chunk framing).
    pub response_body_bytes: u64,
    /// From the first byte of the request head to the end of the exchange.
    pub duration: Duration,
    /// What went wrong, if anything; [`HttpError::error_source`] says which side.
    pub error: Option<&'a HttpError>,
}

/// Sees a forwarded response's body before the client does, and may hold it back, change it or
/// refuse it. The response head is held until [`Inspected::Release`] (or the body's end), so a
/// refusal before then replaces the whole response.
pub trait ResponseInspector: Send {
    /// Only observes: the body goes out as the upstream framed it and nothing is held; what
    /// [`ResponseInspector::data`] appends is ignored and it may not refuse.
    fn observes(&self) -> bool;

    /// A piece of the decoded body; appends to `out` what may go to the client.
    fn data(&mut self, data: &[u8], out: &mut BytesMut) -> Result<Inspected, LocalResponse>;

    /// The end of the body; appends to `out` what is left to send.
    fn end(&mut self, out: &mut BytesMut) -> Result<Inspected, LocalResponse>;
}

/// What an inspector let through so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inspected {
    /// Nothing may go out yet (the head included).
    Hold,
    /// Output may flow: the head goes out (framed for a body whose length the inspector may
    /// change), then what the inspector wrote.
    Release,
}

/// An inspector for handlers that never inspect: [`Handler::inspect`] returns `None`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoInspection;

impl ResponseInspector for NoInspection {
    fn observes(&self) -> bool {
        true
    }

    fn data(&mut self, _data: &[u8], _out: &mut BytesMut) -> Result<Inspected, LocalResponse> {
        Ok(Inspected::Release)
    }

    fn end(&mut self, _out: &mut BytesMut) -> Result<Inspected, LocalResponse> {
        Ok(Inspected::Release)
    }
}

/// Decides what happens to each request on one connection.
///
/// A connection's requests are handled strictly in order and one at a time, so a handler may
/// keep per-request state (an audit record id, a correlation id) between [`Handler::decide`] and
/// [`Handler::finish`]. One handler value serves one connection: build it at accept with the
/// connection's attribution (workload) and shared references to policy and audit.
pub trait Handler: Send {
    /// Key of the upstream a request is forwarded to.
    type Upstream: Send + Sync;

    /// What inspects forwarded response bodies ([`NoInspection`] when nothing does).
    type Inspector: ResponseInspector;

    /// Whether the body must be read before [`Handler::decide`]. Called once the head is valid,
    /// and only for requests that have a body.
    fn body_mode(&mut self, id: ExchangeId, head: &RequestHead) -> BodyMode;

    /// Decides the request. The head is mutable: rewrite fields here (replace `Authorization`
    /// with the integration's credential, add a correlation id). `body` is the whole decoded body
    /// when [`BodyMode::Buffer`] was asked and the request has one. The audit record must be
    /// committed before this returns a [`Dispatch::Forward`], or at least appended when
    /// [`Handler::release`] holds the response until it is committed.
    fn decide(
        &mut self,
        id: ExchangeId,
        head: &mut RequestHead,
        body: Option<&[u8]>,
    ) -> impl Future<Output = Dispatch<Self::Upstream>> + Send;

    /// Awaited once the upstream's final response head arrived, before any of the response (the
    /// head included) goes to the client and before [`Handler::inspect`]: a handler holds a
    /// forwarded response here until something outside is ready (the sidecar, until the audit
    /// record it appended before forwarding is durable). `Err` replaces the whole response with
    /// the handler's answer, whose status [`Handler::finish`] is told; [`Handler::inspect`] is
    /// then not called, and the upstream connection, whose body was not read, is not reused.
    /// Not called when no final response head arrives (the engine's error answer goes out). The
    /// engine sets no deadline here: a handler that may wait long bounds its own wait (and
    /// answers, say, 503). The default releases at once.
    fn release(
        &mut self,
        id: ExchangeId,
    ) -> impl Future<Output = Result<(), LocalResponse>> + Send {
        let _ = id;
        std::future::ready(Ok(()))
    }

    /// Called with the upstream's final response head once [`Handler::release`] let it out,
    /// before any of it is sent; the inspector returned sees the body. `has_body` is false for
    /// HEAD, 204 and 304 answers, whose inspector (if any) is only told the body's end.
    fn inspect(
        &mut self,
        id: ExchangeId,
        head: &ResponseHead,
        has_body: bool,
    ) -> Option<Self::Inspector>;

    /// Hands back the inspector [`Handler::inspect`] returned, once the body went through it
    /// (or failed to), before [`Handler::finish`]. Must not block.
    fn inspected(&mut self, id: ExchangeId, inspector: Self::Inspector);

    /// Told how the exchange ended (for audit completion and metrics). Must not block.
    fn finish(&mut self, outcome: &Finished<'_>);

    /// The answer to an engine error (malformed request, limit, timeout, upstream failure) that
    /// ends the connection before any response head went out; `None` when the error carries no
    /// status ([`HttpError::status`]) and the connection simply closes. The engine sends it with
    /// `Connection: close`; its body is the handler's format (the sidecar's is a FHIR
    /// OperationOutcome).
    fn error_response(&self, err: &HttpError, id: ExchangeId) -> Option<LocalResponse>;
}
