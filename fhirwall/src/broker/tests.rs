//! The broker against a token server written here: what it asks for, which token a request
//! gets and when, failure and recovery, and what a revocation does. The real authorization
//! server (oidc-provider) and the EHR's check of the token are in tests/tests/broker.rs.
#![expect(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use fhirwall_policy::{Integration, IntegrationStatus, Policy, TokenBroker};
use tokio::{io::AsyncWriteExt as _, net::TcpListener};

use super::{Broker, keys::KeyStore};
use crate::{
    audit::{AuditConfig, AuditSink, AuditWriter, tests_support},
    metrics::Metrics,
    outbound::read_request,
};

/// A token server: `/token` answers `t<n>` valid for `lifetime` seconds with the scope asked
/// for (or 503 while `down`), `/revoke` answers 200. Every form it receives is kept.
struct TokenServer {
    url: String,
    down: AtomicBool,
    issued: AtomicU32,
    lifetime: u64,
    forms: Mutex<Vec<(String, HashMap<String, String>)>>,
}

impl TokenServer {
    async fn start(lifetime: u64) -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Arc::new(Self {
            url: format!("http://{}", listener.local_addr().unwrap()),
            down: AtomicBool::new(false),
            issued: AtomicU32::new(0),
            lifetime,
            forms: Mutex::default(),
        });
        let serving = Arc::clone(&server);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(Arc::clone(&serving).serve(stream));
            }
        });
        server
    }

    async fn serve(self: Arc<Self>, mut stream: tokio::net::TcpStream) {
        let mut buf = Vec::new();
        while let Some((head, body)) = read_request(&mut stream, &mut buf).await {
            let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
            let form: HashMap<String, String> =
                form_urlencoded::parse(&body).into_owned().collect();
            // Grants what was asked for.
            let scope = form.get("scope").cloned().unwrap_or_default();
            self.forms.lock().unwrap().push((path.clone(), form));
            let (status, body) = if path == "/revoke" {
                ("200 OK", String::new())
            } else if self.down.load(Ordering::SeqCst) {
                (
                    "503 Service Unavailable",
                    r#"{"error":"temporarily_unavailable"}"#.into(),
                )
            } else {
                let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
                let body = serde_json::json!({
                    "access_token": format!("t{n}"),
                    "token_type": "Bearer",
                    "expires_in": self.lifetime,
                    "scope": scope,
                })
                .to_string();
                ("200 OK", body)
            };
            let answer = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if stream.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    fn forms(&self, path: &str) -> Vec<HashMap<String, String>> {
        let forms = self.forms.lock().unwrap();
        forms
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, f)| f.clone())
            .collect()
    }
}

struct Setup {
    broker: Arc<Broker>,
    server: Arc<TokenServer>,
    audit: std::path::PathBuf,
    /// Stops once the broker (the last sink) lets go of the store.
    writer: Option<AuditWriter>,
    _dir: tempfile::TempDir,
}

