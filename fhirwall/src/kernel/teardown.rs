//! Tearing down connections that were open to protected destinations before the agent started:
//! they never went through the sidecar, so they are reset and their applications reconnect
//! through it. Uses `SOCK_DESTROY` over netlink sock_diag (`CONFIG_INET_DIAG_DESTROY`).
//!
//! Wire formats: include/uapi/linux/inet_diag.h and sock_diag.h.

use std::{
    collections::BTreeSet,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use super::KernelError;

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const INET_DIAG_MARK: u16 = 15;
const INET_DIAG_CGROUP_ID: u16 = 21;
const NLMSG_HDR: usize = 16;
// The address families and protocol as the one-byte fields of inet_diag_req_v2 carry them.
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_TCP: u8 = 6;
const REQ_LEN: usize = 56;
const MSG_LEN: usize = 72;
/// nlmsghdr + inet_diag_req_v2, as the u32 length field of the header.
const REQUEST_LEN: u32 = 16 + 56;
/// Every TCP state but LISTEN (10), TIME_WAIT (6) and CLOSE (7): connections that carry data.
const STATES: u32 = 0xfff & !(1 << 10) & !(1 << 6) & !(1 << 7);

/// One socket found by the dump.
#[derive(Clone, Debug, PartialEq, Eq)]
struct DiagSocket {
    family: u8,
    /// `inet_diag_sockid` as received (48 bytes), sent back verbatim to name the socket.
    id: [u8; 48],
    dst: SocketAddr,
    mark: Option<u32>,
    cgroup: Option<u64>,
}

/// Resets every TCP connection to one of `destinations`, except the agent's own (identified by
/// `agent_mark` and `agent_cgroup`, as in the kernel programs). Returns how many were reset.
pub fn destroy_connections_to(
    destinations: &BTreeSet<SocketAddr>,
    agent_mark: u32,
    agent_cgroup: u64,
) -> Result<usize, KernelError> {
    let err = |source| KernelError::SockDiag { source };
    let fd = open_sock_diag().map_err(err)?;
    let mut destroyed = 0;
    for family in [AF_INET, AF_INET6] {
        for socket in dump(&fd, family).map_err(err)? {
            let is_agent = socket.mark == Some(agent_mark) && socket.cgroup == Some(agent_cgroup);
            if destinations.contains(&socket.dst) && !is_agent {
                destroy(&fd, &socket).map_err(err)?;
                destroyed += 1;
            }
        }
    }
    Ok(destroyed)
}

fn open_sock_diag() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked before it is wrapped.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn request(kind: u16, flags: u16, family: u8, id: &[u8; 48]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(NLMSG_HDR + REQ_LEN);
    msg.extend_from_slice(&REQUEST_LEN.to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
    msg.extend_from_slice(&[family, IPPROTO_TCP, 0, 0]);
    msg.extend_from_slice(&STATES.to_ne_bytes());
    msg.extend_from_slice(id);
    msg
}

fn send(fd: &OwnedFd, msg: &[u8]) -> io::Result<()> {
    // SAFETY: sends `msg.len()` bytes from a live buffer on a netlink socket; the kernel is the
    // default destination of an unbound/unconnected netlink socket.
    let sent = unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: receives into a live, writable buffer of `buf.len()` bytes.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

fn dump(fd: &OwnedFd, family: u8) -> io::Result<Vec<DiagSocket>> {
    send(
        fd,
        &request(
            SOCK_DIAG_BY_FAMILY,
            NLM_F_REQUEST | NLM_F_DUMP,
            family,
            &[0; 48],
        ),
    )?;
    let mut sockets = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = recv(fd, &mut buf)?;
        for (kind, payload) in messages(&buf[..n]) {
            match kind {
                NLMSG_DONE => return Ok(sockets),
                NLMSG_ERROR => return Err(netlink_error(payload)),
                SOCK_DIAG_BY_FAMILY => sockets.extend(parse_socket(payload)),
                _ => {}
            }
        }
    }
}

fn destroy(fd: &OwnedFd, socket: &DiagSocket) -> io::Result<()> {
    send(
        fd,
        &request(
            SOCK_DESTROY,
            NLM_F_REQUEST | NLM_F_ACK,
            socket.family,
            &socket.id,
        ),
    )?;
    let mut buf = [0u8; 4096];
    let n = recv(fd, &mut buf)?;
    for (kind, payload) in messages(&buf[..n]) {
        if kind == NLMSG_ERROR {
            let error = netlink_error(payload);
            // ENOENT: the socket closed on its own meanwhile, which is what we wanted.
            return match error.raw_os_error() {
                Some(0 | libc::ENOENT) => Ok(()),
                _ => Err(error),
            };
        }
    }
    Ok(())
}

/// Splits a netlink datagram into (type, payload) pairs, stopping at anything malformed.
fn messages(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDR {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < NLMSG_HDR || len > buf.len() {
            break;
        }
        out.push((u16::from_ne_bytes([buf[4], buf[5]]), &buf[NLMSG_HDR..len]));
        buf = &buf[align4(len).min(buf.len())..];
    }
    out
}

fn netlink_error(payload: &[u8]) -> io::Error {
    let code = payload
        .get(..4)
        .map_or(libc::EIO, |b| -i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    io::Error::from_raw_os_error(code)
}

fn parse_socket(payload: &[u8]) -> Option<DiagSocket> {
    if payload.len() < MSG_LEN {
        return None;
    }
    let family = payload[0];
    let id: [u8; 48] = payload[4..52].try_into().ok()?;
    let dport = u16::from_be_bytes([id[2], id[3]]);
    let dst_bytes: [u8; 16] = id[20..36].try_into().ok()?;
    let ip = if family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(
            dst_bytes[0],
            dst_bytes[1],
            dst_bytes[2],
            dst_bytes[3],
        ))
    } else {
        let v6 = Ipv6Addr::from(dst_bytes);
        v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
    };
    let (mut mark, mut cgroup) = (None, None);
    for (kind, value) in attributes(&payload[MSG_LEN..]) {
        match (kind, value.len()) {
            (INET_DIAG_MARK, 4) => mark = value.try_into().ok().map(u32::from_ne_bytes),
            (INET_DIAG_CGROUP_ID, 8) => cgroup = value.try_into().ok().map(u64::from_ne_bytes),
            _ => {}
        }
    }
    Some(DiagSocket {
        family,
        id,
        dst: SocketAddr::new(ip, dport),
        mark,
        cgroup,
    })
}

/// Netlink attributes: (type, value) pairs, 4-byte aligned.
fn attributes(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff, &buf[4..len]));
        buf = &buf[align4(len).min(buf.len())..];
    }
    out
}

