//! The attributor: accepted connection -> kernel record -> [`Workload`], with the caches that
//! keep the accept path to one kernel map lookup, one hash-map hit and one `poll` of a pidfd.

mod build;
mod scan;

use std::{
    net::SocketAddr,
    num::{NonZeroU32, NonZeroUsize},
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use build::Origin;
use fhirwall_common::ConnRecord;
use fhirwall_policy::Workload;
use nix::{
    time::{ClockId, clock_gettime},
    unistd::{SysconfVar, sysconf},
};
use serde::Serialize;

use super::{
    AttributionError, ProcessKey, cgroups::CgroupPaths, exe_hash::ExeHasher, names::Names,
    pidfd::ProcessHandle, process_cache::ProcessCache, procfs::ProcFs,
};
use crate::kernel::{Caller, ConnTable, KernelError, from_addr};

/// Where kernel records come from: the kernel's [`ConnTable`], or a stand-in in tests and benches.
pub trait ConnLookup: Send + Sync {
    fn lookup(
        &self,
        client: SocketAddr,
        sidecar: SocketAddr,
    ) -> Result<Option<ConnRecord>, KernelError>;
}

impl ConnLookup for ConnTable {
    fn lookup(
        &self,
        client: SocketAddr,
        sidecar: SocketAddr,
    ) -> Result<Option<ConnRecord>, KernelError> {
        ConnTable::lookup(self, client, sidecar)
    }
}

/// Whether to hash executables. Hashing is what lets a `sha256` selector match; a startup scan
/// may skip it and leave it to the first connection (the digest cache makes that a one-off per
/// binary).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hashing {
    Compute,
    Skip,
}

/// One accepted connection, attributed.
#[derive(Clone, Debug)]
pub struct Attribution {
    pub workload: Arc<Workload>,
    /// Where the application was connecting before the kernel redirected it to the sidecar.
    pub destination: SocketAddr,
    /// The socket cookie of the application's socket.
    pub cookie: u64,
    /// Wall-clock time of the `connect()`.
    pub connected_at: SystemTime,
}

/// What a sweep of the process cache did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    pub checked: usize,
    pub removed: usize,
}

/// Attribution settings; [`Default`] suits a host with procfs at `/proc` and cgroup v2 at
/// `/sys/fs/cgroup` (set `cgroup_mount` from `CgroupRoot::discover` otherwise).
#[derive(Clone, Debug)]
pub struct AttributionSettings {
    /// procfs of the host's pid namespace: kernel records carry host pids (the agent runs with
    /// hostPID in Kubernetes).
    pub proc_root: PathBuf,
    /// Mount point of the cgroup v2 hierarchy, in the host's cgroup namespace.
    pub cgroup_mount: PathBuf,
    /// Executables larger than this are not hashed (`exe_sha256` stays `None`).
    pub hash_max_bytes: u64,
    /// Bytes of `/proc/<tgid>/cmdline` kept.
    pub cmdline_max_bytes: usize,
    /// Processes cached (LRU).
    pub process_capacity: NonZeroUsize,
    /// Executable digests cached (LRU, one per file version).
    pub digest_capacity: NonZeroUsize,
    /// User and group names cached, each (LRU).
    pub name_capacity: NonZeroUsize,
    /// cgroup id -> path entries cached (LRU); also bounds one walk of the hierarchy.
    pub cgroup_capacity: NonZeroUsize,
    /// Kernel record lookups per accepted connection, `lookup_interval` apart; see
    /// [`Attributor::attribute`] for why a few milliseconds are enough.
    pub lookup_attempts: NonZeroU32,
    pub lookup_interval: Duration,
}

const fn non_zero(n: usize) -> NonZeroUsize {
    match NonZeroUsize::new(n) {
        Some(n) => n,
        None => NonZeroUsize::MIN,
    }
}

impl Default for AttributionSettings {
    fn default() -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
            cgroup_mount: PathBuf::from("/sys/fs/cgroup"),
            hash_max_bytes: 512 << 20,
            cmdline_max_bytes: 16 << 10,
            process_capacity: non_zero(16_384),
            digest_capacity: non_zero(1024),
            name_capacity: non_zero(4096),
            cgroup_capacity: non_zero(65_536),
            lookup_attempts: NonZeroU32::new(5).unwrap_or(NonZeroU32::MIN),
            lookup_interval: Duration::from_millis(1),
        }
    }
}

/// Attributes connections to workloads. Cheap to clone; clones share the caches.
#[derive(Clone)]
pub struct Attributor {
    inner: Arc<Inner>,
}

