//! The identity of a process as fhirwall knows it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A process that opened a connection to a protected FHIR endpoint: what the kernel recorded at
/// `connect()` plus what `/proc` adds. Two processes with the same pid but different start times
/// are different workloads.
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent facts about one process, each read by its own rule"
)]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    /// Thread that called `connect()`.
    pub pid: u32,
    /// Process (thread group) id.
    pub tgid: u32,
    /// Process start time in clock ticks since boot (`/proc/<tgid>/stat` field 22).
    pub start_time: u64,
    pub uid: u32,
    pub gid: u32,
    /// User name for `uid`, when the host's user database has one.
    pub user: Option<String>,
    /// Group name for `gid`.
    pub group: Option<String>,
    /// Kernel task name (16 bytes at most), as recorded at connect time.
    pub comm: String,
    /// Executable path (`/proc/<tgid>/exe`), `None` when the process is already gone. Without the
    /// kernel's ` (deleted)` suffix; see [`Workload::exe_deleted`].
    pub exe: Option<PathBuf>,
    /// The running executable was unlinked or replaced after it started (or is a memfd): `exe`
    /// names what the file was called, `exe_sha256` is still the digest of what actually runs.
    pub exe_deleted: bool,
    /// `exe` is the path, in the host's mount namespace, of the very file that runs (same
    /// device and inode), and only root can replace that file: it and every directory above it
    /// are root's and not writable by others (a sticky directory aside). A process in another
    /// mount namespace, or running a file a user could swap, shows its `exe` to operators but
    /// no `exe` selector matches it.
    #[serde(default)]
    pub exe_verified: bool,
    /// Lowercase hex SHA-256 of the executable; `None` when unreadable or over the size cap.
    pub exe_sha256: Option<String>,
    /// Command line arguments. Shown to operators only, never logged: it can carry PHI.
    pub cmdline: Vec<String>,
    /// cgroup v2 id recorded by the kernel.
    pub cgroup_id: u64,
    /// cgroup v2 path relative to the hierarchy root, e.g. `/system.slice/lab.service`.
    pub cgroup_path: Option<String>,
    /// Container id parsed from the cgroup path (containerd, CRI-O, docker, podman).
    pub container_id: Option<String>,
    /// The runtime whose cgroup naming gave `container_id`.
    pub container_runtime: Option<ContainerRuntime>,
    /// Kubernetes pod UID parsed from the cgroup path.
    pub pod_uid: Option<String>,
    /// systemd unit (service or scope) parsed from the cgroup path; `None` for container scopes,
    /// whose identity is the container.
    pub systemd_unit: Option<String>,
    /// The cgroup lies in a subtree a user controls (a `user@UID.service` manager's, or any
    /// directory on the way owned by a user other than root): the unit, container and pod its
    /// path names were chosen by that user, so no selector trusts them.
    #[serde(default)]
    pub cgroup_delegated: bool,
    /// The process could not be examined in full, so only what the kernel recorded is certain
    /// (tgid, pid, uid, gid, comm, cgroup id and what the cgroup path names): it had exited, its
    /// pid had been reused (then `start_time` is 0), or `/proc` would not show its executable
    /// (a zombie, or no ptrace access). `exe` and `exe_sha256` are then `None`. Policy
    /// decides what a partial identity may do (fail closed unless a selector uses kernel-known
    /// fields only).
    pub partial: bool,
}

/// Container runtimes recognised by their cgroup naming.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerRuntime {
    Containerd,
    Crio,
    Docker,
    Podman,
}
