//! What a policy must see: every way a request reaches data beyond its URL's type, every place
//! it names a patient, and the tricks that would make fhirwall and the server disagree.

use super::{FORM, config, ok, render_param, req, run};
use crate::{ClassifyError, Interaction, IssueType, ResourceType};

const JSON: &[(&str, &str)] = &[("Content-Type", "application/fhir+json")];

#[test]
fn includes_chains_and_has_reach_other_types() {
    let cases: [(&str, &[ResourceType]); 7] = [
        (
            "/fhir/R4/Observation?_include=Observation:subject:Patient",
            &[ResourceType::Observation, ResourceType::Patient],
        ),
        (
            "/fhir/R4/MedicationRequest?_revinclude=Provenance:target",
            &[ResourceType::Provenance],
        ),
        (
            "/fhir/R4/Practitioner?_has:Observation:performer:code=1",
            &[ResourceType::Observation],
        ),
        (
            "/fhir/R4/Organization?_has:Patient:organization:_has:Condition:subject:code=x",
            &[ResourceType::Condition, ResourceType::Patient],
        ),
        (
            "/fhir/R4/Observation?subject:Patient.name=peter",
            &[ResourceType::Patient],
        ),
        (
            "/fhir/R4/Observation?subject:Patient.general-practitioner:Practitioner.name=x",
            &[ResourceType::Patient, ResourceType::Practitioner],
        ),
        (
            "/fhir/R4?_type=Patient,Observation&_revinclude:iterate=AuditEvent:entity",
            &[
                ResourceType::AuditEvent,
                ResourceType::Observation,
                ResourceType::Patient,
            ],
        ),
    ];
    for (target, want) in cases {
        let r = req("GET", target).expect(target);
        let mut want = want.to_vec();
        want.sort_unstable();
        assert_eq!(r.query.reached_types(), want, "{target}");
    }
}

#[test]
fn batch_hides_one_forbidden_entry_in_plain_sight() {
    let body = r#"{"resourceType":"Bundle","type":"batch","entry":[
        {"request":{"method":"GET","url":"Observation?code=1"}},
        {"request":{"method":"GET","url":"Observation?code=2"}},
        {"request":{"method":"DELETE","url":"AuditEvent/ae1"}},
        {"request":{"method":"GET","url":"Observation?code=3&_include=Observation:subject:Patient"}}]}"#;
    let r = ok("POST", "/fhir/R4", JSON, Some(body));
    assert_eq!(r.interaction, Interaction::Batch);
    assert_eq!(r.resource_type, None);
    let hidden = &r.entries[2];
    assert_eq!(
        (
            hidden.interaction,
            hidden.resource_type,
            hidden.id.as_deref()
        ),
        (
            Interaction::Delete,
            Some(ResourceType::AuditEvent),
            Some("ae1")
        )
    );
    assert_eq!(
        r.entries[3].query.reached_types(),
        [ResourceType::Observation, ResourceType::Patient]
    );
}

#[test]
fn post_search_body_parameters_count() {
    let r = ok(
        "POST",
        "/fhir/R4/Observation/_search?code=1",
        FORM,
        Some("_include=Observation:subject:Patient&_has:Provenance:target:agent=x&patient=9"),
    );
    let params: Vec<String> = r.query.params.iter().map(render_param).collect();
    assert_eq!(
        params,
        [
            r#"code=["1"]"#,
            r#"<Provenance.target>agent=["x"]"#,
            r#"patient=["9"]"#
        ]
    );
    assert_eq!(
        r.query.reached_types(),
        [
            ResourceType::Observation,
            ResourceType::Patient,
            ResourceType::Provenance
        ]
    );
    assert_eq!(r.patient_refs, ["9"]);
}