const fn align4(len: usize) -> usize {
    (len + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diag_message(family: u8, dst: [u8; 16], dport: u16, mark: u32) -> Vec<u8> {
        let mut payload = vec![family, 1, 0, 0];
        let mut id = [0u8; 48];
        id[2..4].copy_from_slice(&dport.to_be_bytes());
        id[20..36].copy_from_slice(&dst);
        payload.extend_from_slice(&id);
        payload.extend_from_slice(&[0u8; 20]);
        payload.extend_from_slice(&8u16.to_ne_bytes());
        payload.extend_from_slice(&INET_DIAG_MARK.to_ne_bytes());
        payload.extend_from_slice(&mark.to_ne_bytes());
        let len = u32::try_from(NLMSG_HDR + payload.len()).expect("small test message");
        let mut msg = len.to_ne_bytes().to_vec();
        msg.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        msg.extend_from_slice(&[0u8; 10]);
        msg.extend_from_slice(&payload);
        msg
    }

    #[test]
    fn parses_a_dump_message_with_its_mark() {
        let mut dst = [0u8; 16];
        dst[..4].copy_from_slice(&[10, 0, 0, 7]);
        let msg = diag_message(AF_INET, dst, 8443, 0xf1);
        let parsed = messages(&msg);
        assert_eq!(parsed.len(), 1);
        let socket = parse_socket(parsed[0].1).expect("well-formed message");
        assert_eq!(socket.dst, "10.0.0.7:8443".parse().expect("literal"));
        assert_eq!(socket.mark, Some(0xf1));
        assert_eq!(socket.cgroup, None);
    }

    #[test]
    fn stops_at_truncated_messages() {
        let msg = diag_message(AF_INET6, [0; 16], 1, 0);
        assert!(messages(&msg[..msg.len() - 1]).is_empty());
        assert!(parse_socket(&[0u8; 10]).is_none());
        assert!(attributes(&[200, 0, 1, 0]).is_empty());
    }

    #[test]
    fn request_has_the_kernel_layout() {
        let req = request(SOCK_DESTROY, NLM_F_REQUEST | NLM_F_ACK, 2, &[7; 48]);
        assert_eq!(req.len(), 72);
        assert_eq!(&req[4..6], &SOCK_DESTROY.to_ne_bytes());
        assert_eq!(req[16], 2);
        assert_eq!(req[17], 6);
        assert_eq!(&req[24..72], &[7; 48]);
    }
}
