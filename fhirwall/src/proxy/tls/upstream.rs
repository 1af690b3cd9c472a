//! The sidecar's own connections to upstream FHIR servers, for the HTTP engine's
//! [`Pool`](fhirwall_http::Pool): TCP from a socket carrying the agent's mark, then TLS with
//! the upstream's name verified against its CA file or the system roots, and the integration's
//! client certificate when it has one.
//!
//! One `ClientConfig` per (upstream, integration), built on first use and cached: building one
//! parses certificates and keys, and each holds its own session-resumption store. Sharing a
//! store between integrations would be wrong, not just untidy: a TLS 1.3 resumption skips client
//! authentication (RFC 8446 2.2), so a session opened with one integration's client certificate
//! must never be resumed for another.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock, PoisonError, RwLock},
    time::Duration,
};

use fhirwall_http::Connector;
use fhirwall_policy::TlsMode;
use rustls::{
    ClientConfig, RootCertStore, client::WebPkiServerVerifier, crypto::CryptoProvider,
    pki_types::ServerName,
};
use tokio::{net::TcpStream, time::timeout};
use tokio_rustls::TlsConnector;

use super::{ALPN_HTTP11, TlsError, UpstreamStream, files, stream::MaybeTls};
use crate::proxy::socket::marked_socket;

/// Identifies a pool of upstream connections: one per (upstream, integration), so an upstream
/// sees each integration on its own connections (and its own client certificate).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UpstreamKey {
    pub upstream: Arc<str>,
    pub integration: Option<Arc<str>>,
}

impl UpstreamKey {
    #[must_use]
    pub fn new(upstream: &str, integration: Option<&str>) -> Self {
        Self {
            upstream: upstream.into(),
            integration: integration.map(Into::into),
        }
    }
}

/// A protected upstream as the connector needs it: addresses already resolved.
#[derive(Clone, Debug)]
pub struct UpstreamSpec {
    pub name: String,
    /// Tried in order; the first that accepts the TCP connection is used.
    pub addresses: Vec<SocketAddr>,
    pub mode: TlsMode,
    /// Verified in the upstream's certificate and sent as SNI: a DNS name or an IP address.
    pub server_name: String,
    /// PEM bundle of the CAs to trust for this upstream; the system roots when `None`.
    pub ca_file: Option<PathBuf>,
}

/// An integration's mTLS client certificate (PEM chain, leaf first) and key (PEM, mode 0600).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIdentity {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Everything the connector knows about upstreams; replaced whole on policy reload.
#[derive(Clone, Debug, Default)]
pub struct UpstreamTable {
    pub upstreams: HashMap<String, UpstreamSpec>,
    /// Client identity per integration name, presented to every upstream it calls.
    pub identities: HashMap<String, ClientIdentity>,
}

/// Socket and timing settings.
#[derive(Clone, Copy, Debug)]
pub struct ConnectorConfig {
    /// `SO_MARK` of every upstream socket: the kernel lets the agent's marked sockets through
    /// instead of redirecting them back to the sidecar.
    pub mark: u32,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
}

/// A table and the configs built from it; a new table starts with empty caches, since the files
/// behind them may have changed too.
struct State {
    table: UpstreamTable,
    configs: Mutex<HashMap<UpstreamKey, Arc<ClientConfig>>>,
    verifiers: Mutex<HashMap<Option<PathBuf>, Arc<WebPkiServerVerifier>>>,
    system_roots: OnceLock<Option<Arc<RootCertStore>>>,
}

/// Opens verified TLS (or configured plain) connections to upstreams.
pub struct UpstreamConnector {
    config: ConnectorConfig,
    provider: Arc<CryptoProvider>,
    state: RwLock<Arc<State>>,
}

impl UpstreamConnector {
    #[must_use]
    pub fn new(
        config: ConnectorConfig,
        provider: Arc<CryptoProvider>,
        table: UpstreamTable,
    ) -> Self {
        Self {
            config,
            provider,
            state: RwLock::new(Arc::new(State::new(table))),
        }
    }

    /// Replaces the upstreams (policy reload). Connections being opened finish with the old
    /// table; pooled ones stay until the pool retires them.
    pub fn replace_table(&self, table: UpstreamTable) {
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(State::new(table));
    }

