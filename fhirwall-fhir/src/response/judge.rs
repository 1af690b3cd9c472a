//! The rules one response is held to, and the verdict on each resource.
//!
//! Under a patient rule a resource passes only when every patient it references (and, for a
//! Patient, the patient it is) is allowed, and it is tied to one of them: a Patient by its own
//! id, a type of the Patient compartment by a reference under one of the elements that put it
//! there ([`patient_compartment_elements`]), any other type only when the policy exempts it
//! (medication definitions, practitioners) or it is an envelope (Bundle, Parameters,
//! OperationOutcome). That is stricter than compartment membership alone on purpose: an A-bound
//! integration never sees a reference to patient B, not even inside A's own data.

use std::{collections::BTreeSet, fmt};

use super::{
    CheckMode, MAX_PATIENTS, Report,
    ids::{Budget, IdSet},
    walk::{Facts, Walker},
};
use crate::{ResourceType, TypeSet, compartment::patient_compartment_elements};

/// What one response may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseRules {
    pub mode: CheckMode,
    /// Types the integration may read. Bundle, Parameters and OperationOutcome are envelopes and
    /// always pass; what they carry is judged on its own.
    pub readable: TypeSet,
    pub patients: PatientRule,
    /// Types outside the Patient compartment that may be returned under a patient rule.
    pub exempt: TypeSet,
    /// The most bytes held back at once (a whole body in `Deny`, one entry in `Filter`).
    pub max_held: usize,
}

/// Whose data a response may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatientRule {
    Any,
    /// Only these patients (ids).
    Only(Vec<String>),
    /// One patient, whichever the response shows first.
    One,
}

/// Why a response, or an entry of it, may not be seen. Names types and rules, never values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// A resource of a type the integration may not read.
    Type(ResourceType),
    /// Data of, or a reference to, a patient the integration is not bound to.
    OtherPatient,
    /// A resource not tied to an allowed patient (a compartment type without a reference to
    /// one, or a type outside the compartment that the policy does not exempt).
    NotTied(ResourceType),
    /// A bulk export file of a type the integration may not read.
    ExportType(ResourceType),
    /// The body is not what it claims to be.
    Malformed(Malformed),
    /// Too large to hold for checking where it cannot be checked as it streams.
    TooLarge,
    /// A body the checker cannot read (content type or encoding).
    Format,
}

/// How a body failed to be a well-formed FHIR document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Not valid JSON (or not a complete document).
    Json,
    /// Nested deeper than the checker follows.
    TooDeep,
    /// A key or a read value longer than the checker reads.
    TooLong,
    /// A resource without `resourceType`, or with two, or with two ids.
    Identity,
    /// A resource where the format puts none, or none where it must be.
    Resource,
    /// A `resourceType` that is not an R4 type.
    UnknownType,
}

impl From<super::lexer::LexError> for Malformed {
    fn from(e: super::lexer::LexError) -> Self {
        match e {
            super::lexer::LexError::TooDeep => Malformed::TooDeep,
            super::lexer::LexError::TooLong => Malformed::TooLong,
            super::lexer::LexError::Syntax
            | super::lexer::LexError::Trailing
            | super::lexer::LexError::Truncated => Malformed::Json,
        }
    }
}

