//! The sidecar proxy: listeners, TLS termination, strict HTTP/1.1 framing, upstream pools, and the
//! responses the proxy makes itself.

pub mod http;
pub mod outcome;
