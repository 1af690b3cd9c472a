//! Which responses are checked, and against what, over the example policies in `policies/`.

use std::sync::OnceLock;

use fhirwall_fhir::{HttpRequest, classify};

use super::*;
use crate::decide;

const NOW: &str = "2026-11-28T12:00:00Z";
const MAX: usize = 1 << 20;

fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let now = NOW.parse().expect("time");
        Policy::load_at(&dir, now).unwrap_or_else(|e| panic!("policies/: {e}"))
    })
}

/// The rules for `request` ("METHOD TARGET") sent by `integration` with `headers`; panics
/// unless the request is allowed.
fn rules(integration: &str, request: &str, headers: &[(&str, &str)]) -> ResponseRules {
    let policy = policy();
    let integration = policy.integration(integration).expect("integration");
    let (method, target) = request.split_once(' ').expect("METHOD TARGET");
    let mut all: Vec<(&str, &[u8])> = vec![("Host", b"127.0.0.2:8443")];
    all.extend(headers.iter().map(|(n, v)| (*n, v.as_bytes())));
    let config = policy.classify_config("ehr-fhir").expect("upstream");
    let http = HttpRequest {
        method,
        target,
        headers: &all,
        body: None,
    };
    let fhir = classify(&http, config).unwrap_or_else(|e| panic!("{request}: {e}"));
    let now = NOW.parse().expect("time");
    let subject = Subject::from_headers(policy, Some(integration), "ehr-fhir", &all, now);
    let decision = decide(policy, &subject, &fhir);
    assert!(
        matches!(decision, Decision::Allow { .. }),
        "{request}: {decision:?}"
    );
    response_rules(policy, &subject, &fhir, &decision, MAX)
}

const PORTAL: &str = "patient-portal-backend";
const ME: (&str, &str) = ("X-Portal-Patient", "pat-1001");

#[test]
fn a_patient_bound_read_the_request_cannot_tie_is_checked_against_the_header() {
    let r = rules(PORTAL, "GET /Observation/obs-1", &[ME]);
    assert_eq!(r.mode, CheckMode::Filter, "the portal's response_check");
    assert_eq!(r.patients, PatientRule::Only(vec!["pat-1001".into()]));
    assert!(r.readable.contains(ResourceType::Observation));
    assert!(!r.readable.contains(ResourceType::Encounter));
    assert!(r.exempt.contains(ResourceType::Medication));
    for target in [
        "GET /Observation?code=2345-7",
        "GET /Observation/_history",
        "GET /Patient/pat-1001/Observation?_revinclude=Observation:has-member",
        "GET /Patient/pat-1001/$everything",
    ] {
        assert_eq!(
            rules(PORTAL, target, &[ME]).mode,
            CheckMode::Filter,
            "{target}"
        );
    }
}

#[test]
fn every_read_of_a_patient_bound_integration_is_checked_and_held_to_its_patient() {
    // A compartment overlaps others (an Observation of B that A performed is in A's
    // compartment): not even a confined search bounds whose data comes back.
    for target in [
        "GET /Patient/pat-1001/Observation",
        "GET /Observation?patient=pat-1001",
        "GET /Patient/pat-1001",
        "GET /Patient/pat-1001/Observation?_include=Observation:performer:Practitioner",
    ] {
        let r = rules(PORTAL, target, &[ME]);
        assert_eq!(r.mode, CheckMode::Filter, "{target}");
        assert_eq!(r.patients, PatientRule::Only(vec!["pat-1001".into()]));
    }
}

#[test]
fn without_a_patient_constraint_only_reaching_beyond_the_own_type_is_checked() {
    let payer = [("X-Purpose-Of-Use", "HPAYMT")];
    let plain = rules("payer-claims-batch", "GET /Claim?status=active", &payer);
    assert_eq!(plain.mode, CheckMode::Record);
    assert_eq!(plain.patients, PatientRule::Any);
    let by_id = rules("payer-claims-batch", "GET /Claim/c-1", &payer);
    assert_eq!(by_id.mode, CheckMode::Record);
    let quality = rules("quality-reporting", "GET /Encounter?date=ge2026-01-01", &[]);
    assert_eq!(quality.mode, CheckMode::Record);
}

#[test]
fn compartment_mode_binds_to_the_named_patient_or_the_first_shown() {
    let hie = [("X-Purpose-Of-Use", "TREAT")];
    let named = rules(
        "hie-document-query",
        "GET /DocumentReference?patient=pat-7",
        &hie,
    );
    assert_eq!(named.mode, CheckMode::Deny);
    assert_eq!(named.patients, PatientRule::Only(vec!["pat-7".into()]));
    let by_id = rules("hie-document-query", "GET /DocumentReference/doc-1", &hie);
    assert_eq!(by_id.mode, CheckMode::Deny);
    assert_eq!(by_id.patients, PatientRule::One);
}
