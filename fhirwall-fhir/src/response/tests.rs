//! Response checks on bodies shaped as the FHIR specification's examples show them, fed in
//! every chunking: what is released, what is withheld, and what the report says.

use bytes::BytesMut;
use serde_json::{Value, json};

use super::*;
use crate::TypeSet;

const A: &str = "pat-a";
const B: &str = "pat-b";

fn rules(mode: CheckMode, readable: &[ResourceType], patients: PatientRule) -> ResponseRules {
    ResponseRules {
        mode,
        readable: readable.iter().copied().collect(),
        patients,
        exempt: TypeSet::EMPTY,
        max_held: 1 << 20,
    }
}

fn only_a() -> PatientRule {
    PatientRule::Only(vec![A.to_owned()])
}

/// Outcome of one check: the bytes released (`Err` when refused) and the report.
type Checked = (Result<Vec<u8>, Refusal>, Report);

/// Runs a check over `body` in chunks of `size`.
fn run(rules: &ResponseRules, format: BodyFormat, body: &[u8], size: usize) -> Checked {
    let mut check = ResponseCheck::new(rules.clone(), format);
    let mut out = BytesMut::new();
    let mut relayed = Vec::new();
    for chunk in body.chunks(size.max(1)) {
        if let Err(refusal) = check.feed(chunk, &mut out) {
            return (Err(refusal), check.report());
        }
        relayed.extend_from_slice(chunk);
    }
    if let Err(refusal) = check.finish(&mut out) {
        return (Err(refusal), check.report());
    }
    // In Record mode the caller relays the body itself.
    let released = if rules.mode == CheckMode::Record {
        relayed
    } else {
        out.to_vec()
    };
    (Ok(released), check.report())
}

fn text(c: &Checked) -> Result<String, Refusal> {
    c.0.clone()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// The same check in several chunkings, which must all agree.
fn check(rules: &ResponseRules, format: BodyFormat, body: &Value) -> Checked {
    let bytes = serde_json::to_vec_pretty(body).expect("serializable");
    let whole = run(rules, format, &bytes, bytes.len());
    for size in [1, 2, 3, 7, 64, 1000] {
        let piecewise = run(rules, format, &bytes, size);
        assert_eq!(
            text(&piecewise),
            text(&whole),
            "chunks of {size} released something else"
        );
        assert_eq!(
            piecewise.1, whole.1,
            "chunks of {size} reported something else"
        );
    }
    whole
}

fn released(checked: &Checked) -> Value {
    let bytes = checked.0.as_ref().expect("released");
    serde_json::from_slice(bytes).expect("the released body is JSON")
}

fn observation(id: &str, patient: &str) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"reference": format!("Patient/{patient}")}})
}

fn patient(id: &str) -> Value {
    json!({"resourceType": "Patient", "id": id, "name": [{"family": "Doe"}]})
}

fn searchset(entries: &[(Value, &str)], total: u64) -> Value {
    let entry: Vec<Value> = entries
        .iter()
        .map(|(resource, mode)| {
            json!({"fullUrl": format!("https://ehr/{}/{}", resource["resourceType"].as_str().unwrap_or(""), resource["id"].as_str().unwrap_or("")),
                   "resource": resource, "search": {"mode": mode}})
        })
        .collect();
    json!({"resourceType": "Bundle", "id": "s1", "type": "searchset", "total": total,
        "link": [{"relation": "self", "url": "https://ehr/Observation?code=2345-7"},
                 {"relation": "next", "url": "https://ehr/Observation?code=2345-7&_cursor=abc"}],
        "entry": entry})
}

#[test]
fn record_mode_notes_whose_data_an_unconstrained_search_carried() {
    let body = searchset(
        &[
            (observation("o1", A), "match"),
            (observation("o2", B), "match"),
        ],
        2,
    );
    let r = rules(CheckMode::Record, &[], PatientRule::Any);
    let checked = check(&r, BodyFormat::Json, &body);
    assert_eq!(released(&checked), body, "record mode changes nothing");
    assert_eq!(checked.1.patients, [A, B]);
    assert_eq!(checked.1.resources, 3);
    assert_eq!(checked.1.withheld_total(), 0);
    assert_eq!(
        checked.1.links,
        [
            (
                "self".to_owned(),
                "https://ehr/Observation?code=2345-7".to_owned()
            ),
            (
                "next".to_owned(),
                "https://ehr/Observation?code=2345-7&_cursor=abc".to_owned()
            )
        ]
    );
}