impl Violation {
    /// A fixed word for metrics labels and audit records.
    #[must_use]
    pub const fn slug(&self) -> &'static str {
        match self {
            Violation::Type(_) | Violation::ExportType(_) => "type",
            Violation::OtherPatient | Violation::NotTied(_) => "patient",
            Violation::Malformed(_) => "malformed",
            Violation::TooLarge => "too-large",
            Violation::Format => "format",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Type(t) => write!(
                f,
                "the response carries a {t}, which the integration may not read"
            ),
            Violation::ExportType(t) => write!(
                f,
                "the export produced {t} files, which the integration may not read"
            ),
            Violation::OtherPatient => f.write_str(
                "the response carries data of a patient the integration is not bound to",
            ),
            Violation::NotTied(t) => write!(
                f,
                "the response carries a {t} that is not tied to a patient the integration is bound to"
            ),
            Violation::Malformed(m) => write!(f, "the response is not a well-formed FHIR document: {m}"),
            Violation::TooLarge => {
                f.write_str("the response is larger than fhirwall holds for checking")
            }
            Violation::Format => f.write_str(
                "the response is in a format or encoding fhirwall cannot check (it reads FHIR JSON)",
            ),
        }
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Malformed::Json => "invalid or incomplete JSON",
            Malformed::TooDeep => "nested too deep",
            Malformed::TooLong => "a key or reference is too long",
            Malformed::Identity => "a resource has no resourceType, or repeats it or its id",
            Malformed::Resource => "a resource where none belongs, or none where one must be",
            Malformed::UnknownType => "a resourceType that is not an R4 type",
        })
    }
}

/// Applies the rules and keeps the tally.
#[derive(Debug)]
pub(super) struct Judge {
    rules: ResponseRules,
    /// Under [`PatientRule::One`]: the patient the response showed first.
    bound: Option<String>,
    /// Patients of released units.
    patients: BTreeSet<String>,
    truncated: bool,
    /// Patients of the unit in progress (while `in_unit`), kept only if the unit is.
    unit: IdSet,
    unit_budget: Budget,
    in_unit: bool,
    resources: u64,
    pub(super) withheld: std::collections::BTreeMap<Option<ResourceType>, u32>,
    pub(super) withheld_matches: u32,
    violation: Option<Violation>,
    unread: bool,
}

impl Judge {
    pub(super) fn new(rules: ResponseRules) -> Self {
        Self {
            rules,
            bound: None,
            patients: BTreeSet::new(),
            truncated: false,
            unit: IdSet::default(),
            unit_budget: Budget::default(),
            in_unit: false,
            resources: 0,
            withheld: std::collections::BTreeMap::new(),
            withheld_matches: 0,
            violation: None,
            unread: false,
        }
    }

    pub(super) fn rules(&self) -> &ResponseRules {
        &self.rules
    }

    /// The first violation found (including one that only withheld an entry).
    pub(super) fn note(&mut self, violation: Violation) {
        self.violation.get_or_insert(violation);
    }

    pub(super) fn violation(&self) -> Option<Violation> {
        self.violation
    }

    /// `Record` mode could not read the body.
    pub(super) fn unread(&mut self, violation: Violation) {
        self.unread = true;
        self.note(violation);
    }

    pub(super) fn unit_start(&mut self) {
        self.unit.clear(&mut self.unit_budget);
        self.in_unit = true;
    }

    /// A unit ends; its patients count only if it is released.
    pub(super) fn unit_end(&mut self, kept: bool) {
        if std::mem::take(&mut self.in_unit) && kept {
            for id in self.unit.iter() {
                add_patient(&mut self.patients, &mut self.truncated, id);
            }
            self.truncated |= self.unit.overflowed();
        }
    }

    /// A unit was withheld: tally it.
    pub(super) fn withhold(&mut self, resource_type: Option<ResourceType>, is_match: bool) {
        *self.withheld.entry(resource_type).or_default() += 1;
        if is_match {
            self.withheld_matches += 1;
        }
    }

    /// The verdict on one resource.
    pub(super) fn resource(&mut self, facts: &Facts) -> Result<(), Violation> {
        self.resources += 1;
        let Some(t) = facts.resource_type else {
            return Err(Violation::Malformed(Malformed::Identity));
        };
        let verdict = self.verdict(t, facts);
        match verdict {
            Ok(()) => {
                self.carried(t, facts);
                Ok(())
            }
            Err(_) if self.rules.mode == CheckMode::Record => {
                self.carried(t, facts);
                Ok(())
            }
            Err(v) => {
                self.note(v);
                Err(v)
            }
        }
    }

