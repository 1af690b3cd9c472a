//! The index: `SQLite`, derived from the journal (`journal.rs`, the commit point). Schema,
//! connection settings, indexing rows the journal made durable, and retention's plan.
//!
//! Every entry's row carries its seq and chain hashes exactly as the journal holds them, its
//! query columns, and where its frame starts in its journal segment: the body stays in the
//! journal and readers fetch it from there (`bodies.rs`), so the index writes a fraction of
//! what it would with bodies. `verify` checks the rows against the journal. The index is written by one thread in large transactions (`indexer.rs`) with
//! `synchronous=NORMAL`: a transaction lost to a power failure is indexed again from the
//! journal.

use std::{collections::HashMap, path::Path, time::Duration};

use rusqlite::{Connection, OpenFlags, OptionalExtension as _, TransactionBehavior, params};

use super::{
    AuditError,
    chain::{self, GENESIS, Hash},
    index::{IndexCols, WorkloadCols},
    record::{self, Entry, PruneMarker},
};

/// Bumped when the schema changes; `open` refuses a store from a newer fhirwall.
const SCHEMA_VERSION: i64 = 4;

/// The tables that hold the entries, in database `db` (`main`; `temp` for a reader's overlay)
/// with names starting with `prefix`. Each distinct set of workload columns is stored once.
fn tables(db: &str, prefix: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {db}.{prefix}workloads (
            id           INTEGER PRIMARY KEY,
            -- The six columns below as json_array(): one row per distinct set.
            key          TEXT NOT NULL UNIQUE,
            exe          TEXT,
            exe_sha256   TEXT,
            pid          INTEGER,
            container_id TEXT,
            pod_uid      TEXT,
            systemd_unit TEXT
        );
        CREATE TABLE IF NOT EXISTS {db}.{prefix}entry_rows (
            seq            INTEGER PRIMARY KEY,
            kind           TEXT NOT NULL,
            time_us        INTEGER NOT NULL,
            correlation_id TEXT,
            ref_seq        INTEGER,
            integration    TEXT,
            workload       INTEGER,
            credential_fp  TEXT,
            resource_type  TEXT,
            decision       TEXT,
            -- Where the entry's frame starts in its journal segment, which holds the body
            -- (rows moved from an index older than version 4 carry the body instead).
            frame_at       INTEGER,
            body           TEXT,
            prev_hash      BLOB NOT NULL,
            hash           BLOB NOT NULL
        );
        CREATE TABLE IF NOT EXISTS {db}.{prefix}patients (
            seq     INTEGER NOT NULL,
            patient TEXT NOT NULL,
            PRIMARY KEY (seq, patient)
        ) WITHOUT ROWID;"
    )
}

/// The entries of [`tables`] as readers see them: one row per entry with every column.
fn entries_of(db: &str, prefix: &str) -> String {
    format!(
        "SELECT e.seq, e.kind, e.time_us, e.correlation_id, e.ref_seq, e.integration,
                w.exe, w.exe_sha256, w.pid, w.container_id, w.pod_uid, w.systemd_unit,
                e.credential_fp, e.resource_type, e.decision, e.body, e.prev_hash, e.hash,
                e.frame_at
         FROM {db}.{prefix}entry_rows e LEFT JOIN {db}.{prefix}workloads w ON w.id = e.workload"
    )
}

