//! patient-portal-backend: patient/ scopes and the patient header constraint.

use super::*;

const PORTAL: &str = "patient-portal-backend";
const ME: &str = "pat-1001";

fn rule(part: &str) -> String {
    format!("integration/{PORTAL}/{part}")
}

/// A request for the signed-in patient `ME`.
fn portal(what: &'static str, request: impl Into<String>) -> Case {
    case(what, PORTAL, request).header("X-Portal-Patient", ME)
}

#[test]
fn confined_to_the_signed_in_patient() {
    check(&[
        portal("own record", format!("GET /Patient/{ME}")).allow(rule("scope[0]")),
        portal("another patient's record", "GET /Patient/pat-2002")
            .deny(rule("patient"), "a patient that the patient header X-Portal-Patient does not list"),
        case("no patient header", PORTAL, format!("GET /Patient/{ME}"))
            .deny(rule("patient"), "X-Portal-Patient is missing"),
        portal("two patient headers", format!("GET /Patient/{ME}"))
            .header("x-portal-patient", "pat-2002")
            .deny(rule("patient"), "unreadable or repeated"),
        case("a family proxy lists two patients", PORTAL, "GET /Observation?patient=pat-3003")
            .header("X-Portal-Patient", format!("{ME}, pat-3003"))
            .allow(rule("scope[1]")),
        portal("own results by compartment", format!("GET /Patient/{ME}/Observation"))
            .allow(rule("scope[1]")),
        portal("another patient's compartment", "GET /Patient/pat-2002/Observation")
            .deny(rule("patient"), "does not list"),
        portal("own results by patient=", format!("GET /Observation?patient={ME}"))
            .allow(rule("scope[1]")),
        portal("own results by subject reference", format!("GET /Observation?subject=Patient/{ME}"))
            .allow(rule("scope[1]")),
        portal("own results by typed subject", format!("GET /Observation?subject:Patient={ME}"))
            .allow(rule("scope[1]")),
        portal("two patients OR-ed", format!("GET /Observation?patient={ME},pat-2002"))
            .deny(rule("patient"), "does not list"),
        // Reads the request cannot tie to the patient are allowed: their responses are checked.
        portal("a search of everyone", "GET /Observation?code=2345-7").allow(rule("scope[1]")),
        portal("bare subject id (could be a Group)", format!("GET /Observation?subject={ME}"))
            .allow(rule("scope[1]")),
        portal("read a result by id", "GET /Observation/obs-1").allow(rule("scope[1]")),
        portal("read by _id inside the compartment", format!("GET /Patient/{ME}/Observation?_id=obs-1"))
            .allow(rule("scope[1]")),
        portal("revinclude from the compartment", format!("GET /Patient/{ME}/Observation?_revinclude=Observation:has-member"))
            .allow(rule("scope[1]")),
        portal("iterate include", format!("GET /Patient/{ME}/MedicationRequest?_include:iterate=MedicationRequest:medication:Medication"))
            .allow(rule("scope[3]")),
        portal("include the performer", format!("GET /Patient/{ME}/Observation?_include=Observation:performer:Practitioner"))
            .allow(rule("scope[1]")),
        portal("revinclude of provenance", format!("GET /Patient/{ME}/Observation?_revinclude=Provenance:target"))
            .deny(rule("scopes"), "_revinclude reaches Provenance, which needs permission `r`"),
        // Without a target type, an include needs read on every type the parameter references.
        portal("include of the patient without a target type", format!("GET /Patient/{ME}/Observation?_include=Observation:patient"))
            .allow(rule("scope[1]")),
        portal("include of the subject without a target type", format!("GET /Patient/{ME}/Observation?_include=Observation:subject"))
            .deny(rule("scopes"), "_include reaches Group, which needs permission `r`"),
        portal("include of a medication without a target type", format!("GET /Patient/{ME}/MedicationRequest?_include=MedicationRequest:medication"))
            .allow(rule("scope[3]")),
        portal("include of an unknown parameter without a target type", format!("GET /Patient/{ME}/Observation?_include=Observation:derived-from"))
            .deny(rule("scopes"), "can reach any type"),
        portal("include of specimens", format!("GET /Patient/{ME}/Observation?_include=Observation:specimen:Specimen"))
            .deny(rule("scopes"), "_include reaches Specimen, which needs permission `r`"),
        portal("chain to the patient's name", format!("GET /Patient/{ME}/Observation?subject:Patient.name=x"))
            .deny(rule("scopes"), "chained parameter reaches Patient, which needs permission `s`"),
        portal("search patients by name", "GET /Patient?name=smith")
            .deny(rule("scopes"), "search-type needs permission `s` on Patient"),
        portal("patient history of the type", "GET /Observation/_history")
            .allow(rule("scope[1]")),
        portal("a patient's writes stay confined", "PUT /Observation/obs-1")
            .json(resource("Observation", ME).replacen('{', r#"{"id":"obs-1","#, 1))
            .deny(rule("scopes"), "needs permission `u` on Observation"),
        portal("own documents", format!("GET /DocumentReference?patient={ME}")).allow(rule("scope[6]")),
        portal("encounters", format!("GET /Encounter?patient={ME}"))
            .deny(rule("scopes"), "needs permission `s` on Encounter"),
        portal("write a result", "POST /Observation")
            .json(resource("Observation", ME))
            .deny(rule("scopes"), "create needs permission `c` on Observation"),
    ]);
}

#[test]
fn exemptions_operations_bundles_and_purpose() {
    check(&[
        portal("a medication definition", "GET /Medication/med-1").allow(rule("scope[7]")),
        portal("a clinician's name", "GET /Practitioner/pr-1").allow(rule("scope[8]")),
        portal("search medications", "GET /Medication?code=1049502")
            .deny(rule("scopes"), "needs permission `s` on Medication"),
        portal("everything of the patient", format!("GET /Patient/{ME}/$everything"))
            .allow(rule("operations[0]")),
        portal("everything of another patient", "GET /Patient/pat-2002/$everything")
            .deny(rule("patient"), "does not list"),
        portal("everything of everyone", "GET /Patient/$everything")
            .deny(rule("operations"), "$everything"),
        portal("batch for the patient", "POST /")
            .json(bundle(
                "batch",
                &[
                    ("GET", &format!("Patient/{ME}/Observation"), None),
                    ("GET", &format!("Patient/{ME}/Condition"), None),
                    ("GET", "Medication/med-1", None),
                ],
            ))
            .allow(rule("scopes")),
        portal("batch reaching another patient", "POST /")
            .json(bundle(
                "batch",
                &[
                    ("GET", &format!("Patient/{ME}/Observation"), None),
                    ("GET", "Patient/pat-2002/Condition", None),
                ],
            ))
            .deny(rule("patient"), "Bundle entry 1: the request concerns a patient"),
        case("batch across a family's patients", PORTAL, "POST /")
            .header("X-Portal-Patient", format!("{ME},pat-3003"))
            .json(bundle(
                "batch",
                &[
                    ("GET", &format!("Patient/{ME}/Observation"), None),
                    ("GET", "Patient/pat-3003/Condition", None),
                ],
            ))
            .deny(rule("patient"), "Bundle entry 1: the request is not confined to one patient: it names more than one patient"),
        portal("treatment purpose", format!("GET /Patient/{ME}"))
            .purpose("TREAT")
            .deny(rule("purposes_of_use"), "(allowed: PATRQT)"),
    ]);
}
