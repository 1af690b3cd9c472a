//! `connect()` and `sendmsg()` to protected destinations, and the peer-name restore.
//!
//! Order of checks on a connect, cheapest and most common first: not protected -> pass; the
//! agent's own socket -> pass; not TCP -> refuse; agent down -> refuse; workload refused by the
//! kernel map -> refuse; otherwise record and redirect. A refusal is `EPERM` to the application,
//! an event to the agent and a counter.

use core::ptr;

use aya_ebpf::{
    EbpfContext as _,
    bindings::bpf_sock_addr,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{self, bpf_get_current_cgroup_id, bpf_get_socket_cookie, bpf_ktime_get_ns},
    },
    programs::SockAddrContext,
};
use fhirwall_common::{
    Addr, CONFIG_F_ANY_PORT, CONFIG_F_HAS_CGROUP, CONFIG_F_HAS_TGID, CONFIG_F_HAS_UID,
    CONFIG_F_KERNEL_ENFORCEMENT, CONFIG_F_READY, Config, ConnRecord, EVENT_EXEC, EVENT_REFUSED,
    Event, KEY_CGROUP, KEY_TGID, KEY_UID, PROTECTED_RECORD_ONLY, PROTECTED_REFUSE, ProtectedKey,
    REASON_AGENT_DOWN, REASON_NONE, REASON_NOT_TCP, REASON_OTHER_PORT, REASON_STORE_FULL,
    REASON_UNREGISTERED, STAT_AGENT_PASSED, STAT_REDIRECTED, STAT_REFUSED_AGENT_DOWN,
    STAT_REFUSED_DENIED, STAT_REFUSED_NOT_TCP, STAT_REFUSED_OTHER_PORT, STAT_REFUSED_STORE_FULL,
    STAT_REFUSED_UNREGISTERED, VERDICT_DENY, VERDICT_PENDING, WorkloadKey, WorkloadVerdict,
    exec_token, v4_mapped,
};

use crate::maps::{
    FW_CONFIG, FW_HEARTBEAT, FW_PROTECTED, FW_WORKLOADS, count, emit, socket_record, store_socket,
};

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
const SOCK_STREAM: u32 = 1;
const IPPROTO_TCP: u32 = 6;

/// The connect was refused; the program returns `REFUSE` (`EPERM` for the application).
pub struct Refused;

pub fn connect4(ctx: &SockAddrContext) -> Result<(), Refused> {
    // SAFETY: the kernel passes sock_addr programs a valid, writable context.
    let sa = unsafe { &mut *ctx.sock_addr };
    let dst = v4_mapped(sa.user_ip4);
    if let Some(cfg) = on_connect(ctx, sa, &dst, AF_INET)? {
        sa.user_ip4 = cfg.sidecar_v4;
        sa.user_port = port_to_user(cfg.sidecar_port);
    }
    Ok(())
}

pub fn connect6(ctx: &SockAddrContext) -> Result<(), Refused> {
    // SAFETY: as in `connect4`.
    let sa = unsafe { &mut *ctx.sock_addr };
    let dst = read_ip6(sa);
    if let Some(cfg) = on_connect(ctx, sa, &dst, AF_INET6)? {
        // A dual-stack socket connecting to an IPv4-mapped address (Java does this) stays on IPv4.
        write_ip6(
            sa,
            &if is_v4_mapped(&dst) {
                v4_mapped(cfg.sidecar_v4)
            } else {
                cfg.sidecar_v6
            },
        );
        sa.user_port = port_to_user(cfg.sidecar_port);
    }
    Ok(())
}

pub fn sendmsg4(ctx: &SockAddrContext) -> Result<(), Refused> {
    // SAFETY: as in `connect4`.
    let sa = unsafe { &*ctx.sock_addr };
    on_datagram(ctx, sa, &v4_mapped(sa.user_ip4), AF_INET)
}

pub fn sendmsg6(ctx: &SockAddrContext) -> Result<(), Refused> {
    // SAFETY: as in `connect4`.
    let sa = unsafe { &*ctx.sock_addr };
    on_datagram(ctx, sa, &read_ip6(sa), AF_INET6)
}

pub fn getpeername4(ctx: &SockAddrContext) {
    if let Some(record) = stored_record(ctx) {
        // SAFETY: as in `connect4`.
        let sa = unsafe { &mut *ctx.sock_addr };
        sa.user_ip4 = record.orig_addr[3];
        sa.user_port = port_to_user(record.orig_port);
    }
}

