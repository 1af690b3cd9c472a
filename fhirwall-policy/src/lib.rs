//! Policy: who may call which FHIR endpoint, for what, on which data, as typed values loaded
//! strictly from YAML files, and the pure [`decide`] function that applies them per request.
//!
//! A policy directory holds `*.yaml` / `*.yml` files, each one or more documents separated by
//! `---` lines, each naming its `kind`:
//!
//! - `Upstream`: a protected FHIR endpoint (addresses, base path, TLS, tenant mode).
//! - `Integration`: a named non-human identity: owner, purpose, workload selector, status and
//!   expiry, SMART scopes, operations, purposes of use, patient constraint, tenants, rate limit,
//!   credentials.
//! - `Exception`: extra scopes for one integration, approved, until a required expiry.
//! - `BreakGlass`: who may be covered by an emergency session, for how long, with what.
//! - `Settings`: policy-wide settings (the purpose-of-use header); at most one.
//!
//! Loading is all-or-nothing: every problem is reported with file, line and field, and a
//! reload that fails keeps the last good policy. `policies/` at the repository root is a
//! commented example for one EHR host.
//!
//! ```text
//! load.rs        files -> documents -> typed values -> cross-document checks -> Policy
//! scope.rs       SMART v1/v2 scopes;  grants.rs  scopes compiled into per-type tables
//! integration.rs, credential.rs, broker.rs, operation.rs, purpose.rs, exception.rs: the model
//! decide.rs      Subject + FhirRequest -> Decision (pure); rate.rs: token buckets (not pure)
//! response.rs    Decision -> how the response is checked (fhirwall_fhir::response rules)
//! ```

mod broker;
mod credential;
mod decide;
mod exception;
mod grants;
mod integration;
mod load;
mod model;
mod operation;
mod purpose;
mod rate;
mod replay;
mod response;
mod scope;
mod selector;
mod workload;

use std::path::Path;

use fhirwall_fhir::ClassifyConfig;
use serde::{Deserialize, Serialize};

pub use self::{
    broker::{Endpoint, TokenBroker},
    credential::{
        ClientCertificate, Credentials, Fingerprint, HeaderName, InjectCredential, SecretPath,
    },
    decide::{
        Confinement, Decision, HeaderValue, Need, Part, Presented, Reach, Reason, Rule, Subject,
        Why, confined_by_request, decide, decide_bound,
    },
    exception::{
        BreakGlass, BreakGlassError, BreakGlassSession, Exception, Invokers, SessionTarget,
    },
    grants::Scopes,
    integration::{
        Integration, OnViolation, PatientConstraint, PatientMode, RateLimit, ResponseCheck, Tenant,
    },
    load::{LoadError, Problem},
    model::{
        Applied, Enforcement, Honoured, HostPort, IntegrationStatus, Mode, QueryParamName,
        ServerProfile, TlsMode, Upstream, UpstreamTenant, UpstreamTls,
    },
    operation::OperationRule,
    purpose::{ACT_REASON_SYSTEM, PurposeOfUse, PurposeSet, RequestedPurpose},
    rate::{RateLimiter, RateOutcome},
    replay::{RecordedSubject, ReplayInput, Replayed},
    response::response_rules,
    scope::{Perm, Perms, Scope, ScopeContext, ScopeParam},
    selector::WorkloadSelector,
    workload::{ContainerRuntime, Workload},
};

/// One integration of one loaded [`Policy`], by position: meaningful only with the policy it
/// came from ([`Policy::integration_ref_for`]), which its holder keeps beside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntegrationRef(usize);

/// Policy-wide settings (`kind: Settings`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The request header that states the purpose of use (default `X-Purpose-Of-Use`).
    #[serde(default = "default_purpose_header")]
    pub purpose_header: HeaderName,
}

fn default_purpose_header() -> HeaderName {
    // A valid token, so the conversion cannot fail.
    HeaderName::try_from("X-Purpose-Of-Use".to_owned()).unwrap_or_else(|_| unreachable!())
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            purpose_header: default_purpose_header(),
        }
    }
}

/// A validated policy: every cross-reference resolved, no overlapping selectors.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub settings: Settings,
    pub upstreams: Vec<Upstream>,
    pub integrations: Vec<Integration>,
    pub exceptions: Vec<Exception>,
    pub break_glass: Vec<BreakGlass>,
    /// Classifier settings of each upstream, same order.
    pub(crate) classify: Vec<ClassifyConfig>,
}

impl Policy {
    /// Loads and validates every policy file in `dir`, as of now.
    pub fn load(dir: &Path) -> Result<Self, LoadError> {
        Self::load_at(dir, jiff::Timestamp::now())
    }

    /// Loads `dir` as of `now` (expiries are checked against it).
    pub fn load_at(dir: &Path, now: jiff::Timestamp) -> Result<Self, LoadError> {
        load::load_dir(dir, now)
    }

    /// Parses policy files given as (name, text), without touching the file system (CA files
    /// are not checked).
    pub fn from_sources<'s>(
        sources: impl IntoIterator<Item = (&'s Path, &'s str)>,
        now: jiff::Timestamp,
    ) -> Result<Self, LoadError> {
        load::parse_sources(sources, now)
    }

    /// The integration whose selector matches the workload. Selectors never overlap (checked at
    /// load), so there is at most one.
    #[must_use]
    pub fn integration_for(&self, workload: &Workload) -> Option<&Integration> {
        self.integration_at(self.integration_ref_for(workload)?)
    }

    /// When each integration and exception expires, as (`"integration"` or `"exception"`,
    /// name, time).
    pub fn expiries(&self) -> impl Iterator<Item = (&'static str, &str, jiff::Timestamp)> {
        self.integrations
            .iter()
            .filter_map(|i| Some(("integration", i.name.as_str(), i.expires?)))
            .chain(
                self.exceptions
                    .iter()
                    .map(|e| ("exception", e.name.as_str(), e.expires)),
            )
    }

    /// How many integrations are in each status.
    #[must_use]
    pub fn integrations_by_status(&self) -> [(IntegrationStatus, usize); 3] {
        [
            IntegrationStatus::Active,
            IntegrationStatus::Suspended,
            IntegrationStatus::Revoked,
        ]
        .map(|status| {
            let count = self
                .integrations
                .iter()
                .filter(|i| i.status == status)
                .count();
            (status, count)
        })
    }

    /// The handle of the integration whose selector matches `workload` (at most one: selectors
    /// never overlap), to keep beside this policy instead of looking the integration up by name.
    #[must_use]
    pub fn integration_ref_for(&self, workload: &Workload) -> Option<IntegrationRef> {
        self.integrations
            .iter()
            .position(|i| i.workload.matches(workload))
            .map(IntegrationRef)
    }

    /// The integration a handle from this policy names.
    #[must_use]
    pub fn integration_at(&self, handle: IntegrationRef) -> Option<&Integration> {
        self.integrations.get(handle.0)
    }

    #[must_use]
    pub fn integration(&self, name: &str) -> Option<&Integration> {
        self.integrations.iter().find(|i| i.name == name)
    }

    #[must_use]
    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|u| u.name == name)
    }

    /// The classifier settings for an upstream, built once at load.
    #[must_use]
    pub fn classify_config(&self, upstream: &str) -> Option<&ClassifyConfig> {
        let index = self.upstreams.iter().position(|u| u.name == upstream)?;
        self.classify.get(index)
    }
}
