//! Classifying processes without a connection: at startup (every process) and on each exec the
//! kernel reports, so the per-workload verdicts in the kernel are in place before a process
//! connects. Also the sweep of processes that are gone.

use std::sync::Arc;

use fhirwall_policy::Workload;

use super::{Attributor, Hashing, SweepReport, build::Origin};
use crate::{
    attribution::{AttributionError, ProcessKey},
    kernel::Caller,
};

impl Attributor {
    /// Every running process except kernel threads. With [`Hashing::Skip`] executables are not
    /// hashed (a startup scan of a busy host would read every binary); such entries are hashed on
    /// their first connection. Processes that vanish during the scan are left out; one that
    /// cannot be read is logged and left out, so one odd process cannot hide all the others.
    pub async fn scan_processes(
        &self,
        hashing: Hashing,
    ) -> Result<Vec<Arc<Workload>>, AttributionError> {
        let inner = Arc::clone(&self.inner);
        let tgids = tokio::task::spawn_blocking(move || inner.proc.tgids())
            .await
            .map_err(|source| AttributionError::Blocking { source })??;
        let mut workloads = Vec::with_capacity(tgids.len());
        for tgid in tgids {
            match self.classify(tgid, hashing).await {
                Ok(Some(workload)) => workloads.push(workload),
                Ok(None) => {}
                Err(e) => tracing::warn!(tgid, error = %e, "process not classified"),
            }
        }
        Ok(workloads)
    }

    /// (Re)classifies a process after the kernel reported an exec: the image changed while pid
    /// and start time stayed, so the cached identity is dropped first. `None` when the process is
    /// already gone.
    ///
    /// Until the event is handled (normally well under a millisecond), a connection from the new
    /// image is attributed to the identity cached before the exec. That hands the new image
    /// nothing the process did not already have: only code running in the process can exec, and
    /// it chose the new image and its arguments. If the kernel drops events (ring buffer full),
    /// call [`Attributor::invalidate_all`].
    pub async fn on_exec(
        &self,
        caller: &Caller,
        hashing: Hashing,
    ) -> Result<Option<Arc<Workload>>, AttributionError> {
        self.inner.processes.invalidate(caller.tgid);
        self.classify(caller.tgid, hashing).await
    }

    /// The workload of process `tgid` as `/proc` shows it now (cached like an attributed one).
    /// `None` for kernel threads and processes that are gone.
    pub async fn classify(
        &self,
        tgid: u32,
        hashing: Hashing,
    ) -> Result<Option<Arc<Workload>>, AttributionError> {
        let gone_is_none = |e: AttributionError| {
            if e.is_process_gone() {
                Ok(None)
            } else {
                Err(e)
            }
        };
        let stat = match self.inner.proc.stat(tgid) {
            Ok(stat) if stat.is_kernel_thread() => return Ok(None),
            Ok(stat) => stat,
            Err(e) => return gone_is_none(e),
        };
        let key = ProcessKey {
            tgid,
            start_time: stat.start_time,
        };
        let hit = self
            .inner
            .processes
            .get(tgid)
            .filter(|c| c.matches(key, &stat.comm) && (c.hashed || hashing == Hashing::Skip));
        if let Some(hit) = hit {
            return Ok(Some(hit.workload));
        }
        let (uid, gid) = match self.inner.proc.ids(tgid) {
            Ok(ids) => ids,
            Err(e) => return gone_is_none(e),
        };
        let inner = Arc::clone(&self.inner);
        let cgroup_id = tokio::task::spawn_blocking(move || {
            let path = inner.proc.cgroup_path(tgid).ok().flatten()?;
            inner.cgroups.id_of(&path)
        })
        .await
        .map_err(|source| AttributionError::Blocking { source })?
        .unwrap_or(0);
        let caller = Caller {
            tgid,
            pid: tgid,
            uid,
            gid,
            cgroup_id,
            comm: stat.comm.clone(),
            // Not a kernel event: what `/proc` shows now.
            cookie: 0,
            time: std::time::SystemTime::now(),
            exec_token: 0,
        };
        self.build(key, &stat.comm, caller, hashing, Origin::Scan)
            .await
    }

    /// Drops cached processes that are gone (or whose pid now runs another process). The LRU
    /// bound keeps the cache small anyway; a periodic sweep keeps it free of the dead.
    pub async fn sweep(&self) -> Result<SweepReport, AttributionError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let keys = inner.processes.keys();
            let mut removed = 0;
            for key in &keys {
                let alive = inner
                    .proc
                    .stat(key.tgid)
                    .is_ok_and(|s| s.start_time == key.start_time);
                if !alive {
                    inner.processes.remove(*key);
                    removed += 1;
                }
            }
            SweepReport {
                checked: keys.len(),
                removed,
            }
        })
        .await
        .map_err(|source| AttributionError::Blocking { source })
    }
}
