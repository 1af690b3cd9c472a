//! Checks across fields and documents: names, references, expiry, overlap, and what each
//! field cannot check alone.

use std::fs;

use super::{Documents, Located, Problem};
use crate::{
    Settings,
    exception::{BreakGlass, Exception},
    integration::{Integration, PatientMode},
    model::{IntegrationStatus, TlsMode, Upstream},
};

/// Longest break-glass session a policy may allow.
const MAX_BREAK_GLASS: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);
/// Least justification length a break-glass policy may ask for.
const MIN_JUSTIFICATION: usize = 10;

pub(super) fn all(docs: &mut Documents, now: jiff::Timestamp) {
    let mut p = std::mem::take(&mut docs.problems);
    let settings = docs.settings.first().map(|d| &d.value);
    for extra in docs.settings.iter().skip(1) {
        p.push(extra.problem("kind", "only one Settings document is allowed".into()));
    }
    for (i, u) in docs.upstreams.iter().enumerate() {
        let earlier = docs.upstreams[..i].iter().map(|o| &o.value.name);
        name(u, &u.value.name, "upstream", earlier, &mut p);
        upstream(u, &mut p);
    }
    for (i, d) in docs.integrations.iter().enumerate() {
        let earlier = &docs.integrations[..i];
        name(
            d,
            &d.value.name,
            "integration",
            earlier.iter().map(|o| &o.value.name),
            &mut p,
        );
        integration(d, &docs.upstreams, settings, now, &mut p);
        for other in earlier
            .iter()
            .filter(|o| o.value.workload.may_overlap(&d.value.workload))
        {
            p.push(d.problem(
                "workload",
                format!(
                    "selector may overlap integration `{}` ({}:{}): give both a field that tells them apart",
                    other.value.name,
                    other.file.display(),
                    other.line
                ),
            ));
        }
    }
    for (i, e) in docs.exceptions.iter().enumerate() {
        let earlier = docs.exceptions[..i].iter().map(|o| &o.value.name);
        name(e, &e.value.name, "exception", earlier, &mut p);
        exception(e, &docs.integrations, now, &mut p);
    }
    for (i, b) in docs.break_glass.iter().enumerate() {
        let earlier = docs.break_glass[..i].iter().map(|o| &o.value.name);
        name(b, &b.value.name, "break-glass policy", earlier, &mut p);
        break_glass(b, &docs.integrations, &mut p);
    }
    docs.problems = p;
}

/// CA files must exist where the agent runs (secrets and client keys are read when the
/// sidecar connects, and fail that connection closed when missing).
pub(super) fn files(docs: &mut Documents) {
    for u in &docs.upstreams {
        if let Some(ca) = &u.value.tls.ca_file
            && let Err(e) = fs::metadata(ca)
        {
            docs.problems
                .push(u.problem("tls.ca_file", format!("{}: {e}", ca.display())));
        }
    }
}

fn name<'a, T>(
    doc: &Located<T>,
    name: &str,
    what: &str,
    mut earlier: impl Iterator<Item = &'a String>,
    p: &mut Vec<Problem>,
) {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if !valid {
        p.push(doc.problem(
            "name",
            format!("`{name}`: use 1-63 lowercase letters, digits and -"),
        ));
    }
    if earlier.any(|n| n == name) {
        p.push(doc.problem("name", format!("duplicate {what} name `{name}`")));
    }
}

fn not_blank<T>(doc: &Located<T>, field: &str, value: &str, p: &mut Vec<Problem>) {
    if value.trim().is_empty() {
        p.push(doc.problem(
            field,
            "must say who / what for: an empty value is not accepted".into(),
        ));
    }
}

