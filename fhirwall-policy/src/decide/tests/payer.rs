//! payer-claims-batch: payment-only reads, reached types, $export, purpose.

use super::*;

const PAYER: &str = "payer-claims-batch";

fn rule(part: &str) -> String {
    format!("integration/{PAYER}/{part}")
}

#[test]
fn claims_reads_and_their_limits() {
    let c = |what, request: &str| case(what, PAYER, request.to_owned());
    check(&[
        c(
            "search claims",
            "GET /Claim?patient=pat-1&created=ge2026-11-01",
        )
        .allow(rule("scope[0]")),
        c("read a claim", "GET /Claim/cl-1").allow(rule("scope[0]")),
        c(
            "search explanations of benefit",
            "GET /ExplanationOfBenefit?claim=Claim/cl-1",
        )
        .allow(rule("scope[2]")),
        c("history of a coverage", "GET /Coverage/cov-1/_history").allow(rule("scope[1]")),
        c(
            "stated payment purpose",
            "GET /Coverage?beneficiary=Patient/pat-1",
        )
        .purpose("HPAYMT")
        .allow(rule("scope[1]")),
        c("treatment purpose", "GET /Claim/cl-1")
            .purpose("TREAT")
            .deny(
                rule("purposes_of_use"),
                "purpose of use TREAT is not allowed",
            ),
        c("marketing purpose", "GET /Claim/cl-1")
            .purpose("HMARKT")
            .deny(rule("purposes_of_use"), "(allowed: HPAYMT)"),
        c(
            "include the patient",
            "GET /Claim?_include=Claim:patient:Patient",
        )
        .deny(rule("scopes"), "_include reaches Patient"),
        c(
            "include the coverage",
            "GET /Claim?_include=Claim:insurance:Coverage",
        )
        .allow(rule("scope[0]")),
        c(
            "chain into the patient",
            "GET /ExplanationOfBenefit?patient:Patient.name=smith",
        )
        .deny(rule("scopes"), "chained parameter reaches Patient"),
        c(
            "revinclude claim responses",
            "GET /Claim?_revinclude=ClaimResponse:request",
        )
        .deny(rule("scopes"), "_revinclude reaches ClaimResponse"),
        c(
            "_has on encounters",
            "GET /Claim?_has:Encounter:account:status=finished",
        )
        .deny(rule("scopes"), "_has reaches Encounter"),
        c("create a claim", "POST /Claim")
            .json(r#"{"resourceType":"Claim","patient":{"reference":"Patient/pat-1"}}"#)
            .deny(rule("scopes"), "create needs permission `c` on Claim"),
        c("clinical data", "GET /Condition?patient=pat-1")
            .deny(rule("scopes"), "needs permission `s` on Condition"),
        c(
            "POST _search with an include in the body",
            "POST /Claim/_search",
        )
        .form("patient=pat-1&_include=Claim:patient:Patient")
        .deny(rule("scopes"), "_include reaches Patient"),
        c("any credential (none listed)", "GET /Claim/cl-1")
            .header("Authorization", "Bearer whatever")
            .allow(rule("scope[0]")),
    ]);
}

#[test]
fn bulk_export_needs_system_reads_of_every_type() {
    let c = |what, request: &str| case(what, PAYER, request.to_owned());
    check(&[
        c(
            "export its own types",
            "GET /$export?_type=Claim,Coverage,ExplanationOfBenefit",
        )
        .allow(rule("operations[0]")),
        c("export everything", "GET /$export")
            .deny(rule("scopes"), "$export without _type exports every type"),
        c("export patients too", "GET /$export?_type=Claim,Patient")
            .deny(rule("scopes"), "needs a system/ read scope for Patient"),
        c("patient-level export", "GET /Patient/$export?_type=Claim").deny(
            rule("operations"),
            "operation $export is not on the integration's allowlist",
        ),
        c("group export", "GET /Group/g-1/$export?_type=Claim").deny(rule("operations"), "$export"),
        c("batch of reads", "POST /")
            .json(bundle(
                "batch",
                &[
                    ("GET", "Claim?patient=pat-1", None),
                    ("GET", "Coverage/cov-1", None),
                ],
            ))
            .allow(rule("scopes")),
        c("batch with a patient read", "POST /")
            .json(bundle(
                "batch",
                &[
                    ("GET", "Claim?patient=pat-1", None),
                    ("GET", "Patient/pat-1", None),
                ],
            ))
            .deny(
                rule("scopes"),
                "Bundle entry 1: read needs permission `r` on Patient",
            ),
    ]);
}