/// The schema of a new store. `entries` is a view that puts each entry's workload columns back
/// beside it, so readers (queries, reports, exports, verify) see one table with every column.
fn schema() -> String {
    format!(
        "{tables}
        CREATE INDEX IF NOT EXISTS workloads_exe ON workloads (exe) WHERE exe IS NOT NULL;
        CREATE INDEX IF NOT EXISTS workloads_sha256 ON workloads (exe_sha256) WHERE exe_sha256 IS NOT NULL;
        CREATE INDEX IF NOT EXISTS workloads_pid ON workloads (pid) WHERE pid IS NOT NULL;
        CREATE INDEX IF NOT EXISTS workloads_container ON workloads (container_id) WHERE container_id IS NOT NULL;
        CREATE INDEX IF NOT EXISTS workloads_pod ON workloads (pod_uid) WHERE pod_uid IS NOT NULL;
        CREATE INDEX IF NOT EXISTS workloads_unit ON workloads (systemd_unit) WHERE systemd_unit IS NOT NULL;
        CREATE INDEX IF NOT EXISTS entries_time ON entry_rows (time_us);
        CREATE INDEX IF NOT EXISTS entries_integration ON entry_rows (integration, time_us);
        CREATE INDEX IF NOT EXISTS entries_ref ON entry_rows (ref_seq) WHERE ref_seq IS NOT NULL;
        CREATE INDEX IF NOT EXISTS entries_workload ON entry_rows (workload) WHERE workload IS NOT NULL;
        CREATE INDEX IF NOT EXISTS entries_credential ON entry_rows (credential_fp) WHERE credential_fp IS NOT NULL;
        CREATE VIEW IF NOT EXISTS entries AS {entries};
        -- Version 1 indexed patients here, inside every commit; the index is now built apart
        -- (pindex.rs).
        DROP INDEX IF EXISTS patients_patient;
        CREATE TABLE IF NOT EXISTS export_cursors (
            name       TEXT PRIMARY KEY,
            seq        INTEGER NOT NULL,
            updated_us INTEGER NOT NULL
        );",
        tables = tables("main", ""),
        entries = entries_of("main", ""),
    )
}

/// The indexes of versions 2 and 3, dropped when their table steps aside so that the new table
/// gets its own of the same names.
const OLD_INDEXES: &str = "
     DROP INDEX IF EXISTS entries_time;
     DROP INDEX IF EXISTS entries_integration;
     DROP INDEX IF EXISTS entries_ref;
     DROP INDEX IF EXISTS entries_exe;
     DROP INDEX IF EXISTS entries_sha256;
     DROP INDEX IF EXISTS entries_container;
     DROP INDEX IF EXISTS entries_pod;
     DROP INDEX IF EXISTS entries_unit;
     DROP INDEX IF EXISTS entries_workload;
     DROP INDEX IF EXISTS entries_credential;";

/// The columns rows of versions 2 and 3 move into; their bodies move with them (`frame_at`
/// stays empty): rows may predate the journal (a version 1 store), so they are moved, not
/// rebuilt.
const MOVED: &str = "seq, kind, time_us, correlation_id, ref_seq, integration, workload, \
    credential_fp, resource_type, decision, body, prev_hash, hash";

/// From version 2 (every workload column in every row of table `entries`), in two steps around
/// [`schema`]: the old table steps aside, then its rows move into `entry_rows` with their
/// workload interned.
fn from_version_2() -> [String; 2] {
    [
        format!("ALTER TABLE entries RENAME TO entries_v2; {OLD_INDEXES}"),
        format!(
            "INSERT OR IGNORE INTO workloads
                 (key, exe, exe_sha256, pid, container_id, pod_uid, systemd_unit)
             SELECT json_array(exe, exe_sha256, pid, container_id, pod_uid, systemd_unit),
                    exe, exe_sha256, pid, container_id, pod_uid, systemd_unit
             FROM entries_v2
             WHERE coalesce(exe, exe_sha256, pid, container_id, pod_uid, systemd_unit) IS NOT NULL
             ORDER BY seq;
             INSERT INTO entry_rows ({MOVED})
             SELECT seq, kind, time_us, correlation_id, ref_seq, integration,
                    (SELECT id FROM workloads
                     WHERE key = json_array(e.exe, e.exe_sha256, e.pid, e.container_id,
                                            e.pod_uid, e.systemd_unit)),
                    credential_fp, resource_type, decision, body, prev_hash, hash
             FROM entries_v2 e;
             DROP TABLE entries_v2;"
        ),
    ]
}

/// From version 3 (each row carrying its body): the same two steps; `workloads` stays.
fn from_version_3() -> [String; 2] {
    [
        format!("DROP VIEW entries; ALTER TABLE entry_rows RENAME TO entry_rows_v3; {OLD_INDEXES}"),
        format!(
            "INSERT INTO entry_rows ({MOVED}) SELECT {MOVED} FROM entry_rows_v3;
             DROP TABLE entry_rows_v3;"
        ),
    ]
}

