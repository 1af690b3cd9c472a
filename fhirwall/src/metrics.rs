//! Prometheus metrics. Counters are bumped on the data plane (atomics, no locks); the kernel's
//! per-CPU counters are read at scrape time on the admin runtime.

use fhirwall_policy::IntegrationStatus;
use prometheus::{
    Encoder as _, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder, core::Collector,
};

/// What every metric name starts with (and `_`).
const PREFIX: &str = "fhirwall";

/// The `integration` label of a caller no integration registers (Prometheus treats an empty
/// label as absent).
pub const NO_INTEGRATION: &str = "";

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
    /// Leaf certificates minted for TLS server names, mints refused by the rate limit, and
    /// handshakes refused for a name no protected upstream has (`unserved`, nothing minted), as
    /// of the last scrape.
    tls_leaf_mints: IntGaugeVec,
    /// Protected upstream names and addresses the node CA's name constraints do not cover
    /// (served no certificate until the CA is rotated).
    pub tls_ca_uncovered_names: IntGauge,
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
    /// 1 while an enforcement layer (redirect, lsm) is verified in place.
    pub kernel_layer_active: IntGaugeVec,
    /// Times the agent found its redirect detached and attached it again.
    pub kernel_redirect_repairs: IntCounter,
    /// Connections to egress proxies, by what became of them.
    pub egress_proxy_tunnels: IntCounterVec,
    /// Token requests to authorization servers, by integration and result (`issued`,
    /// `refused`, `unreachable`, `bad_answer`, `no_key`).
    pub broker_token_fetches: IntCounterVec,
    /// Seconds each brokered integration's token has left (0 without one), as of the scrape.
    broker_token_expiry: GaugeVec,
    /// Grants of each integration no request needed in the usage window, by kind (`scope`,
    /// `operation`, `purpose`), as of the last reading of the trail.
    integration_unused_grants: IntGaugeVec,
    /// When each integration last made a request in the usage window (absent: none).
    integration_last_request: IntGaugeVec,
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
    /// Requests the policy refused and connects the kernel refused for policy reasons, by
    /// integration (empty when none matched), reason (`Reason::slug`) and decision (`deny`,
    /// `would-deny`, `kernel-refused`). Labels are policy names and fixed words only.
    pub policy_denials: IntCounterVec,
    /// Requests presenting a credential that another identity also presents, by integration.
    pub shared_credential_requests: IntCounterVec,
    /// Credentials seen from more than one identity since the agent started.
    pub shared_credentials: IntGauge,
    /// When each integration and exception of the policy in force expires, by kind and name.
    policy_expiry: IntGaugeVec,
    /// Integrations of the policy in force, by status (operator revocations included).
    integrations: IntGaugeVec,
    /// Responses read by the response check, by mode (`record`, `deny`, `filter`) and result
    /// (`passed`, `filtered`, `refused`, `cut`, `unread`).
    pub response_checks: IntCounterVec,
    /// Bundle entries and whole responses withheld from workloads, by integration and a fixed
    /// word for why (`type`, `patient`, `malformed`, `too-large`, `format`).
    pub response_withheld: IntCounterVec,
}

