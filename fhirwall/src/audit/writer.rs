//! The writer: callers append on their own thread; one flusher thread writes and syncs.
//!
//! [`AuditSink::append`] serializes the record, then, under one short lock, gives it the next
//! seq, encodes its frame and chain hash into the open batch (`log.rs`) and returns a handle on
//! that batch's durability ([`Appended`]): no thread hop and no system call on the request path.
//! The **flusher** thread (`flusher.rs`) takes the open batch, writes it with one `pwrite`,
//! `fdatasync`s the journal, and marks the batch durable, waking its callers once. While it
//! syncs, callers keep appending to the next batch, so batches grow with load and one sync
//! serves them all (group commit), and a caller that may act before durability (a read,
//! forwarded at once, its response held until then) overlaps its work with the sync. A failed
//! write or sync fails that batch and everything appended behind it; the chain goes back to the
//! last durable frame and writes resume without a restart once the cause is gone.

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use jiff::Timestamp;
use prometheus::Histogram;
use serde::Serialize;
use tokio::sync::{oneshot, watch};

pub use self::log::Producers;
use self::{
    flusher::Flusher,
    log::{BatchState, Caller, Log, Refused, Serialized, Spare},
};
use super::{
    AuditError,
    indexer::{self, Indexer},
    journal::{Frames, Journal, JournalOptions},
    pindex,
    record::{self, Completion, CredentialEvent, Entry, Record},
    store::{self, Retention, StoreOptions},
};

mod flusher;
mod log;
mod spare;

/// Where and how the audit trail is written.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    /// The index (`SQLite`); the journal is the directory beside it (`audit.journal/`).
    pub path: PathBuf,
    pub store: StoreOptions,
    pub journal: JournalOptions,
    pub retention: Retention,
    /// How often the writer applies `retention`.
    pub retention_interval: Duration,
    /// Observes the duration of every group commit, from the flusher taking the batch to its
    /// release: the write, and with `fsync` the sync (the agent's
    /// `fhirwall_audit_commit_seconds`).
    pub commit_seconds: Option<Histogram>,
    /// A commit slower than this is logged (at most once per `SLOW_COMMIT_LOG_EVERY`): every
    /// request waiting for durability waited for it.
    pub slow_commit: Duration,
    /// The data plane's threads, when they report parking (see [`Producers`]): with `fsync`,
    /// a batch is held for more entries while one of them runs.
    pub producers: Option<Arc<Producers>>,
}

impl AuditConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            store: StoreOptions::default(),
            journal: JournalOptions::default(),
            retention: Retention {
                max_batch: 20_000,
                ..Retention::default()
            },
            retention_interval: Duration::from_mins(1),
            commit_seconds: None,
            slow_commit: Duration::from_millis(100),
            producers: None,
        }
    }
}

/// The sequence number a committed record got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct CommittedSeq(pub u64);

/// Whether the store is accepting writes. `Failing` is alert-worthy: every request is being
/// refused with 503 until it clears.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum Health {
    Healthy,
    Failing {
        since: Timestamp,
        consecutive_failures: u64,
        last_error: String,
    },
}

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditStats {
    pub committed_records: u64,
    pub failed_records: u64,
    pub committed_batches: u64,
    pub failed_batches: u64,
    pub pruned_records: u64,
    pub head_seq: u64,
    /// `fdatasync`s of the journal that succeeded.
    pub journal_syncs: u64,
    /// Batches the flusher held back for more entries before writing them (`fsync` only).
    pub gathered_batches: u64,
}

/// Handle the proxy uses to record decisions; cheap to clone, one per task is fine.
#[derive(Clone, Debug)]
pub struct AuditSink {
    log: Arc<Log>,
    /// The last clone dropped tells the flusher to finish.
    _open: Arc<Open>,
    shared: Arc<Shared>,
}

/// Stops the flusher once every [`AuditSink`] is gone.
#[derive(Debug)]
struct Open(Arc<Log>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.lock().stop = true;
        self.0.wake.notify_one();
    }
}

/// Reads the writer's health and counters without keeping it alive: the admin API holds one of
/// these, so the writer still stops once the last [`AuditSink`] is dropped.
#[derive(Clone, Debug)]
pub struct AuditMonitor {
    shared: Arc<Shared>,
}

/// Owns the flusher thread; [`AuditWriter::join`] waits for it to write and sync what is open
/// after every [`AuditSink`] is dropped.
#[derive(Debug)]
pub struct AuditWriter {
    thread: JoinHandle<()>,
}

/// A record appended to the journal's open batch: its seq, and a way to wait until it is
/// durable.
#[derive(Debug)]
pub struct Appended {
    pub seq: CommittedSeq,
    batch: watch::Receiver<BatchState>,
}

