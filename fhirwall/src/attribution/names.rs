//! User and group names through the host's name service (NSS: files, sssd, LDAP ...), cached.
//!
//! A lookup can block for as long as a directory server takes, so misses run on the blocking pool
//! and hits never leave the cache. Unknown ids are cached too, so a process running as an
//! unnamed uid does not send every connection to NSS.

use std::{
    num::NonZeroUsize,
    sync::{Arc, Mutex},
};

use lru::LruCache;
use nix::unistd::{Gid, Group, Uid, User};

use super::{AttributionError, lock};

type Cache = Mutex<LruCache<u32, Option<String>>>;

/// Cached uid -> user name and gid -> group name.
pub struct Names {
    users: Arc<Cache>,
    groups: Arc<Cache>,
}

impl Names {
    #[must_use]
    pub fn new(capacity: NonZeroUsize) -> Self {
        Self {
            users: Arc::new(Mutex::new(LruCache::new(capacity))),
            groups: Arc::new(Mutex::new(LruCache::new(capacity))),
        }
    }

    /// The user name of `uid`, `None` when the name service has none (or fails: a failed lookup
    /// is not cached).
    pub async fn user(&self, uid: u32) -> Result<Option<String>, AttributionError> {
        lookup(&self.users, uid, |id| {
            User::from_uid(Uid::from_raw(id)).map(|u| u.map(|u| u.name))
        })
        .await
    }

    pub async fn group(&self, gid: u32) -> Result<Option<String>, AttributionError> {
        lookup(&self.groups, gid, |id| {
            Group::from_gid(Gid::from_raw(id)).map(|g| g.map(|g| g.name))
        })
        .await
    }

    /// Forgets every name (after a user database change).
    pub fn clear(&self) {
        lock(&self.users).clear();
        lock(&self.groups).clear();
    }
}

async fn lookup(
    cache: &Arc<Cache>,
    id: u32,
    resolve: fn(u32) -> nix::Result<Option<String>>,
) -> Result<Option<String>, AttributionError> {
    if let Some(hit) = lock(cache).get(&id) {
        return Ok(hit.clone());
    }
    let resolved = tokio::task::spawn_blocking(move || resolve(id))
        .await
        .map_err(|source| AttributionError::Blocking { source })?;
    match resolved {
        Ok(name) => {
            lock(cache).put(id, name.clone());
            Ok(name)
        }
        // NSS unreachable: say nothing rather than cache a wrong "no such user".
        Err(errno) => {
            tracing::warn!(id, %errno, "user/group name lookup failed");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_root_and_caches_unknown_ids() {
        let names = Names::new(NonZeroUsize::new(8).expect("non-zero"));
        // Every Unix user database names uid and gid 0.
        assert_eq!(names.user(0).await.expect("lookup"), Some("root".into()));
        assert!(names.group(0).await.expect("lookup").is_some());
        let unknown = 3_999_999_999;
        assert_eq!(names.user(unknown).await.expect("lookup"), None);
        assert_eq!(lock(&names.users).peek(&unknown), Some(&None));
        names.clear();
        assert!(lock(&names.users).is_empty());
    }
}
