//! The writer: one std thread owns the `SQLite` connection and commits records in groups.
//!
//! Callers on the tokio runtime serialize their record, queue it on a bounded channel and await a
//! oneshot reply. The thread takes the first queued record, drains whatever else is queued (up to
//! `max_batch`), appends them all in one transaction with one fsync, then answers every caller.
//! While it fsyncs, new records queue up and form the next group, so the fsync cost is shared by
//! all concurrent requests. A failed transaction fails every record in it, promptly and loudly;
//! the next group tries again, so writes resume without a restart once the cause is gone.

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use jiff::Timestamp;
use prometheus::Histogram;
use rusqlite::Connection;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::{
    AuditError,
    checkpoint::Checkpointer,
    index::Prepared,
    pindex::Indexer,
    record::{self, Completion, Entry, Record},
    store::{self, Checkpoints, Durability, Head, Retention, StoreOptions},
};

/// Where and how the audit store is written.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    pub path: PathBuf,
    pub store: StoreOptions,
    pub retention: Retention,
    /// How often the writer applies `retention`.
    pub retention_interval: Duration,
    /// Records waiting for the writer; a full queue makes `commit` wait and `complete` fail.
    pub queue_capacity: usize,
    /// Most records in one transaction.
    pub max_batch: usize,
    /// Observes the duration of every committed transaction (the agent's
    /// `fhirwall_audit_commit_seconds`).
    pub commit_seconds: Option<Histogram>,
    /// A commit slower than this is logged (at most once per `SLOW_COMMIT_LOG_EVERY`): every
    /// request in flight waited for it.
    pub slow_commit: Duration,
}

/// The least time between two "slow commit" warnings; the ones in between are counted.
const SLOW_COMMIT_LOG_EVERY: Duration = Duration::from_mins(1);

impl AuditConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            store: StoreOptions {
                checkpoints: Checkpoints::Background,
                ..StoreOptions::default()
            },
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

/// Owns the writer thread; [`AuditWriter::join`] waits for it to drain the queue after every
/// [`AuditSink`] is dropped.
#[derive(Debug)]
pub struct AuditWriter {
    thread: JoinHandle<()>,
}

type Reply = oneshot::Sender<Result<CommittedSeq, AuditError>>;

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
    /// Opens (or creates) the store and starts the writer thread. Fails when the store cannot be
    /// opened, so a misconfigured agent refuses to start instead of refusing every request.
    pub fn start(config: AuditConfig) -> Result<(Self, AuditWriter), AuditError> {
        let mut conn = store::open(&config.path, &config.store)?;
        let head = store::head(&conn).map_err(|source| AuditError::Read { source })?;
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let shared = Arc::new(Shared {
            health: Mutex::new(Health::Healthy),
            committed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            failed_batches: AtomicU64::new(0),
            pruned: AtomicU64::new(0),
            head: AtomicU64::new(head.seq),
        });
        let retention_on =
            config.retention.max_age.is_some() || config.retention.max_bytes.is_some();
        if retention_on {
            spawn_ticker(tx.downgrade(), config.retention_interval)?;
        }
        // The thread also syncs the WAL when commits do not.
        let thread_needed = config.store.checkpoints == Checkpoints::Background
            || config.store.durability != Durability::Fsync;
        let checkpointer = if thread_needed {
            let c = Checkpointer::start(&config.path, &config.store)?;
            c.watch(&mut conn).map_err(|source| AuditError::Open {
                path: config.path.clone(),
                source,
            })?;
            Some(c)
        } else {
            None
        };
        // After the store is open (and migrated): the copy reads its `patients` table.
        let indexer = Indexer::start(&config.path)?;
        let state = Writer {
            conn,
            head,
            broken: false,
            slow: SlowCommits::default(),
            checkpointer,
            _indexer: indexer,
            config,
            shared: Arc::clone(&shared),
        };
        let thread = thread::Builder::new()
            .name("fhirwall-audit".into())
            .spawn(move || state.run(rx))
            .map_err(|source| AuditError::Thread { source })?;
        Ok((Self { tx, shared }, AuditWriter { thread }))
    }

    /// Commits `record` and resolves once the transaction holding it is durable. Forward the
    /// request only after this returns `Ok`; on `Err` answer 503 and do not forward.
    pub async fn commit(&self, mut record: Record) -> Result<CommittedSeq, AuditError> {
        record.sanitize();
        let entry = Prepared::new(&Entry::Request(record))?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Append {
                entry,
                reply: Some(reply),
            })
            .await
            .map_err(|_| AuditError::WriterGone)?;
        rx.await.map_err(|_| AuditError::WriterGone)?
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
    /// how many entries were pruned. At most ten pruning transactions run per call.
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
}

