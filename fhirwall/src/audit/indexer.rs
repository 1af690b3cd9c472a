//! The index: `SQLite`, derived from the journal, fed in large transactions off the commit path.
//!
//! The writer hands each durable batch's rows (already serialized and indexed by the callers) to
//! a thread of its own, which inserts whatever has accumulated in one transaction. The thread runs
//! at a lower scheduling priority, so under saturation it yields the CPU to the data plane and
//! catches up when load drops. Whatever it has not reached yet, it reads back from the journal:
//! at start, after a gap, and whenever a reader calls [`catch_up`] (every query, report, export
//! and verify does, so a committed record is never missing from an answer). Deleting the index is
//! harmless: the next start or reader rebuilds it from the journal.

use std::{
    path::{Path, PathBuf},
    sync::mpsc,
    thread::{self, JoinHandle},
    time::Duration,
};

use rusqlite::Connection;

use super::{
    AuditError,
    index::Prepared,
    journal,
    store::{self, IndexRow, StoreOptions},
};

/// Rows per index transaction, at most.
const MAX_ROWS: usize = 8192;
/// How long the thread waits for rows before looking at the journal itself.
const IDLE: Duration = Duration::from_secs(1);
/// Scheduling niceness of the thread (the data plane runs at 0).
const NICE: i32 = 10;

/// The journal directory that belongs to an index file (`audit.db` -> `audit.journal/`).
#[must_use]
pub fn journal_dir(db: &Path) -> PathBuf {
    db.with_extension("journal")
}

/// The index connection's settings: a derived store needs no fsync per transaction (a lost
/// transaction is indexed again from the journal), and waits longer for a lock than a
/// request-path writer could.
pub fn options() -> StoreOptions {
    StoreOptions {
        busy_timeout: Duration::from_secs(10),
        durability: store::Durability::Background {
            fsync_interval: Duration::from_secs(1),
        },
        ..StoreOptions::default()
    }
}

/// Brings the index at `db` up to the journal's end: what a reader runs before it answers.
/// Returns how many entries it added.
pub fn catch_up(db: &Path) -> Result<u64, AuditError> {
    let dir = journal_dir(db);
    if !dir.exists() {
        return Ok(0);
    }
    let mut conn = store::open(db, &options())?;
    catch_up_conn(&mut conn, &dir)
}

fn catch_up_conn(conn: &mut Connection, dir: &Path) -> Result<u64, AuditError> {
    let mut added = 0;
    loop {
        let head = store::head(conn).map_err(|source| AuditError::Read { source })?;
        let frames =
            journal::read_from(dir, head.seq + 1, MAX_ROWS).map_err(AuditError::journal)?;
        if frames.is_empty() {
            return Ok(added);
        }
        let rows = frames
            .into_iter()
            .map(|f| {
                Ok(IndexRow {
                    seq: f.seq,
                    prev_hash: f.prev_hash,
                    hash: f.hash,
                    entry: Prepared::from_body(f.body, f.seq)?,
                })
            })
            .collect::<Result<Vec<_>, AuditError>>()?;
        added += rows.len() as u64;
        store::index(conn, &rows).map_err(AuditError::write)?;
    }
}

/// The indexing thread; stops (after indexing what it was sent) when the writer drops its
/// sender, and is joined on drop.
pub struct Indexer {
    thread: Option<JoinHandle<()>>,
}

impl Indexer {
    pub fn start(db: &Path, rows: mpsc::Receiver<Vec<IndexRow>>) -> Result<Self, AuditError> {
        let db = db.to_owned();
        let thread = thread::Builder::new()
            .name("fhirwall-audit-index".into())
            .spawn(move || run(&db, &rows))
            .map_err(|source| AuditError::Thread { source })?;
        Ok(Self {
            thread: Some(thread),
        })
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(db: &Path, rows: &mpsc::Receiver<Vec<IndexRow>>) {
    // SAFETY: setpriority on this thread's own id only changes its scheduling priority.
    unsafe {
        let tid = libc::gettid();
        #[expect(clippy::cast_sign_loss, reason = "a thread id is positive")]
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICE);
    }
    let dir = journal_dir(db);
    let mut conn = None;
    let mut batch: Vec<IndexRow> = Vec::with_capacity(MAX_ROWS);
    let mut open = true;
    while open {
        match rows.recv_timeout(IDLE) {
            Ok(first) => batch.extend(first),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => open = false,
        }
        while batch.len() < MAX_ROWS {
            match rows.try_recv() {
                Ok(more) => batch.extend(more),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if let Err(e) = index_batch(db, &dir, &mut conn, &mut batch) {
            // The rows are in the journal; the next round (or a reader) indexes them.
            tracing::warn!(error = %super::writer::error_chain(&e), "audit index behind the journal; will retry");
            conn = None;
            batch.clear();
            if open {
                thread::sleep(IDLE);
            }
        }
    }
}

/// Indexes `batch`, first reading from the journal whatever lies between the index's head and
/// the batch (a start, a gap, rows a failed round dropped).
fn index_batch(
    db: &Path,
    dir: &Path,
    conn: &mut Option<Connection>,
    batch: &mut Vec<IndexRow>,
) -> Result<(), AuditError> {
    if conn.is_none() {
        *conn = Some(store::open(db, &options())?);
    }
    let Some(c) = conn.as_mut() else {
        return Ok(());
    };
    let head = store::head(c).map_err(|source| AuditError::Read { source })?;
    batch.retain(|row| row.seq > head.seq);
    if batch.first().is_none_or(|row| row.seq != head.seq + 1) {
        // The journal has what the batch does not start with; the batch is read again with it.
        batch.clear();
        catch_up_conn(c, dir)?;
        return Ok(());
    }
    store::index(c, batch).map_err(AuditError::write)?;
    batch.clear();
    Ok(())
}
