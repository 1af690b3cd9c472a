//! Responses the proxy makes itself, each a FHIR `OperationOutcome`
//! (<https://hl7.org/fhir/R4/operationoutcome.html>) served as `application/fhir+json`.
//!
//! Diagnostics carry a reason and the exchange's correlation id, never a request value: reasons
//! are static texts or policy reasons (integration and rule names), so no PHI (a patient id in a
//! query, a header value) can leak into a response, a log, or a support ticket.

use bytes::Bytes;
use fhirwall_fhir::IssueType;
use fhirwall_http::{ExchangeId, Headers, HttpError, LocalResponse};
use serde::Serialize;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OperationOutcome<'a> {
    resource_type: &'static str,
    issue: [Issue<'a>; 1],
}

#[derive(Serialize)]
struct Issue<'a> {
    severity: &'static str,
    code: IssueType,
    diagnostics: &'a str,
}

/// Served when serialization fails, which it cannot for these plain structs; kept so that no
/// path panics.
const FALLBACK: &[u8] =
    br#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"exception"}]}"#;

/// An `OperationOutcome` response: `status`, one issue of type `code` with `reason` and the
/// correlation id in its diagnostics. `reason` must not contain request values.
#[must_use]
pub fn answer(status: u16, code: IssueType, reason: &str, id: ExchangeId) -> LocalResponse {
    let diagnostics = format!("{reason} (correlation id {id})");
    let outcome = OperationOutcome {
        resource_type: "OperationOutcome",
        issue: [Issue {
            severity: "error",
            code,
            diagnostics: &diagnostics,
        }],
    };
    let body =
        serde_json::to_vec(&outcome).map_or_else(|_| Bytes::from_static(FALLBACK), Bytes::from);
    let mut headers = Headers::default();
    // Static, valid field names and values: these inserts cannot fail.
    let _ = headers.insert("Content-Type", "application/fhir+json");
    let _ = headers.insert("Cache-Control", "no-store");
    LocalResponse {
        status,
        headers,
        body,
    }
}

/// 403: policy denied the request.
#[must_use]
pub fn forbidden(reason: &str, id: ExchangeId) -> LocalResponse {
    answer(403, IssueType::Forbidden, reason, id)
}

/// 401: no acceptable credential (e.g. missing or unknown).
#[must_use]
pub fn unauthorized(reason: &str, id: ExchangeId) -> LocalResponse {
    answer(401, IssueType::Login, reason, id)
}

/// 401 for a credential that is known but unusable (revoked, suspended, shared beyond scope).
#[must_use]
pub fn security(reason: &str, id: ExchangeId) -> LocalResponse {
    answer(401, IssueType::Security, reason, id)
}

/// 400: the request content is invalid (e.g. a FHIR Bundle that does not parse).
#[must_use]
pub fn invalid(reason: &str, id: ExchangeId) -> LocalResponse {
    answer(400, IssueType::Invalid, reason, id)
}

/// 503: the proxy cannot serve now (shutting down, audit store unavailable); retry later.
#[must_use]
pub fn unavailable(reason: &str, id: ExchangeId) -> LocalResponse {
    answer(503, IssueType::Transient, reason, id)
}

/// The answer to an engine error, or `None` when the client cannot be answered.
#[must_use]
pub fn for_error(err: &HttpError, id: ExchangeId) -> Option<LocalResponse> {
    let status = err.status()?;
    let code = match err {
        HttpError::BadRequest { .. } | HttpError::VersionNotSupported => IssueType::Structure,
        HttpError::UriTooLong { .. }
        | HttpError::HeadTooLarge { .. }
        | HttpError::TooManyHeaders { .. }
        | HttpError::BodyTooLarge { .. } => IssueType::TooLong,
        HttpError::MethodNotAllowed { .. } | HttpError::ExpectationFailed => {
            IssueType::NotSupported
        }
        HttpError::DownstreamClosed => IssueType::Incomplete,
        HttpError::HeaderTimeout { .. }
        | HttpError::BodyTimeout { .. }
        | HttpError::UpstreamConnectTimeout { .. }
        | HttpError::UpstreamTimeout { .. } => IssueType::Timeout,
        _ => IssueType::Exception,
    };
    Some(answer(status, code, err.reason(), id))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::Value;

    use super::*;

    const ID: ExchangeId = ExchangeId {
        connection: 0xab,
        sequence: 3,
    };

    fn parsed(r: &LocalResponse) -> Value {
        serde_json::from_slice(&r.body).expect("valid JSON")
    }

    #[test]
    fn builders_map_status_to_issue_code() {
        let cases = [
            (forbidden("integration lacks scope", ID), 403, "forbidden"),
            (unauthorized("no credential", ID), 401, "login"),
            (security("credential revoked", ID), 401, "security"),
            (invalid("bundle does not parse", ID), 400, "invalid"),
            (unavailable("shutting down", ID), 503, "transient"),
        ];
        for (response, status, code) in cases {
            assert_eq!(response.status, status);
            assert_eq!(
                response.headers.get("content-type"),
                Some(&b"application/fhir+json"[..])
            );
            let v = parsed(&response);
            assert_eq!(v["resourceType"], "OperationOutcome");
            assert_eq!(v["issue"][0]["severity"], "error");
            assert_eq!(v["issue"][0]["code"], code);
            let diagnostics = v["issue"][0]["diagnostics"].as_str().expect("diagnostics");
            assert!(
                diagnostics.contains("(correlation id 00000000000000ab-3)"),
                "{diagnostics}"
            );
        }
    }

    #[test]
    fn errors_map_to_status_and_code() {
        let cases = [
            (
                HttpError::BadRequest {
                    reason: "duplicate Content-Length",
                },
                400,
                "structure",
            ),
            (HttpError::BodyTooLarge { limit: 1 }, 413, "too-long"),
            (HttpError::HeadTooLarge { limit: 1 }, 431, "too-long"),
            (HttpError::UpstreamClosed, 502, "exception"),
            (
                HttpError::UpstreamTimeout {
                    after: Duration::from_secs(1),
                },
                504,
                "timeout",
            ),
            (
                HttpError::HeaderTimeout {
                    after: Duration::from_secs(1),
                },
                408,
                "timeout",
            ),
            (
                HttpError::MethodNotAllowed { method: "TRACE" },
                405,
                "not-supported",
            ),
            (HttpError::DownstreamClosed, 400, "incomplete"),
        ];
        for (err, status, code) in cases {
            let response = for_error(&err, ID).expect("answerable");
            assert_eq!(response.status, status, "{err}");
            assert_eq!(parsed(&response)["issue"][0]["code"], code, "{err}");
        }
        assert!(
            for_error(
                &HttpError::DownstreamIo {
                    source: std::io::ErrorKind::BrokenPipe.into()
                },
                ID
            )
            .is_none()
        );
    }
}
