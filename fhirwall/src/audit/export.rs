//! Export for central collection, each stream with a durable cursor in the store itself.
//!
//! A cursor (`export_cursors` row) says "every entry up to this seq was delivered". It is saved
//! after each delivery, and retention never prunes past the slowest cursor, so an outage of the
//! collector delays records but loses none. The export connection uses `synchronous=NORMAL`:
//! a cursor update survives a crash of the exporter (the WAL is in the OS), and after a power
//! loss at worst the last few deliveries are repeated; the records themselves are never at risk.
//!
//! - JSON lines: every chained entry as `{"seq":N,"prevHash":"..","hash":"..","entry":<body>}`,
//!   where `<body>` is the stored body byte for byte, so a collector can recompute the chain and
//!   so holds the external anchor `verify` needs. Writing to a file resumes after the file's last
//!   line, so a crash between writing and saving the cursor repeats nothing.
//! - FHIR: each request as BALP `AuditEvents` `POSTed` to an `AuditEvent` endpoint, in chain order,
//!   retried with exponential backoff until the collector accepts it (2xx).

use std::{
    fs::{File, OpenOptions},
    io::{Read as _, Seek as _, SeekFrom, Write as _},
    path::{Path, PathBuf},
    time::Duration,
};

use rusqlite::{Connection, OptionalExtension as _};

use super::{
    AuditError, balp,
    bodies::Bodies,
    chain,
    query::{Filter, query},
    record, store,
};
use crate::outbound::{Client, Target};

/// Entries read per round.
const BATCH: u32 = 500;

/// The durable position of one export stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub name: String,
    pub seq: u64,
}

impl Cursor {
    /// Loads cursor `name`, registering it at 0 if new (from then on retention waits for it).
    pub fn load(conn: &Connection, name: &str) -> Result<Self, AuditError> {
        conn.execute(
            "INSERT OR IGNORE INTO export_cursors (name, seq, updated_us) VALUES (?1, 0, ?2)",
            (name, record::now().as_microsecond()),
        )
        .map_err(AuditError::write)?;
        let seq: i64 = conn
            .query_row(
                "SELECT seq FROM export_cursors WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .map_err(|source| AuditError::Read { source })?;
        Ok(Self {
            name: name.to_owned(),
            seq: u64::try_from(seq).unwrap_or(0),
        })
    }

    pub fn save(&mut self, conn: &Connection, seq: u64) -> Result<(), AuditError> {
        conn.execute(
            "UPDATE export_cursors SET seq = ?1, updated_us = ?2 WHERE name = ?3",
            (
                store::seq_i64(seq),
                record::now().as_microsecond(),
                &self.name,
            ),
        )
        .map_err(AuditError::write)?;
        self.seq = seq;
        Ok(())
    }
}

/// Opens an existing store for an exporter (see the module doc for `synchronous=NORMAL`).
pub(super) fn open_for_export(db: &Path) -> Result<Connection, AuditError> {
    if !db.exists() {
        return Err(AuditError::Io {
            what: format!("no audit store at {}", db.display()),
            source: std::io::ErrorKind::NotFound.into(),
        });
    }
    super::indexer::catch_up(db)?;
    let conn = store::open(
        db,
        &store::StoreOptions {
            busy_timeout: Duration::from_secs(5),
            ..store::StoreOptions::default()
        },
    )?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(|source| AuditError::Open {
            path: db.to_owned(),
            source,
        })?;
    Ok(conn)
}

/// Where JSON lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JsonlTarget {
    Stdout,
    File(PathBuf),
}

#[derive(Clone, Debug)]
pub struct JsonlExport {
    pub db: PathBuf,
    pub cursor: String,
    pub target: JsonlTarget,
    /// Keep running and export new entries as they are committed.
    pub follow: bool,
    pub poll: Duration,
}