impl Appended {
    /// Resolves once the record is durable (`Ok`), or its batch failed to become durable
    /// (`Err`: nothing the record stands for may reach anyone).
    pub async fn durable(mut self) -> Result<CommittedSeq, AuditError> {
        let state = self
            .batch
            .wait_for(|s| !matches!(s, BatchState::Written))
            .await
            .map_err(|_| AuditError::WriterGone)?
            .clone();
        self.outcome(&state)
    }

    /// Where the record stands now: `None` while its batch is being written.
    fn settled(&self) -> Option<Result<CommittedSeq, AuditError>> {
        let state = self.batch.borrow().clone();
        match state {
            BatchState::Written => None,
            settled => Some(self.outcome(&settled)),
        }
    }

    fn outcome(&self, state: &BatchState) -> Result<CommittedSeq, AuditError> {
        match state {
            BatchState::Durable => Ok(self.seq),
            BatchState::Failed(source) => Err(AuditError::Unavailable {
                source: Arc::clone(source),
            }),
            BatchState::Written => Err(AuditError::WriterGone),
        }
    }
}

#[derive(Debug)]
struct Shared {
    health: Mutex<Health>,
    committed: AtomicU64,
    failed: AtomicU64,
    batches: AtomicU64,
    failed_batches: AtomicU64,
    pruned: AtomicU64,
    head: AtomicU64,
    syncs: AtomicU64,
    gathered: AtomicU64,
}

impl AuditSink {
    /// Opens (or creates) the journal and its index and starts the flusher. Fails when either
    /// cannot be opened, so a misconfigured agent refuses to start instead of refusing every
    /// request.
    pub fn start(config: AuditConfig) -> Result<(Self, AuditWriter), AuditError> {
        let mut conn = store::open(&config.path, &indexer::options())?;
        let index_head = store::head(&conn).map_err(|source| AuditError::Read { source })?;
        // An empty journal continues the chain of a store written before the journal existed.
        let dir = indexer::journal_dir(&config.path);
        let journal =
            Journal::open(&dir, config.journal, index_head).map_err(AuditError::journal)?;
        let position = journal.position();
        if index_head.seq > position.head.seq {
            // The index ran ahead of what the journal made durable before a crash.
            let removed =
                store::truncate_after(&mut conn, position.head.seq).map_err(AuditError::write)?;
            tracing::warn!(
                removed,
                journal_head = position.head.seq,
                "audit index held entries the journal never made durable; removed"
            );
        }
        let shared = Arc::new(Shared {
            health: Mutex::new(Health::Healthy),
            committed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            failed_batches: AtomicU64::new(0),
            pruned: AtomicU64::new(0),
            head: AtomicU64::new(position.head.seq),
            syncs: AtomicU64::new(0),
            gathered: AtomicU64::new(0),
        });
        // Bounded: an indexer that falls behind reads what it missed from the journal instead
        // of holding it in memory.
        let (indexer, feed) = Indexer::start(&config.path, position.head.seq)?;
        // After the store is open (and migrated): the copy reads its `patients` table.
        let patients = pindex::Indexer::start(&config.path)?;
        let spare = if Journal::spare_ready(&dir) {
            Spare::Ready
        } else {
            Spare::Preparing
        };
        let preparing = matches!(spare, Spare::Preparing);
        let log = Log::new(
            position.head,
            journal.room(),
            spare,
            config.journal,
            config.producers.clone(),
        );
        let spare_threads = if preparing {
            spare::spawn(&log, &shared, dir.clone(), config.journal)
        } else {
            None
        };
        let flusher = Flusher {
            log: Arc::clone(&log),
            journal,
            good: position,
            conn,
            feed,
            indexer,
            patients,
            config,
            shared: Arc::clone(&shared),
            spare: Frames::default(),
            offsets: Vec::new(),
            spare_threads: spare_threads.into_iter().collect(),
        };
        let thread = thread::Builder::new()
            .name("fw-audit-sync".into())
            .spawn(move || flusher.run())
            .map_err(|source| AuditError::Thread { source })?;
        let sink = Self {
            _open: Arc::new(Open(Arc::clone(&log))),
            log,
            shared,
        };
        Ok((sink, AuditWriter { thread }))
    }

    /// Appends `record` to the journal's open batch, not yet durable: for a read-only request,
    /// forward it now and release its response only after [`Appended::durable`]. Waits only
    /// while the open batch is full (the disk is behind). On `Err` answer 503 and do not
    /// forward.
    pub async fn append(&self, record: Record) -> Result<Appended, AuditError> {
        self.append_as(record, Caller::GoesOn).await
    }

    async fn append_as(&self, mut record: Record, caller: Caller) -> Result<Appended, AuditError> {
        record.sanitize();
        let entry = Serialized::new(Entry::Request(record))?;
        let appended = self.log.push_waiting(entry, caller).await;
        if appended.is_err() {
            self.shared.failed.fetch_add(1, Ordering::Relaxed);
        }
        appended
    }

