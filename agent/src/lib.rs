//! fhirwall: per-node enforcement of named, purpose-bound identities for FHIR API integrations.
//!
//! The path of one request, in the order the modules below are read:
//!
//! ```text
//! app connect(fhir.ehr:443)
//!   kernel/       cgroup/connect4|6: protected? agent's own socket? workload refused? -> record
//!                 {cookie, tgid, uid, gid, cgroup, comm, original destination}, rewrite -> sidecar
//!                 sock_ops: re-key the record by 4-tuple at ESTABLISHED, delete at close
//!   attribution/  accept(): peer 4-tuple -> kernel record -> Workload (exe + sha256, start time,
//!                 cgroup -> container / pod / systemd unit), cached per (tgid, start time)
//!   proxy/        TLS termination (local CA) or plain HTTP, strict HTTP/1.1 framing
//!   fhir/         classify: interaction, type, id, compartment, params, bundle entries
//!   policy/       workload -> integration; decide() -> Allow | Deny { reason }
//!   audit/        record committed (group commit, hash chain) before anything is forwarded
//!   proxy/        forward upstream over TLS/mTLS, or answer 403 OperationOutcome
//!   metrics, admin  Prometheus and the admin API, on their own runtime
//! ```
//!
//! `app` wires it together; `main.rs` is only the command line.

pub mod attribution;
pub mod audit;
pub mod cli;
