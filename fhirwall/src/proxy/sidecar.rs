//! The sidecar's decision for each request, in order: classify (`fhir`), decide (`policy`),
//! record (`audit`, committed before anything moves), then forward upstream with only the
//! headers that passed and `Host` set to the upstream's name, or answer with an
//! OperationOutcome; then check the response (`fhirwall_fhir::response`) before the workload sees it,
//! bind the URLs it issues to the integration, and record whose data it carried. One
//! [`ConnectionHandler`] handles one connection, built at accept with that connection's attribution.
//!
//! ```text
//! plan.rs      decided request -> refuse | forward { headers to strip, response check }
//! bindings.rs  paging links and export URLs the server issued, per integration
//! inspect.rs   the response check behind the HTTP engine's inspector
//! respond.rs   after the response: bind what it issued, count, record
//! ```

mod bindings;
mod inspect;
mod plan;
pub mod record;
mod respond;
mod secrets;
mod sessions;
mod sharing;
mod signals;

use std::{net::SocketAddr, sync::Arc, time::Instant};

use bytes::Bytes;
use fhirwall_fhir::{self as fhir, HttpRequest, IssueType};
use fhirwall_http::{
    self as http, BodyFraming, BodyMode, ExchangeId, Handler, LocalResponse, Method, RequestHead,
    ResponseHead,
};
use fhirwall_policy::{
    self as policy, Integration, IntegrationRef, Policy, RateLimiter, RateOutcome, Subject,
    Workload,
};
use tokio::sync::watch;
use tracing::warn;

pub use self::{
    bindings::Bindings,
    secrets::{SecretError, Secrets},
    sessions::BreakGlassSessions,
    sharing::CredentialSharing,
};
use self::{
    bindings::BoundKind,
    inspect::{PendingCheck, ResponseGuard},
    plan::{Decided, Plan},
};
use super::{operation_outcome, tls::UpstreamKey};
use crate::{
    audit::{self, AuditSink, CommittedSeq},
    broker::Broker,
    metrics::Metrics,
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
    /// Paging links and export URLs the server issued, and to which integration.
    pub bindings: Bindings,
    /// `sidecar.max_response_hold_bytes`.
    pub max_response_hold: usize,
    /// Short-lived tokens of the integrations with `credentials.broker`.
    pub broker: Arc<Broker>,
}

/// The handler of one connection.
pub struct ConnectionHandler {
    shared: Arc<Shared>,
    workload: Arc<Workload>,
    client: SocketAddr,
    upstream: Arc<str>,
    /// The integration matched under a given policy (matching walks every selector: once per
    /// connection and policy, not per request).
    matched: Option<(Arc<PolicyState>, Option<IntegrationRef>)>,
    /// The record of the request in flight (appended, or committed), completed in `finish`.
    pending: Option<(CommittedSeq, String)>,
    /// A read forwarded before its record was durable; its response waits for it.
    durable: Option<audit::Appended>,
    /// The check the forwarded request's response gets, until the response arrives.
    check: Option<PendingCheck>,
    /// What the response check saw, for the completion record.
    checked: Option<record::Checked>,
    /// Whom the URLs the response in flight issues are bound to.
    issued: Option<plan::Issued>,
}

