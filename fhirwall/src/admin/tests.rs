//! The admin router against a seeded audit store: the audit routes answer what `fhirwall audit`
//! answers, only on the operator socket; health carries the audit state.

use std::{path::Path, sync::Arc};

use serde_json::Value;

use super::{
    AdminClient, AdminState, AuditQueries,
    server::{self, Request, Surface},
};
use crate::{
    audit::{
        self, AuditConfig, AuditSink, AuditWriter,
        tests_support::{edit_journal, seed_fixed, temp_store},
    },
    metrics::Metrics,
    proxy::live::LiveConnections,
};

/// An admin state over the store at `db`, with a writer of its own for health.
fn state(db: &Path) -> (AdminState, AuditSink, AuditWriter) {
    let (sink, writer) = AuditSink::start(AuditConfig::new(db)).unwrap();
    let state = AdminState {
        node: "test-node".into(),
        metrics: Arc::new(Metrics::new()),
        live: Arc::new(LiveConnections::default()),
        kernel_stats: None,
        audit: sink.monitor(),
        audit_queries: AuditQueries::new(db.to_owned()),
        commands: None,
        leaves: None,
        layers: None,
        broker: None,
    };
    (state, sink, writer)
}

fn request(method: &str, target: &str) -> Request {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Request {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        body: Vec::new(),
    }
}

fn operator() -> Surface {
    Surface::Operator("root".to_owned())
}

async fn get(state: &AdminState, surface: Surface, target: &str) -> (u16, String, String) {
    let r = server::route(state, &surface, &request("GET", target)).await;
    (
        r.status,
        r.content_type.to_owned(),
        String::from_utf8(r.body).unwrap(),
    )
}

async fn json(state: &AdminState, target: &str) -> Value {
    let (status, _, body) = get(state, operator(), target).await;
    assert_eq!(status, 200, "{target}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{target}: {e}: {body}"))
}

/// The same filter through the CLI's library path, as correlation ids.
fn expected(db: &Path, filter: &audit::Filter) -> Vec<String> {
    audit::query(&audit::open_read_only(db).unwrap(), filter)
        .unwrap()
        .into_iter()
        .map(|r| r.record.correlation_id)
        .collect()
}

