//! An integration: a named non-human identity with its owner, purpose, workload, scopes and
//! limits. Every field is typed at load; what one field cannot check alone (references to
//! upstreams, scopes against expected resources) the loader checks across fields.

use fhirwall_fhir::{ResourceType, patient_compartment_params};
use serde::{Deserialize, Serialize};

use super::{
    credential::{Credentials, HeaderName},
    grants::Scopes,
    model::{IntegrationStatus, Mode},
    operation::OperationRule,
    purpose::{PurposeOfUse, PurposeSet},
    selector::WorkloadSelector,
};

/// A named non-human identity: one API integration with its owner, purpose and scope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Integration {
    pub name: String,
    /// Accountable team or person, with a contact.
    pub owner: String,
    /// The approved use case, in words.
    pub purpose: String,
    /// Change or approval reference.
    #[serde(default)]
    pub ticket: Option<String>,
    /// Classes of data the integration handles (e.g. `laboratory`, `claims`).
    pub data_classes: Vec<String>,
    /// FHIR resource types it is expected to touch; every typed scope must name one of them.
    pub expected_resources: Vec<ResourceType>,
    pub status: IntegrationStatus,
    /// End of validity (UTC); after it the integration is refused like a revoked one.
    #[serde(default)]
    pub expires: Option<jiff::Timestamp>,
    #[serde(default)]
    pub mode: Mode,
    /// Which processes are this integration.
    pub workload: WorkloadSelector,
    /// Names of the upstreams it may call.
    pub upstreams: Vec<String>,
    /// Tenants it may address, on upstreams that have tenants (required there, empty elsewhere).
    #[serde(default)]
    pub tenants: Vec<Tenant>,
    /// SMART resource scopes (v2, or v1 mapped onto v2).
    pub scopes: Scopes,
    /// Operations it may invoke; none when empty.
    #[serde(default)]
    pub operations: Vec<OperationRule>,
    /// Purposes of use it may state.
    pub purposes_of_use: PurposeSet,
    /// The purpose assumed when a request states none; without it such requests are refused.
    #[serde(default)]
    pub default_purpose: Option<PurposeOfUse>,
    /// Which patients one request may concern.
    pub patient: PatientConstraint,
    /// Requests per second and burst, enforced by [`RateLimiter`](super::RateLimiter).
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    #[serde(default)]
    pub credentials: Credentials,
    /// How responses the request cannot bound are checked.
    #[serde(default)]
    pub response_check: ResponseCheck,
}

/// The integration's response check (`response_check:`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseCheck {
    /// What a response (or a Bundle entry) the integration may not see gets.
    #[serde(default)]
    pub on_violation: OnViolation,
}

/// What happens to a response that carries something the integration may not see.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnViolation {
    /// The whole response is replaced by a 403 OperationOutcome.
    #[default]
    Deny,
    /// The offending Bundle entries are left out; other responses are denied whole.
    Filter,
}

impl Integration {
    /// Active and not expired at `now`.
    #[must_use]
    pub fn is_live(&self, now: jiff::Timestamp) -> bool {
        self.status == IntegrationStatus::Active && self.expires.is_none_or(|e| now < e)
    }

    /// Why the integration is not live at `now` (`revoked`, `suspended`, `expired`), in the
    /// words of [`Reason::slug`](super::Reason::slug); `None` while it is live.
    #[must_use]
    pub fn refusal(&self, now: jiff::Timestamp) -> Option<&'static str> {
        match self.status {
            IntegrationStatus::Active => (!self.is_live(now)).then_some("expired"),
            status => Some(status.as_str()),
        }
    }

    /// The header that names the patient(s) requests may concern, for `mode: header`.
    #[must_use]
    pub fn patient_header(&self) -> Option<&HeaderName> {
        match &self.patient.mode {
            PatientMode::Header(header) => Some(header),
            PatientMode::Any | PatientMode::Compartment => None,
        }
    }
}

/// A tenant id, as the classifier accepts them: 1 to 64 of `[A-Za-z0-9-._~]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Tenant(String);

