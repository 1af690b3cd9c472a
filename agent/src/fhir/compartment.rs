//! Patient compartment membership, for patient-scope checks by the policy engine.
//!
//! Source: CompartmentDefinition/patient of R4 4.0.1
//! (<http://hl7.org/fhir/R4/compartmentdefinition-patient.html>). A resource of a listed type is in
//! the compartment of Patient/x when one of the listed search parameters refers to Patient/x.
//! Types not listed are never in a patient compartment (e.g. `Medication`, `Organization`,
//! `ValueSet`); `Patient` itself is in its own compartment by id, plus through `link`.

use super::ResourceType;

/// `(type, search parameters linking it to the patient)`, sorted by type so lookups can binary
/// search. 66 types are members.
pub const PATIENT_COMPARTMENT: &[(ResourceType, &[&str])] = &[
    (ResourceType::Account, &["subject"]),
    (ResourceType::AdverseEvent, &["subject"]),
    (
        ResourceType::AllergyIntolerance,
        &["patient", "recorder", "asserter"],
    ),
    (ResourceType::Appointment, &["actor"]),
    (ResourceType::AppointmentResponse, &["actor"]),
    (ResourceType::AuditEvent, &["patient"]),
    (ResourceType::Basic, &["patient", "author"]),
    (ResourceType::BodyStructure, &["patient"]),
    (ResourceType::CarePlan, &["patient", "performer"]),
    (ResourceType::CareTeam, &["patient", "participant"]),
    (ResourceType::ChargeItem, &["subject"]),
    (ResourceType::Claim, &["patient", "payee"]),
    (ResourceType::ClaimResponse, &["patient"]),
    (ResourceType::ClinicalImpression, &["subject"]),
    (
        ResourceType::Communication,
        &["subject", "sender", "recipient"],
    ),
    (
        ResourceType::CommunicationRequest,
        &["subject", "sender", "recipient", "requester"],
    ),
    (
        ResourceType::Composition,
        &["subject", "author", "attester"],
    ),
    (ResourceType::Condition, &["patient", "asserter"]),
    (ResourceType::Consent, &["patient"]),
    (
        ResourceType::Coverage,
        &["policy-holder", "subscriber", "beneficiary", "payor"],
    ),
    (ResourceType::CoverageEligibilityRequest, &["patient"]),
    (ResourceType::CoverageEligibilityResponse, &["patient"]),
    (ResourceType::DetectedIssue, &["patient"]),
    (ResourceType::DeviceRequest, &["subject", "performer"]),
    (ResourceType::DeviceUseStatement, &["subject"]),
    (ResourceType::DiagnosticReport, &["subject"]),
    (
        ResourceType::DocumentManifest,
        &["subject", "author", "recipient"],
    ),
    (ResourceType::DocumentReference, &["subject", "author"]),
    (ResourceType::Encounter, &["patient"]),
    (ResourceType::EnrollmentRequest, &["subject"]),
    (ResourceType::EpisodeOfCare, &["patient"]),
    (ResourceType::ExplanationOfBenefit, &["patient", "payee"]),
    (ResourceType::FamilyMemberHistory, &["patient"]),
    (ResourceType::Flag, &["patient"]),
    (ResourceType::Goal, &["patient"]),
    (ResourceType::Group, &["member"]),
    (ResourceType::ImagingStudy, &["patient"]),
    (ResourceType::Immunization, &["patient"]),
    (ResourceType::ImmunizationEvaluation, &["patient"]),
    (ResourceType::ImmunizationRecommendation, &["patient"]),
    (ResourceType::Invoice, &["subject", "patient", "recipient"]),
    (ResourceType::List, &["subject", "source"]),
    (ResourceType::MeasureReport, &["patient"]),
    (ResourceType::Media, &["subject"]),
    (
        ResourceType::MedicationAdministration,
        &["patient", "performer", "subject"],
    ),
    (
        ResourceType::MedicationDispense,
        &["subject", "patient", "receiver"],
    ),
    (ResourceType::MedicationRequest, &["subject"]),
    (ResourceType::MedicationStatement, &["subject"]),
    (ResourceType::MolecularSequence, &["patient"]),
    (ResourceType::NutritionOrder, &["patient"]),
    (ResourceType::Observation, &["subject", "performer"]),
    (ResourceType::Patient, &["link"]),
    (ResourceType::Person, &["patient"]),
    (ResourceType::Procedure, &["patient", "performer"]),
    (ResourceType::Provenance, &["patient"]),
    (ResourceType::QuestionnaireResponse, &["subject", "author"]),
    (ResourceType::RelatedPerson, &["patient"]),
    (ResourceType::RequestGroup, &["subject", "participant"]),
    (ResourceType::ResearchSubject, &["individual"]),
    (ResourceType::RiskAssessment, &["subject"]),
    (ResourceType::Schedule, &["actor"]),
    (ResourceType::ServiceRequest, &["subject", "performer"]),
    (ResourceType::Specimen, &["subject"]),
    (ResourceType::SupplyDelivery, &["patient"]),
    (ResourceType::SupplyRequest, &["subject"]),
    (ResourceType::VisionPrescription, &["patient"]),
];

/// The search parameters that put a resource of `resource_type` in a patient's compartment, or
/// `None` when that type is never in a patient compartment.
#[must_use]
pub fn patient_compartment_params(resource_type: ResourceType) -> Option<&'static [&'static str]> {
    PATIENT_COMPARTMENT
        .binary_search_by_key(&resource_type, |(t, _)| *t)
        .ok()
        .and_then(|i| PATIENT_COMPARTMENT.get(i))
        .map(|(_, params)| *params)
}