impl Metrics {
    #[must_use]
    #[expect(clippy::too_many_lines, reason = "one entry per metric, in one table")]
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some(PREFIX.into()), None).expect("static prefix is valid");
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
            tls_ca_uncovered_names: gauge(
                "tls_ca_uncovered_names",
                "Protected upstream names the node CA's name constraints do not cover",
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
            kernel_layer_active: gauge_vec(
                "kernel_layer_active",
                "1 while the enforcement layer is verified in place",
                &["layer"],
            ),
            kernel_redirect_repairs: counter(
                "kernel_redirect_repairs_total",
                "Times the redirect programs were found detached and attached again",
            ),
            egress_proxy_tunnels: counter_vec(
                "egress_proxy_tunnels_total",
                "Workload connections to egress proxies, by result",
                &["result"],
            ),
            broker_token_fetches: counter_vec(
                "broker_token_fetches_total",
                "Token requests to authorization servers, by integration and result",
                &["integration", "result"],
            ),
            broker_token_expiry: GaugeVec::new(
                Opts::new(
                    "broker_token_expiry_seconds",
                    "Seconds the brokered token of each integration has left (0 without one)",
                ),
                &["integration"],
            )
            .expect("valid static metric"),
            integration_unused_grants: gauge_vec(
                "integration_unused_grants",
                "Grants no request of the integration needed in the usage window, by kind",
                &["integration", "kind"],
            ),
            integration_last_request: gauge_vec(
                "integration_last_request_timestamp_seconds",
                "When the integration last made a request in the usage window",
                &["integration"],
            ),
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
            policy_denials: counter_vec(
                "policy_denials_total",
                "Requests and connects refused by policy, by integration and reason",
                &["integration", "reason", "decision"],
            ),
            shared_credential_requests: counter_vec(
                "shared_credential_requests_total",
                "Requests presenting a credential another identity also presents",
                &["integration"],
            ),
            shared_credentials: gauge(
                "shared_credentials",
                "Credentials presented by more than one identity since the agent started",
            ),
            policy_expiry: gauge_vec(
                "policy_expiry_timestamp_seconds",
                "When an integration or exception of the policy in force expires (Unix time)",
                &["kind", "name"],
            ),
            integrations: gauge_vec(
                "integrations",
                "Integrations of the policy in force, by status",
                &["status"],
            ),
            response_checks: counter_vec(
                "response_checks_total",
                "Responses read by the response check, by mode and result",
                &["mode", "result"],
            ),
            response_withheld: counter_vec(
                "response_withheld_total",
                "Bundle entries and whole responses withheld from workloads",
                &["integration", "reason"],
            ),
            registry,
        };
        m.register_all();
        m
    }

    fn collectors(&self) -> [Box<dyn Collector>; 35] {
        [
            Box::new(self.integration_unused_grants.clone()),
            Box::new(self.integration_last_request.clone()),
            Box::new(self.broker_token_fetches.clone()),
            Box::new(self.broker_token_expiry.clone()),
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
            Box::new(self.tls_ca_uncovered_names.clone()),
            Box::new(self.policy_reloads.clone()),
            Box::new(self.policy_stale.clone()),
            Box::new(self.protected_destinations.clone()),
            Box::new(self.kernel_workloads.clone()),
            Box::new(self.heartbeat_failures.clone()),
            Box::new(self.kernel_layer_active.clone()),
            Box::new(self.kernel_redirect_repairs.clone()),
            Box::new(self.egress_proxy_tunnels.clone()),
            Box::new(self.policy_denials.clone()),
            Box::new(self.shared_credential_requests.clone()),
            Box::new(self.shared_credentials.clone()),
            Box::new(self.policy_expiry.clone()),
            Box::new(self.integrations.clone()),
            Box::new(self.response_checks.clone()),
            Box::new(self.response_withheld.clone()),
        ]
    }

    fn register_all(&self) {
        for collector in self.collectors() {
            // Names are static and distinct: registration cannot collide.
            self.registry
                .register(collector)
                .expect("distinct static metric names");
        }
    }

    /// The full name of every metric, labelled ones included before any label value is seen
    /// (what dashboards and alert rules may refer to).
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        self.collectors()
            .iter()
            .flat_map(|c| {
                c.desc()
                    .into_iter()
                    .map(|d| format!("{PREFIX}_{}", d.fq_name))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Shows the policy now in force: when its integrations and exceptions expire (kind, name,
    /// time) and how many integrations are in each status. Series of removed entries go.
    pub fn set_policy<'a>(
        &self,
        expiries: impl IntoIterator<Item = (&'static str, &'a str, jiff::Timestamp)>,
        by_status: &[(IntegrationStatus, usize)],
    ) {
        self.policy_expiry.reset();
        for (kind, name, at) in expiries {
            self.policy_expiry
                .with_label_values(&[kind, name])
                .set(at.as_second());
        }
        self.integrations.reset();
        for (status, count) in by_status {
            self.integrations
                .with_label_values(&[status.as_str()])
                .set(i64::try_from(*count).unwrap_or(i64::MAX));
        }
    }

    /// Copies the kernel's counters, by name, into the exported gauges.
    /// Each enforcement layer by name, and whether it is in place.
    pub fn set_layers(&self, layers: &[(&'static str, bool)]) {
        for (name, active) in layers {
            self.kernel_layer_active
                .with_label_values(&[name])
                .set(i64::from(*active));
        }
    }

    pub fn set_kernel(&self, counters: &[(&'static str, u64)]) {
        for (name, value) in counters {
            self.kernel
                .with_label_values(&[name])
                .set(i64::try_from(*value).unwrap_or(i64::MAX));
        }
    }

    /// The seconds each brokered integration's token has left; series of integrations no
    /// longer brokered go.
    pub fn set_token_expiries(&self, expiries: &[(String, f64)]) {
        self.broker_token_expiry.reset();
        for (integration, left) in expiries {
            self.broker_token_expiry
                .with_label_values(&[integration.as_str()])
                .set(*left);
        }
    }

    /// What the last reading of the trail found unused, and each integration's last request.
    pub fn set_usage(&self, unused: &[crate::least_privilege::usage::Unused]) {
        self.integration_unused_grants.reset();
        self.integration_last_request.reset();
        for u in unused {
            for (kind, n) in [
                ("scope", u.scopes.len()),
                ("operation", u.operations.len()),
                ("purpose", u.purposes_of_use.len()),
            ] {
                self.integration_unused_grants
                    .with_label_values(&[u.integration.as_str(), kind])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            if let Some(at) = u.last_request {
                self.integration_last_request
                    .with_label_values(&[u.integration.as_str()])
                    .set(at.as_second());
            }
        }
    }

    /// Copies the leaf cache's counters (minted, refused by the rate limit).
    pub fn set_leaf_mints(&self, minted: u64, refused: u64, unserved: u64) {
        for (result, value) in [
            ("minted", minted),
            ("refused", refused),
            ("unserved", unserved),
        ] {
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
    use fhirwall_policy::{Exception, Integration, Policy};

    use super::*;
    use crate::kernel::KernelStats;

    fn show(metrics: &Metrics, policy: &Policy) {
        metrics.set_policy(policy.expiries(), &policy.integrations_by_status());
    }

    #[test]
    fn renders_prefixed_metrics_with_kernel_counters() {
        let metrics = Metrics::new();
        metrics.connections.with_label_values(&["attributed"]).inc();
        metrics.set_kernel(
            &KernelStats {
                redirected: 7,
                ..KernelStats::default()
            }
            .named(),
        );
        metrics.set_leaf_mints(3, 2, 1);
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

    fn integration(name: &str, status: IntegrationStatus, expires: Option<&str>) -> Integration {
        let mut i = Integration::minimal(name, status);
        i.expires = expires.map(|e| e.parse().expect("test timestamp"));
        i
    }

    #[test]
    fn shows_the_policy_in_force_and_forgets_what_left_it() {
        use IntegrationStatus::{Active, Revoked};
        let exception: Exception = serde_saphyr::from_str(
            "name: quarter\nintegration: lab\nscopes: [system/Encounter.rs]\n\
             reason: Q4 report\napprover: CMIO\nexpires: 2027-03-31T00:00:00Z\n",
        )
        .expect("test exception");
        let metrics = Metrics::new();
        let mut policy = Policy::of_integrations(vec![
            integration("lab", Active, Some("2027-01-01T00:00:00Z")),
            integration("fax", Revoked, None),
            integration("portal", Active, None),
        ]);
        policy.exceptions = vec![exception];
        show(&metrics, &policy);
        let text = metrics.render();
        for line in [
            "fhirwall_policy_expiry_timestamp_seconds{kind=\"integration\",name=\"lab\"} 1798761600",
            "fhirwall_policy_expiry_timestamp_seconds{kind=\"exception\",name=\"quarter\"} 1806451200",
            "fhirwall_integrations{status=\"active\"} 2",
            "fhirwall_integrations{status=\"revoked\"} 1",
            "fhirwall_integrations{status=\"suspended\"} 0",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(
            !text.contains("name=\"portal\""),
            "no expiry, no series: {text}"
        );
        // A reload without the exception and with lab revoked.
        show(
            &metrics,
            &Policy::of_integrations(vec![integration(
                "lab",
                Revoked,
                Some("2027-01-01T00:00:00Z"),
            )]),
        );
        let text = metrics.render();
        assert!(
            !text.contains("quarter"),
            "the removed exception's series goes: {text}"
        );
        assert!(
            text.contains("fhirwall_integrations{status=\"active\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("fhirwall_integrations{status=\"revoked\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn names_every_metric_before_any_label_is_seen() {
        let names = Metrics::new().names();
        for name in [
            "fhirwall_policy_denials_total",
            "fhirwall_shared_credential_requests_total",
            "fhirwall_policy_expiry_timestamp_seconds",
            "fhirwall_audit_commit_seconds",
            "fhirwall_kernel",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
        let unique: std::collections::BTreeSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
    }
}