#[test]
fn deny_releases_a_read_of_the_bound_patients_data_and_refuses_another() {
    let r = rules(CheckMode::Deny, &[ResourceType::Observation], only_a());
    let mine = check(&r, BodyFormat::Json, &observation("o1", A));
    assert_eq!(released(&mine), observation("o1", A));
    assert_eq!(mine.1.patients, [A]);
    let theirs = check(&r, BodyFormat::Json, &observation("o2", B));
    let refusal = theirs.0.expect_err("refused");
    assert_eq!(refusal.violation, Violation::OtherPatient);
    assert!(!refusal.released, "nothing went out");
    assert!(
        theirs.1.patients.is_empty(),
        "nothing released, nobody's data carried"
    );
}

#[test]
fn filter_leaves_out_other_patients_and_unreadable_types_and_says_so() {
    let condition = json!({"resourceType": "Condition", "id": "c1",
        "subject": {"reference": format!("Patient/{A}")}});
    let body = searchset(
        &[
            (observation("o1", A), "match"),
            (observation("o2", B), "match"),
            (condition, "match"),
            (patient(A), "include"),
            (patient(B), "include"),
        ],
        10,
    );
    let r = rules(
        CheckMode::Filter,
        &[ResourceType::Observation, ResourceType::Patient],
        only_a(),
    );
    let checked = check(&r, BodyFormat::Json, &body);
    let out = released(&checked);
    let kept: Vec<(&str, &str)> = out["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                e["resource"]["resourceType"].as_str().unwrap_or(""),
                e["resource"]["id"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        kept,
        [
            ("Observation", "o1"),
            ("Patient", A),
            ("OperationOutcome", "-")
        ]
    );
    assert_eq!(out["total"], 8, "two matches withheld");
    assert_eq!(out["link"], body["link"]);
    assert_eq!(out["id"], "s1");
    let outcome = &out["entry"][2];
    assert_eq!(outcome["search"]["mode"], "outcome");
    assert_eq!(outcome["resource"]["issue"][0]["code"], "suppressed");
    let report = &checked.1;
    assert_eq!(report.patients, [A], "B's data never went out");
    assert_eq!(report.withheld_total(), 3);
    assert_eq!(
        report.withheld.get(&Some(ResourceType::Observation)),
        Some(&1)
    );
    assert_eq!(
        report.withheld.get(&Some(ResourceType::Condition)),
        Some(&1)
    );
    assert_eq!(report.withheld_matches, 2);
    let text = String::from_utf8_lossy(checked.0.as_ref().expect("released"));
    assert!(!text.contains(B), "no trace of B: {text}");
}

#[test]
fn a_batch_response_keeps_its_positions() {
    let body = json!({"resourceType": "Bundle", "type": "batch-response", "entry": [
        {"resource": observation("o1", A), "response": {"status": "200 OK"}},
        {"resource": observation("o2", B), "response": {"status": "200 OK"}},
        {"resource": {"resourceType": "Bundle", "type": "searchset", "entry": [
            {"resource": observation("o3", B)}]}, "response": {"status": "200 OK"}},
        {"response": {"status": "201 Created", "location": "Observation/o4/_history/1"}}
    ]});
    let r = rules(CheckMode::Filter, &[ResourceType::Observation], only_a());
    let checked = check(&r, BodyFormat::Json, &body);
    let out = released(&checked);
    let entries = out["entry"].as_array().expect("entries");
    assert_eq!(entries.len(), 4, "one entry per request entry");
    assert_eq!(entries[0]["resource"]["id"], "o1");
    for withheld in [&entries[1], &entries[2]] {
        assert_eq!(
            withheld["response"]["status"], "403 Forbidden",
            "{withheld}"
        );
        assert_eq!(
            withheld["response"]["outcome"]["issue"][0]["code"],
            "forbidden"
        );
    }
    assert_eq!(entries[3]["response"]["status"], "201 Created");
}

#[test]
fn deny_refuses_the_whole_bundle_for_one_entry() {
    let body = searchset(
        &[(observation("o1", A), "match"), (patient(B), "include")],
        1,
    );
    let r = rules(
        CheckMode::Deny,
        &[ResourceType::Observation, ResourceType::Patient],
        only_a(),
    );
    let refusal = check(&r, BodyFormat::Json, &body).0.expect_err("refused");
    assert_eq!(refusal.violation, Violation::OtherPatient);
    assert!(!refusal.released);
}

#[test]
fn a_reference_hidden_in_contained_data_or_an_escaped_key_is_still_seen() {
    let contained = json!({"resourceType": "Observation", "id": "o1",
        "contained": [{"resourceType": "Patient", "id": "p1",
                       "link": [{"other": {"reference": format!("Patient/{B}")}}]}],
        "subject": {"reference": format!("Patient/{A}")}});
    let r = rules(
        CheckMode::Deny,
        &[ResourceType::Observation, ResourceType::Patient],
        only_a(),
    );
    assert!(check(&r, BodyFormat::Json, &contained).0.is_err());
    let escaped = format!(
        r#"{{"resourceType":"Observation","id":"o1","subject":{{"reference":"Patient/{A}"}},
            "focus":[{{"re\u0066erence":"Patient\/{B}"}}]}}"#
    );
    let refusal = run(&r, BodyFormat::Json, escaped.as_bytes(), 5)
        .0
        .expect_err("refused");
    assert_eq!(refusal.violation, Violation::OtherPatient);
}

