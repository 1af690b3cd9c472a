//! The open batch: where callers append, on their own thread, under one short lock.
//!
//! Appending is encoding: the caller's entry, serialized, gets the next seq, its frame (CRC32C)
//! and its chain hash, and joins the batch the flusher will write next (the entry itself goes
//! along for the indexer, which takes its columns off the request's thread). No thread hop and
//! no system call: the flusher is woken (once the lock is released) only when it sleeps and the
//! batch now holds what it waits for, or a caller that waits joined it; a caller hears of
//! durability through its batch's [`watch`] channel (one wake-up per batch, not per record).

use std::{
    cell::Cell,
    mem,
    sync::{
        Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, Weak,
        atomic::{AtomicBool, AtomicIsize, Ordering},
    },
};

use tokio::sync::{Notify, oneshot, watch};

use super::{Appended, CommittedSeq};
use crate::audit::{
    AuditError, indexer,
    journal::{FRAME_HEADER, Frames, JournalOptions},
    record::Entry,
    store::{Head, IndexRow},
};

/// An entry serialized by its caller, for [`Log::push`].
#[derive(Debug)]
pub(super) struct Serialized {
    pub body: String,
    pub entry: Entry,
}

impl Serialized {
    pub fn new(entry: Entry) -> Result<Self, AuditError> {
        let body =
            serde_json::to_string(&entry).map_err(|source| AuditError::Serialize { source })?;
        Ok(Self { body, entry })
    }
}

/// Bytes of encoded frames the open batch holds at most; an `append` beyond waits for the
/// flusher to take it, a `complete` fails (the bound on memory while the disk stalls).
pub(super) const MAX_OPEN_BYTES: usize = 32 * 1024 * 1024;

/// Where a batch stands.
#[derive(Clone, Debug)]
pub(super) enum BatchState {
    Written,
    Durable,
    Failed(Arc<AuditError>),
}

/// Entries appended and not yet taken by the flusher.
#[derive(Debug)]
pub(super) struct Batch {
    pub frames: Frames,
    pub rows: Vec<IndexRow>,
    /// Entries whose callers do nothing until the batch is durable.
    pub waiting: usize,
    pub signal: watch::Sender<BatchState>,
}

/// What a caller does once its entry is appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Caller {
    /// Nothing until the entry is durable (a write's record, committed before forwarding).
    Waits,
    /// Its work (a read forwarded at once, a completion, retention's own marker).
    GoesOn,
}

