//! Types and constants shared between the fhirwall agent (userspace) and its eBPF programs.
//!
//! Everything here is `#[repr(C)]` with explicit padding, `u32` flags instead of `bool`, and a
//! compile-time size assertion, so both sides agree on every byte. Addresses are kept exactly as
//! the kernel hands them to `cgroup/connect*` programs: four `u32` words in network byte order,
//! IPv4 addresses in their IPv4-mapped IPv6 form (`::ffff:a.b.c.d`). Ports are host byte order.
#![no_std]

use core::mem::size_of;

/// Bumped whenever a pinned map's layout changes, so a new agent never reuses an old map.
pub const LAYOUT_VERSION: u32 = 2;

// Map names (the `.maps` symbol names, also the pin file names under the bpffs directory).
pub const MAP_CONFIG: &str = "FW_CONFIG";
pub const MAP_HEARTBEAT: &str = "FW_HEARTBEAT";
pub const MAP_PROTECTED: &str = "FW_PROTECTED";
pub const MAP_WORKLOADS: &str = "FW_WORKLOADS";
pub const MAP_SOCKETS: &str = "FW_SOCKETS";
pub const MAP_CONNS: &str = "FW_CONNS";
pub const MAP_EVENTS: &str = "FW_EVENTS";
pub const MAP_STATS: &str = "FW_STATS";
pub const MAP_LSM: &str = "FW_LSM";

/// Every map the agent pins, in the order `fhirwall uninstall` removes them.
pub const PINNED_MAPS: [&str; 9] = [
    MAP_CONFIG,
    MAP_LSM,
    MAP_HEARTBEAT,
    MAP_PROTECTED,
    MAP_WORKLOADS,
    MAP_SOCKETS,
    MAP_CONNS,
    MAP_EVENTS,
    MAP_STATS,
];

// Program names (the function names in fhirwall-ebpf).
pub const PROG_CONNECT4: &str = "fw_connect4";
pub const PROG_CONNECT6: &str = "fw_connect6";
pub const PROG_SENDMSG4: &str = "fw_sendmsg4";
pub const PROG_SENDMSG6: &str = "fw_sendmsg6";
pub const PROG_GETPEERNAME4: &str = "fw_getpeername4";
pub const PROG_GETPEERNAME6: &str = "fw_getpeername6";
pub const PROG_SOCK_OPS: &str = "fw_sock_ops";
pub const PROG_EXEC: &str = "fw_sched_exec";
pub const PROG_EXIT: &str = "fw_sched_exit";
pub const PROG_LSM_CONNECT: &str = "fw_lsm_connect";
pub const PROG_LSM_SENDMSG: &str = "fw_lsm_sendmsg";
pub const PROG_LSM_RECVMSG: &str = "fw_lsm_recvmsg";

/// Capacity of the maps whose size bounds what the node can do at once.
pub const PROTECTED_CAPACITY: u32 = 4096;
pub const WORKLOADS_CAPACITY: u32 = 65_536;
/// Redirected connections open at once, per node: the size of the established-connection table
/// (a preallocated hash: an update is a free-list pop, not an allocation) and of the socket
/// table (an array of slots by cookie): about 9 and 5 MiB. A power of two.
pub const CONNS_CAPACITY: u32 = 65_536;
const _: () = assert!(CONNS_CAPACITY.is_power_of_two());
pub const EVENTS_BYTES: u32 = 1 << 22;

/// The word that prefixes an IPv4 address in its IPv4-mapped IPv6 form, as it sits in memory.
pub const V4_MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// An IPv6 address (or IPv4-mapped address) as four network-byte-order words.
pub type Addr = [u32; 4];

/// Maps an IPv4 address word (network byte order) to its IPv4-mapped IPv6 form.
#[must_use]
pub const fn v4_mapped(ip4: u32) -> Addr {
    [0, 0, V4_MAPPED_WORD, ip4]
}

/// `FW_PROTECTED` value: connects are recorded and redirected to the sidecar.
pub const PROTECTED_REDIRECT: u32 = 1;
/// `FW_PROTECTED` value: the sidecar's own explicit listener. Connects are recorded (so the
/// sidecar can attribute them) but keep their destination.
pub const PROTECTED_RECORD_ONLY: u32 = 2;
/// `FW_PROTECTED` value under port 0: every other port of this address is refused
/// (`protect_all_ports`).
pub const PROTECTED_REFUSE: u32 = 3;

/// A protected destination: a FHIR endpoint whose connections must go through the sidecar.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProtectedKey {
    pub addr: Addr,
    pub port: u16,
    pub pad: u16,
}
const _: () = assert!(size_of::<ProtectedKey>() == 20);

