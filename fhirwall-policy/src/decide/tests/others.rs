//! hie-document-query, quality-reporting (and its exception), research-cohort-extract (observe
//! mode), the revoked and suspended integrations, unregistered workloads.

use super::*;

fn rule(integration: &str, part: &str) -> String {
    format!("integration/{integration}/{part}")
}

const HIE: &str = "hie-document-query";
const QUALITY: &str = "quality-reporting";
const RESEARCH: &str = "research-cohort-extract";

#[test]
fn hie_queries_name_one_patient_and_state_treatment() {
    let hie = |what, request: &str| case(what, HIE, request.to_owned()).purpose("TREAT");
    check(&[
        hie(
            "documents of a patient",
            "GET /DocumentReference?patient=pat-1",
        )
        .allow(rule(HIE, "scope[0]")),
        hie(
            "documents in the compartment",
            "GET /Patient/pat-1/DocumentReference?type=http://loinc.org|34133-9",
        )
        .allow(rule(HIE, "scope[0]")),
        case(
            "no purpose stated",
            HIE,
            "GET /DocumentReference?patient=pat-1",
        )
        .deny(
            rule(HIE, "purposes_of_use"),
            "states no purpose of use and the integration has no default",
        ),
        hie("payment purpose", "GET /DocumentReference?patient=pat-1")
            .purpose("HPAYMT")
            .deny(rule(HIE, "purposes_of_use"), "not one v3 PurposeOfUse code"),
        case(
            "payment purpose alone",
            HIE,
            "GET /DocumentReference?patient=pat-1",
        )
        .purpose("HPAYMT")
        .deny(rule(HIE, "purposes_of_use"), "HPAYMT is not allowed"),
        hie(
            "documents of everyone (the response may carry one patient's only)",
            "GET /DocumentReference?type=http://loinc.org|34133-9",
        )
        .allow(rule(HIE, "scope[0]")),
        hie(
            "a document by id (its response is checked)",
            "GET /DocumentReference/doc-1",
        )
        .allow(rule(HIE, "scope[0]")),
        hie("its content (exempt)", "GET /Binary/bin-1").allow(rule(HIE, "scope[1]")),
        hie("search of Binary", "GET /Binary?_id=bin-1")
            .deny(rule(HIE, "scopes"), "needs permission `s` on Binary"),
        hie(
            "provenance of the documents",
            "GET /DocumentReference?patient=pat-1&_revinclude=Provenance:target",
        )
        .deny(rule(HIE, "scopes"), "_revinclude reaches Provenance"),
        hie(
            "after the agreement ended",
            "GET /DocumentReference?patient=pat-1",
        )
        .at("2027-07-01T00:00:00Z")
        .deny(rule(HIE, "expires"), "expired at 2027-06-30T23:59:59Z"),
        hie(
            "a second before it ends",
            "GET /DocumentReference?patient=pat-1",
        )
        .at("2027-06-30T23:59:58Z")
        .allow(rule(HIE, "scope[0]")),
    ]);
}

