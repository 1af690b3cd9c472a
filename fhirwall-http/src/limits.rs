//! Size limits and timeouts of the HTTP engine. Every limit bounds memory or time that a hostile
//! client (or upstream) could otherwise make the sidecar spend.

use std::time::Duration;

/// The most header fields a head may carry, whatever [`Limits::max_headers`] says: the parser
/// keeps them in a fixed array on the stack.
pub const MAX_HEADERS: usize = 128;

/// Limits for one connection. [`Limits::default`] holds values suited to FHIR traffic.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest request line (method, target, version); beyond it the answer is 414.
    pub max_request_line: usize,
    /// Largest request head (request line and all fields); beyond it the answer is 431.
    pub max_head: usize,
    /// Most request header fields (capped at [`MAX_HEADERS`]); beyond it the answer is 431.
    pub max_headers: usize,
    /// Largest upstream response head; beyond it the answer is 502.
    pub max_response_head: usize,
    /// Largest body the handler may ask to buffer; beyond it the answer is 413.
    pub max_buffered_body: usize,
    /// Longest chunk-size line, extensions included (RFC 9112 section 7.1.1).
    pub max_chunk_line: usize,
    /// Largest trailer section of a chunked body; trailers are checked then dropped.
    pub max_trailer: usize,
    /// Largest unread request body the proxy reads and discards after a local answer to keep the
    /// connection; a larger one closes the connection instead.
    pub max_drain: u64,
    /// Size of one read when streaming a body; the buffers stay near this size.
    pub io_buffer: usize,
    /// Time to receive a whole request head, from its first byte (or from accept).
    pub header_timeout: Duration,
    /// Time an idle keep-alive connection waits for the next request.
    pub idle_timeout: Duration,
    /// Longest stall of a body in either direction, and of a write to the client.
    pub body_timeout: Duration,
    /// Time to obtain an upstream connection (TCP and TLS handshake included).
    pub connect_timeout: Duration,
    /// Time from the end of the forwarded request to the upstream response head.
    pub response_timeout: Duration,
    /// After an error answer, how long the proxy keeps reading (and dropping) what the client
    /// still sends, so that closing does not reset the connection before the client has read the
    /// answer (the "lingering close" of RFC 9112 section 9.6).
    pub linger_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_line: 8 * 1024,
            max_head: 32 * 1024,
            max_headers: 100,
            max_response_head: 64 * 1024,
            max_buffered_body: 16 * 1024 * 1024,
            max_chunk_line: 1024,
            max_trailer: 8 * 1024,
            max_drain: 64 * 1024,
            io_buffer: 16 * 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_mins(1),
            body_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_mins(1),
            linger_timeout: Duration::from_secs(2),
        }
    }
}

impl Limits {
    /// The header-count limit actually enforced.
    #[must_use]
    pub fn header_count(&self) -> usize {
        self.max_headers.min(MAX_HEADERS)
    }
}