impl Batch {
    fn new(frames: Frames) -> Self {
        Self {
            frames,
            rows: Vec::new(),
            waiting: 0,
            signal: watch::Sender::new(BatchState::Written),
        }
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn durable(self, feed: &indexer::Feed) {
        self.signal.send_replace(BatchState::Durable);
        feed.send(self.rows);
    }

    pub fn failed(self, err: &Arc<AuditError>) {
        self.signal
            .send_replace(BatchState::Failed(Arc::clone(err)));
    }
}

/// Whether the next segment is ready for when the current one fills.
#[derive(Clone, Debug)]
pub(super) enum Spare {
    Ready,
    Preparing,
    /// The last attempt failed (a full disk): entries that would need the next segment are
    /// refused, before anything they stand for is forwarded.
    Failed(Arc<AuditError>),
}

/// What appenders and the flusher share.
#[derive(Debug)]
pub(super) struct State {
    /// The chain's head, including the open batch.
    pub head: Head,
    pub open: Batch,
    /// Bytes left in the segment being written, behind what the flusher wrote.
    pub room: u64,
    pub spare: Spare,
    /// The flusher sleeps until the open batch holds this many entries (one: any work; more:
    /// it holds the batch after a commit for more entries); the append that gets there, or
    /// one whose caller waits, wakes it.
    pub wake_at: Option<usize>,
    /// The last sink is gone: the flusher writes what is open and stops.
    pub stop: bool,
    /// Background durability: the last periodic sync failed, so nothing is accepted until one
    /// succeeds (released records cannot be recalled).
    pub refused: Option<Arc<AuditError>>,
    /// `prune_now` callers.
    pub prune: Vec<oneshot::Sender<Result<u64, AuditError>>>,
}

/// The data plane's threads as the flusher sees them: while one of them runs, more entries are
/// on their way, and a held batch is worth holding; once all of them wait for work (parked),
/// nothing more comes soon, and the flusher writes at once.
#[derive(Debug, Default)]
pub struct Producers {
    /// Threads running: woken and not parked since (a thread counts from its first wake-up).
    running: AtomicIsize,
    log: OnceLock<Weak<Log>>,
}

thread_local! {
    /// Whether this thread counts as running in its [`Producers`].
    static RUNNING: Cell<bool> = const { Cell::new(false) };
}

impl Producers {
    /// A data-plane thread woke up (tokio's `on_thread_unpark`).
    pub fn unparked(&self) {
        if !RUNNING.replace(true) {
            self.running.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A data-plane thread has nothing to do (tokio's `on_thread_park`).
    pub fn parked(&self) {
        if RUNNING.replace(false)
            && self.running.fetch_sub(1, Ordering::SeqCst) == 1
            && let Some(log) = self.log.get().and_then(Weak::upgrade)
        {
            log.producers_idle();
        }
    }

    fn busy(&self) -> bool {
        self.running.load(Ordering::SeqCst) > 0
    }
}

#[derive(Debug)]
pub(super) struct Log {
    state: Mutex<State>,
    /// Wakes the flusher.
    pub wake: Condvar,
    /// The flusher holds a batch while producers run: their last one parking wakes it.
    producers: Option<Arc<Producers>>,
    /// Set by the flusher before it reads whether producers run, while it may hold a batch.
    gathering: AtomicBool,
    /// Wakes appenders waiting for room.
    pub room: Notify,
    opts: JournalOptions,
}

/// Why an entry was not appended.
pub(super) enum Refused {
    /// The open batch is full, or the entry needs the next segment while it is being prepared
    /// (the entry is handed back): wait for the flusher, or fail.
    Full(Box<Serialized>),
    Err(AuditError),
}

impl Log {
    pub fn new(
        head: Head,
        room: u64,
        spare: Spare,
        opts: JournalOptions,
        producers: Option<Arc<Producers>>,
    ) -> Arc<Self> {
        let log = Arc::new(Self {
            state: Mutex::new(State {
                head,
                open: Batch::new(Frames::default()),
                room,
                spare,
                wake_at: None,
                stop: false,
                refused: None,
                prune: Vec::new(),
            }),
            wake: Condvar::new(),
            producers,
            gathering: AtomicBool::new(false),
            room: Notify::new(),
            opts,
        });
        if let Some(p) = &log.producers {
            // Producers serve the first log started with them; a later one is not woken by
            // them, and its holds end at their time limit.
            let _ = p.log.set(Arc::downgrade(&log));
        }
        log
    }

    /// Whether producers run (more entries are coming), asked by a flusher that may hold a
    /// batch: either it sees the last producer park, or that producer sees it gathering and
    /// wakes it.
    pub fn producers_busy(&self) -> bool {
        self.gathering.store(true, Ordering::SeqCst);
        self.producers.as_ref().is_some_and(|p| p.busy())
    }

    /// The flusher holds no batch (any more).
    pub fn not_gathering(&self) {
        self.gathering.store(false, Ordering::SeqCst);
    }

    fn producers_idle(&self) {
        if self.gathering.load(Ordering::SeqCst) {
            // Through the lock: a flusher deciding to wait is then either waiting (woken here)
            // or has yet to look (and sees no producer running).
            drop(self.lock());
            self.wake.notify_one();
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `entry` to the open batch and returns how to wait for its durability.
    pub fn push(&self, entry: Serialized, caller: Caller) -> Result<Appended, Refused> {
        let mut state = self.lock();
        if let Some(err) = &state.refused {
            return Err(Refused::Err(AuditError::Unavailable {
                source: Arc::clone(err),
            }));
        }
        let open = state.open.frames.bytes.len();
        if open >= MAX_OPEN_BYTES {
            return Err(Refused::Full(Box::new(entry)));
        }
        // An entry that needs the next segment waits for it, or fails when it cannot be made:
        // a full disk shows here, before the request is forwarded, not after.
        if (open + FRAME_HEADER + entry.body.len()) as u64 > state.room {
            match &state.spare {
                Spare::Ready => {}
                Spare::Preparing => return Err(Refused::Full(Box::new(entry))),
                Spare::Failed(err) => {
                    return Err(Refused::Err(AuditError::Unavailable {
                        source: Arc::clone(err),
                    }));
                }
            }
        }
        let prev = state.head;
        let head = state
            .open
            .frames
            .push(prev, entry.body.as_bytes(), self.opts)
            .map_err(|e| Refused::Err(AuditError::journal(e)))?;
        state.head = head;
        // The index reads the body from the journal; the flusher fills in where it lands.
        let Serialized { body, entry } = entry;
        state.open.rows.push(IndexRow {
            seq: head.seq,
            prev_hash: prev.hash,
            hash: head.hash,
            offset: 0,
            entry,
        });
        let appended = Appended {
            seq: CommittedSeq(head.seq),
            batch: state.open.signal.subscribe(),
        };
        if caller == Caller::Waits {
            state.open.waiting += 1;
        }
        // A waiting caller ends a gathering: the batch is written for it at once.
        let wake = state
            .wake_at
            .is_some_and(|n| state.open.len() >= n || caller == Caller::Waits);
        if wake {
            state.wake_at = None;
        }
        drop(state);
        // Woken once the lock is released: a flusher woken under it would only wake to wait for
        // the lock (and its release would cost this thread a second wake-up call).
        if wake {
            self.wake.notify_one();
        }
        // Freed outside the lock.
        drop(body);
        Ok(appended)
    }

    /// Appends, waiting for room while the open batch is full.
    pub async fn push_waiting(
        &self,
        mut entry: Serialized,
        caller: Caller,
    ) -> Result<Appended, AuditError> {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            // Registered before trying, so a flusher taking the batch in between is not missed.
            room.as_mut().enable();
            match self.push(entry, caller) {
                Ok(appended) => return Ok(appended),
                Err(Refused::Err(err)) => return Err(err),
                Err(Refused::Full(back)) => {
                    entry = *back;
                    room.await;
                }
            }
        }
    }

    /// Takes the open batch for writing; the next one encodes into `spare` (a written
    /// batch's buffers, emptied: no allocation per batch once they have grown). The segment's
    /// room shrinks by the batch at once: entries appended while it is being written must see
    /// that they need the next segment (the flusher sets the exact room after the write).
    pub fn take(state: &mut State, mut spare: Frames) -> Batch {
        spare.clear();
        let batch = mem::replace(&mut state.open, Batch::new(spare));
        state.room = state.room.saturating_sub(batch.frames.bytes.len() as u64);
        batch
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use std::{thread::JoinHandle, time::Duration};

    use super::*;
    use crate::audit::tests_support::record;

    fn entry(n: u64) -> Serialized {
        Serialized::new(Entry::Request(record(n, jiff::Timestamp::now()))).unwrap()
    }

    /// Room for `frames` entries like `entry(0)` in the segment being written.
    fn log_with_room_for(frames: u64, spare: Spare) -> Log {
        let frame = (FRAME_HEADER + entry(0).body.len()) as u64;
        let log = Log::new(
            Head::default(),
            frames * frame + frame / 2,
            spare,
            JournalOptions::default(),
            None,
        );
        Arc::into_inner(log).unwrap()
    }

    #[test]
    fn an_entry_that_needs_the_next_segment_is_refused_while_it_cannot_be_made() {
        let failed = Spare::Failed(Arc::new(AuditError::WriterGone));
        let log = log_with_room_for(2, failed);
        assert!(log.push(entry(1), Caller::GoesOn).is_ok());
        assert!(log.push(entry(2), Caller::GoesOn).is_ok());
        assert!(matches!(
            log.push(entry(3), Caller::GoesOn),
            Err(Refused::Err(_))
        ));
    }

    #[test]
    fn a_batch_being_written_counts_against_the_room() {
        let failed = Spare::Failed(Arc::new(AuditError::WriterGone));
        let log = log_with_room_for(2, failed);
        assert!(log.push(entry(1), Caller::GoesOn).is_ok());
        // The flusher takes the batch; it is not written yet.
        let batch = Log::take(&mut log.lock(), Frames::default());
        assert_eq!(batch.len(), 1);
        assert!(log.push(entry(2), Caller::GoesOn).is_ok());
        assert!(
            matches!(log.push(entry(3), Caller::GoesOn), Err(Refused::Err(_))),
            "the third entry needs the next segment even though the open batch holds one"
        );
    }

    #[test]
    fn an_entry_that_needs_the_next_segment_waits_while_it_is_prepared() {
        let log = log_with_room_for(1, Spare::Preparing);
        assert!(log.push(entry(1), Caller::GoesOn).is_ok());
        assert!(matches!(
            log.push(entry(2), Caller::GoesOn),
            Err(Refused::Full(_))
        ));
        log.lock().spare = Spare::Ready;
        assert!(log.push(entry(2), Caller::GoesOn).is_ok());
    }

    /// Waits on the flusher's condition as the flusher does (having asked whether producers
    /// run, if `gathering`) and says whether it was woken before `timeout`.
    fn flusher_wait(log: &Arc<Log>, gathering: bool, timeout: Duration) -> JoinHandle<bool> {
        let log = Arc::clone(log);
        let (asked, ready) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let state = log.lock();
            if gathering {
                assert!(
                    log.producers_busy(),
                    "the producer runs while the flusher asks"
                );
            } else {
                log.not_gathering();
            }
            asked.send(()).unwrap();
            let (_state, waited) = log.wake.wait_timeout(state, timeout).unwrap();
            !waited.timed_out()
        });
        ready.recv().unwrap();
        waiter
    }

    #[test]
    fn the_last_producer_parking_wakes_a_gathering_flusher_and_no_other() {
        let producers = Arc::new(Producers::default());
        let log = Log::new(
            Head::default(),
            u64::MAX,
            Spare::Ready,
            JournalOptions::default(),
            Some(Arc::clone(&producers)),
        );
        assert!(!log.producers_busy(), "no producer has run yet");
        producers.unparked();
        // Counted once per thread, however often it is woken.
        producers.unparked();
        assert!(log.producers_busy());

        let waiter = flusher_wait(&log, true, Duration::from_secs(30));
        producers.parked();
        assert!(waiter.join().unwrap(), "parking woke the gathering flusher");
        assert!(!log.producers_busy());

        // A flusher that holds nothing is not woken by producers coming and going.
        producers.unparked();
        let waiter = flusher_wait(&log, false, Duration::from_millis(300));
        producers.parked();
        assert!(
            !waiter.join().unwrap(),
            "a flusher that is not gathering slept on"
        );
    }
}
