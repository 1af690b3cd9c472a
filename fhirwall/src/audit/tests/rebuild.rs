//! The index is derived: deleted, it is rebuilt from the journal and answers the same.

use super::support::{seed_fixed, stop, temp_store};
use crate::audit::{
    AuditConfig, AuditSink, BusinessHours, Filter, open_read_only, query, report_from, verify,
};

fn answers(path: &std::path::Path) -> (Vec<(u64, String)>, String, u64) {
    let conn = open_read_only(path).unwrap();
    let rows = query(&conn, &Filter::default())
        .unwrap()
        .into_iter()
        .map(|r| (r.seq, r.record.correlation_id))
        .collect();
    let by_patient = query(
        &conn,
        &Filter {
            patient: Some("Patient/p1".into()),
            ..Filter::default()
        },
    )
    .unwrap();
    let report = report_from(&conn, &Filter::default(), &BusinessHours::default()).unwrap();
    let v = verify(&conn, &[]).unwrap();
    assert!(v.is_intact(), "{:?}", v.findings);
    (
        rows,
        format!("{} {}", by_patient.len(), report.1.requests),
        v.head.map_or(0, |h| h.seq),
    )
}

fn remove_index(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
    let copy = crate::audit::pindex::path_for(path);
    let _ = std::fs::remove_file(&copy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_index_is_rebuilt_and_answers_the_same() {
    let (_dir, path) = temp_store();
    seed_fixed(&path, 40).await;
    let before = answers(&path);
    assert_eq!(before.0.len(), 40);

    // By a reader, before anything is written again.
    remove_index(&path);
    assert_eq!(answers(&path), before);

    // By the agent at start, which then appends after the rebuilt chain.
    remove_index(&path);
    let (sink, writer) = AuditSink::start(AuditConfig::new(&path)).unwrap();
    let seq = sink
        .commit(super::support::record(41, jiff::Timestamp::now()))
        .await
        .unwrap();
    assert_eq!(seq.0, 41);
    stop(sink, writer).await;
    let after = answers(&path);
    assert_eq!(after.0[..40], before.0[..]);
    assert_eq!(after.2, 41);
}
