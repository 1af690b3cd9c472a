//! The one error type of TLS, the local CA and upstream connections. Each error says where it came
//! from ([`TlsErrorSource`]) so metrics and audit records can label it, as the HTTP engine's
//! [`ErrorSource`](fhirwall_http::ErrorSource) does.
//!
//! Texts name files, upstreams and server names, never request content: they are safe to log.

use std::{io, net::SocketAddr, path::PathBuf, time::Duration};

/// Where a TLS failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsErrorSource {
    /// The application's side: its ClientHello, its handshake, its silence.
    DownstreamHandshake,
    /// The upstream FHIR server: connect, handshake, certificate verification.
    UpstreamHandshake,
    /// Certificates and keys on disk: the local CA, upstream CA bundles, mTLS client identities.
    CaStore,
    /// The proxy itself: a certificate it could not mint or a key rustls would not take.
    Internal,
}

impl TlsErrorSource {
    /// A stable label for metrics and audit records.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DownstreamHandshake => "downstream_handshake",
            Self::UpstreamHandshake => "upstream_handshake",
            Self::CaStore => "ca_store",
            Self::Internal => "internal",
        }
    }
}

/// Everything that can go wrong in TLS termination, the local CA and upstream connections.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading or writing a CA, certificate or key file failed.
    #[error("{path}: {action} failed")]
    File {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    /// `ca init` without `--force` found only part of a CA (a key without its certificate or the
    /// reverse): keeping it would be wrong, replacing it silently too.
    #[error("{dir}: incomplete CA ({missing} is missing); re-create it with --force")]
    CaIncomplete { dir: PathBuf, missing: &'static str },
    /// A private key file that group or others may access (it may already be leaked, and loading
    /// it would hide that), that another user owns, or that is reached through a symlink.
    #[error(transparent)]
    KeyFile(#[from] crate::private_files::PrivateFileError),
    /// A certificate or key file that does not hold what it should.
    #[error("{path}: {reason}")]
    BadPem { path: PathBuf, reason: &'static str },
    /// The stored CA certificate could not be parsed, or does not belong to the stored key.
    #[error("{path}: not a usable CA certificate")]
    BadCa {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    /// The stored CA certificate is not a CA, or its key does not match.
    #[error("{path}: {reason}")]
    CaMismatch { path: PathBuf, reason: &'static str },
    /// A name that can be neither a DNS name nor an IP address in a certificate.
    #[error("`{name}` is not a DNS name or an IP address")]
    BadServerName { name: String },
    /// rcgen could not make a key or certificate.
    #[error("could not generate {what}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    /// rustls refused a key or a configuration this module built.
    #[error("rustls refused {what}")]
    Rustls {
        what: &'static str,
        #[source]
        source: rustls::Error,
    },
    /// The client neither finished its handshake (nor, before it, sent a first byte) in time.
    #[error("client handshake not completed within {after:?}")]
    HandshakeTimeout { after: Duration },
    /// The client closed before sending anything.
    #[error("client closed before sending anything")]
    ClosedBeforeData,
    /// The client offered application protocols, none of them `http/1.1` (e.g. an h2-only
    /// client): the handshake is refused with a `no_application_protocol` alert (RFC 7301 3.2).
    #[error("client offers no application protocol the sidecar speaks (only http/1.1)")]
    NoCommonProtocol,
    /// The client's handshake failed (bad ClientHello, unknown CA on its side, I/O).
    #[error("client TLS handshake failed")]
    DownstreamHandshake {
        #[source]
        source: io::Error,
    },
    /// No upstream of that name is configured.
    #[error("upstream `{upstream}` is not configured")]
    UnknownUpstream { upstream: String },
    /// The upstream has no address to connect to (yet).
    #[error("upstream `{upstream}` has no address")]
    NoAddress { upstream: String },
    /// TCP connect to the upstream failed.
    #[error("connect to upstream `{upstream}` at {address} failed")]
    UpstreamConnect {
        upstream: String,
        address: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// TCP connect or the TLS handshake with the upstream did not finish in time.
    #[error("upstream `{upstream}` at {address}: {stage} not completed within {after:?}")]
    UpstreamTimeout {
        upstream: String,
        address: SocketAddr,
        stage: &'static str,
        after: Duration,
    },
    /// The upstream's certificate is not trusted for its name (wrong CA, wrong name, expired).
    #[error("upstream `{upstream}` presented a certificate that does not verify")]
    UpstreamCertificate {
        upstream: String,
        #[source]
        source: rustls::Error,
    },
    /// The upstream TLS handshake failed otherwise (alert, protocol error, reset).
    #[error("TLS handshake with upstream `{upstream}` failed")]
    UpstreamHandshake {
        upstream: String,
        #[source]
        source: io::Error,
    },
    /// The system trust store has no usable root certificate.
    #[error("no usable root certificate in the system trust store")]
    NoSystemRoots,
    /// Clients asked for more new server names than the sidecar mints leaves for per second
    /// (random SNI values would otherwise keep the data plane busy signing).
    #[error("leaf minting rate exceeded; handshake for a new server name refused")]
    MintRateExceeded,
    /// A client asked for a server name (or reached an address) that no protected upstream has,
    /// or that the node CA's name constraints do not cover: no leaf is minted for it.
    #[error("no protected upstream is named {name}; handshake refused")]
    NotServed { name: super::LeafName },
}

impl TlsError {
    /// Where the error came from, for metric and audit labels.
    #[must_use]
    pub fn error_source(&self) -> TlsErrorSource {
        match self {
            Self::File { .. }
            | Self::CaIncomplete { .. }
            | Self::KeyFile(_)
            | Self::BadPem { .. }
            | Self::BadCa { .. }
            | Self::CaMismatch { .. }
            | Self::NoSystemRoots => TlsErrorSource::CaStore,
            Self::HandshakeTimeout { .. }
            | Self::ClosedBeforeData
            | Self::NoCommonProtocol
            | Self::DownstreamHandshake { .. }
            | Self::MintRateExceeded
            | Self::NotServed { .. } => TlsErrorSource::DownstreamHandshake,
            Self::UnknownUpstream { .. }
            | Self::NoAddress { .. }
            | Self::UpstreamConnect { .. }
            | Self::UpstreamTimeout { .. }
            | Self::UpstreamCertificate { .. }
            | Self::UpstreamHandshake { .. } => TlsErrorSource::UpstreamHandshake,
            Self::BadServerName { .. } | Self::Generate { .. } | Self::Rustls { .. } => {
                TlsErrorSource::Internal
            }
        }
    }

    /// The error as an `io::Error` for the HTTP engine's [`Connector`](fhirwall_http::Connector):
    /// the `TlsError` is its inner error (`get_ref().downcast_ref::<TlsError>()`) so the caller can
    /// still read its source label, and timeouts keep the `TimedOut` kind.
    #[must_use]
    pub fn into_io(self) -> io::Error {
        let kind = match &self {
            Self::UpstreamTimeout { .. } | Self::HandshakeTimeout { .. } => io::ErrorKind::TimedOut,
            Self::UpstreamConnect { source, .. } => source.kind(),
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, self)
    }
}
