//! The writer: one std thread appends to the journal in groups, a second makes them durable.
//!
//! Callers on the tokio runtime serialize their record, queue it on a bounded channel and await
//! a oneshot reply. The **appender** thread takes the first queued record, drains whatever else is
//! queued (up to `max_batch`), writes them all as consecutive journal frames with one `pwrite`,
//! and answers each caller with its seq and a handle on its batch's durability ([`Appended`]).
//! The **syncer** thread `fdatasync`s the journal whenever something was written since its last
//! sync, then marks every batch up to that point durable and hands their rows to the indexer.
//! While it syncs, the appender keeps appending, so batches grow with load and one sync serves
//! all of them (group commit), and a caller that may act before durability (a read, forwarded
//! at once; its response held until then) overlaps its work with the sync. A failed sync fails
//! every batch not yet durable; the appender goes back to the last durable frame and carries on,
//! so writes resume without a restart once the cause is gone.

use std::{
    collections::VecDeque,
    fs::File,
    path::PathBuf,
    sync::{
        Arc, Condvar, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
        mpsc as std_mpsc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use jiff::Timestamp;
use prometheus::Histogram;
use rusqlite::Connection;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use super::{
    AuditError,
    chain::Hash,
    index::Prepared,
    indexer::{self, Indexer},
    journal::{self, Journal, JournalOptions, Position},
    pindex,
    record::{self, Completion, Entry, Record},
    store::{self, Durability, IndexRow, Retention, StoreOptions},
};

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
    /// Records waiting for the writer; a full queue makes `commit` wait and `complete` fail.
    pub queue_capacity: usize,
    /// Most records in one append.
    pub max_batch: usize,
    /// Observes the duration of every journal sync (the agent's
    /// `fhirwall_audit_commit_seconds`).
    pub commit_seconds: Option<Histogram>,
    /// A sync slower than this is logged (at most once per `SLOW_COMMIT_LOG_EVERY`): every
    /// request waiting for durability waited for it.
    pub slow_commit: Duration,
}

/// Durable batches waiting for the indexer, at most; beyond, the indexer reads them back from
/// the journal.
const INDEX_BACKLOG: usize = 4096;

/// The least time between two "slow commit" warnings; the ones in between are counted.
const SLOW_COMMIT_LOG_EVERY: Duration = Duration::from_mins(1);

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
            queue_capacity: 65_536,
            max_batch: 4_096,
            commit_seconds: None,
            slow_commit: Duration::from_millis(100),
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
}

/// Handle the proxy uses to record decisions; cheap to clone, one per task is fine.
#[derive(Clone, Debug)]
pub struct AuditSink {
    tx: mpsc::Sender<Job>,
    shared: Arc<Shared>,
}

/// Reads the writer's health and counters without keeping it alive: the admin API holds one of
/// these, so the writer still stops once the last [`AuditSink`] is dropped.
#[derive(Clone, Debug)]
pub struct AuditMonitor {
    shared: Arc<Shared>,
}

/// Owns the writer threads; [`AuditWriter::join`] waits for them to drain the queue after every
/// [`AuditSink`] is dropped.
#[derive(Debug)]
pub struct AuditWriter {
    thread: JoinHandle<()>,
}

/// Where a batch stands.
#[derive(Clone, Debug)]
enum BatchState {
    Written,
    Durable,
    Failed(Arc<AuditError>),
}

/// A record appended to the journal: its seq, and a way to wait until it is durable.
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
        match state {
            BatchState::Durable => Ok(self.seq),
            BatchState::Failed(source) => Err(AuditError::Unavailable { source }),
            BatchState::Written => Err(AuditError::WriterGone),
        }
    }
}

/// How a caller wants to hear of its record.
#[derive(Debug)]
enum Reply {
    /// Once it is written (and then, through [`Appended::durable`], once durable).
    Appended(oneshot::Sender<Result<Appended, AuditError>>),
    /// Once it is durable: one wake-up for a caller that waits for that anyway.
    Durable(oneshot::Sender<Result<CommittedSeq, AuditError>>),
}

impl Reply {
    fn fail(self, err: &Arc<AuditError>) {
        let err = || AuditError::Unavailable {
            source: Arc::clone(err),
        };
        match self {
            Reply::Appended(tx) => drop(tx.send(Err(err()))),
            Reply::Durable(tx) => drop(tx.send(Err(err()))),
        }
    }
}

#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "appends are nearly every job; boxing would add an allocation each"
)]
enum Job {
    Append {
        entry: Prepared,
        reply: Option<Reply>,
    },
    /// Apply retention; the reply (if any) gets the number of entries pruned.
    Prune {
        reply: Option<oneshot::Sender<Result<u64, AuditError>>>,
    },
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
}