/// A broker for integration `lab` against a fresh token server, which is `down` at first when
/// asked.
async fn setup(lifetime: u64, down: bool) -> Setup {
    let server = TokenServer::start(lifetime).await;
    server.down.store(down, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let keys = KeyStore::new(dir.path().join("keys"));
    keys.generate("lab", jiff::Timestamp::now()).unwrap();
    let audit = dir.path().join("audit.db");
    let (sink, writer) = AuditSink::start(AuditConfig::new(&audit)).unwrap();
    let broker = Arc::new(Broker::new(
        keys,
        "node-1".into(),
        Arc::new(Metrics::new()),
        sink,
    ));
    broker.reconfigure(&policy(&server.url, IntegrationStatus::Active));
    Setup {
        broker,
        server,
        audit,
        writer: Some(writer),
        _dir: dir,
    }
}

fn policy(url: &str, status: IntegrationStatus) -> Policy {
    let mut lab = Integration::minimal("lab", status);
    lab.credentials.broker = Some(
        serde_json::from_value::<TokenBroker>(serde_json::json!({
            "token_endpoint": format!("{url}/token"),
            "revocation_endpoint": format!("{url}/revoke"),
            "client_id": "lab-client",
        }))
        .unwrap(),
    );
    Policy::of_integrations(vec![lab])
}

#[tokio::test]
async fn requests_get_the_current_token_and_a_new_one_before_it_expires() {
    let s = setup(2, false).await;
    let first = s.broker.authorization("lab").await.unwrap();
    assert_eq!(first, "Bearer t1");
    let form = &s.server.forms("/token")[0];
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(
        form["scope"], "system/Observation.rs",
        "the integration's own scopes"
    );
    assert_eq!(
        form["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert_eq!(form["client_assertion"].split('.').count(), 3);
    // Refreshed at 70-80% of the 2 s lifetime, before the margin (0.5 s) is reached.
    tokio::time::sleep(Duration::from_millis(1_700)).await;
    assert_eq!(s.broker.authorization("lab").await.unwrap(), "Bearer t2");
    let forms = s.server.forms("/token");
    assert_ne!(
        forms[0]["client_assertion"], forms[1]["client_assertion"],
        "a fresh assertion (and jti) each time"
    );
    let expiries = s.broker.expiries();
    assert_eq!(expiries.len(), 1);
    assert!(expiries[0].1 > 1.0 && expiries[0].1 <= 2.0, "{expiries:?}");
    // Each issuance is audited, by jti and scope, never with the token.
    let body = tests_support::body_of(&s.audit, 1);
    assert!(body.contains(r#""event":"token-issued""#), "{body}");
    assert!(
        body.contains(r#""scope":"system/Observation.rs""#),
        "{body}"
    );
    assert!(!body.contains("\"t1\""), "{body}");
}

#[tokio::test]
async fn a_failing_server_is_refused_at_once_and_recovery_is_picked_up() {
    let s = setup(60, true).await;
    let broker = &s.broker;
    let err = broker.authorization("lab").await.unwrap_err();
    assert!(err.to_string().contains("HTTP 503"), "{err}");
    // Within the retry floor the next request is refused without asking the server again.
    let asked = s.server.forms("/token").len();
    assert!(broker.authorization("lab").await.is_err());
    assert_eq!(s.server.forms("/token").len(), asked);
    s.server.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let header = broker.authorization("lab").await.unwrap();
    assert!(header.starts_with(b"Bearer t"), "{header:?}");
    let metrics = broker.metrics.render();
    assert!(
        metrics
            .contains(r#"fhirwall_broker_token_fetches_total{integration="lab",result="refused"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_revoked_integration_loses_its_token_here_and_at_the_server() {
    let s = setup(60, false).await;
    assert_eq!(s.broker.authorization("lab").await.unwrap(), "Bearer t1");
    s.broker
        .reconfigure(&policy(&s.server.url, IntegrationStatus::Revoked));
    assert!(s.broker.authorization("lab").await.is_err());
    let revoked = eventually(|| s.server.forms("/revoke").pop()).await;
    assert_eq!(revoked["token"], "t1");
    assert_eq!(revoked["token_type_hint"], "access_token");
    assert!(revoked.contains_key("client_assertion"));
    assert!(s.broker.expiries().is_empty());
    // Reinstated: a new token, not the revoked one.
    s.broker
        .reconfigure(&policy(&s.server.url, IntegrationStatus::Active));
    assert_eq!(s.broker.authorization("lab").await.unwrap(), "Bearer t2");
}

/// The first `Some` within five seconds.
async fn eventually<T>(mut probe: impl FnMut() -> Option<T>) -> T {
    for _ in 0..100 {
        if let Some(v) = probe() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing within five seconds")
}

#[tokio::test]
async fn a_narrower_policy_replaces_the_token() {
    let s = setup(60, false).await;
    assert_eq!(s.broker.authorization("lab").await.unwrap(), "Bearer t1");
    // Reloaded unchanged: the same token goes on.
    s.broker
        .reconfigure(&policy(&s.server.url, IntegrationStatus::Active));
    assert_eq!(s.broker.authorization("lab").await.unwrap(), "Bearer t1");
    // The integration's scopes narrowed: a new token asked for with the new scopes.
    let mut narrower = policy(&s.server.url, IntegrationStatus::Active);
    let lab = &mut narrower.integrations[0];
    lab.scopes =
        vec![fhirwall_policy::Scope::try_from("system/Observation.r".to_owned()).unwrap()].into();
    s.broker.reconfigure(&narrower);
    assert_eq!(s.broker.authorization("lab").await.unwrap(), "Bearer t2");
    let forms = s.server.forms("/token");
    assert_eq!(forms.last().unwrap()["scope"], "system/Observation.r");
    assert_eq!(
        eventually(|| s.server.forms("/revoke").pop()).await["token"],
        "t1"
    );
}

#[tokio::test]
async fn a_stopped_broker_lets_the_audit_writer_finish() {
    let mut s = setup(60, false).await;
    let (broker, writer) = (Arc::clone(&s.broker), s.writer.take().unwrap());
    assert!(broker.authorization("lab").await.is_ok());
    broker.stop();
    assert!(broker.authorization("lab").await.is_err());
    // The broker is still referenced (as the admin API holds it), yet the writer stops.
    let joined = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::task::spawn_blocking(move || writer.join()),
    )
    .await;
    assert!(joined.is_ok(), "the audit writer is still held open");
    drop(broker);
}
