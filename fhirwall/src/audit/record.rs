//! What one audit entry says: a request decision, its completion, or a retention marker.
//!
//! Everything here is plain data with serde derives; the store serializes an [`Entry`] once, hashes
//! those exact bytes into the chain and keeps them verbatim, so the JSON field order of these
//! structs is part of the stored format (see `chain.rs`). Absent optional fields are left out of
//! the JSON (smaller bodies to hash, store and ship) and read back as `None`.

use fhirwall_policy::Workload;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// One link of the chain. The tag (`"kind"`) is the first JSON field of the stored body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[expect(
    clippy::large_enum_variant,
    reason = "built once per request and serialized at once; boxing buys nothing"
)]
pub enum Entry {
    /// The decision taken for one request (or one refused connection), committed before forwarding.
    Request(Record),
    /// How a request ended, linked to its [`Record`] by correlation id. A separate chained entry
    /// rather than an update: editing a chained row would break its hash.
    Completion(Completion),
    /// Retention removed a prefix of the chain; this marker keeps `verify` able to start after it.
    Pruned(PruneMarker),
    /// The agent obtained or gave up an integration's brokered token.
    Credential(CredentialEvent),
}

impl Entry {
    /// The entry a journal frame's body holds (`seq` names it in the error).
    pub(crate) fn from_body(seq: u64, body: &str) -> Result<Self, super::AuditError> {
        serde_json::from_str(body).map_err(|source| super::AuditError::Corrupt { seq, source })
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Request(_) => "request",
            Self::Completion(_) => "completion",
            Self::Pruned(_) => "pruned",
            Self::Credential(_) => "credential",
        }
    }

    pub(crate) fn time(&self) -> Timestamp {
        match self {
            Self::Request(r) => r.time,
            Self::Completion(c) => c.time,
            Self::Pruned(p) => p.time,
            Self::Credential(c) => c.time,
        }
    }

    /// The patients the entry names, as stored in the patient index: those a request names,
    /// and those whose data its response carried.
    pub(crate) fn patients(&self) -> &[String] {
        match self {
            Self::Request(r) => &r.patients,
            Self::Completion(c) => &c.patients,
            Self::Pruned(_) | Self::Credential(_) => &[],
        }
    }
}

/// The decision the sidecar (or the kernel) took for one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// When the decision was taken, UTC, microsecond precision.
    #[serde(with = "rfc3339")]
    pub time: Timestamp,
    /// Per-request id chosen by the proxy (also sent upstream as `X-Request-Id`).
    pub correlation_id: String,
    /// Name of the node (host) whose sidecar decided.
    pub node: String,
    /// The registered integration the workload matched; `None` when unattributed or unregistered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integration: Option<String>,
    pub workload: WorkloadRecord,
    /// Network address of the client as the sidecar saw it, e.g. `10.0.0.7:51234`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<String>,
    /// Who the request is made for when a token says so (OAuth `sub` / client id). Never a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    /// A fingerprint of the presented credential (e.g. a SHA-256 prefix), never the credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_fingerprint: Option<String>,
    /// Name of the protected upstream the request was for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub method: String,
    /// Normalized request path; query values are removed on commit (see [`strip_query_values`]).
    pub path: String,
    /// FHIR interaction code (<http://hl7.org/fhir/R4/valueset-type-restful-interaction.html>),
    /// e.g. `read`, `search-type`, `create`, or an operation name such as `$everything`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interaction: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// Patients the request touches, as `Patient/<id>` references. Sorted and deduplicated on
    /// commit. Stored in an indexed table for per-patient queries; never logged.
    pub patients: Vec<String>,
    /// Purpose of use code (<http://terminology.hl7.org/CodeSystem/v3-ActReason>), e.g. `TREAT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose_of_use: Option<String>,
    pub decision: Disposition,
    /// The policy rule that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Response status when the sidecar answered itself (denials); forwarded requests get theirs
    /// from the [`Completion`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_out: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<BreakGlassUse>,
    /// Name of the policy exception that allowed the request, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<String>,
    /// Request headers (names only) the sidecar did not forward: outside its positive list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stripped_headers: Vec<String>,
    /// The classified request and what the decision read of its headers, for `fhirwall policy
    /// replay` and `suggest`: no value that could identify a person but patient references
    /// (`fhirwall_fhir::replay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<Box<fhirwall_policy::ReplayInput>>,
}