impl AuditSink {
    /// Opens (or creates) the journal and its index and starts the writer threads. Fails when
    /// either cannot be opened, so a misconfigured agent refuses to start instead of refusing
    /// every request.
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
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let shared = Arc::new(Shared {
            health: Mutex::new(Health::Healthy),
            committed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            failed_batches: AtomicU64::new(0),
            pruned: AtomicU64::new(0),
            head: AtomicU64::new(position.head.seq),
        });
        let retention_on =
            config.retention.max_age.is_some() || config.retention.max_bytes.is_some();
        if retention_on {
            spawn_ticker(tx.downgrade(), config.retention_interval)?;
        }
        // Bounded: an indexer that falls behind reads what it missed from the journal instead
        // of holding it in memory.
        let (rows_tx, rows_rx) = std_mpsc::sync_channel(INDEX_BACKLOG);
        let indexer = Indexer::start(&config.path, rows_rx, position.head.seq)?;
        // After the store is open (and migrated): the copy reads its `patients` table.
        let patients = pindex::Indexer::start(&config.path)?;
        let sync = Arc::new(Sync {
            tail: Mutex::new(Tail {
                durable: position,
                written: position,
                file: journal.file(),
                pending: VecDeque::new(),
                failed: None,
                background_failed: None,
                stop: false,
            }),
            wake: Condvar::new(),
            dir: dir.clone(),
        });
        let syncer = {
            let sync = Arc::clone(&sync);
            let durability = config.store.durability;
            let histogram = config.commit_seconds.clone();
            let slow = config.slow_commit;
            let rows = rows_tx.clone();
            thread::Builder::new()
                .name("fw-audit-sync".into())
                .spawn(move || sync.run(durability, histogram.as_ref(), slow, &rows))
                .map_err(|source| AuditError::Thread { source })?
        };
        let state = Writer {
            journal,
            conn,
            sync,
            syncer: Some(syncer),
            rows: rows_tx,
            _indexer: indexer,
            _patients: patients,
            hashes: Vec::new(),
            config,
            shared: Arc::clone(&shared),
        };
        let thread = thread::Builder::new()
            .name("fw-audit-append".into())
            .spawn(move || state.run(rx))
            .map_err(|source| AuditError::Thread { source })?;
        Ok((Self { tx, shared }, AuditWriter { thread }))
    }

    /// Appends `record` to the journal and resolves once it is written there, not yet durable:
    /// for a read-only request, forward it now and release its response only after
    /// [`Appended::durable`]. On `Err` answer 503 and do not forward.
    pub async fn append(&self, record: Record) -> Result<Appended, AuditError> {
        let (reply, rx) = oneshot::channel();
        self.send(record, Reply::Appended(reply)).await?;
        rx.await.map_err(|_| AuditError::WriterGone)?
    }

    /// Commits `record` and resolves once it is durable. Forward a request that changes
    /// anything only after this returns `Ok`; on `Err` answer 503 and do not forward.
    pub async fn commit(&self, record: Record) -> Result<CommittedSeq, AuditError> {
        let (reply, rx) = oneshot::channel();
        self.send(record, Reply::Durable(reply)).await?;
        rx.await.map_err(|_| AuditError::WriterGone)?
    }

    async fn send(&self, mut record: Record, reply: Reply) -> Result<(), AuditError> {
        record.sanitize();
        let entry = Prepared::new(&Entry::Request(record))?;
        self.tx
            .send(Job::Append {
                entry,
                reply: Some(reply),
            })
            .await
            .map_err(|_| AuditError::WriterGone)
    }

    /// Queues how a request ended without waiting for the commit (nothing waits on it). An `Err`
    /// means it was not queued; a queued completion that later fails to commit is counted in
    /// [`AuditStats::failed_records`] and logged.
    pub fn complete(&self, mut completion: Completion) -> Result<(), AuditError> {
        completion.sanitize();
        let entry = Prepared::new(&Entry::Completion(completion))?;
        self.tx
            .try_send(Job::Append { entry, reply: None })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => AuditError::QueueFull,
                mpsc::error::TrySendError::Closed(_) => AuditError::WriterGone,
            })
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
        self.tx
            .send(Job::Prune { reply: Some(reply) })
            .await
            .map_err(|_| AuditError::WriterGone)?;
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
        }
    }

    fn succeeded(&self, count: u64) {
        self.committed.fetch_add(count, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
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
        tracing::error!(records, error = %error_chain(err), "audit journal write failed; refusing requests");
    }
}

