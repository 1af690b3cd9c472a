//! The tamper-evident audit trail: the journal is the commit point, `SQLite` its index.
//!
//! ```text
//! proxy ── AuditSink::append(Record) ─► open batch (seq, frame, chain hash; caller's thread)
//!       ◄── Appended { seq } (not yet durable)           │
//!       Appended::durable().await ◄── flusher thread: pwrite + fdatasync per batch
//!                                    └─► indexer thread (SCHED_IDLE): SQLite, big txns
//! proxy ── AuditSink::complete(Completion) ─► open batch (not awaited; chained like any entry)
//!
//! responders: query / report / verify / export  (catch the index up from the journal first)
//! ```
//!
//! A write is forwarded after `commit` (append + durable); a read after `append`, its response
//! released after `durable` (external synchrony).
//!
//! How the proxy uses it (the only calls on the request path are `commit` and `complete`):
//!
//! ```no_run
//! # async fn demo(workload: &fhirwall_policy::Workload) -> Result<(), fhirwall::audit::AuditError> {
//! use fhirwall::audit::{AuditConfig, AuditSink, Completion, Disposition, Fate, Record};
//!
//! // At startup (fails if the store cannot be opened: refuse to start rather than to serve).
//! let (sink, writer) = AuditSink::start(AuditConfig::new("/var/lib/fhirwall/audit.db"))?;
//!
//! // Per request, after the policy decision and before forwarding:
//! let mut record = Record::new("req-42", "node-1", workload.into(), "GET", "/Patient/123", Disposition::Allow);
//! record.integration = Some("lab-sync".into());
//! record.patients = vec!["Patient/123".into()];
//! let seq = match sink.commit(record).await {
//!     Ok(seq) => seq,
//!     Err(_) => return Ok(()), // answer 503, do not forward
//! };
//! // ... forward, stream the response back, then (not awaited):
//! let mut done = Completion::new(seq, "req-42", Fate::Completed);
//! done.status = Some(200);
//! let _ = sink.complete(done);
//!
//! // For /health and metrics: sink.health(), sink.stats(). At shutdown:
//! drop(sink);
//! let _ = tokio::task::spawn_blocking(move || writer.join()).await;
//! # Ok(()) }
//! ```
//!
//! Files, in the order an entry travels: `record` (what is stored), `index` (queryable columns),
//! `chain` (hashing), `journal` (segments and frames), `writer` (appending, group commit,
//! durability, health), `indexer` and `store` (the `SQLite` index, catching up, retention's plan), `pindex`
//! (the patient index copy),
//! then the readers: `verify`, `query`, `report`, `render` (table / JSON lines), `balp` (FHIR
//! `AuditEvents`), `export` (cursors, JSON lines and FHIR push) with its small `http` client.

mod balp;
mod bodies;
mod chain;
mod export;
mod index;
mod indexer;
mod journal;
mod pindex;
mod query;
mod record;
mod render;
mod report;
mod scan;
mod store;
mod syslog;
mod verify;
mod writer;

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests;
use std::{path::PathBuf, sync::Arc};

pub use balp::{audit_event, audit_events, bundle};
pub use chain::Hash;
pub use export::{
    Cursor, FhirExport, JsonlExport, JsonlTarget, cursor_position, export_fhir, export_jsonl,
};
pub use query::{Filter, Order, QueryRow, UNREGISTERED, presenters, query, since};
pub use record::{
    BreakGlassUse, Completion, CredentialEvent, Disposition, Entry, Fate, PruneMarker, Record,
    ResponseCheckRecord, WorkloadRecord, now, strip_query_values,
};
pub use render::{jsonl_line, report_text, table};
pub use report::{BusinessHours, Report, WorkloadSeen, report, report_from};
pub use scan::{Scan, scan_requests};
pub use store::{Checkpoints, Durability, Head, Retention, StoreOptions, open, open_read_only};
pub use syslog::{SyslogExport, export_syslog};
#[cfg(test)]
pub(crate) use tests::support as tests_support;
pub use verify::{Anchor, Finding, Problem, Verification, verify, verify_against};
pub(crate) use writer::error_chain;
pub use writer::{
    Appended, AuditConfig, AuditMonitor, AuditSink, AuditStats, AuditWriter, CommittedSeq, Health,
    Producers,
};

