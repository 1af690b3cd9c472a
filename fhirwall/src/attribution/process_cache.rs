//! Workloads cached per process: (tgid, start time). One entry per tgid; an entry answers only
//! for the process whose start time it holds, so a reused pid (another start time) finds nothing
//! and is looked at afresh: it never inherits an old identity. Its arrival replaces the dead
//! process's entry.
//!
//! Bounded as an LRU of `capacity` processes; `Attributor::sweep` also drops processes that are
//! gone. An `execve` keeps pid and start time but changes the image: `Attributor::on_exec` drops
//! the entry when the kernel reports it, and an entry also remembers the leader's comm (which
//! exec resets to the new file name), checked whenever the process's stat is read anyway. An
//! epoch, bumped by every exec and every invalidation, keeps a build that started before one
//! from caching what it read.

use std::{
    num::NonZeroUsize,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
};

use fhirwall_policy::Workload;
use lru::LruCache;
use serde::Serialize;

use super::pidfd::ProcessHandle;

/// A process, as opposed to a pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ProcessKey {
    pub tgid: u32,
    /// Clock ticks since boot (`/proc/<tgid>/stat` field 22).
    pub start_time: u64,
}

/// One cached process. Cloning it is a few reference-count increments.
#[derive(Clone, Debug)]
pub struct Cached {
    pub workload: Arc<Workload>,
    pub start_time: u64,
    /// The thread group leader's comm when the entry was built.
    pub leader_comm: Arc<str>,
    /// Whether the executable's digest is settled: computed, or over the size cap. Scans may
    /// skip hashing, and a failed hash is tried again at the next connection.
    pub hashed: bool,
    /// A pidfd on the process, once it has connected (scanned processes get theirs at their
    /// first connection, so open descriptors track processes that talk to FHIR endpoints).
    pub handle: Option<Arc<ProcessHandle>>,
}

impl Cached {
    #[must_use]
    pub fn key(&self, tgid: u32) -> ProcessKey {
        ProcessKey {
            tgid,
            start_time: self.start_time,
        }
    }

    /// Whether this entry describes the process now at `key` with leader comm `comm`.
    #[must_use]
    pub fn matches(&self, key: ProcessKey, comm: &str) -> bool {
        self.start_time == key.start_time && *self.leader_comm == *comm
    }
}

pub struct ProcessCache {
    entries: Mutex<LruCache<u32, Cached>>,
    epoch: AtomicU64,
}

impl ProcessCache {
    #[must_use]
    pub fn new(capacity: NonZeroUsize) -> Self {
        Self {
            entries: Mutex::new(LruCache::new(capacity)),
            epoch: AtomicU64::new(0),
        }
    }

    /// Taken before reading `/proc`, handed back to [`ProcessCache::insert`].
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The entry for `tgid`, whichever process it describes: check it with [`Cached::matches`]
    /// against what the process's stat says now.
    #[must_use]
    pub fn get(&self, tgid: u32) -> Option<Cached> {
        self.lock().get(&tgid).cloned()
    }

    /// Caches `cached` for `key` unless an exec or invalidation happened since `epoch` was taken.
    pub fn insert(&self, key: ProcessKey, mut cached: Cached, epoch: u64) -> bool {
        let mut entries = self.lock();
        if self.epoch.load(Ordering::Acquire) != epoch {
            return false;
        }
        cached.start_time = key.start_time;
        entries.put(key.tgid, cached);
        true
    }

    /// Replaces the workload of the entry for `key` (a later connection of the same process
    /// with other per-connection fields) and gives it a handle if it had none; never creates an
    /// entry.
    pub fn refresh(
        &self,
        key: ProcessKey,
        workload: Arc<Workload>,
        handle: Option<&Arc<ProcessHandle>>,
    ) {
        if let Some(entry) = self.lock().peek_mut(&key.tgid)
            && entry.start_time == key.start_time
        {
            entry.workload = workload;
            if let Some(handle) = handle {
                entry.handle.get_or_insert_with(|| Arc::clone(handle));
            }
        }
    }

    /// Forgets process `tgid` (it exec'd) and makes builds in flight not cache their result.
    pub fn invalidate(&self, tgid: u32) {
        let mut entries = self.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        entries.pop(&tgid);
    }

    /// Forgets everything (the kernel dropped events, so an exec may have gone unseen).
    pub fn clear(&self) {
        let mut entries = self.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }

    #[must_use]
    pub fn keys(&self) -> Vec<ProcessKey> {
        self.lock()
            .iter()
            .map(|(&tgid, c)| ProcessKey {
                tgid,
                start_time: c.start_time,
            })
            .collect()
    }

