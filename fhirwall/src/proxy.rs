//! The sidecar proxy: listeners, TLS termination, strict HTTP/1.1 framing, upstream pools, the
//! connections it carries and the responses the proxy makes itself.

pub mod egress;
pub mod listener;
pub mod live;
pub mod operation_outcome;
pub mod sidecar;
pub mod socket;
pub mod tls;