#[test]
fn exceptions_add_scopes_until_they_expire() {
    let lactate = format!("GET /Observation?category={LAB_CATEGORY}&code=http://loinc.org|2524-7");
    let q = |what| case(what, QUALITY, lactate.clone());
    check(&[
        case(
            "encounters of the quarter",
            QUALITY,
            "GET /Encounter?date=ge2026-10-01",
        )
        .allow(rule(QUALITY, "scope[0]")),
        q("lactate results under the exception").allow("exception/sep1-q4-lactate"),
        q("a second before it expires")
            .at("2027-03-31T23:59:58Z")
            .allow("exception/sep1-q4-lactate"),
        q("the second it expires").at("2027-03-31T23:59:59Z").deny(
            rule(QUALITY, "scopes"),
            "needs permission `s` on Observation",
        ),
        q("after it expired")
            .at("2027-04-01T00:00:00Z")
            .deny(rule(QUALITY, "scopes"), "which no scope grants"),
        case(
            "lactate without the category",
            QUALITY,
            "GET /Observation?code=http://loinc.org|2524-7",
        )
        .deny(
            rule(QUALITY, "scopes"),
            "needs permission `s` on Observation",
        ),
        case("a result by id", QUALITY, "GET /Observation/obs-1").deny(
            rule(QUALITY, "scopes"),
            "read needs permission `r` on Observation",
        ),
        q("the exception keeps the purpose check")
            .purpose("HRESCH")
            .deny(rule(QUALITY, "purposes_of_use"), "HRESCH is not allowed"),
        case("store a measure report", QUALITY, "POST /MeasureReport")
            .json(r#"{"resourceType":"MeasureReport","status":"complete"}"#)
            .allow(rule(QUALITY, "scope[3]")),
        case(
            "delete a measure report",
            QUALITY,
            "DELETE /MeasureReport/mr-1",
        )
        .deny(
            rule(QUALITY, "scopes"),
            "needs permission `d` on MeasureReport",
        ),
        case(
            "include patients",
            QUALITY,
            "GET /Encounter?_include=Encounter:subject:Patient",
        )
        .deny(rule(QUALITY, "scopes"), "_include reaches Patient"),
        case("an encounter by id", QUALITY, "GET /Encounter/enc-1").deny(
            rule(QUALITY, "scopes"),
            "read needs permission `r` on Encounter",
        ),
        case(
            "operations purpose",
            QUALITY,
            "GET /Condition?code=http://snomed.info/sct|91302008",
        )
        .purpose("HOPERAT")
        .allow(rule(QUALITY, "scope[1]")),
    ]);
}

#[test]
fn observe_mode_forwards_what_it_would_deny() {
    check(&[
        case(
            "conditions",
            RESEARCH,
            "GET /Condition?code=http://snomed.info/sct|91302008",
        )
        .allow(rule(RESEARCH, "scope[0]")),
        case("patients by name", RESEARCH, "GET /Patient?name=smith")
            .would_deny(rule(RESEARCH, "scopes"), "needs permission `s` on Patient"),
        case(
            "results without the category",
            RESEARCH,
            "GET /Observation?code=http://loinc.org|2524-7",
        )
        .would_deny(
            rule(RESEARCH, "scope[1]"),
            "requires the search to restrict",
        ),
        case("treatment purpose", RESEARCH, "GET /Condition?code=x")
            .purpose("TREAT")
            .would_deny(rule(RESEARCH, "purposes_of_use"), "TREAT is not allowed"),
        case("another upstream", RESEARCH, "GET /Condition?code=x")
            .upstream("billing-fhir")
            .would_deny(rule(RESEARCH, "upstreams"), "billing-fhir"),
        case("after it expired", RESEARCH, "GET /Condition?code=x")
            .at("2027-10-01T00:00:00Z")
            .deny(rule(RESEARCH, "expires"), "expired"),
    ]);
}

#[test]
fn revoked_suspended_and_unregistered_are_refused() {
    check(&[
        case(
            "revoked",
            "legacy-fax-export",
            "GET /DocumentReference?patient=pat-1",
        )
        .deny(
            rule("legacy-fax-export", "status"),
            "the integration is revoked",
        ),
        case(
            "revoked, even its capabilities",
            "legacy-fax-export",
            "GET /metadata",
        )
        .deny(rule("legacy-fax-export", "status"), "revoked"),
        case(
            "suspended",
            "imaging-worklist-sync",
            "GET /ServiceRequest?status=active",
        )
        .deny(
            rule("imaging-worklist-sync", "status"),
            "the integration is suspended",
        ),
        case("unregistered", HIE, "GET /metadata")
            .unregistered()
            .deny("default/unregistered", "matches no registered integration"),
        case("unregistered search", HIE, "GET /Patient?name=smith")
            .unregistered()
            .deny("default/unregistered", "no registered integration"),
    ]);
}
