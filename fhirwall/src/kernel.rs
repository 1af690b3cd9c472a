//! The kernel side of attribution: load, attach and pin the eBPF programs of `fhirwall-ebpf`, keep
//! their maps in step with policy, and read what they report.
//!
//! Programs attach to the root of the cgroup v2 hierarchy (or a configured sub-tree, which the
//! tests use) with multi-attach, and their links and maps are pinned under bpffs, so enforcement
//! outlives the agent: while it is down, connects to protected destinations are refused (stale
//! heartbeat), never let through. A new agent takes over the pinned maps and swaps in its own
//! links before dropping the old ones, so there is no gap.

mod addr;
mod bpffs;
mod btf;
mod cgroup;
mod events;
mod layers;
mod load;
mod maps;
mod query;
mod teardown;

use std::{io, path::PathBuf};

pub use addr::{from_addr, to_addr};
pub use cgroup::{CgroupRoot, cgroup_id, own_cgroup_path};
pub use events::{Caller, EventReader, KernelEvent, Refusal, comm, wall_time};
pub use layers::{LayerState, Layers};
pub use load::{Kernel, KernelSettings, ProgramStats, uninstall};
pub use maps::{ConnTable, KernelStats, StatsReader, Verdict, WorkloadEntry};
pub use teardown::destroy_connections_to;

/// Errors of the kernel subsystem. Each names the object it was working on.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "this agent was built without its kernel programs (AYA_BUILD_SKIP); rebuild without it"
    )]
    NoKernelObject,
    #[error("no cgroup v2 hierarchy is mounted and mounting one at {path} failed")]
    NoCgroup2 {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("mounting bpffs at {path} failed (is the kernel built with CONFIG_BPF_SYSCALL?)")]
    Bpffs {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("loading the kernel programs failed")]
    Load {
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("kernel program {program} failed to load or attach")]
    Program {
        program: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("kernel program {program} produced an unusable link")]
    Link {
        program: &'static str,
        #[source]
        source: Box<aya::programs::links::LinkError>,
    },
    #[error("pinning or unpinning {path} failed")]
    Pin {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("kernel map {map} is missing from the object")]
    MissingMap { map: &'static str },
    #[error("kernel map {map} operation failed")]
    Map {
        map: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error("kernel map {map} is full ({capacity} entries)")]
    MapFull { map: &'static str, capacity: u32 },
    #[error("netlink sock_diag failed while tearing down existing connections")]
    SockDiag {
        #[source]
        source: io::Error,
    },
}
