//! Attribution: from the peer 4-tuple of an accepted sidecar connection to the [`Workload`] that
//! opened it.
//!
//! ```text
//! accept() -> (peer, local) -> ConnTable (kernel record: tgid, pid, uid, gid, cgroup id, comm,
//!             original destination, connect time)
//!          -> process cache by tgid -> its pidfd still running, started before the connect?
//!             -> cached workload, fitted to the connecting thread            (the usual case)
//!          -> else /proc/<tgid>/task/<tgid>/stat: start time -> (tgid, start time)
//!             -> /proc exe, cmdline, cgroup (off the async threads) + SHA-256 of the running
//!                image (cached per file version) + user/group names (NSS, cached)
//!                + cgroup id -> path -> container / pod / systemd unit -> Workload, cached
//! ```
//!
//! A cached identity belongs to one process, (tgid, start time), never to a pid: the pidfd held
//! for it reports the process's exit even after its pid has been reused, and a process that
//! started after the connect cannot be the one that made it. When the process is already gone
//! the workload is built from the kernel record alone and marked `partial`.
//!
//! The command line is returned to the admin API only: it can carry patient identifiers, so it is
//! never logged.

mod attributor;
mod cgroup_path;
mod cgroups;
mod exe_hash;
mod names;
mod pidfd;
mod process_cache;
mod procfs;

use std::{
    io,
    net::SocketAddr,
    path::PathBuf,
    sync::{Mutex, MutexGuard, PoisonError},
};

pub use attributor::{
    Attribution, AttributionSettings, Attributor, ConnLookup, Hashing, SweepReport,
};
pub use cgroup_path::{CgroupIdentity, parse_cgroup_path};
pub use exe_hash::{ExeDigest, ExeHasher};
use fhirwall_policy::Workload;
pub use process_cache::ProcessKey;
pub use procfs::{ProcStat, parse_stat, split_cmdline};

use crate::kernel::{Caller, KernelError};

/// Errors of the attribution subsystem. A connection whose attribution fails is refused.
#[derive(Debug, thiserror::Error)]
pub enum AttributionError {
    /// The kernel has no record of this connection: it did not come through the redirect (a
    /// direct connect to the sidecar port, or the kernel's table was full). Fail closed.
    #[error("no kernel record for the connection from {peer} to {local}: not redirected")]
    NotRedirected { peer: SocketAddr, local: SocketAddr },
    #[error("looking up the kernel's connection record failed")]
    Kernel {
        #[source]
        source: KernelError,
    },
    #[error("reading {path} failed")]
    Proc {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is malformed: {reason}")]
    ProcFormat { path: PathBuf, reason: &'static str },
    #[error("hashing the executable {path} failed")]
    Hash {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The executable changed while it was being hashed; the digest would describe neither
    /// version, so there is none.
    #[error("the executable {path} changed while it was hashed")]
    ExeChanged { path: PathBuf },
    #[error("a blocking attribution task failed")]
    Blocking {
        #[source]
        source: tokio::task::JoinError,
    },
}

impl AttributionError {
    /// Whether the error only says that the process no longer exists (`ENOENT` / `ESRCH`).
    #[must_use]
    pub fn is_process_gone(&self) -> bool {
        match self {
            Self::Proc { source, .. } => procfs::is_gone(source),
            _ => false,
        }
    }
}

/// Locks a cache. A poisoned lock only means a panic elsewhere while it was held; the caches here
/// (LRU maps, an `Option<Instant>`) have no invariant a panic could break half-way, so carry on.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the kernel alone says of a process, as a workload marked partial: its ids, task name
/// and cgroup id, without executable, names or cgroup path. Attribution starts from it and adds
/// what `/proc` still shows; a connect the kernel refused is recorded as it.
#[must_use]
pub fn kernel_workload(caller: &Caller) -> Workload {
    Workload {
        pid: caller.pid,
        tgid: caller.tgid,
        uid: caller.uid,
        gid: caller.gid,
        cgroup_id: caller.cgroup_id,
        comm: caller.comm.clone(),
        partial: true,
        ..Workload::default()
    }
}

/// The integrations whose `exe` selector names a literal path that no process on this host
/// could match today: missing, or not installed by root alone (see
/// [`fhirwall_policy::Workload::exe_verified`]). Their processes are attributed as
/// unregistered until the program is installed root-owned or the selector uses `sha256`.
/// Returns (integration, path) pairs, for warnings at load and in `fhirwall policy check`.
#[must_use]
pub fn unverifiable_exes(policy: &fhirwall_policy::Policy) -> Vec<(String, String)> {
    let procfs = procfs::ProcFs::new("/proc".into());
    policy
        .integrations
        .iter()
        .filter_map(|i| {
            let path = String::from(i.workload.exe.clone()?);
            let literal = !path.contains(['*', '?', '[']);
            let verified = std::fs::metadata(&path)
                .is_ok_and(|meta| procfs.root_installed(std::path::Path::new(&path), &meta));
            (literal && !verified).then(|| (i.name.clone(), path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use fhirwall_policy::{Integration, IntegrationStatus, Policy, WorkloadSelector};

    /// Needs root (the test binary must be root's).
    #[test]
    fn exe_selectors_no_process_here_can_match_are_named() {
        if !crate::test_support::root_or_skip("exe_selectors_no_process_here_can_match_are_named") {
            return;
        }
        let this = std::env::current_exe().expect("test binary");
        let this = this.to_str().expect("utf-8");
        let integrations = [
            ("here", this),
            ("missing", "/nonexistent/tool"),
            ("glob", "/opt/*/tool"),
        ]
        .map(|(name, exe)| {
            let mut i = Integration::minimal(name, IntegrationStatus::Active);
            i.workload = serde_saphyr::from_str::<WorkloadSelector>(&format!("exe: {exe}"))
                .expect("selector");
            i
        });
        let policy = Policy::of_integrations(integrations.to_vec());
        assert_eq!(
            super::unverifiable_exes(&policy),
            vec![("missing".to_owned(), "/nonexistent/tool".to_owned())]
        );
    }
}