impl AuditWriter {
    /// Waits until every queued record is durable (or failed) and the threads have exited.
    /// Call after dropping every [`AuditSink`].
    pub fn join(self) {
        // The writer never panics on purpose; if it did, the records it held were already
        // answered with `WriterGone` by the dropped reply channels.
        let _ = self.thread.join();
    }
}

/// Sends `Job::Prune` every `interval` until the sinks are gone.
fn spawn_ticker(tx: mpsc::WeakSender<Job>, interval: Duration) -> Result<(), AuditError> {
    thread::Builder::new()
        .name("fw-audit-retain".into())
        .spawn(move || {
            loop {
                thread::sleep(interval);
                let Some(tx) = tx.upgrade() else { return };
                // A full queue means the writer is busy; the next tick will do.
                let _ = tx.try_send(Job::Prune { reply: None });
            }
        })
        .map(drop)
        .map_err(|source| AuditError::Thread { source })
}

/// Slow syncs since the last warning about them.
#[derive(Debug, Default)]
struct SlowCommits {
    logged: Option<Instant>,
    since_log: u64,
    worst: Duration,
}

/// A batch written and not yet durable.
struct Pending {
    /// For the callers that were told it was written.
    signal: Option<watch::Sender<BatchState>>,
    /// Callers told only once it is durable.
    waiters: Vec<(u64, oneshot::Sender<Result<CommittedSeq, AuditError>>)>,
    rows: Vec<IndexRow>,
}

impl Pending {
    fn durable(self, rows: &std_mpsc::SyncSender<Vec<IndexRow>>) {
        if let Some(signal) = self.signal {
            let _ = signal.send(BatchState::Durable);
        }
        for (seq, waiter) in self.waiters {
            let _ = waiter.send(Ok(CommittedSeq(seq)));
        }
        let _ = rows.try_send(self.rows);
    }

    fn failed(self, err: &Arc<AuditError>) {
        if let Some(signal) = self.signal {
            let _ = signal.send(BatchState::Failed(Arc::clone(err)));
        }
        for (_, waiter) in self.waiters {
            Reply::Durable(waiter).fail(err);
        }
    }
}

/// What the appender and the syncer share.
struct Tail {
    durable: Position,
    written: Position,
    /// The segment being written.
    file: Arc<File>,
    pending: VecDeque<Pending>,
    /// A sync failed: the appender must go back to `durable` before it appends again.
    failed: Option<Arc<AuditError>>,
    /// With background durability: the last periodic sync failed, so nothing is accepted until
    /// one succeeds (released records cannot be recalled).
    background_failed: Option<Arc<AuditError>>,
    stop: bool,
}

struct Sync {
    tail: Mutex<Tail>,
    wake: Condvar,
    /// The journal directory, for errors.
    dir: PathBuf,
}

impl Sync {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(
        &self,
        durability: Durability,
        histogram: Option<&Histogram>,
        slow_after: Duration,
        rows: &std_mpsc::SyncSender<Vec<IndexRow>>,
    ) {
        let mut slow = SlowCommits::default();
        loop {
            let (file, upto, batches) = {
                let mut tail = self.lock();
                match durability {
                    // As soon as something waits for it.
                    Durability::Fsync => {
                        while !(tail.stop || !tail.pending.is_empty() && tail.failed.is_none()) {
                            tail = self.wake.wait(tail).unwrap_or_else(PoisonError::into_inner);
                        }
                        if tail.stop && (tail.pending.is_empty() || tail.failed.is_some()) {
                            return;
                        }
                    }
                    // Once an interval, whatever was written (and a last time at stop).
                    Durability::Background { fsync_interval } => {
                        let deadline = Instant::now() + fsync_interval;
                        while !tail.stop {
                            let left = deadline.saturating_duration_since(Instant::now());
                            if left.is_zero() {
                                break;
                            }
                            tail = self
                                .wake
                                .wait_timeout(tail, left)
                                .unwrap_or_else(PoisonError::into_inner)
                                .0;
                        }
                        if tail.written == tail.durable {
                            if tail.stop {
                                return;
                            }
                            continue;
                        }
                    }
                }
                let batches: Vec<Pending> = tail.pending.drain(..).collect();
                (Arc::clone(&tail.file), tail.written, batches)
            };
            let started = Instant::now();
            let result = journal::sync_data(&file, &self.dir);
            let took = started.elapsed();
            if let Some(h) = histogram {
                h.observe(took.as_secs_f64());
            }
            slow.note(took, slow_after);
            let mut tail = self.lock();
            match result {
                Ok(()) => {
                    tail.durable = upto;
                    tail.background_failed = None;
                    drop(tail);
                    for batch in batches {
                        batch.durable(rows);
                    }
                }
                Err(e) => {
                    let err = Arc::new(AuditError::journal(e));
                    if matches!(durability, Durability::Background { .. }) {
                        tail.background_failed = Some(err);
                        continue;
                    }
                    // Everything after the last durable frame fails, also what was appended
                    // while this sync ran.
                    let later: Vec<Pending> = tail.pending.drain(..).collect();
                    tail.failed = Some(Arc::clone(&err));
                    drop(tail);
                    for batch in batches.into_iter().chain(later) {
                        batch.failed(&err);
                    }
                }
            }
        }
    }
}