/// A brokered token issued to an integration, or given up. Names the token by the `jti` of the
/// assertion it was issued for and says what it grants; never holds the token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialEvent {
    #[serde(with = "rfc3339")]
    pub time: Timestamp,
    pub node: String,
    pub integration: String,
    /// `token-issued` or `token-revoked`.
    pub event: String,
    /// The client id at the authorization server.
    pub client_id: String,
    /// The token endpoint that issued it.
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Timestamp>,
    /// The scopes granted, space-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// What became of a revoked token at the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// What the sidecar did with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Disposition {
    /// Policy allowed it; it was (or is about to be) forwarded.
    Allow,
    /// Policy denied it; the sidecar answered 403 with an `OperationOutcome`.
    Deny,
    /// Observe mode: policy would have denied it, but it was forwarded.
    WouldDeny,
    /// The kernel refused the `connect()` (EPERM) for a workload denied outright; no HTTP was seen.
    KernelRefused,
    /// The request could not be parsed or classified; the sidecar answered 400.
    Malformed,
}

impl Disposition {
    pub const ALL: [Self; 5] = [
        Self::Allow,
        Self::Deny,
        Self::WouldDeny,
        Self::KernelRefused,
        Self::Malformed,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::WouldDeny => "would-deny",
            Self::KernelRefused => "kernel-refused",
            Self::Malformed => "malformed",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// Whether the request left the node.
    #[must_use]
    pub fn forwarded(self) -> bool {
        matches!(self, Self::Allow | Self::WouldDeny)
    }
}

/// A request made under an invoked break-glass grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BreakGlassUse {
    /// The justification (ticket, incident) recorded when break-glass was started.
    pub justification_id: String,
}

/// How a forwarded request ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Completion {
    #[serde(with = "rfc3339")]
    pub time: Timestamp,
    /// The seq [`AuditSink::commit`](super::AuditSink::commit) returned for the request; the
    /// store joins on it (an append-only index, unlike a random correlation id).
    pub request_seq: u64,
    pub correlation_id: String,
    pub outcome: Fate,
    /// Status sent to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// From accepting the request to the last response byte.
    pub latency_us: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Patients whose data the response carried, as `Patient/<id>` references (what the
    /// sidecar's response pass read in the body released to the workload, whether or not the
    /// request named them). Sorted and deduplicated on commit; indexed like a request's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patients: Vec<String>,
    /// How the response was checked, and what was held back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<ResponseCheckRecord>,
}

/// What the response pass did. Types, counts and fixed words only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseCheckRecord {
    /// `record` (only noted whose data it carried), `deny` or `filter`.
    pub mode: String,
    /// Resources read in the body.
    pub resources: u64,
    /// Entries withheld, by resource type (`(unknown)` when it could not be read).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub withheld: std::collections::BTreeMap<String, u32>,
    /// Why the whole response was refused (a 403 in its place, or cut off once begun).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// A fixed word for `refused` or for what withheld entries: `type`, `patient`,
    /// `malformed`, `too-large`, `format`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub violation: Option<String>,
    /// More patients than one record keeps were carried; `patients` lists the first ones.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub patients_truncated: bool,
    /// The body could not be read (a format or encoding the pass does not read).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unread: bool,
}

/// The fate of a request after the decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fate {
    /// The upstream answered and the answer reached the client.
    Completed,
    /// The upstream could not be reached or broke the exchange; the client got 502/503/504.
    UpstreamFailure,
    /// The client went away before the response was complete.
    ClientAborted,
    /// The response check withheld the response: a 403 went out in its place, or it was cut
    /// off once begun.
    Withheld,
}

/// Retention removed entries `first_seq..=last_seq`; `last_hash` is the hash of `last_seq`, which
/// the first remaining entry names as its predecessor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneMarker {
    #[serde(with = "rfc3339")]
    pub time: Timestamp,
    pub first_seq: u64,
    pub last_seq: u64,
    pub count: u64,
    /// Lowercase hex SHA-256 chain hash of `last_seq`.
    pub last_hash: String,
    /// Why: `max-age`, `max-bytes`.
    pub reason: String,
}

