//! The index: `SQLite`, derived from the journal, fed in large transactions off the commit path.
//!
//! The writer hands each durable batch's rows (already serialized and indexed by the callers) to
//! a thread of its own, which inserts them in large transactions: it waits until `MIN_ROWS` have
//! accumulated or the oldest has waited `MAX_WAIT`. The thread runs under `SCHED_IDLE`: it gets
//! the CPU only when nothing else wants it, so under saturation the data plane never waits for
//! the index, and the index catches up when load drops. Whatever it has not reached yet, it reads back from the journal:
//! at start, after a gap, and whenever a reader calls [`catch_up`] (every query, report, export
//! and verify does, so a committed record is never missing from an answer). Deleting the index is
//! harmless: the next start or reader rebuilds it from the journal.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use rusqlite::Connection;

use super::{
    AuditError, journal,
    record::Entry,
    store::{self, IndexRow, StoreOptions},
};

/// Entries a reader lays over an index it cannot write, at most.
const MAX_OVERLAY: usize = 1_000_000;
/// Durable rows handed to the indexer and not yet taken by it, at most: beyond, the writer drops
/// them and the indexer reads them back from the journal (an entry in memory is larger than its
/// frame, so a lagging indexer must not hold an unbounded number).
const MAX_BACKLOG_ROWS: usize = 32_768;
/// Batches handed over and not yet taken, at most (the channel's own bound).
const MAX_BACKLOG_BATCHES: usize = 4096;
/// Rows per index transaction, at most.
const MAX_ROWS: usize = 16_384;
/// Rows the thread waits for before it writes a transaction...
const MIN_ROWS: usize = 4096;
/// ...unless the oldest has waited this long.
const MAX_WAIT: Duration = Duration::from_secs(1);

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
    // A reader waits less for the lock than the indexer does: past it, it reads the journal's
    // tail beside the index instead.
    let opts = StoreOptions {
        busy_timeout: Duration::from_secs(2),
        ..options()
    };
    let mut conn = store::open(db, &opts)?;
    catch_up_conn(&mut conn, &dir, u64::MAX)
}

/// Lays the journal's entries beyond the index over it, for `conn` only (see
/// [`store::overlay`]).
pub fn overlay_tail(conn: &Connection, db: &Path) -> Result<(), AuditError> {
    let head = store::head(conn).map_err(|source| AuditError::Read { source })?;
    let frames = journal::read_from(&journal_dir(db), head.seq + 1, MAX_OVERLAY)
        .map_err(AuditError::journal)?;
    let rows = rows_of(frames)?;
    store::overlay(conn, &rows).map_err(|source| AuditError::Read { source })
}

fn rows_of(frames: Vec<journal::Frame>) -> Result<Vec<IndexRow>, AuditError> {
    frames
        .into_iter()
        .map(|f| {
            Ok(IndexRow {
                seq: f.seq,
                prev_hash: f.prev_hash,
                hash: f.hash,
                offset: f.offset,
                entry: Entry::from_body(f.seq, &f.body)?,
            })
        })
        .collect()
}

