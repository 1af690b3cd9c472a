//! cgroup v2 id -> path. The kernel records the cgroup id at `connect()`; the path is what names
//! a container, pod or unit. A live process's `/proc/<tgid>/cgroup` gives a candidate path that is
//! checked against the id (the process may have moved since it connected); otherwise the id is
//! looked up in an index of the hierarchy, rebuilt by walking it at most once per
//! `MIN_WALK_INTERVAL` so that connections from vanished cgroups cannot make the agent walk the
//! tree at every accept.
//!
//! A cgroup id is the kernfs node id of its directory (its inode number): 64 bits, never reused
//! while the system runs, so an id -> path entry stays true until the cgroup is renamed (rare,
//! and a rename changes nothing the id names).

use std::{
    fs,
    num::NonZeroUsize,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
};

use lru::LruCache;

use super::lock;

const MIN_WALK_INTERVAL: Duration = Duration::from_secs(1);
/// Deeper than any real hierarchy (systemd + kubelet nest about 6 levels); a bound on hostile
/// nesting by delegated subtrees.
const MAX_DEPTH: usize = 32;

/// Resolves cgroup ids to paths relative to the hierarchy root (`/a/b`).
pub struct CgroupPaths {
    mount: PathBuf,
    known: Mutex<LruCache<u64, String>>,
    last_walk: Mutex<Option<Instant>>,
    capacity: NonZeroUsize,
}

impl CgroupPaths {
    #[must_use]
    pub fn new(mount: PathBuf, capacity: NonZeroUsize) -> Self {
        Self {
            mount,
            known: Mutex::new(LruCache::new(capacity)),
            last_walk: Mutex::new(None),
            capacity,
        }
    }

    /// The path of cgroup `id`; `candidate` is the path `/proc` shows for the process, used when
    /// it really is that cgroup. `None` when the cgroup is gone or was not found. Blocking (stat
    /// and, rarely, a walk of the hierarchy): cheap on cgroupfs, but call it off the async threads.
    #[must_use]
    pub fn resolve(&self, id: u64, candidate: Option<&str>) -> Option<String> {
        if let Some(path) = lock(&self.known).get(&id) {
            return Some(path.clone());
        }
        if let Some(path) = candidate.filter(|p| self.id_of(p) == Some(id)) {
            lock(&self.known).put(id, path.to_owned());
            return Some(path.to_owned());
        }
        if self.may_walk() {
            self.walk();
        }
        lock(&self.known).get(&id).cloned()
    }

    /// Whether the cgroup at `path`, or a directory above it, belongs to a user other than
    /// root: a subtree delegated to that user (systemd's `Delegate=`, a user manager's
    /// `user@UID.service`), where the user names cgroups as they like. A cgroup that is gone
    /// counts as delegated: nothing vouches for its names. Blocking (a stat per level).
    #[must_use]
    pub fn owned_by_user(&self, path: &str) -> bool {
        let mut dir = self.mount.clone();
        let levels = path.split('/').filter(|c| !c.is_empty());
        for level in std::iter::once("").chain(levels) {
            if !level.is_empty() {
                dir.push(level);
            }
            match fs::symlink_metadata(&dir) {
                Ok(meta) if meta.uid() == 0 => {}
                _ => return true,
            }
        }
        false
    }

    /// The id of the cgroup at `path` (relative to the root), if it exists.
    #[must_use]
    pub fn id_of(&self, path: &str) -> Option<u64> {
        fs::metadata(self.dir(path)).ok().map(|m| m.ino())
    }

    fn dir(&self, path: &str) -> PathBuf {
        self.mount.join(path.trim_start_matches('/'))
    }

    fn may_walk(&self) -> bool {
        let mut last = lock(&self.last_walk);
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < MIN_WALK_INTERVAL) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Indexes every cgroup directory, breadth first, up to the cache's capacity.
    fn walk(&self) {
        let mut found = Vec::new();
        let mut queue = std::collections::VecDeque::from([(self.mount.clone(), 0usize)]);
        while let Some((dir, depth)) = queue.pop_front() {
            if found.len() >= self.capacity.get() {
                break;
            }
            let Ok(meta) = fs::metadata(&dir) else {
                continue;
            };
            found.push((meta.ino(), relative(&self.mount, &dir)));
            if depth >= MAX_DEPTH {
                continue;
            }
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.filter_map(Result::ok) {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    queue.push_back((entry.path(), depth + 1));
                }
            }
        }
        let mut known = lock(&self.known);
        for (id, path) in found {
            known.put(id, path);
        }
    }
}

/// `/sys/fs/cgroup/a/b` -> `/a/b`; the root itself -> `/`.
fn relative(mount: &Path, dir: &Path) -> String {
    let rel = dir.strip_prefix(mount).unwrap_or(dir);
    format!("/{}", rel.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, CgroupPaths) {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["system.slice/lab.service", "kubepods/burstable/podx/ctr"] {
            fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        let paths = CgroupPaths::new(
            dir.path().to_owned(),
            NonZeroUsize::new(64).expect("non-zero"),
        );
        (dir, paths)
    }

    #[test]
    fn trusts_a_candidate_only_when_it_is_that_cgroup() {
        let (_dir, paths) = tree();
        let lab = paths.id_of("/system.slice/lab.service").expect("exists");
        let other = paths.id_of("/system.slice").expect("exists");
        assert_eq!(
            paths.resolve(lab, Some("/system.slice/lab.service")),
            Some("/system.slice/lab.service".into())
        );
        // The process moved: the candidate names another cgroup, the walk finds the right one.
        assert_eq!(
            paths.resolve(other, Some("/system.slice/lab.service")),
            Some("/system.slice".into())
        );
    }

    #[test]
    fn finds_a_cgroup_by_id_alone_and_rate_limits_walks() {
        let (dir, paths) = tree();
        let ctr = paths.id_of("/kubepods/burstable/podx/ctr").expect("exists");
        assert_eq!(
            paths.resolve(ctr, None),
            Some("/kubepods/burstable/podx/ctr".into())
        );
        assert_eq!(
            paths.resolve(paths.id_of("/").expect("root"), None),
            Some("/".into())
        );
        // Created after the walk: not found until the next walk is allowed.
        fs::create_dir(dir.path().join("late")).expect("mkdir");
        let late = paths.id_of("/late").expect("exists");
        assert_eq!(paths.resolve(late, None), None);
        *lock(&paths.last_walk) = None;
        assert_eq!(paths.resolve(late, None), Some("/late".into()));
    }

    /// Needs root to give a directory away.
    #[test]
    fn a_subtree_a_user_owns_is_theirs_all_the_way_down() {
        if !crate::test_support::root_or_skip("a_subtree_a_user_owns_is_theirs_all_the_way_down") {
            return;
        }
        let (dir, paths) = tree();
        assert!(!paths.owned_by_user("/system.slice/lab.service"));
        assert!(!paths.owned_by_user("/"));
        std::os::unix::fs::chown(dir.path().join("kubepods/burstable"), Some(65_534), None)
            .expect("chown");
        assert!(paths.owned_by_user("/kubepods/burstable"));
        assert!(
            paths.owned_by_user("/kubepods/burstable/podx/ctr"),
            "below it"
        );
        assert!(!paths.owned_by_user("/kubepods"), "above it");
        assert!(
            paths.owned_by_user("/gone"),
            "nothing vouches for a cgroup that is gone"
        );
    }
}