impl Tenant {
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Tenant {
    type Error = String;

    fn try_from(t: String) -> Result<Self, Self::Error> {
        let ok = (1..=64).contains(&t.len())
            && t != "."
            && t != ".."
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
        if ok {
            Ok(Tenant(t))
        } else {
            Err(format!(
                "`{t}` is not a tenant id (1-64 of A-Z a-z 0-9 - . _ ~)"
            ))
        }
    }
}

impl From<Tenant> for String {
    fn from(t: Tenant) -> Self {
        t.0
    }
}

/// Which patients a request may concern.
///
/// A request is *confined to patient P* when the server can only answer with P's data: a
/// Patient/P read, a search inside the Patient/P compartment, a search whose patient parameter
/// (`patient=P`, `subject=Patient/P`, ...) has P as its only value, an operation on Patient/P,
/// a create whose body references P and no other patient. Reads of other types by id are never
/// confined (whose Observation it is shows only in the response), nor are `_revinclude` and
/// `:iterate` searches (they pull in resources that point at the results, from any patient).
/// A batch or transaction is confined when every entry is, to the same patient.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PatientDoc", into = "PatientDoc")]
pub struct PatientConstraint {
    pub mode: PatientMode,
    /// Types outside the Patient compartment that may be used without confinement
    /// (`Medication`, `Practitioner`, ...). Each one listed is a deliberate choice.
    pub exempt: Vec<ResourceType>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PatientMode {
    /// Any patients, any number of them.
    Any,
    /// Every request confined to one patient, whichever.
    Compartment,
    /// Every request confined to one of the patients the named header lists (comma-separated
    /// ids), e.g. set by a portal backend from its session.
    Header(HeaderName),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum PatientModeName {
    Any,
    Compartment,
    Header,
}

/// The YAML form of [`PatientConstraint`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatientDoc {
    mode: PatientModeName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    header: Option<HeaderName>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    exempt: Vec<ResourceType>,
}

impl TryFrom<PatientDoc> for PatientConstraint {
    type Error = String;

    fn try_from(doc: PatientDoc) -> Result<Self, Self::Error> {
        let mode = match (doc.mode, doc.header) {
            (PatientModeName::Header, Some(header)) => PatientMode::Header(header),
            (PatientModeName::Header, None) => {
                return Err("mode: header needs `header:` naming the request header".into());
            }
            (_, Some(_)) => return Err("`header` only goes with mode: header".into()),
            (PatientModeName::Any, None) => PatientMode::Any,
            (PatientModeName::Compartment, None) => PatientMode::Compartment,
        };
        if mode == PatientMode::Any && !doc.exempt.is_empty() {
            return Err("`exempt` means nothing with mode: any".into());
        }
        if let Some(t) = doc
            .exempt
            .iter()
            .find(|t| patient_compartment_params(**t).is_some())
        {
            return Err(format!(
                "{t} is in the Patient compartment and cannot be exempt"
            ));
        }
        Ok(PatientConstraint {
            mode,
            exempt: doc.exempt,
        })
    }
}

impl From<PatientConstraint> for PatientDoc {
    fn from(c: PatientConstraint) -> Self {
        let (mode, header) = match c.mode {
            PatientMode::Any => (PatientModeName::Any, None),
            PatientMode::Compartment => (PatientModeName::Compartment, None),
            PatientMode::Header(h) => (PatientModeName::Header, Some(h)),
        };
        PatientDoc {
            mode,
            header,
            exempt: c.exempt,
        }
    }
}

/// A token bucket: `per_second` tokens a second, at most `burst` saved up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RateDoc", into = "RateDoc")]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateDoc {
    per_second: u32,
    burst: u32,
}

impl TryFrom<RateDoc> for RateLimit {
    type Error = String;

    fn try_from(doc: RateDoc) -> Result<Self, Self::Error> {
        if doc.per_second == 0 || doc.burst == 0 {
            return Err("per_second and burst must be at least 1 (revoke to stop traffic)".into());
        }
        Ok(RateLimit {
            per_second: doc.per_second,
            burst: doc.burst,
        })
    }
}

impl From<RateLimit> for RateDoc {
    fn from(r: RateLimit) -> Self {
        RateDoc {
            per_second: r.per_second,
            burst: r.burst,
        }
    }
}

#[cfg(feature = "test-support")]
impl crate::Policy {
    /// A policy of just these integrations (no upstreams, exceptions or break-glass rules), for
    /// the tests of crates that use policies.
    #[must_use]
    pub fn of_integrations(integrations: Vec<Integration>) -> Self {
        Self {
            integrations,
            ..Self::default()
        }
    }
}

#[cfg(feature = "test-support")]
impl Integration {
    /// An integration with just enough fields to load, for the tests of crates that use
    /// policies: `name`, in `status`, selecting the processes of uid 1, reading Observations
    /// from upstream `ehr`.
    #[must_use]
    pub fn minimal(name: &str, status: IntegrationStatus) -> Self {
        const YAML: &str = "name: x\nowner: o\npurpose: p\ndata_classes: [x]\n\
            expected_resources: [Observation]\nstatus: active\nworkload:\n  uid: 1\n\
            upstreams: [ehr]\nscopes: [system/Observation.rs]\npurposes_of_use: [TREAT]\n\
            patient:\n  mode: any\n";
        let mut integration: Self = serde_saphyr::from_str(YAML).expect("test integration");
        integration.name = name.into();
        integration.status = status;
        integration
    }
}
