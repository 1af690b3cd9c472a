//! Is a request confined to one patient? The test behind `patient.mode: compartment | header`
//! and behind `patient/` scopes. See [`PatientConstraint`](crate::PatientConstraint)
//! for the rules in words; the compartment is R4's CompartmentDefinition/patient
//! (<http://hl7.org/fhir/R4/compartmentdefinition-patient.html>).

use fhirwall_fhir::{
    FhirRequest, Interaction, Modifier, OperationLevel, ResourceType, SearchParam,
    patch::ChangeKind, patient_compartment_elements, patient_compartment_params,
};

use super::reason::Confinement;

/// A request that passes the patient test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Confined<'a> {
    /// Only this patient's data can be in the answer.
    Patient(&'a str),
    /// No patient data: capabilities, or a type the policy exempts.
    Exempt,
    /// A read whose answer the request cannot tie to a patient (a read by id, history, a search
    /// without a patient, `_revinclude`, an operation): allowed because the response is checked
    /// for whose data it carries. Writes never get here: they are decided before anything
    /// comes back.
    ByResponse,
}

/// Types with the `patient` search parameter of R4's shared `clinical-patient` definition
/// (<http://hl7.org/fhir/R4/searchparameter-registry.html>), beyond those whose compartment link
/// is already called `patient`. Only real parameters count: a server that ignores an unknown
/// parameter would answer for every patient.
const CLINICAL_PATIENT: &[ResourceType] = &[
    ResourceType::AllergyIntolerance,
    ResourceType::CarePlan,
    ResourceType::CareTeam,
    ResourceType::ClinicalImpression,
    ResourceType::Composition,
    ResourceType::Condition,
    ResourceType::Consent,
    ResourceType::DetectedIssue,
    ResourceType::DeviceRequest,
    ResourceType::DeviceUseStatement,
    ResourceType::DiagnosticReport,
    ResourceType::DocumentManifest,
    ResourceType::DocumentReference,
    ResourceType::Encounter,
    ResourceType::EpisodeOfCare,
    ResourceType::FamilyMemberHistory,
    ResourceType::Flag,
    ResourceType::Goal,
    ResourceType::ImagingStudy,
    ResourceType::Immunization,
    ResourceType::List,
    ResourceType::MedicationAdministration,
    ResourceType::MedicationDispense,
    ResourceType::MedicationRequest,
    ResourceType::MedicationStatement,
    ResourceType::NutritionOrder,
    ResourceType::Observation,
    ResourceType::Procedure,
    ResourceType::RiskAssessment,
    ResourceType::ServiceRequest,
    ResourceType::SupplyDelivery,
    ResourceType::VisionPrescription,
];

/// Whether `req` and each of its entries is confined to one patient by the request itself
/// (or touches no patient data): what `patient.mode: compartment` holds every request to,
/// without leaving any to the response check.
#[must_use]
pub fn confined_by_request(req: &FhirRequest, exempt: &[ResourceType]) -> bool {
    req.with_entries()
        .filter(|r| !matches!(r.interaction, Interaction::Batch | Interaction::Transaction))
        .all(|r| {
            matches!(
                confine(r, exempt),
                Ok(Confined::Patient(_) | Confined::Exempt)
            )
        })
}

/// The patient `req` is confined to, or why it is not.
pub(crate) fn confine<'a>(
    req: &'a FhirRequest,
    exempt: &[ResourceType],
) -> Result<Confined<'a>, Confinement> {
    let t = req.resource_type;
    if req.interaction == Interaction::Capabilities {
        return Ok(Confined::Exempt);
    }
    let reaches_out = !req.query.includes.is_empty()
        || req.query.params.iter().any(|p| !p.reverse_chain.is_empty());
    if t.is_some_and(|t| exempt.contains(&t)) && !reaches_out {
        return Ok(Confined::Exempt);
    }
    let patient_instance = (t == Some(ResourceType::Patient))
        .then_some(req.id.as_deref())
        .flatten();
    match req.interaction {
        Interaction::Read
        | Interaction::Vread
        | Interaction::HistoryInstance
        | Interaction::Update
        | Interaction::Patch
        | Interaction::Delete
            if patient_instance.is_some() =>
        {
            only(req, patient_instance)
        }
        Interaction::Operation => match req.operation.as_ref().map(|o| o.level) {
            Some(OperationLevel::Instance) if patient_instance.is_some() => {
                only(req, patient_instance)
            }
            _ => Ok(Confined::ByResponse),
        },
        Interaction::SearchType | Interaction::SearchSystem => Ok(search(req)),
        Interaction::Create => match req.patient_refs.as_slice() {
            [one] => Ok(Confined::Patient(one)),
            _ => Err(Confinement::Body),
        },
        Interaction::Update | Interaction::Patch | Interaction::Delete => {
            let criteria = req.conditional.as_ref().ok_or(Confinement::InstanceWrite)?;
            let resource_type = t.ok_or(Confinement::Search)?;
            let confined = only(req, by_param(resource_type, &criteria.params))?;
            moves_compartment(req, resource_type)?;
            Ok(confined)
        }
        Interaction::Read
        | Interaction::Vread
        | Interaction::HistoryInstance
        | Interaction::HistoryType
        | Interaction::HistorySystem => Ok(Confined::ByResponse),
        Interaction::Capabilities | Interaction::Batch | Interaction::Transaction => {
            Err(Confinement::Search)
        }
    }
}