    /// A file of a bulk export manifest (`type` names what the file holds).
    pub(super) fn export_file(&mut self, kind: &str) -> Result<(), Violation> {
        let t = ResourceType::parse(kind).ok_or(Violation::Malformed(Malformed::UnknownType))?;
        if self.rules.mode == CheckMode::Record || envelope(t) || self.rules.readable.contains(t) {
            return Ok(());
        }
        let v = Violation::ExportType(t);
        self.note(v);
        Err(v)
    }

    fn verdict(&mut self, t: ResourceType, facts: &Facts) -> Result<(), Violation> {
        if !envelope(t) && !self.rules.readable.contains(t) {
            return Err(Violation::Type(t));
        }
        if self.rules.patients == PatientRule::Any {
            return Ok(());
        }
        let own = (t == ResourceType::Patient)
            .then_some(facts.id.as_deref())
            .flatten();
        if facts.referenced.overflowed() {
            // More patients than any patient rule names (see `ids::MAX_HELD`).
            return Err(Violation::OtherPatient);
        }
        for id in facts.referenced.iter().chain(own) {
            self.allow(id)?;
        }
        if facts.contained || envelope(t) || self.rules.exempt.contains(t) {
            return Ok(());
        }
        let tied = match patient_compartment_elements(t) {
            _ if t == ResourceType::Patient => own.is_some(),
            Some(_) => facts.in_compartment,
            None => false,
        };
        if tied {
            Ok(())
        } else {
            Err(Violation::NotTied(t))
        }
    }

    /// Whether `id` is a patient this response may show; binds the first one under `One`.
    fn allow(&mut self, id: &str) -> Result<(), Violation> {
        let ok = match &self.rules.patients {
            PatientRule::Any => true,
            PatientRule::Only(ids) => ids.iter().any(|p| p == id),
            PatientRule::One => {
                if let Some(bound) = &self.bound {
                    bound == id
                } else {
                    self.bound = Some(id.to_owned());
                    true
                }
            }
        };
        if ok {
            Ok(())
        } else {
            Err(Violation::OtherPatient)
        }
    }

    /// Notes whose data a passing resource carries.
    fn carried(&mut self, t: ResourceType, facts: &Facts) {
        let own = (t == ResourceType::Patient && !facts.contained)
            .then_some(facts.id.as_deref())
            .flatten();
        // Patients past the bound count only if what carried them is released.
        if facts.referenced.overflowed() {
            if self.in_unit {
                self.unit.mark_overflowed();
            } else {
                self.truncated = true;
            }
        }
        for id in facts.referenced.iter().chain(own) {
            if self.in_unit {
                self.unit.insert(id, &mut self.unit_budget);
            } else {
                add_patient(&mut self.patients, &mut self.truncated, id);
            }
        }
    }

    pub(super) fn report(&self, walker: &Walker, released: bool) -> Report {
        Report {
            patients: if released {
                self.patients.iter().cloned().collect()
            } else {
                Vec::new()
            },
            patients_truncated: self.truncated,
            resources: self.resources,
            withheld: self.withheld.clone(),
            withheld_matches: self.withheld_matches,
            links: walker.links.clone(),
            violation: self.violation,
            unread: self.unread,
            bound: self.bound.clone(),
        }
    }
}

/// Types that wrap what they carry; never judged on their own type.
fn envelope(t: ResourceType) -> bool {
    matches!(
        t,
        ResourceType::Bundle | ResourceType::Parameters | ResourceType::OperationOutcome
    )
}

/// Adds a patient to a response's tally, up to [`MAX_PATIENTS`]; allocates only for a new one.
fn add_patient(patients: &mut BTreeSet<String>, truncated: &mut bool, id: &str) {
    if patients.contains(id) {
        return;
    }
    if patients.len() < MAX_PATIENTS {
        patients.insert(id.to_owned());
    } else {
        *truncated = true;
    }
}
