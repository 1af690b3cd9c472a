use std::path::PathBuf;

use super::*;

const NOW: &str = "2026-11-28T12:00:00Z";

fn args(integration: &str, request: &str) -> ExplainArgs {
    ExplainArgs {
        dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies"),
        integration: integration.into(),
        request: request.into(),
        body: None,
        headers: Vec::new(),
        purpose: None,
        upstream: None,
        response: None,
        at: None,
        json: true,
    }
}

fn report(args: &ExplainArgs) -> Report {
    let now: jiff::Timestamp = NOW.parse().expect("timestamp");
    let policy = Policy::load_at(&args.dir, now).expect("example policies");
    explain(&policy, args, now).expect("explained")
}

#[test]
fn json_carries_the_contract_keys() {
    let mut a = args(
        "patient-portal-backend",
        "GET Patient/pat-1001/Observation?_id=obs-1",
    );
    a.headers.push("X-Portal-Patient: pat-1001".into());
    let r = report(&a);
    assert!(r.forwards);
    for key in [
        "decision",
        "interaction",
        "resourceType",
        "id",
        "compartment",
        "reason",
        "rule",
        "entries",
    ] {
        assert!(r.json.get(key).is_some(), "missing {key}: {}", r.json);
    }
    assert_eq!(r.json["decision"], "allow");
    assert_eq!(r.json["interaction"], "search-type");
    assert_eq!(r.json["resourceType"], "Observation");
    assert_eq!(r.json["compartment"], "Patient/pat-1001");
    assert_eq!(
        r.json["rule"],
        "integration/patient-portal-backend/scope[1]"
    );
    assert_eq!(r.json["purposeOfUse"], "PATRQT");
    assert!(r.json["reason"].is_null());
}

#[test]
fn denies_name_rule_reason_and_status() {
    let mut a = args("payer-claims-batch", "GET /Claim/cl-1");
    a.purpose = Some("TREAT".into());
    let r = report(&a);
    assert!(!r.forwards);
    assert_eq!(r.json["decision"], "deny");
    assert_eq!(r.json["id"], "cl-1");
    assert_eq!(
        r.json["rule"],
        "integration/payer-claims-batch/purposes_of_use"
    );
    assert_eq!(r.json["httpStatus"], 403);
    assert!(
        r.text
            .starts_with("DENY  rule integration/payer-claims-batch/purposes_of_use\n")
    );

    let r = report(&args("payer-claims-batch", "GET /claim/cl-1"));
    assert_eq!(r.json["decision"], "deny");
    assert_eq!(r.json["rule"], "default/unclassifiable");
    assert_eq!(r.json["httpStatus"], 404);
    assert!(r.json["interaction"].is_null());
}

#[test]
fn observe_mode_forwards_and_says_would_deny() {
    let r = report(&args("research-cohort-extract", "GET /Patient?name=x"));
    assert!(r.forwards);
    assert_eq!(r.json["decision"], "allow");
    assert_eq!(r.json["wouldDeny"], true);
    assert_eq!(r.json["outcome"], "would-deny");
}

#[test]
fn bundles_list_their_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let body = dir.path().join("batch.json");
    std::fs::write(
        &body,
        r#"{"resourceType":"Bundle","type":"batch","entry":[
            {"request":{"method":"GET","url":"Claim?patient=pat-1"}},
            {"request":{"method":"GET","url":"Patient/pat-1"}}]}"#,
    )
    .expect("write");
    let mut a = args("payer-claims-batch", "POST /");
    a.body = Some(body);
    let r = report(&a);
    assert_eq!(r.json["decision"], "deny");
    assert_eq!(r.json["interaction"], "batch");
    let entries = r.json["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["decision"], "allow");
    assert_eq!(entries[1]["decision"], "deny");
    assert_eq!(entries[1]["resourceType"], "Patient");
    assert!(
        r.json["reason"]
            .as_str()
            .is_some_and(|s| s.starts_with("Bundle entry 1:")),
        "{}",
        r.json
    );
}

