//! Which resource types a reference search parameter can point at, for `_include=Type:param`
//! written without a target type (the form most client libraries produce: python fhirclient's
//! `include("subject")` can only write `Observation:subject`). Such an include returns resources
//! of every type the parameter can reference, so the policy must allow reading each of them.
//!
//! Source: the element types of R4 4.0.1 behind each search parameter's expression
//! (e.g. `Observation.subject` is `Reference(Patient | Group | Device | Location)`,
//! <http://hl7.org/fhir/R4/observation.html>), and `patient` parameters, which R4 defines on
//! every resource as a reference to `Patient` only. A parameter missing from this table is
//! unknown, and an include of it without a target type stays refused: the table may only ever
//! list too many targets, never too few.

use super::ResourceType::{
    self, CareTeam, Claim, Condition, Coverage, Device, DiagnosticReport, DocumentReference,
    Encounter, EpisodeOfCare, ExplanationOfBenefit, Group, Location, Medication, MedicationRequest,
    MolecularSequence, Observation, Organization, Patient, Practitioner, PractitionerRole,
    Procedure, QuestionnaireResponse, RelatedPerson, ServiceRequest,
};

const PRACTITIONERS: &[ResourceType] = &[Practitioner, PractitionerRole, Organization];

/// `(source type, parameter, target types)`.
const TARGETS: &[(ResourceType, &str, &[ResourceType])] = &[
    (Claim, "encounter", &[Encounter]),
    (Claim, "insurer", &[Organization]),
    (Claim, "provider", PRACTITIONERS),
    (Condition, "encounter", &[Encounter]),
    (Condition, "subject", &[Patient, Group]),
    (Coverage, "beneficiary", &[Patient]),
    (Coverage, "payor", &[Organization, Patient, RelatedPerson]),
    (Coverage, "subscriber", &[Patient, RelatedPerson]),
    (DiagnosticReport, "encounter", &[Encounter]),
    (DiagnosticReport, "result", &[Observation]),
    (
        DiagnosticReport,
        "subject",
        &[Patient, Group, Device, Location],
    ),
    (
        DocumentReference,
        "subject",
        &[Patient, Practitioner, Group, Device],
    ),
    (Encounter, "episode-of-care", &[EpisodeOfCare]),
    (Encounter, "location", &[Location]),
    (Encounter, "practitioner", &[Practitioner]),
    (Encounter, "service-provider", &[Organization]),
    (Encounter, "subject", &[Patient, Group]),
    (ExplanationOfBenefit, "claim", &[Claim]),
    (ExplanationOfBenefit, "coverage", &[Coverage]),
    (ExplanationOfBenefit, "provider", PRACTITIONERS),
    (MedicationRequest, "encounter", &[Encounter]),
    (MedicationRequest, "medication", &[Medication]),
    (MedicationRequest, "subject", &[Patient, Group]),
    (Observation, "encounter", &[Encounter]),
    (
        Observation,
        "has-member",
        &[Observation, QuestionnaireResponse, MolecularSequence],
    ),
    (
        Observation,
        "performer",
        &[
            Practitioner,
            PractitionerRole,
            Organization,
            CareTeam,
            Patient,
            RelatedPerson,
        ],
    ),
    (Observation, "subject", &[Patient, Group, Device, Location]),
    (Patient, "general-practitioner", PRACTITIONERS),
    (Patient, "link", &[Patient, RelatedPerson]),
    (Patient, "organization", &[Organization]),
    (Procedure, "encounter", &[Encounter]),
    (Procedure, "subject", &[Patient, Group]),
    (ServiceRequest, "encounter", &[Encounter]),
    (
        ServiceRequest,
        "subject",
        &[Patient, Group, Location, Device],
    ),
];

/// The types `source.param` can reference, or `None` when the parameter is not known here.
#[must_use]
pub fn reference_targets(source: ResourceType, param: &str) -> Option<&'static [ResourceType]> {
    if param == "patient" {
        return Some(&[Patient]);
    }
    TARGETS
        .iter()
        .find(|(s, p, _)| *s == source && *p == param)
        .map(|(_, _, targets)| *targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_parameters_list_their_targets_and_unknown_ones_none() {
        let cases: &[(ResourceType, &str, Option<&[ResourceType]>)] = &[
            (
                Observation,
                "subject",
                Some(&[Patient, Group, Device, Location]),
            ),
            (Observation, "patient", Some(&[Patient])),
            (Claim, "patient", Some(&[Patient])),
            (Encounter, "subject", Some(&[Patient, Group])),
            (Observation, "based-on", None),
            (Observation, "Subject", None),
            (Condition, "asserter", None),
        ];
        for (source, param, expected) in cases {
            assert_eq!(
                reference_targets(*source, param),
                *expected,
                "{source:?}.{param}"
            );
        }
    }

    #[test]
    fn the_table_has_one_row_per_parameter() {
        for (i, (s, p, targets)) in TARGETS.iter().enumerate() {
            assert!(!targets.is_empty(), "{s:?}.{p}");
            assert!(
                !TARGETS[i + 1..]
                    .iter()
                    .any(|(s2, p2, _)| s2 == s && p2 == p),
                "{s:?}.{p} twice"
            );
        }
    }
}