/// One journal entry as the index stores it.
#[derive(Clone, Debug)]
pub struct IndexRow {
    pub seq: u64,
    pub prev_hash: Hash,
    pub hash: Hash,
    /// Where the frame starts in its journal segment: the index keeps this, not the body.
    pub offset: u64,
    /// The entry itself: the indexer takes its columns and patients (off the request's
    /// thread), and leaves its body in the journal.
    pub entry: Entry,
}

/// Adds `rows` to the index in one transaction; rows it already has (another reader caught the
/// index up first) are left as they are.
pub fn index(conn: &mut Connection, rows: &[IndexRow]) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    insert_rows(&tx, "main", "", rows)?;
    tx.commit()
}

/// The journal's entries that the index lacks and cannot take (a full disk, read-only media),
/// laid over it for this connection only: `entries` and `patients` then name views of the
/// index's rows and these, so every query, report and verify sees them.
pub fn overlay(conn: &Connection, rows: &[IndexRow]) -> Result<(), rusqlite::Error> {
    conn.execute_batch(&tables("temp", "tail_"))?;
    insert_rows(conn, "temp", "tail_", rows)?;
    // Unqualified names resolve in `temp` first.
    conn.execute_batch(&format!(
        "CREATE TEMP VIEW entries AS
             SELECT * FROM main.entries UNION ALL {tail};
         CREATE TEMP VIEW patients AS
             SELECT * FROM main.patients UNION ALL SELECT * FROM temp.tail_patients;",
        tail = entries_of("temp", "tail_"),
    ))
}

/// Inserts `rows` into the [`tables`] named by `db` and `prefix`. Within the caller's
/// transaction the workload ids found or made stay valid: retention removes unused workloads in
/// transactions of its own.
fn insert_rows(
    conn: &Connection,
    db: &str,
    prefix: &str,
    rows: &[IndexRow],
) -> Result<(), rusqlite::Error> {
    let mut insert = conn.prepare_cached(&format!(
        "INSERT OR IGNORE INTO {db}.{prefix}entry_rows (seq, kind, time_us, correlation_id,
         ref_seq, integration, workload, credential_fp, resource_type, decision, frame_at,
         prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
    ))?;
    let mut patient = conn.prepare_cached(&format!(
        "INSERT OR IGNORE INTO {db}.{prefix}patients (seq, patient) VALUES (?1, ?2)"
    ))?;
    let mut workloads = Workloads::new(conn, &format!("{db}.{prefix}workloads"))?;
    for row in rows {
        let seq = seq_i64(row.seq);
        let c = IndexCols::of(&row.entry);
        insert.execute(params![
            seq,
            c.kind,
            c.time_us,
            c.correlation_id,
            c.ref_seq,
            c.integration,
            workloads.id(&c.workload)?,
            c.credential_fp,
            c.resource_type,
            c.decision,
            i64::try_from(row.offset).unwrap_or(i64::MAX),
            &row.prev_hash[..],
            &row.hash[..],
        ])?;
        for p in row.entry.patients() {
            patient.execute(params![seq, p])?;
        }
    }
    Ok(())
}

/// Finds or adds the `workloads` row of a set of workload columns, remembering what it found.
struct Workloads<'c> {
    find: rusqlite::CachedStatement<'c>,
    add: rusqlite::CachedStatement<'c>,
    known: HashMap<WorkloadCols, i64>,
}

impl<'c> Workloads<'c> {
    fn new(conn: &'c Connection, table: &str) -> Result<Self, rusqlite::Error> {
        Ok(Self {
            find: conn.prepare_cached(&format!("SELECT id FROM {table} WHERE key = ?1"))?,
            add: conn.prepare_cached(&format!(
                "INSERT INTO {table} (key, exe, exe_sha256, pid, container_id, pod_uid,
                 systemd_unit) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            ))?,
            known: HashMap::new(),
        })
    }

    fn id(&mut self, w: &WorkloadCols) -> Result<Option<i64>, rusqlite::Error> {
        if w.is_empty() {
            return Ok(None);
        }
        if let Some(id) = self.known.get(w) {
            return Ok(Some(*id));
        }
        let key = w.key();
        let id = match self.find.query_row([&key], |r| r.get(0)).optional()? {
            Some(id) => id,
            None => self.add.insert(params![
                key,
                w.exe,
                w.exe_sha256,
                w.pid,
                w.container_id,
                w.pod_uid,
                w.systemd_unit
            ])?,
        };
        self.known.insert(w.clone(), id);
        Ok(Some(id))
    }
}

