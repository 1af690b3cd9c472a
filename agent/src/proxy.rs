//! The sidecar proxy: listeners, the connections it carries, and (next) TLS termination and
//! strict HTTP/1.1.

pub mod live;
pub mod relay;
