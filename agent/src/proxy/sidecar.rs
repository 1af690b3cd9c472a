//! The sidecar's decision for each request, in order: classify (`fhir`), decide (`policy`),
//! record (`audit`, committed before anything moves), then forward upstream or answer with an
//! OperationOutcome. One [`Exchange`] handles one connection, built at accept with that
//! connection's attribution.

mod record;
mod secrets;
mod sessions;
mod sharing;
mod signals;

use std::{net::SocketAddr, sync::Arc, time::Instant};

use bytes::Bytes;
use tokio::sync::watch;
use tracing::warn;

pub use self::{
    secrets::{SecretError, Secrets},
    sessions::BreakGlassSessions,
    sharing::CredentialSharing,
};
use super::{
    http::{self, BodyMode, ExchangeId, Handler, LocalResponse, Method, RequestHead},
    outcome::{self, IssueType},
    tls::UpstreamKey,
};
use crate::{
    attribution::Workload,
    audit::{self, AuditSink, CommittedSeq},
    fhir::{self, HttpRequest},
    metrics::Metrics,
    policy::{self, Integration, Policy, RateLimiter, RateOutcome, Subject},
};

/// The policy in force and the rate limiter that goes with it, swapped together on reload.
pub struct PolicyState {
    pub policy: Arc<Policy>,
    pub limiter: RateLimiter,
}

/// What every connection's handler shares.
pub struct Shared {
    pub node: String,
    pub policy: watch::Receiver<Arc<PolicyState>>,
    pub audit: AuditSink,
    pub metrics: Arc<Metrics>,
    pub secrets: Secrets,
    pub sessions: Arc<BreakGlassSessions>,
    /// Which identity first presented each credential (`fhirwall_shared_credential_*`).
    pub sharing: CredentialSharing,
}

/// The handler of one connection.
pub struct Exchange {
    shared: Arc<Shared>,
    workload: Arc<Workload>,
    client: SocketAddr,
    upstream: Arc<str>,
    /// The integration matched under a given policy (matching walks every selector: once per
    /// connection and policy, not per request).
    matched: Option<(Arc<PolicyState>, Option<String>)>,
    /// The committed record of the request in flight, completed in `finish`.
    pending: Option<(CommittedSeq, String)>,
}

impl Exchange {
    #[must_use]
    pub fn new(
        shared: Arc<Shared>,
        workload: Arc<Workload>,
        client: SocketAddr,
        upstream: Arc<str>,
    ) -> Self {
        Self {
            shared,
            workload,
            client,
            upstream,
            matched: None,
            pending: None,
        }
    }

    /// The workload's integration under the current policy (also for the live-connection list).
    pub fn integration_name(&mut self) -> Option<String> {
        self.policy().1
    }

    /// The current policy and the name of the workload's integration under it.
    fn policy(&mut self) -> (Arc<PolicyState>, Option<String>) {
        let current = Arc::clone(&self.shared.policy.borrow());
        match &self.matched {
            Some((state, name)) if Arc::ptr_eq(state, &current) => (current, name.clone()),
            _ => {
                let name = current
                    .policy
                    .integration_for(&self.workload)
                    .map(|i| i.name.clone());
                self.matched = Some((Arc::clone(&current), name.clone()));
                (current, name)
            }
        }
    }

    /// Commits the record, then answers locally; 503 if the record cannot be committed.
    async fn answer(
        &mut self,
        record: audit::Record,
        response: LocalResponse,
        id: ExchangeId,
    ) -> http::Decision<UpstreamKey> {
        self.shared
            .metrics
            .requests
            .with_label_values(&[record.decision.as_str()])
            .inc();
        match self.shared.audit.commit(record).await {
            Ok(seq) => {
                self.pending = Some((seq, id.to_string()));
                http::Decision::Respond(response)
            }
            Err(e) => self.audit_unavailable(&e, id),
        }
    }

    fn audit_unavailable(
        &self,
        e: &audit::AuditError,
        id: ExchangeId,
    ) -> http::Decision<UpstreamKey> {
        self.shared.metrics.audit_failures.inc();
        warn!(error = %e, "audit store cannot write: refusing the request");
        http::Decision::Respond(outcome::unavailable(
            "the audit trail cannot be written; nothing was forwarded",
            id,
        ))
    }

    /// Allowed (or observed): rate limit, commit, rewrite, forward.
    async fn forward(
        &mut self,
        mut record: audit::Record,
        integration: Option<&Integration>,
        limiter: &RateLimiter,
        head: &mut RequestHead,
        id: ExchangeId,
    ) -> http::Decision<UpstreamKey> {
        if let Some(i) = integration
            && let RateOutcome::Limited { retry_after } = limiter.check(&i.name, Instant::now())
        {
            record::limited(&mut record, &i.name);
            let reason = format!(
                "rate limit of integration {} exceeded; retry in {} ms",
                i.name,
                retry_after.as_millis()
            );
            return self
                .answer(
                    record,
                    outcome::operation_outcome(429, IssueType::Throttled, &reason, id),
                    id,
                )
                .await;
        }
        let credential = match integration.and_then(|i| i.credentials.inject.as_ref()) {
            Some(inject) => match self.shared.secrets.read(inject.value_file.path()) {
                Ok(value) => Some((inject.header.as_str().to_owned(), value)),
                Err(e) => {
                    warn!(error = %e, "credential to inject is unreadable: refusing the request");
                    record::internal_failure(
                        &mut record,
                        "the credential to inject is unavailable",
                    );
                    return self
                        .answer(
                            record,
                            outcome::unavailable(
                                "the integration's upstream credential is unavailable",
                                id,
                            ),
                            id,
                        )
                        .await;
                }
            },
            None => None,
        };
        self.shared
            .metrics
            .requests
            .with_label_values(&[record.decision.as_str()])
            .inc();
        let seq = match self.shared.audit.commit(record).await {
            Ok(seq) => seq,
            Err(e) => return self.audit_unavailable(&e, id),
        };
        self.pending = Some((seq, id.to_string()));
        if let Some((name, value)) = credential
            && head.headers.insert(Bytes::from(name), value).is_err()
        {
            return http::Decision::Respond(outcome::unavailable(
                "the integration's upstream credential is malformed",
                id,
            ));
        }
        let _ = head.headers.insert(
            Bytes::from_static(b"X-Request-Id"),
            Bytes::from(id.to_string()),
        );
        http::Decision::Forward {
            upstream: UpstreamKey::new(&self.upstream, integration.map(|i| i.name.as_str())),
        }
    }
}