#[test]
fn wrong_arguments_are_errors() {
    let now: jiff::Timestamp = NOW.parse().expect("timestamp");
    let a = args("nope", "GET /metadata");
    let policy = Policy::load_at(&a.dir, now).expect("example policies");
    assert!(explain(&policy, &a, now).is_err(), "unknown integration");
    let mut a = args("payer-claims-batch", "GET /metadata");
    a.headers.push("no colon".into());
    assert!(explain(&policy, &a, now).is_err(), "malformed header");
    assert!(
        explain(&policy, &args("payer-claims-batch", "GET"), now).is_err(),
        "no target"
    );
    let mut a = args("payer-claims-batch", "GET /metadata");
    a.upstream = Some("elsewhere".into());
    assert!(explain(&policy, &a, now).is_err(), "unknown upstream");
}

#[test]
fn it_says_which_headers_stay_behind_and_how_the_response_is_checked() {
    let mut a = args("patient-portal-backend", "GET Observation/obs-1");
    a.headers.push("X-Portal-Patient: pat-1001".into());
    a.headers.push("Accept-Encoding: gzip".into());
    a.headers.push("X-Forwarded-Host: elsewhere".into());
    let r = report(&a);
    assert_eq!(r.json["decision"], "allow");
    assert_eq!(r.json["responseCheck"], "filter");
    assert_eq!(
        r.json["strippedHeaders"],
        json!(["accept-encoding", "x-forwarded-host"])
    );
    assert!(
        r.text
            .contains("not forwarded: accept-encoding, x-forwarded-host")
    );
    let mut claims = args("payer-claims-batch", "GET Claim?status=active");
    claims.headers.push("X-Purpose-Of-Use: HPAYMT".into());
    assert_eq!(
        report(&claims).json["responseCheck"],
        Value::Null,
        "the request alone bounds the data: one type, no patient constraint"
    );
}

#[test]
fn a_response_file_shows_what_the_check_would_withhold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("response.json");
    // As servers write a searchset: `resourceType` first, so that it can be filtered entry by
    // entry (a Bundle whose type comes later is judged whole).
    let bundle = r#"{"resourceType": "Bundle", "type": "searchset", "total": 2, "entry": [
        {"resource": {"resourceType": "Observation", "id": "o1",
                      "subject": {"reference": "Patient/pat-1001"}}, "search": {"mode": "match"}},
        {"resource": {"resourceType": "Observation", "id": "o2",
                      "subject": {"reference": "Patient/pat-2002"}}, "search": {"mode": "match"}}]}"#;
    std::fs::write(&file, bundle).expect("write");
    let mut a = args("patient-portal-backend", "GET Observation?code=2345-7");
    a.headers.push("X-Portal-Patient: pat-1001".into());
    a.response = Some(file);
    let r = report(&a);
    let response = &r.json["response"];
    assert_eq!(response["mode"], "filter");
    assert_eq!(response["released"], true);
    assert_eq!(response["withheld"], json!({"Observation": 1}));
    assert_eq!(response["violation"], "patient");
    assert!(
        !r.json.to_string().contains("pat-2002"),
        "no patient ids: {}",
        r.json
    );
    assert!(
        r.text.contains("--response: released, withheld"),
        "{}",
        r.text
    );
    // The same kind of answer to an integration whose check denies.
    let mut hie = args("hie-document-query", "GET DocumentReference?type=x");
    hie.purpose = Some("TREAT".into());
    let docs = json!({"resourceType": "Bundle", "type": "searchset", "entry": [
        {"resource": {"resourceType": "DocumentReference", "id": "d1",
                      "subject": {"reference": "Patient/p1"}}},
        {"resource": {"resourceType": "DocumentReference", "id": "d2",
                      "subject": {"reference": "Patient/p2"}}}]});
    let file = dir.path().join("docs.json");
    std::fs::write(&file, docs.to_string()).expect("write");
    hie.response = Some(file);
    let r = report(&hie);
    assert_eq!(r.json["response"]["released"], false);
    assert!(r.text.contains("--response: refused"), "{}", r.text);
}
