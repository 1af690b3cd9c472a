//! The sidecar's HTTP/1.1 engine: strict request parsing (RFC 9112), a [`Handler`] deciding each
//! request, forwarding over pooled upstream connections with streamed bodies, and local answers.
//!
//! Generic over `AsyncRead + AsyncWrite` streams on both sides: the listener hands over a plain
//! TCP or TLS-terminated stream, and the [`Upstreams`] give TLS/mTLS connections; tests use
//! in-memory duplex streams and loopback TCP.
//!
//! One request, in order (see [`serve_connection`]):
//! ```text
//! read head (header timeout) -> scan CRLF + limits -> httparse -> validate framing, Host, target
//!   -> strip hop-by-hop -> Handler::body_mode -> [read whole body, 413 beyond the cap]
//!   -> Handler::decide (audit committed) -> Respond: local answer
//!                                          -> Forward: connect (pool) -> request, body streamed or
//!                                             re-framed -> response head (1xx skipped, strict)
//!                                             -> Handler::inspect: response held, changed or
//!                                                refused as the inspector says, else streamed
//!                                             -> connection pooled
//!   -> Handler::finish (status, bytes, duration, error source)
//! ```
//! After any framing error the connection is answered and closed: nothing after a bad request is
//! ever read as a request, and no byte of a refused request head is forwarded.

mod body;
pub mod chunked;
mod driver;
mod error;
mod framing;
mod handler;
mod headers;
mod limits;
mod pool;
mod request;
mod response;
mod scan;

pub use chunked::{ChunkedDecoder, ChunkedError};
pub use driver::{ConnectionEnd, ConnectionSummary, serve_connection};
pub use error::{ErrorSource, HttpError};
pub use framing::BodyFraming;
pub use handler::{
    BodyMode, Dispatch, ExchangeId, Finished, Handler, Inspected, LocalResponse, NoInspection,
    ResponseInspector,
};
pub use headers::{Header, Headers, is_field_value, is_token};
pub use limits::{Limits, MAX_HEADERS};
pub use pool::{Checkout, Connector, Pool, PoolConfig, Upstreams};
pub use request::{Method, RequestHead, RequestParser, Version};
pub use response::{ResponseBody, ResponseHead, ResponseParser};

#[cfg(test)]
mod tests;