impl ConnectionHandler {
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
            durable: None,
            check: None,
            checked: None,
            issued: None,
        }
    }

    /// The workload's integration under the current policy (also for the live-connection list).
    pub fn integration_name(&mut self) -> Option<String> {
        let (state, handle) = self.policy();
        Some(state.policy.integration_at(handle?)?.name.clone())
    }

    /// The current policy and the workload's integration in it. Matching walks every selector:
    /// it is done once per connection and policy, not per request.
    fn policy(&mut self) -> (Arc<PolicyState>, Option<IntegrationRef>) {
        let current = Arc::clone(&self.shared.policy.borrow());
        match &self.matched {
            Some((state, handle)) if Arc::ptr_eq(state, &current) => (current, *handle),
            _ => {
                let handle = current.policy.integration_ref_for(&self.workload);
                self.matched = Some((Arc::clone(&current), handle));
                (current, handle)
            }
        }
    }

    /// Commits the record, then answers locally; 503 if the record cannot be committed.
    async fn answer(
        &mut self,
        record: audit::Record,
        response: LocalResponse,
        id: ExchangeId,
    ) -> http::Dispatch<UpstreamKey> {
        self.shared
            .metrics
            .requests
            .with_label_values(&[record.decision.as_str()])
            .inc();
        match self.shared.audit.commit(record).await {
            Ok(seq) => {
                self.pending = Some((seq, id.to_string()));
                http::Dispatch::Respond(response)
            }
            Err(e) => self.audit_unavailable(&e, id),
        }
    }

    /// Records why a request policy allowed is answered here after all, and answers it.
    async fn refuse(
        &mut self,
        mut record: audit::Record,
        refusal: &Refusal<'_>,
        id: ExchangeId,
    ) -> http::Dispatch<UpstreamKey> {
        refusal.note(&mut record);
        let answer = refusal.answer(id);
        self.answer(record, answer, id).await
    }

    fn audit_unavailable(
        &self,
        e: &audit::AuditError,
        id: ExchangeId,
    ) -> http::Dispatch<UpstreamKey> {
        self.shared.metrics.audit_failures.inc();
        warn!(error = %e, "audit store cannot write: refusing the request");
        http::Dispatch::Respond(operation_outcome::unavailable(
            "the audit trail cannot be written; nothing was forwarded",
            id,
        ))
    }

    /// Allowed (or observed): rate limit, record, rewrite, forward. A read-only request goes
    /// out once its record is appended to the journal, and its response waits in
    /// [`Handler::release`] until the record is durable; any other waits for durability here.
    async fn forward(
        &mut self,
        record: audit::Record,
        integration: Option<&Integration>,
        limiter: &RateLimiter,
        head: &mut RequestHead,
        read_only: bool,
        id: ExchangeId,
    ) -> http::Dispatch<UpstreamKey> {
        if let Some(i) = integration
            && let RateOutcome::Limited { retry_after } = limiter.check(&i.name, Instant::now())
        {
            let refusal = Refusal::RateLimited {
                integration: &i.name,
                retry_after,
            };
            return self.refuse(record, &refusal, id).await;
        }
        let credential = match self.upstream_credential(integration).await {
            Ok(credential) => credential,
            Err(refusal) => return self.refuse(record, &refusal, id).await,
        };
        self.shared
            .metrics
            .requests
            .with_label_values(&[record.decision.as_str()])
            .inc();
        let audit = &self.shared.audit;
        let recorded = if read_only {
            audit.append(record).await.map(|appended| {
                let seq = appended.seq;
                self.durable = Some(appended);
                seq
            })
        } else {
            audit.commit(record).await
        };
        let seq = match recorded {
            Ok(seq) => seq,
            Err(e) => return self.audit_unavailable(&e, id),
        };
        self.pending = Some((seq, id.to_string()));
        if let Some((name, value)) = credential
            && head.headers.insert(Bytes::from(name), value).is_err()
        {
            return http::Dispatch::Respond(operation_outcome::unavailable(
                "the integration's upstream credential is malformed",
                id,
            ));
        }
        let _ = head.headers.insert(
            Bytes::from_static(b"X-Request-Id"),
            Bytes::from(id.to_string()),
        );
        http::Dispatch::Forward {
            upstream: UpstreamKey::new(&self.upstream, integration.map(|i| i.name.as_str())),
        }
    }
}