fn upstream(doc: &Located<Upstream>, p: &mut Vec<Problem>) {
    let u = &doc.value;
    if u.addresses.is_empty() {
        p.push(doc.problem("addresses", "at least one host:port is required".into()));
    }
    let base = &u.base_path;
    let base_ok = base.starts_with('/')
        && (base == "/" || !base.ends_with('/'))
        && !base.split('/').any(|s| s == "." || s == "..")
        && !base.contains(['?', '#', '%', ';', ' '])
        && u.classify_config().is_ok();
    if !base_ok {
        p.push(doc.problem(
            "base_path",
            format!(
                "`{base}` must be an absolute path without a trailing /, dot segments, ?, #, % or ;"
            ),
        ));
    }
    if u.tls.mode == TlsMode::Plain && (u.tls.ca_file.is_some() || u.tls.server_name.is_some()) {
        p.push(doc.problem(
            "tls",
            "ca_file and server_name mean nothing with mode: plain".into(),
        ));
    }
}

fn integration(
    doc: &Located<Integration>,
    upstreams: &[Located<Upstream>],
    settings: Option<&Settings>,
    now: jiff::Timestamp,
    p: &mut Vec<Problem>,
) {
    let i = &doc.value;
    not_blank(doc, "owner", &i.owner, p);
    not_blank(doc, "purpose", &i.purpose, p);
    let mut require = |empty: bool, field: &str, message: &str| {
        if empty {
            p.push(doc.problem(field, message.into()));
        }
    };
    require(
        i.data_classes.is_empty(),
        "data_classes",
        "list at least one class of data",
    );
    require(
        i.expected_resources.is_empty(),
        "expected_resources",
        "list at least one FHIR resource type",
    );
    require(
        i.workload.is_empty(),
        "workload",
        "an empty selector would match every process",
    );
    require(
        !i.workload.is_empty() && !i.workload.has_anchor(),
        "workload",
        "any local user could satisfy this selector (a `systemd-run --user` unit, a look-alike \
         container or pod cgroup in their own subtree): add what only root controls, `user` or \
         `uid`, `sha256`, or a root-owned `exe`",
    );
    require(
        i.upstreams.is_empty(),
        "upstreams",
        "name at least one upstream",
    );
    require(i.scopes.is_empty(), "scopes", "list at least one scope");
    require(
        i.purposes_of_use.is_empty(),
        "purposes_of_use",
        "list at least one purpose of use",
    );
    for name in i
        .upstreams
        .iter()
        .filter(|n| !upstreams.iter().any(|u| &u.value.name == *n))
    {
        p.push(doc.problem("upstreams", format!("unknown upstream `{name}`")));
    }
    if let Some(expires) = i.expires
        && i.status == IntegrationStatus::Active
        && expires <= now
    {
        p.push(doc.problem(
            "expires",
            format!("expired at {expires}: renew it, or set status: revoked to keep the record"),
        ));
    }
    integration_access(doc, upstreams, settings, p);
}

/// Scopes against expected resources, purposes, tenants, headers.
fn integration_access(
    doc: &Located<Integration>,
    upstreams: &[Located<Upstream>],
    settings: Option<&Settings>,
    p: &mut Vec<Problem>,
) {
    let i = &doc.value;
    for (n, scope) in i.scopes.list().iter().enumerate() {
        if let Some(t) = scope.resource_type
            && !i.expected_resources.contains(&t)
        {
            p.push(doc.problem(
                &format!("scopes[{n}]"),
                format!("`{scope}` names {t}, which expected_resources does not list"),
            ));
        }
    }
    if let Some(d) = i.default_purpose
        && !i.purposes_of_use.contains(d)
    {
        p.push(doc.problem("default_purpose", format!("{d} is not in purposes_of_use")));
    }
    let tenanted = i.upstreams.iter().any(|name| {
        upstreams
            .iter()
            .any(|u| &u.value.name == name && u.value.tenant.is_some())
    });
    if tenanted && i.tenants.is_empty() {
        p.push(doc.problem(
            "tenants",
            "an upstream of this integration has tenants: list the ones it may address".into(),
        ));
    }
    if !tenanted && !i.tenants.is_empty() {
        p.push(doc.problem(
            "tenants",
            "none of this integration's upstreams has tenants".into(),
        ));
    }
    broker(doc, p);
    if let PatientMode::Header(h) = &i.patient.mode {
        let purpose_header = settings.map_or_else(
            || Settings::default().purpose_header,
            |s| s.purpose_header.clone(),
        );
        if purpose_header.is(h.as_str()) || h.is("authorization") {
            p.push(doc.problem(
                "patient.header",
                format!("`{h}` already carries something else"),
            ));
        }
    }
}

