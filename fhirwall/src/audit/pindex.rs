//! The patient index, built off the commit path.
//!
//! "Every access to one patient" needs the records of a patient. An index keyed by patient on the
//! chained `patients` table would take one random B-tree insert per record inside the commit
//! that every request waits for; each such insert dirties a page of its own, which the commit
//! writes to the WAL and syncs. Measured, that one index halved the writer's throughput. So a
//! commit only appends `(seq, patient)` rows in seq order, and a thread of its own (under
//! `SCHED_IDLE`, so it never takes the CPU from the data plane) copies them,
//! in chunks sorted by patient, into a separate file next to the store (`audit.db` →
//! `audit-patients.db`, WAL with `synchronous=NORMAL`: atomic, never fsynced per chunk).
//!
//! The copy is derived data, never the record: queries read it up to the seq it reached
//! (`progress.upto`) plus the not yet indexed tail of `patients` (a range scan by seq), so a
//! query by patient is exact at any moment. A copy that does not belong to the store (the store
//! was replaced, or the copy is ahead of it) is not used and is rebuilt; without one, a query
//! scans `patients`. `verify` holds the copy against the chained `patients` rows, so an edited
//! copy is found like an edited record.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use rusqlite::{Connection, OptionalExtension as _};

use super::AuditError;

/// The schema name the copy is attached under.
pub const SCHEMA_NAME: &str = "pidx";

/// Rows copied per transaction: large enough that rows of one patient share pages, small enough
/// that a transaction stays short.
const CHUNK: i64 = 65_536;

/// How often the thread looks for new rows.
const POLL: Duration = Duration::from_millis(200);

