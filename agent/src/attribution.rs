//! Attribution: from the peer 4-tuple of an accepted sidecar connection to the [`Workload`] that
//! opened it.

mod workload;

pub use workload::Workload;
