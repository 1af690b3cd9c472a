//! Records made the way the sidecar makes them (classify, decide, record) under the example
//! policies and edits of them, for the tests of replay and suggest.
#![expect(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::path::Path;

use fhirwall_fhir::{HttpRequest, classify};
use fhirwall_policy::{Policy, Subject};

use crate::{
    audit::{Disposition, Record, WorkloadRecord},
    proxy::sidecar::record,
};

pub const LAB: &str = "lab-results-interface";
const LAB_AUTH: &str = "Basic ZWhyLWludGVyZmFjZTpsZWdhY3k=";
pub const CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory";
pub const NOW: &str = "2026-11-28T12:00:00Z";

/// The example policies, with `edit` applied to the lab integration's file.
pub fn policy(edit: impl Fn(String) -> String) -> (tempfile::TempDir, Policy) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        let mut text = std::fs::read_to_string(&path).unwrap();
        if path.ends_with("lab-results.yaml") {
            text = edit(text);
        }
        std::fs::write(dir.path().join(path.file_name().unwrap()), text).unwrap();
    }
    let policy = Policy::load_at(dir.path(), NOW.parse().unwrap()).unwrap();
    (dir, policy)
}

/// A request of the lab integration as the sidecar records it under `policy`.
pub fn recorded(policy: &Policy, n: usize, request: &str) -> Record {
    let (method, target) = request.split_once(' ').unwrap();
    let headers: Vec<(&str, &[u8])> = vec![
        ("Host", b"127.0.0.2:8443"),
        ("Authorization", LAB_AUTH.as_bytes()),
    ];
    let http = HttpRequest {
        method,
        target,
        headers: &headers,
        body: None,
    };
    let fhir = classify(&http, policy.classify_config("ehr-fhir").unwrap()).unwrap();
    let integration = policy.integration(LAB);
    let subject = Subject::from_headers(
        policy,
        integration,
        "ehr-fhir",
        &headers,
        NOW.parse().unwrap(),
    );
    let decision = fhirwall_policy::decide(policy, &subject, &fhir);
    let mut r = Record::new(
        format!("corr-{n}"),
        "node",
        WorkloadRecord::default(),
        method,
        target,
        Disposition::Allow,
    );
    r.time = NOW.parse().unwrap();
    r.integration = Some(LAB.into());
    r.upstream = Some("ehr-fhir".into());
    record::decided(&mut r, &fhir, &subject, &decision, None);
    r
}