/// Indexes the journal's entries after the index's head, through `upto`.
fn catch_up_conn(conn: &mut Connection, dir: &Path, upto: u64) -> Result<u64, AuditError> {
    let mut added = 0;
    loop {
        let head = store::head(conn).map_err(|source| AuditError::Read { source })?;
        if head.seq >= upto {
            return Ok(added);
        }
        let limit = usize::try_from(upto - head.seq)
            .unwrap_or(MAX_ROWS)
            .min(MAX_ROWS);
        let frames = journal::read_from(dir, head.seq + 1, limit).map_err(AuditError::journal)?;
        if frames.is_empty() {
            return Ok(added);
        }
        let rows = rows_of(frames)?;
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
    /// Starts the indexer of `db`; `durable` is the journal's head when the writer opened it
    /// (indexed first). The writer hands it durable rows through the [`Feed`].
    pub fn start(db: &Path, durable: u64) -> Result<(Self, Feed), AuditError> {
        let (tx, rx) = mpsc::sync_channel(MAX_BACKLOG_BATCHES);
        let backlog = Arc::new(AtomicUsize::new(0));
        let feed = Feed {
            tx,
            backlog: Arc::clone(&backlog),
        };
        let db = db.to_owned();
        let thread = thread::Builder::new()
            .name("fw-audit-index".into())
            .spawn(move || run(&db, &Taken { rx, backlog }, durable))
            .map_err(|source| AuditError::Thread { source })?;
        let indexer = Self {
            thread: Some(thread),
        };
        Ok((indexer, feed))
    }
}

/// The writer's end of the indexer's backlog.
#[derive(Debug)]
pub struct Feed {
    tx: mpsc::SyncSender<Vec<IndexRow>>,
    /// Rows sent and not yet taken.
    backlog: Arc<AtomicUsize>,
}

impl Feed {
    /// Hands over durable rows, or drops them when the backlog is full: they are in the
    /// journal, and the indexer reads a gap back from there.
    pub fn send(&self, rows: Vec<IndexRow>) {
        let n = rows.len();
        let before = self.backlog.fetch_add(n, Ordering::Relaxed);
        if before + n > MAX_BACKLOG_ROWS || self.tx.try_send(rows).is_err() {
            self.backlog.fetch_sub(n, Ordering::Relaxed);
        }
    }
}

/// The indexer's end: every batch it takes leaves the backlog.
struct Taken {
    rx: mpsc::Receiver<Vec<IndexRow>>,
    backlog: Arc<AtomicUsize>,
}

impl Taken {
    fn took(&self, rows: Vec<IndexRow>) -> Vec<IndexRow> {
        self.backlog.fetch_sub(rows.len(), Ordering::Relaxed);
        rows
    }

    fn recv_timeout(&self, wait: Duration) -> Result<Vec<IndexRow>, mpsc::RecvTimeoutError> {
        self.rx.recv_timeout(wait).map(|rows| self.took(rows))
    }

    fn try_recv(&self) -> Result<Vec<IndexRow>, mpsc::TryRecvError> {
        self.rx.try_recv().map(|rows| self.took(rows))
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ioprio_set(2) arguments (linux/ioprio.h): the calling thread, the idle class.
const IOPRIO_WHO_PROCESS: libc::c_long = 1;
const IOPRIO_CLASS_IDLE: libc::c_long = 3;
const IOPRIO_CLASS_SHIFT: u32 = 13;

/// Puts the calling thread under `SCHED_IDLE` (it runs only when no other thread wants the CPU)
/// and in the idle I/O class (the block layer's scheduler, mq-deadline or BFQ, dispatches its
/// writes only when nothing else waits): derived work (the index, the patient copy) must take
/// neither the CPU from the data plane nor the audit disk from the journal, whose syncs every
/// request waits for. The I/O class covers what the thread itself writes back (`SQLite`'s
/// checkpoints and syncs), not the kernel's own periodic writeback.
pub(crate) fn idle_priority(what: &str) {
    // SAFETY: sched_setscheduler on this thread (pid 0) with a valid parameter changes only
    // its scheduling policy.
    let idle = unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &raw const param)
    };
    if idle != 0 {
        tracing::debug!(what, "runs at normal priority (SCHED_IDLE refused)");
    }
    // SAFETY: ioprio_set on the calling thread (who 0) changes only its I/O priority.
    let io = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0,
            IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
        )
    };
    if io != 0 {
        tracing::debug!(what, "writes at normal I/O priority (idle class refused)");
    }
}

