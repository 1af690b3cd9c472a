//! Another process holding the index's write lock (an attacker, a stuck tool): commits go on,
//! since the journal is the commit point, and the index catches up once the lock is released.

use std::time::{Duration, Instant};

use super::support::{record, rw, stop, temp_store};
use crate::audit::{AuditConfig, AuditSink, Filter, Health, open_read_only, query, verify};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_index_lock_does_not_stop_commits_and_the_index_catches_up() {
    let (_dir, path) = temp_store();
    let (sink, writer) = AuditSink::start(AuditConfig::new(&path)).unwrap();
    sink.commit(record(1, jiff::Timestamp::now()))
        .await
        .unwrap();

    let attacker = rw(&path);
    attacker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let started = Instant::now();
    for n in 2..=50 {
        let seq = sink
            .commit(record(n, jiff::Timestamp::now()))
            .await
            .unwrap();
        assert_eq!(seq.0, n);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "commits must not wait for the index, took {:?}",
        started.elapsed()
    );
    assert_eq!(sink.health(), Health::Healthy);

    attacker.execute_batch("ROLLBACK").unwrap();
    drop(attacker);
    stop(sink, writer).await;
    let conn = open_read_only(&path).unwrap();
    let v = verify(&conn, &[]).unwrap();
    assert!(v.is_intact(), "{:?}", v.findings);
    assert_eq!(query(&conn, &Filter::default()).unwrap().len(), 50);
}