/// Removes index rows after `seq`: they were never durable in the journal (a crash cut them).
pub fn truncate_after(conn: &mut Connection, seq: u64) -> Result<usize, rusqlite::Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute("DELETE FROM patients WHERE seq > ?1", [seq_i64(seq)])?;
    let removed = tx.execute("DELETE FROM entry_rows WHERE seq > ?1", [seq_i64(seq)])?;
    tx.commit()?;
    Ok(removed)
}

/// Removes index rows `first..=last` (retention, after the journal's marker is durable).
pub fn remove_range(conn: &mut Connection, first: u64, last: u64) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let range = [seq_i64(first), seq_i64(last)];
    tx.execute("DELETE FROM patients WHERE seq BETWEEN ?1 AND ?2", range)?;
    // The workloads only these entries named go with them (not all unused ones: that would be
    // a scan of every workload per pass).
    tx.execute(
        "CREATE TEMP TABLE IF NOT EXISTS pruned_workloads (id INTEGER PRIMARY KEY)",
        [],
    )?;
    tx.execute(
        "INSERT OR IGNORE INTO temp.pruned_workloads SELECT DISTINCT workload FROM entry_rows
         WHERE seq BETWEEN ?1 AND ?2 AND workload IS NOT NULL",
        range,
    )?;
    tx.execute("DELETE FROM entry_rows WHERE seq BETWEEN ?1 AND ?2", range)?;
    tx.execute(
        "DELETE FROM workloads WHERE id IN (SELECT id FROM temp.pruned_workloads)
         AND NOT EXISTS (SELECT 1 FROM entry_rows WHERE workload = workloads.id)",
        [],
    )?;
    tx.execute("DELETE FROM temp.pruned_workloads", [])?;
    tx.commit()
}

/// How the store is opened.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// How long a write waits for a lock held by another connection before failing. Kept short:
    /// a caller is waiting to forward a request, and a lock held longer (an attacker, a stuck
    /// process) must turn into a prompt error and a 503, not a hung request.
    pub busy_timeout: Duration,
    /// Who copies the WAL back into the database file.
    pub checkpoints: Checkpoints,
    /// WAL size (in pages) at which it is copied back and restarted from its beginning.
    pub checkpoint_pages: u32,
    /// When a committed record is on stable storage.
    pub durability: Durability,
}

/// When a committed record is on stable storage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Every group commit is fsynced before its requests are forwarded (`synchronous=FULL`):
    /// no power loss or kernel crash loses the record of a forwarded request.
    #[default]
    Fsync,
    /// A group commit is in the operating system's hands before its requests are forwarded,
    /// so a crash or `kill -9` of the agent loses nothing, and the checkpointer thread fsyncs
    /// the WAL this often (`synchronous=NORMAL`; later while a checkpoint of the same thread or
    /// the disk stalls it): a power loss or kernel crash can lose the records of that last
    /// interval. For audit disks whose fsync stalls.
    Background { fsync_interval: Duration },
}

/// Who checkpoints the WAL (<https://www.sqlite.org/wal.html#ckpt>).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checkpoints {
    /// `SQLite` itself, inside the commit that crosses `checkpoint_pages`: that commit (and every
    /// record waiting for the next one) also waits for the copy and the database file's fsync.
    Inline,
    /// The connection's commits never checkpoint; the audit writer runs a checkpointer thread
    /// with a connection of its own, and only finishes the last few pages itself so the WAL can
    /// restart (see `checkpoint.rs`).
    Background,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_millis(200),
            checkpoints: Checkpoints::Inline,
            // ~16 MiB rather than SQLite's 4 MiB: a page rewritten by many group commits is
            // copied into the database once per checkpoint, so fewer checkpoints write less.
            checkpoint_pages: 4000,
            durability: Durability::Fsync,
        }
    }
}

/// The last entry of the chain; the default is an empty chain's (seq 0, [`GENESIS`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Head {
    /// 0 for an empty store.
    pub seq: u64,
    pub hash: Hash,
}

