//! The spare segment: the next journal segment, written full of zeros before it is needed, off
//! the flusher's thread.

use std::{
    path::PathBuf,
    sync::Arc,
    thread::{self, JoinHandle},
    time::Duration,
};

use super::{
    Shared,
    log::{Log, Spare},
};
use crate::audit::{
    AuditError,
    journal::{Journal, JournalOptions},
};

/// The pause between two chunks of a spare segment's zeros while there is time: a 64 MiB
/// segment then takes about a second, and each journal sync carries at most a chunk or two of
/// zeros to the disk, instead of the one after a rotation carrying the whole segment.
const SPARE_PACE: Duration = Duration::from_millis(10);

/// How often a spare segment that could not be prepared is tried again.
const SPARE_RETRY: Duration = Duration::from_millis(250);

/// Writes the next segment's zeros off the flusher's thread, so that the next rotation is a
/// rename; on failure (a full disk) retries every `SPARE_RETRY` until it succeeds or the writer stops.
/// Once the writer is stopping, it stops between two chunks and removes what it wrote; the
/// flusher joins it before it exits.
pub(super) fn spawn(
    log: &Arc<Log>,
    shared: &Arc<Shared>,
    dir: PathBuf,
    opts: JournalOptions,
) -> Option<JoinHandle<()>> {
    let (thread_log, thread_shared) = (Arc::clone(log), Arc::clone(shared));
    let spawned = thread::Builder::new()
        .name("fw-audit-spare".into())
        .spawn(move || {
            let (log, shared) = (thread_log, thread_shared);
            let mut failed = false;
            // A chunk of zeros (1 MiB) every `SPARE_PACE` while the segment being written has
            // more than a quarter left; at full speed past that; none once the writer stops.
            let pace = || {
                let state = log.lock();
                if state.stop {
                    return false;
                }
                let roomy = state.room > opts.segment_bytes / 4;
                drop(state);
                if roomy {
                    thread::sleep(SPARE_PACE);
                }
                true
            };
            loop {
                match Journal::prepare_spare(&dir, opts, &pace) {
                    Ok(()) => {
                        log.lock().spare = Spare::Ready;
                        log.room.notify_waiters();
                        if failed {
                            tracing::warn!("the next audit journal segment is ready again");
                            shared.healthy();
                        }
                        return;
                    }
                    Err(e) => {
                        let err = Arc::new(AuditError::journal(e));
                        let mut state = log.lock();
                        if state.stop {
                            return;
                        }
                        // Under the lock the flusher judges health under (see `Flusher::write`),
                        // and before the first entry is refused for it.
                        shared.failing(&err);
                        state.spare = Spare::Failed(Arc::clone(&err));
                        drop(state);
                        log.room.notify_waiters();
                        if !failed {
                            tracing::error!(error = %super::error_chain(&*err), "cannot prepare the next audit journal segment; requests that need it are refused until it can");
                        }
                        failed = true;
                    }
                }
                thread::sleep(SPARE_RETRY);
            }
        });
    match spawned {
        Ok(thread) => Some(thread),
        Err(e) => {
            let err = Arc::new(AuditError::Thread { source: e });
            shared.failing(&err);
            log.lock().spare = Spare::Failed(err);
            None
        }
    }
}
