//! Policy: who may call which FHIR endpoint, as typed values loaded strictly from YAML files.
//!
//! A policy directory holds `*.yaml` / `*.yml` files, each one or more documents separated by
//! `---` lines, each document naming its `kind`: `Upstream` (a protected FHIR endpoint) or
//! `Integration` (a named non-human identity with owner, purpose, workload selector, status and
//! expiry). Loading is all-or-nothing: every problem is reported with file, line and field, and a
//! reload that fails keeps the last good policy.

mod load;
mod model;
mod selector;

pub use load::{LoadError, Problem};
pub use model::{
    Enforcement, HostPort, Integration, IntegrationStatus, Mode, TlsMode, Upstream, UpstreamTls,
};
pub use selector::WorkloadSelector;

use crate::attribution::Workload;

/// A validated policy: every cross-reference resolved, no overlapping selectors.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub upstreams: Vec<Upstream>,
    pub integrations: Vec<Integration>,
}

impl Policy {
    /// Loads and validates every policy file in `dir`.
    pub fn load(dir: &std::path::Path) -> Result<Self, LoadError> {
        load::load_dir(dir, jiff::Timestamp::now())
    }

    /// The integration whose selector matches the workload. Selectors never overlap (checked at
    /// load), so there is at most one.
    #[must_use]
    pub fn integration_for(&self, workload: &Workload) -> Option<&Integration> {
        self.integrations
            .iter()
            .find(|i| i.workload.matches(workload))
    }

    #[must_use]
    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|u| u.name == name)
    }
}