fn run(db: &Path, rows: &Taken, durable: u64) {
    idle_priority("the audit indexer");
    let dir = journal_dir(db);
    let mut conn = None;
    let mut batch: Vec<IndexRow> = Vec::with_capacity(MAX_ROWS);
    // What the journal held when the writer opened it (`durable`) is indexed first.
    let mut started = false;
    let mut open = true;
    while open {
        match rows.recv_timeout(MAX_WAIT) {
            Ok(first) => batch.extend(first),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => open = false,
        }
        // Large transactions: wait for more rows while the first have waited less than MAX_WAIT.
        let since = Instant::now();
        while open && batch.len() < MIN_ROWS {
            let left = MAX_WAIT.saturating_sub(since.elapsed());
            if left.is_zero() {
                break;
            }
            match rows.recv_timeout(left) {
                Ok(more) => batch.extend(more),
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => open = false,
            }
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
        let startup = (!started).then_some(durable);
        match index_batch(db, &dir, &mut conn, &mut batch, startup) {
            Ok(()) => started = true,
            Err(e) => {
                // The rows are in the journal; a later round (or a reader) indexes them.
                tracing::warn!(error = %super::writer::error_chain(&e), "audit index behind the journal; will retry");
                conn = None;
                batch.clear();
                if open {
                    thread::sleep(MAX_WAIT);
                }
            }
        }
    }
}

/// Indexes `batch`, first reading from the journal what lies between the index's head and the
/// batch (a gap: rows a failed round dropped). Only what the writer reported durable is read
/// from the journal here, so a frame a failed sync is about to overwrite is never indexed.
fn index_batch(
    db: &Path,
    dir: &Path,
    conn: &mut Option<Connection>,
    batch: &mut Vec<IndexRow>,
    startup: Option<u64>,
) -> Result<(), AuditError> {
    if conn.is_none() {
        *conn = Some(store::open(db, &options())?);
    }
    let Some(c) = conn.as_mut() else {
        return Ok(());
    };
    if let Some(durable) = startup {
        catch_up_conn(c, dir, durable)?;
    }
    let Some(first) = batch.first().map(|row| row.seq) else {
        return Ok(());
    };
    let mut head = store::head(c).map_err(|source| AuditError::Read { source })?;
    if first > head.seq + 1 {
        catch_up_conn(c, dir, first - 1)?;
        head = store::head(c).map_err(|source| AuditError::Read { source })?;
    }
    batch.retain(|row| row.seq > head.seq);
    if batch.first().is_some_and(|row| row.seq == head.seq + 1) {
        store::index(c, batch).map_err(AuditError::write)?;
    }
    batch.clear();
    Ok(())
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;
    use crate::audit::{record::Entry, tests_support::record};

    fn rows(first: u64, n: usize) -> Vec<IndexRow> {
        (first..)
            .take(n)
            .map(|seq| IndexRow {
                seq,
                prev_hash: [0; 32],
                hash: [0; 32],
                offset: 0,
                entry: Entry::Request(record(seq, jiff::Timestamp::now())),
            })
            .collect()
    }

    #[test]
    fn the_backlog_is_bounded_by_rows_and_frees_what_the_indexer_takes() {
        let (tx, rx) = mpsc::sync_channel(MAX_BACKLOG_BATCHES);
        let backlog = Arc::new(AtomicUsize::new(0));
        let feed = Feed {
            tx,
            backlog: Arc::clone(&backlog),
        };
        let taken = Taken {
            rx,
            backlog: Arc::clone(&backlog),
        };
        let per_batch = 1000;
        let batches = MAX_BACKLOG_ROWS / per_batch;
        let mut first = 1;
        for _ in 0..batches + 3 {
            feed.send(rows(first, per_batch));
            first += 1000;
        }
        // Whole batches up to the bound were kept; the rest were dropped, not queued.
        assert_eq!(backlog.load(Ordering::Relaxed), batches * per_batch);
        let mut kept = 0;
        while let Ok(batch) = taken.try_recv() {
            assert_eq!(batch.len(), per_batch);
            kept += 1;
        }
        assert_eq!(kept, batches);
        assert_eq!(backlog.load(Ordering::Relaxed), 0);
        // Room again once taken.
        feed.send(rows(1, per_batch));
        assert_eq!(taken.try_recv().unwrap().len(), per_batch);
    }
}