pub fn getpeername6(ctx: &SockAddrContext) {
    if let Some(record) = stored_record(ctx) {
        // SAFETY: as in `connect4`.
        let sa = unsafe { &mut *ctx.sock_addr };
        write_ip6(sa, &record.orig_addr);
        sa.user_port = port_to_user(record.orig_port);
    }
}

/// Tells the agent a process image changed, so it can (re)classify the process before it connects.
pub fn exec_event() {
    let event = Event {
        kind: EVENT_EXEC,
        reason: REASON_NONE,
        record: current(0, now(), &[0; 4], 0, 0),
    };
    // With `enforcement: kernel`, a new image is unknown until the agent classifies it: until
    // then its connects go to the sidecar (which decides) instead of being refused outright.
    if let Some(cfg) = FW_CONFIG.get(0)
        && cfg.flags & CONFIG_F_KERNEL_ENFORCEMENT != 0
    {
        let key = WorkloadKey {
            kind: KEY_TGID,
            pad: 0,
            id: u64::from(event.record.tgid),
        };
        let pending = WorkloadVerdict {
            verdict: VERDICT_PENDING,
            reason: exec_token(event.record.time_ns),
        };
        // A full map leaves the process unregistered: refused, not let through.
        let _ = FW_WORKLOADS.insert(key, pending, 0);
    }
    emit(&event);
}

/// A thread group's leader exits: its per-process verdict goes with it, so a process that
/// later gets the same pid never inherits it (the agent's sweep would only notice later).
/// Should other threads of the group outlive their leader, they find no entry: refused with
/// `enforcement: kernel`, decided by the sidecar otherwise.
pub fn exit_event() {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, pid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if pid != tgid {
        return;
    }
    let key = WorkloadKey {
        kind: KEY_TGID,
        pad: 0,
        id: u64::from(tgid),
    };
    // Most exiting processes have no entry: nothing to remove is not an error.
    let _ = FW_WORKLOADS.remove(key);
}

/// Returns the configuration to redirect with, `None` to let the connect through untouched.
fn on_connect(
    ctx: &SockAddrContext,
    sa: &bpf_sock_addr,
    dst: &Addr,
    family: u16,
) -> Result<Option<Config>, Refused> {
    let port = port_from_user(sa.user_port);
    let Some(protection) = protection(dst, port) else {
        return Ok(None);
    };
    // One record, built once and stored in place: the event around it exists only on the
    // refusal paths.
    let mut record = current(cookie(ctx), now(), dst, port, family);
    let Some(cfg) = FW_CONFIG.get(0).copied() else {
        return Err(refuse(&record, REASON_AGENT_DOWN, STAT_REFUSED_AGENT_DOWN));
    };
    if is_agent(sa, &cfg, record.cgroup_id) {
        count(STAT_AGENT_PASSED);
        return Ok(None);
    }
    if protection == PROTECTED_REFUSE {
        return Err(refuse(&record, REASON_OTHER_PORT, STAT_REFUSED_OTHER_PORT));
    }
    check_caller(sa, &cfg, &record)?;
    if !store_record(&mut record) {
        return Err(refuse(&record, REASON_STORE_FULL, STAT_REFUSED_STORE_FULL));
    }
    count(STAT_REDIRECTED);
    // The explicit listener: recorded for attribution, destination kept.
    Ok((protection != PROTECTED_RECORD_ONLY).then_some(cfg))
}

/// Refuses what must not reach the sidecar or must not leave at all.
fn check_caller(sa: &bpf_sock_addr, cfg: &Config, record: &ConnRecord) -> Result<(), Refused> {
    // MPTCP, SCTP and datagram sockets cannot be relayed: refusing keeps them from bypassing.
    if sa.type_ != SOCK_STREAM || sa.protocol != IPPROTO_TCP {
        return Err(refuse(record, REASON_NOT_TCP, STAT_REFUSED_NOT_TCP));
    }
    if !agent_alive(cfg, record.time_ns) {
        return Err(refuse(record, REASON_AGENT_DOWN, STAT_REFUSED_AGENT_DOWN));
    }
    if let Some(reason) = workload_refusal(cfg, record) {
        let stat = if reason == REASON_UNREGISTERED {
            STAT_REFUSED_UNREGISTERED
        } else {
            STAT_REFUSED_DENIED
        };
        return Err(refuse(record, reason, stat));
    }
    Ok(())
}

