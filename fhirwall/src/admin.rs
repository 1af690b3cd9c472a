//! The admin API, on its own runtime so a slow scrape or query never stalls a request.
//!
//! Two listeners: a Unix socket (mode 0600, root only) for the operator commands (`fhirwall
//! workloads`, `revoke`, `reinstate`, `break-glass`, and the audit queries under `/v1/audit/`),
//! and an optional TCP address with read-only `/metrics` and `/healthz` for Prometheus. Requests
//! are tiny HTTP/1.1 exchanges, one per connection, answered with JSON.

mod client;
mod operator;
mod queries;
mod server;

use std::sync::Arc;

pub use client::{AdminClient, ClientError};
pub use operator::{Command, Envelope};
pub use queries::{AuditQueries, MAX_LIMIT, ParamError};
use serde::Serialize;
pub use server::{serve_metrics, serve_unix};

use crate::{
    audit::{self, AuditMonitor},
    kernel::{KernelStats, Layers, StatsReader},
    metrics::Metrics,
    proxy::{live::LiveConnections, tls::LeafCache},
};

/// What the admin API reads. Everything here is safe to share with the data plane.
pub struct AdminState {
    pub node: String,
    pub metrics: Arc<Metrics>,
    pub live: Arc<LiveConnections>,
    pub kernel_stats: Option<StatsReader>,
    /// Where operator commands go (the control loop); `None` refuses them.
    pub commands: Option<tokio::sync::mpsc::Sender<Envelope>>,
    /// The audit writer's health (does not keep the writer running).
    pub audit: AuditMonitor,
    /// Read-only audit queries on the operator socket.
    pub audit_queries: AuditQueries,
    /// The sidecar's leaf certificates, for their counters.
    pub leaves: Option<Arc<LeafCache>>,
    /// The enforcement layers as the control loop last verified them.
    pub layers: Option<tokio::sync::watch::Receiver<Option<Layers>>>,
    /// The token broker, for the seconds each brokered token has left.
    pub broker: Option<Arc<crate::broker::Broker>>,
}

/// `GET /v1/health` and `/healthz`. Answered 200 whatever the status: a restart frees no disk
/// and would only interrupt service, so liveness probes must not act on it; `status`, `audit`,
/// `layers` and the `fhirwall_audit_store_healthy` and `fhirwall_kernel_layer_active` metrics
/// carry the alert.
#[derive(Debug, Serialize)]
pub struct Health {
    pub node: String,
    /// `ok`; `degraded` while an older policy is in force; `failing` while the audit store
    /// cannot write and every request is refused, or while the redirect into the sidecar is
    /// not in place.
    pub status: &'static str,
    pub policy_stale: bool,
    pub audit: audit::Health,
    pub connections_live: usize,
    pub kernel: Option<KernelStats>,
    /// Which enforcement layers are in place (`redirect`, `lsm`), and why one is not.
    pub layers: Option<Layers>,
}

impl AdminState {
    fn kernel(&self) -> Option<KernelStats> {
        self.kernel_stats.as_ref().and_then(|r| r.read().ok())
    }

    fn health(&self) -> Health {
        let policy_stale = self.metrics.policy_stale.get() != 0;
        let audit = self.audit.health();
        let layers = self.layers.as_ref().and_then(|l| l.borrow().clone());
        let redirect_down = layers.as_ref().is_some_and(|l| !l.redirect.is_active());
        let status = match (&audit, policy_stale) {
            (audit::Health::Failing { .. }, _) => "failing",
            _ if redirect_down => "failing",
            (audit::Health::Healthy, true) => "degraded",
            (audit::Health::Healthy, false) => "ok",
        };
        Health {
            node: self.node.clone(),
            status,
            policy_stale,
            audit,
            connections_live: self.live.len(),
            kernel: self.kernel(),
            layers,
        }
    }

    fn metrics_text(&self) -> String {
        if let Some(stats) = self.kernel() {
            self.metrics.set_kernel(&stats.named());
        }
        let healthy = matches!(self.audit.health(), audit::Health::Healthy);
        self.metrics.audit_healthy.set(i64::from(healthy));
        if let Some(broker) = &self.broker {
            self.metrics.set_token_expiries(&broker.expiries());
        }
        if let Some(leaves) = &self.leaves {
            self.metrics.set_leaf_mints(
                leaves.mints(),
                leaves.refused_mints(),
                leaves.unserved_names(),
            );
        }
        self.metrics.render()
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests;