fn ids(rows: &Value) -> Vec<String> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r["correlationId"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_query_answers_what_the_library_query_answers() {
    let (_dir, db) = temp_store();
    seed_fixed(&db, 30).await;
    let (state, _sink, _writer) = state(&db);

    let cases: [(&str, audit::Filter); 5] = [
        ("", audit::Filter::default()),
        (
            "integration=lab",
            audit::Filter {
                integration: Some("lab".into()),
                ..audit::Filter::default()
            },
        ),
        (
            "patient=Patient%2Fp2&decision=allow",
            audit::Filter {
                patient: Some("Patient/p2".into()),
                decision: Some(audit::Disposition::Allow),
                ..audit::Filter::default()
            },
        ),
        (
            "exe=%2Fapp%2Fportal-backend&unattributed",
            audit::Filter {
                exe: Some("/app/portal-backend".into()),
                unattributed: true,
                ..audit::Filter::default()
            },
        ),
        (
            "from=2026-11-23T05%3A00%3A00Z&to=2026-11-23T10%3A00%3A00Z&order=newest&limit=3",
            audit::Filter {
                from: Some("2026-11-23T05:00:00Z".parse().unwrap()),
                to: Some("2026-11-23T10:00:00Z".parse().unwrap()),
                order: audit::Order::NewestFirst,
                limit: Some(3),
                ..audit::Filter::default()
            },
        ),
    ];
    for (q, filter) in cases {
        let want = expected(&db, &filter);
        assert!(!want.is_empty(), "{q}: the seed must match something");
        let rows = json(&state, &format!("/v1/audit/query?{q}")).await;
        assert_eq!(ids(&rows), want, "{q}");
    }

    let (status, content_type, body) = get(
        &state,
        operator(),
        "/v1/audit/query?integration=mirth&format=jsonl",
    )
    .await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/x-ndjson")
    );
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 10, "{body}");
    assert!(lines.iter().all(|l| l["integration"] == "mirth"));

    let bundle = json(&state, "/v1/audit/query?limit=4&format=fhir").await;
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["entry"].as_array().unwrap().len(), 4);

    let paged = json(&state, "/v1/audit/query?after=25").await;
    assert_eq!(
        ids(&paged),
        ["req-26", "req-27", "req-28", "req-29", "req-30"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_report_and_verify() {
    let (_dir, db) = temp_store();
    seed_fixed(&db, 30).await;
    let (state, _sink, _writer) = state(&db);

    let report = json(&state, "/v1/audit/report?integration=lab").await;
    assert_eq!(report["requests"], 10);
    let (_, want) = audit::report_from(
        &audit::open_read_only(&db).unwrap(),
        &audit::Filter {
            integration: Some("lab".into()),
            ..audit::Filter::default()
        },
        &audit::BusinessHours::default(),
    )
    .unwrap();
    assert_eq!(report, serde_json::to_value(&want).unwrap());
    assert_eq!(
        report["sharedCredentials"]["sha256:00000001"],
        serde_json::json!(["(unregistered)", "lab", "mirth"]),
        "{report}"
    );

    let ok = json(&state, "/v1/audit/verify").await;
    assert_eq!(ok["intact"], true, "{ok}");
    assert_eq!(ok["entries"], 30);
    let head = ok["head"].as_str().unwrap().to_owned();
    assert!(head.starts_with("30:"), "{head}");
    let anchored = json(&state, &format!("/v1/audit/verify?anchor={head}")).await;
    assert_eq!(anchored["intact"], true, "{anchored}");

    edit_journal(&db, 7, |b| b.replace("Patient/p2", "Patient/p3"), false);
    let tampered = json(&state, "/v1/audit/verify").await;
    assert_eq!(tampered["intact"], false, "{tampered}");
    assert_eq!(tampered["findings"][0]["seq"], 7, "{tampered}");
    assert!(
        tampered["findings"][0]["problem"]
            .as_str()
            .unwrap()
            .contains("seq 7"),
        "{tampered}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_routes_refuse_bad_input_and_live_only_on_the_operator_socket() {
    let (_dir, db) = temp_store();
    seed_fixed(&db, 3).await;
    let (state, _sink, _writer) = state(&db);

    let (status, _, body) = get(
        &state,
        operator(),
        "/v1/audit/query?patient=Patient%2Fp1&color=red",
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("\"color\""), "{body}");
    assert!(!body.contains("p1"), "no value echoed: {body}");

    let (status, _, _) = get(&state, operator(), "/v1/audit/nothing").await;
    assert_eq!(status, 404);
    for target in [
        "/v1/audit/query",
        "/v1/audit/report?integration=lab",
        "/v1/audit/verify",
    ] {
        let (status, _, body) = get(&state, Surface::Metrics, target).await;
        assert_eq!(
            status, 404,
            "{target} must not exist on the metrics listener"
        );
        assert!(!body.contains("Patient"), "{body}");
    }
    let r = server::route(&state, &operator(), &request("POST", "/v1/audit/verify")).await;
    assert_eq!(r.status, 405);

    let missing = tempfile::tempdir().unwrap();
    let nowhere = AuditQueries::new(missing.path().join("none.db"));
    let r = nowhere.answer("/v1/audit/verify", "").await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_carry_the_audit_state() {
    let (_dir, db) = temp_store();
    let (state, _sink, _writer) = state(&db);
    let health = json(&state, "/v1/health").await;
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["audit"]["state"], "healthy", "{health}");
    let (_, _, metrics) = get(&state, Surface::Metrics, "/metrics").await;
    assert!(
        metrics.contains("fhirwall_audit_store_healthy 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_serves_audit_queries_to_the_client() {
    let (dir, db) = temp_store();
    seed_fixed(&db, 5).await;
    let (state, _sink, _writer) = state(&db);
    let socket = dir.path().join("admin.sock");
    let served = tokio::spawn({
        let socket = socket.clone();
        async move { super::serve_unix(&socket, Arc::new(state)).await }
    });
    let client = AdminClient::new(&socket);
    let rows: Value = loop {
        match client
            .get("/v1/audit/query?patient=Patient%2Fp1&limit=10")
            .await
        {
            Ok(rows) => break rows,
            Err(super::ClientError::Connect { .. }) => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(ids(&rows), ["req-1"]);
    let verify: Value = client.get("/v1/audit/verify").await.unwrap();
    assert_eq!(verify["intact"], true);
    let err = client
        .get::<Value>("/v1/audit/query?limt=5")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, super::ClientError::Status { status: 400, body } if body.contains("limt")),
        "{err:?}"
    );
    // The admin API takes small JSON bodies; a large one is refused before any route sees it.
    let big = serde_json::json!({ "reason": "x".repeat(20 * 1024) });
    let err = client
        .post::<Value>("/v1/integrations/anything/revoke", &big)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, super::ClientError::Status { status: 413, .. }),
        "{err:?}"
    );
    served.abort();
}
