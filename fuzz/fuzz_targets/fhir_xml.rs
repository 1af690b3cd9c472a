//! Drives the FHIR XML reader (`fhirwall_fhir::xml::to_json`) with arbitrary bodies. Any `Err` is
//! fine; a panic, a stack overflow, a timeout or running out of memory is a bug, and so is a
//! result nested deeper than the limit it was given.

#![no_main]

use fhirwall_fhir::xml::{XmlLimits, to_json};
use libfuzzer_sys::fuzz_target;

const LIMITS: XmlLimits = XmlLimits {
    max_depth: 32,
    max_elements: 4096,
};

fn depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = to_json(data, &LIMITS) {
        assert!(
            depth(&value) <= LIMITS.max_depth + 1,
            "deeper than the limit"
        );
        assert!(
            value
                .get("resourceType")
                .is_some_and(serde_json::Value::is_string)
        );
    }
});