/// The parts of a [`Workload`] that belong in an audit record. The command line is left out on
/// purpose: it can carry patient data.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRecord {
    pub pid: u32,
    pub tgid: u32,
    /// Process start time in clock ticks since boot; with `tgid` it names one process.
    pub start_time: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe_sha256: Option<String>,
    /// `exe` is the root-installed file that runs, as the host sees the path (see
    /// [`Workload::exe_verified`]); only then can an `exe` selector have matched.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exe_verified: bool,
    pub uid: u32,
    pub gid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub comm: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd_unit: Option<String>,
    /// The unit, container and pod names came from a cgroup subtree a user controls (see
    /// [`Workload::cgroup_delegated`]): no selector trusted them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cgroup_delegated: bool,
}

impl From<&Workload> for WorkloadRecord {
    fn from(w: &Workload) -> Self {
        Self {
            pid: w.pid,
            tgid: w.tgid,
            start_time: w.start_time,
            exe: w.exe.as_ref().map(|p| p.to_string_lossy().into_owned()),
            exe_sha256: w.exe_sha256.clone(),
            exe_verified: w.exe_verified,
            uid: w.uid,
            gid: w.gid,
            user: w.user.clone(),
            comm: w.comm.clone(),
            cgroup_path: w.cgroup_path.clone(),
            container_id: w.container_id.clone(),
            pod_uid: w.pod_uid.clone(),
            systemd_unit: w.systemd_unit.clone(),
            cgroup_delegated: w.cgroup_delegated,
        }
    }
}

impl Record {
    /// A record stamped now with every optional field empty; the proxy fills in what it knows.
    pub fn new(
        correlation_id: impl Into<String>,
        node: impl Into<String>,
        workload: WorkloadRecord,
        method: impl Into<String>,
        path: impl Into<String>,
        decision: Disposition,
    ) -> Self {
        Self {
            time: now(),
            correlation_id: correlation_id.into(),
            node: node.into(),
            integration: None,
            workload,
            client_addr: None,
            on_behalf_of: None,
            credential_fingerprint: None,
            upstream: None,
            tenant: None,
            method: method.into(),
            path: path.into(),
            interaction: None,
            resource_type: None,
            resource_id: None,
            patients: Vec::new(),
            purpose_of_use: None,
            decision,
            rule: None,
            reason: None,
            status: None,
            bytes_in: None,
            bytes_out: None,
            latency_us: None,
            break_glass: None,
            exception: None,
            stripped_headers: Vec::new(),
            replay: None,
        }
    }

    /// Applies the invariants every stored record keeps: no query values, patients sorted and
    /// unique, time at microsecond precision (what the store indexes).
    pub(crate) fn sanitize(&mut self) {
        self.path = strip_query_values(&self.path);
        self.patients.sort_unstable();
        self.patients.dedup();
        self.time = truncate_us(self.time);
    }
}

impl Completion {
    pub fn new(
        request_seq: super::CommittedSeq,
        correlation_id: impl Into<String>,
        outcome: Fate,
    ) -> Self {
        Self {
            time: now(),
            request_seq: request_seq.0,
            correlation_id: correlation_id.into(),
            outcome,
            status: None,
            bytes_in: 0,
            bytes_out: 0,
            latency_us: 0,
            reason: None,
            patients: Vec::new(),
            response: None,
        }
    }

    /// Patients sorted and unique, time at microsecond precision.
    pub(crate) fn sanitize(&mut self) {
        self.patients.sort_unstable();
        self.patients.dedup();
        self.time = truncate_us(self.time);
    }
}

/// The current time at the precision the store keeps.
#[must_use]
pub fn now() -> Timestamp {
    truncate_us(Timestamp::now())
}

pub(crate) fn truncate_us(t: Timestamp) -> Timestamp {
    // Invariant: a Timestamp's microsecond count is always representable again.
    Timestamp::from_microsecond(t.as_microsecond()).unwrap_or(t)
}