/// A brokered token is the integration's only upstream credential, and never broader than
/// its scopes.
fn broker(doc: &Located<Integration>, p: &mut Vec<Problem>) {
    let i = &doc.value;
    let Some(broker) = &i.credentials.broker else {
        return;
    };
    if i.credentials.inject.is_some() {
        p.push(doc.problem(
            "credentials.broker",
            "an integration has one upstream credential: `inject` or `broker`, not both".into(),
        ));
    }
    if broker.client_id.trim().is_empty() {
        p.push(doc.problem(
            "credentials.broker.client_id",
            "the client id the authorization server registered is required".into(),
        ));
    }
    for (n, scope) in broker.scopes.iter().flatten().enumerate() {
        if !i.scopes.list().contains(scope) {
            p.push(doc.problem(
                &format!("credentials.broker.scopes[{n}]"),
                format!("`{scope}` is not one of the integration's scopes"),
            ));
        }
    }
    if broker.scopes.as_ref().is_some_and(Vec::is_empty) {
        p.push(doc.problem(
            "credentials.broker.scopes",
            "leave it out to request the integration's scopes; an empty list requests none".into(),
        ));
    }
}

fn exception(
    doc: &Located<Exception>,
    integrations: &[Located<Integration>],
    now: jiff::Timestamp,
    p: &mut Vec<Problem>,
) {
    let e = &doc.value;
    not_blank(doc, "reason", &e.reason, p);
    not_blank(doc, "approver", &e.approver, p);
    if e.scopes.is_empty() {
        p.push(doc.problem("scopes", "list the scopes the exception adds".into()));
    }
    if !integrations.iter().any(|i| i.value.name == e.integration) {
        p.push(doc.problem(
            "integration",
            format!("unknown integration `{}`", e.integration),
        ));
    }
    if e.expires <= now {
        p.push(doc.problem(
            "expires",
            format!(
                "expired at {}: exceptions must expire in the future; delete it or renew it with a new approval",
                e.expires
            ),
        ));
    }
}

fn break_glass(
    doc: &Located<BreakGlass>,
    integrations: &[Located<Integration>],
    p: &mut Vec<Problem>,
) {
    let b = &doc.value;
    not_blank(doc, "owner", &b.owner, p);
    if b.invokers.integrations.is_empty() && b.invokers.users.is_empty() {
        p.push(doc.problem(
            "invokers",
            "name the integrations or users a session may cover".into(),
        ));
    }
    for name in b
        .invokers
        .integrations
        .iter()
        .filter(|n| !integrations.iter().any(|i| &i.value.name == *n))
    {
        p.push(doc.problem(
            "invokers.integrations",
            format!("unknown integration `{name}`"),
        ));
    }
    if b.invokers.users.iter().any(|u| u.trim().is_empty()) {
        p.push(doc.problem("invokers.users", "user names may not be empty".into()));
    }
    if !b.max_duration.is_positive() || b.max_duration > MAX_BREAK_GLASS {
        p.push(doc.problem(
            "max_duration",
            format!("must be positive and at most {MAX_BREAK_GLASS:#}"),
        ));
    }
    if b.min_justification < MIN_JUSTIFICATION {
        p.push(doc.problem(
            "min_justification",
            format!("ask for at least {MIN_JUSTIFICATION} characters"),
        ));
    }
    if b.scopes.is_empty() {
        p.push(doc.problem("scopes", "list the scopes a session adds".into()));
    }
}
