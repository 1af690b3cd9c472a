//! Building workloads: from `/proc` for a live process, from the kernel record alone for one that
//! is gone, and adjusting a cached one to the connection at hand.

use std::{fs::File, path::Path, sync::Arc};

use fhirwall_policy::Workload;

use super::{Attributor, Hashing};
use crate::{
    attribution::{
        AttributionError, ExeDigest, ProcessKey, attributor::Cgroup, parse_cgroup_path,
        pidfd::ProcessHandle, process_cache::Cached,
    },
    kernel::Caller,
};

/// Why a process is being looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Origin {
    Connection,
    Scan,
}

impl Attributor {
    /// Reads the process from `/proc` and caches it, with a pidfd when `origin` is a connection
    /// (so open descriptors track processes that talk to FHIR endpoints, not every process a
    /// scan saw). `None` when it turned out to be gone, or its pid reused, while being read.
    pub(super) async fn build(
        &self,
        key: ProcessKey,
        leader_comm: &str,
        caller: Caller,
        hashing: Hashing,
        origin: Origin,
    ) -> Result<Option<Arc<Workload>>, AttributionError> {
        let epoch = self.inner.processes.epoch();
        let inner = Arc::clone(&self.inner);
        let (tgid, cgroup_id) = (caller.tgid, caller.cgroup_id);
        let (snapshot, cgroup) = tokio::task::spawn_blocking(move || {
            let snapshot = inner.proc.snapshot(tgid, inner.settings.cmdline_max_bytes);
            let cgroup = inner.cgroup(cgroup_id, snapshot.cgroup_path.as_deref());
            (snapshot, cgroup)
        })
        .await
        .map_err(|source| AttributionError::Blocking { source })?;
        let digest = match (hashing, snapshot.exe_file, &snapshot.exe) {
            (Hashing::Compute, Some(file), Some((path, _))) => self.digest(file, path).await,
            _ => None,
        };
        // A failed hash is not cached with the process: the next connection tries again.
        let hashed = digest.is_some();
        let exe_sha256 = match digest {
            Some(ExeDigest::Sha256(hex)) => Some(hex),
            Some(ExeDigest::TooLarge { .. }) | None => None,
        };
        let handle = match origin {
            Origin::Connection => self.open_handle(tgid),
            Origin::Scan => None,
        };
        // Everything above (and the handle) must describe the process whose start time keyed
        // it: if the pid was reused meanwhile, none of it can be trusted.
        match self.inner.proc.stat(tgid) {
            Ok(stat) if stat.start_time == key.start_time => {}
            Ok(_) => return Ok(None),
            Err(e) if e.is_process_gone() => return Ok(None),
            Err(e) => return Err(e),
        }
        let (exe, exe_deleted) = snapshot.exe.map_or((None, false), |(p, d)| (Some(p), d));
        let mut workload = Workload {
            start_time: key.start_time,
            partial: exe.is_none(),
            exe,
            exe_deleted,
            exe_verified: snapshot.exe_verified,
            exe_sha256,
            cmdline: snapshot.cmdline,
            ..Workload::default()
        };
        self.apply_caller(&mut workload, &caller).await?;
        set_cgroup(&mut workload, cgroup);
        let workload = Arc::new(workload);
        if !workload.partial {
            let cached = Cached {
                workload: Arc::clone(&workload),
                start_time: key.start_time,
                leader_comm: Arc::from(leader_comm),
                hashed,
                handle,
            };
            self.inner.processes.insert(key, cached, epoch);
        }
        // Never the command line: it can carry patient identifiers.
        tracing::debug!(
            tgid,
            start_time = key.start_time,
            exe = ?workload.exe,
            partial = workload.partial,
            "process attributed"
        );
        Ok(Some(workload))
    }

