//! FHIR validation with a real FHIR library: Python `fhir.resources` 6.1.0, the last release
//! whose default models are R4 (4.0.1), installed once into a venv under `target/fhir-venv`.
//!
//! Self-contained (std and serde_json only): the agent's own audit tests include this file with
//! `#[path]`, so the store-level and the end-to-end validations share one validator.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

/// Parses a Bundle and each entry as an `AuditEvent`; prints the number of entries.
const VALIDATE: &str = r#"
import json, sys
import fhir.resources
from fhir.resources.auditevent import AuditEvent
from fhir.resources.bundle import Bundle
assert fhir.resources.__fhir_version__ == "4.0.1", fhir.resources.__fhir_version__
raw = json.load(open(sys.argv[1]))
bundle = Bundle.parse_obj(raw)
for entry in raw.get("entry", []):
    AuditEvent.parse_obj(entry["resource"])
print(len(bundle.entry or []))
"#;

/// A Python with `fhir.resources` R4, or why there is none. Without one a test skips with the
/// reason on a laptop and fails when `CI` is set: see [`python_or_skip`].
pub fn python() -> Result<PathBuf, String> {
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

/// [`python`], or `None` after printing why the test skips. Panics when `CI` is set: a skipped
/// validation must never count as a pass there.
#[must_use]
pub fn python_or_skip(test: &str) -> Option<PathBuf> {
    match python() {
        Ok(py) => Some(py),
        Err(why) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: CI is set but fhir.resources is unavailable: {why}"
            );
            eprintln!("SKIPPED {test}: {why}");
            None
        }
    }
}

/// Validates `doc` as an R4 Bundle of `AuditEvents`; `Ok` holds the number of entries, `Err`
/// the validator's complaint.
pub fn validate(py: &Path, doc: &Value) -> Result<usize, String> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = std::env::temp_dir().join(format!("fhir-bundle-{}-{n}.json", std::process::id()));
    let bytes = serde_json::to_vec(doc).map_err(|e| e.to_string())?;
    std::fs::write(&file, bytes).map_err(|e| format!("{}: {e}", file.display()))?;
    let out = Command::new(py)
        .args(["-c", VALIDATE])
        .arg(&file)
        .output()
        .map_err(|e| format!("running {}: {e}", py.display()));
    let _ = std::fs::remove_file(&file);
    let out = out?;
    if out.status.success() {
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|e| format!("validator printed no count: {e}"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