fn on_datagram(
    ctx: &SockAddrContext,
    sa: &bpf_sock_addr,
    dst: &Addr,
    family: u16,
) -> Result<(), Refused> {
    let port = port_from_user(sa.user_port);
    if protection(dst, port).is_none() {
        return Ok(());
    }
    let record = current(cookie(ctx), now(), dst, port, family);
    if let Some(cfg) = FW_CONFIG.get(0)
        && is_agent(sa, cfg, record.cgroup_id)
    {
        return Ok(());
    }
    Err(refuse(&record, REASON_NOT_TCP, STAT_REFUSED_NOT_TCP))
}

fn refuse(record: &ConnRecord, reason: u32, stat: u32) -> Refused {
    emit(&Event {
        kind: EVENT_REFUSED,
        reason,
        record: *record,
    });
    count(stat);
    Refused
}

/// `PROTECTED_*` of a destination, `None` when it is not protected. Any IPv4 loopback address
/// counts as 127.0.0.1 when it is not protected itself: a server on this host listening on all
/// addresses answers on every one of 127.0.0.0/8, and the agent protects 127.0.0.1 (with the
/// host's other addresses) for an upstream that runs on this host. Port 0 entries
/// (`PROTECTED_REFUSE`) cover every other port of an address, looked up only while the agent
/// holds any.
pub fn protection(addr: &Addr, port: u16) -> Option<u32> {
    let loopback = is_v4_mapped(addr) && u32::from_be(addr[3]) >> 24 == 127;
    let localhost = v4_mapped(u32::to_be(0x7f00_0001));
    let exact = lookup(addr, port).or_else(|| {
        if loopback {
            lookup(&localhost, port)
        } else {
            None
        }
    });
    if exact.is_some() {
        return exact;
    }
    if FW_CONFIG
        .get(0)
        .is_none_or(|cfg| cfg.flags & CONFIG_F_ANY_PORT == 0)
    {
        return None;
    }
    lookup(addr, 0).or_else(|| {
        if loopback {
            lookup(&localhost, 0)
        } else {
            None
        }
    })
}

fn lookup(addr: &Addr, port: u16) -> Option<u32> {
    let key = ProtectedKey {
        addr: *addr,
        port,
        pad: 0,
    };
    // SAFETY: pointer returned by a successful lookup, valid for this program run.
    FW_PROTECTED.get_ptr(key).map(|value| unsafe { *value })
}

/// The agent's own sockets: in the agent's cgroup AND carrying its mark (never by pid, which a
/// workload could race for).
fn is_agent(sa: &bpf_sock_addr, cfg: &Config, cgroup_id: u64) -> bool {
    if cfg.agent_mark == 0 || cgroup_id != cfg.agent_cgroup {
        return false;
    }
    // SAFETY: `sk` of a sock_addr context is a valid socket pointer for the program's duration.
    let mark = unsafe { (*sa.__bindgen_anon_1.sk).mark };
    mark == cfg.agent_mark
}

/// `now` is the record's timestamp: one clock read per connect (clock reads are not free in a VM).
pub fn agent_alive(cfg: &Config, now: u64) -> bool {
    if cfg.flags & CONFIG_F_READY == 0 {
        return false;
    }
    let Some(beat) = FW_HEARTBEAT.get(0).copied() else {
        return false;
    };
    now.saturating_sub(beat) <= u64::from(cfg.heartbeat_timeout_ms) * 1_000_000
}

/// The most specific entry wins: process, then cgroup, then user. Kinds of which the agent
/// holds no entries (`CONFIG_F_HAS_*` clear) are not looked up.
fn workload_refusal(cfg: &Config, record: &ConnRecord) -> Option<u32> {
    let keys = [
        (CONFIG_F_HAS_TGID, KEY_TGID, u64::from(record.tgid)),
        (CONFIG_F_HAS_CGROUP, KEY_CGROUP, record.cgroup_id),
        (CONFIG_F_HAS_UID, KEY_UID, u64::from(record.uid)),
    ];
    let mut pending = false;
    for (flag, kind, id) in keys {
        if cfg.flags & flag == 0 {
            continue;
        }
        if let Some(found) = FW_WORKLOADS.get_ptr(WorkloadKey { kind, pad: 0, id }) {
            // SAFETY: pointer returned by a successful lookup, valid for this program run.
            let verdict = unsafe { *found };
            if verdict.verdict == VERDICT_PENDING {
                pending = true;
                continue;
            }
            return (verdict.verdict == VERDICT_DENY).then_some(verdict.reason);
        }
    }
    (!pending && cfg.flags & CONFIG_F_KERNEL_ENFORCEMENT != 0).then_some(REASON_UNREGISTERED)
}

