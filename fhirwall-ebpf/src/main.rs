//! fhirwall kernel programs.
//!
//! One request's path starts here: `cgroup/connect4|6` sees the application's `connect()` to a
//! protected FHIR endpoint, records who made it in the socket's local storage and rewrites the
//! destination to the sidecar; `sock_ops` re-keys that record by the connection's 4-tuple once
//! established (so the sidecar can look it up at `accept()`) and deletes it at close;
//! `cgroup/getpeername4|6` restores the original peer for the application. Datagrams to protected
//! destinations are refused (`sendmsg4|6`), so HTTP/3 cannot bypass the sidecar, and
//! `sched_process_exec` tells the agent about new processes so it can classify them quickly.
//!
//! Where the kernel has BPF LSM, `lsm/socket_*` hooks are a second layer (see `lsm`).
//!
//! Every program is a thin wrapper that maps `Err` to its fail-closed default.
#![no_std]
#![no_main]
#![expect(
    clippy::inline_always,
    reason = "small helpers stay inline so context accesses remain constant-offset loads the verifier accepts"
)]
#![expect(
    clippy::needless_pass_by_value,
    reason = "aya's program macros hand each program its context by value"
)]
#![expect(
    clippy::cast_possible_truncation,
    reason = "kernel interfaces pack pid/tgid, uid/gid and ports into wider words; the casts unpack them"
)]

mod connect;
mod lsm;
mod maps;
mod sockops;

use aya_ebpf::{
    macros::{cgroup_sock_addr, lsm, raw_tracepoint, sock_ops},
    programs::{LsmContext, RawTracePointContext, SockAddrContext, SockOpsContext},
};

/// `cgroup/*` sock_addr return values. The wrappers return these constants from a `match` so
/// the verifier sees a return value in [0, 1] on every path.
const ALLOW: i32 = 1;
const REFUSE: i32 = 0;

fn verdict(result: &Result<(), connect::Refused>) -> i32 {
    match result {
        Ok(()) => ALLOW,
        Err(connect::Refused) => REFUSE,
    }
}

#[cgroup_sock_addr(connect4)]
pub fn fw_connect4(ctx: SockAddrContext) -> i32 {
    verdict(&connect::connect4(&ctx))
}

#[cgroup_sock_addr(connect6)]
pub fn fw_connect6(ctx: SockAddrContext) -> i32 {
    verdict(&connect::connect6(&ctx))
}

#[cgroup_sock_addr(sendmsg4)]
pub fn fw_sendmsg4(ctx: SockAddrContext) -> i32 {
    verdict(&connect::sendmsg4(&ctx))
}

#[cgroup_sock_addr(sendmsg6)]
pub fn fw_sendmsg6(ctx: SockAddrContext) -> i32 {
    verdict(&connect::sendmsg6(&ctx))
}

// Restoring the peer name is cosmetic for the application: on any error, leave it as it is.
#[cgroup_sock_addr(getpeername4)]
pub fn fw_getpeername4(ctx: SockAddrContext) -> i32 {
    connect::getpeername4(&ctx);
    ALLOW
}

#[cgroup_sock_addr(getpeername6)]
pub fn fw_getpeername6(ctx: SockAddrContext) -> i32 {
    connect::getpeername6(&ctx);
    ALLOW
}

#[sock_ops]
pub fn fw_sock_ops(ctx: SockOpsContext) -> u32 {
    sockops::handle(&ctx);
    // sock_ops programs must return 1; the verdict lives in the maps, not in the return value.
    1
}

// A raw tracepoint needs no tracefs mount (often absent on hardened hosts).
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn fw_sched_exec(_ctx: RawTracePointContext) -> i32 {
    connect::exec_event();
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn fw_sched_exit(_ctx: RawTracePointContext) -> i32 {
    connect::exit_event();
    0
}

/// LSM return values: 0 lets the call through, `-EPERM` refuses it. A refusal by an LSM that
/// ran before this one stands (its value is the hook's last argument).
const EPERM: i32 = 1;

fn lsm_verdict(previous: i32, result: &Result<(), connect::Refused>) -> i32 {
    if previous != 0 {
        return previous;
    }
    match result {
        Ok(()) => 0,
        Err(connect::Refused) => -EPERM,
    }
}

#[lsm(hook = "socket_connect")]
pub fn fw_lsm_connect(ctx: LsmContext) -> i32 {
    lsm_verdict(ctx.arg(3), &lsm::connect(&ctx))
}

#[lsm(hook = "socket_sendmsg")]
pub fn fw_lsm_sendmsg(ctx: LsmContext) -> i32 {
    lsm_verdict(ctx.arg(3), &lsm::data(&ctx, true))
}

#[lsm(hook = "socket_recvmsg")]
pub fn fw_lsm_recvmsg(ctx: LsmContext) -> i32 {
    lsm_verdict(ctx.arg(4), &lsm::data(&ctx, false))
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path, so this is never executed.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
