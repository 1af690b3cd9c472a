//! The flusher thread: takes the open batch, writes it, makes it durable, tells its callers,
//! and applies retention between batches.

use std::{
    mem,
    sync::{Arc, PoisonError, atomic::Ordering},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::{
    AuditConfig, Shared,
    log::{Batch, Caller, Log, Refused, Serialized, Spare},
    spare,
};
use crate::audit::{
    AuditError,
    indexer::{self, Indexer},
    journal::{self, Frames, Journal, Position},
    pindex,
    record::Entry,
    store::{self, Durability},
};

/// The least time between two "slow commit" warnings; the ones in between are counted.
const SLOW_COMMIT_LOG_EVERY: Duration = Duration::from_mins(1);

/// With `fsync` durability, the batch after a commit of several entries is held, while none of
/// its callers waits for it, until it holds as many (at most this many), or this many while a
/// data-plane thread still runs (its last thread parking ends the hold: no more entries soon)...
const GATHER_ENTRIES: usize = 64;
/// ...or for as long as that commit took, at most this long after it ended. Entries whose
/// callers go on meanwhile (a read forwarded at once, its response held until durability; a
/// completion) can share one sync with the entries that follow them closely: that saves the
/// disk a flush (and a rewrite of the journal's last page) each, which is what its tail latency
/// under load depends on. A caller that waits (a write, committed before it is forwarded) ends
/// the hold at once, so waiting callers keep the disk busy back to back; one request at a time
/// makes batches of one and is never held.
const MAX_GATHER: Duration = Duration::from_micros(300);

/// How the batch after a commit is held for more entries.
#[derive(Clone, Copy, Debug)]
struct Gather {
    entries: usize,
    until: Instant,
}

impl Gather {
    /// The entries the held batch waits for: as many as the last commit, and while the data
    /// plane still produces, up to [`GATHER_ENTRIES`].
    fn wanted(self, producers_busy: bool) -> usize {
        if producers_busy {
            GATHER_ENTRIES
        } else {
            self.entries
        }
    }
}

/// Bytes of a written batch's buffer kept for the next one, at most.
const KEEP_BUFFER: usize = 4 * 1024 * 1024;

pub(super) struct Flusher {
    pub log: Arc<Log>,
    pub journal: Journal,
    /// The end of what callers were told is safe: durable with `fsync`, written with
    /// `background`. A failure goes back here.
    pub good: Position,
    /// The index connection retention uses.
    pub conn: Connection,
    /// Durable rows for the indexer.
    pub feed: indexer::Feed,
    pub indexer: Indexer,
    /// Keeps the patient index copy up to date (`pindex.rs`); stopped with the flusher.
    pub patients: pindex::Indexer,
    pub config: AuditConfig,
    pub shared: Arc<Shared>,
    /// The last written batch's buffers, for the next.
    pub spare: Frames,
    /// Where the last written batch's frames start in their segments.
    pub offsets: Vec<u64>,
    /// Threads preparing spare segments, joined before the flusher exits.
    pub spare_threads: Vec<JoinHandle<()>>,
}

/// What the flusher does next.
enum Work {
    Write(Batch),
    /// Background durability: the interval's sync.
    Sync,
    Prune(Vec<oneshot::Sender<Result<u64, AuditError>>>),
    Stop,
}

/// What the flusher turns to next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    Prune,
    Sync,
    Write,
    /// Wait for the open batch to grow (see [`GATHER_ENTRIES`]).
    Gather,
    Stop,
    Wait,
}

/// The open batch, as the flusher sees it.
#[derive(Clone, Copy, Debug)]
struct Open {
    entries: usize,
    /// Some caller waits for it to be durable.
    waited_on: bool,
    /// A data-plane thread is running: more entries are on their way.
    producers_busy: bool,
}

/// Retention and the interval's sync when they are due come before the open batch, which under
/// steady load is never empty when the flusher looks (they would wait forever behind it); the
/// open batch comes before stopping, so that everything appended is written, and is held for
/// more entries only while its gathering lasts, no caller waits for it and nothing else is
/// asked.
fn choose(now: Instant, pace: &Pace, prune_asked: bool, open: Open, stop: bool) -> Next {
    if prune_asked || pace.next_prune.is_some_and(|at| now >= at) {
        Next::Prune
    } else if pace.unsynced && now >= pace.next_sync {
        Next::Sync
    } else if open.entries > 0 {
        let gathering = pace
            .gather
            .is_some_and(|g| open.entries < g.wanted(open.producers_busy) && now < g.until);
        if gathering && !open.waited_on && !stop {
            Next::Gather
        } else {
            Next::Write
        }
    } else if stop {
        Next::Stop
    } else {
        Next::Wait
    }
}

