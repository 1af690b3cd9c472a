//! Operator commands from the admin API, carried out by the control loop.

use std::sync::Arc;

use fhirwall_policy::{Policy, SessionTarget};
use serde_json::{Value, json};
use tracing::warn;

use super::{Control, overrides::Revocation};
use crate::{admin::Command, proxy::sidecar::PolicyState};

impl Control {
    /// Publishes `policy` as enforced: operator revocations applied, rate limiter carried over.
    pub(super) fn publish(&mut self, mut policy: Policy) {
        self.overrides.apply(&mut policy);
        self.metrics
            .set_policy(policy.expiries(), &policy.integrations_by_status());
        let limiter = self
            .policy
            .borrow()
            .limiter
            .updated(&policy, std::time::Instant::now());
        // Tokens follow the policy: a revoked or removed integration's is dropped now.
        self.sidecar.exchange.broker.reconfigure(&policy);
        self.policy.send_replace(Arc::new(PolicyState {
            policy: Arc::new(policy),
            limiter,
        }));
    }

    pub(super) async fn command(&mut self, command: Command) -> Result<Value, String> {
        match command {
            Command::Revoke {
                integration,
                reason,
                by,
            } => self.revoke(integration, reason, by).await,
            Command::Reinstate { integration, by } => self.reinstate(&integration, &by).await,
            Command::Revocations => Ok(json!(self.overrides.revoked)),
            Command::BreakGlassStart {
                policy,
                target,
                justification,
                duration,
                by,
            } => self.break_glass_start(&policy, target, justification, duration, by),
            Command::BreakGlassStop { target, by } => {
                let closed = self.sidecar.exchange.sessions.close(&target);
                warn!(?target, by, closed, "break-glass sessions closed");
                Ok(json!({ "closed": closed }))
            }
            Command::BreakGlassList => Ok(json!(self.sidecar.exchange.sessions.list())),
        }
    }

    /// Revokes at once: new requests are denied, the kernel refuses the integration's processes'
    /// new connects, and the revocation survives reloads and restarts.
    async fn revoke(
        &mut self,
        integration: String,
        reason: String,
        by: String,
    ) -> Result<Value, String> {
        if self.current_policy().integration(&integration).is_none() {
            return Err(format!(
                "no integration named `{integration}` in the policy"
            ));
        }
        let at = jiff::Timestamp::now();
        warn!(integration, by, "integration revoked by an operator");
        self.overrides
            .revoked
            .insert(integration.clone(), Revocation { reason, by, at });
        self.apply_overrides().await?;
        Ok(json!({ "revoked": integration, "at": at }))
    }

    async fn reinstate(&mut self, integration: &str, by: &str) -> Result<Value, String> {
        if self.overrides.revoked.remove(integration).is_none() {
            return Err(format!(
                "`{integration}` is not revoked by an operator (the policy file may say so)"
            ));
        }
        warn!(integration, by, "integration reinstated by an operator");
        self.apply_overrides().await?;
        Ok(json!({ "reinstated": integration }))
    }

    /// Saves the overrides, re-reads the policy files (so a reinstated integration gets its
    /// status from them again) and republishes; then the kernel verdicts follow.
    async fn apply_overrides(&mut self) -> Result<(), String> {
        self.overrides
            .save(&self.overrides_path())
            .map_err(|e| e.to_string())?;
        let policy = match Policy::load(&self.config.policies) {
            Ok(policy) => policy,
            // The files are broken since the last good load: apply to the policy in force.
            Err(_) => self.current_policy().as_ref().clone(),
        };
        self.publish(policy);
        let refreshed = self.rescan().await;
        refreshed.map_err(|e| format!("revocation saved, but updating the kernel failed: {e}"))
    }

    fn break_glass_start(
        &mut self,
        name: &str,
        target: SessionTarget,
        justification: String,
        duration: jiff::SignedDuration,
        by: String,
    ) -> Result<Value, String> {
        let policy = self.current_policy();
        let bg = policy
            .break_glass
            .iter()
            .find(|b| b.name == name)
            .ok_or_else(|| format!("no break-glass policy named `{name}`"))?;
        let session = bg
            .open(target, by, justification, duration, jiff::Timestamp::now())
            .map_err(|e| e.to_string())?;
        // Every use is alerted: the start here, each request under it in the audit trail.
        warn!(policy = name, target = ?session.target, by = %session.opened_by, until = %session.until, "BREAK-GLASS session opened");
        self.metrics.break_glass_sessions.inc();
        self.sidecar.exchange.sessions.open(session.clone());
        Ok(json!(session))
    }

    pub(super) fn current_policy(&self) -> Arc<Policy> {
        Arc::clone(&self.policy.borrow().policy)
    }

    pub(super) fn overrides_path(&self) -> std::path::PathBuf {
        self.config.state_dir.join("overrides.json")
    }
}