/// Opens (creating if needed) the store for reading and writing.
pub fn open(path: &Path, opts: &StoreOptions) -> Result<Connection, AuditError> {
    let err = |source| AuditError::Open {
        path: path.to_owned(),
        source,
    };
    let conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(opts.busy_timeout).map_err(err)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(AuditError::NotWal {
            path: path.to_owned(),
            mode,
        });
    }
    let synchronous = match opts.durability {
        Durability::Fsync => "FULL",
        Durability::Background { .. } => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(err)?;
    // The patient index takes random inserts; a 32 MiB page cache keeps its hot pages in memory.
    conn.pragma_update(None, "cache_size", -32 * 1024)
        .map_err(err)?;
    let autocheckpoint = match opts.checkpoints {
        Checkpoints::Inline => opts.checkpoint_pages,
        Checkpoints::Background => 0,
    };
    conn.pragma_update(None, "wal_autocheckpoint", autocheckpoint)
        .map_err(err)?;
    // Keep the WAL from staying huge after a burst; checkpoints truncate it to this size.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
        .map_err(err)?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
    if version > SCHEMA_VERSION {
        return Err(AuditError::SchemaTooNew {
            path: path.to_owned(),
            version,
        });
    }
    // Only a new store is written to here: reopening after a failure (a full disk) must not
    // need space.
    if version < SCHEMA_VERSION {
        migrate(&conn, version).map_err(err)?;
    }
    Ok(conn)
}

/// Brings a store of an older schema (or a new, empty file) to [`SCHEMA_VERSION`], in one
/// transaction: a failure leaves the store as it was.
fn migrate(conn: &Connection, version: i64) -> Result<(), rusqlite::Error> {
    let table = |name: &str| -> Result<bool, rusqlite::Error> {
        conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [name],
            |r| r.get(0),
        )
    };
    let [aside, moves] = if version == 3 {
        from_version_3()
    } else if table("entries")? {
        from_version_2()
    } else {
        [String::new(), String::new()]
    };
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE; {aside} {schema} {moves} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;",
        schema = schema()
    ))
}

