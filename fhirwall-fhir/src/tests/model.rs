//! The positive request model: what the server reads is what was classified. Bodies in every
//! format the server accepts, operation `Parameters` merged with the URL, patches read for what
//! they change, only R4's `_` parameters, and a positive list of headers.

use super::{config, ok, render_query, run};
use crate::{
    ClassifyError, HeaderRefusal, Interaction, ParamSource, QueryProblem, ResourceType,
    patch::{ChangeKind, Element},
};

const XML: (&str, &str) = ("Content-Type", "application/fhir+xml");
const JSON: (&str, &str) = ("Content-Type", "application/fhir+json");

#[test]
fn an_xml_create_names_its_patients_like_a_json_one() {
    let body = r#"<Observation xmlns="http://hl7.org/fhir">
  <status value="final"/>
  <code><text value="glucose"/></code>
  <subject><reference value="Patient/pat-b"/></subject>
</Observation>"#;
    let r = ok("POST", "/fhir/R4/Observation", &[XML], Some(body));
    assert_eq!(r.interaction, Interaction::Create);
    assert_eq!(r.patient_refs, ["pat-b"]);
    let wrong_type = r#"<Patient xmlns="http://hl7.org/fhir"><active value="true"/></Patient>"#;
    assert_eq!(
        run(
            &config(),
            "POST",
            "/fhir/R4/Observation",
            &[XML],
            Some(wrong_type)
        ),
        Err(ClassifyError::ResourceTypeMismatch {
            expected: ResourceType::Observation
        })
    );
    let xxe = r#"<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><Observation xmlns="http://hl7.org/fhir"><status value="&e;"/></Observation>"#;
    assert!(matches!(
        run(&config(), "POST", "/fhir/R4/Observation", &[XML], Some(xxe)),
        Err(ClassifyError::Xml { .. })
    ));
}

#[test]
fn a_create_or_update_in_a_format_the_classifier_cannot_read_is_refused() {
    for content_type in [
        "text/plain",
        "application/octet-stream",
        "application/json-patch+json",
    ] {
        let err = run(
            &config(),
            "POST",
            "/fhir/R4/Observation",
            &[("Content-Type", content_type)],
            Some(r#"{"resourceType":"Observation"}"#),
        )
        .expect_err(content_type);
        assert_eq!(err.http_status(), 415, "{content_type}");
    }
}

#[test]
fn operation_parameters_in_the_body_count_like_url_parameters() {
    let body = r#"{"resourceType":"Parameters","parameter":[
        {"name":"_type","valueString":"Patient,Condition"},
        {"name":"_since","valueInstant":"2026-01-01T00:00:00Z"},
        {"name":"patient","valueReference":{"reference":"Patient/pat-9"}}]}"#;
    let r = ok(
        "POST",
        "/fhir/R4/$export?_type=Claim",
        &[JSON, ("Prefer", "respond-async")],
        Some(body),
    );
    assert_eq!(
        r.query.types,
        [
            ResourceType::Claim,
            ResourceType::Patient,
            ResourceType::Condition
        ],
        "the body's _type widens the export"
    );
    assert!(
        render_query(&r.query)
            .iter()
            .any(|p| p.starts_with("_since="))
    );
    assert_eq!(
        r.patient_refs,
        ["pat-9"],
        "references in the body still count"
    );
    let xml = r#"<Parameters xmlns="http://hl7.org/fhir"><parameter><name value="_type"/><valueString value="Observation"/></parameter></Parameters>"#;
    let r = ok("POST", "/fhir/R4/Patient/p1/$everything", &[XML], Some(xml));
    assert_eq!(r.query.types, [ResourceType::Observation]);
    let hidden =
        r#"{"resourceType":"Parameters","parameter":[{"name":"_cascade","valueString":"delete"}]}"#;
    assert_eq!(
        run(&config(), "POST", "/fhir/R4/$export", &[JSON], Some(hidden)),
        Err(ClassifyError::Query {
            source_kind: ParamSource::Body,
            position: 1,
            problem: QueryProblem::UnknownParameter
        })
    );
}