/// The flusher's clocks and counters.
struct Pace {
    next_prune: Option<Instant>,
    /// Background durability: written since the last sync, and when the next is due.
    unsynced: bool,
    next_sync: Instant,
    /// `fsync` durability: how the batch after the last commit is held for more entries.
    gather: Option<Gather>,
    slow: SlowCommits,
}

impl Flusher {
    pub fn run(mut self) {
        let retention = &self.config.retention;
        let retention_on = retention.max_age.is_some() || retention.max_bytes.is_some();
        let mut pace = Pace {
            next_prune: retention_on.then(|| Instant::now() + self.config.retention_interval),
            unsynced: false,
            next_sync: Instant::now(),
            gather: None,
            slow: SlowCommits::default(),
        };
        loop {
            match self.next(&mut pace) {
                Work::Write(batch) => self.write(batch, &mut pace),
                Work::Sync => self.periodic_sync(&mut pace),
                Work::Prune(replies) => {
                    if retention_on {
                        pace.next_prune = Some(Instant::now() + self.config.retention_interval);
                    }
                    let result = self.prune(&mut pace);
                    answer(replies, result);
                }
                Work::Stop => {
                    if pace.unsynced {
                        self.periodic_sync(&mut pace);
                    }
                    let Self {
                        feed,
                        indexer,
                        patients,
                        spare_threads,
                        ..
                    } = self;
                    // The indexer sees the end of its rows, then it and the patient copy finish
                    // what they were given.
                    drop(feed);
                    drop((indexer, patients));
                    // They see `stop` and leave between two chunks of zeros.
                    for thread in spare_threads {
                        let _ = thread.join();
                    }
                    return;
                }
            }
        }
    }

