//! Accepting connections: attribution first (no kernel record, no service), then TLS
//! termination or plain HTTP, then the HTTP engine with one [`ConnectionHandler`] per connection.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use fhirwall_http::{Limits, Pool, serve_connection};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tracing::{debug, warn};

use super::{
    live::LiveConnections,
    sidecar::{ConnectionHandler, Shared},
    tls::{LeafName, TlsTerminator, UpstreamConnector},
};
use crate::{attribution::Attributor, metrics::Metrics};

/// Which upstream a connection is for, from where the application was connecting.
#[derive(Clone, Debug, Default)]
pub struct Routes {
    /// Resolved upstream addresses.
    pub by_destination: HashMap<SocketAddr, Arc<str>>,
    /// The upstream's certificate name, also certified (next to the address the client
    /// connected to) for a client that sends no SNI.
    pub leaf_names: HashMap<Arc<str>, LeafName>,
    /// The upstream of the explicit listener (applications that talk plain HTTP to the sidecar).
    pub explicit: Option<(SocketAddr, Arc<str>)>,
    /// The egress proxies, and what a tunnel through them must not reach.
    pub egress: super::egress::Guard,
}

impl Routes {
    fn upstream_for(&self, destination: SocketAddr) -> Option<&Arc<str>> {
        match &self.explicit {
            Some((listener, upstream)) if *listener == destination => Some(upstream),
            _ => self.by_destination.get(&destination),
        }
    }
}

/// Everything the accept loop needs; one per agent.
pub struct Listener {
    pub attributor: Attributor,
    pub exchange: Arc<Shared>,
    pub terminator: TlsTerminator,
    pub pool: Pool<UpstreamConnector>,
    pub routes: watch::Receiver<Arc<Routes>>,
    pub live: Arc<LiveConnections>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// `SO_MARK` of the agent's own sockets (tunnels to egress proxies).
    pub agent_mark: u32,
    /// The next connection id; start it at [`first_connection_id`].
    pub next_id: AtomicU64,
}

/// Where this run's connection ids start: 32 random bits above a counter from 1.
///
/// Connection ids prefix every correlation id (`X-Request-Id` upstream, the audit record), and
/// the audit store outlives the process: ids that restarted at 1 after every restart (or crash)
/// would name several requests, so an upstream's log could no longer be matched to the one
/// record of each request.
#[must_use]
pub fn first_connection_id() -> u64 {
    use ring::rand::{SecureRandom as _, SystemRandom};
    let mut run = [0u8; 4];
    if SystemRandom::new().fill(&mut run).is_err() {
        // getrandom does not fail on Linux once booted; the clock still tells runs apart.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| {
                d.subsec_nanos() ^ u32::try_from(d.as_secs() & 0xffff_ffff).unwrap_or(0)
            });
        run = nanos.to_be_bytes();
    }
    (u64::from(u32::from_be_bytes(run)) << 32) | 1
}

impl Listener {
    /// Accepts until `shutdown` turns true; connections already accepted finish their requests.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let sidecar = Arc::clone(&self);
                        let shutdown = shutdown.clone();
                        tokio::spawn(async move { sidecar.connection(stream, shutdown).await });
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

    async fn connection(&self, tcp: TcpStream, mut shutdown: watch::Receiver<bool>) {
        let (Ok(peer), Ok(local)) = (tcp.peer_addr(), tcp.local_addr()) else {
            return;
        };
        let attribution = match self.attributor.attribute(peer, local).await {
            Ok(a) => a,
            Err(e) => return self.refuse("unattributed", &e),
        };
        let routes = Arc::clone(&self.routes.borrow());
        if routes.egress.proxies.contains(&attribution.destination) {
            return self.tunnel(tcp, &routes, attribution).await;
        }
        let Some(upstream) = routes.upstream_for(attribution.destination).cloned() else {
            return self.refuse(
                "unknown-destination",
                &"the destination is not a protected upstream",
            );
        };
        let workload = attribution.workload;
        let mut exchange = ConnectionHandler::new(
            Arc::clone(&self.exchange),
            Arc::clone(&workload),
            peer,
            Arc::clone(&upstream),
        );
        // Listed from attribution on, handshake included: an idle client is still a live one.
        let integration = exchange.integration_name();
        let _live = self
            .live
            .register((*workload).clone(), integration, attribution.destination);
        let fallback = LeafName::without_sni(
            attribution.destination.ip(),
            routes.leaf_names.get(&upstream),
        );
        let downstream = match self.terminator.accept_detect(tcp, &fallback).await {
            Ok(d) => d,
            Err(e) => return self.refuse(e.error_source().as_str(), &e),
        };
        self.metrics
            .connections
            .with_label_values(&["attributed"])
            .inc();
        self.metrics.connections_live.inc();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stop = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        let summary = serve_connection(
            downstream,
            &mut exchange,
            &self.pool,
            &self.limits,
            id,
            stop,
        )
        .await;
        self.metrics.connections_live.dec();
        debug!(connection = id, requests = summary.requests, end = ?summary.end, "connection closed");
    }

    /// A connection to an egress proxy: only `CONNECT` tunnels to unprotected destinations go on.
    async fn tunnel(
        &self,
        tcp: TcpStream,
        routes: &Routes,
        attribution: crate::attribution::Attribution,
    ) {
        let _live = self.live.register(
            (*attribution.workload).clone(),
            None,
            attribution.destination,
        );
        let tunnel = super::egress::Tunnel {
            routes,
            audit: &self.exchange.audit,
            metrics: &self.metrics,
            node: &self.exchange.node,
            mark: self.agent_mark,
            header_timeout: self.limits.header_timeout,
            connect_timeout: self.limits.connect_timeout,
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        tunnel
            .serve(tcp, attribution.destination, &attribution.workload, id)
            .await;
    }

    /// Closes a connection before any HTTP: fail closed, counted and logged (no PHI here).
    fn refuse(&self, reason: &str, error: &dyn std::fmt::Display) {
        self.metrics
            .connections_refused
            .with_label_values(&[reason])
            .inc();
        warn!(reason, error = %error, "connection refused by the sidecar");
    }
}

#[cfg(test)]
mod tests {
    use super::first_connection_id;

    #[test]
    fn connection_ids_differ_between_runs() {
        let runs: std::collections::BTreeSet<u64> =
            (0..16).map(|_| first_connection_id()).collect();
        // 16 draws of 32 random bits: a repeat has odds of about 3e-8.
        assert_eq!(runs.len(), 16, "{runs:x?}");
        assert!(runs.iter().all(|id| id & 0xffff_ffff == 1), "{runs:x?}");
    }
}