impl ConnectionHandler {
    /// What the integration presents upstream in place of the workload's credential: its
    /// brokered token, or the secret the policy names, or nothing (the workload's own header
    /// goes through). Never a fallback from one to another.
    async fn upstream_credential(
        &self,
        integration: Option<&Integration>,
    ) -> Result<Option<(String, Bytes)>, Refusal<'static>> {
        let Some(i) = integration else {
            return Ok(None);
        };
        if i.credentials.broker.is_some() {
            return match self.shared.broker.authorization(&i.name).await {
                Ok(header) => Ok(Some(("Authorization".to_owned(), header))),
                Err(e) => Err(Refusal::TokenUnavailable(e.to_string())),
            };
        }
        let Some(inject) = &i.credentials.inject else {
            return Ok(None);
        };
        match self.shared.secrets.read(inject.value_file.path()) {
            Ok(value) => Ok(Some((inject.header.as_str().to_owned(), value))),
            Err(e) => {
                warn!(error = %e, "credential to inject is unreadable: refusing the request");
                Err(Refusal::CredentialUnavailable)
            }
        }
    }

    /// Reads and decides one request: `Err` answers it at once (it cannot be classified).
    fn plan(
        &self,
        policy: &Policy,
        integration: Option<&Integration>,
        record: &mut audit::Record,
        head: &RequestHead,
        body: Option<&[u8]>,
        id: ExchangeId,
    ) -> Result<Plan, LocalResponse> {
        let Some(config) = policy.classify_config(&self.upstream) else {
            record::unknown_upstream(record);
            return Err(operation_outcome::forbidden(
                "the destination is no longer a protected upstream",
                id,
            ));
        };
        if !matches!(head.framing(), BodyFraming::None | BodyFraming::Length(0))
            && matches!(head.method(), Method::Get | Method::Head | Method::Delete)
        {
            let reason =
                "a GET, HEAD or DELETE request carries a body, which fhirwall does not read";
            record::malformed(record, 400, reason);
            return Err(operation_outcome::invalid(reason, id));
        }
        let headers: Vec<(&str, &[u8])> = head
            .headers
            .iter()
            .filter_map(|h| Some((std::str::from_utf8(h.name()).ok()?, h.value())))
            .collect();
        let Ok(target) = std::str::from_utf8(head.target()) else {
            record::malformed(record, 400, "request target is not UTF-8");
            return Err(operation_outcome::invalid(
                "the request target is not valid UTF-8",
                id,
            ));
        };
        let Ok(method) = std::str::from_utf8(head.method().as_bytes()) else {
            record::malformed(record, 400, "method is not UTF-8");
            return Err(operation_outcome::invalid("the method is not valid", id));
        };
        let now = jiff::Timestamp::now();
        let mut subject = Subject::from_headers(policy, integration, &self.upstream, &headers, now);
        subject.user = self.workload.user.as_deref();
        let name = integration.map(|i| i.name.as_str());
        let session = self.shared.sessions.find(policy, name, subject.user, now);
        subject.break_glass = session.as_ref();
        let bound = self
            .shared
            .bindings
            .find(&self.upstream, target, Instant::now());
        if let Some(bound) = bound.clone().filter(|b| b.kind != BoundKind::Page) {
            let strip = fhir::screen_bound(&headers, config);
            return Ok(self.plan_bound(&subject, bound, strip, record, id));
        }
        let request = HttpRequest {
            method,
            target,
            headers: &headers,
            body,
        };
        let fhir = fhir::classify(&request, config).map_err(|e| {
            let (status, reason) = (e.http_status(), e.to_string());
            record::malformed(record, status, &reason);
            let code = record::issue_type(e.issue_type());
            operation_outcome::answer(status, code, &reason, id)
        })?;
        let continuation =
            bound.filter(|b| !fhir.query.paging.is_empty() && Some(b.integration.as_str()) == name);
        subject.continuation = continuation.is_some();
        let decided = Decided {
            policy,
            subject: &subject,
            fhir: &fhir,
            continuation,
            session: session.as_ref(),
            accept: head.headers.get("accept"),
        };
        Ok(self.plan_fhir(decided, record, id))
    }
}

