//! Checkpoints off the commit path: the writer's commits never copy the WAL themselves, yet the
//! WAL still starts over under sustained load and every record lands in the database file.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use super::support::{record, stop, temp_store};
use crate::audit::{
    AuditConfig, AuditSink, Checkpoints, Durability, Filter, Health, StoreOptions,
    checkpoint::Checkpointer,
    index::Prepared,
    open_read_only, query,
    record::Entry,
    store::{self, Head},
    verify,
};

const LIMIT: u32 = 64;

fn options(checkpoints: Checkpoints) -> StoreOptions {
    StoreOptions {
        checkpoints,
        // 64 pages: a catch-up is due every few transactions.
        checkpoint_pages: LIMIT,
        ..StoreOptions::default()
    }
}

fn wal_bytes(db: &Path) -> u64 {
    std::fs::metadata(db.with_extension("db-wal")).map_or(0, |m| m.len())
}

/// 300 back-to-back transactions of 4 records on one connection, with nothing else
/// checkpointing: sustained load at its most extreme. Returns the WAL file's size.
fn back_to_back(db: &Path, catch_up: bool) -> u64 {
    let mut conn = store::open(db, &options(Checkpoints::Background)).unwrap();
    let checkpointer = Checkpointer::idle(LIMIT);
    checkpointer.watch(&mut conn).unwrap();
    let mut head = store::head(&conn).unwrap();
    for t in 0..300u64 {
        if catch_up {
            checkpointer.restart_if_over(&conn);
        }
        let batch: Vec<Prepared> = (0..4)
            .map(|i| {
                Prepared::new(&Entry::Request(record(t * 4 + i, jiff::Timestamp::now()))).unwrap()
            })
            .collect();
        let refs: Vec<&Prepared> = batch.iter().collect();
        head = store::append(&mut conn, head, &refs).unwrap();
    }
    assert_eq!(head, Head { seq: 1200, ..head });
    wal_bytes(db)
}

#[test]
fn the_writers_catch_up_restarts_the_wal_under_back_to_back_commits() {
    let (_dir, with) = temp_store();
    let (_dir2, without) = temp_store();
    let bounded = back_to_back(&with, true);
    let grown = back_to_back(&without, false);
    // A restart reuses the file from its start: it stays near LIMIT pages (plus the transaction
    // that crosses it). Without restarts every page of every transaction stays in the WAL.
    let page = 4096 + 24;
    assert!(
        bounded < u64::from(LIMIT) * 3 * page,
        "with catch-up the WAL must stay small: {bounded} bytes"
    );
    assert!(
        grown > bounded * 4,
        "the control must show growth ({grown} vs {bounded} bytes), or this test proves nothing"
    );
    let v = verify(&open_read_only(&with).unwrap(), &[]).unwrap();
    assert!(v.is_intact(), "{:?}", v.findings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_with_background_checkpoints_loses_nothing_and_fills_the_database_file() {
    const TASKS: u64 = 32;
    const EACH: u64 = 60;
    let (_dir, path) = temp_store();
    let mut config = AuditConfig::new(&path);
    config.store = options(Checkpoints::Background);
    let (sink, writer) = AuditSink::start(config).unwrap();
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let sink = sink.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..EACH {
                sink.commit(record(t * EACH + i, jiff::Timestamp::now()))
                    .await
                    .unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    stop(sink, writer).await;

    let conn = open_read_only(&path).unwrap();
    let v = verify(&conn, &[]).unwrap();
    assert!(v.is_intact(), "{:?}", v.findings);
    assert_eq!(v.entries, TASKS * EACH);
    assert_eq!(
        query(&conn, &Filter::default()).unwrap().len() as u64,
        TASKS * EACH
    );
    drop(conn);
    // Checkpoints copied the records into the database file; the WAL stayed a fraction of it.
    let db = std::fs::metadata(&path).unwrap().len();
    let wal = wal_bytes(&path);
    assert!(db > 1 << 20, "checkpointed into the file: {db} bytes");
    assert!(wal < db / 2, "WAL {wal} bytes vs database {db} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_checkpoints_still_work() {
    let (_dir, path) = temp_store();
    let mut config = AuditConfig::new(&path);
    config.store = options(Checkpoints::Inline);
    let (sink, writer) = AuditSink::start(config).unwrap();
    for i in 0..300 {
        sink.commit(record(i, jiff::Timestamp::now()))
            .await
            .unwrap();
    }
    stop(sink, writer).await;
    let v = verify(&open_read_only(&path).unwrap(), &[]).unwrap();
    assert!(v.is_intact(), "{:?}", v.findings);
    assert_eq!(v.entries, 300);
    assert!(wal_bytes(&path) < u64::from(LIMIT) * 3 * (4096 + 24));
}

fn background(fsync_interval_ms: u64) -> StoreOptions {
    StoreOptions {
        durability: Durability::Background {
            fsync_interval: Duration::from_millis(fsync_interval_ms),
        },
        ..options(Checkpoints::Background)
    }
}

fn append_one(conn: &mut rusqlite::Connection, n: u64) {
    let head = store::head(conn).unwrap();
    let entry = Prepared::new(&Entry::Request(record(n, jiff::Timestamp::now()))).unwrap();
    store::append(conn, head, &[&entry]).unwrap();
}

/// Waits up to two seconds for `done`.
fn within_two_seconds(done: impl Fn() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    done()
}

#[test]
fn background_durability_fsyncs_the_wal_after_commits_and_only_then() {
    let (_dir, path) = temp_store();
    let opts = background(10);
    let mut conn = store::open(&path, &opts).unwrap();
    let synchronous: i64 = conn
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .unwrap();
    assert_eq!(synchronous, 1, "NORMAL: commits do not fsync themselves");
    let checkpointer = Checkpointer::start(&path, &opts).unwrap();
    checkpointer.watch(&mut conn).unwrap();
    append_one(&mut conn, 1);
    assert!(
        within_two_seconds(|| checkpointer.syncs() >= 1),
        "the commit was synced"
    );
    // Nothing committed since: no fsync for nothing.
    let synced = checkpointer.syncs();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(checkpointer.syncs(), synced);
    append_one(&mut conn, 2);
    assert!(within_two_seconds(|| checkpointer.syncs() > synced));
    assert!(!checkpointer.sync_failed());
    let fsync = store::open(&path, &StoreOptions::default()).unwrap();
    let synchronous: i64 = fsync
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .unwrap();
    assert_eq!(synchronous, 2, "FULL by default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wal_that_cannot_be_synced_makes_the_writer_refuse() {
    let (_dir, path) = temp_store();
    let mut config = AuditConfig::new(&path);
    config.store = background(5);
    let (sink, writer) = AuditSink::start(config).unwrap();
    sink.commit(record(1, jiff::Timestamp::now()))
        .await
        .unwrap();
    // The WAL disappears from under the store (an operator's mistake, a failing mount): its
    // records can no longer be made durable.
    std::fs::remove_file(path.with_extension("db-wal")).unwrap();
    sink.commit(record(2, jiff::Timestamp::now())).await.ok();
    let mut refused = false;
    for n in 3..500 {
        if sink
            .commit(record(n, jiff::Timestamp::now()))
            .await
            .is_err()
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        refused,
        "records were accepted that could not be made durable"
    );
    assert!(matches!(sink.health(), Health::Failing { .. }));
    stop(sink, writer).await;
}