impl Handler for Exchange {
    type Upstream = UpstreamKey;

    /// Bodies classification must read: Bundles posted to the base, form-encoded `_search`,
    /// PATCH documents, and creates/updates (their resource may name the patient).
    fn body_mode(&mut self, _id: ExchangeId, head: &RequestHead) -> BodyMode {
        match head.method() {
            Method::Post | Method::Patch | Method::Put => BodyMode::Buffer,
            _ => BodyMode::Stream,
        }
    }

    async fn decide(
        &mut self,
        id: ExchangeId,
        head: &mut RequestHead,
        body: Option<&[u8]>,
    ) -> http::Decision<UpstreamKey> {
        let (state, integration_name) = self.policy();
        let policy = &state.policy;
        let integration = integration_name
            .as_deref()
            .and_then(|n| policy.integration(n));
        let mut record = record::base(
            &self.shared.node,
            &id,
            &self.workload,
            self.client,
            &self.upstream,
            head,
        );
        record.integration.clone_from(&integration_name);
        let Some(config) = policy.classify_config(&self.upstream) else {
            record::unknown_upstream(&mut record);
            return self
                .answer(
                    record,
                    outcome::forbidden("the destination is no longer a protected upstream", id),
                    id,
                )
                .await;
        };
        let headers: Vec<(&str, &[u8])> = head
            .headers
            .iter()
            .filter_map(|h| Some((std::str::from_utf8(h.name()).ok()?, h.value())))
            .collect();
        let Ok(target) = std::str::from_utf8(head.target()) else {
            record::malformed(&mut record, 400, "request target is not UTF-8");
            return self
                .answer(
                    record,
                    outcome::invalid("the request target is not valid UTF-8", id),
                    id,
                )
                .await;
        };
        let Ok(method) = std::str::from_utf8(head.method().as_bytes()) else {
            record::malformed(&mut record, 400, "method is not UTF-8");
            return self
                .answer(record, outcome::invalid("the method is not valid", id), id)
                .await;
        };
        let request = HttpRequest {
            method,
            target,
            headers: &headers,
            body,
        };
        let fhir = match fhir::classify(&request, config) {
            Ok(fhir) => fhir,
            Err(e) => {
                let (status, reason) = (e.http_status(), e.to_string());
                record::malformed(&mut record, status, &reason);
                let code = record::issue_type(e.issue_type());
                return self
                    .answer(
                        record,
                        outcome::operation_outcome(status, code, &reason, id),
                        id,
                    )
                    .await;
            }
        };
        let now = jiff::Timestamp::now();
        let mut subject = Subject::from_headers(policy, integration, &self.upstream, &headers, now);
        subject.user = self.workload.user.as_deref();
        let session =
            self.shared
                .sessions
                .find(policy, integration_name.as_deref(), subject.user, now);
        subject.break_glass = session.as_ref();
        let decision = policy::decide(policy, &subject, &fhir);
        record::decided(&mut record, &fhir, &subject, &decision, session.as_ref());
        signals::note(
            &self.shared,
            &decision,
            subject.credential,
            integration_name.as_deref(),
        );
        if decision.is_break_glass() {
            warn!(integration = ?integration_name, correlation = %id, "break-glass access");
            self.shared.metrics.break_glass.inc();
        }
        match decision {
            policy::Decision::Deny { reason, .. } => {
                let text = reason.to_string();
                record.status = Some(403);
                self.answer(record, outcome::forbidden(&text, id), id).await
            }
            policy::Decision::Allow { .. } | policy::Decision::WouldDeny { .. } => {
                self.forward(record, integration, &state.limiter, head, id)
                    .await
            }
        }
    }

    fn finish(&mut self, outcome: &http::Outcome<'_>) {
        let m = &self.shared.metrics;
        m.request_seconds.observe(outcome.duration.as_secs_f64());
        m.bytes
            .with_label_values(&["upstream"])
            .inc_by(outcome.request_body_bytes);
        m.bytes
            .with_label_values(&["downstream"])
            .inc_by(outcome.response_body_bytes);
        if let Some(e) = outcome.error
            && e.error_source() == http::ErrorSource::Upstream
        {
            m.upstream_errors.with_label_values(&[e.reason()]).inc();
        }
        let Some((seq, correlation)) = self.pending.take() else {
            return;
        };
        let completion = record::completion(seq, correlation, outcome);
        if let Err(e) = self.shared.audit.complete(completion) {
            m.audit_failures.inc();
            warn!(error = %e, "audit completion lost");
        }
    }
}
