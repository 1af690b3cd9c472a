//! The FHIR R4 (4.0.1) resource types, matched case-sensitively.
//!
//! Source: the `http://hl7.org/fhir/resource-types` code system of R4 4.0.1
//! (<http://hl7.org/fhir/R4/codesystem-resource-types.html>), minus the two abstract types
//! `Resource` and `DomainResource`, which no request can address. That leaves 146 concrete types
//! (resourcelist.html counts 145 because it files `Parameters` as infrastructure; it is still a
//! resource type and the body of most operations invoked by POST, so it is listed here).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// Declares [`ResourceType`] with its variants named exactly like the FHIR type codes, so the
/// string form is `stringify!` of the variant and cannot drift from it.
macro_rules! resource_types {
    ($($name:ident,)+) => {
        /// One concrete FHIR R4 resource type.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ResourceType {
            $(
                #[doc = concat!("`", stringify!($name), "`")]
                $name,
            )+
        }

        impl ResourceType {
            /// Every R4 resource type, in the code system's (alphabetical) order.
            pub const ALL: &[ResourceType] = &[$(ResourceType::$name,)+];

            /// The type code as written in URLs and in `resourceType`.
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ResourceType::$name => stringify!($name),)+
                }
            }

            /// Parses a type code. Case-sensitive on purpose: `patient` is not `Patient`
            /// (<http://hl7.org/fhir/R4/http.html#general>: URLs are case sensitive), and a proxy
            /// that folded case would disagree with a server that does not.
            #[must_use]
            pub fn parse(code: &str) -> Option<ResourceType> {
                match code {
                    $(stringify!($name) => Some(ResourceType::$name),)+
                    _ => None,
                }
            }
        }
    };
}

resource_types! {
    Account,
    ActivityDefinition,
    AdverseEvent,
    AllergyIntolerance,
    Appointment,
    AppointmentResponse,
    AuditEvent,
    Basic,
    Binary,
    BiologicallyDerivedProduct,
    BodyStructure,
    Bundle,
    CapabilityStatement,
    CarePlan,
    CareTeam,
    CatalogEntry,
    ChargeItem,
    ChargeItemDefinition,
    Claim,
    ClaimResponse,
    ClinicalImpression,
    CodeSystem,
    Communication,
    CommunicationRequest,
    CompartmentDefinition,
    Composition,
    ConceptMap,
    Condition,
    Consent,
    Contract,
    Coverage,
    CoverageEligibilityRequest,
    CoverageEligibilityResponse,
    DetectedIssue,
    Device,
    DeviceDefinition,
    DeviceMetric,
    DeviceRequest,
    DeviceUseStatement,
    DiagnosticReport,
    DocumentManifest,
    DocumentReference,
    EffectEvidenceSynthesis,
    Encounter,
    Endpoint,
    EnrollmentRequest,
    EnrollmentResponse,
    EpisodeOfCare,
    EventDefinition,
    Evidence,
    EvidenceVariable,
    ExampleScenario,
    ExplanationOfBenefit,
    FamilyMemberHistory,
    Flag,
    Goal,
    GraphDefinition,
    Group,
    GuidanceResponse,
    HealthcareService,
    ImagingStudy,
    Immunization,
    ImmunizationEvaluation,
    ImmunizationRecommendation,
    ImplementationGuide,
    InsurancePlan,
    Invoice,
    Library,
    Linkage,
    List,
    Location,
    Measure,
    MeasureReport,
    Media,
    Medication,
    MedicationAdministration,
    MedicationDispense,
    MedicationKnowledge,
    MedicationRequest,
    MedicationStatement,
    MedicinalProduct,
    MedicinalProductAuthorization,
    MedicinalProductContraindication,
    MedicinalProductIndication,
    MedicinalProductIngredient,
    MedicinalProductInteraction,
    MedicinalProductManufactured,
    MedicinalProductPackaged,
    MedicinalProductPharmaceutical,
    MedicinalProductUndesirableEffect,
    MessageDefinition,
    MessageHeader,
    MolecularSequence,
    NamingSystem,
    NutritionOrder,
    Observation,
    ObservationDefinition,
    OperationDefinition,
    OperationOutcome,
    Organization,
    OrganizationAffiliation,
    Parameters,
    Patient,
    PaymentNotice,
    PaymentReconciliation,
    Person,
    PlanDefinition,
    Practitioner,
    PractitionerRole,
    Procedure,
    Provenance,
    Questionnaire,
    QuestionnaireResponse,
    RelatedPerson,
    RequestGroup,
    ResearchDefinition,
    ResearchElementDefinition,
    ResearchStudy,
    ResearchSubject,
    RiskAssessment,
    RiskEvidenceSynthesis,
    Schedule,
    SearchParameter,
    ServiceRequest,
    Slot,
    Specimen,
    SpecimenDefinition,
    StructureDefinition,
    StructureMap,
    Subscription,
    Substance,
    SubstanceNucleicAcid,
    SubstancePolymer,
    SubstanceProtein,
    SubstanceReferenceInformation,
    SubstanceSourceMaterial,
    SubstanceSpecification,
    SupplyDelivery,
    SupplyRequest,
    Task,
    TerminologyCapabilities,
    TestReport,
    TestScript,
    ValueSet,
    VerificationResult,
    VisionPrescription,
}

