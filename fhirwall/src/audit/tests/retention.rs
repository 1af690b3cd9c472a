//! Retention prunes a prefix, leaves a chained marker, and `verify` still works after it.

use std::time::Duration;

use jiff::{Timestamp, ToSpan as _};

use super::support::{record, rw, temp_store};
use crate::audit::{
    AuditConfig, AuditSink, Filter, Problem, Retention, open_read_only, query, verify,
};

async fn store_with_old_and_new(path: &std::path::Path, retention: Retention) -> AuditSink {
    let mut config = AuditConfig::new(path);
    config.retention = retention;
    config.retention_interval = Duration::from_hours(1);
    let (sink, writer) = AuditSink::start(config).unwrap();
    for i in 1..=20 {
        sink.commit(record(i, Timestamp::now() - 240.hours()))
            .await
            .unwrap();
    }
    for i in 21..=30 {
        sink.commit(record(i, Timestamp::now())).await.unwrap();
    }
    // Keep the writer alive for the caller; it is joined when the process ends.
    std::mem::forget(writer);
    sink
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_by_age_leaves_a_verifiable_chain() {
    let (_dir, path) = temp_store();
    let retention = Retention {
        max_age: Some(Duration::from_hours(168)),
        max_bytes: None,
        max_batch: 1000,
    };
    let sink = store_with_old_and_new(&path, retention).await;
    assert_eq!(sink.prune_now().await.unwrap(), 20);
    let after = sink.commit(record(31, Timestamp::now())).await.unwrap();
    assert_eq!(after.0, 32, "the marker took seq 31");
    assert_eq!(sink.stats().pruned_records, 20);

    let conn = open_read_only(&path).unwrap();
    let v = verify(&conn, &[]).unwrap();
    assert!(v.is_intact(), "{:?}", v.findings);
    assert_eq!(
        (v.first_seq, v.pruned_through, v.entries),
        (Some(21), Some(20), 12)
    );
    assert_eq!(query(&conn, &Filter::default()).unwrap().len(), 11);

    // Tampering after a prune is still caught ...
    super::support::edit_journal(&path, 25, |b| b.replace("epic", "evil"), false);
    assert!(
        verify(&conn, &[])
            .unwrap()
            .findings
            .iter()
            .any(|f| f.seq == 25 && f.problem == Problem::ContentMismatch)
    );
    // ... and so is removing the marker that accounts for the pruned prefix.
    rw(&path)
        .execute("DELETE FROM entry_rows WHERE kind = 'pruned'", [])
        .unwrap();
    assert!(
        verify(&conn, &[])
            .unwrap()
            .findings
            .iter()
            .any(|f| f.seq == 21 && f.problem == Problem::UnaccountedStart)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_waits_for_registered_exporters() {
    let (_dir, path) = temp_store();
    let retention = Retention {
        max_age: Some(Duration::from_hours(168)),
        max_bytes: None,
        max_batch: 1000,
    };
    let sink = store_with_old_and_new(&path, retention).await;
    rw(&path)
        .execute(
            "INSERT INTO export_cursors (name, seq, updated_us) VALUES ('siem', 5, 0)",
            [],
        )
        .unwrap();
    sink.prune_now().await.unwrap();
    sink.commit(record(31, Timestamp::now())).await.unwrap();
    assert_eq!(
        sink.stats().pruned_records,
        5,
        "only what the exporter already sent"
    );
    let v = verify(&open_read_only(&path).unwrap(), &[]).unwrap();
    assert!(v.is_intact(), "{:?}", v.findings);
    assert_eq!(v.first_seq, Some(6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_by_size_brings_the_store_under_the_limit() {
    let (_dir, path) = temp_store();
    let (sink, writer) = AuditSink::start(AuditConfig::new(&path)).unwrap();
    for i in 1..=2000 {
        sink.commit(record(i, Timestamp::now())).await.unwrap();
    }
    // Stopped, so the index holds all of them before its size is read.
    super::support::stop(sink, writer).await;
    let used = |c: &rusqlite::Connection| -> i64 {
        let q = |p: &str| {
            c.pragma_query_value(None, p, |r| r.get::<_, i64>(0))
                .unwrap()
        };
        (q("page_count") - q("freelist_count")) * q("page_size")
    };
    let before = used(&rw(&path));
    let limit = u64::try_from(before / 2).unwrap();
    let mut config = AuditConfig::new(&path);
    config.retention = Retention {
        max_age: None,
        max_bytes: Some(limit),
        max_batch: 100_000,
    };
    let (sink, _writer) = AuditSink::start(config).unwrap();
    sink.prune_now().await.unwrap();
    sink.commit(record(1, Timestamp::now())).await.unwrap();
    let after = used(&rw(&path));
    assert!(u64::try_from(after).unwrap() <= limit, "{after} > {limit}");
    assert!(
        verify(&open_read_only(&path).unwrap(), &[])
            .unwrap()
            .is_intact()
    );
}
