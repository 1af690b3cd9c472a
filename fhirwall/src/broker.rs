//! The token broker: each integration with `credentials.broker` gets short-lived access tokens
//! of its own from the EHR's authorization server (SMART Backend Services), and the sidecar
//! sends the current one as `Authorization: Bearer` in place of whatever the workload sent.
//!
//! ```text
//! keys.rs   the integrations' signing keys: create, rotate with an overlap, publish as JWKS
//! grant.rs  one token request (signed assertion) or revocation with the server
//! ```
//!
//! One refresher task per integration runs on the control runtime: it fetches a token at once,
//! then again at 70-80% of its lifetime (jittered, so integrations do not refresh in step), and
//! backs off (1 s doubling to 30 s) while the server fails. It is the only one to talk to the
//! server for that integration, so there is at most one request in flight per integration. The
//! data plane only reads the current token; when there is none fit to send, it wakes the
//! refresher and waits a bounded time for its answer. A token is fit to send while more than a
//! margin of its lifetime is left, so an expired token is never sent.
//!
//! A revoked, suspended, expired or removed integration loses its refresher and its token at
//! once ([`Broker::reconfigure`], called whenever the policy in force changes), and the token is
//! revoked at the server when it has a revocation endpoint. Failures never fall back to another
//! credential: the request is refused with 503.

pub mod grant;
pub mod keys;

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use bytes::Bytes;
use fhirwall_policy::{Integration, Policy, TokenBroker};
use jiff::Timestamp;
use tokio::{sync::watch, task::AbortHandle};
use tracing::{info, warn};

use self::{
    grant::{GrantError, Issued},
    keys::KeyStore,
};
use crate::{
    audit::{AuditSink, CredentialEvent},
    metrics::Metrics,
    outbound::{Client, Target},
};