/// Exports entries after the cursor; returns how many were written.
pub fn export_jsonl(cfg: &JsonlExport) -> Result<u64, AuditError> {
    let conn = open_for_export(&cfg.db)?;
    let mut cursor = Cursor::load(&conn, &cfg.cursor)?;
    let mut file = match &cfg.target {
        JsonlTarget::Stdout => None,
        JsonlTarget::File(path) => Some(open_output(path)?),
    };
    if let Some((path, f)) = file.as_mut() {
        let written = last_seq_in(f).map_err(|e| AuditError::Io {
            what: format!("reading {}", path.display()),
            source: e,
        })?;
        if written > cursor.seq {
            cursor.save(&conn, written)?;
        }
    }
    let mut total = 0;
    loop {
        let lines = entries_after(&conn, cursor.seq)?;
        let Some(&(last, _)) = lines.last() else {
            if !cfg.follow {
                return Ok(total);
            }
            std::thread::sleep(cfg.poll);
            continue;
        };
        let text: String = lines.iter().flat_map(|(_, l)| [l.as_str(), "\n"]).collect();
        write_out(&mut file, text.as_bytes())?;
        cursor.save(&conn, last)?;
        total += lines.len() as u64;
    }
}

fn open_output(path: &Path) -> Result<(PathBuf, File), AuditError> {
    let f = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
        .map_err(|e| AuditError::Io {
            what: format!("opening {}", path.display()),
            source: e,
        })?;
    Ok((path.to_owned(), f))
}

/// Writes and makes durable before the cursor moves.
fn write_out(file: &mut Option<(PathBuf, File)>, bytes: &[u8]) -> Result<(), AuditError> {
    let io = |what: String| move |source| AuditError::Io { what, source };
    if let Some((path, f)) = file {
        f.write_all(bytes)
            .map_err(io(format!("writing {}", path.display())))?;
        f.sync_data()
            .map_err(io(format!("syncing {}", path.display())))
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes)
            .and_then(|()| out.flush())
            .map_err(io("writing stdout".to_owned()))
    }
}

/// The seq of the last complete line of an export file, 0 if none.
fn last_seq_in(f: &mut File) -> std::io::Result<u64> {
    let len = f.seek(SeekFrom::End(0))?;
    let start = len.saturating_sub(256 * 1024);
    f.seek(SeekFrom::Start(start))?;
    let mut tail = String::new();
    f.take(len - start).read_to_string(&mut tail)?;
    let complete = tail.rsplit_once('\n').map_or("", |(done, _)| done);
    let last_line = complete.rsplit('\n').next().unwrap_or("");
    let seq = serde_json::from_str::<serde_json::Value>(last_line)
        .ok()
        .and_then(|v| v.get("seq").and_then(serde_json::Value::as_u64))
        .unwrap_or(0);
    Ok(seq)
}

/// Up to `BATCH` entries after `after` as export lines.
fn entries_after(conn: &Connection, after: u64) -> Result<Vec<(u64, String)>, AuditError> {
    Ok(links_after(conn, after)?
        .into_iter()
        .map(|l| {
            let line = format!(
                r#"{{"seq":{},"prevHash":"{}","hash":"{}","entry":{}}}"#,
                l.seq, l.prev_hash, l.hash, l.body
            );
            (l.seq, line)
        })
        .collect())
}

/// Up to `BATCH` entries after `after`, each with its links and its body as hashed.
pub(super) fn links_after(
    conn: &Connection,
    after: u64,
) -> Result<Vec<super::syslog::Link>, AuditError> {
    let read = |source| AuditError::Read { source };
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, body, frame_at, prev_hash, hash FROM entries WHERE seq > ?1
             ORDER BY seq LIMIT ?2",
        )
        .map_err(read)?;
    let rows = stmt
        .query_map((store::seq_i64(after), BATCH), |r| {
            Ok((
                u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<i64>>(2)?,
                chain::to_hex(&r.get::<_, Vec<u8>>(3)?),
                chain::to_hex(&r.get::<_, Vec<u8>>(4)?),
            ))
        })
        .map_err(read)?;
    let mut bodies = Bodies::of(conn);
    let mut out = Vec::new();
    for row in rows {
        let (seq, body, frame_at, prev_hash, hash) = row.map_err(read)?;
        // Gone meanwhile: retention removed it; the export goes on after it.
        let Some(body) = bodies.get(seq, body, frame_at)? else {
            continue;
        };
        out.push(super::syslog::Link {
            seq,
            prev_hash,
            hash,
            body,
        });
    }
    Ok(out)
}

