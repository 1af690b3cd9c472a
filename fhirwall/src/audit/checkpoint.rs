//! Checkpoints off the commit path.
//!
//! With `Checkpoints::Inline`, the commit that crosses the WAL threshold copies the whole WAL into
//! the database file and fsyncs it before it returns, and every record queued behind it waits
//! too. Here a thread of its own, with its own connection, runs a PASSIVE checkpoint each time
//! the WAL has grown by another quarter of the threshold, concurrently with the writer's next
//! transactions (WAL allows one checkpointer beside one writer). Not after every commit: each
//! checkpoint fsyncs the WAL and the database file, and those fsyncs would compete with the
//! commits' own. Durability is unchanged: the WAL is still fsynced at every commit, and a
//! checkpoint only copies what is already durable (<https://www.sqlite.org/wal.html#ckpt>).
//!
//! A PASSIVE checkpoint never resets the WAL; the writer does, at the start of a write
//! transaction, when every WAL page is already in the database file. Under sustained load the
//! writer starts its next transaction before the checkpointer has copied the last one, so that
//! moment may never come on its own: once the WAL (as the WAL hook reports it after each
//! commit) passes `checkpoint_pages`, the writer runs a PASSIVE checkpoint itself between two
//! transactions. The thread has copied nearly everything by then, so that is a short catch-up
//! rather than the whole copy, after which the WAL starts over.
//!
//! With `Durability::Background` commits are not fsynced (`synchronous=NORMAL`): the thread
//! also wakes every `fsync_interval` and, when anything was committed since its last sync,
//! fsyncs the WAL file. Until a sync has succeeded again after a failed one, the writer refuses
//! new records (`sync_failed`), so a broken disk still fails closed.

use std::{
    fs::File,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc, Condvar, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use rusqlite::Connection;

use super::{
    AuditError,
    store::{self, Durability, StoreOptions},
};

/// The checkpointer thread; stopped and joined on drop.
#[derive(Debug)]
pub struct Checkpointer {
    state: Arc<State>,
    thread: Option<JoinHandle<()>>,
    /// WAL pages at which the writer catches up and the WAL restarts.
    limit: u64,
}

#[derive(Debug, Default)]
struct State {
    /// A commit happened since the last checkpoint.
    pending: Mutex<bool>,
    wake: Condvar,
    stop: AtomicBool,
    /// WAL pages after the writer's last commit.
    wal_pages: AtomicU64,
    /// WAL pages at which the thread is woken next.
    next_wake: AtomicU64,
    /// Commits seen by the WAL hook.
    commits: AtomicU64,
    /// Background fsyncs of the WAL that succeeded.
    syncs: AtomicU64,
    /// The last background fsync failed: records committed since may not be durable.
    sync_failed: AtomicBool,
}

impl Checkpointer {
    /// Opens a connection of its own to `path` and starts the thread.
    pub fn start(path: &Path, opts: &StoreOptions) -> Result<Self, AuditError> {
        let conn = store::open(path, opts)?;
        let state = Arc::new(State::default());
        let limit = u64::from(opts.checkpoint_pages.max(1));
        let sync = match opts.durability {
            Durability::Fsync => None,
            Durability::Background { fsync_interval } => Some(WalSync {
                path: wal_path(path),
                interval: fsync_interval.max(Duration::from_millis(1)),
                file: None,
                synced: 0,
            }),
        };
        let thread = thread::Builder::new()
            .name("fhirwall-ckpt".into())
            .spawn({
                let state = Arc::clone(&state);
                move || run(&conn, &state, sync)
            })
            .map_err(|source| AuditError::Thread { source })?;
        Ok(Self {
            state,
            thread: Some(thread),
            limit,
        })
    }

    /// Watches the writer's connection: after each commit its WAL hook records the WAL's size
    /// and wakes the thread when the WAL has grown by another quarter of the limit. Needed
    /// again after the writer reopens its connection.
    pub fn watch(&self, conn: &mut Connection) -> rusqlite::Result<()> {
        let state = Arc::clone(&self.state);
        let step = (self.limit / 4).max(1);
        state.next_wake.store(step, Ordering::Relaxed);
        // Runs on the writer's thread, inside its COMMIT, after the WAL is synced.
        conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages| {
            state.commits.fetch_add(1, Ordering::Release);
            let pages = u64::try_from(pages).unwrap_or(0);
            let before = state.wal_pages.swap(pages, Ordering::Relaxed);
            if pages < before {
                // The WAL started over.
                state.next_wake.store(step, Ordering::Relaxed);
            }
            if pages >= state.next_wake.load(Ordering::Relaxed) {
                state.next_wake.store(pages + step, Ordering::Relaxed);
                state.wake();
            }
            Ok(())
        }))
    }

    /// Called by the writer between transactions, on its own connection: when the WAL has grown
    /// to the limit, finish the copy so the next transaction starts the WAL over. A failure is
    /// left for the next call (the WAL just grows meanwhile).
    pub fn restart_if_over(&self, conn: &Connection) {
        if self.state.wal_pages.load(Ordering::Relaxed) < self.limit {
            return;
        }
        // Complete or not, the WAL hook of the next commit reports where the WAL stands: small
        // once it started over, still large if the thread was mid-copy or a reader still needs
        // old pages (then the next call tries again).
        if let Err(e) = store::checkpoint(conn) {
            tracing::debug!(error = %e, "catch-up checkpoint failed; will retry");
        }
    }

    /// With `Durability::Background`: the last fsync of the WAL failed, so records committed
    /// since may be lost with a power failure. The writer refuses new records meanwhile.
    pub fn sync_failed(&self) -> bool {
        self.state.sync_failed.load(Ordering::Acquire)
    }

    /// Background fsyncs of the WAL that succeeded so far.
    #[cfg(test)]
    pub fn syncs(&self) -> u64 {
        self.state.syncs.load(Ordering::Acquire)
    }

    /// A checkpointer whose thread never runs: only the writer's catch-up checkpoints restart
    /// the WAL (tests show what that catch-up does on its own).
    #[cfg(test)]
    pub fn idle(limit: u32) -> Self {
        Self {
            state: Arc::new(State::default()),
            thread: None,
            limit: u64::from(limit.max(1)),
        }
    }
}

