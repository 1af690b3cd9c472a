//! Request heads: strict parsing (RFC 9112 sections 2 to 3, RFC 9110 section 7) into a
//! [`RequestHead`] the handler can read and rewrite.
//!
//! Choices that go beyond "what httparse accepts", each fail-closed:
//! - Only origin-form (`/path?query`) and absolute-form (`http(s)://authority/path`) targets;
//!   asterisk-form and authority-form are refused, and so are CONNECT and TRACE (405): CONNECT
//!   would open a tunnel past policy, and TRACE would echo back the credential the proxy injects.
//! - An absolute-form target must name the same authority as `Host`, and is forwarded in
//!   origin-form (RFC 9112 section 3.2.1: origin servers get origin-form).
//! - Exactly one valid `Host` field, in HTTP/1.0 too (RFC 9112 section 3.2 only requires it of
//!   1.1): the request is always forwarded as HTTP/1.1, which needs it, and the proxy never
//!   invents an authority.
//! - `Upgrade` (h2c, WebSocket) is not honoured: it is hop-by-hop, so it is stripped and the
//!   request is served as plain HTTP/1.1, as RFC 9110 section 7.8 allows. No tunnel can open past
//!   policy. The h2 prior-knowledge preface fails the version check (505).
//! - `Expect: 100-continue` is handled here, not forwarded: the proxy sends `100 Continue` itself
//!   once the handler allows the request; any other expectation is a 417.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};

use super::{
    BodyFraming, Headers, HttpError, Limits,
    framing::framing_fields,
    headers::list_elements,
    limits::MAX_HEADERS,
    scan::{HeadLimits, HeadScanner, ScanError},
};

/// HTTP version of a message (RFC 9112 section 2.3); anything else is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Version {
    /// HTTP/1.0: no keep-alive, no chunked coding.
    Http10,
    /// HTTP/1.1.
    #[default]
    Http11,
}

impl Version {
    /// The version of a head httparse accepted (`HTTP/1.<minor>`; it accepts only 0 and 1).
    pub(crate) fn from_minor(minor: u8) -> Self {
        if minor == 0 {
            Self::Http10
        } else {
            Self::Http11
        }
    }
}

/// Request method (RFC 9110 section 9). Methods are case-sensitive: `get` is [`Method::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Method {
    #[default]
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
    /// Any other token (never CONNECT or TRACE, which are refused).
    Other(Bytes),
}

impl Method {
    fn from_token(token: &str, bytes: &Bytes) -> Self {
        match token {
            "GET" => Self::Get,
            "HEAD" => Self::Head,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "PATCH" => Self::Patch,
            "DELETE" => Self::Delete,
            "OPTIONS" => Self::Options,
            other => Self::Other(bytes.slice_ref(other.as_bytes())),
        }
    }

    /// The method token.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Get => b"GET",
            Self::Head => b"HEAD",
            Self::Post => b"POST",
            Self::Put => b"PUT",
            Self::Patch => b"PATCH",
            Self::Delete => b"DELETE",
            Self::Options => b"OPTIONS",
            Self::Other(token) => token,
        }
    }

    /// Idempotent methods (RFC 9110 section 9.2.2), the only ones a proxy may retry.
    #[must_use]
    pub fn is_idempotent(&self) -> bool {
        matches!(
            self,
            Self::Get | Self::Head | Self::Put | Self::Delete | Self::Options
        )
    }
}

/// A parsed and validated request head.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHead {
    method: Method,
    target: Bytes,
    version: Version,
    /// End-to-end header fields as they will be forwarded: hop-by-hop fields, framing fields and
    /// `Expect` are already removed. The handler may rewrite them (e.g. replace `Authorization`).
    pub headers: Headers,
    framing: BodyFraming,
    keep_alive: bool,
    expect_continue: bool,
}

impl RequestHead {
    /// The request method.
    #[must_use]
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The request target in origin-form: `/path?query`.
    #[must_use]
    pub fn target(&self) -> &[u8] {
        &self.target
    }

    /// The path part of the target.
    #[must_use]
    pub fn path(&self) -> &[u8] {
        self.target.split(|&b| b == b'?').next().unwrap_or_default()
    }

    /// The query part of the target, without `?`.
    #[must_use]
    pub fn query(&self) -> Option<&[u8]> {
        let at = self.target.iter().position(|&b| b == b'?')?;
        Some(&self.target[at + 1..])
    }

    /// The HTTP version the client spoke.
    #[must_use]
    pub fn version(&self) -> Version {
        self.version
    }

    /// The `Host` field value.
    #[must_use]
    pub fn host(&self) -> Option<&[u8]> {
        self.headers.get("host")
    }

