//! The second layer: BPF LSM hooks that keep protected destinations closed when the
//! `cgroup/*` programs are not there (detached, or never attached to a cgroup a process runs in).
//!
//! - `socket_connect` runs before the cgroup connect hook: `security_socket_connect()` is called
//!   in `__sys_connect_file()` before the protocol's connect, inside which the cgroup hook
//!   rewrites the destination. So it sees the application's own destination, and lets a
//!   protected one through only while the agent has verified that the redirect is attached and
//!   its heartbeat is fresh.
//! - `socket_sendmsg` and `socket_recvmsg` refuse data on a socket whose peer is a protected
//!   destination, or a datagram addressed to one: such a socket did not come through the
//!   redirect (a redirected socket's peer is the sidecar). This closes the gap between a detach
//!   and the agent's next check.
//!
//! The hooks are global, so each first checks that the task is in scope (under the cgroup the
//! redirect is attached to). Kernel structures are read at offsets from the running kernel's
//! BTF (`FW_LSM`); a failed read lets the call through, as the cgroup layer still decides.

use aya_ebpf::{
    helpers::{
        bpf_probe_read_kernel,
        generated::{
            bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_ktime_get_ns,
        },
    },
    programs::LsmContext,
};
use fhirwall_common::{
    Addr, CONFIG_F_REDIRECT_VERIFIED, Config, EVENT_REFUSED, Event, LsmConfig,
    PROTECTED_RECORD_ONLY, REASON_NO_REDIRECT, STAT_LSM_CALLS, STAT_LSM_REFUSED_CONNECT,
    STAT_LSM_REFUSED_DATA, v4_mapped,
};

use crate::{
    connect::{AF_INET, AF_INET6, Refused, agent_alive, current, protection},
    maps::{FW_CONFIG, FW_LSM, count, emit},
};

/// `sizeof(struct sockaddr_in6)`: enough for either family.
const SOCKADDR_LEN: i32 = 28;

/// `security_socket_connect(struct socket *sock, struct sockaddr *address, int addrlen)`.
pub fn connect(ctx: &LsmContext) -> Result<(), Refused> {
    count(STAT_LSM_CALLS);
    let Some(lsm) = in_scope() else {
        return Ok(());
    };
    let sock: *const u8 = ctx.arg(0);
    let address: *const u8 = ctx.arg(1);
    let addrlen: i32 = ctx.arg(2);
    let Some((dst, port, family)) = read_sockaddr(address, addrlen) else {
        return Ok(());
    };
    if !guarded(&dst, port) {
        return Ok(());
    }
    let cfg = FW_CONFIG.get(0).copied();
    if is_agent(&lsm, cfg.as_ref(), sock) {
        return Ok(());
    }
    let event = refusal(&dst, port, family);
    // Verified and alive: the cgroup hook that runs next redirects or refuses.
    if let Some(cfg) = cfg
        && cfg.flags & CONFIG_F_REDIRECT_VERIFIED != 0
        && agent_alive(&cfg, event.record.time_ns)
    {
        return Ok(());
    }
    emit(&event);
    count(STAT_LSM_REFUSED_CONNECT);
    Err(Refused)
}

/// `security_socket_sendmsg(struct socket *sock, struct msghdr *msg, int size)` and
/// `security_socket_recvmsg(..., int flags)`: the same check on the socket's peer; for a send,
/// also on the datagram's explicit destination.
pub fn data(ctx: &LsmContext, send: bool) -> Result<(), Refused> {
    let Some(lsm) = in_scope() else {
        return Ok(());
    };
    let sock: *const u8 = ctx.arg(0);
    // The peer, and for a send also the explicit destination: a connected datagram socket
    // can still name another one.
    let is_guarded = |(dst, port, _): &(Addr, u16, u16)| guarded(dst, *port);
    let Some((dst, port, family)) = peer(&lsm, sock).filter(is_guarded).or_else(|| {
        if send {
            explicit_destination(&lsm, ctx.arg(1)).filter(is_guarded)
        } else {
            None
        }
    }) else {
        return Ok(());
    };
    if is_agent(&lsm, FW_CONFIG.get(0), sock) {
        return Ok(());
    }
    emit(&refusal(&dst, port, family));
    count(STAT_LSM_REFUSED_DATA);
    Err(Refused)
}

