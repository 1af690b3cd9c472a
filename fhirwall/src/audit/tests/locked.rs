//! Another process holding the write lock (an attacker, a stuck tool): commits fail promptly
//! with `Locked` instead of hanging, and resume once the lock is released.

use std::time::{Duration, Instant};

use super::support::{record, rw, stop, temp_store};
use crate::audit::{
    AuditConfig, AuditSink, Health, StoreOptions, WriteFailure, open_read_only, verify,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_write_lock_fails_commits_promptly_and_then_clears() {
    let (_dir, path) = temp_store();
    let mut config = AuditConfig::new(&path);
    config.store = StoreOptions {
        busy_timeout: Duration::from_millis(100),
        ..config.store
    };
    let (sink, writer) = AuditSink::start(config).unwrap();
    sink.commit(record(1, jiff::Timestamp::now()))
        .await
        .unwrap();

    let attacker = rw(&path);
    attacker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let started = Instant::now();
    let err = sink
        .commit(record(2, jiff::Timestamp::now()))
        .await
        .unwrap_err();
    assert_eq!(err.write_failure(), Some(WriteFailure::Locked), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "must fail promptly, took {:?}",
        started.elapsed()
    );
    assert!(matches!(sink.health(), Health::Failing { .. }));

    attacker.execute_batch("ROLLBACK").unwrap();
    drop(attacker);
    let seq = sink
        .commit(record(3, jiff::Timestamp::now()))
        .await
        .unwrap();
    assert_eq!(
        seq.0, 2,
        "the failed record took no seq: the chain stays gapless"
    );
    assert_eq!(sink.health(), Health::Healthy);
    stop(sink, writer).await;
    assert!(
        verify(&open_read_only(&path).unwrap(), &[])
            .unwrap()
            .is_intact()
    );
}
