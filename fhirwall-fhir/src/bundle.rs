//! Batch and transaction Bundles (<http://hl7.org/fhir/R4/http.html#transaction>,
//! <http://hl7.org/fhir/R4/bundle.html>): each entry becomes its own [`FhirRequest`].
//!
//! Limits, so a hostile body cannot exhaust memory or stack:
//! - JSON depth is checked by a byte scan before parsing (`body::check_depth`).
//! - The envelope is parsed in one streaming pass (`envelope.rs`) that stops at entry
//!   `max_bundle_entries + 1`, so millions of `{}` entries never become millions of values.
//! - Only `resourceType`, `type` and per entry `request` and `resource` are read; other fields
//!   are skipped unparsed. A repeated `resourceType`, `type` or `entry` is an error; inside
//!   entries `serde_json` keeps the last of repeated keys.
//! - Nested batches and transactions (an entry that POSTs to the base) are refused rather than
//!   classified recursively: servers disagree on whether they are processed, no legitimate
//!   integration needs them, and refusing keeps classification one level deep.

mod envelope;

use serde_json::Value;

use super::{
    ClassifyError, EntryProblem, FhirMethod, FhirRequest, Interaction,
    classify::{Body, Context, classify_parts},
    path,
};

/// Parses a Bundle body and classifies its entries. Returns batch or transaction.
pub(super) fn classify_bundle(
    ctx: &Context<'_>,
    bytes: &[u8],
) -> Result<(Interaction, Vec<FhirRequest>), ClassifyError> {
    let envelope = envelope::parse(
        bytes,
        ctx.config.json_depth(),
        ctx.config.max_bundle_entries,
    )?;
    let interaction = match (envelope.resource_type.as_deref(), envelope.kind.as_deref()) {
        (Some("Bundle"), Some("batch")) => Interaction::Batch,
        (Some("Bundle"), Some("transaction")) => Interaction::Transaction,
        _ => return Err(ClassifyError::NotBatchOrTransaction {}),
    };
    let classified = envelope
        .entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            classify_entry(ctx, entry).map_err(|e| ClassifyError::Entry {
                index,
                source: Box::new(e),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((interaction, classified))
}

/// One entry: `request.method` + `request.url` (+ `ifNoneExist`, + `resource`). Read from the
/// JSON tree by hand rather than by derive, so an array can never stand in for an object.
fn classify_entry(ctx: &Context<'_>, entry: &Value) -> Result<FhirRequest, ClassifyError> {
    let shape = |problem| ClassifyError::EntryShape { problem };
    let request = entry.get("request").filter(|r| r.is_object());
    let field = |name| request.and_then(|r| r.get(name)).and_then(Value::as_str);
    let (Some(method), Some(url)) = (field("method"), field("url")) else {
        return Err(shape(EntryProblem::MissingRequest));
    };
    let if_none_exist = match request.and_then(|r| r.get("ifNoneExist")) {
        None | Some(Value::Null) => None,
        Some(Value::String(criteria)) => Some(criteria.as_str()),
        Some(_) => return Err(shape(EntryProblem::Malformed)),
    };
    let resource = match entry.get("resource") {
        None | Some(Value::Null) => None,
        Some(resource @ Value::Object(_)) => Some(resource),
        Some(_) => return Err(shape(EntryProblem::Malformed)),
    };
    let method = FhirMethod::parse(method).ok_or(ClassifyError::UnsupportedMethod {})?;
    let target = entry_target(ctx, url)?;
    let split = path::split_target(&target)?;
    let request = classify_parts(
        ctx,
        method,
        split.path,
        split.query,
        if_none_exist,
        Body::Entry(resource),
    )?;
    if matches!(
        request.interaction,
        Interaction::Batch | Interaction::Transaction
    ) {
        return Err(shape(EntryProblem::Nested));
    }
    Ok(request)
}

/// The origin-form target an entry URL stands for. Relative URLs are relative to the base (and
/// tenant); they may not start with `/` (R4 says relative to [base], and a leading slash would
/// make them relative to the server root instead). Absolute URLs must name this server; their
/// path is then checked against base and tenant like any request's.
fn entry_target(ctx: &Context<'_>, url: &str) -> Result<String, ClassifyError> {
    let shape = |problem| ClassifyError::EntryShape { problem };
    // A scheme is letters, digits, `+-.` (RFC 3986 section 3.1); `Patient?system=http://x` is a
    // relative URL whose query holds a URL.
    let scheme = url
        .split_once("://")
        .map(|(scheme, _)| scheme)
        .filter(|s| s.starts_with(|c: char| c.is_ascii_alphabetic()))
        .filter(|s| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        })
        .map(str::to_ascii_lowercase);
    match scheme.as_deref() {
        Some(scheme @ ("http" | "https")) => {
            let split = path::split_target(url)?;
            let authority = split.authority.as_deref().unwrap_or_default();
            if !ctx.accepts_authority(scheme, authority) {
                return Err(shape(EntryProblem::ForeignUrl));
            }
            Ok(match split.query {
                Some(query) => format!("{}?{query}", split.path),
                None => split.path.to_owned(),
            })
        }
        Some(_) => Err(shape(EntryProblem::Url)),
        None if url.starts_with('/') => Err(shape(EntryProblem::Url)),
        None => {
            let prefix = ctx.entry_prefix();
            Ok(if url.is_empty() {
                format!("{prefix}/")
            } else {
                format!("{prefix}/{url}")
            })
        }
    }
}