impl Handler for ConnectionHandler {
    type Upstream = UpstreamKey;
    type Inspector = ResponseGuard;

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
    ) -> http::Dispatch<UpstreamKey> {
        let (state, handle) = self.policy();
        let policy = &state.policy;
        let integration = handle.and_then(|h| policy.integration_at(h));
        let mut record = record::base(
            &self.shared.node,
            &id,
            &self.workload,
            self.client,
            &self.upstream,
            head,
        );
        record.integration = integration.map(|i| i.name.clone());
        self.check = None;
        let plan = match self.plan(policy, integration, &mut record, head, body, id) {
            Ok(plan) => plan,
            Err(answer) => return self.answer(record, answer, id).await,
        };
        match plan {
            Plan::Refuse(answer) => self.answer(record, answer, id).await,
            Plan::Forward {
                check,
                strip,
                read_only,
            } => {
                for name in &strip {
                    head.headers.remove(name);
                }
                let authority = policy
                    .upstream(&self.upstream)
                    .map(policy::Upstream::authority)
                    .unwrap_or_default();
                if head.headers.set_host(&authority).is_err() {
                    return self.refuse(record, &Refusal::UpstreamUnnamed, id).await;
                }
                self.check = Some(check);
                let read_only = read_only && matches!(head.method(), Method::Get | Method::Head);
                self.forward(record, integration, &state.limiter, head, read_only, id)
                    .await
            }
        }
    }

    /// A read forwarded before its record was durable: nothing of its response goes out until
    /// it is; if it cannot be made durable, the response is dropped for a 503.
    async fn release(&mut self, id: ExchangeId) -> Result<(), LocalResponse> {
        let Some(appended) = self.durable.take() else {
            return Ok(());
        };
        match appended.durable().await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.shared.metrics.audit_failures.inc();
                warn!(error = %e, "audit record not durable: the response is withheld");
                Err(operation_outcome::unavailable(
                    "the audit trail cannot be written; the response was withheld",
                    id,
                ))
            }
        }
    }

    fn inspect(
        &mut self,
        id: ExchangeId,
        head: &ResponseHead,
        has_body: bool,
    ) -> Option<ResponseGuard> {
        self.response_guard(id, head, has_body)
    }

    fn inspected(&mut self, _id: ExchangeId, guard: ResponseGuard) {
        self.after_response(&guard);
    }

    fn finish(&mut self, outcome: &http::Finished<'_>) {
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
        let checked = self.checked.take();
        // No response came back to hold (an upstream failure): nothing to wait for.
        self.durable = None;
        let Some((seq, correlation)) = self.pending.take() else {
            return;
        };
        let completion = record::completion(seq, correlation, outcome, checked.as_ref());
        if let Err(e) = self.shared.audit.complete(completion) {
            m.audit_failures.inc();
            warn!(error = %e, "audit completion lost");
        }
    }

    /// Engine errors are answered as FHIR OperationOutcomes, like every other refusal.
    fn error_response(&self, err: &http::HttpError, id: ExchangeId) -> Option<LocalResponse> {
        operation_outcome::for_error(err, id)
    }
}

/// Why a request that policy allowed is answered by the sidecar instead of forwarded: each
/// written once, as its audit note and its answer.
enum Refusal<'a> {
    /// The integration's rate limit is exceeded.
    RateLimited {
        integration: &'a str,
        retry_after: std::time::Duration,
    },
    /// The credential to inject cannot be read.
    CredentialUnavailable,
    /// The integration's brokered token cannot be had, and why.
    TokenUnavailable(String),
    /// The upstream's configured authority is not a valid `Host`.
    UpstreamUnnamed,
}

impl Refusal<'_> {
    fn note(&self, record: &mut audit::Record) {
        match self {
            Refusal::RateLimited { integration, .. } => record::limited(record, integration),
            Refusal::CredentialUnavailable => {
                record::internal_failure(record, "the credential to inject is unavailable");
            }
            Refusal::TokenUnavailable(reason) => record::token_unavailable(record, reason),
            Refusal::UpstreamUnnamed => {
                record::internal_failure(record, "the upstream has no valid name");
            }
        }
    }

    fn answer(&self, id: ExchangeId) -> LocalResponse {
        match self {
            Refusal::RateLimited {
                integration,
                retry_after,
            } => {
                let reason = format!(
                    "rate limit of integration {integration} exceeded; retry in {} ms",
                    retry_after.as_millis()
                );
                operation_outcome::answer(429, IssueType::Throttled, &reason, id)
            }
            Refusal::CredentialUnavailable => operation_outcome::unavailable(
                "the integration's upstream credential is unavailable",
                id,
            ),
            Refusal::TokenUnavailable(reason) => {
                operation_outcome::unavailable(&format!("{reason}; nothing was forwarded"), id)
            }
            Refusal::UpstreamUnnamed => {
                operation_outcome::unavailable("the upstream has no valid name", id)
            }
        }
    }
}
