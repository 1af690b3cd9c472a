//! fhirwall: per-node enforcement of named, purpose-bound identities for FHIR API integrations.
//!
//! The path of one request, in the order the modules below (and the layer crates they use) are
//! read:
//!
//! ```text
//! app connect(fhir.ehr:443)
//!   kernel/          cgroup/connect4|6: protected? agent's own socket? workload refused? ->
//!                    record {cookie, tgid, uid, gid, cgroup, comm, original destination},
//!                    rewrite -> sidecar; sock_ops: re-key by 4-tuple, delete at close
//!   attribution/     accept(): peer 4-tuple -> kernel record -> Workload (exe + sha256, start
//!                    time, cgroup -> container / pod / systemd unit), cached per process
//!   proxy/           TLS termination (local CA) or plain HTTP (a connection to an egress
//!                    proxy instead: its CONNECT target checked, relayed or refused)
//!   fhirwall-http    strict HTTP/1.1 framing; the sidecar is its Handler
//!   fhirwall-fhir    classify: interaction, type, id, compartment, params, bundle entries
//!   fhirwall-policy  workload -> integration; decide() -> Allow | Deny { reason }
//!   audit/           record appended to the journal (group commit, hash chain); a read goes
//!                    out at once, its response held until the record is durable; anything
//!                    else waits for durability before it is forwarded
//!   proxy/           forward upstream over TLS/mTLS with the integration's own credential
//!                    (broker/: its short-lived token), or answer 403 OperationOutcome
//!   metrics, admin   Prometheus and the admin API, on their own runtime
//!   broker/, outbound  token refreshers and the agent's own HTTP client, on that runtime
//!   least_privilege/   replay, suggest and unused grants over the recorded requests
//! ```
//!
//! `app` wires it together; `main.rs` is only the command line.

// The request path, in order.
pub mod kernel;

pub mod attribution;

pub mod proxy;

pub mod audit;

// Beside the request path: operators and the control plane.
pub mod metrics;

pub mod admin;

pub mod broker;

pub mod enforce;

pub mod least_privilege;

pub mod outbound;
pub mod private_files;

// Wiring and the command line.
pub mod app;
pub mod cli;
pub mod config;

/// An error and its sources on one line, for logs and health reasons.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// What unit tests share.
#[cfg(test)]
pub(crate) mod test_support {
    /// Whether the test can run as root (file ownership, chown); prints why not on a laptop,
    /// and fails when `CI` is set: CI runs the unit tests as root.
    pub fn root_or_skip(test: &str) -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: CI runs the unit tests as root"
        );
        eprintln!("SKIPPED {test}: needs root");
        false
    }
}