/// `FW_CONFIG[0]`: how the kernel programs behave. Written by the agent at start and on reload.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// cgroup v2 id of the agent; together with `agent_mark` identifies the agent's sockets.
    pub agent_cgroup: u64,
    /// Where redirected IPv4 (and IPv4-mapped) connects go: the sidecar's transparent listener.
    pub sidecar_v4: u32,
    /// Where redirected IPv6 connects go.
    pub sidecar_v6: Addr,
    pub sidecar_port: u16,
    /// Port of the sidecar's explicit listener, 0 when there is none. Connections to it are
    /// recorded (not redirected) at connect and re-keyed by `sock_ops` like redirected ones.
    pub explicit_port: u16,
    /// `SO_MARK` carried by the agent's own upstream sockets.
    pub agent_mark: u32,
    /// `CONFIG_F_*` bits.
    pub flags: u32,
    /// Connects are refused when the agent's heartbeat is older than this.
    pub heartbeat_timeout_ms: u32,
    pub pad1: u32,
}
const _: () = assert!(size_of::<Config>() == 48);

/// Refuse connects from workloads that `FW_WORKLOADS` does not name with `VERDICT_ALLOW`
/// (`enforcement: kernel`). Without it only `VERDICT_DENY` entries are refused.
pub const CONFIG_F_KERNEL_ENFORCEMENT: u32 = 1;
/// Set once the agent has written a complete configuration; until then everything protected is refused.
pub const CONFIG_F_READY: u32 = 1 << 1;
/// `FW_WORKLOADS` holds entries of this kind: the hook skips lookups of kinds that have none.
pub const CONFIG_F_HAS_TGID: u32 = 1 << 2;
pub const CONFIG_F_HAS_CGROUP: u32 = 1 << 3;
pub const CONFIG_F_HAS_UID: u32 = 1 << 4;
/// The agent has checked that its `cgroup/connect*` programs are attached (it checks again at
/// every heartbeat). Without it the LSM layer refuses every protected connect itself.
pub const CONFIG_F_REDIRECT_VERIFIED: u32 = 1 << 5;
/// `FW_PROTECTED` holds port-0 entries: every port of those addresses is refused.
pub const CONFIG_F_ANY_PORT: u32 = 1 << 6;

/// `FW_LSM[0]`: what the LSM programs need besides `Config`. Kernel structures are read at
/// the offsets the agent found in the running kernel's BTF (Rust kernel programs get no CO-RE
/// relocations), so one build works on every kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LsmConfig {
    /// The LSM hooks are global: they act only for tasks under this cgroup (id, and its level
    /// below the hierarchy root; level 0 is the whole host).
    pub scope_cgroup: u64,
    pub scope_level: u32,
    /// Byte offsets: `struct socket` `sk`, `struct sock` `sk_mark`, `struct sock_common` (at
    /// the start of `struct sock`) `skc_family`, `skc_daddr`, `skc_dport`, `skc_v6_daddr`, and
    /// `struct msghdr` `msg_name`, `msg_namelen`.
    pub socket_sk: u32,
    pub pad: u32,
    pub sock_mark: u32,
    pub sk_family: u32,
    pub sk_daddr: u32,
    pub sk_dport: u32,
    pub sk_v6_daddr: u32,
    pub msg_name: u32,
    pub msg_namelen: u32,
}
const _: () = assert!(size_of::<LsmConfig>() == 48);

/// What a workload key names: the kernel checks them in this order, most specific first.
pub const KEY_TGID: u32 = 1;
pub const KEY_CGROUP: u32 = 2;
pub const KEY_UID: u32 = 3;

/// A workload as the kernel can name it at connect time.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WorkloadKey {
    /// One of `KEY_*`.
    pub kind: u32,
    pub pad: u32,
    pub id: u64,
}
const _: () = assert!(size_of::<WorkloadKey>() == 16);

pub const VERDICT_ALLOW: u32 = 1;
pub const VERDICT_DENY: u32 = 2;
/// Written by the exec hook with `enforcement: kernel`: a process the agent has not classified
/// yet. Its connects go to the sidecar, which decides (and refuses unregistered workloads) until
/// the agent replaces the entry. Less specific entries (cgroup, uid) still apply.
pub const VERDICT_PENDING: u32 = 3;

/// `FW_WORKLOADS` value: what the kernel does with a workload's connects to protected destinations.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkloadVerdict {
    /// `VERDICT_ALLOW`, `VERDICT_DENY`, or `VERDICT_PENDING` (written by the exec hook).
    pub verdict: u32,
    /// `REASON_*` recorded in the refusal event. For `VERDICT_PENDING`, the exec's token
    /// ([`exec_token`] of the exec event's time): the agent resolves a pending entry only with
    /// the verdict it computed for that same exec, never with one for an earlier image.
    pub reason: u32,
}

