"""What the Python client scenarios share: the JSON-line report and the lab result they post."""

import json


def emit(action, **fields):
    print(json.dumps({"action": action, **fields}), flush=True)


def lab(patient_id, code, value):
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "valueQuantity": {"value": value, "unit": "mg/dL"},
    }