/// Everything that can go wrong in the audit subsystem.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open the audit store {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("the audit store {} is in journal mode {mode:?}, not WAL", path.display())]
    NotWal { path: PathBuf, mode: String },
    #[error("the audit store {} has schema version {version}, newer than this fhirwall", path.display())]
    SchemaTooNew { path: PathBuf, version: i64 },
    #[error("writing the audit store failed ({kind})")]
    Write {
        kind: WriteFailure,
        #[source]
        source: rusqlite::Error,
    },
    /// The batch holding this record did not commit. Shared by every record of the batch.
    #[error("the audit store is unavailable; the record was not committed")]
    Unavailable {
        #[source]
        source: Arc<AuditError>,
    },
    #[error("reading the audit store failed")]
    Read {
        #[source]
        source: rusqlite::Error,
    },
    #[error("serializing an audit entry failed")]
    Serialize {
        #[source]
        source: serde_json::Error,
    },
    #[error("audit entry seq {seq} is not readable")]
    Corrupt {
        seq: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error("the audit writer has stopped")]
    WriterGone,
    #[error("the audit queue is full")]
    QueueFull,
    #[error("cannot start an audit thread")]
    Thread {
        #[source]
        source: std::io::Error,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("exporting")]
    Outbound(#[from] crate::outbound::OutboundError),
    /// The policy a report weighs the trail against is not valid.
    #[error("the policies in {dir}")]
    Policy {
        dir: std::path::PathBuf,
        #[source]
        source: fhirwall_policy::LoadError,
    },
    #[error("{url} answered HTTP {status}")]
    HttpStatus { url: String, status: u16 },
    /// The server answers that it takes no AuditEvent writes there: not an outage, retrying
    /// cannot help.
    #[error(
        "{url} answered HTTP {status}: it does not accept AuditEvent writes there (a FHIR server \
         that stores AuditEvents, or a collector's AuditEvent endpoint, is needed)"
    )]
    NotAccepted { url: String, status: u16 },
    #[error("reading audit entry seq {seq} from the journal failed")]
    JournalRead {
        seq: u64,
        #[source]
        source: journal::JournalError,
    },
    #[error("writing the audit journal failed ({kind})")]
    Journal {
        kind: WriteFailure,
        #[source]
        source: journal::JournalError,
    },
}

/// Why a write failed, for alerts and metrics labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WriteFailure {
    /// No space left on the device (`SQLITE_FULL`).
    DiskFull,
    /// Another connection holds the write lock past the busy timeout (`SQLITE_BUSY` / LOCKED).
    Locked,
    /// The operating system reported an I/O error.
    Io,
    /// The database is read-only (permissions, read-only mount).
    ReadOnly,
    Other,
}

impl std::fmt::Display for WriteFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::DiskFull => "disk full",
            Self::Locked => "database locked",
            Self::Io => "I/O error",
            Self::ReadOnly => "read-only",
            Self::Other => "other",
        })
    }
}

impl AuditError {
    pub(crate) fn write(source: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        let kind = match source.sqlite_error_code() {
            Some(C::DiskFull) => WriteFailure::DiskFull,
            Some(C::DatabaseBusy | C::DatabaseLocked) => WriteFailure::Locked,
            Some(C::SystemIoFailure) => WriteFailure::Io,
            Some(C::ReadOnly) => WriteFailure::ReadOnly,
            _ => WriteFailure::Other,
        };
        Self::Write { kind, source }
    }

    pub(crate) fn journal(source: journal::JournalError) -> Self {
        let kind = match &source {
            journal::JournalError::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                    WriteFailure::DiskFull
                }
                std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied => {
                    WriteFailure::ReadOnly
                }
                _ => WriteFailure::Io,
            },
            _ => WriteFailure::Other,
        };
        Self::Journal { kind, source }
    }

    /// The write failure behind this error, if it is one (looks through `Unavailable`).
    #[must_use]
    pub fn write_failure(&self) -> Option<WriteFailure> {
        match self {
            Self::Write { kind, .. } | Self::Journal { kind, .. } => Some(*kind),
            Self::Unavailable { source } => source.write_failure(),
            _ => None,
        }
    }
}