/// Removes query parameter values, keeping names and modifiers: `?name=Smith&_count=10` becomes
/// `?name&_count`. Search values are PHI (names, birth dates, identifiers) and never belong in
/// the audit trail, whatever the caller passed.
#[must_use]
pub fn strip_query_values(path: &str) -> String {
    let Some((base, query)) = path.split_once('?') else {
        return path.to_owned();
    };
    let names: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').map_or(p, |(name, _)| name))
        .filter(|name| !name.is_empty())
        .collect();
    if names.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", names.join("&"))
    }
}

/// RFC 3339 in UTC with exactly six fractional digits, so stored bodies have one spelling per
/// instant and sort as text.
pub(crate) mod rfc3339 {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn format(t: &Timestamp) -> String {
        format!("{t:.6}")
    }

    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn query_values_never_survive() {
        let cases = [
            ("/Patient/123", "/Patient/123"),
            (
                "/Patient?name=Smith&birthdate=1970-01-01",
                "/Patient?name&birthdate",
            ),
            (
                "/Observation?patient=Patient/9&_count=10&",
                "/Observation?patient&_count",
            ),
            ("/Patient?_summary", "/Patient?_summary"),
            ("/Patient?", "/Patient"),
            ("/Patient?=x&&name:exact=Jo=e", "/Patient?name:exact"),
        ];
        for (input, want) in cases {
            assert_eq!(strip_query_values(input), want, "{input}");
        }
    }

    #[test]
    fn sanitize_orders_patients_and_truncates_time() {
        let mut r = Record::new(
            "c",
            "n",
            WorkloadRecord::default(),
            "GET",
            "/Patient?name=Smith",
            Disposition::Allow,
        );
        r.patients = vec!["Patient/b".into(), "Patient/a".into(), "Patient/b".into()];
        r.time = "2026-01-01T00:00:00.123456789Z".parse().unwrap_or(r.time);
        r.sanitize();
        assert_eq!(r.path, "/Patient?name");
        assert_eq!(r.patients, ["Patient/a", "Patient/b"]);
        assert_eq!(rfc3339::format(&r.time), "2026-01-01T00:00:00.123456Z");
    }

    #[test]
    fn workload_record_keeps_identity_and_drops_the_command_line() {
        let w = Workload {
            pid: 7,
            tgid: 6,
            start_time: 99,
            uid: 1000,
            gid: 1000,
            user: Some("lab".into()),
            comm: "lab-sync".into(),
            exe: Some(PathBuf::from("/usr/bin/lab-sync")),
            exe_sha256: Some("ab".repeat(32)),
            cmdline: vec!["lab-sync".into(), "--patient=Smith".into()],
            systemd_unit: Some("lab.service".into()),
            ..Workload::default()
        };
        let r = WorkloadRecord::from(&w);
        assert_eq!((r.pid, r.tgid, r.start_time, r.uid), (7, 6, 99, 1000));
        assert_eq!(r.exe.as_deref(), Some("/usr/bin/lab-sync"));
        assert_eq!(r.systemd_unit.as_deref(), Some("lab.service"));
        let json = serde_json::to_string(&r).unwrap_or_default();
        assert!(
            !json.contains("Smith"),
            "the command line must not be recorded: {json}"
        );
    }

    #[test]
    fn entries_round_trip_through_json() {
        let mut r = Record::new(
            "c",
            "n",
            WorkloadRecord::default(),
            "GET",
            "/x",
            Disposition::WouldDeny,
        );
        r.break_glass = Some(BreakGlassUse {
            justification_id: "INC-1".into(),
        });
        let entry = Entry::Request(r);
        let json = serde_json::to_string(&entry).unwrap_or_default();
        assert!(json.starts_with(r#"{"kind":"request","#), "{json}");
        assert!(!json.contains("null"), "absent fields are omitted: {json}");
        assert_eq!(serde_json::from_str::<Entry>(&json).ok(), Some(entry));
        for d in Disposition::ALL {
            assert_eq!(Disposition::parse(d.as_str()), Some(d));
            assert_eq!(
                serde_json::to_string(&d).unwrap_or_default(),
                format!("\"{}\"", d.as_str())
            );
        }
    }
}
