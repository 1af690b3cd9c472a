//! application/x-www-form-urlencoded decoding (<https://url.spec.whatwg.org/#urlencoded-parsing>),
//! strict: a `%` not followed by two hex digits and bytes that are not UTF-8 are errors.
//!
//! Hand-written rather than `form_urlencoded`: that crate passes malformed escapes through and
//! replaces invalid UTF-8 with U+FFFD, which would let the policy see a value the server reads
//! differently.

use super::RawParam;
use crate::{ClassifyError, ParamSource, QueryProblem, path::hex_pair};

/// Appends the decoded pairs of `raw` to `out`, numbering them from `out.len() + 1`. Empty
/// pieces (`a=1&&b=2`) are skipped as the form encoding says; a piece without `=` has an empty
/// value.
pub(crate) fn raw_pairs(
    raw: &[u8],
    source: ParamSource,
    max_params: usize,
    out: &mut Vec<(ParamSource, usize, RawParam)>,
) -> Result<(), ClassifyError> {
    for piece in raw.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let position = out.len() + 1;
        if position > max_params {
            return Err(ClassifyError::TooManyParams { max: max_params });
        }
        // `eq` is an index into `piece`, so both slices are in bounds.
        let (name, value) = match piece.iter().position(|&b| b == b'=') {
            Some(eq) => (&piece[..eq], &piece[eq + 1..]),
            None => (piece, &b""[..]),
        };
        let problem = |problem| ClassifyError::Query {
            source_kind: source,
            position,
            problem,
        };
        let name = decode(name).map_err(problem)?;
        let value = decode(value).map_err(problem)?;
        out.push((source, position, RawParam { name, value }));
    }
    Ok(())
}

/// Decodes one name or value.
pub(crate) fn decode(raw: &[u8]) -> Result<String, QueryProblem> {
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match b {
            b'+' => {
                bytes.push(b' ');
                i += 1;
            }
            b'%' => {
                let byte = raw
                    .get(i + 1..i + 3)
                    .and_then(hex_pair)
                    .ok_or(QueryProblem::BadPercent)?;
                bytes.push(byte);
                i += 3;
            }
            _ => {
                bytes.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(bytes).map_err(|_| QueryProblem::InvalidUtf8)
}