#[test]
fn conditional_criteria_are_visible() {
    let json = ("Content-Type", "application/fhir+json");
    let r = ok(
        "PUT",
        "/fhir/R4/Patient?identifier=http://acme.org/mrn|7&_format=json",
        &[json],
        Some(r#"{"resourceType":"Patient"}"#),
    );
    assert_eq!(r.interaction, Interaction::Update);
    let criteria = r.conditional.expect("conditional update");
    assert_eq!(
        criteria.params.iter().map(render_param).collect::<Vec<_>>(),
        [r#"identifier=["http://acme.org/mrn|7"]"#]
    );
    let r = ok(
        "POST",
        "/fhir/R4/Observation",
        &[("If-None-Exist", "patient=Patient/4&code=1"), json],
        Some(r#"{"resourceType":"Observation"}"#),
    );
    let criteria = r.conditional.expect("conditional create");
    assert_eq!(criteria.params.len(), 2);
    assert_eq!(r.patient_refs, ["4"]);
    let err = req("DELETE", "/fhir/R4/Observation?_count=1").expect_err("no criteria");
    assert_eq!(
        (err.issue_type(), err.http_status()),
        (IssueType::Required, 400)
    );
}

#[test]
fn path_tricks_are_refused_not_normalized() {
    for target in [
        "/fhir/R4/Patient%2F1",
        "/fhir/R4/Patient/%2e%2e/Observation",
        "/fhir/R4/Patient/..%2FObservation",
        "//fhir/R4/Patient",
        "/fhir/R4//Patient/1",
        "/fhir/R4/Patient/1;jsessionid=x",
        "/fhir/R4/Patient%252F1",
        "/fhir/R4/Patient/1%00",
        "/fhir/R4/Patient/1/",
        "/fhir/R4/Observation/../Patient/1",
        "/fhir/R4/./Patient/1",
        "/fhir/R4/Patient/1%2F..%2F2",
        "/fhir/R4/Patient\\1",
        "/fhir/R4/Patient/1#/../2",
        "/fhir/R4/%50atient/1%3B",
    ] {
        let err = req("GET", target).expect_err(target);
        assert_eq!(err.issue_type(), IssueType::Invalid, "{target}: {err:?}");
        assert_eq!(err.http_status(), 400, "{target}");
    }
}

#[test]
fn wrong_case_types_are_unknown_everywhere() {
    let mut failures = Vec::new();
    for target in [
        "/fhir/R4/patient/1",
        "/fhir/R4/observation?code=1",
        "/fhir/R4/Patient/1/observation",
        "/fhir/R4?_type=patient",
        "/fhir/R4/Observation?_include=observation:subject",
        "/fhir/R4/Observation?subject:patient=1",
        "/fhir/R4/Patient?_has:observation:patient:code=1",
    ] {
        let err = req("GET", target).expect_err(target);
        let unknown = matches!(err, ClassifyError::UnknownResourceType { .. })
            || matches!(
                err,
                ClassifyError::Query {
                    problem: crate::QueryProblem::UnknownResourceType,
                    ..
                }
            );
        if !unknown {
            failures.push(format!("{target}: {err:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
    let body = r#"{"resourceType":"patient"}"#;
    assert_eq!(
        run(&config(), "POST", "/fhir/R4/Patient", JSON, Some(body)).expect_err("body type case"),
        ClassifyError::ResourceTypeMismatch {
            expected: ResourceType::Patient
        }
    );
}

#[test]
fn patient_references_are_collected_from_every_source() {
    let cases: [(&str, &str, Option<&str>, &[&str]); 12] = [
        ("GET", "/fhir/R4/Patient/p1", None, &["p1"]),
        ("GET", "/fhir/R4/Patient/p1/_history/3", None, &["p1"]),
        ("GET", "/fhir/R4/Patient/p1/$everything", None, &["p1"]),
        (
            "GET",
            "/fhir/R4/Patient/p1/Observation?subject=Patient/p2",
            None,
            &["p1", "p2"],
        ),
        (
            "GET",
            "/fhir/R4/Observation?patient=p3,p4&subject=Patient/p3",
            None,
            &["p3", "p4"],
        ),
        (
            "GET",
            "/fhir/R4/Observation?subject:Patient=p5&performer=Practitioner/x",
            None,
            &["p5"],
        ),
        (
            "GET",
            "/fhir/R4/Observation?subject=https://other.example/fhir/Patient/p6/_history/1",
            None,
            &["p6"],
        ),
        ("GET", "/fhir/R4/Patient?_id=p7", None, &["p7"]),
        (
            "GET",
            "/fhir/R4/Observation?_id=o1&subject=o2&patient:identifier=mrn|1&patient.name=x",
            None,
            &[],
        ),
        ("GET", "/fhir/R4/Encounter/e1/Observation", None, &[]),
        (
            "PUT",
            "/fhir/R4/Patient/p8",
            Some(
                r#"{"resourceType":"Patient","id":"p8","link":[{"other":{"reference":"Patient/p9"}}]}"#,
            ),
            &["p8", "p9"],
        ),
        (
            "POST",
            "/fhir/R4/Observation",
            Some(
                r#"{"resourceType":"Observation","subject":{"reference":"Patient/p10"},"performer":[{"reference":"Practitioner/x"}],"note":[{"text":"Patient/p11"}]}"#,
            ),
            &["p10"],
        ),
    ];
    for (method, target, body, want) in cases {
        let r = run(&config(), method, target, JSON, body).expect(target);
        assert_eq!(r.patient_refs, want, "{method} {target}");
    }
}

#[test]
fn error_messages_do_not_echo_request_values() {
    let secret = "JohnSmith1970";
    let config = config();
    let attempts = [
        run(
            &config,
            "GET",
            &format!("/fhir/R4/Patient/{secret}_x"),
            &[],
            None,
        ),
        run(&config, "GET", &format!("/fhir/R4/{secret}"), &[], None),
        run(
            &config,
            "GET",
            &format!("/fhir/R4/Patient?name:{secret}=x"),
            &[],
            None,
        ),
        run(
            &config,
            "GET",
            &format!("/fhir/R4/Patient?name=%FF{secret}"),
            &[],
            None,
        ),
        run(
            &config,
            "GET",
            &format!("/fhir/R4/Patient?_count={secret}"),
            &[],
            None,
        ),
        run(
            &config,
            "POST",
            "/fhir/R4",
            JSON,
            Some(&format!(r#"{{"resourceType":"Bundle","type":"{secret}"}}"#)),
        ),
        run(
            &config,
            "POST",
            "/fhir/R4",
            JSON,
            Some(&format!(
                r#"{{"resourceType":"Bundle","type":5,"x":"{secret}"}}"#
            )),
        ),
        run(
            &config,
            "POST",
            "/fhir/R4",
            JSON,
            Some(&format!(
                r#"{{"resourceType":"Bundle","type":"batch","entry":[{{"request":{{"method":"GET","url":"Patient/{secret}_"}}}}]}}"#
            )),
        ),
        run(
            &config,
            "PUT",
            "/fhir/R4/Patient/1",
            JSON,
            Some(&format!(r#"{{"resourceType":"Patient","id":"{secret}"}}"#)),
        ),
        run(
            &config,
            "POST",
            "/fhir/R4/Patient",
            JSON,
            Some(&format!(r#"{{"resourceType":"Patient","name":"{secret}"#)),
        ),
    ];
    for attempt in attempts {
        let err = attempt.expect_err("each attempt is invalid");
        let mut text = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(inner) = source {
            text.push_str(&inner.to_string());
            source = inner.source();
        }
        assert!(
            !text.contains(secret) && !text.contains("Smith"),
            "{err:?} says {text}"
        );
    }
}

#[test]
fn json_output_has_the_cli_keys() {
    let r = ok("GET", "/fhir/R4/Patient/123/Observation?code=1", &[], None);
    let json = serde_json::to_value(&r).expect("FhirRequest serializes");
    assert_eq!(json["interaction"], "search-type");
    assert_eq!(json["resourceType"], "Observation");
    assert_eq!(json["id"], serde_json::Value::Null);
    assert_eq!(json["compartment"], "Patient/123");
    assert_eq!(json["method"], "GET");
    assert_eq!(json["patientRefs"], serde_json::json!(["123"]));
    assert_eq!(json["query"]["params"][0]["name"], "code");
    let op = serde_json::to_value(ok("GET", "/fhir/R4/Patient/1/$everything", &[], None))
        .expect("serializes");
    assert_eq!(
        op["operation"],
        serde_json::json!({"name": "$everything", "level": "instance"})
    );
}

#[test]
fn with_entries_walks_the_request_then_each_entry() {
    let body = r#"{"resourceType":"Bundle","type":"batch","entry":[
        {"request":{"method":"GET","url":"Patient/1"}},{"request":{"method":"DELETE","url":"Observation/2"}}]}"#;
    let r = ok("POST", "/fhir/R4", JSON, Some(body));
    let walked: Vec<Interaction> = r.with_entries().map(|e| e.interaction).collect();
    assert_eq!(
        walked,
        [Interaction::Batch, Interaction::Read, Interaction::Delete]
    );
    let read = ok("GET", "/fhir/R4/Patient/1", &[], None);
    assert_eq!(read.with_entries().count(), 1);
}

#[test]
fn policy_files_can_name_types_interactions_and_methods() {
    let parsed: (ResourceType, Interaction, crate::FhirMethod) =
        serde_json::from_str(r#"["Observation", "history-instance", "PATCH"]"#)
            .expect("valid names");
    assert_eq!(
        parsed,
        (
            ResourceType::Observation,
            Interaction::HistoryInstance,
            crate::FhirMethod::Patch
        )
    );
    assert!(serde_json::from_str::<ResourceType>(r#""observation""#).is_err());
    assert!(serde_json::from_str::<Interaction>(r#""historyInstance""#).is_err());
    assert_eq!(ResourceType::ALL.len(), 146);
    assert!(
        ResourceType::ALL
            .windows(2)
            .all(|w| w[0].as_str() < w[1].as_str()),
        "sorted, no duplicates"
    );
    assert!(
        ResourceType::ALL
            .iter()
            .all(|t| ResourceType::parse(t.as_str()) == Some(*t))
    );
    assert!(
        crate::PATIENT_COMPARTMENT
            .windows(2)
            .all(|w| w[0].0 < w[1].0),
        "binary-searchable"
    );
    assert_eq!(
        crate::patient_compartment_params(ResourceType::Observation),
        Some(&["subject", "performer"][..])
    );
    assert_eq!(
        crate::patient_compartment_params(ResourceType::Medication),
        None
    );
}

#[test]
fn what_is_kept_for_replay_names_no_one() {
    use crate::replay::Recorded;
    let target = "/fhir/R4/Observation?patient=Patient/9&name:contains=Smith&date=1970-01-01\
                  &category=laboratory&code=http://loinc.org|2345-7\
                  &subject:Patient.identifier=urn:mrn|445566&_has:Encounter:patient:reason=Smith";
    let r = ok("GET", target, &[], None);
    let stored = serde_json::to_string(&Recorded::of(&r)).expect("serializes");
    for secret in ["Smith", "1970", "445566"] {
        assert!(!stored.contains(secret), "{secret} in {stored}");
    }
    // Codes a granular scope constrains and the patient reference that confines the search.
    for kept in ["laboratory", "2345-7", "Patient/9"] {
        assert!(stored.contains(kept), "{kept} missing from {stored}");
    }
    let back: Recorded = serde_json::from_str(&stored).expect("reads back");
    let request = back.request();
    assert_eq!(request.query.params.len(), r.query.params.len());
    assert_eq!(request.query.reached_types(), r.query.reached_types());
    assert_eq!(request.patient_refs, r.patient_refs);
    // A Bundle's entries are kept, each the same way.
    let body = r#"{"resourceType":"Bundle","type":"batch","entry":[
        {"request":{"method":"GET","url":"Patient?name=Smith"}},
        {"request":{"method":"GET","url":"Observation?category=vital-signs"}}]}"#;
    let batch = ok("POST", "/fhir/R4", JSON, Some(body));
    let stored = serde_json::to_string(&Recorded::of(&batch)).expect("serializes");
    assert!(
        !stored.contains("Smith") && stored.contains("vital-signs"),
        "{stored}"
    );
    let back: Recorded = serde_json::from_str(&stored).expect("reads back");
    assert_eq!(back.request().entries.len(), 2);
}
