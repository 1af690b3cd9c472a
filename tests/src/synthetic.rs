//! Synthetic patients for the demo's EHR: deterministic, obviously fake, each with an encounter,
//! a condition, laboratory and vital-sign observations, and a claim. One FHIR transaction Bundle
//! (references between entries by `urn:uuid:` full URLs, resolved by the server).

use serde_json::{Value, json};

/// The identifier system of the demo hospital's medical record numbers.
pub const MRN_SYSTEM: &str = "http://stmarys.example.org/fhir/mrn";
pub const LAB_CATEGORY_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/observation-category";

const FAMILIES: [&str; 8] = [
    "Okonkwo",
    "Lindqvist",
    "Haddad",
    "Moreau",
    "Tanaka",
    "Silva",
    "Novak",
    "Byrne",
];
const GIVENS: [&str; 8] = [
    "Ada", "Bram", "Chiara", "Dmitri", "Elif", "Farah", "Gus", "Hana",
];
/// (SNOMED CT code, display) of each patient's problem.
const CONDITIONS: [(&str, &str); 4] = [
    ("44054006", "Diabetes mellitus type 2"),
    ("38341003", "Hypertensive disorder"),
    ("195967001", "Asthma"),
    ("91302008", "Sepsis"),
];
/// (LOINC code, display, unit, base value) of the lab results.
const LABS: [(&str, &str, &str, f64); 3] = [
    (
        "2345-7",
        "Glucose [Mass/volume] in Serum or Plasma",
        "mg/dL",
        92.0,
    ),
    (
        "4548-4",
        "Hemoglobin A1c/Hemoglobin.total in Blood",
        "%",
        5.6,
    ),
    (
        "2524-7",
        "Lactate [Moles/volume] in Serum or Plasma",
        "mmol/L",
        1.1,
    ),
];

/// A patient as the workloads know them: by medical record number.
#[derive(Clone, Debug)]
pub struct SyntheticPatient {
    pub mrn: String,
    pub name: String,
}

/// `count` patients (at most 8 distinct names, then repeated with new MRNs).
#[must_use]
pub fn patients(count: usize) -> Vec<SyntheticPatient> {
    (0..count)
        .map(|i| SyntheticPatient {
            mrn: format!("MRN{:06}", 100_001 + i),
            name: format!(
                "{} {}",
                GIVENS[i % GIVENS.len()],
                FAMILIES[(i * 3) % FAMILIES.len()]
            ),
        })
        .collect()
}

/// The transaction Bundle that creates `patients` and their records.
#[must_use]
pub fn transaction(patients: &[SyntheticPatient]) -> Value {
    let mut entries = Vec::new();
    for (i, p) in patients.iter().enumerate() {
        let patient = format!("urn:uuid:00000000-0000-4000-8000-{:012}", i * 10 + 1);
        let encounter = format!("urn:uuid:00000000-0000-4000-8000-{:012}", i * 10 + 2);
        let (given, family) = p.name.split_once(' ').unwrap_or((&p.name, ""));
        let day = 1 + i % 27;
        entries.push(post(
            &patient,
            &json!({
                "resourceType": "Patient",
                "identifier": [{"system": MRN_SYSTEM, "value": p.mrn}],
                "name": [{"family": family, "given": [given]}],
                "gender": if i % 2 == 0 { "female" } else { "male" },
                "birthDate": format!("19{}-0{}-1{}", 50 + (i * 7) % 50, 1 + i % 9, i % 10),
            }),
        ));
        entries.push(post(
            &encounter,
            &json!({
                "resourceType": "Encounter",
                "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                          "code": if i % 3 == 0 { "IMP" } else { "AMB" }},
                "subject": {"reference": patient},
                "period": {"start": format!("2026-10-{day:02}T08:00:00Z"),
                           "end": format!("2026-10-{day:02}T11:30:00Z")},
            }),
        ));
        let (code, display) = CONDITIONS[i % CONDITIONS.len()];
        entries.push(post(
            &format!("urn:uuid:00000000-0000-4000-8000-{:012}", i * 10 + 3),
            &json!({
                "resourceType": "Condition",
                "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]},
                "subject": {"reference": patient},
                "encounter": {"reference": encounter},
            }),
        ));
        for (k, lab) in LABS.iter().enumerate() {
            entries.push(post(
                &format!("urn:uuid:00000000-0000-4000-8000-{:012}", i * 10 + 4 + k),
                &lab_observation(&patient, lab, i, day),
            ));
        }
        entries.push(post(
            &format!("urn:uuid:00000000-0000-4000-8000-{:012}", i * 10 + 8),
            &vital_sign(&patient, i, day),
        ));
        entries.push(post(
            &format!("urn:uuid:00000000-0000-4000-8000-{:012}", i * 10 + 9),
            &claim(&patient, &encounter, i, day),
        ));
    }
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

/// A laboratory Observation for `patient` (a reference or `urn:uuid:`).
#[must_use]
pub fn lab_observation(
    patient: &str,
    (code, display, unit, base): &(&str, &str, &str, f64),
    i: usize,
    day: usize,
) -> Value {
    #[expect(
        clippy::cast_precision_loss,
        reason = "small synthetic indices, exact in f64"
    )]
    let value = ((base * (1.0 + (i % 5) as f64 * 0.07)) * 10.0).round() / 10.0;
    json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": LAB_CATEGORY_SYSTEM, "code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
        "subject": {"reference": patient},
        "effectiveDateTime": format!("2026-10-{day:02}T09:15:00Z"),
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
    })
}

