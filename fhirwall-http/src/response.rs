//! Upstream response heads, parsed as strictly as requests: the upstream is trusted less than it
//! seems (a compromised or buggy FHIR server must not be able to desync the client connection).

use bytes::{Bytes, BytesMut};

use super::{
    Headers, HttpError, Limits, Method, Version,
    framing::framing_fields,
    headers::list_elements,
    limits::MAX_HEADERS,
    scan::{HeadLimits, HeadScanner, ScanError},
};

/// How a response body is delimited (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseBody {
    /// No body: HEAD request, 1xx, 204 or 304.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
    /// Everything until the upstream closes the connection.
    UntilClose,
}

/// A parsed and validated upstream response head.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseHead {
    status: u16,
    reason: Bytes,
    version: Version,
    /// End-to-end fields; hop-by-hop and framing fields are already removed.
    pub headers: Headers,
    content_length: Option<u64>,
    chunked: bool,
    keep_alive: bool,
}

impl ResponseHead {
    /// The status code, 100 to 599.
    #[must_use]
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The reason phrase as received (may be empty).
    #[must_use]
    pub fn reason(&self) -> &[u8] {
        &self.reason
    }

    /// The version the upstream spoke.
    #[must_use]
    pub fn version(&self) -> Version {
        self.version
    }

    /// The validated `Content-Length`, if any.
    #[must_use]
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// Whether the upstream lets the connection be reused (HTTP/1.1 without `Connection: close`).
    #[must_use]
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// Whether this is an interim (1xx) response.
    #[must_use]
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status)
    }

    /// How the body is delimited, given the request method (RFC 9112 section 6.3, rules 1 to 8).
    #[must_use]
    pub fn body(&self, method: &Method) -> ResponseBody {
        if *method == Method::Head || self.is_interim() || self.status == 204 || self.status == 304
        {
            ResponseBody::None
        } else if self.chunked {
            ResponseBody::Chunked
        } else if let Some(n) = self.content_length {
            ResponseBody::Length(n)
        } else {
            ResponseBody::UntilClose
        }
    }
}

/// Parses response heads off the front of an upstream connection's read buffer.
#[derive(Debug, Default, Clone)]
pub struct ResponseParser {
    scanner: HeadScanner,
}

impl ResponseParser {
    /// Parses the response head at the front of `buf`; same contract as
    /// [`RequestParser::parse`](super::RequestParser::parse), errors are [`HttpError::BadResponse`].
    pub fn parse(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
        head: &mut ResponseHead,
    ) -> Result<bool, HttpError> {
        let head_limits = HeadLimits {
            first_line: limits.max_response_head,
            head: limits.max_response_head,
            fields: MAX_HEADERS,
        };
        let span = match self.scanner.scan(buf, head_limits) {
            Ok(Some(span)) => span,
            Ok(None) => return Ok(false),
            Err(ScanError::BareLf) => return Err(bad("bare LF line ending")),
            Err(ScanError::FirstLineTooLong | ScanError::HeadTooLarge) => {
                return Err(bad("response head too large"));
            }
            Err(ScanError::TooManyFields) => return Err(bad("too many response header fields")),
        };
        self.scanner.reset();
        let bytes = buf.split_to(span.end).freeze().slice(span.start..);
        decode(&bytes, head)?;
        Ok(true)
    }
}

const fn bad(reason: &'static str) -> HttpError {
    HttpError::BadResponse { reason }
}

fn decode(bytes: &Bytes, head: &mut ResponseHead) -> Result<(), HttpError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut slots);
    match res.parse(bytes) {
        Ok(httparse::Status::Complete(n)) if n == bytes.len() => {}
        Ok(_) => return Err(bad("incomplete head")),
        Err(httparse::Error::Version) => return Err(bad("unsupported HTTP version")),
        Err(httparse::Error::Status) => return Err(bad("invalid status line")),
        Err(_) => return Err(bad("invalid header field")),
    }
    let (Some(minor), Some(status)) = (res.version, res.code) else {
        return Err(bad("incomplete status line"));
    };
    if !(100..=599).contains(&status) {
        return Err(bad("status code out of range"));
    }
    head.status = status;
    head.reason = bytes.slice_ref(res.reason.unwrap_or_default().as_bytes());
    head.version = Version::from_minor(minor);
    head.headers.fill_parsed(res.headers, bytes);
    let framing = framing_fields(&head.headers, head.version).map_err(bad)?;
    head.content_length = framing.content_length;
    head.chunked = framing.chunked;
    head.keep_alive = head.version == Version::Http11
        && !head
            .headers
            .get_all("connection")
            .flat_map(list_elements)
            .any(|t| t.eq_ignore_ascii_case(b"close"));
    head.headers.strip_hop_by_hop();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &[u8]) -> Result<ResponseHead, HttpError> {
        let mut buf = BytesMut::from(input);
        let mut head = ResponseHead::default();
        let limits = Limits {
            max_response_head: 128,
            ..Limits::default()
        };
        if ResponseParser::default().parse(&mut buf, &limits, &mut head)? {
            Ok(head)
        } else {
            Err(bad("test: incomplete"))
        }
    }

    #[test]
    fn framing_by_status_and_method() {
        let cases: &[(&[u8], Method, ResponseBody, bool)] = &[
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                Method::Get,
                ResponseBody::Length(5),
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                Method::Head,
                ResponseBody::None,
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Method::Get,
                ResponseBody::Chunked,
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
                Method::Get,
                ResponseBody::UntilClose,
                false,
            ),
            (
                b"HTTP/1.0 200 OK\r\n\r\n",
                Method::Get,
                ResponseBody::UntilClose,
                false,
            ),
            (
                b"HTTP/1.1 204 No Content\r\n\r\n",
                Method::Delete,
                ResponseBody::None,
                true,
            ),
            (
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                Method::Get,
                ResponseBody::None,
                true,
            ),
            (
                b"HTTP/1.1 100 Continue\r\n\r\n",
                Method::Post,
                ResponseBody::None,
                true,
            ),
            (
                b"HTTP/1.1 201 \r\nContent-Length: 0\r\n\r\n",
                Method::Post,
                ResponseBody::Length(0),
                true,
            ),
        ];
        for (input, method, body, keep_alive) in cases {
            let head = parse(input).expect("valid response");
            assert_eq!(
                head.body(method),
                *body,
                "{}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(
                head.keep_alive(),
                *keep_alive,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn refusals() {
        let cases: &[&[u8]] = &[
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\nContent-Length: 5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX : y\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: y\r\n folded\r\n\r\n",
            b"HTTP/2 200 OK\r\n\r\n",
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 600 Weird\r\n\r\n",
            b"HTTP/1.1 099 Weird\r\n\r\n",
            b"ICY 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n",
        ];
        for input in cases {
            let err = parse(input).expect_err(&String::from_utf8_lossy(input));
            assert!(matches!(err, HttpError::BadResponse { .. }), "{err:?}");
            assert_eq!(err.status(), Some(502));
        }
    }

    #[test]
    fn strips_hop_by_hop() {
        let head = parse(
            b"HTTP/1.1 200 OK\r\nConnection: x-a\r\nX-A: 1\r\nKeep-Alive: 1\r\nETag: \"1\"\r\n\r\n",
        )
        .expect("valid");
        let names: Vec<&[u8]> = head
            .headers
            .iter()
            .map(super::super::Header::name)
            .collect();
        assert_eq!(names, vec![&b"ETag"[..]]);
    }
}