    /// Waits for work, in the order [`choose`] gives.
    fn next(&mut self, pace: &mut Pace) -> Work {
        let mut state = self.log.lock();
        let mut gathered = false;
        loop {
            let now = Instant::now();
            let open = Open {
                entries: state.open.len(),
                waited_on: state.open.waiting > 0,
                producers_busy: pace.gather.is_some() && self.log.producers_busy(),
            };
            let next = choose(now, pace, !state.prune.is_empty(), open, state.stop);
            if next != Next::Gather {
                self.log.not_gathering();
            }
            // Sleep until the open batch holds `wake_at` entries, or the gathering ends.
            let (wake_at, gather_until) = match next {
                Next::Prune => return Work::Prune(mem::take(&mut state.prune)),
                Next::Sync => return Work::Sync,
                Next::Write => {
                    let batch = Log::take(&mut state, mem::take(&mut self.spare));
                    drop(state);
                    pace.gather = None;
                    if gathered {
                        self.shared.gathered.fetch_add(1, Ordering::Relaxed);
                    }
                    self.log.room.notify_waiters();
                    return Work::Write(batch);
                }
                Next::Stop => return Work::Stop,
                Next::Gather => {
                    gathered = true;
                    pace.gather.map_or((1, None), |g| {
                        (g.wanted(open.producers_busy), Some(g.until))
                    })
                }
                Next::Wait => (1, None),
            };
            let deadline = [
                pace.next_prune,
                pace.unsynced.then_some(pace.next_sync),
                gather_until,
            ]
            .into_iter()
            .flatten()
            .min();
            state.wake_at = Some(wake_at);
            state = match deadline {
                None => self
                    .log
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(at) => {
                    self.log
                        .wake
                        .wait_timeout(state, at.saturating_duration_since(now))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
            state.wake_at = None;
        }
    }

    /// Writes `batch`; with `fsync` makes it durable before its callers hear of it.
    fn write(&mut self, mut batch: Batch, pace: &mut Pace) {
        let started = Instant::now();
        let entries = batch.len();
        let count = entries as u64;
        let segment = self.journal.position().segment;
        let written = self
            .journal
            .write_frames(&batch.frames, &mut self.offsets)
            .map_err(AuditError::journal);
        for (row, offset) in batch.rows.iter_mut().zip(&self.offsets) {
            row.offset = *offset;
        }
        // A burst's buffers are not kept.
        if batch.frames.bytes.capacity() <= KEEP_BUFFER {
            self.spare = mem::take(&mut batch.frames);
        }
        self.moved(segment);
        let result = written.and_then(|_| match self.config.store.durability {
            Durability::Fsync => self.sync(),
            Durability::Background { .. } => {
                pace.unsynced = true;
                Ok(())
            }
        });
        // The commit: from taking the batch to releasing its callers (the write, and the sync
        // with `fsync`): what every request in it waited for.
        let took = started.elapsed();
        if let Some(h) = &self.config.commit_seconds {
            h.observe(took.as_secs_f64());
        }
        pace.slow.note(took, self.config.slow_commit);
        match result {
            Ok(()) => {
                self.good = self.journal.position();
                self.shared
                    .head
                    .store(self.good.head.seq, Ordering::Relaxed);
                // Healthy only while the spare is not failing, judged under the lock the spare's
                // thread reports a failure under: else a batch finishing as the spare fails
                // would mark the journal healthy while entries are being refused.
                let state = self.log.lock();
                let healthy = !matches!(state.spare, Spare::Failed(_));
                self.shared.succeeded(count, healthy);
                drop(state);
                if matches!(self.config.store.durability, Durability::Fsync) && entries > 1 {
                    pace.gather = Some(Gather {
                        entries: entries.min(GATHER_ENTRIES),
                        until: Instant::now() + took.min(MAX_GATHER),
                    });
                }
                batch.durable(&self.feed);
            }
            Err(err) => self.fail(batch, err),
        }
    }

    /// Tells appenders how much room the segment has left; when the journal moved on from
    /// `segment`, the spare was used and the next one is prepared.
    fn moved(&mut self, segment: u64) {
        let rotated = self.journal.position().segment != segment;
        let mut state = self.log.lock();
        state.room = self.journal.room();
        if rotated {
            state.spare = Spare::Preparing;
        }
        drop(state);
        if rotated {
            self.spare_threads.retain(|thread| !thread.is_finished());
            self.spare_threads.extend(spare::spawn(
                &self.log,
                &self.shared,
                indexer::journal_dir(&self.config.path),
                self.config.journal,
            ));
        }
    }

    /// `fdatasync`s the segment being written.
    fn sync(&self) -> Result<(), AuditError> {
        let dir = indexer::journal_dir(&self.config.path);
        journal::sync_data(&self.journal.file(), &dir).map_err(AuditError::journal)?;
        self.shared.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Background durability's sync, once per interval: while it fails, nothing new is
    /// accepted (what was released cannot be recalled).
    fn periodic_sync(&self, pace: &mut Pace) {
        if let Durability::Background { fsync_interval } = self.config.store.durability {
            pace.next_sync = Instant::now() + fsync_interval;
        }
        match self.sync() {
            Ok(()) => {
                pace.unsynced = false;
                self.log.lock().refused = None;
                self.shared.healthy();
            }
            Err(err) => {
                self.shared.failing(&err);
                tracing::error!(error = %super::error_chain(&err), "audit journal sync failed; refusing requests");
                self.log.lock().refused = Some(Arc::new(err));
            }
        }
    }

    /// `batch` did not become durable: it fails, and so does everything appended behind it
    /// (chained on it); the chain goes back to the last good frame.
    fn fail(&mut self, batch: Batch, err: AuditError) {
        let err = Arc::new(err);
        let later = {
            let mut state = self.log.lock();
            self.journal.rewind(self.good);
            self.good = self.journal.position();
            state.head = self.good.head;
            let later = Log::take(&mut state, Frames::default());
            state.room = self.journal.room();
            later
        };
        self.log.room.notify_waiters();
        self.shared
            .head
            .store(self.good.head.seq, Ordering::Relaxed);
        self.shared.failed((batch.len() + later.len()) as u64, &err);
        batch.failed(&err);
        later.failed(&err);
    }

    /// Retention: appends the marker to the journal and makes it durable, then removes what it
    /// covers from the index and the journal segments that hold nothing newer.
    fn prune(&mut self, pace: &mut Pace) -> Result<u64, AuditError> {
        let mut pruned = 0;
        // Bounded per tick so a large backlog never holds up appends for long.
        for _ in 0..10 {
            // What is good is what may be pruned against; the index may lag behind it.
            indexer::catch_up(&self.config.path)?;
            let Some(marker) =
                store::plan_prune(&self.conn, self.good.head, &self.config.retention)?
            else {
                return Ok(pruned);
            };
            let entry = Serialized::new(Entry::Pruned(marker.clone()))?;
            // Behind whatever is open, like any entry.
            let appended = match self.log.push(entry, Caller::GoesOn) {
                Ok(appended) => appended,
                // The disk is behind: the next tick prunes.
                Err(Refused::Full(_)) => return Ok(pruned),
                Err(Refused::Err(err)) => return Err(err),
            };
            let batch = Log::take(&mut self.log.lock(), Frames::default());
            self.log.room.notify_waiters();
            self.write(batch, pace);
            match appended.settled() {
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(err),
                None => return Err(AuditError::WriterGone),
            }
            if pace.unsynced {
                self.sync()?;
            }
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

/// Answers the `prune_now` callers (a tick has none).
fn answer(replies: Vec<oneshot::Sender<Result<u64, AuditError>>>, result: Result<u64, AuditError>) {
    let result = result.map_err(Arc::new);
    for reply in replies {
        let _ = reply.send(match &result {
            Ok(n) => Ok(*n),
            Err(err) => Err(AuditError::Unavailable {
                source: Arc::clone(err),
            }),
        });
    }
    if let Err(err) = result {
        tracing::warn!(error = %super::error_chain(&*err), "audit retention failed; retrying at the next tick");
    }
}

/// Slow commits since the last warning about them.
#[derive(Debug, Default)]
struct SlowCommits {
    logged: Option<Instant>,
    since_log: u64,
    worst: Duration,
}

impl SlowCommits {
    /// Warns about a commit slow enough that the requests waiting on it noticed.
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
            slow_commits = self.since_log,
            worst_ms = self.worst.as_millis(),
            "audit journal commit slow (the audit disk stalls responses; see fhirwall_audit_commit_seconds)"
        );
        *self = Self {
            logged: Some(now),
            ..Self::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_due_comes_before_the_open_batch_and_stop_comes_last() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        let pace = |next_prune, unsynced, next_sync, gather: Option<Instant>| Pace {
            next_prune,
            unsynced,
            next_sync,
            gather: gather.map(|until| Gather {
                entries: GATHER_ENTRIES,
                until,
            }),
            slow: SlowCommits::default(),
        };
        let (t, f, soon) = (true, false, Some(later));
        let full = GATHER_ENTRIES;
        let n = |entries| Open {
            entries,
            waited_on: false,
            producers_busy: false,
        };
        // The data plane still running.
        let busy = |entries| Open {
            producers_busy: true,
            ..n(entries)
        };
        let waited = Open {
            entries: 1,
            waited_on: true,
            producers_busy: true,
        };
        // After a commit of four entries.
        let after_4 = |until| Pace {
            gather: Some(Gather { entries: 4, until }),
            ..pace(None, f, now, None)
        };
        // (pace, prune asked, open batch, stop) -> next
        let cases = [
            (pace(None, t, now, None), f, n(1), f, Next::Sync),
            (pace(None, t, later, None), f, n(1), f, Next::Write),
            (pace(None, f, now, None), f, n(1), f, Next::Write),
            (pace(Some(now), t, now, None), f, n(1), f, Next::Prune),
            (pace(soon, f, now, None), t, n(1), f, Next::Prune),
            (pace(soon, f, now, None), f, n(1), t, Next::Write),
            (pace(soon, f, now, None), f, n(0), t, Next::Stop),
            (pace(soon, t, later, None), f, n(0), f, Next::Wait),
            // The batch after a commit is held while its gathering lasts...
            (pace(None, f, now, soon), f, n(1), f, Next::Gather),
            (pace(None, f, now, soon), f, n(full - 1), f, Next::Gather),
            // ...until it holds as many as that commit, its time is up, a caller waits for
            // it, or the writer stops...
            (pace(None, f, now, soon), f, n(full), f, Next::Write),
            (pace(None, f, now, Some(now)), f, n(1), f, Next::Write),
            (pace(None, f, now, soon), f, waited, f, Next::Write),
            (pace(None, f, now, soon), f, n(1), t, Next::Write),
            // ...and while the data plane runs, beyond that commit's size, up to the most a
            // gathering waits for, within the same time.
            (after_4(later), f, n(4), f, Next::Write),
            (after_4(later), f, busy(4), f, Next::Gather),
            (after_4(later), f, busy(full - 1), f, Next::Gather),
            (after_4(later), f, busy(full), f, Next::Write),
            (after_4(now), f, busy(4), f, Next::Write),
            (after_4(later), f, busy(1), t, Next::Write),
            // What is due comes first; an empty batch is waited for, not gathered.
            (pace(None, t, now, soon), f, n(1), f, Next::Sync),
            (pace(None, f, now, soon), t, n(1), f, Next::Prune),
            (pace(None, f, now, soon), f, n(0), f, Next::Wait),
        ];
        for (i, (pace, prune_asked, open, stop, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                choose(now, &pace, prune_asked, open, stop),
                want,
                "case {i}"
            );
        }
    }
}
