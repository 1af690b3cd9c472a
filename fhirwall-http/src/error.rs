//! Errors of the HTTP engine. Each one knows which side of the proxy it came from and which status
//! (if any) the client should be answered with.
//!
//! Reasons are `&'static str` on purpose: an error text can never echo a request value (a patient
//! id in a query, a header value), so it is safe to log, to count, and to put in an
//! `OperationOutcome`'s diagnostics.

use std::{io, time::Duration};

/// Which side of the proxy an error came from, as pingora's `ErrorSource`: metrics and audit
/// records label failures with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorSource {
    /// The client: malformed or oversized request, timeout, disconnect.
    Downstream,
    /// The upstream FHIR server: refused connection, malformed response, timeout.
    Upstream,
    /// The proxy itself, e.g. a handler that set an invalid header field.
    Internal,
}

impl ErrorSource {
    /// A stable label for metrics and audit records.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Downstream => "downstream",
            Self::Upstream => "upstream",
            Self::Internal => "internal",
        }
    }
}

/// Everything that can go wrong while serving one HTTP/1.1 connection.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The request violates RFC 9112 / RFC 9110 framing or syntax.
    #[error("malformed request: {reason}")]
    BadRequest { reason: &'static str },
    /// The request line is longer than the configured limit (RFC 9112 section 3).
    #[error("request line longer than {limit} bytes")]
    UriTooLong { limit: usize },
    /// The head is larger than the configured limit (RFC 6585 section 5).
    #[error("request head larger than {limit} bytes")]
    HeadTooLarge { limit: usize },
    /// More header fields than the configured limit (RFC 6585 section 5).
    #[error("more than {limit} request header fields")]
    TooManyHeaders { limit: usize },
    /// A well-formed HTTP version other than 1.0 and 1.1 (RFC 9110 section 15.6.6).
    #[error("HTTP version not supported")]
    VersionNotSupported,
    /// CONNECT and TRACE never pass through the proxy.
    #[error("method not allowed through the proxy: {method}")]
    MethodNotAllowed { method: &'static str },
    /// An `Expect` member other than `100-continue` (RFC 9110 section 10.1.1).
    #[error("unsupported expectation")]
    ExpectationFailed,
    /// A body the handler asked to buffer exceeds the cap.
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// The request head did not arrive in time.
    #[error("request head not received within {after:?}")]
    HeaderTimeout { after: Duration },
    /// The request body stalled.
    #[error("request body stalled for {after:?}")]
    BodyTimeout { after: Duration },
    /// The client stopped reading its response.
    #[error("client did not accept response bytes for {after:?}")]
    WriteTimeout { after: Duration },
    /// The client closed its side in the middle of a request.
    #[error("client closed the connection mid-request")]
    DownstreamClosed,
    /// Reading from or writing to the client failed.
    #[error("client connection failed")]
    DownstreamIo {
        #[source]
        source: io::Error,
    },
    /// The upstream connection (or its TLS handshake) could not be made.
    #[error("could not connect upstream")]
    UpstreamConnect {
        #[source]
        source: io::Error,
    },
    /// The upstream connection was not made in time.
    #[error("upstream connect timed out after {after:?}")]
    UpstreamConnectTimeout { after: Duration },
    /// The upstream response head, or a piece of its body, did not arrive in time.
    #[error("upstream did not answer within {after:?}")]
    UpstreamTimeout { after: Duration },
    /// The upstream response violates RFC 9112 framing or syntax.
    #[error("malformed upstream response: {reason}")]
    BadResponse { reason: &'static str },
    /// The upstream closed before a complete response.
    #[error("upstream closed the connection before a complete response")]
    UpstreamClosed,
    /// Reading from or writing to the upstream failed.
    #[error("upstream connection failed")]
    UpstreamIo {
        #[source]
        source: io::Error,
    },
    /// A handler tried to set a header field that is not valid HTTP; nothing is forwarded.
    #[error("invalid header field set by the proxy: {reason}")]
    InvalidHeader { reason: &'static str },
    /// A handler answered with a status that is not a final status code (200 to 599).
    #[error("handler answered with invalid status {status}")]
    InvalidStatus { status: u16 },
    /// The response inspector refused a response after part of it went out: the response is
    /// cut off, the connection closed.
    #[error("response cut off by its inspector")]
    ResponseCut,
}

impl HttpError {
    /// Which side of the proxy the error came from.
    #[must_use]
    pub fn error_source(&self) -> ErrorSource {
        match self {
            Self::BadRequest { .. }
            | Self::UriTooLong { .. }
            | Self::HeadTooLarge { .. }
            | Self::TooManyHeaders { .. }
            | Self::VersionNotSupported
            | Self::MethodNotAllowed { .. }
            | Self::ExpectationFailed
            | Self::BodyTooLarge { .. }
            | Self::HeaderTimeout { .. }
            | Self::BodyTimeout { .. }
            | Self::WriteTimeout { .. }
            | Self::DownstreamClosed
            | Self::DownstreamIo { .. } => ErrorSource::Downstream,
            Self::UpstreamConnect { .. }
            | Self::UpstreamConnectTimeout { .. }
            | Self::UpstreamTimeout { .. }
            | Self::BadResponse { .. }
            | Self::UpstreamClosed
            | Self::UpstreamIo { .. } => ErrorSource::Upstream,
            Self::InvalidHeader { .. } | Self::InvalidStatus { .. } | Self::ResponseCut => {
                ErrorSource::Internal
            }
        }
    }

    /// The status to answer the client with, or `None` when no answer makes sense (the client is
    /// gone or stopped reading).
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        Some(match self {
            // A half-closed client can still read an answer; trying costs nothing.
            Self::BadRequest { .. } | Self::DownstreamClosed => 400,
            Self::UriTooLong { .. } => 414,
            Self::HeadTooLarge { .. } | Self::TooManyHeaders { .. } => 431,
            Self::VersionNotSupported => 505,
            Self::MethodNotAllowed { .. } => 405,
            Self::ExpectationFailed => 417,
            Self::BodyTooLarge { .. } => 413,
            Self::HeaderTimeout { .. } | Self::BodyTimeout { .. } => 408,
            Self::UpstreamConnect { .. }
            | Self::BadResponse { .. }
            | Self::UpstreamClosed
            | Self::UpstreamIo { .. } => 502,
            Self::UpstreamConnectTimeout { .. } | Self::UpstreamTimeout { .. } => 504,
            Self::InvalidHeader { .. } | Self::InvalidStatus { .. } => 500,
            Self::WriteTimeout { .. } | Self::DownstreamIo { .. } | Self::ResponseCut => {
                return None;
            }
        })
    }

    /// A short, static, PHI-free reason for diagnostics and logs.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadRequest { reason }
            | Self::BadResponse { reason }
            | Self::InvalidHeader { reason } => reason,
            Self::InvalidStatus { .. } => "handler answered with an invalid status",
            Self::UriTooLong { .. } => "request line too long",
            Self::HeadTooLarge { .. } => "request header section too large",
            Self::TooManyHeaders { .. } => "too many request header fields",
            Self::VersionNotSupported => "HTTP version not supported",
            Self::MethodNotAllowed { .. } => "method not allowed through the proxy",
            Self::ExpectationFailed => "unsupported Expect value",
            Self::BodyTooLarge { .. } => "request body too large",
            Self::HeaderTimeout { .. } => "request head not received in time",
            Self::BodyTimeout { .. } => "request body stalled",
            Self::WriteTimeout { .. } => "client stopped reading",
            Self::DownstreamClosed => "client closed mid-request",
            Self::DownstreamIo { .. } => "client connection failed",
            Self::UpstreamConnect { .. } | Self::UpstreamIo { .. } => "upstream connection failed",
            Self::UpstreamConnectTimeout { .. } => "upstream connect timed out",
            Self::UpstreamTimeout { .. } => "upstream did not answer in time",
            Self::UpstreamClosed => "upstream closed before a complete response",
            Self::ResponseCut => "response refused after it began",
        }
    }
}
