//! Message framing fields: `Content-Length` and `Transfer-Encoding` (RFC 9112 section 6).
//!
//! The rules are stricter than the RFC where the RFC tolerates something another hop may read
//! differently. The proxy never forwards these fields as received: it regenerates framing from what
//! it validated here, so the upstream reads exactly the message boundaries the proxy enforced.

use super::{Headers, Version};

/// How a request body is delimited (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyFraming {
    /// No body: neither `Content-Length` nor `Transfer-Encoding`.
    #[default]
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
}

/// The validated framing fields of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FramingFields {
    pub(crate) content_length: Option<u64>,
    pub(crate) chunked: bool,
}

/// Validates the framing fields of a request or response head.
///
/// Refused, each with its reason:
/// - more than one `Transfer-Encoding` line, or a value other than the single coding `chunked`:
///   `chunked, identity`, `xchunked`, `chunked;x`, `gzip, chunked` (no other transfer coding is
///   supported, and a list is how TE.TE obfuscations hide). `Chunked` in any case is accepted, as
///   RFC 9112 section 7 makes coding names case-insensitive; this cannot desync anything because
///   the upstream only ever sees the canonical `chunked` the proxy writes itself.
/// - `Transfer-Encoding` in an HTTP/1.0 message (RFC 9112 section 6.1: faulty framing).
/// - `Content-Length` together with `Transfer-Encoding` (RFC 9112 section 6.1 allows dropping
///   `Content-Length`; refusing is the fail-closed choice: it is the CL.TE / TE.CL smuggling shape).
/// - more than one `Content-Length`, even with equal values: RFC 9110 section 8.6 lets a recipient
///   collapse identical values, but no sane client sends two, and a hop that keeps the first while
///   another keeps the last is exactly how bodies get smuggled.
/// - a `Content-Length` that is not 1 to 19 ASCII digits: no sign, no hex, no inner space, no
///   comma list, no overflow. Surrounding SP / HTAB is optional whitespace (RFC 9110 section 5.5)
///   and already trimmed by the parser.
pub(crate) fn framing_fields(
    headers: &Headers,
    version: Version,
) -> Result<FramingFields, &'static str> {
    let mut te = headers.get_all("transfer-encoding");
    let chunked = match (te.next(), te.next()) {
        (None, _) => false,
        (Some(_), Some(_)) => return Err("more than one Transfer-Encoding field"),
        (Some(_), None) if version == Version::Http10 => {
            return Err("Transfer-Encoding in an HTTP/1.0 message");
        }
        (Some(value), None) if value.eq_ignore_ascii_case(b"chunked") => true,
        (Some(_), None) => return Err("Transfer-Encoding other than chunked"),
    };
    let mut cl = headers.get_all("content-length");
    let content_length = match (cl.next(), cl.next()) {
        (None, _) => None,
        (Some(_), Some(_)) => return Err("more than one Content-Length field"),
        (Some(value), None) => Some(content_length(value).ok_or("invalid Content-Length")?),
    };
    if chunked && content_length.is_some() {
        return Err("both Content-Length and Transfer-Encoding");
    }
    Ok(FramingFields {
        content_length,
        chunked,
    })
}

/// `Content-Length = 1*DIGIT`, at most 19 digits so that it always fits in a `u64`.
pub(crate) fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn fields(
        pairs: &[(&'static str, &'static str)],
        version: Version,
    ) -> Result<FramingFields, &'static str> {
        let mut h = Headers::default();
        for (n, v) in pairs {
            h.push_parsed(
                Bytes::from_static(n.as_bytes()),
                Bytes::from_static(v.as_bytes()),
            );
        }
        framing_fields(&h, version)
    }

    type Case = (
        &'static [(&'static str, &'static str)],
        Version,
        Result<FramingFields, &'static str>,
    );

    #[test]
    #[expect(clippy::too_many_lines, reason = "one table, one case per entry")]
    fn table() {
        use Version::{Http10, Http11};
        let ok = |content_length, chunked| {
            Ok(FramingFields {
                content_length,
                chunked,
            })
        };
        let cases: &[Case] = &[
            (&[], Http11, ok(None, false)),
            (&[("Content-Length", "0")], Http11, ok(Some(0), false)),
            (&[("content-length", "0042")], Http10, ok(Some(42), false)),
            (
                &[("Content-Length", "18446744073709551615")],
                Http11,
                Err("invalid Content-Length"),
            ),
            (
                &[("Content-Length", "9999999999999999999")],
                Http11,
                ok(Some(9_999_999_999_999_999_999), false),
            ),
            (
                &[("Content-Length", "99999999999999999999")],
                Http11,
                Err("invalid Content-Length"),
            ),
            (
                &[("Content-Length", "-1")],
                Http11,
                Err("invalid Content-Length"),
            ),
            (
                &[("Content-Length", "+1")],
                Http11,
                Err("invalid Content-Length"),
            ),
            (
                &[("Content-Length", "0x10")],
                Http11,
                Err("invalid Content-Length"),
            ),
            (
                &[("Content-Length", "1 0")],
                Http11,
                Err("invalid Content-Length"),
            ),
            (
                &[("Content-Length", "1,1")],
                Http11,
                Err("invalid Content-Length"),
            ),
            (
                &[("Content-Length", "")],
                Http11,
                Err("invalid Content-Length"),
            ),
            (
                &[("Content-Length", "1"), ("Content-Length", "1")],
                Http11,
                Err("more than one Content-Length field"),
            ),
            (&[("Transfer-Encoding", "chunked")], Http11, ok(None, true)),
            (&[("Transfer-Encoding", "CHUNKED")], Http11, ok(None, true)),
            (
                &[("Transfer-Encoding", "chunked")],
                Http10,
                Err("Transfer-Encoding in an HTTP/1.0 message"),
            ),
            (
                &[("Transfer-Encoding", "xchunked")],
                Http11,
                Err("Transfer-Encoding other than chunked"),
            ),
            (
                &[("Transfer-Encoding", "chunked, identity")],
                Http11,
                Err("Transfer-Encoding other than chunked"),
            ),
            (
                &[("Transfer-Encoding", "gzip, chunked")],
                Http11,
                Err("Transfer-Encoding other than chunked"),
            ),
            (
                &[("Transfer-Encoding", "chunked x")],
                Http11,
                Err("Transfer-Encoding other than chunked"),
            ),
            (
                &[
                    ("Transfer-Encoding", "chunked"),
                    ("Transfer-Encoding", "chunked"),
                ],
                Http11,
                Err("more than one Transfer-Encoding field"),
            ),
            (
                &[("Transfer-Encoding", "chunked"), ("Content-Length", "3")],
                Http11,
                Err("both Content-Length and Transfer-Encoding"),
            ),
        ];
        for (pairs, version, want) in cases {
            assert_eq!(fields(pairs, *version), *want, "{pairs:?} {version:?}");
        }
    }
}
