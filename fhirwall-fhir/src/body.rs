//! Request bodies: content types, bounded JSON parsing, resource checks.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{ClassifyError, JsonProblem, ResourceType};

/// What a Content-Type names, as far as the classifier cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MediaKind {
    /// `application/fhir+json`, `application/json`, or the DSTU2 name `application/json+fhir`.
    Json,
    /// `application/fhir+xml`, `application/xml`, `text/xml`, `application/xml+fhir`.
    Xml,
    /// `application/x-www-form-urlencoded`.
    Form,
    /// `application/json-patch+json` (RFC 6902).
    JsonPatch,
    /// `application/merge-patch+json` (RFC 7396).
    MergePatch,
    /// Anything else, a charset other than UTF-8 (FHIR bodies are UTF-8,
    /// <http://hl7.org/fhir/R4/http.html#mime-type>), or a malformed value.
    Other,
}

/// Classifies a Content-Type value (RFC 9110 section 8.3.1: type/subtype, then parameters; type,
/// subtype and the charset value are case-insensitive). Only `charset` (UTF-8) and FHIR's
/// `fhirVersion` parameters are accepted: servers that pick a format by searching the header
/// for a substring would read `application/fhir+json; x=json-patch+json` as a JSON Patch.
pub(super) fn media_kind(content_type: &str) -> MediaKind {
    let mut parts = content_type.split(';');
    let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    for param in parts {
        let Some((name, value)) = param.split_once('=') else {
            return MediaKind::Other;
        };
        let (name, value) = (name.trim(), value.trim().trim_matches('"'));
        let ok = if name.eq_ignore_ascii_case("charset") {
            value.eq_ignore_ascii_case("utf-8")
        } else {
            name.eq_ignore_ascii_case("fhirVersion")
                && value.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        };
        if !ok {
            return MediaKind::Other;
        }
    }
    match essence.as_str() {
        "application/fhir+json" | "application/json" | "application/json+fhir" => MediaKind::Json,
        "application/fhir+xml" | "application/xml" | "text/xml" | "application/xml+fhir" => {
            MediaKind::Xml
        }
        "application/x-www-form-urlencoded" => MediaKind::Form,
        "application/json-patch+json" => MediaKind::JsonPatch,
        "application/merge-patch+json" => MediaKind::MergePatch,
        _ => MediaKind::Other,
    }
}

/// Refuses JSON nested deeper than `max` before serde sees it, so hostile bodies get a clear
/// "too deep" and `serde_json`'s own recursion limit (128) is never the one that trips. A byte scan
/// that skips strings; it does not validate, serde does that next.
pub(super) fn check_depth(bytes: &[u8], max: usize) -> Result<(), ClassifyError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return Err(ClassifyError::JsonTooDeep { max });
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Parses `bytes` as `T` after the depth check. Errors carry position and category only:
/// `serde_json`'s messages quote the input, which may be PHI.
pub(super) fn parse_json<T: DeserializeOwned>(
    bytes: &[u8],
    max_depth: usize,
) -> Result<T, ClassifyError> {
    check_depth(bytes, max_depth)?;
    serde_json::from_slice(bytes).map_err(|e| json_error(&e))
}

/// A `serde_json` error without its message (which may quote the input).
pub(super) fn json_error(e: &serde_json::Error) -> ClassifyError {
    let problem = match e.classify() {
        serde_json::error::Category::Eof => JsonProblem::Eof,
        serde_json::error::Category::Data => JsonProblem::Data,
        serde_json::error::Category::Syntax | serde_json::error::Category::Io => {
            JsonProblem::Syntax
        }
    };
    ClassifyError::Json {
        problem,
        line: e.line(),
        column: e.column(),
    }
}

/// Checks a create/update resource against the URL: `resourceType` must be the URL's type and,
/// for an update of `[type]/[id]`, a present `id` must equal the URL id
/// (<http://hl7.org/fhir/R4/http.html#update>: the server rejects a mismatch with 400).
pub(super) fn check_resource(
    resource: &Value,
    expected: ResourceType,
    url_id: Option<&str>,
) -> Result<(), ClassifyError> {
    let declared = resource.get("resourceType").and_then(Value::as_str);
    if declared != Some(expected.as_str()) {
        return Err(ClassifyError::ResourceTypeMismatch { expected });
    }
    if let (Some(url_id), Some(body_id)) = (url_id, resource.get("id"))
        && body_id.as_str() != Some(url_id)
    {
        return Err(ClassifyError::IdMismatch {});
    }
    Ok(())
}
