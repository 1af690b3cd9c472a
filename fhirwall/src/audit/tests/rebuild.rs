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

/// Turns a store into the layout of schema `version` (2: every workload column in every row of
/// table `entries`; 3: workloads interned, each row carrying its body), bodies included.
fn to_version(path: &std::path::Path, version: i64) {
    let conn = super::support::rw(path);
    let old = match version {
        2 => {
            "CREATE TABLE old AS SELECT * FROM entries;
             DROP VIEW entries;
             DROP TABLE entry_rows;
             DROP TABLE workloads;
             ALTER TABLE old DROP COLUMN frame_at;
             ALTER TABLE old RENAME TO entries;
             CREATE INDEX entries_exe ON entries (exe) WHERE exe IS NOT NULL;"
        }
        _ => {
            "CREATE TABLE old AS SELECT * FROM entry_rows;
             DROP VIEW entries;
             DROP TABLE entry_rows;
             ALTER TABLE old DROP COLUMN frame_at;
             ALTER TABLE old RENAME TO entry_rows;
             CREATE INDEX entries_workload ON entry_rows (workload);
             CREATE VIEW entries AS SELECT e.seq, e.kind, e.time_us, e.correlation_id,
                 e.ref_seq, e.integration, w.exe, w.exe_sha256, w.pid, w.container_id,
                 w.pod_uid, w.systemd_unit, e.credential_fp, e.resource_type, e.decision,
                 e.body, e.prev_hash, e.hash
             FROM entry_rows e LEFT JOIN workloads w ON w.id = e.workload;"
        }
    };
    conn.execute_batch(old).unwrap();
    let table = if version == 2 {
        "entries"
    } else {
        "entry_rows"
    };
    let dir = path.with_extension("journal");
    for frame in crate::audit::journal::read_from(&dir, 1, usize::MAX).unwrap() {
        conn.execute(
            &format!("UPDATE {table} SET body = ?1 WHERE seq = ?2"),
            rusqlite::params![frame.body, i64::try_from(frame.seq).unwrap()],
        )
        .unwrap();
    }
    conn.pragma_update(None, "user_version", version).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_index_is_migrated_in_place_and_answers_the_same() {
    for version in [2, 3] {
        let (_dir, path) = temp_store();
        seed_fixed(&path, 40).await;
        let before = answers(&path);
        to_version(&path, version);
        // The rows move with their bodies; they are not rebuilt from the journal (a version 1
        // store's rows predate it), so the journal goes too, and the answers still match.
        super::support::drop_journal(&path);
        // The agent's start migrates (a reader changes nothing where there is no journal).
        let (sink, writer) = AuditSink::start(AuditConfig::new(&path)).unwrap();
        stop(sink, writer).await;
        let after = answers(&path);
        assert_eq!(after, before, "from version {version}");
        let conn = super::support::rw(&path);
        let (now, workloads): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT user_version FROM pragma_user_version), count(*) FROM workloads",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        // Forty requests from the fixture's three processes.
        assert_eq!((now, workloads), (4, 3), "from version {version}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_workload_is_indexed_once_and_retention_removes_what_only_pruned_entries_named() {
    let (_dir, path) = temp_store();
    seed_fixed(&path, 40).await;
    let conn = super::support::rw(&path);
    let count = |conn: &rusqlite::Connection| -> i64 {
        conn.query_row("SELECT count(*) FROM workloads", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count(&conn), 3);
    // Entries 1..=39 go: workloads 0 (seq 39) and 2 (seq 38) are named by none left.
    crate::audit::store::remove_range(&mut super::support::rw(&path), 1, 39).unwrap();
    assert_eq!(count(&conn), 1);
    let exe: String = conn
        .query_row("SELECT exe FROM entries WHERE seq = 40", [], |r| r.get(0))
        .unwrap();
    assert_eq!(exe, "/usr/local/bin/lab-sync");
}
