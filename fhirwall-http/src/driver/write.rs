//! Serializing heads the proxy sends: the request to the upstream, and responses to the client.

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Conn, down_write};
use crate::{Handler, HttpError, LocalResponse, RequestHead, ResponseHead, Upstreams, body};

/// Framing of a message the proxy sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No framing field (no body, or a close-delimited body to an HTTP/1.0 client).
    Unframed,
    Length(u64),
    Chunked,
}

/// `method SP origin-form SP HTTP/1.1` and the fields, always as HTTP/1.1 (RFC 9110 section 6.2:
/// an intermediary sends its own version).
pub(super) fn put_request_head(out: &mut BytesMut, head: &RequestHead, framing: Framing) {
    out.put_slice(head.method().as_bytes());
    out.put_u8(b' ');
    out.put_slice(head.target());
    out.put_slice(b" HTTP/1.1\r\n");
    head.headers.write_to(out);
    put_framing(out, framing);
    out.put_slice(b"\r\n");
}

/// The status line and fields of an upstream response as sent to the client.
pub(super) fn put_response_head(
    out: &mut BytesMut,
    resp: &ResponseHead,
    framing: Framing,
    close: bool,
) {
    put_status_line(out, resp.status(), resp.reason());
    resp.headers.write_to(out);
    put_framing(out, framing);
    if close {
        out.put_slice(b"Connection: close\r\n");
    }
    out.put_slice(b"\r\n");
}

fn put_status_line(out: &mut BytesMut, status: u16, reason: &[u8]) {
    out.put_slice(b"HTTP/1.1 ");
    put_decimal(out, u64::from(status));
    out.put_u8(b' ');
    out.put_slice(reason);
    out.put_slice(b"\r\n");
}

fn put_framing(out: &mut BytesMut, framing: Framing) {
    match framing {
        Framing::Unframed => {}
        Framing::Length(n) => {
            out.put_slice(b"Content-Length: ");
            put_decimal(out, n);
            out.put_slice(b"\r\n");
        }
        Framing::Chunked => out.put_slice(b"Transfer-Encoding: chunked\r\n"),
    }
}

/// Decimal digits without going through `fmt` (no allocation, no formatter machinery).
pub(super) fn put_decimal(out: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b"0123456789"[(n % 10) as usize];
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[at..]);
}

/// Reason phrases of the statuses the proxy produces itself.
fn reason_phrase(status: u16) -> &'static [u8] {
    match status {
        200 => b"OK",
        201 => b"Created",
        204 => b"No Content",
        400 => b"Bad Request",
        401 => b"Unauthorized",
        403 => b"Forbidden",
        404 => b"Not Found",
        405 => b"Method Not Allowed",
        408 => b"Request Timeout",
        413 => b"Content Too Large",
        414 => b"URI Too Long",
        417 => b"Expectation Failed",
        429 => b"Too Many Requests",
        431 => b"Request Header Fields Too Large",
        500 => b"Internal Server Error",
        502 => b"Bad Gateway",
        503 => b"Service Unavailable",
        504 => b"Gateway Timeout",
        505 => b"HTTP Version Not Supported",
        _ => b"",
    }
}

impl<D, H, U, F> Conn<'_, '_, D, H, U, F>
where
    D: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
    U: Upstreams<Key = H::Upstream>,
    F: Future<Output = ()>,
{
    /// Writes a local response (with `Content-Length`, and `Connection: close` when closing).
    pub(super) async fn write_local(
        &mut self,
        response: &LocalResponse,
        close: bool,
        omit_body: bool,
    ) -> Result<(), HttpError> {
        let out = &mut self.out.buf;
        put_status_line(out, response.status, reason_phrase(response.status));
        response.headers.write_to(out);
        put_framing(out, Framing::Length(response.body.len() as u64));
        if close {
            out.put_slice(b"Connection: close\r\n");
        }
        out.put_slice(b"\r\n");
        let t = self.limits.body_timeout;
        if !omit_body {
            if response.body.len() < 8 * 1024 {
                out.put_slice(&response.body);
            } else {
                self.out
                    .flush(&mut self.io, t)
                    .await
                    .map_err(|f| down_write(f, t))?;
                body::write_all(&mut self.io, &response.body, t)
                    .await
                    .map_err(|f| down_write(f, t))?;
            }
        }
        self.out
            .flush(&mut self.io, t)
            .await
            .map_err(|f| down_write(f, t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal() {
        for n in [0u64, 7, 10, 99, 100, 65_535, u64::MAX] {
            let mut out = BytesMut::new();
            put_decimal(&mut out, n);
            assert_eq!(&out[..], n.to_string().as_bytes());
        }
    }
}