/// Opens an existing store without creating or migrating anything (queries, verify).
pub fn open_read_only(path: &Path) -> Result<Connection, AuditError> {
    let err = |source| AuditError::Open {
        path: path.to_owned(),
        source,
    };
    // What the journal holds beyond the index is indexed first, so no committed record is
    // missing from the answer; a deleted index is rebuilt here.
    let journal = super::indexer::journal_dir(path).exists();
    let caught_up = if path.exists() || journal {
        super::indexer::catch_up(path).map(drop)
    } else {
        Ok(())
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(err)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
    super::pindex::attach_read_only(&conn, path);
    if let Err(e) = caught_up {
        // The index cannot be written (a full disk, read-only media): the journal's tail is laid
        // over it for this connection instead.
        tracing::warn!(error = %super::writer::error_chain(&e), "the audit index cannot be brought up to the journal; reading the journal's tail beside it");
        super::indexer::overlay_tail(&conn, path)?;
    }
    Ok(conn)
}

/// Reads the chain head.
pub fn head(conn: &Connection) -> Result<Head, rusqlite::Error> {
    let row = conn
        .query_row(
            "SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
        )
        .optional()?;
    Ok(match row {
        None => Head {
            seq: 0,
            hash: GENESIS,
        },
        // A head whose hash BLOB was mangled still gets a successor; `verify` reports the damage.
        Some((seq, hash)) => Head {
            seq: u64::try_from(seq).unwrap_or(0),
            hash: chain::from_blob(&hash).unwrap_or(GENESIS),
        },
    })
}

/// Retention limits. Whichever limit removes more wins, but never past what a registered
/// exporter has yet to send (see `export.rs`): an exporter that falls behind holds records back
/// rather than losing them, and `health()` shows the store growing.
#[derive(Clone, Debug, Default)]
pub struct Retention {
    /// Remove entries older than this.
    pub max_age: Option<Duration>,
    /// Keep the live data of the database file under this many bytes.
    pub max_bytes: Option<u64>,
    /// At most this many entries per pruning transaction, so a big prune never stalls commits.
    pub max_batch: u64,
}

/// What retention would prune now, after `head`, as the chained [`PruneMarker`] that records
/// it; `None` if nothing is due. The writer appends the marker to the journal, then removes the
/// entries from the index and the journal segments that hold nothing newer.
pub fn plan_prune(
    conn: &Connection,
    head: Head,
    retention: &Retention,
) -> Result<Option<PruneMarker>, AuditError> {
    let read = |source| AuditError::Read { source };
    let Some(first) = first_seq(conn).map_err(read)? else {
        return Ok(None);
    };
    let Some(last) = prune_bound(conn, first, head, retention)? else {
        return Ok(None);
    };
    let last_hash: Vec<u8> = conn
        .query_row(
            "SELECT hash FROM entries WHERE seq = ?1",
            [seq_i64(last)],
            |r| r.get(0),
        )
        .map_err(read)?;
    let reason = if retention.max_age.is_some() {
        "max-age"
    } else {
        "max-bytes"
    };
    Ok(Some(PruneMarker {
        time: record::now(),
        first_seq: first,
        last_seq: last,
        count: last - first + 1,
        last_hash: chain::to_hex(&last_hash),
        reason: reason.to_owned(),
    }))
}

/// The last seq retention may remove, or `None`.
fn prune_bound(
    conn: &Connection,
    first: u64,
    head: Head,
    retention: &Retention,
) -> Result<Option<u64>, AuditError> {
    let read = |source| AuditError::Read { source };
    let mut bound: Option<u64> = None;
    if let Some(age) = retention.max_age {
        let age_us = i64::try_from(age.as_micros()).unwrap_or(i64::MAX);
        let cutoff = record::now().as_microsecond().saturating_sub(age_us);
        // Entries are appended in time order except for small clock skew between callers; the
        // first recent entry ends the prunable prefix.
        let first_recent: Option<i64> = conn
            .query_row(
                "SELECT min(seq) FROM entries WHERE time_us >= ?1",
                [cutoff],
                |r| r.get(0),
            )
            .map_err(read)?;
        let last_old = first_recent.map_or(head.seq, |s| {
            u64::try_from(s).unwrap_or(0).saturating_sub(1)
        });
        bound = bound.max((last_old >= first).then_some(last_old));
    }
    if let Some(max_bytes) = retention.max_bytes {
        bound = bound.max(size_bound(conn, first, head, max_bytes).map_err(read)?);
    }
    let exporters: Option<i64> = conn
        .query_row("SELECT min(seq) FROM export_cursors", [], |r| r.get(0))
        .map_err(read)?;
    if let Some(sent) = exporters {
        bound = bound.map(|b| b.min(u64::try_from(sent).unwrap_or(0)));
    }
    let cap = first.saturating_add(retention.max_batch.max(1)) - 1;
    Ok(bound.map(|b| b.min(cap)).filter(|b| *b >= first))
}

/// Removing entries in proportion to the excess brings the live size under the limit (with 10%
/// headroom so the next prune is not due right away).
fn size_bound(
    conn: &Connection,
    first: u64,
    head: Head,
    max_bytes: u64,
) -> Result<Option<u64>, rusqlite::Error> {
    let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    let pages: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0))?;
    let free: i64 = conn.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
    let used = u64::try_from((pages - free) * page_size).unwrap_or(0);
    if used <= max_bytes || head.seq < first {
        return Ok(None);
    }
    let count = head.seq - first + 1;
    let target = max_bytes / 10 * 9;
    let excess = u128::from(used - target);
    let remove = (excess * u128::from(count)).div_ceil(u128::from(used));
    let remove = u64::try_from(remove).unwrap_or(count).clamp(1, count);
    Ok(Some(first + remove - 1))
}

pub(crate) fn first_seq(conn: &Connection) -> Result<Option<u64>, rusqlite::Error> {
    let s: Option<i64> = conn.query_row("SELECT min(seq) FROM entries", [], |r| r.get(0))?;
    Ok(s.and_then(|s| u64::try_from(s).ok()))
}

pub(crate) fn seq_i64(seq: u64) -> i64 {
    // Sequence numbers come from this store, which starts at 1 and adds 1 per entry.
    i64::try_from(seq).unwrap_or(i64::MAX)
}
