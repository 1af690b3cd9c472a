//! The agent's own upstream sockets.

use std::{io, net::SocketAddr};

use socket2::{Domain, Socket, Type};
use tokio::net::TcpSocket;

/// A non-blocking TCP socket carrying `SO_MARK = mark`: with the agent's cgroup, the mark is
/// how the kernel programs recognise the agent's own connects and let them through instead of
/// redirecting them back to the sidecar.
pub fn marked_socket(destination: SocketAddr, mark: u32) -> io::Result<TcpSocket> {
    let domain = if destination.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::STREAM.nonblocking().cloexec(), None)?;
    socket.set_mark(mark)?;
    socket.set_tcp_nodelay(true)?;
    Ok(TcpSocket::from_std_stream(socket.into()))
}