#[derive(Clone, Debug)]
pub struct FhirExport {
    pub db: PathBuf,
    pub cursor: String,
    /// The `AuditEvent` endpoint, e.g. `https://siem.example/fhir/AuditEvent`.
    pub url: String,
    pub follow: bool,
    pub poll: Duration,
    /// In follow mode, wait this long for a forwarded request's completion before sending its
    /// `AuditEvent` without one.
    pub settle: Duration,
    pub max_backoff: Duration,
    /// Give up on an event after this many failed attempts (`None`: never, for `--follow`).
    pub max_attempts: Option<u32>,
}

/// POSTs `AuditEvents` for requests after the cursor; returns how many requests were delivered.
pub async fn export_fhir(cfg: &FhirExport) -> Result<u64, AuditError> {
    let conn = open_for_export(&cfg.db)?;
    let mut cursor = Cursor::load(&conn, &cfg.cursor)?;
    let mut client = Client::new(Target::parse(&cfg.url)?)?;
    let mut total = 0;
    loop {
        let rows = query(
            &conn,
            &Filter {
                after_seq: Some(cursor.seq),
                limit: Some(BATCH),
                ..Filter::default()
            },
        )?;
        let mut waiting = false;
        for row in &rows {
            if cfg.follow && unsettled(row, cfg.settle) {
                waiting = true;
                break;
            }
            for event in balp::audit_events(row) {
                deliver(&mut client, cfg, &event).await?;
            }
            cursor.save(&conn, row.seq)?;
            total += 1;
        }
        if rows.is_empty() || waiting {
            if !cfg.follow {
                return Ok(total);
            }
            tokio::time::sleep(cfg.poll).await;
        }
    }
}

fn unsettled(row: &super::QueryRow, settle: Duration) -> bool {
    let age_us = record::now().as_microsecond() - row.record.time.as_microsecond();
    let settle_us = i64::try_from(settle.as_micros()).unwrap_or(i64::MAX);
    row.completion.is_none() && row.record.decision.forwarded() && age_us < settle_us
}

/// POSTs one event until a 2xx, backing off exponentially between attempts.
async fn deliver(
    client: &mut Client,
    cfg: &FhirExport,
    event: &serde_json::Value,
) -> Result<(), AuditError> {
    let body = bytes::Bytes::from(
        serde_json::to_vec(event).map_err(|source| AuditError::Serialize { source })?,
    );
    let mut backoff = Duration::from_millis(250);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let err = match client.post("application/fhir+json", body.clone()).await {
            Ok(status) if (200..300).contains(&status) => return Ok(()),
            // Method not allowed, not implemented, no such endpoint: a refusal, at once.
            Ok(status @ (404 | 405 | 501)) => {
                return Err(AuditError::NotAccepted {
                    url: cfg.url.clone(),
                    status,
                });
            }
            Ok(status) => AuditError::HttpStatus {
                url: cfg.url.clone(),
                status,
            },
            Err(e) => e.into(),
        };
        if cfg.max_attempts.is_some_and(|max| attempts >= max) {
            return Err(err);
        }
        tracing::warn!(error = %super::writer::error_chain(&err), attempts, "AuditEvent delivery failed; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(cfg.max_backoff);
    }
}

/// The last seq a cursor recorded, for status displays.
pub fn cursor_position(conn: &Connection, name: &str) -> Result<Option<u64>, AuditError> {
    let seq: Option<i64> = conn
        .query_row(
            "SELECT seq FROM export_cursors WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .optional()
        .map_err(|source| AuditError::Read { source })?;
    Ok(seq.and_then(|s| u64::try_from(s).ok()))
}
