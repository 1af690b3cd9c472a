//! Events from the kernel programs' ring buffer.

use std::{
    io,
    net::SocketAddr,
    time::{Duration, SystemTime},
};

use aya::maps::{MapData, RingBuf};
use fhirwall_common::{
    ConnRecord, EVENT_CONNS_FULL, EVENT_EXEC, EVENT_REFUSED, Event, REASON_AGENT_DOWN,
    REASON_DENIED, REASON_NO_REDIRECT, REASON_NOT_TCP, REASON_OTHER_PORT, REASON_STORE_FULL,
    REASON_UNREGISTERED,
};
use serde::Serialize;
use tokio::io::unix::AsyncFd;

use super::addr::from_addr;

/// Why the kernel refused a connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Refusal {
    /// The workload's integration is revoked or suspended.
    Denied,
    /// `enforcement: kernel` and no integration registers the workload.
    Unregistered,
    /// The agent was down or not yet configured.
    AgentDown,
    /// The per-socket record could not be stored.
    StoreFull,
    /// Not TCP (UDP/QUIC, MPTCP, SCTP) to a protected destination.
    NotTcp,
    /// The LSM layer: a connect the redirect was not verified to catch, or data on a socket
    /// that bypassed it.
    NoRedirect,
    /// Another port of an address whose every port is protected.
    OtherPort,
    /// A reason this agent does not know (newer kernel programs).
    Other(u32),
}

impl Refusal {
    fn from_reason(reason: u32) -> Self {
        match reason {
            REASON_DENIED => Self::Denied,
            REASON_UNREGISTERED => Self::Unregistered,
            REASON_AGENT_DOWN => Self::AgentDown,
            REASON_STORE_FULL => Self::StoreFull,
            REASON_NOT_TCP => Self::NotTcp,
            REASON_NO_REDIRECT => Self::NoRedirect,
            REASON_OTHER_PORT => Self::OtherPort,
            other => Self::Other(other),
        }
    }
}

/// A process as the kernel recorded it at a connect or an event (the one decoding of a
/// `ConnRecord`; attribution starts from it too). For a process found by scanning `/proc`
/// rather than by an event, `cookie` and `exec_token` are 0 and `time` is when it was read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Caller {
    pub tgid: u32,
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub comm: String,
    /// The socket's cookie (0 for an exec event or a scanned process).
    pub cookie: u64,
    /// Wall-clock time of the event.
    pub time: SystemTime,
    /// For an exec event, the token of the pending entry the exec left in the kernel
    /// (`fhirwall_common::exec_token`).
    pub exec_token: u32,
}

impl Caller {
    #[must_use]
    pub fn from_record(record: &ConnRecord) -> Self {
        Self {
            tgid: record.tgid,
            pid: record.pid,
            uid: record.uid,
            gid: record.gid,
            cgroup_id: record.cgroup_id,
            comm: comm(&record.comm),
            cookie: record.cookie,
            time: wall_time(record.time_ns),
            exec_token: fhirwall_common::exec_token(record.time_ns),
        }
    }
}

/// One event from the kernel programs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum KernelEvent {
    Refused {
        caller: Caller,
        destination: SocketAddr,
        refusal: Refusal,
    },
    /// The connection table was full at ESTABLISHED: the sidecar will refuse the connection.
    ConnsFull {
        caller: Caller,
        destination: SocketAddr,
    },
    /// A process image changed (`execve`).
    Exec { caller: Caller },
    /// An event this agent cannot decode (size or kind unknown).
    Unknown { kind: u32 },
}

impl KernelEvent {
    #[must_use]
    pub fn parse(bytes: &[u8]) -> Self {
        if bytes.len() < size_of::<Event>() {
            return Self::Unknown { kind: 0 };
        }
        // SAFETY: length checked; `Event` is plain old data and read unaligned.
        let event: Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let caller = Caller::from_record(&event.record);
        let destination =
            SocketAddr::new(from_addr(&event.record.orig_addr), event.record.orig_port);
        match event.kind {
            EVENT_REFUSED => Self::Refused {
                caller,
                destination,
                refusal: Refusal::from_reason(event.reason),
            },
            EVENT_CONNS_FULL => Self::ConnsFull {
                caller,
                destination,
            },
            EVENT_EXEC => Self::Exec { caller },
            kind => Self::Unknown { kind },
        }
    }
}

/// Reads events as the kernel produces them.
pub struct EventReader {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl EventReader {
    /// Registers the ring buffer with the tokio reactor; call inside a runtime.
    pub(super) fn new(ring: RingBuf<MapData>) -> io::Result<Self> {
        // SAFETY: the ring buffer owns its map fd for as long as it lives, and `as_raw_fd`
        // always returns that same fd; the AsyncFd owns the ring buffer.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Self { ring })
    }

    /// Waits for events and appends every one available to `out`.
    pub async fn next_batch(&mut self, out: &mut Vec<KernelEvent>) -> io::Result<()> {
        loop {
            let mut guard = self.ring.readable_mut().await?;
            let ring = guard.get_inner_mut();
            let before = out.len();
            while let Some(item) = ring.next() {
                out.push(KernelEvent::parse(&item));
            }
            guard.clear_ready();
            if out.len() > before {
                return Ok(());
            }
        }
    }

    /// Takes what is available now without waiting.
    pub fn drain(&mut self, out: &mut Vec<KernelEvent>) {
        let ring = self.ring.get_mut();
        while let Some(item) = ring.next() {
            out.push(KernelEvent::parse(&item));
        }
    }
}

/// The task name without its NUL padding.
#[must_use]
pub fn comm(raw: &[u8; 16]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// Converts a `bpf_ktime_get_ns` timestamp (CLOCK_MONOTONIC) to wall-clock time.
#[must_use]
pub fn wall_time(monotonic_ns: u64) -> SystemTime {
    let now_mono = super::load::monotonic_ns();
    let age = Duration::from_nanos(now_mono.saturating_sub(monotonic_ns));
    SystemTime::now()
        .checked_sub(age)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_refusal_event() {
        let mut record: ConnRecord = unsafe { std::mem::zeroed() };
        record.tgid = 42;
        record.orig_addr = super::super::addr::to_addr("10.0.0.9".parse().expect("literal"));
        record.orig_port = 443;
        record.comm[..4].copy_from_slice(b"curl");
        let event = Event {
            kind: EVENT_REFUSED,
            reason: REASON_DENIED,
            record,
        };
        // SAFETY: Event is plain old data.
        let bytes = unsafe {
            std::slice::from_raw_parts(std::ptr::from_ref(&event).cast::<u8>(), size_of::<Event>())
        };
        match KernelEvent::parse(bytes) {
            KernelEvent::Refused {
                caller,
                destination,
                refusal,
            } => {
                assert_eq!(caller.tgid, 42);
                assert_eq!(caller.comm, "curl");
                assert_eq!(destination, "10.0.0.9:443".parse().expect("literal"));
                assert_eq!(refusal, Refusal::Denied);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            KernelEvent::parse(&bytes[..10]),
            KernelEvent::Unknown { kind: 0 }
        );
    }
}
