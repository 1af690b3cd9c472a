//! Drives the policy loader with arbitrary text as policy files, without a file system
//! (`Policy::from_sources`). Input layout: split on NUL into up to three files. A policy that
//! loads is then exercised: problems and rules are rendered, and every integration decides a
//! fixed set of classified requests, so fuzzed scopes, constraints and exceptions reach the
//! compiled tables and `decide()`. Any `Err` is fine; a panic, timeout or OOM is a bug.

#![no_main]

use std::{path::Path, sync::OnceLock};

use fhirwall_fhir::{ClassifyConfig, FhirRequest, HttpRequest, classify};
use fhirwall_policy::{BreakGlassSession, Policy, SessionTarget, Subject, decide};
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 3] = ["a.yaml", "b.yaml", "c.yaml"];

/// Requests covering every check: reads, granular searches, includes, chains, `_has`,
/// compartments, writes, operations, `$export`, and a transaction.
fn requests() -> &'static [FhirRequest] {
    static REQUESTS: OnceLock<Vec<FhirRequest>> = OnceLock::new();
    REQUESTS.get_or_init(|| {
        let Ok(config) = ClassifyConfig::new("/") else {
            return Vec::new();
        };
        let tx = br#"{"resourceType":"Bundle","type":"transaction","entry":[
            {"resource":{"resourceType":"Observation","subject":{"reference":"Patient/1"}},
             "request":{"method":"POST","url":"Observation"}},
            {"request":{"method":"GET","url":"Patient/2/Condition"}},
            {"request":{"method":"DELETE","url":"Patient/1"}}]}"#;
        let json: &[(&str, &[u8])] = &[("Content-Type", b"application/fhir+json")];
        let cases: [(&str, &str, Option<&[u8]>); 14] = [
            ("GET", "/metadata", None),
            ("GET", "/Patient/1", None),
            (
                "GET",
                "/Observation?category=http://x|laboratory&patient=1",
                None,
            ),
            (
                "GET",
                "/Observation?subject:Patient.name=x&_include=Observation:subject:Patient",
                None,
            ),
            (
                "GET",
                "/Patient?_has:Observation:patient:code=1&_revinclude=Provenance:target",
                None,
            ),
            ("GET", "/Patient/1/Observation?_id=2", None),
            ("GET", "/Patient/1/*", None),
            ("GET", "/?_type=Claim,Coverage", None),
            ("GET", "/_history", None),
            ("GET", "/$export?_type=Claim", None),
            ("GET", "/Patient/1/$everything", None),
            ("DELETE", "/Observation?patient=1", None),
            (
                "POST",
                "/Observation",
                Some(br#"{"resourceType":"Observation","subject":{"reference":"Patient/1"}}"#),
            ),
            ("POST", "/", Some(tx)),
        ];
        cases
            .iter()
            .filter_map(|(method, target, body)| {
                let request = HttpRequest {
                    method,
                    target,
                    headers: if body.is_some() { json } else { &[] },
                    body: *body,
                };
                classify(&request, &config).ok()
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let files: Vec<&[u8]> = data.splitn(3, |&b| b == 0).collect();
    let texts: Vec<String> = files
        .iter()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    let sources = NAMES
        .iter()
        .zip(&texts)
        .map(|(n, t)| (Path::new(n), t.as_str()));
    let now: jiff::Timestamp = "2026-11-28T12:00:00Z".parse().unwrap_or_default();
    let policy = match Policy::from_sources(sources, now) {
        Ok(policy) => policy,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let headers: [(&str, &[u8]); 3] = [
        ("X-Purpose-Of-Use", b"TREAT"),
        ("Authorization", b"Bearer x"),
        ("X-Patient", b"1,2"),
    ];
    for integration in &policy.integrations {
        let session = BreakGlassSession {
            policy: policy
                .break_glass
                .first()
                .map(|b| b.name.clone())
                .unwrap_or_default(),
            target: SessionTarget::Integration(integration.name.clone()),
            opened_by: "fuzz".into(),
            justification: "x".repeat(64),
            started: now,
            until: now
                .checked_add(jiff::SignedDuration::from_hours(1))
                .unwrap_or(now),
        };
        for upstream in &integration.upstreams {
            for request in requests() {
                let mut subject =
                    Subject::from_headers(&policy, Some(integration), upstream, &headers, now);
                let d = decide(&policy, &subject, request);
                let _ = (d.rule().to_string(), d.reason().map(ToString::to_string));
                subject.break_glass = Some(&session);
                let _ = decide(&policy, &subject, request).rule().to_string();
            }
        }
    }
    let _ = serde_json::to_string(&policy.integrations);
});
