//! Which request headers reach the server: a positive list. A header the server might act on
//! but the decision did not read is never forwarded as sent.
//!
//! - Forwarded: content negotiation (`Accept`, `Accept-Charset`, `Accept-Language`), the body's
//!   `Content-Type` (read by the classifier), the conditional headers where the interaction
//!   defines them (`If-None-Exist` on create, which is classified; `If-Match` on update, patch
//!   and delete; `If-None-Match` and `If-Modified-Since` on reads, which only narrow what comes
//!   back), `Prefer` with the tokens R4 defines, tracing (`traceparent`, `tracestate`),
//!   `User-Agent`, `Cache-Control`, `Pragma`, `Authorization` (fingerprinted by the policy, or
//!   replaced with the integration's own credential), `Host` (rewritten to the upstream's name by
//!   the proxy), the headers the policy reads (purpose of use, patient headers, the tenant
//!   header) and those the upstream's server profile declares.
//! - Refused (400), because dropping them would change what the client asked for while a
//!   server honouring them would do something the policy never decided: method overrides
//!   (`X-HTTP-Method-Override` and kin), `Content-Location` (names where to store a resource),
//!   `Content-Encoding` other than identity (a body the classifier cannot read), `If-None-Exist`
//!   outside a create, `Prefer: respond-async` outside `$export`, and `Prefer` tokens R4 does not
//!   define.
//! - Stripped: everything else (`Accept-Encoding`, so that responses come back readable;
//!   `Cookie`, a second credential path; `Range`; `X-Forwarded-*`, which servers use to build
//!   the absolute URLs in their answers; vendor headers such as `X-Cascade`). The names go to the
//!   audit record and to `fhirwall policy explain`.

use super::{ClassifyConfig, ClassifyError, FhirMethod, Interaction, Operation};

/// Forwarded on every interaction.
const ALWAYS: &[&str] = &[
    "accept",
    "accept-charset",
    "accept-language",
    "authorization",
    "cache-control",
    "content-type",
    "host",
    "pragma",
    "prefer",
    "traceparent",
    "tracestate",
    "user-agent",
    "x-request-id",
];

/// Refused wherever they appear: a server that honours them performs another interaction.
const METHOD_OVERRIDES: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Why a header stops a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderRefusal {
    #[error("a server honouring it would perform another interaction than the one decided")]
    MethodOverride,
    #[error("it names where to store the resource, which the decision does not cover")]
    ContentLocation,
    #[error("an encoded body cannot be read, and fhirwall forwards only what it read")]
    ContentEncoding,
    #[error("it has no meaning for this interaction, and a server could still act on it")]
    NotHere,
    #[error("asynchronous processing is accepted for $export only")]
    RespondAsync,
    #[error("it holds a preference FHIR R4 does not define")]
    PreferToken,
}

/// What the request's interaction allows, for [`screen`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Context<'a> {
    pub method: FhirMethod,
    pub interaction: Interaction,
    pub operation: Option<&'a Operation>,
}

/// The headers not forwarded on a request for a URL the server issued outside any FHIR
/// interaction (an export's status or file): a GET, so only what any read may carry passes, and
/// what a read would refuse is dropped as well.
#[must_use]
pub fn screen_bound(headers: &[(&str, &[u8])], config: &ClassifyConfig) -> Vec<String> {
    let ctx = Context {
        method: FhirMethod::Get,
        interaction: Interaction::Read,
        operation: None,
    };
    headers
        .iter()
        .map(|(name, _)| name.to_ascii_lowercase())
        .filter(|name| !forwarded(name, ctx, config) || name == "prefer")
        .fold(Vec::new(), |mut out, name| {
            push_unique(&mut out, name);
            out
        })
}

