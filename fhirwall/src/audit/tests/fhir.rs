//! The FHIR output validates with a real FHIR library: Python `fhir.resources` 6.1.0, the last
//! release whose default models are R4 (4.0.1), installed into a venv under `target/`.

use serde_json::Value;

use super::support::{seed_fixed, temp_store};
use crate::audit::{Filter, bundle, open_read_only, query};

// One validator for the store-level and the end-to-end tests (it lives in the tests crate).
#[path = "../../../../tests/src/fhir.rs"]
mod validator;
use validator::{python_or_skip, validate};

type Breakage = fn(&mut Value);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_of_balp_audit_events_validates_as_r4() {
    let Some(py) = python_or_skip("bundle_of_balp_audit_events_validates_as_r4") else {
        return;
    };
    let (_dir, path) = temp_store();
    seed_fixed(&path, 30).await;
    let rows = query(&open_read_only(&path).unwrap(), &Filter::default()).unwrap();
    let doc = bundle(&rows);
    // 30 requests, one of them under break-glass, which adds a Security Alert.
    assert_eq!(
        validate(&py, &doc).unwrap_or_else(|e| panic!("invalid FHIR: {e}")),
        31
    );

    let events: Vec<&Value> = doc["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .collect();
    let alert = events
        .iter()
        .find(|e| e["type"]["code"] == "110113")
        .expect("a break-glass Security Alert");
    assert_eq!(alert["subtype"][0]["code"], "110127");
    let read = events
        .iter()
        .find(|e| e["entity"][0]["what"]["reference"] == "Patient/p2")
        .unwrap();
    assert_eq!(read["entity"][0]["role"]["code"], "1");
    assert_eq!(read["entity"][0]["type"]["code"], "1");
    assert_eq!(read["type"]["code"], "rest");
    assert_eq!(read["subtype"][0]["code"], "search-type");
    let denied = events
        .iter()
        .find(|e| e["id"].as_str().is_some_and(|id| id.starts_with("fw-3-")))
        .unwrap();
    assert_eq!(denied["outcome"], "4");

    // The validator does reject what is not valid R4 (it checks structure, types and
    // cardinality; it does not check code values against value sets).
    let breakages: [(&str, Breakage); 3] = [
        ("a bad instant", |e| {
            e["recorded"] = Value::from("yesterday");
        }),
        ("a missing required element", |e| {
            drop(e.as_object_mut().unwrap().remove("source"));
        }),
        ("an unknown element", |e| {
            e["verdict"] = Value::from("allow");
        }),
    ];
    for (what, breakage) in breakages {
        let mut broken = doc.clone();
        breakage(&mut broken["entry"][0]["resource"]);
        assert!(
            validate(&py, &broken).is_err(),
            "the validator must reject {what}"
        );
    }
}
