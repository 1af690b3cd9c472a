//! The suggestion as a policy document: every line that narrows carries its evidence in a
//! comment (counts, first and last seen), the header says how it differs from the integration
//! in force. Values the evidence does not touch (owner, workload, credentials, ...) are the
//! ones in force, written as JSON, which YAML reads as they are.

use std::fmt::Write as _;

use fhirwall_fhir::ResourceType;
use fhirwall_policy::{Integration, PatientMode};

use super::{Seen, Suggestion};

/// A count of what an integration may do, for comparing two versions of it: one per
/// permission letter per type a scope reaches (a `*` scope reaches every type), granular
/// scopes as one each, one per operation and purpose of use, and one for a patient mode that
/// is not confined.
#[must_use]
pub fn permissions(i: &Integration) -> usize {
    let scopes: usize = i
        .scopes
        .list()
        .iter()
        .map(|s| {
            let letters = "cruds"
                .chars()
                .filter(|l| letter_in(s.as_str(), *l))
                .count();
            let types = if s.resource_type.is_some() {
                1
            } else {
                ResourceType::ALL.len()
            };
            letters * types
        })
        .sum();
    let open = usize::from(i.patient.mode == PatientMode::Any);
    scopes + i.operations.len() + i.purposes_of_use.iter().count() + open
}

/// Whether the permission part of a scope (`Observation.rs` in `system/Observation.rs?x=y`)
/// holds `letter` (v1 `read`/`write`/`*` spelled out as v2).
fn letter_in(scope: &str, letter: char) -> bool {
    let base = scope.split('?').next().unwrap_or_default();
    let perms = base.rsplit('.').next().unwrap_or_default();
    match perms {
        "read" => "rs".contains(letter),
        "write" => "cud".contains(letter),
        "*" => true,
        p => p.contains(letter),
    }
}