fn store_record(record: &mut ConnRecord) -> bool {
    // A socket may connect again after a failed attempt: the newest destination wins.
    store_socket(record)
}

fn stored_record(ctx: &SockAddrContext) -> Option<ConnRecord> {
    socket_record(cookie(ctx))
}

/// `CLOCK_MONOTONIC`, fine-grained: the agent holds a connect's time against the start time of
/// the process it attributes it to (a later start means a reused pid), and a jiffy-grained
/// clock can lag behind a process that started and connected within one tick.
#[inline(always)]
fn now() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// Who is calling, as far as the kernel knows it without reading task memory, at `time_ns`,
/// connecting to `dst` (`[0; 4]`, port 0 and family 0 for events that have no destination).
///
/// Every field is written once, as a whole word: zero-filling the arrays first would go
/// through a byte-at-a-time `memset` loop (what LLVM emits for BPF), the largest cost of the
/// connect hook after its helpers.
pub fn current(cookie: u64, time_ns: u64, dst: &Addr, port: u16, family: u16) -> ConnRecord {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    let mut comm = core::mem::MaybeUninit::<[u64; 2]>::uninit();
    let words = comm.as_mut_ptr().cast::<u64>();
    // SAFETY: `comm` is 16 writable bytes, zeroed word by word (volatile, so not merged into a
    // `memset` call) before the helper fills them; on failure it leaves them zeroed.
    let comm = unsafe {
        ptr::write_volatile(words, 0);
        ptr::write_volatile(words.add(1), 0);
        generated::bpf_get_current_comm(words.cast(), 16);
        comm.assume_init()
    };
    ConnRecord {
        cookie,
        // SAFETY: helpers without arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        time_ns,
        tgid: (pid_tgid >> 32) as u32,
        pid: pid_tgid as u32,
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        orig_addr: *dst,
        orig_port: port,
        family,
        flags: 0,
        // SAFETY: two u64 words are sixteen bytes, any pattern valid.
        comm: unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(comm) },
    }
}

fn cookie(ctx: &SockAddrContext) -> u64 {
    // SAFETY: sock_addr contexts are valid arguments for this helper.
    unsafe { bpf_get_socket_cookie(ctx.as_ptr()) }
}

/// Reads `user_ip6` one word at a time: the verifier only accepts 4-byte context loads at a
/// constant offset from the unmodified context pointer, which a plain array copy does not give.
#[inline(always)]
fn read_ip6(sa: &bpf_sock_addr) -> Addr {
    let words = ptr::addr_of!(sa.user_ip6).cast::<u32>();
    // SAFETY: four in-bounds u32 fields of the context.
    unsafe {
        [
            ptr::read_volatile(words),
            ptr::read_volatile(words.add(1)),
            ptr::read_volatile(words.add(2)),
            ptr::read_volatile(words.add(3)),
        ]
    }
}

#[inline(always)]
fn write_ip6(sa: &mut bpf_sock_addr, addr: &Addr) {
    let words = ptr::addr_of_mut!(sa.user_ip6).cast::<u32>();
    // SAFETY: four in-bounds, writable u32 fields of the context (as in `read_ip6`).
    unsafe {
        ptr::write_volatile(words, addr[0]);
        ptr::write_volatile(words.add(1), addr[1]);
        ptr::write_volatile(words.add(2), addr[2]);
        ptr::write_volatile(words.add(3), addr[3]);
    }
}

fn is_v4_mapped(addr: &Addr) -> bool {
    addr[0] == 0 && addr[1] == 0 && addr[2] == fhirwall_common::V4_MAPPED_WORD
}

/// `user_port` holds the port in network byte order in its low 16 bits.
fn port_from_user(user_port: u32) -> u16 {
    u16::from_be(user_port as u16)
}

fn port_to_user(port: u16) -> u32 {
    u32::from(port.to_be())
}