    /// How the body is delimited.
    #[must_use]
    pub fn framing(&self) -> BodyFraming {
        self.framing
    }

    /// Whether the client wants the connection kept after this exchange.
    #[must_use]
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// Whether the client waits for `100 Continue` before sending the body.
    #[must_use]
    pub fn expects_continue(&self) -> bool {
        self.expect_continue
    }

    /// Replaces the `Host` field, e.g. with the upstream's own authority. The value must be a
    /// valid `uri-host [ ":" port ]` (no userinfo).
    pub fn set_host(&mut self, host: impl Into<Bytes>) -> Result<(), HttpError> {
        let host = host.into();
        if !is_authority(&host) {
            return Err(HttpError::InvalidHeader {
                reason: "Host is not a valid authority",
            });
        }
        self.headers.remove("host");
        self.headers.push_parsed(Bytes::from_static(b"Host"), host);
        Ok(())
    }

    /// Replaces the request target, e.g. to map the client's base path onto the upstream's. It
    /// must be an origin-form target: `/`, then visible ASCII without `#`.
    pub fn set_target(&mut self, target: impl Into<Bytes>) -> Result<(), HttpError> {
        let target = target.into();
        let visible = target.iter().all(|&b| b.is_ascii_graphic() && b != b'#');
        if target.first() != Some(&b'/') || !visible {
            return Err(HttpError::InvalidHeader {
                reason: "target is not in origin-form",
            });
        }
        self.target = target;
        Ok(())
    }

    /// Drops the references into the connection's read buffer, so the buffer can be reused.
    pub(crate) fn release(&mut self) {
        self.headers.clear();
        self.target = Bytes::new();
        if let Method::Other(_) = self.method {
            self.method = Method::Get;
        }
    }
}

/// Parses request heads off the front of a connection's read buffer.
#[derive(Debug, Default, Clone)]
pub struct RequestParser {
    scanner: HeadScanner,
}

impl RequestParser {
    /// Parses the request head at the front of `buf`. `Ok(true)`: the head bytes are split off
    /// `buf` (which now starts with the body) and `head` holds the request. `Ok(false)`: more bytes
    /// are needed. `Err`: the request is refused; the connection must close after the answer.
    pub fn parse(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
        head: &mut RequestHead,
    ) -> Result<bool, HttpError> {
        let head_limits = HeadLimits {
            first_line: limits.max_request_line,
            head: limits.max_head,
            fields: limits.header_count(),
        };
        let span = match self.scanner.scan(buf, head_limits) {
            Ok(Some(span)) => span,
            Ok(None) => return Ok(false),
            Err(err) => return Err(scan_error(err, limits)),
        };
        self.scanner.reset();
        let bytes = buf.split_to(span.end).freeze().slice(span.start..);
        decode(&bytes, head)?;
        Ok(true)
    }

    /// Whether bytes of a request head are waiting in `buf` (beyond skipped empty lines).
    #[must_use]
    pub fn has_partial(&self, buf: &[u8]) -> bool {
        self.scanner.started(buf)
    }
}

fn scan_error(err: ScanError, limits: &Limits) -> HttpError {
    match err {
        ScanError::BareLf => HttpError::BadRequest {
            reason: "bare LF line ending",
        },
        ScanError::FirstLineTooLong => HttpError::UriTooLong {
            limit: limits.max_request_line,
        },
        ScanError::HeadTooLarge => HttpError::HeadTooLarge {
            limit: limits.max_head,
        },
        ScanError::TooManyFields => HttpError::TooManyHeaders {
            limit: limits.header_count(),
        },
    }
}

const fn bad(reason: &'static str) -> HttpError {
    HttpError::BadRequest { reason }
}

/// Fills `head` from one complete head (request line to the empty line).
fn decode(bytes: &Bytes, head: &mut RequestHead) -> Result<(), HttpError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(bytes, &mut slots) {
        Ok(httparse::Status::Complete(n)) if n == bytes.len() => {}
        Ok(_) => return Err(bad("incomplete head")),
        Err(err) => return Err(httparse_error(err, bytes)),
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(bad("incomplete request line"));
    };
    if method == "CONNECT" || method == "TRACE" {
        return Err(HttpError::MethodNotAllowed {
            method: if method == "TRACE" {
                "TRACE"
            } else {
                "CONNECT"
            },
        });
    }
    head.method = Method::from_token(method, bytes);
    head.version = Version::from_minor(minor);
    head.headers.fill_parsed(req.headers, bytes);
    let authority = check_host(&head.headers)?;
    head.target = origin_form(bytes.slice_ref(target.as_bytes()), authority)?;
    let framing = framing_fields(&head.headers, head.version).map_err(bad)?;
    head.framing = match (framing.chunked, framing.content_length) {
        (true, _) => BodyFraming::Chunked,
        (false, Some(n)) => BodyFraming::Length(n),
        (false, None) => BodyFraming::None,
    };
    head.expect_continue = expects_continue(&head.headers, head.version)?;
    head.keep_alive = head.version == Version::Http11
        && !head
            .headers
            .get_all("connection")
            .flat_map(list_elements)
            .any(|t| t.eq_ignore_ascii_case(b"close"));
    head.headers.remove("expect");
    head.headers.strip_hop_by_hop();
    Ok(())
}

