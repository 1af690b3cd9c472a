//! The sidecar's transparent listeners, and who the agent is to the kernel.

use std::{
    fs,
    net::{IpAddr, SocketAddr},
};

use socket2::{Domain, Socket, Type};
use tokio::net::TcpListener;

use super::AppError;
use crate::{
    config::SidecarConfig,
    kernel::{CgroupRoot, KernelError, cgroup_id, own_cgroup_path},
};

/// Binds the transparent listener on IPv4 and (when configured) IPv6, same port, and the
/// explicit listener when there is one. Call inside the runtime that will serve them.
pub fn bind(config: &SidecarConfig) -> Result<Vec<TcpListener>, AppError> {
    addresses(config).into_iter().map(listener).collect()
}

/// Every address the sidecar listens on.
fn addresses(config: &SidecarConfig) -> Vec<SocketAddr> {
    let mut addrs = vec![SocketAddr::new(
        IpAddr::V4(config.listen_v4),
        config.transparent_port,
    )];
    if let Some(v6) = config.listen_v6 {
        addrs.push(SocketAddr::new(IpAddr::V6(v6), config.transparent_port));
    }
    if let Some(explicit) = &config.explicit {
        addrs.push(explicit.listen);
    }
    addrs
}

fn listener(addr: SocketAddr) -> Result<TcpListener, AppError> {
    let io = |source| AppError::Io {
        what: "the sidecar listener",
        source,
    };
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::STREAM.nonblocking().cloexec(), None).map_err(io)?;
    if addr.is_ipv6() {
        // IPv4 (and IPv4-mapped) connects go to the IPv4 listener.
        socket.set_only_v6(true).map_err(io)?;
    }
    socket.set_reuse_address(true).map_err(io)?;
    socket.set_tcp_nodelay(true).map_err(io)?;
    socket.bind(&addr.into()).map_err(io)?;
    socket.listen(4096).map_err(io)?;
    TcpListener::from_std(socket.into()).map_err(io)
}

/// The agent's cgroup v2 id, which (with its socket mark) the kernel uses to recognise the
/// agent's own connections.
///
/// `/proc/self/cgroup` is relative to the agent's cgroup namespace while the hierarchy may be
/// mounted from the host (a DaemonSet): the joined path is only trusted when it holds this
/// process. Otherwise the namespace's own view is mounted privately, whose root is exactly the
/// agent's cgroup (kernfs inode numbers, the ids, are the same in every namespace).
pub fn own_cgroup_id(root: &CgroupRoot) -> Result<u64, AppError> {
    let path = own_cgroup_path()?;
    let dir = root.dir(&path);
    let pid = std::process::id().to_string();
    let holds_us = fs::read_to_string(dir.join("cgroup.procs"))
        .is_ok_and(|procs| procs.lines().any(|l| l == pid));
    if holds_us {
        return Ok(cgroup_id(&dir)?);
    }
    let private = std::path::Path::new("/run/fhirwall/cgroup-self");
    let mounted = fs::create_dir_all(private).and_then(|()| {
        nix::mount::mount(
            Some("cgroup2"),
            private,
            Some("cgroup2"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(std::io::Error::from)
    });
    mounted.map_err(|source| KernelError::NoCgroup2 {
        path: private.into(),
        source,
    })?;
    let id = cgroup_id(&private.join(path.trim_start_matches('/')));
    let _ = nix::mount::umount(private);
    Ok(id?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ExplicitListener;

    #[test]
    fn the_explicit_listener_is_bound_next_to_the_transparent_ones() {
        let mut config = SidecarConfig {
            transparent_port: 15001,
            listen_v6: None,
            ..SidecarConfig::default()
        };
        assert_eq!(
            addresses(&config),
            vec![SocketAddr::from(([127, 0, 0, 1], 15001))]
        );
        let explicit = SocketAddr::from(([127, 0, 0, 1], 8088));
        config.explicit = Some(ExplicitListener {
            listen: explicit,
            upstream: "ehr".into(),
        });
        config.listen_v6 = Some(std::net::Ipv6Addr::LOCALHOST);
        assert_eq!(
            addresses(&config),
            vec![
                SocketAddr::from(([127, 0, 0, 1], 15001)),
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 15001)),
                explicit
            ]
        );
    }
}
