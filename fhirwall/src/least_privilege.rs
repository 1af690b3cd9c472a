//! Least privilege from evidence: what the audit trail says each integration really does,
//! turned into decisions about its policy.
//!
//! ```text
//! replay.rs   a candidate policy decides every recorded request again: what would change
//! suggest.rs  the narrowest version of an integration that allows what it really did
//! usage.rs    grants no request needed, and integrations that went quiet
//! ```
//!
//! Both read request records as `fhirwall_policy::ReplayInput` left them (no value that could
//! identify a person but patient references), and both are pure over the records, so the CLI,
//! the tests and the benchmark run the same code.

pub mod replay;
pub mod suggest;
pub mod usage;

#[cfg(test)]
mod test_support;