/// The LSM configuration when the current task is under the scope cgroup.
#[inline(always)]
fn in_scope() -> Option<LsmConfig> {
    let lsm = FW_LSM.get(0).copied()?;
    if lsm.scope_level != 0 {
        // SAFETY: helper without pointer arguments.
        let ancestor = unsafe { bpf_get_current_ancestor_cgroup_id(lsm.scope_level.cast_signed()) };
        if ancestor != lsm.scope_cgroup {
            return None;
        }
    }
    // An agent that has not written the offsets yet: nothing can be read safely.
    (lsm.socket_sk != 0).then_some(lsm)
}

/// Protected and redirected (or refused) by the cgroup layer: the sidecar's explicit listener
/// is protected only for attribution and is not guarded.
#[inline(always)]
fn guarded(dst: &Addr, port: u16) -> bool {
    protection(dst, port).is_some_and(|p| p != PROTECTED_RECORD_ONLY)
}

/// The agent's own sockets, told apart exactly as the cgroup hook does (cgroup and mark).
fn is_agent(lsm: &LsmConfig, cfg: Option<&Config>, sock: *const u8) -> bool {
    let Some(cfg) = cfg else {
        return false;
    };
    // SAFETY: helper without arguments.
    if cfg.agent_mark == 0 || unsafe { bpf_get_current_cgroup_id() } != cfg.agent_cgroup {
        return false;
    }
    let Some(sk) = sk_of(lsm, sock) else {
        return false;
    };
    read::<u32>(sk, lsm.sock_mark) == Some(cfg.agent_mark)
}

fn refusal(dst: &Addr, port: u16, family: u16) -> Event {
    Event {
        kind: EVENT_REFUSED,
        reason: REASON_NO_REDIRECT,
        // SAFETY: helper without arguments.
        record: current(0, unsafe { bpf_ktime_get_ns() }, dst, port, family),
    }
}

/// A connected socket's peer: address (mapped form), port and family.
fn peer(lsm: &LsmConfig, sock: *const u8) -> Option<(Addr, u16, u16)> {
    let sk = sk_of(lsm, sock)?;
    let family = read::<u16>(sk, lsm.sk_family)?;
    let port = u16::from_be(read::<u16>(sk, lsm.sk_dport)?);
    if port == 0 {
        return None;
    }
    match family {
        AF_INET => Some((v4_mapped(read::<u32>(sk, lsm.sk_daddr)?), port, family)),
        AF_INET6 => Some((read::<Addr>(sk, lsm.sk_v6_daddr)?, port, family)),
        _ => None,
    }
}

/// `msg->msg_name` of a send, when it names a destination.
fn explicit_destination(lsm: &LsmConfig, msg: *const u8) -> Option<(Addr, u16, u16)> {
    let name = read::<*const u8>(msg, lsm.msg_name)?;
    let len = read::<i32>(msg, lsm.msg_namelen)?;
    if name.is_null() {
        return None;
    }
    read_sockaddr(name, len)
}

fn sk_of(lsm: &LsmConfig, sock: *const u8) -> Option<*const u8> {
    read::<*const u8>(sock, lsm.socket_sk).filter(|sk| !sk.is_null())
}

/// Family, port and address of a `struct sockaddr_in` / `sockaddr_in6` (UAPI layouts).
fn read_sockaddr(address: *const u8, len: i32) -> Option<(Addr, u16, u16)> {
    if address.is_null() || len < 16 {
        return None;
    }
    let family = read::<u16>(address, 0)?;
    let port = u16::from_be(read::<u16>(address, 2)?);
    match family {
        AF_INET => Some((v4_mapped(read::<u32>(address, 4)?), port, family)),
        AF_INET6 if len >= SOCKADDR_LEN => Some((read::<Addr>(address, 8)?, port, family)),
        _ => None,
    }
}

#[inline(always)]
fn read<T>(base: *const u8, offset: u32) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel checks the address; a fault returns an error, not a crash.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize).cast::<T>()).ok() }
}
