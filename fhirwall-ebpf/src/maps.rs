//! The maps shared with the agent. Names are the `fhirwall_common::MAP_*` constants; the agent
//! pins every one but the per-socket store under bpffs so enforcement survives its restarts.

use aya_ebpf::{
    btf_maps::{Array, HashMap, PerCpuArray, RingBuf},
    macros::btf_map,
};
use fhirwall_common::{
    CONNS_CAPACITY, Config, ConnKey, ConnRecord, EVENTS_BYTES, Event, LsmConfig,
    PROTECTED_CAPACITY, ProtectedKey, STAT_COUNT, WORKLOADS_CAPACITY, WorkloadKey, WorkloadVerdict,
};

#[btf_map]
pub static FW_CONFIG: Array<Config, 1> = Array::new();

#[btf_map]
pub static FW_LSM: Array<LsmConfig, 1> = Array::new();

/// `CLOCK_MONOTONIC` nanoseconds of the agent's last heartbeat.
#[btf_map]
pub static FW_HEARTBEAT: Array<u64, 1> = Array::new();

#[btf_map]
pub static FW_PROTECTED: HashMap<ProtectedKey, u32, { PROTECTED_CAPACITY as usize }> =
    HashMap::new();

#[btf_map]
pub static FW_WORKLOADS: HashMap<WorkloadKey, WorkloadVerdict, { WORKLOADS_CAPACITY as usize }> =
    HashMap::new();

/// Redirected sockets by socket cookie, from connect to close. A preallocated hash rather than
/// socket-local storage: storage allocation cost ~800 ns per connect, a map update ~100 ns.
/// Deleted by sock_ops at close; entries of connects that never got established (failed before
/// the handshake) are collected by the agent.
#[btf_map]
pub static FW_SOCKETS: HashMap<u64, ConnRecord, { CONNS_CAPACITY as usize }> = HashMap::new();

/// Established redirected connections by 4-tuple, for the sidecar's lookup at `accept()`.
#[btf_map]
pub static FW_CONNS: HashMap<ConnKey, ConnRecord, { CONNS_CAPACITY as usize }> = HashMap::new();

#[btf_map]
pub static FW_EVENTS: RingBuf<Event, { EVENTS_BYTES as usize }> = RingBuf::new();

#[btf_map]
pub static FW_STATS: PerCpuArray<u64, { STAT_COUNT as usize }> = PerCpuArray::new();

/// Adds one to a `STAT_*` counter.
#[inline(always)]
pub fn count(stat: u32) {
    if let Some(counter) = FW_STATS.get_ptr_mut(stat) {
        // SAFETY: per-CPU slot of a preallocated array, only this CPU writes it while we run.
        unsafe { *counter += 1 };
    }
}

/// Emits an event; a full ring buffer is counted, never blocking the caller.
#[inline(always)]
pub fn emit(event: &Event) {
    if FW_EVENTS.output(event, 0).is_err() {
        count(fhirwall_common::STAT_EVENTS_DROPPED);
    }
}