    /// Commits `record` and resolves once it is durable. Forward a request that changes
    /// anything only after this returns `Ok`; on `Err` answer 503 and do not forward.
    pub async fn commit(&self, record: Record) -> Result<CommittedSeq, AuditError> {
        self.append_as(record, Caller::Waits).await?.durable().await
    }

    /// Appends how a request ended without waiting for durability (nothing waits on it). An
    /// `Err` means it was not appended; an appended completion whose batch later fails is
    /// counted in [`AuditStats::failed_records`] and logged.
    pub fn complete(&self, mut completion: Completion) -> Result<(), AuditError> {
        completion.sanitize();
        self.push_now(Entry::Completion(completion))
    }

    /// Appends an event that is not a request (a brokered token issued or given up) without
    /// waiting for durability.
    pub fn note(&self, event: CredentialEvent) -> Result<(), AuditError> {
        self.push_now(Entry::Credential(event))
    }

    fn push_now(&self, entry: Entry) -> Result<(), AuditError> {
        let entry = Serialized::new(entry)?;
        let refused = match self.log.push(entry, Caller::GoesOn) {
            Ok(_) => return Ok(()),
            Err(Refused::Full(_)) => AuditError::QueueFull,
            Err(Refused::Err(err)) => err,
        };
        self.shared.failed.fetch_add(1, Ordering::Relaxed);
        Err(refused)
    }

    #[must_use]
    pub fn health(&self) -> Health {
        self.shared.health()
    }

    #[must_use]
    pub fn stats(&self) -> AuditStats {
        self.shared.stats()
    }

    /// A health and counter reader that does not keep the writer running.
    #[must_use]
    pub fn monitor(&self) -> AuditMonitor {
        AuditMonitor {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Applies retention now (the writer also does so every `retention_interval`) and returns
    /// how many entries were pruned. At most ten pruning rounds run per call.
    pub async fn prune_now(&self) -> Result<u64, AuditError> {
        let (reply, rx) = oneshot::channel();
        {
            let mut state = self.log.lock();
            state.prune.push(reply);
            state.wake_at = None;
        }
        self.log.wake.notify_one();
        rx.await.map_err(|_| AuditError::WriterGone)?
    }
}

impl AuditMonitor {
    #[must_use]
    pub fn health(&self) -> Health {
        self.shared.health()
    }

    #[must_use]
    pub fn stats(&self) -> AuditStats {
        self.shared.stats()
    }
}

impl Shared {
    fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn stats(&self) -> AuditStats {
        AuditStats {
            committed_records: self.committed.load(Ordering::Relaxed),
            failed_records: self.failed.load(Ordering::Relaxed),
            committed_batches: self.batches.load(Ordering::Relaxed),
            failed_batches: self.failed_batches.load(Ordering::Relaxed),
            pruned_records: self.pruned.load(Ordering::Relaxed),
            head_seq: self.head.load(Ordering::Relaxed),
            journal_syncs: self.syncs.load(Ordering::Relaxed),
            gathered_batches: self.gathered.load(Ordering::Relaxed),
        }
    }

    /// A batch was made durable; the journal is healthy again unless something else (the next
    /// segment) still fails.
    fn succeeded(&self, count: u64, healthy: bool) {
        self.committed.fetch_add(count, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        if healthy {
            self.healthy();
        }
    }

    /// The journal took a write (or a sync) again.
    fn healthy(&self) {
        let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        if let Health::Failing {
            consecutive_failures,
            ..
        } = &*health
        {
            tracing::warn!(consecutive_failures, "audit journal writable again");
            *health = Health::Healthy;
        }
    }

    fn failed(&self, records: u64, err: &AuditError) {
        self.failed.fetch_add(records, Ordering::Relaxed);
        self.failed_batches.fetch_add(1, Ordering::Relaxed);
        self.failing(err);
        tracing::error!(records, error = %error_chain(err), "audit journal write failed; refusing requests");
    }

    /// Every request is being refused until the journal takes a write (or a sync) again.
    fn failing(&self, err: &AuditError) {
        let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        let consecutive = match &*health {
            Health::Failing {
                consecutive_failures,
                ..
            } => consecutive_failures + 1,
            Health::Healthy => 1,
        };
        let since = match &*health {
            Health::Failing { since, .. } => *since,
            Health::Healthy => record::now(),
        };
        *health = Health::Failing {
            since,
            consecutive_failures: consecutive,
            last_error: error_chain(err),
        };
    }
}

impl AuditWriter {
    /// Waits until everything appended is durable (or failed) and the flusher has exited, with
    /// the thread preparing the next segment (stopped between two chunks of its zeros). Call
    /// after dropping every [`AuditSink`].
    pub fn join(self) {
        // The flusher never panics on purpose; if it did, the batches it held were answered
        // with `WriterGone` by their dropped signals.
        let _ = self.thread.join();
    }
}

pub(crate) use crate::error_chain;