fn seen(s: &Seen) -> String {
    format!(
        "{} request(s), first {}, last {}",
        s.count,
        s.first.strftime("%Y-%m-%dT%H:%M:%SZ"),
        s.last.strftime("%Y-%m-%dT%H:%M:%SZ")
    )
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

pub(super) fn document(s: &Suggestion, current: &Integration, window: &str) -> String {
    let i = &s.integration;
    let mut out = String::new();
    let requests = s.evidence.requests.as_ref().map_or_else(String::new, seen);
    let _ = writeln!(
        out,
        "# Suggested by `fhirwall policy suggest` for {} from its audit trail ({window}):\n\
         # {requests}. Permissions: {} in force, {} suggested.",
        i.name,
        permissions(current),
        permissions(i)
    );
    diff(&mut out, s, current);
    let _ = writeln!(out, "kind: Integration\nname: {}", json(&i.name));
    let _ = writeln!(
        out,
        "owner: {}\npurpose: {}",
        json(&i.owner),
        json(&i.purpose)
    );
    if let Some(ticket) = &i.ticket {
        let _ = writeln!(out, "ticket: {}", json(ticket));
    }
    let _ = writeln!(
        out,
        "data_classes: {}\nexpected_resources: {}\nstatus: {}",
        json(&i.data_classes),
        json(&i.expected_resources),
        json(&i.status)
    );
    if let Some(expires) = i.expires {
        let _ = writeln!(out, "expires: {}", json(&expires));
    }
    let _ = writeln!(
        out,
        "mode: {}\nworkload: {}\nupstreams: {}",
        json(&i.mode),
        json(&i.workload),
        json(&i.upstreams)
    );
    if !i.tenants.is_empty() {
        let _ = writeln!(out, "tenants: {}", json(&i.tenants));
    }
    scopes(&mut out, s);
    operations(&mut out, s);
    let purposes: Vec<String> = i.purposes_of_use.iter().map(|p| p.to_string()).collect();
    let _ = writeln!(out, "purposes_of_use: {}", json(&purposes));
    for (purpose, seen_) in &s.evidence.purposes {
        let _ = writeln!(out, "#   {purpose}: {}", seen(seen_));
    }
    if let Some(d) = i.default_purpose {
        let _ = writeln!(out, "default_purpose: {d}");
    }
    patient(&mut out, i);
    if let Some(rate) = &i.rate_limit {
        let _ = writeln!(
            out,
            "# peak {} request(s) in one second: half again as much and twice that as burst, or \
             the limit in force if lower\n\
             rate_limit: {{ per_second: {}, burst: {} }}",
            s.evidence.peak_per_second, rate.per_second, rate.burst
        );
    }
    let _ = writeln!(
        out,
        "credentials: {}\nresponse_check: {}",
        json(&i.credentials),
        json(&i.response_check)
    );
    out
}

fn scopes(out: &mut String, s: &Suggestion) {
    let _ = writeln!(out, "scopes:");
    for scope in s.integration.scopes.list() {
        let evidence = s.scopes.iter().find(|x| &x.scope == scope).map_or_else(
            || {
                "# kept from the policy in force: narrower scopes broke recorded requests"
                    .to_owned()
            },
            |x| format!("# {}", seen(&x.evidence)),
        );
        let _ = writeln!(out, "  - {}   {evidence}", json(&scope.to_string()));
    }
}

fn operations(out: &mut String, s: &Suggestion) {
    let ops = &s.integration.operations;
    let texts: Vec<String> = ops.iter().map(ToString::to_string).collect();
    let _ = writeln!(out, "operations: {}", json(&texts));
    for ((name, level, t), seen_) in &s.evidence.operations {
        let at = t.map_or_else(String::new, |t| format!(" on {t}"));
        let _ = writeln!(out, "#   {name} ({level:?}{at}): {}", seen(seen_));
    }
}

fn patient(out: &mut String, i: &Integration) {
    let mode = match &i.patient.mode {
        PatientMode::Any => "any".to_owned(),
        PatientMode::Compartment => "compartment".to_owned(),
        PatientMode::Header(h) => format!("header\n  header: {h}"),
    };
    let _ = writeln!(out, "patient:\n  mode: {mode}");
    if !i.patient.exempt.is_empty() {
        let _ = writeln!(out, "  exempt: {}", json(&i.patient.exempt));
    }
}

/// What changed against the integration in force, as comments.
fn diff(out: &mut String, s: &Suggestion, current: &Integration) {
    let i = &s.integration;
    let texts = |i: &Integration| -> Vec<String> {
        i.scopes.list().iter().map(ToString::to_string).collect()
    };
    let (now, then) = (texts(i), texts(current));
    for removed in then.iter().filter(|t| !now.contains(t)) {
        let _ = writeln!(out, "# - scope {removed}");
    }
    for added in now.iter().filter(|t| !then.contains(t)) {
        let _ = writeln!(out, "# + scope {added}");
    }
    for op in current
        .operations
        .iter()
        .filter(|o| !i.operations.contains(o))
    {
        let _ = writeln!(out, "# - operation {op}");
    }
    for p in current
        .purposes_of_use
        .iter()
        .filter(|p| !i.purposes_of_use.contains(*p))
    {
        let _ = writeln!(out, "# - purpose of use {p}");
    }
    if current.patient.mode != i.patient.mode {
        let _ = writeln!(
            out,
            "# ~ patient: any -> compartment (every recorded request was confined)"
        );
    }
    if current.rate_limit != i.rate_limit {
        let show = |r: &Option<fhirwall_policy::RateLimit>| {
            r.as_ref().map_or("none".to_owned(), |r| {
                format!("{}/s burst {}", r.per_second, r.burst)
            })
        };
        let _ = writeln!(
            out,
            "# ~ rate_limit: {} -> {}",
            show(&current.rate_limit),
            show(&i.rate_limit)
        );
    }
    if !s.kept_for_replay.is_empty() {
        let _ = writeln!(
            out,
            "# kept as in force (narrower ones broke recorded requests): {}",
            s.kept_for_replay.join(", ")
        );
    }
}