    /// A workload from what the kernel recorded, for a process `/proc` no longer shows.
    pub(super) async fn partial(&self, caller: Caller) -> Result<Arc<Workload>, AttributionError> {
        let inner = Arc::clone(&self.inner);
        let id = caller.cgroup_id;
        let cgroup = tokio::task::spawn_blocking(move || inner.cgroup(id, None))
            .await
            .map_err(|source| AttributionError::Blocking { source })?;
        let mut workload = super::super::kernel_workload(&caller);
        self.apply_caller(&mut workload, &caller).await?;
        set_cgroup(&mut workload, cgroup);
        tracing::debug!(tgid = caller.tgid, "process gone: partial workload");
        Ok(Arc::new(workload))
    }

    /// A cached workload fitted to this connection: the calling thread, its comm and ids and the
    /// cgroup it connected from can differ between connections of one process.
    pub(super) async fn personalize(
        &self,
        key: ProcessKey,
        hit: Cached,
        caller: Caller,
        handle: Option<&Arc<ProcessHandle>>,
    ) -> Result<Arc<Workload>, AttributionError> {
        let cached = hit.workload;
        let same = cached.pid == caller.pid
            && cached.comm == caller.comm
            && cached.uid == caller.uid
            && cached.gid == caller.gid
            && cached.cgroup_id == caller.cgroup_id;
        if same {
            if handle.is_some() {
                self.inner
                    .processes
                    .refresh(key, Arc::clone(&cached), handle);
            }
            return Ok(cached);
        }
        let mut workload = Workload::clone(&cached);
        if workload.cgroup_id != caller.cgroup_id {
            let inner = Arc::clone(&self.inner);
            let (tgid, id) = (caller.tgid, caller.cgroup_id);
            let cgroup = tokio::task::spawn_blocking(move || {
                let candidate = inner.proc.cgroup_path(tgid).ok().flatten();
                inner.cgroup(id, candidate.as_deref())
            })
            .await
            .map_err(|source| AttributionError::Blocking { source })?;
            set_cgroup(&mut workload, cgroup);
        }
        self.apply_caller(&mut workload, &caller).await?;
        let workload = Arc::new(workload);
        self.inner
            .processes
            .refresh(key, Arc::clone(&workload), handle);
        Ok(workload)
    }

    /// Copies the per-connection facts and looks up names that changed.
    async fn apply_caller(
        &self,
        workload: &mut Workload,
        caller: &Caller,
    ) -> Result<(), AttributionError> {
        if workload.user.is_none() || workload.uid != caller.uid {
            workload.user = self.inner.names.user(caller.uid).await?;
        }
        if workload.group.is_none() || workload.gid != caller.gid {
            workload.group = self.inner.names.group(caller.gid).await?;
        }
        workload.tgid = caller.tgid;
        workload.pid = caller.pid;
        workload.uid = caller.uid;
        workload.gid = caller.gid;
        workload.cgroup_id = caller.cgroup_id;
        workload.comm.clone_from(&caller.comm);
        Ok(())
    }

    /// The digest, or `None` with the reason logged (the path is not PHI; the cmdline would be).
    async fn digest(&self, file: File, path: &Path) -> Option<ExeDigest> {
        match self.inner.hasher.digest(file, path).await {
            Ok(ExeDigest::TooLarge { size }) => {
                tracing::debug!(exe = %path.display(), size, "executable over the hash size cap");
                Some(ExeDigest::TooLarge { size })
            }
            Ok(digest) => Some(digest),
            Err(e) => {
                tracing::warn!(exe = %path.display(), error = %e, "executable not hashed");
                None
            }
        }
    }
}

/// Sets the cgroup path, what it names, and whether a user could have named it.
fn set_cgroup(workload: &mut Workload, cgroup: Option<Cgroup>) {
    let (path, owned_by_user) = cgroup.map_or((None, false), |c| (Some(c.path), c.owned_by_user));
    let identity = path.as_deref().map(parse_cgroup_path).unwrap_or_default();
    workload.container_id = identity.container_id;
    workload.container_runtime = identity.runtime;
    workload.pod_uid = identity.pod_uid;
    workload.systemd_unit = identity.systemd_unit;
    workload.cgroup_delegated = owned_by_user || identity.in_user_manager;
    workload.cgroup_path = path;
}