impl SlowCommits {
    /// Warns about a sync slow enough that the requests waiting on it noticed.
    fn note(&mut self, elapsed: Duration, slow_after: Duration) {
        if elapsed < slow_after {
            return;
        }
        self.since_log += 1;
        self.worst = self.worst.max(elapsed);
        let now = Instant::now();
        if self
            .logged
            .is_some_and(|at| now - at < SLOW_COMMIT_LOG_EVERY)
        {
            return;
        }
        tracing::warn!(
            ms = elapsed.as_millis(),
            slow_syncs = self.since_log,
            worst_ms = self.worst.as_millis(),
            "audit journal sync slow (the audit disk stalls responses; see fhirwall_audit_commit_seconds)"
        );
        *self = Self {
            logged: Some(now),
            ..Self::default()
        };
    }
}

struct Writer {
    journal: Journal,
    /// The index connection retention uses.
    conn: Connection,
    sync: Arc<Sync>,
    syncer: Option<JoinHandle<()>>,
    /// Durable rows for the indexer (background durability sends them at append).
    rows: std_mpsc::SyncSender<Vec<IndexRow>>,
    _indexer: Indexer,
    /// Keeps the patient index copy up to date (`pindex.rs`); stopped with the writer.
    _patients: pindex::Indexer,
    hashes: Vec<Hash>,
    config: AuditConfig,
    shared: Arc<Shared>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut batch: Vec<(Prepared, Option<Reply>)> = Vec::with_capacity(self.config.max_batch);
        while let Some(job) = rx.blocking_recv() {
            let mut next = Some(job);
            // Jobs are handled in queue order: a prune ends the group before it.
            let mut prune = None;
            while let Some(job) = next.take() {
                match job {
                    Job::Append { entry, reply } => batch.push((entry, reply)),
                    Job::Prune { reply } => {
                        prune = Some(reply);
                        break;
                    }
                }
                if batch.len() < self.config.max_batch {
                    next = rx.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.append_batch(&mut batch);
            }
            if let Some(reply) = prune {
                let result = self.prune();
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
        }
        self.stop();
    }

    /// Lets the syncer make the last batches durable, then stops it.
    fn stop(&mut self) {
        self.sync.lock().stop = true;
        self.sync.wake.notify_all();
        if let Some(syncer) = self.syncer.take() {
            let _ = syncer.join();
        }
    }

    /// Appends the batch and answers its callers; `false` when it failed.
    fn append_batch(&mut self, batch: &mut Vec<(Prepared, Option<Reply>)>) -> bool {
        let refused = {
            let mut tail = self.sync.lock();
            rewind_if_failed(&mut self.journal, &mut tail);
            tail.background_failed.clone()
        };
        if let Some(err) = refused {
            self.fail_shared(batch, &err);
            return false;
        }
        let before = self.journal.position();
        let appended = self.journal.append(
            batch.iter().map(|(e, _)| e.body.as_bytes()),
            &mut self.hashes,
        );
        let position = match appended {
            Ok(position) => position,
            Err(e) => {
                // A batch that filled a segment may have left frames in the (synced) segment
                // before; they stand, though their callers are told it failed (the safe side).
                let mut tail = self.sync.lock();
                tail.written = self.journal.position();
                tail.file = self.journal.file();
                if tail.written.segment != before.segment {
                    tail.durable = tail.written;
                }
                drop(tail);
                self.shared
                    .head
                    .store(self.journal.position().head.seq, Ordering::Relaxed);
                self.fail(batch, AuditError::journal(e));
                return false;
            }
        };
        if position.segment != before.segment {
            self.prepare_spare();
        }
        let first = before.head.seq + 1;
        let count = batch.len() as u64;
        let mut prev = before.head.hash;
        let mut rows = Vec::with_capacity(batch.len());
        let mut told_written = Vec::new();
        let mut waiters = Vec::new();
        for ((entry, reply), (seq, hash)) in batch.drain(..).zip((first..).zip(&self.hashes)) {
            rows.push(IndexRow {
                seq,
                prev_hash: prev,
                hash: *hash,
                entry,
            });
            prev = *hash;
            match reply {
                Some(Reply::Appended(tx)) => told_written.push((seq, tx)),
                Some(Reply::Durable(tx)) => waiters.push((seq, tx)),
                None => {}
            }
        }
        let (signal, durable) = if told_written.is_empty() {
            (None, None)
        } else {
            let (signal, durable) = watch::channel(BatchState::Written);
            (Some(signal), Some(durable))
        };
        let pending = Pending {
            signal,
            waiters,
            rows,
        };
        let background = matches!(self.config.store.durability, Durability::Background { .. });
        {
            let mut tail = self.sync.lock();
            if let Some(err) = tail.failed.clone() {
                // A sync failed while this batch was written: it cannot become durable as is.
                rewind_if_failed(&mut self.journal, &mut tail);
                drop(tail);
                self.shared.failed(count, &err);
                pending.failed(&err);
                for (_, tx) in told_written {
                    Reply::Appended(tx).fail(&err);
                }
                return false;
            }
            tail.written = position;
            tail.file = self.journal.file();
            if background {
                pending.durable(&self.rows);
            } else {
                tail.pending.push_back(pending);
                self.sync.wake.notify_one();
            }
        }
        self.shared.head.store(position.head.seq, Ordering::Relaxed);
        self.shared.succeeded(count);
        if let Some(durable) = durable {
            for (seq, tx) in told_written {
                // A caller that stopped waiting (request cancelled) is fine: the record is
                // appended either way.
                let _ = tx.send(Ok(Appended {
                    seq: CommittedSeq(seq),
                    batch: durable.clone(),
                }));
            }
        }
        true
    }

    fn fail(&mut self, batch: &mut Vec<(Prepared, Option<Reply>)>, err: AuditError) {
        self.fail_shared(batch, &Arc::new(err));
    }

    fn fail_shared(&mut self, batch: &mut Vec<(Prepared, Option<Reply>)>, err: &Arc<AuditError>) {
        self.shared.failed(batch.len() as u64, err);
        for (_, reply) in batch.drain(..) {
            if let Some(reply) = reply {
                reply.fail(err);
            } else {
                tracing::warn!("an unawaited completion entry was not committed");
            }
        }
    }

    /// Writes the next segment's zeros off this thread, so the next rotation is a rename.
    fn prepare_spare(&self) {
        let dir = indexer::journal_dir(&self.config.path);
        let opts = self.config.journal;
        let _ = thread::Builder::new()
            .name("fw-audit-spare".into())
            .spawn(move || {
                if let Err(e) = Journal::prepare_spare(&dir, opts) {
                    tracing::warn!(error = %e, "cannot prepare the next audit journal segment; the next rotation will");
                }
            });
    }

    /// Retention: appends the marker to the journal and makes it durable, then removes what it
    /// covers from the index and the journal segments that hold nothing newer.
    fn prune(&mut self) -> Result<u64, AuditError> {
        let mut pruned = 0;
        // Bounded per tick so a large backlog never holds up appends for long.
        for _ in 0..10 {
            // What is durable is what may be pruned against; the index may lag behind it.
            indexer::catch_up(&self.config.path)?;
            let head = self.journal.position().head;
            let Some(marker) = store::plan_prune(&self.conn, head, &self.config.retention)? else {
                return Ok(pruned);
            };
            let entry = Prepared::new(&Entry::Pruned(marker.clone()))?;
            if !self.append_batch(&mut vec![(entry, None)]) {
                return Err(AuditError::WriterGone);
            }
            journal::sync_data(&self.journal.file(), &self.sync.dir)
                .map_err(AuditError::journal)?;
            store::remove_range(&mut self.conn, marker.first_seq, marker.last_seq)
                .map_err(AuditError::write)?;
            journal::remove_through(&indexer::journal_dir(&self.config.path), marker.last_seq)
                .map_err(AuditError::journal)?;
            self.shared
                .pruned
                .fetch_add(marker.count, Ordering::Relaxed);
            pruned += marker.count;
            tracing::info!(
                first = marker.first_seq,
                last = marker.last_seq,
                "audit retention pruned"
            );
        }
        Ok(pruned)
    }
}

/// After a failed sync: back to the last durable frame.
fn rewind_if_failed(journal: &mut Journal, tail: &mut Tail) {
    if tail.failed.take().is_some() {
        journal.rewind(tail.durable);
        tail.written = journal.position();
        tail.file = journal.file();
    }
}

/// The error and its sources on one line.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
