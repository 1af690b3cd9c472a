//! Request target -> authority, normalized path segments, raw query.
//!
//! Rules, chosen so that fhirwall and every server behind it must read a path the same way; any
//! path two readers could disagree about is refused:
//! - Percent-decoding happens once, and only for bytes RFC 3986 calls unreserved (letters, digits,
//!   `-`, `_`, `~`; section 2.3 makes `%41` and `A` equivalent). An encoded `/`, `\`, `.`, `%`
//!   (so double encoding such as `%252F`), `;`, `$`, NUL or any other delimiter or control byte
//!   is refused: servers differ on whether they decode it before routing.
//! - Dot segments (`.`, `..`) are refused, not resolved. Resolving them (RFC 3986 section 5.2.4)
//!   would be correct for us but not for every server or intermediary, and no FHIR URL needs
//!   them, so `Patient/1/../2` can only be an attempt to make two readers disagree.
//! - Empty segments (`//Patient`, `Patient//1`) and `;params` are refused, fragments too.
//! - A trailing slash is accepted only right after the base (`POST [base]/`); elsewhere
//!   (`Patient/`) it is refused, since servers read it either as `Patient` or as an empty id.
//! - Raw characters are limited to what FHIR paths use: letters, digits, `-._~$*`.
//! - The base path must match segment by segment, case-sensitively.

use super::{ClassifyError, PathProblem, TargetProblem};

/// A request target split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target<'a> {
    /// Authority of an absolute-form target, normalized (see [`normalize_authority`]).
    pub authority: Option<String>,
    /// Path, starting with `/`.
    pub path: &'a str,
    /// Raw query without the `?`.
    pub query: Option<&'a str>,
}

/// Splits an origin-form or http(s) absolute-form target (RFC 9112 section 3.2).
pub(super) fn split_target(target: &str) -> Result<Target<'_>, ClassifyError> {
    let problem = |problem| ClassifyError::Target { problem };
    if target.is_empty() {
        return Err(problem(TargetProblem::Empty));
    }
    if target.contains('#') {
        return Err(problem(TargetProblem::Fragment));
    }
    // Only visible ASCII: the HTTP layer should have refused the rest; refuse again here so the
    // classifier is safe on its own (fuzzing drives it directly).
    if !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(problem(TargetProblem::Character));
    }
    let (authority, rest) = if target.starts_with('/') {
        (None, target)
    } else {
        let (authority, rest) = split_absolute(target)?;
        (Some(authority), rest)
    };
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    let path = if path.is_empty() { "/" } else { path };
    Ok(Target {
        authority,
        path,
        query,
    })
}

/// `scheme://authority/rest` -> (normalized authority, `/rest` or `?query` or empty).
fn split_absolute(target: &str) -> Result<(String, &str), ClassifyError> {
    let problem = |problem| ClassifyError::Target { problem };
    let (scheme, rest) = target
        .split_once("://")
        .ok_or(problem(TargetProblem::NotOriginOrAbsolute))?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(problem(TargetProblem::Scheme));
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, rest) = rest.split_at(end);
    Ok((normalize_authority(&scheme, authority)?, rest))
}

/// Lower-cases the host and drops the scheme's default port, so `HOST:443` under https equals
/// `host`. Refuses userinfo (`user@host`: a classic way to make a URL look like another host).
pub(super) fn normalize_authority(scheme: &str, authority: &str) -> Result<String, ClassifyError> {
    let problem = |problem| ClassifyError::Target { problem };
    if authority.contains('@') {
        return Err(problem(TargetProblem::Userinfo));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, _)) if !host.ends_with(']') && host.contains(':') => (authority, None),
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        !inner.is_empty()
            && inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    } else {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    if !host_ok || !port_ok {
        return Err(problem(TargetProblem::Authority));
    }
    let host = host.to_ascii_lowercase();
    let default_port = if scheme == "https" { "443" } else { "80" };
    Ok(match port {
        Some(port) if port != default_port => format!("{host}:{port}"),
        _ => host,
    })
}

/// The decoded segments of `path` and whether it ended in a slash. `path` starts with `/`;
/// `/` alone has no segments. Error positions count segments from 1.
pub(super) fn segments(path: &str) -> Result<(Vec<String>, bool), ClassifyError> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(ClassifyError::Target {
            problem: TargetProblem::NotOriginOrAbsolute,
        });
    };
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    let (rest, trailing) = match rest.strip_suffix('/') {
        Some(rest) => (rest, true),
        None => (rest, false),
    };
    let mut out = Vec::new();
    for (i, raw) in rest.split('/').enumerate() {
        let segment = i + 1;
        out.push(decode_segment(raw).map_err(|problem| ClassifyError::Path { segment, problem })?);
    }
    Ok((out, trailing))
}

/// Decodes one segment under the rules in the module doc.
fn decode_segment(raw: &str) -> Result<String, PathProblem> {
    match raw {
        "" => return Err(PathProblem::Empty),
        "." | ".." => return Err(PathProblem::Dot),
        _ => {}
    }
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let c = if b == b'%' {
            let byte = bytes
                .get(i + 1..i + 3)
                .and_then(hex_pair)
                .ok_or(PathProblem::BadPercent)?;
            i += 3;
            if !(byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' || byte == b'~') {
                return Err(PathProblem::EncodedDelimiter);
            }
            byte
        } else {
            i += 1;
            match b {
                b';' => return Err(PathProblem::Params),
                b if b.is_ascii_alphanumeric() || b"-._~$*".contains(&b) => b,
                _ => return Err(PathProblem::Character),
            }
        };
        out.push(char::from(c));
    }
    Ok(out)
}

/// Two hex digits -> byte.
pub(super) fn hex_pair(pair: &[u8]) -> Option<u8> {
    let [hi, lo] = pair else { return None };
    let digit = |d: u8| char::from(d).to_digit(16);
    let value = digit(*hi)? * 16 + digit(*lo)?;
    u8::try_from(value).ok()
}

/// Validates a configured base path into its segments.
pub(super) fn base_segments(base: &str) -> Result<Vec<String>, ClassifyError> {
    if base == "/" {
        return Ok(Vec::new());
    }
    let invalid = || ClassifyError::InvalidBasePath {};
    if !base.starts_with('/') || base.ends_with('/') || base.contains(['?', '#', '%']) {
        return Err(invalid());
    }
    let (segments, _) = segments(base).map_err(|_| invalid())?;
    if segments.iter().any(|s| s.contains(['$', '*'])) {
        return Err(invalid());
    }
    Ok(segments)
}

/// A FHIR id (<http://hl7.org/fhir/R4/datatypes.html#id>): `[A-Za-z0-9\-\.]{1,64}`.
pub(super) fn is_fhir_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}