/// How long a request waits for a token the refresher is fetching.
const WAIT: Duration = Duration::from_secs(10);
/// After a failed fetch, requests are refused at once for this long rather than each asking
/// the server again.
const RETRY_FLOOR: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The least lifetime a token must have left to be sent (or a quarter of its lifetime, when
/// that is less): the server checks it when the request arrives, not when it left.
const MARGIN: Duration = Duration::from_secs(5);

/// Why a request gets no token.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TokenUnavailable(String);

/// The token broker of the agent.
pub struct Broker {
    keys: KeyStore,
    node: String,
    metrics: Arc<Metrics>,
    /// Taken at [`Broker::stop`]: the audit writer finishes only once every sink is gone.
    audit: std::sync::Mutex<Option<AuditSink>>,
    slots: RwLock<HashMap<String, Arc<Slot>>>,
}

/// One integration's token and its refresher.
struct Slot {
    integration: String,
    config: TokenBroker,
    /// The `scope` parameter requested.
    scope: String,
    expires: Option<Timestamp>,
    state: watch::Sender<TokenState>,
    wake: tokio::sync::Notify,
    task: std::sync::Mutex<Option<AbortHandle>>,
}

#[derive(Clone, Default)]
struct TokenState {
    token: Option<Arc<Current>>,
    /// The last attempt, when it failed.
    failure: Option<Failure>,
}

impl TokenState {
    /// No token, and none coming: what a request waiting for one is told.
    fn withdrawn(reason: &str) -> Self {
        Self {
            token: None,
            failure: Some(Failure {
                at: Instant::now(),
                reason: reason.to_owned(),
                backoff: MAX_BACKOFF,
            }),
        }
    }
}

struct Current {
    /// `Bearer <token>`.
    header: Bytes,
    access_token: String,
    issued_at: Instant,
    lifetime: Duration,
    refresh_at: Instant,
}

impl Slot {
    fn new(integration: &Integration, config: &TokenBroker) -> Self {
        Self {
            integration: integration.name.clone(),
            config: config.clone(),
            scope: config.scope_parameter(integration.scopes.list()),
            expires: integration.expires,
            state: watch::Sender::new(TokenState::default()),
            wake: tokio::sync::Notify::new(),
            task: std::sync::Mutex::default(),
        }
    }

    /// Stops the refresher.
    fn abort(&self) {
        if let Some(task) = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }

    /// Whether both ask the same server for the same grant until the same expiry.
    fn same_grant(&self, other: &Slot) -> bool {
        self.config == other.config && self.scope == other.scope && self.expires == other.expires
    }
}

impl Current {
    fn fit(&self, now: Instant) -> bool {
        let margin = MARGIN.min(self.lifetime / 4);
        now + margin < self.issued_at + self.lifetime
    }

    fn remaining(&self, now: Instant) -> Duration {
        (self.issued_at + self.lifetime).saturating_duration_since(now)
    }
}

#[derive(Clone)]
struct Failure {
    at: Instant,
    reason: String,
    backoff: Duration,
}

impl Broker {
    #[must_use]
    pub fn new(keys: KeyStore, node: String, metrics: Arc<Metrics>, audit: AuditSink) -> Self {
        Self {
            keys,
            node,
            metrics,
            audit: std::sync::Mutex::new(Some(audit)),
            slots: RwLock::default(),
        }
    }

    /// At shutdown: every refresher stops, every token is dropped (not revoked: the tokens
    /// expire on their own, and a restart should not revoke what it will fetch again), and the
    /// broker lets go of the audit writer.
    pub fn stop(&self) {
        let slots = std::mem::take(
            &mut *self
                .slots
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for slot in slots.values() {
            slot.abort();
            slot.state
                .send_replace(TokenState::withdrawn("the agent is stopping"));
        }
        self.audit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
    }

    /// Appends an audit entry; one that cannot be written is counted and logged.
    fn note(&self, event: CredentialEvent) {
        let audit = self
            .audit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let result = match audit.as_ref() {
            Some(sink) => sink.note(event),
            None => Err(crate::audit::AuditError::WriterGone),
        };
        if let Err(e) = result {
            self.metrics.audit_failures.inc();
            warn!(error = %crate::error_chain(&e), "audit record of a brokered token lost");
        }
    }

    /// `Bearer <token>` for `integration`, fit to send. Waits (a bounded time) only when there
    /// is no such token yet.
    pub async fn authorization(&self, integration: &str) -> Result<Bytes, TokenUnavailable> {
        let slot = self.slot(integration).ok_or_else(|| {
            TokenUnavailable(format!("no token is brokered for {integration} now"))
        })?;
        let mut state = slot.state.subscribe();
        {
            let now = Instant::now();
            let current = state.borrow_and_update();
            if let Some(token) = current.token.as_ref().filter(|t| t.fit(now)) {
                return Ok(token.header.clone());
            }
            if let Some(f) = current
                .failure
                .as_ref()
                .filter(|f| f.at.elapsed() < RETRY_FLOOR)
            {
                return Err(TokenUnavailable(f.reason.clone()));
            }
        }
        slot.wake.notify_one();
        let answer = async {
            loop {
                if state.changed().await.is_err() {
                    return Err(TokenUnavailable("the integration's broker stopped".into()));
                }
                let current = state.borrow_and_update();
                if let Some(token) = current.token.as_ref().filter(|t| t.fit(Instant::now())) {
                    return Ok(token.header.clone());
                }
                if let Some(f) = &current.failure {
                    return Err(TokenUnavailable(f.reason.clone()));
                }
            }
        };
        tokio::time::timeout(WAIT, answer)
            .await
            .unwrap_or_else(|_| {
                Err(TokenUnavailable(
                    "the authorization server did not answer in time".into(),
                ))
            })
    }

    fn slot(&self, integration: &str) -> Option<Arc<Slot>> {
        let slots = self
            .slots
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.get(integration).cloned()
    }

    /// Follows the policy in force: a refresher for every live integration with a broker, none
    /// for the others (their tokens dropped, and revoked at the server where it can be). Must
    /// run inside the control runtime, where the refreshers are spawned.
    pub fn reconfigure(self: &Arc<Self>, policy: &Policy) {
        let now = Timestamp::now();
        // What each live brokered integration's slot must be; one that differs in anything
        // (the server, the client, the scopes it asks for, the expiry) is replaced, so a token
        // never outlives a narrowing of the policy.
        let wanted: HashMap<&str, Slot> = policy
            .integrations
            .iter()
            .filter(|i| i.is_live(now))
            .filter_map(|i| {
                let config = i.credentials.broker.as_ref()?;
                Some((i.name.as_str(), Slot::new(i, config)))
            })
            .collect();
        let mut slots = self
            .slots
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let stale: Vec<String> = slots
            .iter()
            .filter(|(name, slot)| {
                wanted
                    .get(name.as_str())
                    .is_none_or(|w| !w.same_grant(slot))
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some(slot) = slots.remove(&name) {
                self.retire(&slot);
            }
        }
        for (name, slot) in wanted {
            if slots.contains_key(name) {
                continue;
            }
            let slot = Arc::new(slot);
            let task = tokio::spawn(Arc::clone(self).refresh(Arc::clone(&slot)));
            *slot
                .task
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task.abort_handle());
            slots.insert(name.to_owned(), slot);
        }
    }

    /// Stops a slot's refresher, drops its token, and revokes it at the server.
    fn retire(self: &Arc<Self>, slot: &Arc<Slot>) {
        slot.abort();
        let token = slot
            .state
            .send_replace(TokenState::withdrawn(
                "the integration's token was withdrawn",
            ))
            .token;
        info!(integration = slot.integration, "brokered token dropped");
        if let Some(token) = token {
            tokio::spawn(Arc::clone(self).revoke_at_server(Arc::clone(slot), token));
        }
    }

    /// The seconds each brokered integration's token has left (0 without one), for metrics.
    pub fn expiries(&self) -> Vec<(String, f64)> {
        let now = Instant::now();
        let slots = self
            .slots
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slots
            .values()
            .map(|slot| {
                let state = slot.state.borrow();
                let left = state
                    .token
                    .as_ref()
                    .map_or(0.0, |t| t.remaining(now).as_secs_f64());
                (slot.integration.clone(), left)
            })
            .collect()
    }

    /// The refresher of one integration: fetch, wait until the refresh time (or a wake from a
    /// request that found no token fit to send), fetch again.
    async fn refresh(self: Arc<Self>, slot: Arc<Slot>) {
        let mut client: Option<Client> = None;
        loop {
            let due = next_attempt(&slot.state.borrow(), Instant::now());
            if let Some(due) = due {
                let woken = tokio::select! {
                    () = tokio::time::sleep_until(due.into()) => false,
                    () = slot.wake.notified() => true,
                };
                // A request that found no token woke us while the fetch it needed was already
                // under way: the token it waited for is here.
                let fit = |s: &TokenState| s.token.as_ref().is_some_and(|t| t.fit(Instant::now()));
                if woken && fit(&slot.state.borrow()) {
                    continue;
                }
            }
            if slot.expires.is_some_and(|e| e <= Timestamp::now()) {
                // Expired while running: the policy decision refuses its requests already.
                slot.state
                    .send_replace(TokenState::withdrawn("the integration has expired"));
                return;
            }
            let previous = slot.state.borrow().failure.clone();
            match self.fetch(&slot, &mut client).await {
                Ok(issued) => self.issued(&slot, issued),
                Err(e) => self.failed(&slot, &e, previous.as_ref()),
            }
        }
    }

    async fn fetch(&self, slot: &Slot, client: &mut Option<Client>) -> Result<Issued, GrantError> {
        let now = Timestamp::now();
        let key = self.keys.signing_key(&slot.integration, now)?;
        let client = match client {
            Some(client) => client,
            None => client.insert(connect(slot, slot.config.token_endpoint.as_str())?),
        };
        grant::request_token(client, &slot.config, &slot.scope, &key, now).await
    }

    fn issued(&self, slot: &Slot, issued: Issued) {
        let now = Instant::now();
        // The token's characters were checked (b64token): a valid header value.
        let header = Bytes::from(format!("Bearer {}", issued.access_token));
        // 70-80% of the lifetime: early enough for one retry before the margin, and spread.
        let share = 0.7 + 0.1 * f64::from(random_u16()) / f64::from(u16::MAX);
        let token = Current {
            header,
            access_token: issued.access_token.clone(),
            issued_at: now,
            lifetime: issued.lifetime,
            refresh_at: now + issued.lifetime.mul_f64(share),
        };
        slot.state.send_replace(TokenState {
            token: Some(Arc::new(token)),
            failure: None,
        });
        self.count(slot, "issued");
        info!(
            integration = slot.integration,
            jti = issued.jti,
            expires = %issued.expires,
            "brokered token issued"
        );
        let event = CredentialEvent {
            jti: Some(issued.jti),
            expires: Some(issued.expires),
            scope: Some(issued.scope),
            ..self.event(slot, "token-issued")
        };
        self.note(event);
    }

    fn failed(&self, slot: &Slot, e: &GrantError, previous: Option<&Failure>) {
        let backoff = previous.map_or(Duration::from_secs(1), |f| (f.backoff * 2).min(MAX_BACKOFF));
        let reason = format!(
            "the integration's token could not be obtained from its authorization server: {}",
            crate::error_chain(e)
        );
        warn!(integration = slot.integration, error = %crate::error_chain(e), "token request failed");
        self.count(slot, e.label());
        slot.state.send_modify(|s| {
            s.failure = Some(Failure {
                at: Instant::now(),
                reason,
                backoff,
            });
            // A token that is no longer fit to send is not kept as if it were.
            if s.token.as_ref().is_some_and(|t| !t.fit(Instant::now())) {
                s.token = None;
            }
        });
    }

    fn event(&self, slot: &Slot, event: &str) -> CredentialEvent {
        CredentialEvent {
            time: crate::audit::now(),
            node: self.node.clone(),
            integration: slot.integration.clone(),
            event: event.to_owned(),
            client_id: slot.config.client_id.clone(),
            server: slot.config.token_endpoint.to_string(),
            jti: None,
            expires: None,
            scope: None,
            outcome: None,
        }
    }

    fn count(&self, slot: &Slot, result: &str) {
        self.metrics
            .broker_token_fetches
            .with_label_values(&[slot.integration.as_str(), result])
            .inc();
    }

    async fn revoke_at_server(self: Arc<Self>, slot: Arc<Slot>, token: Arc<Current>) {
        let outcome = match &slot.config.revocation_endpoint {
            None => "dropped (the server has no revocation endpoint)".to_owned(),
            Some(endpoint) => {
                let now = Timestamp::now();
                let result = async {
                    let key = self.keys.signing_key(&slot.integration, now)?;
                    let mut client = connect(&slot, endpoint.as_str())?;
                    grant::revoke_token(&mut client, &slot.config, &token.access_token, &key, now)
                        .await
                }
                .await;
                match result {
                    Ok(()) => "revoked at the authorization server".to_owned(),
                    Err(e) => {
                        warn!(integration = slot.integration, error = %crate::error_chain(&e), "token revocation failed");
                        format!(
                            "revocation at the authorization server failed: {}",
                            crate::error_chain(&e)
                        )
                    }
                }
            }
        };
        let event = CredentialEvent {
            outcome: Some(outcome),
            ..self.event(&slot, "token-revoked")
        };
        self.note(event);
    }
}

/// When the refresher tries next: at the token's refresh time, after a backoff from the last
/// failure, or at once (`None`).
fn next_attempt(state: &TokenState, now: Instant) -> Option<Instant> {
    if let Some(f) = &state.failure {
        return Some(f.at + f.backoff);
    }
    let token = state.token.as_ref()?;
    (token.refresh_at > now).then_some(token.refresh_at)
}

fn connect(slot: &Slot, url: &str) -> Result<Client, GrantError> {
    let target = Target::parse(url)?;
    Ok(Client::with_ca(target, slot.config.ca_file.as_deref())?)
}

fn random_u16() -> u16 {
    ring::rand::generate::<[u8; 2]>(&ring::rand::SystemRandom::new())
        .map_or(u16::MAX / 2, |r| u16::from_ne_bytes(r.expose()))
}

#[cfg(test)]
mod tests;
