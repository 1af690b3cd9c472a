//! Export streams: JSON lines and FHIR push, each resuming from its durable cursor.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};

use super::support::{rw, seed, seed_fixed, temp_store};
use crate::audit::{FhirExport, JsonlExport, JsonlTarget, chain, export_fhir, export_jsonl};

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonl_export_resumes_without_repeats_and_carries_the_chain() {
    let (dir, path) = temp_store();
    seed(&path, 10).await;
    let out = dir.path().join("audit.jsonl");
    let cfg = JsonlExport {
        db: path.clone(),
        cursor: "jsonl-test".to_owned(),
        target: JsonlTarget::File(out.clone()),
        follow: false,
        poll: Duration::from_millis(10),
    };
    assert_eq!(export_jsonl(&cfg).unwrap(), 10);
    assert_eq!(
        export_jsonl(&cfg).unwrap(),
        0,
        "nothing new, nothing repeated"
    );
    seed(&path, 5).await;
    assert_eq!(export_jsonl(&cfg).unwrap(), 5);

    // A crash after writing but before saving the cursor: the file's tail wins.
    rw(&path)
        .execute("UPDATE export_cursors SET seq = 3", [])
        .unwrap();
    assert_eq!(export_jsonl(&cfg).unwrap(), 0);

    let got = lines(&out);
    let seqs: Vec<u64> = got.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=15).collect::<Vec<_>>());
    // A collector can re-check every link from the line alone: the body is embedded verbatim.
    let raw = std::fs::read_to_string(&out).unwrap();
    let mut prev = chain::GENESIS;
    for (line, text) in got.iter().zip(raw.lines()) {
        let body = &text[text.find(r#","entry":"#).unwrap() + 9..text.len() - 1];
        let seq = line["seq"].as_u64().unwrap();
        assert_eq!(line["prevHash"].as_str().unwrap(), chain::to_hex(&prev));
        prev = chain::link(&prev, seq, body.as_bytes());
        assert_eq!(
            line["hash"].as_str().unwrap(),
            chain::to_hex(&prev),
            "seq {seq}"
        );
    }
}

/// A FHIR endpoint on loopback that refuses the first `refuse` requests with 503 and records the
/// bodies it accepts.
async fn collector(refuse: usize) -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/fhir/AuditEvent", listener.local_addr().unwrap());
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(Mutex::new(0usize));
    let store = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (store, seen) = (Arc::clone(&store), Arc::clone(&seen));
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(body) = read_request(&mut sock, &mut buf).await else {
                        return;
                    };
                    let n = {
                        let mut seen = seen.lock().unwrap();
                        *seen += 1;
                        *seen
                    };
                    let reply: &[u8] = if n <= refuse {
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
                    } else {
                        store
                            .lock()
                            .unwrap()
                            .push(serde_json::from_slice(&body).unwrap());
                        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}"
                    };
                    if sock.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, accepted)
}

/// Reads one request with a Content-Length body; `None` at end of stream.
async fn read_request(sock: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = req.parse(buf) {
            let len: usize = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())?;
            if buf.len() >= head + len {
                let body = buf[head..head + len].to_vec();
                buf.drain(..head + len);
                return Some(body);
            }
        }
        let mut chunk = [0u8; 8192];
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_export_retries_through_an_outage_and_never_resends() {
    let (_dir, path) = temp_store();
    seed_fixed(&path, 10).await;
    let (url, accepted) = collector(3).await;
    let cfg = FhirExport {
        db: path.clone(),
        cursor: "siem".to_owned(),
        url,
        follow: false,
        poll: Duration::from_millis(10),
        settle: Duration::from_secs(0),
        max_backoff: Duration::from_millis(20),
        max_attempts: Some(10),
    };
    assert_eq!(export_fhir(&cfg).await.unwrap(), 10);
    let ids = |v: &[Value]| {
        v.iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let first = ids(&accepted.lock().unwrap());
    // Ten requests; record 7 is under break-glass and adds a Security Alert.
    assert_eq!(first.len(), 11, "{first:?}");
    let unique: std::collections::BTreeSet<_> = first.iter().collect();
    assert_eq!(unique.len(), 11, "no event delivered twice");
    assert!(
        accepted
            .lock()
            .unwrap()
            .iter()
            .all(|e| e["resourceType"] == "AuditEvent")
    );

    // A restart resumes from the cursor: nothing is sent again; new records are.
    assert_eq!(export_fhir(&cfg).await.unwrap(), 0);
    assert_eq!(accepted.lock().unwrap().len(), 11);
    seed(&path, 2).await;
    assert_eq!(export_fhir(&cfg).await.unwrap(), 2);
    assert_eq!(accepted.lock().unwrap().len(), 13);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_export_gives_up_after_max_attempts_and_keeps_its_place() {
    let (_dir, path) = temp_store();
    seed_fixed(&path, 2).await;
    let (url, accepted) = collector(usize::MAX).await;
    let cfg = FhirExport {
        db: path.clone(),
        cursor: "down".to_owned(),
        url,
        follow: false,
        poll: Duration::from_millis(10),
        settle: Duration::from_secs(0),
        max_backoff: Duration::from_millis(5),
        max_attempts: Some(3),
    };
    let err = export_fhir(&cfg).await.unwrap_err();
    assert!(
        matches!(
            err,
            crate::audit::AuditError::HttpStatus { status: 503, .. }
        ),
        "{err:?}"
    );
    assert!(accepted.lock().unwrap().is_empty());
    let cursor: i64 = rw(&path)
        .query_row(
            "SELECT seq FROM export_cursors WHERE name = 'down'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(cursor, 0, "nothing delivered, nothing skipped");
}

/// A server that takes no AuditEvent writes (helios-hfs answers 405) is a refusal, said at
/// once, not an outage retried for half a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_refusing_audit_events_is_said_at_once() {
    let (_dir, path) = temp_store();
    seed_fixed(&path, 2).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/AuditEvent", listener.local_addr().unwrap());
    let asked = Arc::new(Mutex::new(0usize));
    let counted = Arc::clone(&asked);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let counted = Arc::clone(&counted);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while read_request(&mut sock, &mut buf).await.is_some() {
                    *counted.lock().unwrap() += 1;
                    let reply = b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n";
                    if sock.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let cfg = FhirExport {
        db: path.clone(),
        cursor: "hfs".to_owned(),
        url,
        follow: false,
        poll: Duration::from_millis(10),
        settle: Duration::from_secs(0),
        max_backoff: Duration::from_millis(5),
        max_attempts: Some(8),
    };
    let err = export_fhir(&cfg).await.unwrap_err();
    assert!(
        matches!(
            err,
            crate::audit::AuditError::NotAccepted { status: 405, .. }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("does not accept AuditEvent writes"),
        "{err}"
    );
    assert_eq!(*asked.lock().unwrap(), 1, "asked once, not retried");
}