/// Checks the headers: refuses the ones in the module doc's refused list, and returns the
/// (lower-case) names of those that will be stripped.
pub(super) fn screen(
    headers: &[(&str, &[u8])],
    ctx: Context<'_>,
    config: &ClassifyConfig,
) -> Result<Vec<String>, ClassifyError> {
    let mut stripped: Vec<String> = Vec::new();
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        let refuse = |reason| ClassifyError::RefusedHeader {
            name: refused_name(&lower),
            reason,
        };
        if METHOD_OVERRIDES.contains(&lower.as_str()) {
            if config.strip_method_override {
                push_unique(&mut stripped, lower);
                continue;
            }
            return Err(refuse(HeaderRefusal::MethodOverride));
        }
        match lower.as_str() {
            "content-location" => return Err(refuse(HeaderRefusal::ContentLocation)),
            "content-encoding" if !value.trim_ascii().eq_ignore_ascii_case(b"identity") => {
                return Err(refuse(HeaderRefusal::ContentEncoding));
            }
            "prefer" => prefer(value, ctx).map_err(refuse)?,
            "if-none-exist" if ctx.interaction != Interaction::Create => {
                return Err(refuse(HeaderRefusal::NotHere));
            }
            _ => {}
        }
        if !forwarded(&lower, ctx, config) {
            push_unique(&mut stripped, lower);
        }
    }
    Ok(stripped)
}

fn forwarded(name: &str, ctx: Context<'_>, config: &ClassifyConfig) -> bool {
    if ALWAYS.contains(&name) || config.extra_headers.iter().any(|h| h == name) {
        return true;
    }
    match name {
        "if-none-exist" => ctx.interaction == Interaction::Create,
        "if-match" => matches!(
            ctx.interaction,
            Interaction::Update | Interaction::Patch | Interaction::Delete
        ),
        "if-none-match" | "if-modified-since" => ctx.method.is_read(),
        _ => false,
    }
}

/// `Prefer` (RFC 7240) with the preferences R4 uses (<http://hl7.org/fhir/R4/http.html#Prefer>,
/// and `respond-async` of <http://hl7.org/fhir/R4/async.html>, which fhirwall follows for
/// `$export` only: the answer to any other asynchronous request would be fetched from a status
/// URL that nothing decided on).
fn prefer(value: &[u8], ctx: Context<'_>) -> Result<(), HeaderRefusal> {
    let text = std::str::from_utf8(value).map_err(|_| HeaderRefusal::PreferToken)?;
    for token in text
        .split([',', ';'])
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        let (name, arg) = match token.split_once('=') {
            Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
            None => (token, None),
        };
        let known = match (name.to_ascii_lowercase().as_str(), arg) {
            ("return", Some(a)) => {
                matches!(a, "minimal" | "representation" | "OperationOutcome")
            }
            ("handling", Some(a)) => {
                a.eq_ignore_ascii_case("strict") || a.eq_ignore_ascii_case("lenient")
            }
            ("respond-async", None) => {
                if ctx.operation.is_none_or(|op| op.name != "$export") {
                    return Err(HeaderRefusal::RespondAsync);
                }
                true
            }
            _ => false,
        };
        if !known {
            return Err(HeaderRefusal::PreferToken);
        }
    }
    Ok(())
}

/// The refused header's canonical name, for the error (never the client's spelling).
fn refused_name(lower: &str) -> &'static str {
    match lower {
        "x-http-method-override" => "X-HTTP-Method-Override",
        "x-http-method" => "X-HTTP-Method",
        "x-method-override" => "X-Method-Override",
        "content-location" => "Content-Location",
        "content-encoding" => "Content-Encoding",
        "prefer" => "Prefer",
        "if-none-exist" => "If-None-Exist",
        _ => "header",
    }
}