impl State {
    fn wake(&self) {
        *self.pending.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.wake.notify_one();
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.state.wake();
        if let Some(thread) = self.thread.take() {
            // The thread returns as soon as it sees `stop`, after at most one checkpoint.
            let _ = thread.join();
        }
    }
}

/// The WAL's path beside the database (`SQLite` names it so).
fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Fsyncs the WAL of a `synchronous=NORMAL` store in the background.
struct WalSync {
    path: PathBuf,
    interval: Duration,
    /// The WAL file and its inode, reopened should the inode change.
    file: Option<(File, u64)>,
    /// Commits known to be durable.
    synced: u64,
}

impl WalSync {
    fn sync(&mut self, state: &State) {
        // Read before syncing: every commit counted here is in the WAL when fsync starts.
        let commits = state.commits.load(Ordering::Acquire);
        if commits == self.synced && !state.sync_failed.load(Ordering::Acquire) {
            return;
        }
        match self.sync_file() {
            Ok(()) => {
                self.synced = commits;
                state.syncs.fetch_add(1, Ordering::Release);
                if state.sync_failed.swap(false, Ordering::AcqRel) {
                    tracing::warn!("audit WAL fsync succeeds again");
                }
            }
            Err(e) => {
                self.file = None;
                if !state.sync_failed.swap(true, Ordering::AcqRel) {
                    tracing::error!(error = %e, "audit WAL fsync failed; refusing requests until it succeeds");
                }
            }
        }
    }

    fn sync_file(&mut self) -> std::io::Result<()> {
        let inode = std::fs::metadata(&self.path)?.ino();
        if self.file.as_ref().is_none_or(|(_, ino)| *ino != inode) {
            self.file = Some((File::open(&self.path)?, inode));
        }
        match &self.file {
            Some((file, _)) => file.sync_data(),
            None => Ok(()),
        }
    }
}

fn run(conn: &Connection, state: &State, mut sync: Option<WalSync>) {
    let mut failing = false;
    loop {
        let woken = {
            let mut pending = state.pending.lock().unwrap_or_else(PoisonError::into_inner);
            while !*pending && !state.stop.load(Ordering::SeqCst) {
                match &sync {
                    None => {
                        pending = state
                            .wake
                            .wait(pending)
                            .unwrap_or_else(PoisonError::into_inner);
                    }
                    Some(s) => {
                        let (guard, timeout) = state
                            .wake
                            .wait_timeout(pending, s.interval)
                            .unwrap_or_else(PoisonError::into_inner);
                        pending = guard;
                        if timeout.timed_out() {
                            break;
                        }
                    }
                }
            }
            std::mem::take(&mut *pending)
        };
        // Also on the way out: a clean stop leaves nothing unsynced.
        if let Some(s) = &mut sync {
            s.sync(state);
        }
        if state.stop.load(Ordering::SeqCst) {
            return;
        }
        if !woken {
            continue;
        }
        match store::checkpoint(conn) {
            Ok(()) => failing = false,
            // A full disk stops the database file from growing here. The writer's health says
            // what matters (whether commits succeed); this notes the first failure only.
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "background checkpoint failed; the WAL grows until one succeeds");
            }
            Err(_) => {}
        }
    }
}
