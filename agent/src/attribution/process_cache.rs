//! Workloads cached per process: (tgid, start time). A reused pid has another start time, so it
//! finds nothing here and is looked at afresh; it never inherits an old identity.
//!
//! Bounded as an LRU of `capacity` processes; `Attributor::sweep` also drops processes that are
//! gone. An `execve` keeps pid and start time but changes the image, so an entry also remembers
//! the leader's comm (which exec resets to the new file name) and `on_exec` drops the entry. An
//! epoch, bumped by every exec and every invalidation, keeps a build that started before one
//! from caching what it read.

use std::{
    num::NonZeroUsize,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
};

use lru::LruCache;
use serde::Serialize;

use super::Workload;

/// A process, as opposed to a pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ProcessKey {
    pub tgid: u32,
    /// Clock ticks since boot (`/proc/<tgid>/stat` field 22).
    pub start_time: u64,
}

/// One cached process.
#[derive(Clone, Debug)]
pub struct Cached {
    pub workload: Arc<Workload>,
    /// The thread group leader's comm when the entry was built.
    pub leader_comm: String,
    /// Whether the executable's digest was attempted (scans may skip it).
    pub hashed: bool,
}

pub struct ProcessCache {
    entries: Mutex<LruCache<ProcessKey, Cached>>,
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

    /// The entry for `key`, if the leader's comm is still the cached one (otherwise the process
    /// has exec'd or renamed itself: the entry is dropped).
    #[must_use]
    pub fn get(&self, key: ProcessKey, leader_comm: &str) -> Option<Cached> {
        let mut entries = self.lock();
        match entries.get(&key) {
            Some(cached) if cached.leader_comm == leader_comm => Some(cached.clone()),
            Some(_) => {
                entries.pop(&key);
                None
            }
            None => None,
        }
    }

    /// Caches `cached` unless an exec or invalidation happened since `epoch` was taken.
    pub fn insert(&self, key: ProcessKey, cached: Cached, epoch: u64) -> bool {
        let mut entries = self.lock();
        if self.epoch.load(Ordering::Acquire) != epoch {
            return false;
        }
        entries.put(key, cached);
        true
    }

    /// Replaces the workload of an entry still present (a later connection of the same process
    /// with other per-connection fields); never creates one.
    pub fn refresh(&self, key: ProcessKey, workload: Arc<Workload>) {
        if let Some(entry) = self.lock().peek_mut(&key) {
            entry.workload = workload;
        }
    }

    /// Forgets `key` and makes builds in flight not cache their result.
    pub fn invalidate(&self, key: ProcessKey) {
        let mut entries = self.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        entries.pop(&key);
    }

    /// Forgets everything (the kernel dropped events, so an exec may have gone unseen).
    pub fn clear(&self) {
        let mut entries = self.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }

    #[must_use]
    pub fn keys(&self) -> Vec<ProcessKey> {
        self.lock().iter().map(|(k, _)| *k).collect()
    }

    pub fn remove(&self, key: ProcessKey) {
        self.lock().pop(&key);
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, LruCache<ProcessKey, Cached>> {
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
            leader_comm: comm.into(),
            hashed: true,
        }
    }

    fn key(tgid: u32, start_time: u64) -> ProcessKey {
        ProcessKey { tgid, start_time }
    }

    fn exe(c: &Cached) -> Option<&str> {
        c.workload.exe.as_deref().and_then(|p| p.to_str())
    }

    #[test]
    fn a_reused_pid_never_finds_the_old_process() {
        let cache = ProcessCache::new(NonZeroUsize::new(8).expect("non-zero"));
        let epoch = cache.epoch();
        assert!(cache.insert(key(4242, 100), cached("/usr/bin/lab", "lab"), epoch));
        assert!(cache.get(key(4242, 101), "lab").is_none());
        assert!(cache.insert(key(4242, 101), cached("/tmp/other", "lab"), epoch));
        let old = cache.get(key(4242, 100), "lab").expect("old entry");
        let new = cache.get(key(4242, 101), "lab").expect("new entry");
        assert_eq!(exe(&old), Some("/usr/bin/lab"));
        assert_eq!(exe(&new), Some("/tmp/other"));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn a_changed_leader_comm_drops_the_entry() {
        let cache = ProcessCache::new(NonZeroUsize::new(8).expect("non-zero"));
        cache.insert(key(7, 1), cached("/bin/sh", "run.sh"), cache.epoch());
        assert!(cache.get(key(7, 1), "java").is_none());
        assert!(
            cache.get(key(7, 1), "run.sh").is_none(),
            "dropped, not kept"
        );
    }

    #[test]
    fn builds_older_than_an_invalidation_are_not_cached() {
        let cache = ProcessCache::new(NonZeroUsize::new(8).expect("non-zero"));
        let before = cache.epoch();
        cache.invalidate(key(7, 1));
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
        assert!(cache.get(key(1, 1), "a").is_some());
        cache.insert(key(3, 1), cached("/c", "c"), epoch);
        assert_eq!(cache.len(), 2);
        assert!(
            cache.get(key(2, 1), "b").is_none(),
            "least recently used went"
        );
        assert!(cache.get(key(1, 1), "a").is_some());
    }

    #[test]
    fn refresh_never_creates_an_entry() {
        let cache = ProcessCache::new(NonZeroUsize::new(2).expect("non-zero"));
        cache.refresh(key(1, 1), Arc::new(Workload::default()));
        assert_eq!(cache.len(), 0);
    }
}
