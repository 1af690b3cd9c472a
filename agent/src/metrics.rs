//! Prometheus metrics. Counters are bumped on the data plane (atomics, no locks); the kernel's
//! per-CPU counters are read at scrape time on the admin runtime.

use prometheus::{
    Encoder as _, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::kernel::KernelStats;

/// Every metric fhirwall exports, registered once.
pub struct Metrics {
    registry: Registry,
    /// Connections accepted by the sidecar, by outcome (`attributed`, `unattributed`).
    pub connections: IntCounterVec,
    /// Connections the sidecar is serving now.
    pub connections_live: IntGauge,
    /// Exchanges that failed on the upstream side, by reason.
    pub upstream_errors: IntCounterVec,
    /// Body bytes carried, by direction (`upstream`, `downstream`).
    pub bytes: IntCounterVec,
    /// Kernel counters (redirected, refused by reason, ...), as of the last scrape.
    kernel: IntGaugeVec,
    /// Kernel events received, by kind.
    pub kernel_events: IntCounterVec,
    /// Leaf certificates minted for TLS server names, and mints refused by the rate limit, as
    /// of the last scrape.
    tls_leaf_mints: IntGaugeVec,
    /// Policy reloads, by result (`ok`, `error`).
    pub policy_reloads: IntCounterVec,
    /// 1 while the last policy reload failed and an older policy is in force.
    pub policy_stale: IntGauge,
    /// Protected destinations in the kernel map.
    pub protected_destinations: IntGauge,
    /// Workload entries in the kernel map, by verdict.
    pub kernel_workloads: IntGaugeVec,
    /// Heartbeats the agent failed to write.
    pub heartbeat_failures: IntCounter,
    /// Requests decided by the sidecar, by decision (allow, deny, would-deny, malformed).
    pub requests: IntCounterVec,
    /// Time from the first byte of a request to the end of its response.
    pub request_seconds: Histogram,
    /// Audit records that could not be written (each one a request refused with 503).
    pub audit_failures: IntCounter,
    /// 1 while the audit store accepts writes; 0 while every request is refused with 503.
    pub audit_healthy: IntGauge,
    /// How long each group commit of the audit store took, fsync included: requests wait this
    /// long (and the time they queued behind the commit before) before they are forwarded.
    pub audit_commit_seconds: Histogram,
    /// Requests allowed under break-glass.
    pub break_glass: IntCounter,
    /// Break-glass sessions opened.
    pub break_glass_sessions: IntCounter,
    /// Connections the sidecar refused before HTTP (unattributed, TLS handshake failures).
    pub connections_refused: IntCounterVec,
}

impl Metrics {
    #[must_use]
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("fhirwall".into()), None).expect("static prefix is valid");
        let m = Self {
            connections: counter_vec(
                "connections_total",
                "Connections accepted by the sidecar",
                &["outcome"],
            ),
            connections_live: gauge("connections_live", "Connections the sidecar is serving now"),
            upstream_errors: counter_vec(
                "upstream_errors_total",
                "Exchanges that failed on the upstream side",
                &["kind"],
            ),
            bytes: counter_vec("body_bytes_total", "Body bytes carried", &["direction"]),
            kernel: gauge_vec("kernel", "Kernel program counters", &["counter"]),
            tls_leaf_mints: gauge_vec(
                "tls_leaf_mints",
                "Leaf certificates minted for client server names, by result",
                &["result"],
            ),
            kernel_events: counter_vec(
                "kernel_events_total",
                "Events from the kernel programs",
                &["kind"],
            ),
            policy_reloads: counter_vec(
                "policy_reloads_total",
                "Policy loads and reloads",
                &["result"],
            ),
            policy_stale: gauge("policy_stale", "1 while the newest policy failed to load"),
            protected_destinations: gauge(
                "protected_destinations",
                "Protected destinations in the kernel",
            ),
            kernel_workloads: gauge_vec(
                "kernel_workloads",
                "Workload entries in the kernel map",
                &["verdict"],
            ),
            heartbeat_failures: counter("heartbeat_failures_total", "Failed kernel heartbeats"),
            requests: counter_vec(
                "requests_total",
                "Requests decided by the sidecar",
                &["decision"],
            ),
            request_seconds: histogram(
                "request_seconds",
                "Request duration through the sidecar",
                &[
                    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                    1.0, 2.5, 10.0,
                ],
            ),
            audit_failures: counter(
                "audit_failures_total",
                "Audit records that could not be written",
            ),
            audit_healthy: gauge(
                "audit_store_healthy",
                "1 while the audit store accepts writes (0: requests are refused with 503)",
            ),
            audit_commit_seconds: histogram(
                "audit_commit_seconds",
                "Duration of each audit group commit, fsync included",
                &[
                    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 0.5, 1.0, 5.0,
                ],
            ),
            break_glass: counter(
                "break_glass_requests_total",
                "Requests allowed under break-glass",
            ),
            break_glass_sessions: counter(
                "break_glass_sessions_total",
                "Break-glass sessions opened",
            ),
            connections_refused: counter_vec(
                "connections_refused_total",
                "Connections refused before HTTP",
                &["reason"],
            ),
            registry,
        };
        m.register_all();
        m
    }

    fn register_all(&self) {
        let collectors: [Box<dyn prometheus::core::Collector>; 20] = [
            Box::new(self.break_glass_sessions.clone()),
            Box::new(self.requests.clone()),
            Box::new(self.request_seconds.clone()),
            Box::new(self.audit_failures.clone()),
            Box::new(self.audit_healthy.clone()),
            Box::new(self.audit_commit_seconds.clone()),
            Box::new(self.break_glass.clone()),
            Box::new(self.connections_refused.clone()),
            Box::new(self.connections.clone()),
            Box::new(self.connections_live.clone()),
            Box::new(self.upstream_errors.clone()),
            Box::new(self.bytes.clone()),
            Box::new(self.kernel.clone()),
            Box::new(self.kernel_events.clone()),
            Box::new(self.tls_leaf_mints.clone()),
            Box::new(self.policy_reloads.clone()),
            Box::new(self.policy_stale.clone()),
            Box::new(self.protected_destinations.clone()),
            Box::new(self.kernel_workloads.clone()),
            Box::new(self.heartbeat_failures.clone()),
        ];
        for collector in collectors {
            // Names are static and distinct: registration cannot collide.
            self.registry
                .register(collector)
                .expect("distinct static metric names");
        }
    }

    /// Copies the kernel's counters into the exported gauges.
    pub fn set_kernel(&self, stats: &KernelStats) {
        let pairs = [
            ("redirected", stats.redirected),
            ("refused_denied", stats.refused_denied),
            ("refused_unregistered", stats.refused_unregistered),
            ("refused_agent_down", stats.refused_agent_down),
            ("refused_store_full", stats.refused_store_full),
            ("refused_not_tcp", stats.refused_not_tcp),
            ("conns_full", stats.conns_full),
            ("events_dropped", stats.events_dropped),
            ("agent_passed", stats.agent_passed),
        ];
        for (name, value) in pairs {
            self.kernel
                .with_label_values(&[name])
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        }
    }

    /// Copies the leaf cache's counters (minted, refused by the rate limit).
    pub fn set_leaf_mints(&self, minted: u64, refused: u64) {
        for (result, value) in [("minted", minted), ("refused", refused)] {
            self.tls_leaf_mints
                .with_label_values(&[result])
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        }
    }

    /// The text exposition format.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn histogram(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect("static histogram options are valid")
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("static metric definition")
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect("static metric definition")
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition")
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_metrics_with_kernel_counters() {
        let metrics = Metrics::new();
        metrics.connections.with_label_values(&["attributed"]).inc();
        metrics.set_kernel(&KernelStats {
            redirected: 7,
            ..KernelStats::default()
        });
        metrics.set_leaf_mints(3, 2);
        let text = metrics.render();
        assert!(
            text.contains("fhirwall_tls_leaf_mints{result=\"refused\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("fhirwall_connections_total{outcome=\"attributed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("fhirwall_kernel{counter=\"redirected\"} 7"),
            "{text}"
        );
    }
}
