//! TLS on both sides of the sidecar.
//!
//! Downstream, the application believes it talks to the real FHIR server: the kernel redirected
//! its `connect()` here. The sidecar peeks at the first byte; a TLS ClientHello is terminated
//! with a leaf certificate for the client's SNI (or, without SNI, for a fallback name the
//! listener supplies), minted on the fly by the node-local CA that EHR hosts trust:
//!
//! ```text
//! accept -> detect (peek 0x16?) -> ClientHello -> leaf for SNI | fallback (LeafCache, LRU)
//!        -> handshake (TLS 1.2/1.3, ALPN http/1.1 only, one deadline) -> Downstream::Tls
//!        -> anything else: Downstream::Plain, untouched
//! ```
//!
//! Upstream, [`UpstreamConnector`] opens the agent's own connections for the HTTP engine's
//! [`Pool`](fhirwall_http::Pool): a socket carrying the agent's `SO_MARK` (so the kernel does
//! not redirect it again), certificate verification against the upstream's CA file or the system
//! roots, optional mTLS with the integration's own client certificate, one cached `ClientConfig`
//! (and so one resumption store) per (upstream, integration).
//!
//! `fhirwall ca init` / `fhirwall ca export` (in `cli::ca`) create the CA and print what hosts
//! must trust; `tls/README-ca.md` says how to install it.

mod ca;
mod error;
mod files;
mod leaf;
mod name;
mod server;
mod stream;
mod upstream;

use std::sync::Arc;

pub use ca::{
    CA_CERT_FILE, CA_KEY_FILE, CaCertificate, CaSpec, DEFAULT_CA_DIR, InitOutcome, Leaf, LocalCa,
    rotation,
};
pub use error::{TlsError, TlsErrorSource};
pub use leaf::{LeafCache, LeafPolicy, SniResolver};
pub use name::LeafName;
pub use server::{ALPN_HTTP11, Protocol, TerminatorConfig, TlsTerminator, detect};
pub use stream::{Downstream, MaybeTls, UpstreamStream};
pub use upstream::{
    ClientIdentity, ConnectorConfig, UpstreamConnector, UpstreamKey, UpstreamSpec, UpstreamTable,
};

/// The crypto provider of both sides: ring, as the rest of the agent uses.
#[must_use]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests;
