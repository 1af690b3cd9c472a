//! What a decision tells ops beyond the request counters: refusals by integration and reason
//! (revoked identities still trying, unregistered workloads), and credentials shared between
//! identities. Labels carry policy names and fixed words only, never request values.

use fhirwall_policy::{Decision, Presented};
use tracing::warn;

use super::{
    Shared,
    sharing::{CredentialSharing, Sighting},
};
use crate::metrics::{Metrics, NO_INTEGRATION};

/// What one decision tells: a refusal by reason, and who presented the credential.
pub fn note(
    shared: &Shared,
    decision: &Decision<'_>,
    credential: Presented,
    integration: Option<&str>,
) {
    count_denial(&shared.metrics, decision, integration);
    note_credential(&shared.sharing, &shared.metrics, credential, integration);
}

/// Counts a refusal (enforced or, in report-only mode, would-be) in
/// `fhirwall_policy_denials_total`.
fn count_denial(metrics: &Metrics, decision: &Decision<'_>, integration: Option<&str>) {
    if let Some(reason) = decision.reason() {
        metrics
            .policy_denials
            .with_label_values(&[
                integration.unwrap_or(NO_INTEGRATION),
                reason.slug(),
                decision.label(),
            ])
            .inc();
    }
}

/// Notes which identity presents the request's credential. A credential another identity also
/// presents is counted per request, and logged the first time, with both identities and the
/// fingerprint's prefix (never the credential).
fn note_credential(
    sharing: &CredentialSharing,
    metrics: &Metrics,
    credential: Presented,
    integration: Option<&str>,
) {
    let Presented::Credential(fingerprint) = credential else {
        return;
    };
    let first = match sharing.observe(fingerprint, integration) {
        Sighting::Own => return,
        Sighting::Shared => None,
        Sighting::NewlyShared { first } => Some(first),
    };
    metrics
        .shared_credential_requests
        .with_label_values(&[integration.unwrap_or(NO_INTEGRATION)])
        .inc();
    if let Some(first) = first {
        metrics
            .shared_credentials
            .set(i64::try_from(sharing.shared()).unwrap_or(i64::MAX));
        warn!(
            credential = ?fingerprint,
            integration = integration.unwrap_or("(unregistered workload)"),
            first_presented_by = first.as_deref().unwrap_or("(unregistered workload)"),
            "a credential is presented by more than one identity"
        );
    }
}
