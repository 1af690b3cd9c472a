//! `sock_ops`: re-key a redirected connection's record by its 4-tuple once it is established,
//! so the sidecar finds it at `accept()`, and delete its records when the connection closes or
//! the connect fails.

use core::ptr;

use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG,
        BPF_SOCK_OPS_TCP_CONNECT_CB,
    },
    helpers::generated::bpf_get_socket_cookie,
    programs::SockOpsContext,
};
use fhirwall_common::{ConnKey, EVENT_CONNS_FULL, Event, REASON_NONE, STAT_CONNS_FULL, v4_mapped};

use crate::maps::{
    FW_CONFIG, FW_CONNS, count, emit, establish_socket, forget_socket, socket_record,
};

const AF_INET: u32 = 2;
/// `TCP_CLOSE` from include/net/tcp_states.h.
const TCP_CLOSE: u32 = 7;

pub fn handle(ctx: &SockOpsContext) {
    match ctx.op() {
        BPF_SOCK_OPS_TCP_CONNECT_CB if to_sidecar(ctx) => connecting(ctx),
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB if to_sidecar(ctx) => established(ctx),
        // args[1] is the new state; only sockets we set STATE_CB_FLAG on get here (or sockets
        // another program flagged: deleting an absent key is harmless).
        BPF_SOCK_OPS_STATE_CB if ctx.arg(1) == TCP_CLOSE => closed(ctx),
        _ => {}
    }
}

/// Only connections to the sidecar's ports (the transparent one, or the explicit listener's) can
/// carry a record: every other TCP connection on the host skips the cookie and map lookups.
fn to_sidecar(ctx: &SockOpsContext) -> bool {
    let Some(cfg) = FW_CONFIG.get(0) else {
        return false;
    };
    // SAFETY: in-bounds u32 field of the sock_ops context.
    let remote_port = unsafe { ptr::read_volatile(ptr::addr_of!((*ctx.ops).remote_port)) };
    let port = u32::from_be(remote_port) as u16;
    port == cfg.sidecar_port || (cfg.explicit_port != 0 && port == cfg.explicit_port)
}

/// The SYN is about to leave: ask for state changes on redirected sockets now, so a connect
/// that fails (refused, timed out) still reaches `closed` and leaves no record behind.
fn connecting(ctx: &SockOpsContext) {
    // SAFETY: sock_ops contexts are valid arguments for this helper.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
    if socket_record(cookie).is_some() {
        let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG).cast_signed());
    }
}

fn established(ctx: &SockOpsContext) {
    // SAFETY: sock_ops contexts are valid arguments for this helper.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
    let Some(record) = establish_socket(cookie) else {
        return; // not a redirected connection
    };
    // Close events are needed for every established redirected socket, also when the table is
    // full below: they delete the socket's entry.
    let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG).cast_signed());
    if FW_CONNS.insert(conn_key(ctx), record, 0).is_err() {
        // The sidecar will find no record and refuse the connection: closed, not bypassed.
        count(STAT_CONNS_FULL);
        emit(&Event {
            kind: EVENT_CONNS_FULL,
            reason: REASON_NONE,
            record,
        });
    }
}

fn closed(ctx: &SockOpsContext) {
    let _ = FW_CONNS.remove(conn_key(ctx));
    // SAFETY: sock_ops contexts are valid arguments for this helper.
    forget_socket(unsafe { bpf_get_socket_cookie(ctx.ops.cast()) });
}

/// The key as the sidecar sees the accepted connection: (client, sidecar) in mapped form.
///
/// Every field is read with its own volatile load at a constant offset: left to itself LLVM
/// merges the IPv4 and IPv6 branches into a load at a computed context offset, which the
/// verifier rejects ("dereference of modified ctx ptr").
fn conn_key(ctx: &SockOpsContext) -> ConnKey {
    let ops = ctx.ops;
    // SAFETY: in-bounds u32 fields of the sock_ops context, read one at a time.
    let (family, local4, remote4, local6, remote6, local_port, remote_port) = unsafe {
        (
            ptr::read_volatile(ptr::addr_of!((*ops).family)),
            ptr::read_volatile(ptr::addr_of!((*ops).local_ip4)),
            ptr::read_volatile(ptr::addr_of!((*ops).remote_ip4)),
            read_words(ptr::addr_of!((*ops).local_ip6).cast()),
            read_words(ptr::addr_of!((*ops).remote_ip6).cast()),
            ptr::read_volatile(ptr::addr_of!((*ops).local_port)),
            ptr::read_volatile(ptr::addr_of!((*ops).remote_port)),
        )
    };
    let (client, sidecar) = if family == AF_INET {
        (v4_mapped(local4), v4_mapped(remote4))
    } else {
        (local6, remote6)
    };
    ConnKey {
        client,
        sidecar,
        // local_port is host byte order; remote_port holds the network-order port in its upper
        // 16 bits on little-endian (net/core/filter.c, sock_ops_convert_ctx_access).
        client_port: local_port as u16,
        sidecar_port: u32::from_be(remote_port) as u16,
    }
}

/// # Safety
/// `words` points at four readable u32 context fields.
#[inline(always)]
unsafe fn read_words(words: *const u32) -> [u32; 4] {
    // SAFETY: as the caller promises.
    unsafe {
        [
            ptr::read_volatile(words),
            ptr::read_volatile(words.add(1)),
            ptr::read_volatile(words.add(2)),
            ptr::read_volatile(words.add(3)),
        ]
    }
}