impl AuditWriter {
    /// Waits until every queued record is committed (or failed) and the thread has exited. Call
    /// after dropping every [`AuditSink`].
    pub fn join(self) {
        // The writer never panics on purpose; if it did, the records it held were already
        // answered with `WriterGone` by the dropped reply channels.
        let _ = self.thread.join();
    }
}

/// Sends `Job::Prune` every `interval` until the sinks are gone.
fn spawn_ticker(tx: mpsc::WeakSender<Job>, interval: Duration) -> Result<(), AuditError> {
    thread::Builder::new()
        .name("fhirwall-audit-retention".into())
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

/// Slow commits since the last warning about them.
#[derive(Debug, Default)]
struct SlowCommits {
    logged: Option<Instant>,
    since_log: u64,
    worst: Duration,
}

struct Writer {
    conn: Connection,
    head: Head,
    /// The last transaction failed: re-read the head (and reopen if that fails) before the next.
    broken: bool,
    slow: SlowCommits,
    /// With `Checkpoints::Background` or `Durability::Background`: told of every commit, asked
    /// to restart a long WAL, and (background durability) whether the WAL's last fsync failed.
    checkpointer: Option<Checkpointer>,
    /// Keeps the patient index copy up to date (`pindex.rs`); stopped with the writer.
    _indexer: Indexer,
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
                self.commit_batch(&mut batch);
            }
            if let Some(reply) = prune {
                let result = self.prune();
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
        }
    }

    fn commit_batch(&mut self, batch: &mut Vec<(Prepared, Option<Reply>)>) {
        let result = self.recover().and_then(|()| {
            if let Some(c) = &self.checkpointer {
                if c.sync_failed() {
                    // Fail closed: what is committed now might never reach the disk.
                    return Err(AuditError::Io {
                        what: "the audit WAL could not be fsynced".into(),
                        source: std::io::Error::other("background fsync failed"),
                    });
                }
                c.restart_if_over(&self.conn);
            }
            let entries: Vec<&Prepared> = batch.iter().map(|(e, _)| e).collect();
            let started = Instant::now();
            let head =
                store::append(&mut self.conn, self.head, &entries).map_err(AuditError::write)?;
            self.took(started.elapsed(), entries.len());
            Ok(head)
        });
        match result {
            Ok(head) => {
                let first = self.head.seq + 1;
                let count = batch.len() as u64;
                self.head = head;
                // Counters first, so a caller that sees its acknowledgement also sees them.
                self.succeeded(head, count);
                for (i, (_, reply)) in (0u64..).zip(batch.drain(..)) {
                    if let Some(reply) = reply {
                        // A caller that stopped waiting (request cancelled) is fine: the
                        // record is committed either way.
                        let _ = reply.send(Ok(CommittedSeq(first + i)));
                    }
                }
            }
            Err(err) => self.failed(batch, err),
        }
    }

    /// Accounts for a committed transaction's duration: the histogram, and a warning when it
    /// was slow enough that the requests waiting on it noticed.
    fn took(&mut self, elapsed: Duration, records: usize) {
        if let Some(h) = &self.config.commit_seconds {
            h.observe(elapsed.as_secs_f64());
        }
        if elapsed < self.config.slow_commit {
            return;
        }
        let s = &mut self.slow;
        s.since_log += 1;
        s.worst = s.worst.max(elapsed);
        let now = Instant::now();
        if s.logged.is_some_and(|at| now - at < SLOW_COMMIT_LOG_EVERY) {
            return;
        }
        tracing::warn!(
            ms = elapsed.as_millis(),
            records,
            slow_commits = s.since_log,
            worst_ms = s.worst.as_millis(),
            "audit commit slow (the audit store's disk stalls forwarding; see fhirwall_audit_commit_seconds)"
        );
        *s = SlowCommits {
            logged: Some(now),
            ..SlowCommits::default()
        };
    }

    fn succeeded(&self, head: Head, count: u64) {
        let s = &self.shared;
        s.head.store(head.seq, Ordering::Relaxed);
        s.committed.fetch_add(count, Ordering::Relaxed);
        s.batches.fetch_add(1, Ordering::Relaxed);
        let mut health = s.health.lock().unwrap_or_else(PoisonError::into_inner);
        if let Health::Failing {
            consecutive_failures,
            ..
        } = &*health
        {
            tracing::warn!(consecutive_failures, "audit store writable again");
            *health = Health::Healthy;
        }
    }

    fn failed(&mut self, batch: &mut Vec<(Prepared, Option<Reply>)>, err: AuditError) {
        self.broken = true;
        let err = Arc::new(err);
        let s = &self.shared;
        s.failed.fetch_add(batch.len() as u64, Ordering::Relaxed);
        s.failed_batches.fetch_add(1, Ordering::Relaxed);
        {
            let mut health = s.health.lock().unwrap_or_else(PoisonError::into_inner);
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
                last_error: error_chain(&err),
            };
        }
        tracing::error!(records = batch.len(), error = %error_chain(&err), "audit store write failed; refusing requests");
        for (_, reply) in batch.drain(..) {
            if let Some(reply) = reply {
                let _ = reply.send(Err(AuditError::Unavailable {
                    source: Arc::clone(&err),
                }));
            } else {
                tracing::warn!("an unawaited completion entry was not committed");
            }
        }
    }

    /// After a failure: the in-memory head was not advanced, but re-read it in case the failing
    /// COMMIT reached the disk after all (then those records exist though their callers were
    /// told "failed", and refused their requests, which is the safe side). If even reading
    /// fails, reopen the database.
    fn recover(&mut self) -> Result<(), AuditError> {
        if !self.broken {
            return Ok(());
        }
        let head = if let Ok(head) = store::head(&self.conn) {
            head
        } else {
            self.conn = store::open(&self.config.path, &self.config.store)?;
            if let Some(c) = &self.checkpointer {
                c.watch(&mut self.conn).map_err(|source| AuditError::Open {
                    path: self.config.path.clone(),
                    source,
                })?;
            }
            store::head(&self.conn).map_err(|source| AuditError::Read { source })?
        };
        self.head = head;
        self.shared.head.store(head.seq, Ordering::Relaxed);
        self.broken = false;
        Ok(())
    }

    fn prune(&mut self) -> Result<u64, AuditError> {
        let mut pruned = 0;
        // Bounded per tick so a large backlog never holds up commits for long.
        for _ in 0..10 {
            self.recover()?;
            match store::prune(&mut self.conn, self.head, &self.config.retention) {
                Ok(Some((head, marker))) => {
                    self.head = head;
                    self.shared.head.store(head.seq, Ordering::Relaxed);
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
                Ok(None) => return Ok(pruned),
                Err(err) => {
                    self.broken = true;
                    tracing::warn!(error = %error_chain(&err), "audit retention failed; will retry");
                    return Err(err);
                }
            }
        }
        Ok(pruned)
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