impl ResourceType {
    /// The compartment types R4 defines (<http://hl7.org/fhir/R4/compartmentdefinition.html>):
    /// `[base]/[this type]/[id]/...` is a compartment search.
    #[must_use]
    pub const fn is_compartment(self) -> bool {
        matches!(
            self,
            ResourceType::Patient
                | ResourceType::Encounter
                | ResourceType::RelatedPerson
                | ResourceType::Practitioner
                | ResourceType::Device
        )
    }
}

/// A set of resource types, one bit per type: what a response may carry, checked per resource.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TypeSet([u64; 3]);

// `ResourceType` is a field-less enum declared in `ALL` order, so its discriminant is its
// position; three words hold all 146 types.
const _: () = assert!(ResourceType::ALL.len() <= 3 * 64);

impl TypeSet {
    pub const EMPTY: TypeSet = TypeSet([0; 3]);

    const fn slot(t: ResourceType) -> (usize, u64) {
        let i = t as usize;
        (i / 64, 1 << (i % 64))
    }

    #[must_use]
    pub const fn contains(self, t: ResourceType) -> bool {
        let (word, bit) = Self::slot(t);
        self.0[word] & bit != 0
    }

    pub fn insert(&mut self, t: ResourceType) {
        let (word, bit) = Self::slot(t);
        self.0[word] |= bit;
    }

    #[must_use]
    pub const fn union(self, other: TypeSet) -> TypeSet {
        TypeSet([
            self.0[0] | other.0[0],
            self.0[1] | other.0[1],
            self.0[2] | other.0[2],
        ])
    }

    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0[0] == 0 && self.0[1] == 0 && self.0[2] == 0
    }

    /// The types in the set, in `ResourceType::ALL` order.
    pub fn iter(self) -> impl Iterator<Item = ResourceType> {
        ResourceType::ALL
            .iter()
            .copied()
            .filter(move |t| self.contains(*t))
    }
}

impl FromIterator<ResourceType> for TypeSet {
    fn from_iter<I: IntoIterator<Item = ResourceType>>(iter: I) -> Self {
        let mut set = TypeSet::EMPTY;
        for t in iter {
            set.insert(t);
        }
        set
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ResourceType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Policy files name types as strings; an unknown or wrong-case name is a load error.
impl<'de> Deserialize<'de> for ResourceType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        ResourceType::parse(&code).ok_or_else(|| {
            de::Error::invalid_value(
                de::Unexpected::Str(&code),
                &"an R4 resource type (case-sensitive)",
            )
        })
    }
}
