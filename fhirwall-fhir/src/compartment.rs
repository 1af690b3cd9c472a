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

/// The top-level elements of a resource that put it in a patient's compartment: the first step of
/// the FHIRPath expression behind each search parameter of [`PATIENT_COMPARTMENT`] in the R4
/// search parameter registry (<http://hl7.org/fhir/R4/searchparameter-registry.html>), e.g.
/// `Encounter.patient` is `Encounter.subject.where(resolve() is Patient)`, so `subject`;
/// `Appointment.actor` is `Appointment.participant.actor`, so `participant`. Responses are
/// checked against these: a returned resource is in patient P's compartment when a reference to
/// `Patient/P` sits under one of its type's elements here. Same types, same order as
/// [`PATIENT_COMPARTMENT`] (a test holds the two together).
pub const PATIENT_COMPARTMENT_ELEMENTS: &[(ResourceType, &[&str])] = &[
    (ResourceType::Account, &["subject"]),
    (ResourceType::AdverseEvent, &["subject"]),
    (
        ResourceType::AllergyIntolerance,
        &["patient", "recorder", "asserter"],
    ),
    (ResourceType::Appointment, &["participant"]),
    (ResourceType::AppointmentResponse, &["actor"]),
    (ResourceType::AuditEvent, &["agent", "entity"]),
    (ResourceType::Basic, &["subject", "author"]),
    (ResourceType::BodyStructure, &["patient"]),
    (ResourceType::CarePlan, &["subject", "activity"]),
    (ResourceType::CareTeam, &["subject", "participant"]),
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
    (ResourceType::Condition, &["subject", "asserter"]),
    (ResourceType::Consent, &["patient"]),
    (
        ResourceType::Coverage,
        &["policyHolder", "subscriber", "beneficiary", "payor"],
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
    (ResourceType::Encounter, &["subject"]),
    (ResourceType::EnrollmentRequest, &["candidate"]),
    (ResourceType::EpisodeOfCare, &["patient"]),
    (ResourceType::ExplanationOfBenefit, &["patient", "payee"]),
    (ResourceType::FamilyMemberHistory, &["patient"]),
    (ResourceType::Flag, &["subject"]),
    (ResourceType::Goal, &["subject"]),
    (ResourceType::Group, &["member"]),
    (ResourceType::ImagingStudy, &["subject"]),
    (ResourceType::Immunization, &["patient"]),
    (ResourceType::ImmunizationEvaluation, &["patient"]),
    (ResourceType::ImmunizationRecommendation, &["patient"]),
    (ResourceType::Invoice, &["subject", "recipient"]),
    (ResourceType::List, &["subject", "source"]),
    (ResourceType::MeasureReport, &["subject"]),
    (ResourceType::Media, &["subject"]),
    (
        ResourceType::MedicationAdministration,
        &["subject", "performer"],
    ),
    (ResourceType::MedicationDispense, &["subject", "receiver"]),
    (ResourceType::MedicationRequest, &["subject"]),
    (ResourceType::MedicationStatement, &["subject"]),
    (ResourceType::MolecularSequence, &["patient"]),
    (ResourceType::NutritionOrder, &["patient"]),
    (ResourceType::Observation, &["subject", "performer"]),
    (ResourceType::Patient, &["link"]),
    (ResourceType::Person, &["link"]),
    (ResourceType::Procedure, &["subject", "performer"]),
    (ResourceType::Provenance, &["target"]),
    (ResourceType::QuestionnaireResponse, &["subject", "author"]),
    (ResourceType::RelatedPerson, &["patient"]),
    (ResourceType::RequestGroup, &["subject", "action"]),
    (ResourceType::ResearchSubject, &["individual"]),
    (ResourceType::RiskAssessment, &["subject"]),
    (ResourceType::Schedule, &["actor"]),
    (ResourceType::ServiceRequest, &["subject", "performer"]),
    (ResourceType::Specimen, &["subject"]),
    (ResourceType::SupplyDelivery, &["patient"]),
    (ResourceType::SupplyRequest, &["deliverTo"]),
    (ResourceType::VisionPrescription, &["patient"]),
];

/// The elements that put a resource of `resource_type` in a patient's compartment, or `None`
/// when that type is never in one.
#[must_use]
pub fn patient_compartment_elements(
    resource_type: ResourceType,
) -> Option<&'static [&'static str]> {
    PATIENT_COMPARTMENT_ELEMENTS
        .binary_search_by_key(&resource_type, |(t, _)| *t)
        .ok()
        .and_then(|i| PATIENT_COMPARTMENT_ELEMENTS.get(i))
        .map(|(_, elements)| *elements)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_tables_list_the_same_types_sorted() {
        let params: Vec<ResourceType> = PATIENT_COMPARTMENT.iter().map(|(t, _)| *t).collect();
        let elements: Vec<ResourceType> = PATIENT_COMPARTMENT_ELEMENTS
            .iter()
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(params, elements);
        assert!(
            params.windows(2).all(|w| w[0] < w[1]),
            "sorted for binary search"
        );
        assert_eq!(
            patient_compartment_elements(ResourceType::Encounter),
            Some(&["subject"][..])
        );
        assert_eq!(patient_compartment_elements(ResourceType::Medication), None);
    }
}