#[test]
fn patches_are_read_for_what_they_change() {
    let target = "/fhir/R4/Observation?patient=pat-a";
    let json_patch =
        r#"[{"op":"replace","path":"/subject","value":{"reference":"Patient/pat-b"}}]"#;
    let r = ok(
        "PATCH",
        target,
        &[("Content-Type", "application/json-patch+json")],
        Some(json_patch),
    );
    assert_eq!(
        r.patient_refs,
        ["pat-a", "pat-b"],
        "criteria and the written subject"
    );
    let patch = r.patch.expect("a patch effect");
    assert_eq!(patch.changes[0].element, Element::Named("subject".into()));
    assert_eq!(patch.changes[0].kind, ChangeKind::Set);
    let fhirpath = r#"{"resourceType":"Parameters","parameter":[{"name":"operation","part":[
        {"name":"type","valueCode":"replace"},{"name":"path","valueString":"Observation.subject"},
        {"name":"value","valueReference":{"reference":"Patient/pat-b"}}]}]}"#;
    let r = ok("PATCH", target, &[JSON], Some(fhirpath));
    assert_eq!(r.patient_refs, ["pat-a", "pat-b"]);
    let merge = r#"{"subject":{"reference":"Patient/pat-b"}}"#;
    let r = ok(
        "PATCH",
        target,
        &[("Content-Type", "application/merge-patch+json")],
        Some(merge),
    );
    assert_eq!(r.patient_refs, ["pat-a", "pat-b"]);
    for identity in [
        r#"[{"op":"replace","path":"/id","value":"other"}]"#,
        r#"[{"op":"replace","path":"","value":{}}]"#,
        r#"[{"op":"add","path":"/resourceType","value":"Patient"}]"#,
    ] {
        assert_eq!(
            run(
                &config(),
                "PATCH",
                target,
                &[("Content-Type", "application/json-patch+json")],
                Some(identity)
            ),
            Err(ClassifyError::PatchIdentity {}),
            "{identity}"
        );
    }
    assert!(matches!(
        run(&config(), "PATCH", target, &[JSON], Some(json_patch)),
        Err(ClassifyError::Patch { .. })
    ));
}

#[test]
fn only_r4_underscore_parameters_pass() {
    for known in [
        "_id=1",
        "_lastUpdated=gt2026",
        "_tag=x",
        "_profile=x",
        "_security=x",
        "_source=x",
        "_list=x",
        "_text=x",
        "_content=x",
    ] {
        assert!(
            run(
                &config(),
                "GET",
                &format!("/fhir/R4/Observation?{known}"),
                &[],
                None
            )
            .is_ok(),
            "{known}"
        );
    }
    for unknown in [
        "_REVINCLUDE=x",
        "_cascade=delete",
        "_method=DELETE",
        "_Id=1",
        "_xyz=1",
    ] {
        let err = run(
            &config(),
            "GET",
            &format!("/fhir/R4/Observation?{unknown}"),
            &[],
            None,
        )
        .expect_err(unknown);
        assert!(
            matches!(
                err,
                ClassifyError::Query {
                    problem: QueryProblem::UnknownParameter,
                    ..
                }
            ),
            "{unknown}: {err:?}"
        );
        assert_eq!(err.http_status(), 400);
    }
    let mut declared = config();
    declared.extra_params.push("_xyz".into());
    assert!(run(&declared, "GET", "/fhir/R4/Observation?_xyz=1", &[], None).is_ok());
    let contained = ok("GET", "/fhir/R4/Observation?_contained=true", &[], None);
    assert!(contained.query.searches_contained());
    assert!(
        run(
            &config(),
            "GET",
            "/fhir/R4/Observation?_contained=yes",
            &[],
            None
        )
        .is_err()
    );
}

#[test]
fn history_type_restricts_nothing_unless_the_server_applies_it() {
    let r = ok("GET", "/fhir/R4/_history?_type=Claim", &[], None);
    assert!(r.query.types.is_empty(), "hfs and most servers ignore it");
    assert!(render_query(&r.query).contains(&"control:_type=Claim".to_owned()));
    let mut applies = config();
    applies.history_type = true;
    let r = run(&applies, "GET", "/fhir/R4/_history?_type=Claim", &[], None).expect("ok");
    assert_eq!(r.query.types, [ResourceType::Claim]);
}

#[test]
fn headers_outside_the_positive_list_are_stripped_or_refused() {
    let r = ok(
        "PUT",
        "/fhir/R4/Patient/p1",
        &[
            JSON,
            ("If-Match", "W/\"2\""),
            ("Accept-Encoding", "gzip"),
            ("X-Forwarded-Host", "elsewhere"),
        ],
        Some(r#"{"resourceType":"Patient","id":"p1"}"#),
    );
    assert_eq!(r.stripped_headers, ["accept-encoding", "x-forwarded-host"]);
    let err = run(
        &config(),
        "PUT",
        "/fhir/R4/Patient/p1",
        &[JSON, ("Content-Location", "Patient/p2")],
        Some(r#"{"resourceType":"Patient","id":"p1"}"#),
    )
    .expect_err("Content-Location");
    assert_eq!(
        err,
        ClassifyError::RefusedHeader {
            name: "Content-Location",
            reason: HeaderRefusal::ContentLocation
        }
    );
    assert!(
        run(
            &config(),
            "POST",
            "/fhir/R4/Patient",
            &[JSON, ("X-HTTP-Method-Override", "DELETE")],
            Some(r#"{"resourceType":"Patient"}"#)
        )
        .is_err()
    );
}