struct Inner {
    conns: Box<dyn ConnLookup>,
    settings: AttributionSettings,
    proc: ProcFs,
    processes: ProcessCache,
    hasher: ExeHasher,
    names: Names,
    cgroups: CgroupPaths,
    ticks_per_second: u64,
    /// Whether to hold pidfds: only when `proc_root` is this pid namespace's `/proc`.
    handles: bool,
}

/// A connection's cgroup, resolved.
struct Cgroup {
    path: String,
    /// See [`CgroupPaths::owned_by_user`].
    owned_by_user: bool,
}

impl Inner {
    /// The path of cgroup `id` (see [`CgroupPaths::resolve`]) and whether a user owns it.
    /// Blocking.
    fn cgroup(&self, id: u64, candidate: Option<&str>) -> Option<Cgroup> {
        let path = self.cgroups.resolve(id, candidate)?;
        let owned_by_user = self.cgroups.owned_by_user(&path);
        Some(Cgroup {
            path,
            owned_by_user,
        })
    }
}

impl Attributor {
    #[must_use]
    pub fn new(conns: impl ConnLookup + 'static, settings: AttributionSettings) -> Self {
        // USER_HZ is 100 on every architecture Linux supports today; sysconf confirms it.
        let ticks_per_second = sysconf(SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .and_then(|t| u64::try_from(t).ok())
            .filter(|&t| t > 0)
            .unwrap_or(100);
        let inner = Inner {
            handles: settings.proc_root == std::path::Path::new("/proc"),
            conns: Box::new(conns),
            proc: ProcFs::new(settings.proc_root.clone()),
            processes: ProcessCache::new(settings.process_capacity),
            hasher: ExeHasher::new(settings.hash_max_bytes, settings.digest_capacity),
            names: Names::new(settings.name_capacity),
            cgroups: CgroupPaths::new(settings.cgroup_mount.clone(), settings.cgroup_capacity),
            settings,
            ticks_per_second,
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Attributes the connection the sidecar accepted from `peer` on `local`.
    ///
    /// The kernel re-keys its record by 4-tuple in `sock_ops` `ACTIVE_ESTABLISHED_CB`, which runs
    /// on the client side in `tcp_finish_connect()` before the client sends the handshake's final
    /// ACK; the listener queues the connection for `accept()` only once that ACK arrives, and a
    /// BPF hash-map update is visible to lookups as soon as it returns. So the record is normally
    /// there at the first lookup. It can lag only when the sidecar's listener accepts before the
    /// handshake completes (TCP Fast Open creates the child socket at the SYN) or the client's CPU
    /// is starved between the two steps: one loopback round trip, microseconds. Hence a short,
    /// bounded retry: `lookup_attempts` lookups `lookup_interval` apart (5 x 1 ms by default;
    /// tokio's timer rounds each sleep up to its 1 ms tick, so a connection that was never
    /// redirected is refused after at most about 8 ms plus scheduling delay).
    pub async fn attribute(
        &self,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Result<Attribution, AttributionError> {
        let record = self.lookup_record(peer, local).await?;
        let caller = Caller::from_record(&record);
        let connected_at = caller.time;
        let workload = self.workload_for(caller, record.time_ns).await?;
        Ok(Attribution {
            workload,
            destination: SocketAddr::new(from_addr(&record.orig_addr), record.orig_port),
            cookie: record.cookie,
            connected_at,
        })
    }

    async fn lookup_record(
        &self,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Result<ConnRecord, AttributionError> {
        let settings = &self.inner.settings;
        for attempt in 0..settings.lookup_attempts.get() {
            if attempt > 0 {
                tokio::time::sleep(settings.lookup_interval).await;
            }
            let found = self
                .inner
                .conns
                .lookup(peer, local)
                .map_err(|source| AttributionError::Kernel { source })?;
            if let Some(record) = found {
                return Ok(record);
            }
        }
        Err(AttributionError::NotRedirected { peer, local })
    }

    /// The workload that made the connection the kernel recorded in `record`. A process that is
    /// gone, or whose pid now belongs to a process started after the connect, gives a partial
    /// workload built from the record alone.
    pub async fn workload_of(
        &self,
        record: &ConnRecord,
    ) -> Result<Arc<Workload>, AttributionError> {
        self.workload_for(Caller::from_record(record), record.time_ns)
            .await
    }

    /// [`Attributor::workload_of`] for a record already decoded; `connect_ns` is when the
    /// kernel recorded the connect (CLOCK_MONOTONIC).
    async fn workload_for(
        &self,
        caller: Caller,
        connect_ns: u64,
    ) -> Result<Arc<Workload>, AttributionError> {
        let cached = self.inner.processes.get(caller.tgid);
        // Fast path: the cached process's pidfd says whether it still runs. If it does, it has
        // held this pid since it started, so it made the connection unless it started after.
        if let Some(hit) = &cached
            && let Some(handle) = &hit.handle
        {
            if matches!(handle.has_exited(), Ok(false)) {
                if self.started_after(hit.start_time, connect_ns) {
                    return self.partial(caller).await;
                }
                if hit.hashed {
                    let key = hit.key(caller.tgid);
                    return self.personalize(key, hit.clone(), caller, None).await;
                }
            } else {
                self.inner.processes.remove(hit.key(caller.tgid));
            }
        }
        let stat = match self.inner.proc.stat(caller.tgid) {
            Ok(stat) => stat,
            Err(e) if e.is_process_gone() => return self.partial(caller).await,
            Err(e) => return Err(e),
        };
        if self.started_after(stat.start_time, connect_ns) {
            return self.partial(caller).await;
        }
        let key = ProcessKey {
            tgid: caller.tgid,
            start_time: stat.start_time,
        };
        if let Some(hit) = cached.filter(|c| c.hashed && c.matches(key, &stat.comm)) {
            let handle = if hit.handle.is_none() {
                self.confirmed_handle(key)
            } else {
                None
            };
            return self.personalize(key, hit, caller, handle.as_ref()).await;
        }
        let built = self
            .build(
                key,
                &stat.comm,
                caller.clone(),
                Hashing::Compute,
                Origin::Connection,
            )
            .await?;
        match built {
            Some(workload) => Ok(workload),
            None => self.partial(caller).await,
        }
    }

    /// Opens a pidfd on the process `key` names. pidfds name processes of the agent's own pid
    /// namespace, which is the one at `/proc`; another `proc_root` (tests) gets none and its
    /// processes are checked through their stat files instead.
    fn open_handle(&self, tgid: u32) -> Option<Arc<ProcessHandle>> {
        if !self.inner.handles {
            return None;
        }
        ProcessHandle::open(tgid).ok().map(Arc::new)
    }

    /// A handle on `key`'s process: the pidfd names whatever held the pid when it was opened,
    /// and the same start time read after that proves it is that process.
    fn confirmed_handle(&self, key: ProcessKey) -> Option<Arc<ProcessHandle>> {
        let handle = self.open_handle(key.tgid)?;
        let stat = self.inner.proc.stat(key.tgid).ok()?;
        (stat.start_time == key.start_time).then_some(handle)
    }

    /// Whether a process that started `start_ticks` after boot started after a connect at
    /// `connect_ns` (CLOCK_MONOTONIC, `bpf_ktime_get_ns`): then its pid was reused and it is not
    /// the caller. Start times count CLOCK_BOOTTIME, which runs ahead of CLOCK_MONOTONIC by the
    /// time spent suspended. A start time is truncated to its tick, so the true caller always
    /// passes; a reused pid could only slip through if the caller exited and its pid came round
    /// again within one tick (10 ms) of the connect. If the clocks cannot be read, say yes: a
    /// partial identity fails closed.
    fn started_after(&self, start_ticks: u64, connect_ns: u64) -> bool {
        const SLACK_NS: u128 = 1_000_000;
        let (Ok(boot), Ok(mono)) = (
            clock_gettime(ClockId::CLOCK_BOOTTIME),
            clock_gettime(ClockId::CLOCK_MONOTONIC),
        ) else {
            return true;
        };
        let ns = |ts: nix::sys::time::TimeSpec| {
            i128::from(ts.tv_sec()) * 1_000_000_000 + i128::from(ts.tv_nsec())
        };
        let offset = u128::try_from(ns(boot) - ns(mono)).unwrap_or(0);
        let start_ns =
            u128::from(start_ticks) * 1_000_000_000 / u128::from(self.inner.ticks_per_second);
        start_ns > u128::from(connect_ns) + offset + SLACK_NS
    }

    /// Forgets every cached process and name. Call it when the kernel reports dropped events
    /// (an exec may have gone unseen) or after a user database change.
    pub fn invalidate_all(&self) {
        self.inner.processes.clear();
        self.inner.names.clear();
    }

    /// Processes cached now.
    #[must_use]
    pub fn cached_processes(&self) -> usize {
        self.inner.processes.len()
    }

    /// Executable hash computations started so far (the rest were cache hits).
    #[must_use]
    pub fn digests_computed(&self) -> u64 {
        self.inner.hasher.computed()
    }
}

#[cfg(test)]
mod tests;
