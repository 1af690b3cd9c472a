//! What the server will do is what was decided: the forms a server could read differently from
//! the request line (issue "positive request model"), decided for an integration bound to
//! patient A that may also write, and for the example payer.

use std::sync::OnceLock;

use fhirwall_fhir::{HttpRequest, classify};

use super::{Case, case, check};
use crate::{Decision, Policy, Subject, decide};

const WRITER: &str = "a-bound-writer";
const A: &str = "pat-a";

/// The example payer: `system/Claim.rs`, `Coverage`, `ExplanationOfBenefit`, `$export`.
const PAYER: &str = "payer-claims-batch";

fn payer(what: &'static str, request: impl Into<String>) -> Case {
    case(what, PAYER, request).header("X-Purpose-Of-Use", "HPAYMT")
}

#[test]
fn types_the_server_may_ignore_are_not_taken_as_restrictions() {
    check(&[
        payer("system history with _type", "GET /_history?_type=Claim").deny(
            format!("integration/{PAYER}/scopes"),
            "(it reaches every type)",
        ),
        payer("type history of claims", "GET /Claim/_history")
            .allow(format!("integration/{PAYER}/scope[0]")),
        payer("export of claims", "GET /$export?_type=Claim")
            .header("Prefer", "respond-async")
            .allow(format!("integration/{PAYER}/operations[0]")),
        payer(
            "export whose _typeFilter reaches patients",
            "GET /$export?_type=Claim&_typeFilter=Patient%3Fgender%3Dfemale",
        )
        .header("Prefer", "respond-async")
        .deny(
            format!("integration/{PAYER}/scopes"),
            "needs a system/ read scope for Patient",
        ),
        payer(
            "a foreign paging link",
            "GET /Claim?status=active&_cursor=abc",
        )
        .deny(
            format!("integration/{PAYER}/continuation"),
            "was not issued to this integration",
        ),
        payer(
            "a paging parameter of another server",
            "GET /?_getpages=x&_type=Claim",
        )
        .deny(
            format!("integration/{PAYER}/continuation"),
            "was not issued to this integration",
        ),
    ]);
}

/// An integration bound to the patient its caller names in `X-Patient`, with write scopes and
/// `$everything`.
fn writer_policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let yaml = "kind: Upstream\nname: ehr-fhir\naddresses: [\"127.0.0.2:8443\"]\n---\n\
            kind: Integration\nname: a-bound-writer\nowner: o\npurpose: p\ndata_classes: [x]\n\
            expected_resources: [Observation, Patient]\nstatus: active\n\
            workload:\n  uid: 4242\nupstreams: [ehr-fhir]\n\
            scopes: [system/Observation.cruds, system/Patient.rs]\n\
            operations: [\"Patient/[id]/$everything\"]\n\
            purposes_of_use: [TREAT]\ndefault_purpose: TREAT\n\
            patient:\n  mode: header\n  header: X-Patient\n";
        let path = std::path::Path::new("writer.yaml");
        let now = super::ts(super::NOW);
        Policy::from_sources([(path, yaml)], now).unwrap_or_else(|e| panic!("{e}"))
    })
}

/// The decision for one request of the writer, as `label rule: reason`.
fn writer(request: &str, content_type: &str, body: Option<&str>) -> String {
    let policy = writer_policy();
    let (method, target) = request.split_once(' ').expect("METHOD TARGET");
    let headers: Vec<(&str, &[u8])> = vec![
        ("Host", b"127.0.0.2:8443"),
        ("X-Patient", A.as_bytes()),
        ("Content-Type", content_type.as_bytes()),
    ];
    let http = HttpRequest {
        method,
        target,
        headers: &headers,
        body: body.map(str::as_bytes),
    };
    let fhir = match classify(&http, policy.classify_config("ehr-fhir").expect("config")) {
        Ok(fhir) => fhir,
        Err(e) => return format!("unclassifiable: {e}"),
    };
    let integration = policy.integration(WRITER);
    let now = super::ts(super::NOW);
    let subject = Subject::from_headers(policy, integration, "ehr-fhir", &headers, now);
    let decision = decide(policy, &subject, &fhir);
    let reason = decision
        .reason()
        .map(ToString::to_string)
        .unwrap_or_default();
    let label = if matches!(decision, Decision::Allow { .. }) {
        "allow"
    } else {
        decision.label()
    };
    format!("{label} {}: {reason}", decision.rule())
}