    /// Drops the entry for `key` if it still describes that process (it is gone).
    pub fn remove(&self, key: ProcessKey) {
        let mut entries = self.lock();
        if entries
            .peek(&key.tgid)
            .is_some_and(|c| c.start_time == key.start_time)
        {
            entries.pop(&key.tgid);
        }
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, LruCache<u32, Cached>> {
        super::lock(&self.entries)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn cached(exe: &str, comm: &str) -> Cached {
        Cached {
            workload: Arc::new(Workload {
                exe: Some(PathBuf::from(exe)),
                ..Workload::default()
            }),
            start_time: 0,
            leader_comm: comm.into(),
            hashed: true,
            handle: None,
        }
    }

    fn key(tgid: u32, start_time: u64) -> ProcessKey {
        ProcessKey { tgid, start_time }
    }

    fn exe(c: &Cached) -> Option<&str> {
        c.workload.exe.as_deref().and_then(|p| p.to_str())
    }

    #[test]
    fn a_reused_pid_never_matches_the_old_process() {
        let cache = ProcessCache::new(NonZeroUsize::new(8).expect("non-zero"));
        let epoch = cache.epoch();
        assert!(cache.insert(key(4242, 100), cached("/usr/bin/lab", "lab"), epoch));
        let old = cache.get(4242).expect("entry");
        assert!(old.matches(key(4242, 100), "lab"));
        assert!(!old.matches(key(4242, 101), "lab"), "same pid, later start");
        // The new process's entry replaces the dead one's.
        assert!(cache.insert(key(4242, 101), cached("/tmp/other", "lab"), epoch));
        let new = cache.get(4242).expect("entry");
        assert!(new.matches(key(4242, 101), "lab"));
        assert!(!new.matches(key(4242, 100), "lab"));
        assert_eq!(exe(&new), Some("/tmp/other"));
        assert_eq!(cache.len(), 1);
        // Removing the dead process does not remove its successor.
        cache.remove(key(4242, 100));
        assert_eq!(cache.len(), 1);
        cache.remove(key(4242, 101));
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_changed_leader_comm_does_not_match() {
        let cache = ProcessCache::new(NonZeroUsize::new(8).expect("non-zero"));
        cache.insert(key(7, 1), cached("/bin/sh", "run.sh"), cache.epoch());
        let entry = cache.get(7).expect("entry");
        assert!(!entry.matches(key(7, 1), "java"));
        assert!(entry.matches(key(7, 1), "run.sh"));
    }

    #[test]
    fn builds_older_than_an_invalidation_are_not_cached() {
        let cache = ProcessCache::new(NonZeroUsize::new(8).expect("non-zero"));
        let before = cache.epoch();
        cache.invalidate(7);
        assert!(!cache.insert(key(7, 1), cached("/bin/old", "x"), before));
        assert!(cache.insert(key(7, 1), cached("/bin/new", "x"), cache.epoch()));
        let stale = cache.epoch();
        cache.clear();
        assert_eq!(cache.len(), 0);
        assert!(!cache.insert(key(7, 1), cached("/bin/old", "x"), stale));
    }

    #[test]
    fn is_bounded_least_recently_used_first() {
        let cache = ProcessCache::new(NonZeroUsize::new(2).expect("non-zero"));
        let epoch = cache.epoch();
        cache.insert(key(1, 1), cached("/a", "a"), epoch);
        cache.insert(key(2, 1), cached("/b", "b"), epoch);
        assert!(cache.get(1).is_some());
        cache.insert(key(3, 1), cached("/c", "c"), epoch);
        assert_eq!(cache.len(), 2);
        assert!(cache.get(2).is_none(), "least recently used went");
        assert!(cache.get(1).is_some());
    }

    #[test]
    fn refresh_only_touches_the_same_process() {
        let cache = ProcessCache::new(NonZeroUsize::new(2).expect("non-zero"));
        let handle = Arc::new(ProcessHandle::open(std::process::id()).expect("pidfd"));
        let other = Arc::new(Workload {
            pid: 9,
            ..Workload::default()
        });
        cache.refresh(key(1, 1), Arc::clone(&other), Some(&handle));
        assert_eq!(cache.len(), 0, "never creates");
        cache.insert(key(1, 1), cached("/a", "a"), cache.epoch());
        cache.refresh(key(1, 2), Arc::clone(&other), Some(&handle));
        assert_eq!(cache.get(1).expect("entry").workload.pid, 0);
        cache.refresh(key(1, 1), other, Some(&handle));
        let entry = cache.get(1).expect("entry");
        assert_eq!(entry.workload.pid, 9);
        assert!(entry.handle.is_some());
    }
}