/// A patch under a patient constraint may rewrite the elements that put its target in the
/// patient's compartment only with a value the patch carries that names no other reference than
/// the patient's: a removal, a value copied from elsewhere in the resource, or a reference to
/// anything else would take the resource out of the patient's compartment, or into another's.
fn moves_compartment(req: &FhirRequest, t: ResourceType) -> Result<(), Confinement> {
    let Some(patch) = &req.patch else {
        return Ok(());
    };
    let Some(elements) = patient_compartment_elements(t) else {
        return Ok(());
    };
    let patient_only = !patch.references.is_empty()
        && patch
            .references
            .iter()
            .all(|r| fhirwall_fhir::patient_id_of_reference(r).is_some());
    let moved = patch.changes.iter().any(|change| {
        let link = elements.iter().any(|e| change.element.reaches(e));
        link && (change.kind != ChangeKind::Set || !patient_only)
    });
    if moved {
        Err(Confinement::PatchMoves)
    } else {
        Ok(())
    }
}

/// Confined to `patient` when every patient the request names is that one.
fn only<'a>(req: &'a FhirRequest, patient: Option<&'a str>) -> Result<Confined<'a>, Confinement> {
    let patient = patient.ok_or(Confinement::Search)?;
    if req.patient_refs.iter().all(|r| r == patient) {
        Ok(Confined::Patient(patient))
    } else {
        Err(Confinement::Mixed)
    }
}

/// A search: inside a Patient compartment, or restricted by a patient parameter with one
/// value, and without `_revinclude` or `:iterate` (which return resources of other patients
/// that point at the results) or `_contained` (which returns other resources); anything else is
/// left to the response check.
fn search(req: &FhirRequest) -> Confined<'_> {
    if req.query.includes.iter().any(|i| i.reverse || i.iterate) || req.query.searches_contained() {
        return Confined::ByResponse;
    }
    if let Some(c) = req
        .compartment
        .as_ref()
        .filter(|c| c.resource_type == ResourceType::Patient)
    {
        return Confined::Patient(&c.id);
    }
    req.resource_type
        .and_then(|t| by_param(t, &req.query.params))
        .map_or(Confined::ByResponse, Confined::Patient)
}

/// The one patient a plain parameter restricts a search on `t` to: `_id` on Patient; on other
/// types a compartment link (`subject=Patient/1`, `subject:Patient=1`) or `patient=1`.
fn by_param(t: ResourceType, params: &[SearchParam]) -> Option<&str> {
    let mut plain = params
        .iter()
        .filter(|p| p.reverse_chain.is_empty() && p.chain.is_empty());
    if t == ResourceType::Patient {
        return plain
            .filter(|p| p.name == "_id" && p.modifier.is_none())
            .find_map(|p| single(&p.values).filter(|v| is_id(v)));
    }
    let links = patient_compartment_params(t)?;
    let patient_param = links.contains(&"patient") || CLINICAL_PATIENT.contains(&t);
    plain.find_map(|p| {
        let typed = p.modifier == Some(Modifier::Type(ResourceType::Patient));
        let by_link = links.contains(&p.name.as_str());
        let by_patient = p.name == "patient" && patient_param;
        if !(by_link || by_patient) || !(p.modifier.is_none() || typed) {
            return None;
        }
        let value = single(&p.values)?;
        match value.strip_prefix("Patient/") {
            Some(id) => Some(id),
            None if typed || p.name == "patient" => Some(value),
            None => None,
        }
        .filter(|id| is_id(id))
    })
}

fn single(values: &[String]) -> Option<&str> {
    match values {
        [one] => Some(one),
        _ => None,
    }
}

/// A FHIR id (<http://hl7.org/fhir/R4/datatypes.html#id>).
fn is_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}
