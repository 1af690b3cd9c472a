//! The maps shared with the agent. Names are the `fhirwall_common::MAP_*` constants; the agent
//! pins every one but the per-socket store under bpffs so enforcement survives its restarts.

use core::{
    ptr,
    sync::atomic::{Ordering, compiler_fence},
};

use aya_ebpf::{
    btf_maps::{Array, HashMap, PerCpuArray, RingBuf},
    macros::btf_map,
};
use fhirwall_common::{
    CONN_F_ESTABLISHED, CONNS_CAPACITY, Config, ConnKey, ConnRecord, EVENTS_BYTES, Event,
    LsmConfig, PROTECTED_CAPACITY, ProtectedKey, STAT_COUNT, WORKLOADS_CAPACITY, WorkloadKey,
    WorkloadVerdict,
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

/// Redirected sockets from connect to close, each in the slot `cookie % CONNS_CAPACITY`. An
/// array, so storing a record at connect is a plain write: socket-local storage cost ~800 ns
/// per connect (allocation), a preallocated hash's insert most of the hook's remaining cost
/// (bucket lock, free list). A slot names its socket's cookie: a lookup that finds another
/// cookie there has no record, and the sidecar refuses a connection it cannot attribute. Two
/// sockets share a slot only when 65,536 cookies were handed out between their connects; the
/// later one then takes the slot (the earlier one, if not yet established, fails closed; if
/// established, only its `getpeername` shows the sidecar). Stale slots of connects that never
/// completed are never read again: nothing needs to collect them.
#[btf_map]
pub static FW_SOCKETS: Array<ConnRecord, { CONNS_CAPACITY as usize }> = Array::new();

/// Established redirected connections by 4-tuple, for the sidecar's lookup at `accept()`.
#[btf_map]
pub static FW_CONNS: HashMap<ConnKey, ConnRecord, { CONNS_CAPACITY as usize }> = HashMap::new();

#[btf_map]
pub static FW_EVENTS: RingBuf<Event, { EVENTS_BYTES as usize }> = RingBuf::new();

#[btf_map]
pub static FW_STATS: PerCpuArray<u64, { STAT_COUNT as usize }> = PerCpuArray::new();

/// The slot of the socket with `cookie` (`CONNS_CAPACITY` is a power of two).
#[inline(always)]
fn socket_slot(cookie: u64) -> u32 {
    (cookie & u64::from(CONNS_CAPACITY - 1)) as u32
}

/// Stores a redirected socket's record. The cookie is cleared first and written last, so a
/// reader that sees this cookie sees this record ([`socket_record`] checks it again after
/// copying). x86 keeps stores in order; on weakly ordered CPUs a torn read would need two
/// connects whose cookies are 65,536 apart at the same instant. `record` is written as it is with its cookie
/// zeroed (no copy of it), and given its cookie back.
#[inline(always)]
pub fn store_socket(record: &mut ConnRecord) -> bool {
    let cookie = record.cookie;
    let Some(slot) = FW_SOCKETS.get_ptr_mut(socket_slot(cookie)) else {
        return false;
    };
    record.cookie = 0;
    // SAFETY: in-bounds slot of a preallocated array, valid for this program run. The fences
    // keep the compiler from moving the record's stores across the cookie's (a volatile copy
    // of the whole record would go byte by byte).
    unsafe {
        ptr::write_volatile(ptr::addr_of_mut!((*slot).cookie), 0);
        compiler_fence(Ordering::SeqCst);
        *slot = *record;
        compiler_fence(Ordering::SeqCst);
        ptr::write_volatile(ptr::addr_of_mut!((*slot).cookie), cookie);
    }
    record.cookie = cookie;
    true
}

/// The record of the socket with `cookie`, if its slot still holds it.
#[inline(always)]
pub fn socket_record(cookie: u64) -> Option<ConnRecord> {
    let slot = FW_SOCKETS.get_ptr(socket_slot(cookie))?;
    // SAFETY: as in `store_socket`.
    let first = unsafe { ptr::read_volatile(ptr::addr_of!((*slot).cookie)) };
    if first != cookie {
        return None;
    }
    compiler_fence(Ordering::SeqCst);
    // SAFETY: as in `store_socket`.
    let record = unsafe { *slot };
    compiler_fence(Ordering::SeqCst);
    // SAFETY: as in `store_socket`.
    let again = unsafe { ptr::read_volatile(ptr::addr_of!((*slot).cookie)) };
    (record.cookie == cookie && again == cookie).then_some(record)
}

/// Marks the socket's record established and returns it, if its slot still holds it.
#[inline(always)]
pub fn establish_socket(cookie: u64) -> Option<ConnRecord> {
    let record = socket_record(cookie)?;
    let slot = FW_SOCKETS.get_ptr_mut(socket_slot(cookie))?;
    // SAFETY: as in `store_socket`; only this socket's own events write its flags.
    unsafe {
        ptr::write_volatile(
            ptr::addr_of_mut!((*slot).flags),
            record.flags | CONN_F_ESTABLISHED,
        );
    }
    Some(ConnRecord {
        flags: record.flags | CONN_F_ESTABLISHED,
        ..record
    })
}

/// Frees the socket's slot, if it still holds the socket.
#[inline(always)]
pub fn forget_socket(cookie: u64) {
    if let Some(slot) = FW_SOCKETS.get_ptr_mut(socket_slot(cookie)) {
        // SAFETY: as in `store_socket`.
        unsafe {
            if ptr::read_volatile(ptr::addr_of!((*slot).cookie)) == cookie {
                ptr::write_volatile(ptr::addr_of_mut!((*slot).cookie), 0);
            }
        }
    }
}

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