fn httparse_error(err: httparse::Error, bytes: &[u8]) -> HttpError {
    match err {
        httparse::Error::Version if names_other_version(bytes) => HttpError::VersionNotSupported,
        httparse::Error::Version => bad("invalid HTTP version"),
        httparse::Error::HeaderName => bad("invalid header field name"),
        httparse::Error::HeaderValue => bad("invalid header field value"),
        httparse::Error::NewLine => bad("invalid line ending"),
        httparse::Error::Token => bad("invalid method or request target"),
        httparse::Error::TooManyHeaders => HttpError::TooManyHeaders { limit: MAX_HEADERS },
        httparse::Error::Status => bad("invalid status"),
    }
}

/// Whether the request line ends in a well-formed `HTTP/d.d` (then 505, else 400).
fn names_other_version(bytes: &[u8]) -> bool {
    let line = bytes.split(|&b| b == b'\r').next().unwrap_or_default();
    let version = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    matches!(version, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
        if major.is_ascii_digit() && minor.is_ascii_digit())
}

/// Exactly one `Host` field with a valid value (RFC 9112 section 3.2); returns its value.
fn check_host(headers: &Headers) -> Result<&[u8], HttpError> {
    let mut hosts = headers.get_all("host");
    match (hosts.next(), hosts.next()) {
        (None, _) => Err(bad("missing Host")),
        (Some(_), Some(_)) => Err(bad("more than one Host field")),
        (Some(host), None) if is_authority(host) => Ok(host),
        (Some(_), None) => Err(bad("invalid Host")),
    }
}

/// `uri-host [ ":" port ]` characters (RFC 3986 section 3.2.2), without userinfo.
fn is_authority(value: &[u8]) -> bool {
    !value.is_empty()
        && value
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&b))
}

/// The origin-form of `target`: origin-form is kept, absolute-form must name `host` and is cut
/// down to its path and query.
fn origin_form(target: Bytes, host: &[u8]) -> Result<Bytes, HttpError> {
    if !target.is_ascii() {
        return Err(bad("non-ASCII byte in request target"));
    }
    if target.contains(&b'#') {
        return Err(bad("fragment in request target"));
    }
    if target.first() == Some(&b'/') {
        return Ok(target);
    }
    if target.as_ref() == b"*" {
        return Err(bad("asterisk-form request target"));
    }
    let rest = strip_prefix_ignore_case(&target, b"http://")
        .or_else(|| strip_prefix_ignore_case(&target, b"https://"))
        .ok_or(bad("unsupported request target form"))?;
    let end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.contains(&b'@') {
        return Err(bad("userinfo in request target"));
    }
    if !is_authority(authority) {
        return Err(bad("invalid authority in request target"));
    }
    if !authority.eq_ignore_ascii_case(host) {
        return Err(bad("request target authority differs from Host"));
    }
    let path = &rest[end..];
    Ok(match path.first() {
        Some(b'/') => target.slice_ref(path),
        // `http://host` and `http://host?q` mean the path `/` (RFC 9112 section 3.2.1).
        _ => [&b"/"[..], path].concat().into(),
    })
}

fn strip_prefix_ignore_case<'a>(bytes: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = bytes.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &bytes[prefix.len()..])
}

/// `Expect` (RFC 9110 section 10.1.1): `100-continue` is understood, anything else is a 417; an
/// HTTP/1.0 request's expectation is ignored, as the RFC requires.
fn expects_continue(headers: &Headers, version: Version) -> Result<bool, HttpError> {
    if version == Version::Http10 {
        return Ok(false);
    }
    let mut expect = false;
    for element in headers.get_all("expect").flat_map(list_elements) {
        if !element.eq_ignore_ascii_case(b"100-continue") {
            return Err(HttpError::ExpectationFailed);
        }
        expect = true;
    }
    Ok(expect)
}

#[cfg(test)]
mod tests;
