//! The L4 relay: until the HTTP sidecar lands, each attributed connection is relayed byte for
//! byte to the destination the application asked for, over the agent's own (marked) socket.
//! Connections the kernel did not record, and workloads no live integration registers, are
//! closed: attribution is the gate, and in doubt the connection does not go through.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use socket2::{Domain, Socket, Type};
use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpSocket, TcpStream},
    sync::watch,
};
use tracing::{info, warn};

use super::live::LiveConnections;
use crate::{attribution::Attributor, metrics::Metrics, policy::Policy};

/// Where relay failures come from, for logs and metrics.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("connection from {peer} could not be attributed")]
    Unattributed {
        peer: SocketAddr,
        #[source]
        source: crate::attribution::AttributionError,
    },
    #[error("workload pid {tgid} matches no live integration")]
    Unregistered { tgid: u32 },
    #[error("upstream {destination} unreachable")]
    Upstream {
        destination: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// What every relayed connection shares.
pub struct Relay {
    pub attributor: Attributor,
    pub policy: watch::Receiver<Arc<Policy>>,
    pub live: Arc<LiveConnections>,
    pub metrics: Arc<Metrics>,
    pub agent_mark: u32,
    pub connect_timeout: Duration,
}

impl Relay {
    /// Accepts until `shutdown` turns true; connections already accepted run to completion.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let relay = Arc::clone(&self);
                        tokio::spawn(async move { relay.handle(stream).await });
                    }
                    // EMFILE and friends: back off rather than spin.
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn handle(&self, stream: TcpStream) {
        if let Err(e) = self.relay(stream).await {
            let kind = match &e {
                RelayError::Unattributed { .. } => "unattributed",
                RelayError::Unregistered { .. } => "unregistered",
                RelayError::Upstream { .. } => "upstream",
            };
            self.metrics.connections.with_label_values(&[kind]).inc();
            warn!(error = %e, "connection refused by the sidecar");
        }
    }

    async fn relay(&self, mut client: TcpStream) -> Result<(), RelayError> {
        let (peer, local) = (addr(client.peer_addr()), addr(client.local_addr()));
        let attribution = self
            .attributor
            .attribute(peer, local)
            .await
            .map_err(|source| RelayError::Unattributed { peer, source })?;
        let workload = &attribution.workload;
        let integration = {
            let policy = self.policy.borrow();
            let now = jiff::Timestamp::now();
            policy
                .integration_for(workload)
                .filter(|i| i.is_live(now))
                .map(|i| i.name.clone())
        };
        let Some(integration) = integration else {
            return Err(RelayError::Unregistered {
                tgid: workload.tgid,
            });
        };
        let destination = attribution.destination;
        let mut upstream = self.connect(destination).await?;
        info!(
            tgid = workload.tgid,
            exe = ?workload.exe,
            unit = ?workload.systemd_unit,
            integration = %integration,
            %destination,
            "relaying"
        );
        self.metrics
            .connections
            .with_label_values(&["attributed"])
            .inc();
        let _guard = self
            .live
            .register((**workload).clone(), Some(integration), destination);
        self.metrics.connections_live.inc();
        let copied = copy_bidirectional(&mut client, &mut upstream).await;
        self.metrics.connections_live.dec();
        if let Ok((up, down)) = copied {
            self.metrics
                .bytes
                .with_label_values(&["upstream"])
                .inc_by(up);
            self.metrics
                .bytes
                .with_label_values(&["downstream"])
                .inc_by(down);
        }
        Ok(())
    }

    /// Connects with the agent's mark, which (with the agent's cgroup) the kernel lets through.
    async fn connect(&self, destination: SocketAddr) -> Result<TcpStream, RelayError> {
        let err = |source| RelayError::Upstream {
            destination,
            source,
        };
        let socket = marked_socket(destination, self.agent_mark).map_err(err)?;
        tokio::time::timeout(self.connect_timeout, socket.connect(destination))
            .await
            .map_err(|_| err(io::Error::from(io::ErrorKind::TimedOut)))?
            .map_err(err)
    }
}

/// A non-blocking TCP socket carrying `SO_MARK = mark`.
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

fn addr(result: io::Result<SocketAddr>) -> SocketAddr {
    // An accepted TCP socket always has both addresses; the unspecified address cannot match a
    // kernel record, so attribution fails closed if this ever happens.
    result.unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}