/// The token of an exec at `time_ns` (`bpf_ktime_get_ns`): its low 32 bits, which tell two
/// execs of one process apart (they are at least microseconds apart).
#[must_use]
#[expect(
    clippy::cast_possible_truncation,
    reason = "the token is the low 32 bits by design"
)]
pub const fn exec_token(time_ns: u64) -> u32 {
    time_ns as u32
}
const _: () = assert!(size_of::<WorkloadVerdict>() == 8);

/// Who opened a redirected connection and where it was going, recorded at connect time.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnRecord {
    pub cookie: u64,
    pub cgroup_id: u64,
    /// `bpf_ktime_get_ns()` at connect (CLOCK_MONOTONIC).
    pub time_ns: u64,
    pub tgid: u32,
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub orig_addr: Addr,
    pub orig_port: u16,
    /// `AF_INET` or `AF_INET6`, as the application's socket.
    pub family: u16,
    /// `CONN_F_*` bits.
    pub flags: u32,
    pub comm: [u8; 16],
}
const _: () = assert!(size_of::<ConnRecord>() == 80);

/// Set on a record once sock_ops has re-keyed it by the connection's 4-tuple.
pub const CONN_F_ESTABLISHED: u32 = 1;

/// A TCP connection to the sidecar as the sidecar sees it: client address and port, sidecar
/// address and port. Both addresses in mapped form so IPv4 and IPv6 share one key shape.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub client: Addr,
    pub sidecar: Addr,
    pub client_port: u16,
    pub sidecar_port: u16,
}
const _: () = assert!(size_of::<ConnKey>() == 36);

// Redirects are counted (`STAT_REDIRECTED`), not evented: a ring-buffer wakeup per connect
// would cost more than the rest of the hook. Kind 1 stays unused so old and new agree.
pub const EVENT_REFUSED: u32 = 2;
pub const EVENT_CONNS_FULL: u32 = 3;
pub const EVENT_EXEC: u32 = 4;

pub const REASON_NONE: u32 = 0;
/// `FW_WORKLOADS` names the workload with `VERDICT_DENY` (revoked or suspended integration).
pub const REASON_DENIED: u32 = 1;
/// `enforcement: kernel` and the workload is not registered.
pub const REASON_UNREGISTERED: u32 = 2;
/// The agent's heartbeat is stale (agent down or restarting) or its configuration is incomplete.
pub const REASON_AGENT_DOWN: u32 = 3;
/// The per-socket record could not be stored: fail closed.
pub const REASON_STORE_FULL: u32 = 4;
/// Not TCP (UDP / QUIC, MPTCP, SCTP) to a protected destination: only TCP goes through the sidecar.
pub const REASON_NOT_TCP: u32 = 5;
/// The LSM layer: a connect the redirect is not verified to catch, or data on a socket whose
/// peer is a protected destination (it did not come through the redirect).
pub const REASON_NO_REDIRECT: u32 = 6;
/// Another port of an address whose every port is protected.
pub const REASON_OTHER_PORT: u32 = 7;

/// One ring-buffer event. `record` is filled as far as the event kind allows.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// `EVENT_*`.
    pub kind: u32,
    /// `REASON_*`.
    pub reason: u32,
    pub record: ConnRecord,
}
const _: () = assert!(size_of::<Event>() == 88);

// Indices into the per-CPU `FW_STATS` counters.
pub const STAT_REDIRECTED: u32 = 0;
pub const STAT_REFUSED_DENIED: u32 = 1;
pub const STAT_REFUSED_UNREGISTERED: u32 = 2;
pub const STAT_REFUSED_AGENT_DOWN: u32 = 3;
pub const STAT_REFUSED_STORE_FULL: u32 = 4;
pub const STAT_REFUSED_NOT_TCP: u32 = 5;
pub const STAT_CONNS_FULL: u32 = 6;
pub const STAT_EVENTS_DROPPED: u32 = 7;
pub const STAT_AGENT_PASSED: u32 = 8;
/// Refused by the LSM layer at connect, and on send/receive.
pub const STAT_LSM_REFUSED_CONNECT: u32 = 9;
pub const STAT_LSM_REFUSED_DATA: u32 = 10;
/// Every run of the LSM connect hook, in scope or not: the agent's proof that the hook fires.
pub const STAT_LSM_CALLS: u32 = 11;
pub const STAT_REFUSED_OTHER_PORT: u32 = 12;
pub const STAT_COUNT: u32 = 13;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type below is #[repr(C)], Copy, has only integer fields and explicit padding
    // (asserted sizes above), so any byte pattern is a valid value.
    unsafe impl aya::Pod for super::ProtectedKey {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::LsmConfig {}
    unsafe impl aya::Pod for super::WorkloadKey {}
    unsafe impl aya::Pod for super::WorkloadVerdict {}
    unsafe impl aya::Pod for super::ConnRecord {}
    unsafe impl aya::Pod for super::ConnKey {}
    unsafe impl aya::Pod for super::Event {}
}
