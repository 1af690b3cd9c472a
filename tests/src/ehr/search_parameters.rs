//! The FHIR R4 search parameters the demo and the client tests search with, as a Bundle of
//! SearchParameter resources in the file helios-hfs loads at start
//! (`<data dir>/search-parameters-r4.json`).
//!
//! The crates.io release of helios-hfs ships without the spec's search parameter bundle and
//! falls back to ten `Resource` parameters, under which every other search parameter is
//! ignored (`Observation?subject=...` would return every Observation). The definitions below
//! follow the R4 search parameter registry (<https://hl7.org/fhir/R4/searchparameter-registry.html>),
//! with plain FHIRPath expressions.

use serde_json::{Value, json};

/// (resource type, code, type, expression, reference targets)
type Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
);

const PATIENT: &[&str] = &["Patient"];

const PARAMETERS: &[Row] = &[
    ("Patient", "identifier", "token", "Patient.identifier", &[]),
    ("Patient", "family", "string", "Patient.name.family", &[]),
    ("Patient", "given", "string", "Patient.name.given", &[]),
    ("Patient", "name", "string", "Patient.name", &[]),
    ("Patient", "birthdate", "date", "Patient.birthDate", &[]),
    ("Patient", "gender", "token", "Patient.gender", &[]),
    (
        "Observation",
        "subject",
        "reference",
        "Observation.subject",
        PATIENT,
    ),
    (
        "Observation",
        "patient",
        "reference",
        "Observation.subject",
        PATIENT,
    ),
    (
        "Observation",
        "category",
        "token",
        "Observation.category",
        &[],
    ),
    ("Observation", "code", "token", "Observation.code", &[]),
    ("Observation", "status", "token", "Observation.status", &[]),
    ("Observation", "date", "date", "Observation.effective", &[]),
    (
        "Condition",
        "subject",
        "reference",
        "Condition.subject",
        PATIENT,
    ),
    (
        "Condition",
        "patient",
        "reference",
        "Condition.subject",
        PATIENT,
    ),
    ("Condition", "code", "token", "Condition.code", &[]),
    (
        "Condition",
        "clinical-status",
        "token",
        "Condition.clinicalStatus",
        &[],
    ),
    (
        "Encounter",
        "subject",
        "reference",
        "Encounter.subject",
        PATIENT,
    ),
    (
        "Encounter",
        "patient",
        "reference",
        "Encounter.subject",
        PATIENT,
    ),
    ("Encounter", "status", "token", "Encounter.status", &[]),
    ("Encounter", "class", "token", "Encounter.class", &[]),
    ("Encounter", "date", "date", "Encounter.period", &[]),
    ("Claim", "patient", "reference", "Claim.patient", PATIENT),
    ("Claim", "use", "token", "Claim.use", &[]),
    ("Claim", "status", "token", "Claim.status", &[]),
    ("Claim", "created", "date", "Claim.created", &[]),
    (
        "Coverage",
        "patient",
        "reference",
        "Coverage.beneficiary",
        PATIENT,
    ),
    (
        "ExplanationOfBenefit",
        "patient",
        "reference",
        "ExplanationOfBenefit.patient",
        PATIENT,
    ),
    (
        "DiagnosticReport",
        "subject",
        "reference",
        "DiagnosticReport.subject",
        PATIENT,
    ),
    (
        "DiagnosticReport",
        "patient",
        "reference",
        "DiagnosticReport.subject",
        PATIENT,
    ),
    (
        "DiagnosticReport",
        "category",
        "token",
        "DiagnosticReport.category",
        &[],
    ),
    (
        "ServiceRequest",
        "subject",
        "reference",
        "ServiceRequest.subject",
        PATIENT,
    ),
    (
        "ServiceRequest",
        "patient",
        "reference",
        "ServiceRequest.subject",
        PATIENT,
    ),
    // What the leak tests of the response check search and include by.
    (
        "Patient",
        "link",
        "reference",
        "Patient.link.other",
        PATIENT,
    ),
    (
        "Observation",
        "performer",
        "reference",
        "Observation.performer",
        &["Practitioner", "Patient", "Organization"],
    ),
    (
        "Observation",
        "has-member",
        "reference",
        "Observation.hasMember",
        &["Observation"],
    ),
    (
        "Group",
        "member",
        "reference",
        "Group.member.entity",
        PATIENT,
    ),
];

/// The Bundle helios-hfs reads as its spec search parameters.
#[must_use]
pub fn bundle() -> Value {
    let entries: Vec<Value> = PARAMETERS
        .iter()
        .map(|(base, code, kind, expression, targets)| {
            let mut resource = json!({
                "resourceType": "SearchParameter",
                "id": format!("{base}-{code}"),
                "url": format!("http://hl7.org/fhir/SearchParameter/{base}-{code}"),
                "name": code,
                "status": "active",
                "description": format!("{base} {code} (fhirwall demo registry)"),
                "code": code,
                "base": [base],
                "type": kind,
                "expression": expression,
            });
            if !targets.is_empty() {
                resource["target"] = json!(targets);
            }
            json!({ "resource": resource })
        })
        .collect();
    json!({
        "resourceType": "Bundle",
        "type": "collection",
        "entry": entries,
    })
}