/// How often rows of entries removed by retention are dropped from the copy.
const PRUNE_EVERY: Duration = Duration::from_mins(1);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pidx.patient_seq (
    patient TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    PRIMARY KEY (patient, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pidx.patient_seq_by_seq ON patient_seq (seq);
CREATE TABLE IF NOT EXISTS pidx.progress (
    id       INTEGER PRIMARY KEY CHECK (id = 0),
    upto     INTEGER NOT NULL,
    upto_hash BLOB
);
INSERT OR IGNORE INTO pidx.progress (id, upto, upto_hash) VALUES (0, 0, NULL);
";

/// The copy's file for the store at `db`.
#[must_use]
pub fn path_for(db: &Path) -> PathBuf {
    let stem = db
        .file_stem()
        .map_or_else(|| "audit".into(), |s| s.to_string_lossy().into_owned());
    db.with_file_name(format!("{stem}-patients.db"))
}

/// Attaches the copy of `db` to a read-only connection when it exists. Attached databases are
/// opened with the main database's flags, so it is read-only too.
pub fn attach_read_only(conn: &Connection, db: &Path) {
    let path = path_for(db);
    if path.exists() {
        // A copy that cannot be attached (damaged, unreadable) leaves queries on the scan.
        let _ = conn.execute(
            "ATTACH DATABASE ?1 AS pidx",
            [path.to_string_lossy().as_ref()],
        );
    }
}

/// How far the attached copy reaches, or `None` when there is no usable copy: not attached,
/// unreadable, or not a copy of this store.
pub fn usable_upto(conn: &Connection) -> Option<u64> {
    belongs(conn).ok().flatten()
}

/// `Some(upto)` when the copy belongs to this store: its last indexed entry is this store's
/// entry at that seq (or was pruned from it). `None` when it does not.
fn belongs(conn: &Connection) -> rusqlite::Result<Option<u64>> {
    let (upto, hash): (i64, Option<Vec<u8>>) = conn.query_row(
        "SELECT upto, upto_hash FROM pidx.progress WHERE id = 0",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if upto == 0 {
        return Ok(Some(0));
    }
    let stored: Option<Vec<u8>> = conn
        .query_row(
            "SELECT hash FROM main.entries WHERE seq = ?1",
            [upto],
            |r| r.get(0),
        )
        .optional()?;
    let first: Option<i64> =
        conn.query_row("SELECT min(seq) FROM main.entries", [], |r| r.get(0))?;
    Ok(match (stored, hash) {
        (Some(stored), Some(hash)) if stored == hash => u64::try_from(upto).ok(),
        // The entry was pruned since: everything the copy holds is older than the store's
        // first entry, so the copy adds nothing a scan of the tail would not find.
        (None, Some(_)) if first.is_some_and(|first| first > upto) => u64::try_from(upto).ok(),
        _ => None,
    })
}

/// The thread that keeps the copy up to date; stopped and joined on drop.
#[derive(Debug)]
pub struct Indexer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Indexer {
    /// Opens the store and the copy (creating the copy) on a connection of its own, and starts
    /// the thread.
    pub fn start(db: &Path) -> Result<Self, AuditError> {
        let open = |source| AuditError::Open {
            path: path_for(db),
            source,
        };
        let conn = Connection::open(db).map_err(open)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(open)?;
        conn.execute(
            "ATTACH DATABASE ?1 AS pidx",
            [path_for(db).to_string_lossy().as_ref()],
        )
        .map_err(open)?;
        conn.pragma_update(Some(SCHEMA_NAME), "journal_mode", "WAL")
            .map_err(open)?;
        conn.pragma_update(Some(SCHEMA_NAME), "synchronous", "NORMAL")
            .map_err(open)?;
        conn.execute_batch(SCHEMA).map_err(open)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = thread::Builder::new()
            .name("fhirwall-pidx".into())
            .spawn({
                let stop = Arc::clone(&stop);
                move || run(&conn, &stop)
            })
            .map_err(|source| AuditError::Thread { source })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

fn run(conn: &Connection, stop: &AtomicBool) {
    super::indexer::idle_priority("the patient index copy");
    let mut failing = false;
    let mut since_prune = Duration::ZERO;
    while !stop.load(Ordering::SeqCst) {
        match step(conn) {
            // More to copy: go on without waiting.
            Ok(true) => {
                failing = false;
                continue;
            }
            Ok(false) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "patient index update failed; queries scan instead until it succeeds");
            }
            Err(_) => {}
        }
        since_prune += POLL;
        if since_prune >= PRUNE_EVERY {
            since_prune = Duration::ZERO;
            let _ = prune(conn);
        }
        thread::park_timeout(POLL);
    }
}

/// Copies the next chunk; `Ok(true)` when rows remain after it.
fn step(conn: &Connection) -> rusqlite::Result<bool> {
    let head: i64 = conn.query_row("SELECT coalesce(max(seq), 0) FROM main.entries", [], |r| {
        r.get(0)
    })?;
    let upto = if let Some(upto) = belongs(conn)? {
        i64::try_from(upto).unwrap_or(i64::MAX)
    } else {
        // Not a copy of this store (or ahead of it): start over.
        conn.execute_batch(
            "DELETE FROM pidx.patient_seq;
             UPDATE pidx.progress SET upto = 0, upto_hash = NULL WHERE id = 0;",
        )?;
        0
    };
    if head <= upto {
        return Ok(false);
    }
    let to = head.min(upto.saturating_add(CHUNK));
    let tx = conn.unchecked_transaction()?;
    tx.execute(
        "INSERT OR IGNORE INTO pidx.patient_seq (patient, seq)
         SELECT patient, seq FROM main.patients WHERE seq > ?1 AND seq <= ?2
         ORDER BY patient, seq",
        [upto, to],
    )?;
    tx.execute(
        "UPDATE pidx.progress
         SET upto = ?1, upto_hash = (SELECT hash FROM main.entries WHERE seq = ?1)
         WHERE id = 0",
        [to],
    )?;
    tx.commit()?;
    Ok(to < head)
}

/// Drops rows of entries retention removed (space only: queries join on live entries).
fn prune(conn: &Connection) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM pidx.patient_seq
         WHERE seq < (SELECT coalesce(min(seq), 0) FROM main.entries)",
        [],
    )
}

/// Rows of the chained `patients` table within the copy's reach that the copy lacks, and rows
/// the copy has there that `patients` does not.
pub(crate) fn differences(conn: &Connection, upto: u64) -> rusqlite::Result<(u64, u64)> {
    let upto = i64::try_from(upto).unwrap_or(i64::MAX);
    // Rows of `from` within the copy's reach that `other` lacks.
    let lacking = |from: &str, other: &str| -> rusqlite::Result<u64> {
        let sql = format!(
            "SELECT count(*) FROM (
                SELECT patient, seq FROM {from}
                 WHERE seq <= ?1 AND seq >= (SELECT coalesce(min(seq), 0) FROM main.entries)
                EXCEPT SELECT patient, seq FROM {other})"
        );
        conn.query_row(&sql, [upto], |r| r.get::<_, i64>(0))
            .map(|n| u64::try_from(n).unwrap_or(0))
    };
    let missing = lacking("main.patients", "pidx.patient_seq")?;
    let extra = lacking("pidx.patient_seq", "main.patients")?;
    Ok((missing, extra))
}