#[test]
#[expect(clippy::too_many_lines, reason = "one table of cases")]
fn writes_cannot_move_data_into_or_out_of_the_bound_patients_chart() {
    const PATCH: &str = "application/json-patch+json";
    const FHIR_JSON: &str = "application/fhir+json";
    const FHIR_XML: &str = "application/fhir+xml";
    let mine = format!("PATCH /Observation?patient={A}");
    let fhirpath = |path: &str, value: &str| {
        format!(
            r#"{{"resourceType":"Parameters","parameter":[{{"name":"operation","part":[
            {{"name":"type","valueCode":"replace"}},{{"name":"path","valueString":"{path}"}},
            {{"name":"value","valueReference":{{"reference":"{value}"}}}}]}}]}}"#
        )
    };
    let xml_create = |patient: &str| {
        format!(
            r#"<Observation xmlns="http://hl7.org/fhir"><status value="final"/><code><text value="x"/></code><subject><reference value="Patient/{patient}"/></subject></Observation>"#
        )
    };
    // (what, request, content type, body, expected start of the outcome)
    let table: Vec<(&str, String, &str, String, &str)> = vec![
        (
            "status of A's result",
            mine.clone(),
            PATCH,
            r#"[{"op":"replace","path":"/status","value":"amended"}]"#.into(),
            "allow",
        ),
        (
            "subject kept on A",
            mine.clone(),
            PATCH,
            format!(
                r#"[{{"op":"replace","path":"/subject","value":{{"reference":"Patient/{A}"}}}}]"#
            ),
            "allow",
        ),
        (
            "subject moved to B",
            mine.clone(),
            PATCH,
            r#"[{"op":"replace","path":"/subject","value":{"reference":"Patient/pat-b"}}]"#.into(),
            "deny integration/a-bound-writer/patient",
        ),
        (
            "subject reference string moved to B",
            mine.clone(),
            PATCH,
            r#"[{"op":"replace","path":"/subject/reference","value":"Patient/pat-b"}]"#.into(),
            "deny integration/a-bound-writer/patient",
        ),
        (
            "subject moved to a group",
            mine.clone(),
            PATCH,
            r#"[{"op":"replace","path":"/subject","value":{"reference":"Group/g1"}}]"#.into(),
            "deny integration/a-bound-writer/patient",
        ),
        (
            "subject removed",
            mine.clone(),
            PATCH,
            r#"[{"op":"remove","path":"/subject"}]"#.into(),
            "deny integration/a-bound-writer/patient",
        ),
        (
            "subject copied from a performer",
            mine.clone(),
            PATCH,
            r#"[{"op":"copy","from":"/performer/0","path":"/subject"}]"#.into(),
            "deny integration/a-bound-writer/patient",
        ),
        (
            "FHIRPath Patch to B",
            mine.clone(),
            FHIR_JSON,
            fhirpath("Observation.subject", "Patient/pat-b"),
            "deny integration/a-bound-writer/patient",
        ),
        (
            "merge patch to B",
            mine.clone(),
            "application/merge-patch+json",
            r#"{"subject":{"reference":"Patient/pat-b"}}"#.into(),
            "deny integration/a-bound-writer/patient",
        ),
        (
            "a patch by id",
            "PATCH /Observation/o-1".into(),
            PATCH,
            r#"[{"op":"replace","path":"/status","value":"amended"}]"#.into(),
            "deny integration/a-bound-writer/patient",
        ),
        (
            "an XML create for A",
            "POST /Observation".into(),
            FHIR_XML,
            xml_create(A),
            "allow",
        ),
        (
            "an XML create for B",
            "POST /Observation".into(),
            FHIR_XML,
            xml_create("pat-b"),
            "deny integration/a-bound-writer/patient",
        ),
        (
            "$everything asking for a type it may not read",
            format!("GET /Patient/{A}/$everything?_type=Observation,Encounter"),
            FHIR_JSON,
            String::new(),
            "deny integration/a-bound-writer/scopes: operation $everything asks for Encounter",
        ),
        (
            "a read by id, left to the response check",
            "GET /Observation/o-1".into(),
            FHIR_JSON,
            String::new(),
            "allow",
        ),
    ];
    let mut failures = Vec::new();
    for (what, request, content_type, body, want) in &table {
        let body = (!body.is_empty()).then_some(body.as_str());
        let got = writer(request, content_type, body);
        if !got.starts_with(want) {
            failures.push(format!("{what}: want {want}..., got {got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
