//! Drives the patch readers (`fhirwall_fhir::patch::read`): byte 0 picks the format, the rest
//! is parsed as JSON the way the classifier does (depth-limited by serde_json's own limit here)
//! and read as a patch of an Observation. Any `Err` is fine; a panic is a bug, and so is a
//! reference in the effect that the document does not contain.

#![no_main]

use fhirwall_fhir::patch::{PatchFormat, read};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let format = match selector % 3 {
        0 => PatchFormat::JsonPatch,
        1 => PatchFormat::MergePatch,
        _ => PatchFormat::FhirPathPatch,
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(rest) else {
        return;
    };
    if let Ok(effect) = read(format, &value, "Observation") {
        let text = value.to_string();
        for reference in &effect.references {
            let quoted = serde_json::to_string(reference).unwrap_or_default();
            assert!(
                text.contains(&quoted),
                "a reference the document does not hold"
            );
        }
    }
});
