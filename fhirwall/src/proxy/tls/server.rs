//! TLS termination for the application's side: detect TLS by its first byte, read the
//! ClientHello, answer with a leaf for its SNI (or the listener's fallback name), speak only
//! `http/1.1`, and do all of it within one handshake deadline.

use std::{
    num::NonZeroUsize,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use lru::LruCache;
use rustls::{
    ServerConfig,
    crypto::CryptoProvider,
    server::{Acceptor, ProducesTickets, ServerSessionMemoryCache, StoresServerSessions},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    time::{Instant, timeout_at},
};
use tokio_rustls::{LazyConfigAcceptor, server::TlsStream};

use super::{Downstream, LeafCache, LeafName, SniResolver, TlsError, stream::MaybeTls};

/// The only application protocol the HTTP engine speaks (RFC 7301 registry name).
pub const ALPN_HTTP11: &[u8] = b"http/1.1";
/// First byte of a TLS record carrying a handshake message (RFC 8446 5.1, `ContentType
/// handshake(22)`); no HTTP/1.1 request line starts with it.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// How the terminator behaves.
#[derive(Clone, Copy, Debug)]
pub struct TerminatorConfig {
    /// From accept to the end of the handshake, first byte included: a client that sends
    /// nothing, or dribbles its ClientHello, is cut here.
    pub handshake_timeout: Duration,
    /// TLS 1.2 sessions remembered for resumption by session id (TLS 1.3 and ticket-capable 1.2
    /// clients resume with stateless tickets).
    pub session_cache: usize,
    /// Largest TLS record payload sent; `None` for the protocol maximum (16 KiB). Smaller records
    /// let a client start on a response earlier at some throughput cost.
    pub max_fragment_size: Option<usize>,
}

impl Default for TerminatorConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            session_cache: 1024,
            max_fragment_size: None,
        }
    }
}

/// What the first byte of a connection says it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Tls,
    Plain,
}

/// Fallback names kept with a config of their own: one per protected upstream in practice.
const FALLBACK_CONFIGS: NonZeroUsize = NonZeroUsize::MIN.saturating_add(255);

/// Terminates the application's TLS with leaves from a [`LeafCache`].
///
/// Clients sending SNI share one `ServerConfig` whose resolver picks the leaf by SNI. A client
/// without SNI (connecting by IP) gets a config whose resolver answers with the listener's
/// fallback name; those configs are kept per name. All of them share one session cache and one
/// ticketer, so resumption works whichever config a client lands on.
pub struct TlsTerminator {
    shared: Shared,
    handshake_timeout: Duration,
    sni: Arc<ServerConfig>,
    fallbacks: Mutex<LruCache<LeafName, Arc<ServerConfig>>>,
}

/// What every `ServerConfig` of a terminator shares.
struct Shared {
    leaves: Arc<LeafCache>,
    provider: Arc<CryptoProvider>,
    sessions: Arc<dyn StoresServerSessions>,
    ticketer: Arc<dyn ProducesTickets>,
    max_fragment_size: Option<usize>,
}

impl TlsTerminator {
    /// A terminator minting from `leaves`, with the `provider` (ring) the leaves were loaded for.
    pub fn new(
        leaves: Arc<LeafCache>,
        provider: Arc<CryptoProvider>,
        config: TerminatorConfig,
    ) -> Result<Self, TlsError> {
        let ticketer =
            rustls::crypto::ring::Ticketer::new().map_err(|source| TlsError::Rustls {
                what: "a session ticketer",
                source,
            })?;
        let shared = Shared {
            leaves,
            provider,
            sessions: ServerSessionMemoryCache::new(config.session_cache),
            ticketer,
            max_fragment_size: config.max_fragment_size,
        };
        Ok(Self {
            sni: shared.server_config(None)?,
            shared,
            handshake_timeout: config.handshake_timeout,
            fallbacks: Mutex::new(LruCache::new(FALLBACK_CONFIGS)),
        })
    }

