//! `fhirwall audit verify --against FILE`: the host's chain checked against what a collector
//! received: the JSON lines of `fhirwall audit export --jsonl`, or the file a syslog repository
//! wrote from `--syslog` (one RFC 5424 message per line, as rsyslog's
//! `RSYSLOG_SyslogProtocol23Format` writes them). A root attacker on the host can
//! rewrite its whole chain consistently, which no walk of the chain alone can see; the
//! collector's copy, out of their reach, is the anchor: every entry it holds must still be on
//! the host, at the same position, with the same content.
//!
//! The copy itself is checked first: each line must hash to its own hash, and consecutive lines
//! must link. Then each of its entries against the host: removed, changed, moved to another
//! position (reordered), or rewritten (same content, another hash: the chain before it was).

use std::{collections::HashMap, io::BufRead as _, path::Path};

use rusqlite::{Connection, OptionalExtension as _};

use super::{Finding, MAX_FINDINGS, Problem};
use crate::audit::{
    AuditError,
    bodies::Bodies,
    chain::{self, Hash},
};

/// One entry as the collector received it.
struct Received {
    seq: u64,
    prev: Hash,
    hash: Hash,
    body: String,
}

/// Checks the store behind `conn` against the collector's copy in `file`; entries before
/// `pruned_through` may be gone by retention.
pub fn against(
    conn: &Connection,
    file: &Path,
    pruned_through: u64,
) -> Result<(Vec<Finding>, u64), AuditError> {
    let received = read_copy(file)?;
    let mut findings = Vec::new();
    let mut find = |seq, problem| {
        if findings.len() < MAX_FINDINGS {
            findings.push(Finding { seq, problem });
        }
    };
    // The copy must be a chain of its own.
    let mut previous: Option<&Received> = None;
    for r in &received.entries {
        if chain::link(&r.prev, r.seq, r.body.as_bytes()) != r.hash {
            find(
                r.seq,
                Problem::CopyBroken {
                    detail: "does not hash to its own hash".into(),
                },
            );
        }
        if let Some(p) = previous.filter(|p| p.seq + 1 == r.seq)
            && p.hash != r.prev
        {
            find(
                r.seq,
                Problem::CopyBroken {
                    detail: format!("does not follow seq {}", p.seq),
                },
            );
        }
        previous = Some(r);
    }
    for (line, detail) in &received.unreadable {
        find(
            0,
            Problem::CopyBroken {
                detail: format!("line {line}: {detail}"),
            },
        );
    }
    // Where each received body was, to name a move.
    let by_body: HashMap<&str, u64> = received
        .entries
        .iter()
        .map(|r| (r.body.as_str(), r.seq))
        .collect();
    let read = |source| AuditError::Read { source };
    let mut stmt = conn
        .prepare("SELECT hash, body, frame_at FROM entries WHERE seq = ?1")
        .map_err(read)?;
    let mut bodies = Bodies::of(conn);
    for r in &received.entries {
        let row = stmt
            .query_row([crate::audit::store::seq_i64(r.seq)], |row| {
                Ok((
                    row.get::<_, Vec<u8>>(0)?,
                    row.get::<_, Option<String>>(1)?,
                    row.get::<_, Option<i64>>(2)?,
                ))
            })
            .optional()
            .map_err(read)?;
        let Some((hash, body, frame_at)) = row else {
            if r.seq > pruned_through {
                find(r.seq, Problem::RemovedAfterExport);
            }
            continue;
        };
        let body = bodies.get(r.seq, body, frame_at).ok().flatten();
        let same_hash = chain::from_blob(&hash).is_some_and(|h| h == r.hash);
        match body {
            Some(body) if body == r.body && same_hash => {}
            Some(body) if body == r.body => find(r.seq, Problem::RewrittenAfterExport),
            Some(body) => match by_body.get(body.as_str()) {
                Some(&from) if from != r.seq => find(r.seq, Problem::MovedAfterExport { from }),
                _ => find(r.seq, Problem::ChangedAfterExport),
            },
            None => find(r.seq, Problem::RemovedAfterExport),
        }
    }
    Ok((findings, received.entries.len() as u64))
}

struct Copy {
    entries: Vec<Received>,
    /// Lines that are not export lines, by number.
    unreadable: Vec<(usize, String)>,
}

/// Reads the export's lines: `{"seq":N,"prevHash":"..","hash":"..","entry":BODY}`, BODY the
/// entry exactly as hashed (the exporter writes it verbatim, last).
fn read_copy(file: &Path) -> Result<Copy, AuditError> {
    let io = |source| AuditError::Io {
        what: format!("reading {}", file.display()),
        source,
    };
    let reader = std::io::BufReader::new(std::fs::File::open(file).map_err(io)?);
    let mut copy = Copy {
        entries: Vec::new(),
        unreadable: Vec::new(),
    };
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(&line).or_else(|| parse_syslog(&line)) {
            Some(r) => copy.entries.push(r),
            None => copy.unreadable.push((
                n + 1,
                "neither an `audit export --jsonl` line nor a syslog message of `--syslog`".into(),
            )),
        }
    }
    Ok(copy)
}

fn parse_syslog(line: &str) -> Option<Received> {
    let (seq, prev, hash, body) = crate::audit::syslog::parse_stored(line)?;
    Some(Received {
        seq,
        prev: chain::from_hex(&prev)?,
        hash: chain::from_hex(&hash)?,
        body,
    })
}

fn parse_line(line: &str) -> Option<Received> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Head {
        seq: u64,
        prev_hash: String,
        hash: String,
    }
    let (head, body) = line.split_once(r#","entry":"#)?;
    let body = body.strip_suffix('}')?;
    let head: Head = serde_json::from_str(&format!("{head}}}")).ok()?;
    Some(Received {
        seq: head.seq,
        prev: chain::from_hex(&head.prev_hash)?,
        hash: chain::from_hex(&head.hash)?,
        body: body.to_owned(),
    })
}