fn vital_sign(patient: &str, i: usize, day: usize) -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": LAB_CATEGORY_SYSTEM, "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
        "subject": {"reference": patient},
        "effectiveDateTime": format!("2026-10-{day:02}T08:10:00Z"),
        "valueQuantity": {"value": 60 + (i * 7) % 40, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
    })
}

fn claim(patient: &str, encounter: &str, i: usize, day: usize) -> Value {
    json!({
        "resourceType": "Claim",
        "status": "active",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "institutional"}]},
        "use": "claim",
        "patient": {"reference": patient},
        "created": format!("2026-10-{day:02}"),
        "provider": {"display": "St Mary's Hospital"},
        "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal"}]},
        "insurance": [{"sequence": 1, "focal": true, "coverage": {"display": "Acme Health PPO"}}],
        "item": [{
            "sequence": 1,
            "productOrService": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "99213"}]},
            "encounter": [{"reference": encounter}],
            "net": {"value": 120 + (i % 4) * 35, "currency": "USD"},
        }],
        "total": {"value": 120 + (i % 4) * 35, "currency": "USD"},
    })
}

fn post(full_url: &str, resource: &Value) -> Value {
    let kind = resource["resourceType"].as_str().unwrap_or_default();
    json!({
        "fullUrl": full_url,
        "resource": resource,
        "request": {"method": "POST", "url": kind},
    })
}

/// Counts of what a transaction of `n` patients creates, by resource type.
#[must_use]
pub fn expected_counts(n: usize) -> [(&'static str, usize); 5] {
    [
        ("Patient", n),
        ("Encounter", n),
        ("Condition", n),
        ("Observation", n * (LABS.len() + 1)),
        ("Claim", n),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_points_at_an_entry_of_the_bundle() {
        let bundle = transaction(&patients(5));
        let entries = bundle["entry"].as_array().expect("entries");
        let urls: Vec<&str> = entries
            .iter()
            .filter_map(|e| e["fullUrl"].as_str())
            .collect();
        assert_eq!(urls.len(), entries.len());
        let text = bundle.to_string();
        let refs = text.matches("\"reference\":\"urn:uuid:").count();
        assert!(refs > 0);
        for e in entries {
            for key in ["subject", "patient"] {
                if let Some(r) = e["resource"][key]["reference"].as_str() {
                    assert!(urls.contains(&r), "{r} is not in the bundle");
                }
            }
        }
        let total: usize = expected_counts(5).iter().map(|(_, n)| n).sum();
        assert_eq!(total, entries.len());
    }
}