    /// The leaves this terminator answers with.
    #[must_use]
    pub fn leaves(&self) -> &Arc<LeafCache> {
        &self.shared.leaves
    }

    /// Terminates TLS on `stream` (whose first bytes are a ClientHello), answering a client
    /// without SNI with a leaf for `fallback`.
    pub async fn accept<S>(&self, stream: S, fallback: &LeafName) -> Result<TlsStream<S>, TlsError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let deadline = Instant::now() + self.handshake_timeout;
        self.accept_until(stream, fallback, deadline).await
    }

    /// Peeks at the first byte of an accepted connection and terminates TLS if it is a TLS
    /// handshake record; anything else is handed back as plain TCP, untouched. A client that
    /// sends nothing is cut at the handshake timeout.
    pub async fn accept_detect(
        &self,
        stream: TcpStream,
        fallback: &LeafName,
    ) -> Result<Downstream, TlsError> {
        let deadline = Instant::now() + self.handshake_timeout;
        let protocol = timeout_at(deadline, detect(&stream))
            .await
            .map_err(|_| self.timed_out())??;
        match protocol {
            Protocol::Plain => Ok(MaybeTls::Plain(stream)),
            Protocol::Tls => {
                let tls = self.accept_until(stream, fallback, deadline).await?;
                Ok(MaybeTls::Tls(Box::new(tls)))
            }
        }
    }

    async fn accept_until<S>(
        &self,
        stream: S,
        fallback: &LeafName,
        deadline: Instant,
    ) -> Result<TlsStream<S>, TlsError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let start = timeout_at(
            deadline,
            LazyConfigAcceptor::new(Acceptor::default(), stream),
        )
        .await
        .map_err(|_| self.timed_out())?
        .map_err(handshake_error)?;
        let config = match start.client_hello().server_name() {
            Some(_) => Arc::clone(&self.sni),
            None => self.fallback_config(fallback)?,
        };
        timeout_at(deadline, start.into_stream(config))
            .await
            .map_err(|_| self.timed_out())?
            .map_err(handshake_error)
    }

    fn timed_out(&self) -> TlsError {
        TlsError::HandshakeTimeout {
            after: self.handshake_timeout,
        }
    }

    fn fallback_config(&self, name: &LeafName) -> Result<Arc<ServerConfig>, TlsError> {
        let mut configs = self
            .fallbacks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(config) = configs.get(name) {
            return Ok(Arc::clone(config));
        }
        // Building a config is a few allocations, no crypto: fine under the lock.
        let config = self.shared.server_config(Some(name.clone()))?;
        configs.put(name.clone(), Arc::clone(&config));
        Ok(config)
    }
}

impl Shared {
    fn server_config(&self, fallback: Option<LeafName>) -> Result<Arc<ServerConfig>, TlsError> {
        let resolver = SniResolver::new(Arc::clone(&self.leaves), fallback);
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|source| TlsError::Rustls {
                what: "the TLS versions",
                source,
            })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
        config.session_storage = Arc::clone(&self.sessions);
        config.ticketer = Arc::clone(&self.ticketer);
        config.max_fragment_size = self.max_fragment_size;
        Ok(Arc::new(config))
    }
}

/// Peeks at the first byte without consuming it.
pub async fn detect(stream: &TcpStream) -> Result<Protocol, TlsError> {
    let mut first = [0u8; 1];
    let n = stream
        .peek(&mut first)
        .await
        .map_err(|source| TlsError::DownstreamHandshake { source })?;
    match (n, first[0]) {
        (0, _) => Err(TlsError::ClosedBeforeData),
        (_, TLS_HANDSHAKE_RECORD) => Ok(Protocol::Tls),
        _ => Ok(Protocol::Plain),
    }
}

fn handshake_error(source: std::io::Error) -> TlsError {
    let no_alpn = source
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::NoApplicationProtocol));
    if no_alpn {
        TlsError::NoCommonProtocol
    } else {
        TlsError::DownstreamHandshake { source }
    }
}
