//! The FHIR output validates with a real FHIR library: Python `fhir.resources` 6.1.0, the last
//! release whose default models are R4 (4.0.1), installed into a venv under `target/`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

use super::support::{seed_fixed, temp_store};
use crate::audit::{Filter, bundle, open_read_only, query};

type Breakage = fn(&mut Value);

const VALIDATE: &str = r#"
import json, sys
import fhir.resources
from fhir.resources.auditevent import AuditEvent
from fhir.resources.bundle import Bundle
assert fhir.resources.__fhir_version__ == "4.0.1", fhir.resources.__fhir_version__
raw = json.load(open(sys.argv[1]))
bundle = Bundle.parse_obj(raw)
for entry in raw["entry"]:
    AuditEvent.parse_obj(entry["resource"])
print(len(bundle.entry))
"#;

/// A Python with `fhir.resources` R4, or why there is none.
fn python() -> Result<PathBuf, String> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fhir-venv");
    let py = venv.join("bin/python");
    let ready = |py: &Path| {
        Command::new(py)
            .args(["-c", "import fhir.resources.auditevent"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ready(&py) {
        return Ok(py);
    }
    let run = |cmd: &mut Command| -> Result<(), String> {
        let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr)))
        }
    };
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "-q",
        "fhir.resources==6.1.0",
        "pydantic>=1.10,<2",
    ]))?;
    if ready(&py) {
        Ok(py)
    } else {
        Err("fhir.resources installed but not importable".to_owned())
    }
}

fn validate(py: &Path, doc: &Value) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bundle.json");
    std::fs::write(&file, serde_json::to_vec(doc).unwrap()).unwrap();
    let out = Command::new(py)
        .args(["-c", VALIDATE])
        .arg(&file)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_of_balp_audit_events_validates_as_r4() {
    let py = match python() {
        Ok(py) => py,
        Err(why) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but fhir.resources is unavailable: {why}"
            );
            eprintln!("skipping FHIR validation: {why}");
            return;
        }
    };
    let (_dir, path) = temp_store();
    seed_fixed(&path, 30).await;
    let rows = query(&open_read_only(&path).unwrap(), &Filter::default()).unwrap();
    let doc = bundle(&rows);
    // 30 requests, one of them under break-glass, which adds a Security Alert.
    assert_eq!(
        validate(&py, &doc).unwrap_or_else(|e| panic!("invalid FHIR: {e}")),
        "31"
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
