//! The connections the sidecar is carrying now, for `fhirwall workloads`.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use fhirwall_policy::Workload;
use serde::{Deserialize, Serialize};

/// One live connection and who opened it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveConnection {
    pub id: u64,
    pub workload: Workload,
    /// The integration the workload matched, if any.
    pub integration: Option<String>,
    /// The protected destination the application asked for.
    pub destination: SocketAddr,
    /// When the sidecar accepted it (RFC 3339).
    pub since: String,
}

/// Registry of live connections. Entries are removed by the guard `register` returns, so a
/// connection task that ends in any way (error, panic, cancellation) leaves no entry behind.
#[derive(Default)]
pub struct LiveConnections {
    next: AtomicU64,
    entries: Mutex<BTreeMap<u64, LiveConnection>>,
}

impl LiveConnections {
    pub fn register(
        self: &Arc<Self>,
        workload: Workload,
        integration: Option<String>,
        destination: SocketAddr,
    ) -> LiveGuard {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let since = jiff::Timestamp::now().to_string();
        let entry = LiveConnection {
            id,
            workload,
            integration,
            destination,
            since,
        };
        self.lock().insert(id, entry);
        LiveGuard {
            registry: Arc::clone(self),
            id,
        }
    }

    #[must_use]
    pub fn snapshot(&self) -> Vec<LiveConnection> {
        self.lock().values().cloned().collect()
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, LiveConnection>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts and
        // removes), so a poisoned lock is still usable.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Removes its connection from the registry when dropped.
pub struct LiveGuard {
    registry: Arc<LiveConnections>,
    id: u64,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_remove_their_entry() {
        let live = Arc::new(LiveConnections::default());
        let dst: SocketAddr = "10.0.0.1:443".parse().expect("literal");
        let a = live.register(
            Workload {
                tgid: 1,
                ..Workload::default()
            },
            Some("lab".into()),
            dst,
        );
        let b = live.register(
            Workload {
                tgid: 2,
                ..Workload::default()
            },
            None,
            dst,
        );
        assert_eq!(live.len(), 2);
        drop(a);
        let left = live.snapshot();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].workload.tgid, 2);
        drop(b);
        assert!(live.is_empty());
    }
}
