//! The admin API, on its own runtime so a slow scrape or query never stalls a request.
//!
//! Two listeners: a Unix socket (mode 0600, root only) for the operator commands (`fhirwall
//! workloads`, `revoke`, `reinstate`, `break-glass`), and an optional TCP address with read-only
//! `/metrics` and `/healthz` for Prometheus. Requests are tiny HTTP/1.1 exchanges, one per
//! connection, answered with JSON.

mod client;
mod operator;
mod server;

use std::sync::Arc;

pub use client::{AdminClient, ClientError};
pub use operator::{Command, Envelope};
use serde::Serialize;
pub use server::{serve_metrics, serve_unix};

use crate::{
    kernel::{KernelStats, StatsReader},
    metrics::Metrics,
    proxy::live::LiveConnections,
};

/// What the admin API reads. Everything here is safe to share with the data plane.
pub struct AdminState {
    pub node: String,
    pub metrics: Arc<Metrics>,
    pub live: Arc<LiveConnections>,
    pub kernel_stats: Option<StatsReader>,
    /// Where operator commands go (the control loop); `None` refuses them.
    pub commands: Option<tokio::sync::mpsc::Sender<Envelope>>,
}

/// `GET /v1/health` and `/healthz`.
#[derive(Debug, Serialize)]
pub struct Health {
    pub node: String,
    pub status: &'static str,
    pub policy_stale: bool,
    pub connections_live: usize,
    pub kernel: Option<KernelStats>,
}

impl AdminState {
    fn kernel(&self) -> Option<KernelStats> {
        self.kernel_stats.as_ref().and_then(|r| r.read().ok())
    }

    fn health(&self) -> Health {
        let policy_stale = self.metrics.policy_stale.get() != 0;
        Health {
            node: self.node.clone(),
            status: if policy_stale { "degraded" } else { "ok" },
            policy_stale,
            connections_live: self.live.len(),
            kernel: self.kernel(),
        }
    }

    fn metrics_text(&self) -> String {
        if let Some(stats) = self.kernel() {
            self.metrics.set_kernel(&stats);
        }
        self.metrics.render()
    }
}
