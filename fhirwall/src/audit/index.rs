//! The queryable columns of an entry, derived from it by one pure function. The indexer stores
//! them (the body stays in the journal); `verify` derives them again and compares, so editing a
//! column (to hide a row from a query) is caught even though the columns are not hashed
//! themselves.

use rusqlite::Row;

use super::record::{Entry, Record};

/// The indexed columns of `entries`, in table order after `seq`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexCols {
    pub kind: String,
    pub time_us: i64,
    pub correlation_id: Option<String>,
    /// For a completion: the seq of its request.
    pub ref_seq: Option<i64>,
    pub integration: Option<String>,
    pub workload: WorkloadCols,
    pub credential_fp: Option<String>,
    pub resource_type: Option<String>,
    pub decision: Option<String>,
}

/// The columns that name the process behind a request. The index stores each distinct set once
/// (table `workloads`) and every entry refers to it: a host's requests come from a handful of
/// processes, and indexing long paths and hashes once per request was most of the index's work.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct WorkloadCols {
    pub exe: Option<String>,
    pub exe_sha256: Option<String>,
    pub pid: Option<i64>,
    pub container_id: Option<String>,
    pub pod_uid: Option<String>,
    pub systemd_unit: Option<String>,
}

impl WorkloadCols {
    /// Whether the entry names a process at all (completions and retention markers do not).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The `workloads.key` of this set: what `SQLite`'s `json_array()` makes of the same six
    /// columns, so that the schema migration and the indexer agree on it.
    pub fn key(&self) -> String {
        serde_json::json!([
            self.exe,
            self.exe_sha256,
            self.pid,
            self.container_id,
            self.pod_uid,
            self.systemd_unit
        ])
        .to_string()
    }
}

/// The column list matching [`IndexCols::read`].
pub const COLUMNS: &str = "kind, time_us, correlation_id, ref_seq, integration, exe, exe_sha256, pid, \
    container_id, pod_uid, systemd_unit, credential_fp, resource_type, decision";

impl IndexCols {
    pub fn of(entry: &Entry) -> Self {
        let base = Self {
            kind: entry.kind().to_owned(),
            time_us: entry.time().as_microsecond(),
            ..Self::default()
        };
        match entry {
            Entry::Request(r) => Self::of_record(base, r),
            Entry::Completion(c) => Self {
                correlation_id: Some(c.correlation_id.clone()),
                ref_seq: Some(i64::try_from(c.request_seq).unwrap_or(i64::MAX)),
                ..base
            },
            Entry::Pruned(_) => base,
            Entry::Credential(c) => Self {
                integration: Some(c.integration.clone()),
                ..base
            },
        }
    }

    fn of_record(base: Self, r: &Record) -> Self {
        let w = &r.workload;
        Self {
            correlation_id: Some(r.correlation_id.clone()),
            integration: r.integration.clone(),
            workload: WorkloadCols {
                exe: w.exe.clone(),
                exe_sha256: w.exe_sha256.clone(),
                pid: Some(i64::from(w.tgid)),
                container_id: w.container_id.clone(),
                pod_uid: w.pod_uid.clone(),
                systemd_unit: w.systemd_unit.clone(),
            },
            credential_fp: r.credential_fingerprint.clone(),
            resource_type: r.resource_type.clone(),
            decision: Some(r.decision.as_str().to_owned()),
            ..base
        }
    }

    /// Reads the columns starting at index `at` of a row selected with [`COLUMNS`].
    pub fn read(row: &Row<'_>, at: usize) -> rusqlite::Result<Self> {
        Ok(Self {
            kind: row.get(at)?,
            time_us: row.get(at + 1)?,
            correlation_id: row.get(at + 2)?,
            ref_seq: row.get(at + 3)?,
            integration: row.get(at + 4)?,
            workload: WorkloadCols {
                exe: row.get(at + 5)?,
                exe_sha256: row.get(at + 6)?,
                pid: row.get(at + 7)?,
                container_id: row.get(at + 8)?,
                pod_uid: row.get(at + 9)?,
                systemd_unit: row.get(at + 10)?,
            },
            credential_fp: row.get(at + 11)?,
            resource_type: row.get(at + 12)?,
            decision: row.get(at + 13)?,
        })
    }
}
