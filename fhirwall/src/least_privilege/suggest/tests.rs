//! Suggestions from records of the example lab integration: narrower, loadable, and breaking
//! nothing that was recorded.
#![expect(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::convert::Infallible;

use super::{permissions, suggest};
use crate::{
    audit::Record,
    least_privilege::{
        replay::Replay,
        test_support::{CATEGORY, LAB, NOW, policy, recorded},
    },
};

fn records(policy: &fhirwall_policy::Policy) -> Vec<Record> {
    let lab_search = format!("GET /Observation?category={CATEGORY}");
    let mut out = Vec::new();
    for n in 0..6 {
        out.push(recorded(policy, n, &lab_search));
    }
    out.push(recorded(policy, 10, "GET /ServiceRequest/sr-1"));
    out.push(recorded(policy, 11, "GET /ServiceRequest/sr-2"));
    out.push(recorded(
        policy,
        12,
        "GET /Patient?identifier=urn:mrn|445566",
    ));
    out.push(recorded(policy, 13, "GET /Condition"));
    out
}

#[test]
fn suggests_fewer_permissions_that_still_allow_everything_recorded() {
    let (_d, current) = policy(|t| t);
    let records = records(&current);
    let suggestion = suggest(&current, LAB, |each| {
        for r in &records {
            each(r);
        }
        Ok::<_, Infallible>(())
    })
    .unwrap()
    .expect("a suggestion");
    let in_force = current.integration(LAB).unwrap();
    let suggested = &suggestion.integration;
    let scopes: Vec<String> = suggested
        .scopes
        .list()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        scopes,
        [
            format!("system/Observation.s?category={CATEGORY}"),
            "system/Patient.s".to_owned(),
            "system/ServiceRequest.r".to_owned(),
        ],
        "only the letters used, the searches by the code they always carried"
    );
    assert!(suggested.operations.is_empty(), "no operation was invoked");
    assert!(permissions(suggested) < permissions(in_force));
    // The Patient search by MRN is not confined to one patient: the mode stays `any`.
    assert_eq!(suggested.patient.mode, fhirwall_policy::PatientMode::Any);

    // The document loads in place of the integration, and replaying the records under it
    // changes nothing that was allowed.
    let yaml = suggestion.yaml(in_force, "test window");
    assert!(!yaml.contains("445566"), "no request value: {yaml}");
    let (_d, candidate) = policy(|_| yaml.clone());
    let mut replay = Replay::new(&candidate, 3);
    for r in &records {
        replay.record(r);
    }
    let report = replay.finish();
    assert!(!report.breaks_anything(), "{}", report.text());
    let _ = NOW;
}

#[test]
fn an_integration_whose_requests_were_all_confined_gets_the_compartment_mode() {
    let (_d, current) = policy(|t| t);
    let confined = [
        recorded(&current, 1, "GET /ServiceRequest?patient=Patient/pat-1"),
        recorded(&current, 2, "GET /ServiceRequest?patient=Patient/pat-2"),
    ];
    let suggestion = suggest(&current, LAB, |each| {
        for r in &confined {
            each(r);
        }
        Ok::<_, Infallible>(())
    })
    .unwrap()
    .expect("a suggestion");
    assert_eq!(
        suggestion.integration.patient.mode,
        fhirwall_policy::PatientMode::Compartment
    );
    assert!(
        suggestion
            .yaml(current.integration(LAB).unwrap(), "w")
            .contains("mode: compartment")
    );
}