#[test]
fn types_outside_the_compartment_need_an_exemption_under_a_patient_rule() {
    let medication = json!({"resourceType": "Medication", "id": "m1"});
    let mut r = rules(CheckMode::Deny, &[ResourceType::Medication], only_a());
    let refusal = check(&r, BodyFormat::Json, &medication)
        .0
        .expect_err("refused");
    assert_eq!(
        refusal.violation,
        Violation::NotTied(ResourceType::Medication)
    );
    r.exempt.insert(ResourceType::Medication);
    assert!(check(&r, BodyFormat::Json, &medication).0.is_ok());
    let orphan = json!({"resourceType": "Observation", "id": "o9", "status": "final"});
    r.readable.insert(ResourceType::Observation);
    let refusal = check(&r, BodyFormat::Json, &orphan).0.expect_err("refused");
    assert_eq!(
        refusal.violation,
        Violation::NotTied(ResourceType::Observation)
    );
}

#[test]
fn one_patient_binds_to_the_first_the_response_shows() {
    let r = rules(
        CheckMode::Filter,
        &[ResourceType::Observation],
        PatientRule::One,
    );
    let body = searchset(
        &[
            (observation("o1", B), "match"),
            (observation("o2", A), "match"),
            (observation("o3", B), "match"),
        ],
        3,
    );
    let checked = check(&r, BodyFormat::Json, &body);
    let out = released(&checked);
    let ids: Vec<&str> = out["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["resource"]["id"].as_str())
        .collect();
    assert_eq!(ids, ["o1", "o3"]);
    assert_eq!(checked.1.patients, [B]);
}

/// Answers the end-to-end test cannot get from its server, in the shapes the specification
/// gives them: a chained search a server ignored (every patient's results, as a plain
/// searchset; hfs implements chains), and `_contained=true` matches, contained resources
/// returned as entries (<http://hl7.org/fhir/R4/search.html#contained>; the test data holds
/// none), here one of another patient's.
#[test]
fn ignored_chains_and_contained_matches_are_judged_on_what_comes_back() {
    let bound = |mode| rules(mode, &[ResourceType::Observation], only_a());
    let chained = searchset(
        &[
            (observation("o1", A), "match"),
            (observation("o2", B), "match"),
        ],
        2,
    );
    let contained = json!({"resourceType": "Bundle", "type": "searchset", "total": 2, "entry": [
        {"fullUrl": "https://ehr/DiagnosticReport/r1#o3",
         "resource": observation("o3", A), "search": {"mode": "match"}},
        {"fullUrl": "https://ehr/DiagnosticReport/r2#o4",
         "resource": observation("o4", B), "search": {"mode": "match"}}]});
    for (form, body, kept) in [("chain", &chained, "o1"), ("_contained", &contained, "o3")] {
        let denied = check(&bound(CheckMode::Deny), BodyFormat::Json, body);
        assert_eq!(
            denied.0.expect_err(form).violation,
            Violation::OtherPatient,
            "{form}"
        );
        let filtered = released(&check(&bound(CheckMode::Filter), BodyFormat::Json, body));
        let ids: Vec<&str> = filtered["entry"]
            .as_array()
            .expect("entries")
            .iter()
            .filter_map(|e| e["resource"]["id"].as_str())
            .collect();
        assert_eq!(ids, [kept], "{form}: {filtered}");
        assert_eq!(filtered["total"], 1, "{form}");
    }
}

#[test]
fn documents_a_client_could_read_differently_are_refused() {
    let any = rules(
        CheckMode::Filter,
        &[ResourceType::Observation],
        PatientRule::Any,
    );
    let bound = rules(CheckMode::Filter, &[ResourceType::Observation], only_a());
    let cases: &[(&str, &ResponseRules, &str)] = &[
        ("no resourceType", &any, r#"{"id":"x","status":"final"}"#),
        (
            "resourceType twice",
            &any,
            r#"{"resourceType":"Observation","resourceType":"Patient","id":"pat-b"}"#,
        ),
        (
            "id twice",
            &any,
            r#"{"resourceType":"Observation","id":"a","id":"b"}"#,
        ),
        (
            "a resource inside an element",
            &any,
            r#"{"resourceType":"Observation","extension":[{"url":"x","valueX":{"resourceType":"Patient","id":"pat-b"}}]}"#,
        ),
        (
            "unknown type",
            &any,
            r#"{"resourceType":"Patent","id":"x"}"#,
        ),
        (
            "entry resource without a type",
            &any,
            r#"{"resourceType":"Bundle","type":"searchset","entry":[{"resource":{"id":"x"}}]}"#,
        ),
        (
            "trailing garbage",
            &any,
            r#"{"resourceType":"Observation"}]"#,
        ),
        (
            "two documents",
            &any,
            r#"{"resourceType":"Observation"}{"x":1}"#,
        ),
        ("truncated", &any, r#"{"resourceType":"Observation","id":"#),
        ("not an object", &any, r#"["resourceType"]"#),
        (
            "type after withheld entries",
            &bound,
            r#"{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Observation","id":"o","subject":{"reference":"Patient/pat-b"}}}],"type":"batch-response"}"#,
        ),
    ];
    for (what, rules, body) in cases {
        for size in [1, 4, body.len()] {
            let refused = run(rules, BodyFormat::Json, body.as_bytes(), size).0;
            let refusal = refused.expect_err(what);
            assert!(
                matches!(refusal.violation, Violation::Malformed(_)),
                "{what}: {:?}",
                refusal.violation
            );
        }
    }
}

/// Values the checker reads must be UTF-8 (a client decoding leniently could read another
/// id); bytes that are not, in a key or a value it skips, cannot turn into a name it reads.
#[test]
fn values_read_must_be_utf8() {
    let any = rules(
        CheckMode::Deny,
        &[ResourceType::Observation],
        PatientRule::Any,
    );
    let bad_reference =
        b"{\"resourceType\":\"Observation\",\"subject\":{\"reference\":\"Patient/pat-\xffa\"}}";
    let bad_type = b"{\"resourceType\":\"Observ\xc3ation\"}";
    for body in [&bad_reference[..], &bad_type[..]] {
        for size in [1, 5, body.len()] {
            let refusal = run(&any, BodyFormat::Json, body, size)
                .0
                .expect_err("not UTF-8");
            assert_eq!(
                refusal.violation,
                Violation::Malformed(judge::Malformed::Json),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
    let skipped =
        b"{\"resourceType\":\"Observation\",\"note\":[{\"text\":\"caf\xe9\"}],\"x\xff\":1}";
    assert!(run(&any, BodyFormat::Json, skipped, 3).0.is_ok());
}

#[test]
fn the_cap_bounds_what_is_held() {
    let entries: Vec<(Value, &str)> = (0..50)
        .map(|i| (observation(&format!("o{i}"), A), "match"))
        .collect();
    let body = searchset(&entries, 50);
    let bytes = serde_json::to_vec(&body).expect("json");
    let mut r = rules(CheckMode::Deny, &[ResourceType::Observation], only_a());
    r.max_held = 2048;
    let refusal = run(&r, BodyFormat::Json, &bytes, 512)
        .0
        .expect_err("over the cap under a patient rule");
    assert_eq!(refusal.violation, Violation::TooLarge);
    assert!(!refusal.released);
    // Without a patient rule the response streams past the cap, checked as it goes.
    r.patients = PatientRule::Any;
    let streamed = run(&r, BodyFormat::Json, &bytes, 512);
    assert_eq!(streamed.0.expect("released"), bytes);
    let mut bad = body.clone();
    bad["entry"][40]["resource"]["resourceType"] = json!("Condition");
    let bytes = serde_json::to_vec(&bad).expect("json");
    let refusal = run(&r, BodyFormat::Json, &bytes, 512)
        .0
        .expect_err("the late violation cuts the response");
    assert_eq!(refusal.violation, Violation::Type(ResourceType::Condition));
    assert!(refusal.released, "the caller can only cut the response off");
    // Filter holds one entry at a time: an entry over the cap is withheld, the rest flows.
    let mut r = rules(CheckMode::Filter, &[ResourceType::Observation], only_a());
    r.max_held = 600;
    let mut big = observation("big", A);
    big["note"] = json!([{"text": "x".repeat(2000)}]);
    let body = searchset(
        &[
            (observation("o1", A), "match"),
            (big, "match"),
            (observation("o2", A), "match"),
        ],
        3,
    );
    let checked = check(&r, BodyFormat::Json, &body);
    let out = released(&checked);
    let ids: Vec<&str> = out["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["resource"]["id"].as_str())
        .collect();
    assert_eq!(ids, ["o1", "o2"]);
    assert_eq!(checked.1.violation, Some(Violation::TooLarge));
}

#[test]
fn ndjson_lines_are_judged_one_by_one() {
    let lines = [
        observation("o1", A),
        observation("o2", B),
        observation("o3", A),
    ];
    let body: Vec<u8> = lines
        .iter()
        .flat_map(|l| {
            let mut line = serde_json::to_vec(l).expect("json");
            line.push(b'\n');
            line
        })
        .collect();
    let r = rules(CheckMode::Filter, &[ResourceType::Observation], only_a());
    for size in [1, 9, body.len()] {
        let (out, report) = run(&r, BodyFormat::Ndjson, &body, size);
        let out = out.expect("released");
        let ids: Vec<String> = out
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_slice::<Value>(l).expect("line")["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        assert_eq!(ids, ["o1", "o3"], "chunks of {size}");
        assert_eq!(report.withheld_total(), 1);
    }
    let deny = rules(CheckMode::Deny, &[ResourceType::Observation], only_a());
    assert!(run(&deny, BodyFormat::Ndjson, &body, 7).0.is_err());
    assert!(
        run(&deny, BodyFormat::Ndjson, b"", 7).0.is_ok(),
        "an empty file"
    );
}

#[test]
fn an_export_manifest_may_only_name_readable_types_and_its_files_are_reported() {
    let manifest = json!({"transactionTime": "2026-12-01T00:00:00Z",
        "request": "https://ehr/$export?_type=Observation", "requiresAccessToken": true,
        "output": [{"type": "Observation", "url": "https://ehr/export-file/j1/1", "count": 2}],
        "error": [{"type": "OperationOutcome", "url": "https://ehr/export-file/j1/e"}]});
    let r = rules(
        CheckMode::Deny,
        &[ResourceType::Observation],
        PatientRule::Any,
    );
    let checked = check(&r, BodyFormat::ExportManifest, &manifest);
    assert_eq!(released(&checked), manifest);
    assert_eq!(
        checked.1.links,
        [
            (
                "output".to_owned(),
                "https://ehr/export-file/j1/1".to_owned()
            ),
            (
                "error".to_owned(),
                "https://ehr/export-file/j1/e".to_owned()
            )
        ]
    );
    let mut wider = manifest.clone();
    if let Some(output) = wider["output"].as_array_mut() {
        output.push(json!({"type": "Patient", "url": "https://ehr/export-file/j1/2"}));
    }
    let refusal = check(&r, BodyFormat::ExportManifest, &wider)
        .0
        .expect_err("Patient files");
    assert_eq!(
        refusal.violation,
        Violation::ExportType(ResourceType::Patient)
    );
}

#[test]
fn record_mode_never_refuses() {
    let r = rules(CheckMode::Record, &[], only_a());
    let (out, report) = run(&r, BodyFormat::Json, b"<html>not json</html>", 4);
    assert_eq!(out.expect("relayed"), b"<html>not json</html>");
    assert!(report.unread);
    assert!(report.patients.is_empty());
}

#[test]
fn a_clean_ndjson_file_passes_in_every_mode_and_chunking() {
    let line = |id: &str| {
        format!(
            r#"{{"resourceType":"Observation","id":"{id}","status":"final","code":{{"coding":[{{"system":"http://loinc.org","code":"2345-7"}}]}},"subject":{{"reference":"Patient/{A}"}},"meta":{{"versionId":"1","lastUpdated":"2026-12-03T14:28:02.633Z"}}}}"#
        )
    };
    let body = format!("{}\n{}\n{}\n", line("o1"), line("o2"), line("o3"));
    for mode in [CheckMode::Deny, CheckMode::Filter, CheckMode::Record] {
        let r = rules(mode, &[ResourceType::Observation], PatientRule::Any);
        for size in 1..40 {
            let (out, report) = run(&r, BodyFormat::Ndjson, body.as_bytes(), size);
            let out = out.unwrap_or_else(|e| panic!("{mode:?} in chunks of {size}: {e:?}"));
            if mode != CheckMode::Record {
                assert_eq!(String::from_utf8_lossy(&out), body, "{mode:?} {size}");
            }
            assert_eq!(report.resources, 3);
        }
    }
}

#[test]
fn resources_whose_keys_come_in_any_order_are_judged_alike() {
    // Servers that store JSON as received (hfs' export files) keep its key order.
    let late = format!(
        r#"{{"code":{{"text":"x"}},"id":"o1","performer":[{{"reference":"Patient/{B}"}}],"resourceType":"Observation","subject":{{"reference":"Patient/{A}"}}}}"#
    );
    let r = rules(CheckMode::Deny, &[ResourceType::Observation], only_a());
    let refusal = run(&r, BodyFormat::Json, late.as_bytes(), 3)
        .0
        .expect_err("B's reference counts wherever resourceType is");
    assert_eq!(refusal.violation, Violation::OtherPatient);
    let mine = late.replace(&format!("Patient/{B}"), &format!("Patient/{A}"));
    for size in [1, 5, mine.len()] {
        let (out, report) = run(&r, BodyFormat::Ndjson, format!("{mine}\n").as_bytes(), size);
        assert!(out.is_ok(), "chunks of {size}");
        assert_eq!(report.patients, [A]);
    }
    // A Bundle whose resourceType is not its first member is judged whole in filter mode:
    // a withheld entry then refuses the response rather than slip through unfiltered.
    let bundle = format!(
        r#"{{"type":"searchset","entry":[{{"resource":{{"resourceType":"Observation","id":"o2","subject":{{"reference":"Patient/{B}"}}}}}}],"resourceType":"Bundle"}}"#
    );
    let filter = rules(CheckMode::Filter, &[ResourceType::Observation], only_a());
    for size in [1, 7, bundle.len()] {
        let refused = run(&filter, BodyFormat::Json, bundle.as_bytes(), size).0;
        assert_eq!(
            refused.expect_err("refused whole").violation,
            Violation::OtherPatient
        );
    }
    let clean = bundle.replace(&format!("Patient/{B}"), &format!("Patient/{A}"));
    assert_eq!(
        run(&filter, BodyFormat::Json, clean.as_bytes(), 4)
            .0
            .expect("released whole"),
        clean.as_bytes()
    );
}

/// A Group of `n` members referencing `patient(i)`, as one JSON body.
fn group_of(n: usize, patient: impl Fn(usize) -> String) -> Vec<u8> {
    let members: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"entity":{{"reference":"Patient/{}"}}}}"#, patient(i)))
        .collect();
    format!(
        r#"{{"resourceType":"Group","id":"g","type":"person","actual":true,"member":[{}]}}"#,
        members.join(",")
    )
    .into_bytes()
}

/// A server answer is hostile input too: one resource naming 200,000 patients must be judged
/// in time and memory that do not grow with the square of its references (this took minutes
/// when every reference was compared with every other).
#[test]
fn a_resource_naming_more_patients_than_any_rule_allows_is_judged_without_holding_them_all() {
    let body = group_of(200_000, |i| format!("p{i}"));
    let mut record = rules(CheckMode::Record, &[ResourceType::Group], PatientRule::Any);
    record.max_held = 16 << 20;
    let (released, report) = run(&record, BodyFormat::Json, &body, 16 * 1024);
    assert!(released.is_ok());
    assert!(report.patients_truncated);
    assert_eq!(report.patients.len(), MAX_PATIENTS);
    assert!(report.patients.iter().all(|p| p.starts_with('p')));

    let deny = ResponseRules {
        mode: CheckMode::Deny,
        patients: PatientRule::Only(vec!["p0".into()]),
        ..record
    };
    let (refused, _) = run(&deny, BodyFormat::Json, &body, 16 * 1024);
    assert_eq!(
        refused.expect_err("refused").violation,
        Violation::OtherPatient
    );
}

/// The bound counts distinct patients: many references to the one allowed patient pass.
#[test]
fn many_references_to_the_allowed_patient_pass() {
    let body = group_of(50_000, |_| A.to_owned());
    let mut deny = rules(CheckMode::Deny, &[ResourceType::Group], only_a());
    deny.max_held = 16 << 20;
    let (released, report) = run(&deny, BodyFormat::Json, &body, 16 * 1024);
    assert_eq!(released.expect("released"), body);
    assert_eq!(report.patients, vec![A.to_owned()]);
    assert!(!report.patients_truncated);
}

/// Links are kept for binding only up to a bound: a manifest naming more files than that
/// leaves the rest unbound (following them is refused), and the check's memory stays bounded.
#[test]
fn links_are_kept_up_to_a_bound() {
    let url = format!("https://ehr.example/fhir/files/{}", "x".repeat(200));
    let files: Vec<String> = (0..20_000)
        .map(|i| format!(r#"{{"type":"Observation","url":"{url}/{i}"}}"#))
        .collect();
    let body = format!(
        r#"{{"transactionTime":"2026-11-30T10:15:00Z","request":"https://ehr.example/fhir/$export","requiresAccessToken":true,"output":[{}],"error":[]}}"#,
        files.join(",")
    );
    let mut r = rules(
        CheckMode::Deny,
        &[ResourceType::Observation],
        PatientRule::Any,
    );
    r.max_held = 16 << 20;
    let (released, report) = run(&r, BodyFormat::ExportManifest, body.as_bytes(), 16 * 1024);
    assert!(released.is_ok());
    let kept: usize = report.links.iter().map(|(r, u)| r.len() + u.len()).sum();
    assert!(kept <= walk::MAX_LINK_BYTES);
    assert!(report.links.len() > 1000 && report.links.len() < 20_000);
    assert_eq!(report.links[0], ("output".to_owned(), format!("{url}/0")));
}