    /// A connection for `key` to the first of its upstream's addresses that accepts.
    pub async fn connect_upstream(&self, key: &UpstreamKey) -> Result<UpstreamStream, TlsError> {
        let state = self.state();
        let spec = state.spec(key)?;
        let mut last = TlsError::NoAddress {
            upstream: spec.name.clone(),
        };
        for &address in &spec.addresses {
            match self.connect_at(&state, key, spec, address).await {
                Ok(stream) => return Ok(stream),
                Err(e @ (TlsError::UpstreamConnect { .. } | TlsError::UpstreamTimeout { .. })) => {
                    last = e;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// A connection for `key` to `address` (e.g. the original destination the application
    /// asked for).
    pub async fn connect_to(
        &self,
        key: &UpstreamKey,
        address: SocketAddr,
    ) -> Result<UpstreamStream, TlsError> {
        let state = self.state();
        let spec = state.spec(key)?;
        self.connect_at(&state, key, spec, address).await
    }

    fn state(&self) -> Arc<State> {
        Arc::clone(&self.state.read().unwrap_or_else(PoisonError::into_inner))
    }

    async fn connect_at(
        &self,
        state: &State,
        key: &UpstreamKey,
        spec: &UpstreamSpec,
        address: SocketAddr,
    ) -> Result<UpstreamStream, TlsError> {
        if spec.mode == TlsMode::Plain {
            return Ok(MaybeTls::Plain(self.tcp(spec, address).await?));
        }
        // Configuration problems surface before any packet is sent.
        let config = state.client_config(key, spec, &self.provider)?;
        let server_name = ServerName::try_from(spec.server_name.clone()).map_err(|_| {
            TlsError::BadServerName {
                name: spec.server_name.clone(),
            }
        })?;
        let tcp = self.tcp(spec, address).await?;
        let handshake = TlsConnector::from(config).connect(server_name, tcp);
        let tls = timeout(self.config.handshake_timeout, handshake)
            .await
            .map_err(|_| TlsError::UpstreamTimeout {
                upstream: spec.name.clone(),
                address,
                stage: "TLS handshake",
                after: self.config.handshake_timeout,
            })?
            .map_err(|e| upstream_handshake_error(&spec.name, e))?;
        Ok(MaybeTls::Tls(Box::new(tls)))
    }

    /// TCP from a marked socket, within the connect timeout.
    async fn tcp(&self, spec: &UpstreamSpec, address: SocketAddr) -> Result<TcpStream, TlsError> {
        let failed = |source| TlsError::UpstreamConnect {
            upstream: spec.name.clone(),
            address,
            source,
        };
        let socket = marked_socket(address, self.config.mark).map_err(failed)?;
        timeout(self.config.connect_timeout, socket.connect(address))
            .await
            .map_err(|_| TlsError::UpstreamTimeout {
                upstream: spec.name.clone(),
                address,
                stage: "TCP connect",
                after: self.config.connect_timeout,
            })?
            .map_err(failed)
    }
}

impl Connector for UpstreamConnector {
    type Key = UpstreamKey;
    type Stream = UpstreamStream;

    async fn connect(&self, key: &UpstreamKey) -> io::Result<UpstreamStream> {
        self.connect_upstream(key).await.map_err(TlsError::into_io)
    }
}

impl State {
    fn new(table: UpstreamTable) -> Self {
        Self {
            table,
            configs: Mutex::default(),
            verifiers: Mutex::default(),
            system_roots: OnceLock::new(),
        }
    }

    fn spec(&self, key: &UpstreamKey) -> Result<&UpstreamSpec, TlsError> {
        self.table
            .upstreams
            .get(&*key.upstream)
            .ok_or_else(|| TlsError::UnknownUpstream {
                upstream: key.upstream.to_string(),
            })
    }

    /// The cached config for `key`, built on first use. Caches hold whole values, so a poisoned
    /// lock is used as is.
    fn client_config(
        &self,
        key: &UpstreamKey,
        spec: &UpstreamSpec,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Arc<ClientConfig>, TlsError> {
        let mut configs = self.configs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(config) = configs.get(key) {
            return Ok(Arc::clone(config));
        }
        let verifier = self.verifier(spec, provider)?;
        let identity = key
            .integration
            .as_deref()
            .and_then(|i| self.table.identities.get(i));
        let config = Arc::new(build_client_config(verifier, identity, provider)?);
        configs.insert(key.clone(), Arc::clone(&config));
        Ok(config)
    }

    /// One verifier (and root store) per CA source, shared by all integrations of an upstream.
    fn verifier(
        &self,
        spec: &UpstreamSpec,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
        let mut verifiers = self
            .verifiers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = verifiers.get(&spec.ca_file) {
            return Ok(Arc::clone(v));
        }
        let roots = match &spec.ca_file {
            Some(path) => Arc::new(roots_from_file(path)?),
            None => self.system_roots()?,
        };
        let verifier = WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(provider))
            .build()
            .map_err(|_| match &spec.ca_file {
                Some(path) => TlsError::BadPem {
                    path: path.clone(),
                    reason: "no usable CA certificate",
                },
                None => TlsError::NoSystemRoots,
            })?;
        verifiers.insert(spec.ca_file.clone(), Arc::clone(&verifier));
        Ok(verifier)
    }

    /// The system trust store, read once per table (it rarely changes and is slow to read).
    fn system_roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        self.system_roots
            .get_or_init(|| {
                let mut roots = RootCertStore::empty();
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                (added > 0).then(|| Arc::new(roots))
            })
            .clone()
            .ok_or(TlsError::NoSystemRoots)
    }
}

fn build_client_config(
    verifier: Arc<WebPkiServerVerifier>,
    identity: Option<&ClientIdentity>,
    provider: &Arc<CryptoProvider>,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(Arc::clone(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|source| TlsError::Rustls {
            what: "the TLS versions",
            source,
        })?
        .with_webpki_verifier(verifier);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => {
            let chain = files::read_certificates(&id.cert_file)?;
            let key = files::read_private_key(&id.key_file)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|source| TlsError::Rustls {
                    what: "the client certificate and key",
                    source,
                })?
        }
    };
    // Resumption stays on (rustls' default in-memory store): a pooled upstream reconnect then
    // costs one round trip and no certificate verification.
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(config)
}

fn roots_from_file(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(files::read_certificates(path)?);
    if added == 0 {
        return Err(TlsError::BadPem {
            path: path.to_owned(),
            reason: "no usable CA certificate",
        });
    }
    Ok(roots)
}

/// Tells a certificate the upstream should not be trusted with from other handshake failures.
fn upstream_handshake_error(upstream: &str, source: io::Error) -> TlsError {
    let certificate = source
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .filter(|e| matches!(e, rustls::Error::InvalidCertificate(_)))
        .cloned();
    match certificate {
        Some(source) => TlsError::UpstreamCertificate {
            upstream: upstream.to_owned(),
            source,
        },
        None => TlsError::UpstreamHandshake {
            upstream: upstream.to_owned(),
            source,
        },
    }
}
