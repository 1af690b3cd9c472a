//! lab-results-interface: writes, granular searches, reached types, operations, credential,
//! purpose, and the path tricks the classifier refuses.

use super::*;

const LAB: &str = "lab-results-interface";
const VITALS: &str = "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs";
const DR_LAB: &str = "http://terminology.hl7.org/CodeSystem/v2-0074|LAB";

/// A request from the lab interface with its accepted credential.
fn lab(what: &'static str, request: impl Into<String>) -> Case {
    case(what, LAB, request).header("Authorization", LAB_AUTH)
}

fn rule(part: &str) -> String {
    format!("integration/{LAB}/{part}")
}

#[test]
#[expect(clippy::too_many_lines, reason = "one table of cases")]
fn writes_and_granular_searches() {
    let obs = resource("Observation", "pat-1");
    check(&[
        lab("create a result", "POST /Observation")
            .json(obs.clone())
            .allow(rule("scope[0]")),
        lab("correct a result", "PUT /Observation/obs-1")
            .json(resource("Observation", "pat-1").replacen('{', r#"{"id":"obs-1","#, 1))
            .allow(rule("scope[0]")),
        lab("patch a result", "PATCH /Observation/obs-1")
            .json_patch(r#"[{"op":"replace","path":"/status","value":"amended"}]"#)
            .allow(rule("scope[0]")),
        lab("delete a result", "DELETE /Observation/obs-1")
            .deny(rule("scopes"), "needs permission `d` on Observation"),
        lab(
            "search lab results",
            format!("GET /Observation?category={LAB_CATEGORY}&patient=pat-1"),
        )
        .allow(rule("scope[1]")),
        lab(
            "search without the category",
            "GET /Observation?patient=pat-1",
        )
        .deny(
            rule("scope[1]"),
            "requires the search to restrict category=",
        ),
        lab(
            "search another category",
            format!("GET /Observation?category={VITALS}"),
        )
        .deny(rule("scope[1]"), "which it does not"),
        lab(
            "OR-ed categories reach vitals",
            format!("GET /Observation?category={LAB_CATEGORY},{VITALS}"),
        )
        .deny(rule("scope[1]"), "which it does not"),
        lab(
            "negated category",
            format!("GET /Observation?category:not={LAB_CATEGORY}"),
        )
        .deny(rule("scope[1]"), "which it does not"),
        lab("code-only category", "GET /Observation?category=laboratory")
            .deny(rule("scope[1]"), "which it does not"),
        lab(
            "read by id under a granular scope",
            "GET /Observation/obs-1",
        )
        .deny(rule("scope[1]"), "cannot be checked without the response"),
        lab(
            "vread under a granular scope",
            "GET /Observation/obs-1/_history/2",
        )
        .deny(rule("scope[1]"), "search with _id"),
        lab(
            "read by _id search",
            format!("GET /Observation?_id=obs-1&category={LAB_CATEGORY}"),
        )
        .allow(rule("scope[1]")),
        lab("history of the type", "GET /Observation/_history")
            .deny(rule("scope[1]"), "cannot be checked"),
        lab(
            "POST _search with the category in the body",
            "POST /Observation/_search",
        )
        .form(format!("category={LAB_CATEGORY}&patient=pat-1"))
        .allow(rule("scope[1]")),
        lab("POST _search without it", "POST /Observation/_search")
            .form("patient=pat-1")
            .deny(rule("scope[1]"), "requires the search to restrict"),
        lab(
            "POST _search smuggling an include in the body",
            format!("POST /Observation/_search?category={LAB_CATEGORY}"),
        )
        .form("_include=Observation:subject:Patient")
        .deny(
            rule("scopes"),
            "_include reaches Patient, which needs permission `r`",
        ),
        lab("create a report", "POST /DiagnosticReport")
            .json(resource("DiagnosticReport", "pat-1"))
            .allow(rule("scope[2]")),
        lab(
            "search lab reports",
            format!("GET /DiagnosticReport?category={DR_LAB}"),
        )
        .allow(rule("scope[3]")),
        lab(
            "search reports of another category",
            "GET /DiagnosticReport?category=http://loinc.org|LP29684-5",
        )
        .deny(rule("scope[3]"), "which it does not"),
        lab(
            "conditional create without the category",
            "POST /Observation",
        )
        .json(obs.clone())
        .header("If-None-Exist", "identifier=urn:lis|123")
        .deny(rule("scope[1]"), "requires the search to restrict"),
        lab("conditional create with it", "POST /Observation")
            .json(obs.clone())
            .header(
                "If-None-Exist",
                format!("identifier=urn:lis|123&category={LAB_CATEGORY}"),
            )
            .allow(rule("scope[0]")),
        lab(
            "search orders",
            "GET /ServiceRequest?identifier=urn:lis:order|778",
        )
        .allow(rule("scope[4]")),
        lab("read an order", "GET /ServiceRequest/sr-1").allow(rule("scope[4]")),
        lab(
            "find the patient by MRN",
            "GET /Patient?identifier=urn:mrn|123",
        )
        .allow(rule("scope[5]")),
        lab("read a patient", "GET /Patient/pat-1")
            .deny(rule("scopes"), "read needs permission `r` on Patient"),
        lab("search conditions", "GET /Condition?patient=pat-1")
            .deny(rule("scopes"), "needs permission `s` on Condition"),
    ]);
}

#[test]
fn reached_types_need_their_own_scopes() {
    let q = format!("GET /Observation?category={LAB_CATEGORY}");
    check(&[
        lab(
            "chain through a typed reference",
            format!("{q}&subject:Patient.identifier=urn:mrn|1"),
        )
        .allow(rule("scope[1]")),
        lab(
            "chain without a type",
            format!("{q}&subject.identifier=urn:mrn|1"),
        )
        .deny(rule("scopes"), "chained parameter without a type qualifier"),
        lab(
            "chain into Practitioner",
            format!("{q}&performer:Practitioner.name=smith"),
        )
        .deny(rule("scopes"), "a chained parameter reaches Practitioner"),
        lab(
            "include without a target type reaches the subject's types",
            format!("{q}&_include=Observation:subject"),
        )
        .deny(rule("scopes"), "_include reaches Patient"),
        lab(
            "include without a target type of an unknown parameter",
            format!("{q}&_include=Observation:based-on"),
        )
        .deny(rule("scopes"), "without a target type"),
        lab("include of everything", format!("{q}&_include=*"))
            .deny(rule("scopes"), "can reach any type"),
        lab(
            "include of Patient",
            format!("{q}&_include=Observation:subject:Patient"),
        )
        .deny(rule("scopes"), "_include reaches Patient"),
        lab(
            "include of an order",
            format!("{q}&_include=Observation:based-on:ServiceRequest"),
        )
        .allow(rule("scope[1]")),
        lab(
            "revinclude of Provenance",
            format!("{q}&_revinclude=Provenance:target"),
        )
        .deny(rule("scopes"), "_revinclude reaches Provenance"),
        lab(
            "revinclude of its own reports",
            format!("{q}&_revinclude=DiagnosticReport:result"),
        )
        .deny(
            rule("scopes"),
            "_revinclude reaches DiagnosticReport, which needs permission `r`",
        ),
        lab(
            "_has on a granular type",
            "GET /Patient?_has:Observation:patient:code=2524-7",
        )
        .deny(rule("scopes"), "_has reaches Observation"),
        lab(
            "_has on orders",
            "GET /Patient?_has:ServiceRequest:subject:status=active",
        )
        .allow(rule("scope[5]")),
        lab(
            "include of patients from orders",
            "GET /ServiceRequest?_include=ServiceRequest:subject:Patient",
        )
        .deny(rule("scopes"), "_include reaches Patient"),
        lab(
            "_filter hides its reach",
            format!("{q}&_filter=subject.name%20eq%20x"),
        )
        .deny(rule("scopes"), "_filter is refused"),
        lab("named query", format!("{q}&_query=everything"))
            .deny(rule("scopes"), "_query is refused"),
        lab(
            "system search with _type",
            format!("GET /?_type=Observation&category={LAB_CATEGORY}"),
        )
        .allow(rule("scopes")),
        lab(
            "system search of every type",
            "GET /?_lastUpdated=ge2026-11-01",
        )
        .deny(rule("scopes"), "(it reaches every type)"),
        lab("system history", "GET /_history").deny(rule("scopes"), "history-system"),
    ]);
}

#[test]
fn bundles_pass_only_if_every_entry_does() {
    let obs = Some(resource("Observation", "pat-1"));
    let report = Some(resource("DiagnosticReport", "pat-1"));
    check(&[
        lab("transaction of a report and its result", "POST /")
            .json(bundle(
                "transaction",
                &[
                    ("POST", "Observation", obs.clone()),
                    ("POST", "DiagnosticReport", report.clone()),
                ],
            ))
            .allow(rule("scopes")),
        lab("transaction with a forbidden delete", "POST /")
            .json(bundle(
                "transaction",
                &[
                    ("POST", "Observation", obs.clone()),
                    ("POST", "DiagnosticReport", report.clone()),
                    ("DELETE", "Patient/pat-1", None),
                ],
            ))
            .deny(
                rule("scopes"),
                "Bundle entry 2: delete needs permission `d` on Patient",
            ),
        lab("batch with a forbidden search", "POST /")
            .json(bundle(
                "batch",
                &[
                    ("GET", "ServiceRequest?identifier=urn:lis:order|1", None),
                    ("GET", "Condition?patient=pat-1", None),
                ],
            ))
            .deny(rule("scopes"), "Bundle entry 1:"),
        lab("batch with an ungranular search", "POST /")
            .json(bundle(
                "batch",
                &[("GET", "Observation?patient=pat-1", None)],
            ))
            .deny(rule("scope[1]"), "Bundle entry 0: scope[1]"),
        lab("batch entry with an include", "POST /")
            .json(bundle(
                "batch",
                &[(
                    "GET",
                    "ServiceRequest?_include=ServiceRequest:subject:Patient",
                    None,
                )],
            ))
            .deny(rule("scopes"), "Bundle entry 0: _include reaches Patient"),
        lab("empty batch", "POST /")
            .json(bundle("batch", &[]))
            .allow(rule("scopes")),
        lab("capabilities inside a batch", "POST /")
            .json(bundle("batch", &[("GET", "metadata", None)]))
            .allow(rule("scopes")),
    ]);
}

#[test]
fn identity_purpose_and_operations() {
    check(&[
        lab("capabilities", "GET /metadata").allow("default/capabilities"),
        lab("validate a result", "POST /Observation/$validate")
            .json(r#"{"resourceType":"Parameters"}"#)
            .allow(rule("operations[0]")),
        lab("validate a patient", "POST /Patient/$validate")
            .json(r#"{"resourceType":"Parameters"}"#)
            .deny(
                rule("operations"),
                "operation $validate is not on the integration's allowlist",
            ),
        lab("everything of a patient", "GET /Patient/pat-1/$everything")
            .deny(rule("operations"), "$everything"),
        lab("bulk export", "GET /$export?_type=Observation").deny(rule("operations"), "$export"),
        lab("payment purpose", "GET /ServiceRequest/sr-1")
            .purpose("HPAYMT")
            .deny(
                rule("purposes_of_use"),
                "purpose of use HPAYMT is not allowed",
            ),
        lab("lower-case purpose", "GET /ServiceRequest/sr-1")
            .purpose("treat")
            .deny(rule("purposes_of_use"), "not one v3 PurposeOfUse code"),
        lab("two purposes", "GET /ServiceRequest/sr-1")
            .purpose("TREAT")
            .purpose("TREAT")
            .deny(rule("purposes_of_use"), "not one v3 PurposeOfUse code"),
        lab("purpose with its system", "GET /ServiceRequest/sr-1")
            .purpose("http://terminology.hl7.org/CodeSystem/v3-ActReason|TREAT")
            .allow(rule("scope[4]")),
        case("no credential", LAB, "GET /ServiceRequest/sr-1")
            .deny(rule("credentials"), "carries no Authorization"),
        case("another credential", LAB, "GET /ServiceRequest/sr-1")
            .header("Authorization", "Bearer copied-from-elsewhere")
            .deny(rule("credentials"), "not one the integration accepts"),
        lab("two credentials", "GET /ServiceRequest/sr-1")
            .header("authorization", "Bearer other")
            .deny(rule("credentials"), "more than one Authorization"),
        lab("another upstream", "GET /ServiceRequest/sr-1")
            .upstream("billing-fhir")
            .deny(rule("upstreams"), "may not call upstream `billing-fhir`"),
    ]);
}

#[test]
fn path_tricks_never_reach_policy() {
    let q = format!("?category={LAB_CATEGORY}");
    check(&[
        lab("encoded slash", format!("GET /Observation%2F..%2FPatient{q}"))
            .unclassifiable("percent-encoded delimiter"),
        lab("encoded type name", format!("GET /%4Fbservation{q}")).allow(rule("scope[1]")),
        lab("wrong-case type", format!("GET /observation{q}"))
            .unclassifiable("type names are case-sensitive"),
        lab("wrong-case type in _type", format!("GET /?_type=observation&category={LAB_CATEGORY}"))
            .unclassifiable("unknown resource type"),
        lab("wrong-case include target", format!("GET /Observation{q}&_include=Observation:subject:patient"))
            .unclassifiable("unknown resource type"),
        lab("dot segment", format!("GET /Patient/../Observation{q}")).unclassifiable("dot segment"),
        lab("repeated slash", format!("GET //Observation{q}")).unclassifiable("empty segment"),
        lab("matrix parameter", format!("GET /Observation;jsessionid=1{q}"))
            .unclassifiable("matrix parameters"),
        lab("encoded dot segment", format!("GET /Patient/%2e%2e/Observation{q}"))
            .unclassifiable("percent-encoded"),
        lab("trailing slash", format!("GET /Observation/{q}")).unclassifiable("trailing slash"),
        lab("lower-case method", "get /ServiceRequest/sr-1").unclassifiable("HTTP method"),
        lab("double-encoded category", "GET /Observation?category=http://terminology.hl7.org/CodeSystem/observation-category%257Claboratory")
            .deny(rule("scope[1]"), "which it does not"),
    ]);
}