fn push_unique(list: &mut Vec<String>, name: String) {
    if !list.contains(&name) {
        list.push(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OperationLevel;

    fn ctx(method: FhirMethod, interaction: Interaction) -> Context<'static> {
        Context {
            method,
            interaction,
            operation: None,
        }
    }

    fn config() -> ClassifyConfig {
        let mut c = ClassifyConfig::new("/").expect("base");
        c.extra_headers = vec!["x-purpose-of-use".into()];
        c
    }

    #[test]
    fn known_headers_pass_and_the_rest_are_stripped() {
        let headers: &[(&str, &[u8])] = &[
            ("Accept", b"application/fhir+json"),
            ("Authorization", b"Bearer x"),
            ("X-Purpose-Of-Use", b"TREAT"),
            ("Accept-Encoding", b"gzip"),
            ("Cookie", b"s=1"),
            ("X-Forwarded-Host", b"evil.example"),
            ("X-Cascade", b"delete"),
            ("If-Match", b"W/\"1\""),
            ("If-None-Match", b"W/\"1\""),
            ("Prefer", b"return=minimal, handling=STRICT"),
        ];
        let read = screen(headers, ctx(FhirMethod::Get, Interaction::Read), &config()).expect("ok");
        assert_eq!(
            read,
            [
                "accept-encoding",
                "cookie",
                "x-forwarded-host",
                "x-cascade",
                "if-match"
            ]
        );
        let update = screen(
            headers,
            ctx(FhirMethod::Put, Interaction::Update),
            &config(),
        )
        .expect("ok");
        assert!(!update.contains(&"if-match".to_owned()));
        assert!(update.contains(&"if-none-match".to_owned()));
    }

    /// (header, value, interaction, operation, forwarded)
    type Case<'a> = (&'a str, &'a [u8], Interaction, Option<&'a Operation>, bool);

    #[test]
    #[expect(clippy::too_many_lines, reason = "one table of cases")]
    fn headers_that_would_change_the_interaction_are_refused() {
        let export = Operation {
            name: "$export".into(),
            level: OperationLevel::System,
        };
        let cases: &[Case<'_>] = &[
            (
                "X-HTTP-Method-Override",
                b"DELETE",
                Interaction::Create,
                None,
                false,
            ),
            ("x-method-override", b"PUT", Interaction::Read, None, false),
            (
                "Content-Location",
                b"Patient/b",
                Interaction::Update,
                None,
                false,
            ),
            (
                "Content-Encoding",
                b"gzip",
                Interaction::Create,
                None,
                false,
            ),
            (
                "Content-Encoding",
                b"identity",
                Interaction::Create,
                None,
                true,
            ),
            (
                "If-None-Exist",
                b"identifier=x",
                Interaction::Update,
                None,
                false,
            ),
            (
                "If-None-Exist",
                b"identifier=x",
                Interaction::Create,
                None,
                true,
            ),
            (
                "Prefer",
                b"respond-async",
                Interaction::SearchType,
                None,
                false,
            ),
            (
                "Prefer",
                b"respond-async",
                Interaction::Operation,
                Some(&export),
                true,
            ),
            (
                "Prefer",
                b"return=everything",
                Interaction::Read,
                None,
                false,
            ),
            (
                "Prefer",
                b"x-vendor-cascade",
                Interaction::Delete,
                None,
                false,
            ),
            (
                "Prefer",
                b"return=OperationOutcome",
                Interaction::Create,
                None,
                true,
            ),
        ];
        for (name, value, interaction, operation, ok) in cases {
            let c = Context {
                method: FhirMethod::Post,
                interaction: *interaction,
                operation: *operation,
            };
            let result = screen(&[(name, value)], c, &config());
            assert_eq!(result.is_ok(), *ok, "{name}: {result:?}");
        }
        let mut lenient = config();
        lenient.strip_method_override = true;
        let stripped = screen(
            &[("X-HTTP-Method-Override", b"DELETE")],
            ctx(FhirMethod::Post, Interaction::Create),
            &lenient,
        )
        .expect("stripped under a server profile that ignores it");
        assert_eq!(stripped, ["x-http-method-override"]);
    }
}
