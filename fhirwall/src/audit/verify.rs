//! `fhirwall audit verify`: walks the chain and names every entry that does not fit.
//!
//! What is caught, and how:
//! - an edited body: its hash no longer matches `link(prev_hash, seq, body)`;
//! - an edited index column or patient row: it no longer matches what the body says;
//! - a deleted entry: a gap in the gapless sequence numbers (and a broken link after it);
//! - an inserted entry: its hash or its link does not fit its neighbours;
//! - reordered entries: the seq is hashed, so an entry moved to another seq no longer matches;
//! - a pruned prefix without its chained marker: the first entry's predecessor is unaccounted for.
//!
//! What a hash chain alone cannot catch: removing the newest entries (truncating the tail), or
//! rewriting the chain from some point on with freshly computed hashes. Both need an anchor kept
//! outside this database: the `seq:hash` head that `verify` prints (store it elsewhere and pass it
//! back with `--anchor`), or the exported stream, whose lines carry seq and hash. An export
//! cursor in the store that is ahead of the head is reported as truncation too.

mod against;

use std::fmt;

use rusqlite::{Connection, OptionalExtension as _};

use super::{
    AuditError,
    bodies::Bodies,
    chain::{self, GENESIS, Hash},
    index::{COLUMNS, IndexCols},
    pindex,
    record::Entry,
    store::Head,
};

/// Stop listing after this many findings; the first ones say where the damage starts.
const MAX_FINDINGS: usize = 1_000;

/// A chain position known from outside the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Anchor {
    pub seq: u64,
    pub hash: Hash,
}

impl std::str::FromStr for Anchor {
    type Err = String;

    /// `SEQ:HEX`, as printed by `verify`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (seq, hash) = s.split_once(':').ok_or("expected SEQ:SHA256HEX")?;
        let seq = seq
            .parse()
            .map_err(|_| format!("bad sequence number {seq:?}"))?;
        let hash = chain::from_hex(hash).ok_or("expected 64 hex digits after ':'")?;
        Ok(Self { seq, hash })
    }
}

impl fmt::Display for Anchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, chain::to_hex(&self.hash))
    }
}

/// The result of a walk over the chain.
#[derive(Clone, Debug, Default)]
pub struct Verification {
    pub entries: u64,
    pub first_seq: Option<u64>,
    pub head: Option<Anchor>,
    /// Entries before this seq were removed by retention, as a chained marker attests.
    pub pruned_through: Option<u64>,
    pub findings: Vec<Finding>,
}

impl Verification {
    #[must_use]
    pub fn is_intact(&self) -> bool {
        self.findings.is_empty()
    }
}

/// One problem, at one place in the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub seq: u64,
    pub problem: Problem,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The stored content does not hash to the stored hash.
    ContentMismatch,
    /// The entry does not name the previous entry's hash as its predecessor.
    BrokenLink { previous: Option<u64> },
    /// Sequence numbers `from..=to` are missing.
    Missing { from: u64, to: u64 },
    /// The first entry is not seq 1 and no retention marker accounts for what came before.
    UnaccountedStart,
    /// An index column differs from the body.
    ColumnEdited { column: String },
    /// The patient index differs from the body.
    PatientsEdited,
    /// Patient index rows without an entry.
    OrphanPatients { count: u64 },
    /// The patient index copy (`pindex.rs`) lacks `missing` rows of the chained patient rows it
    /// claims to cover, or has `extra` rows they do not: edited, so queries by patient would
    /// hide or invent records.
    PatientCopyDiffers { missing: u64, extra: u64 },
    /// The body is not a valid entry.
    Unreadable { detail: String },
    /// The anchor's position holds a different hash: rewritten history.
    AnchorMismatch,
    /// The chain ends before a position known from outside (anchor or export cursor): truncated.
    Truncated { head: u64, known: String },
    /// The journal cannot be read as a chain from here on.
    JournalDamaged { detail: String },
    /// The index row differs from the journal's frame of the same seq.
    IndexDiffers,
    /// The journal's entries `from..=to` have no index row.
    NotIndexed { from: u64, to: u64 },
    /// The collector's copy is not a chain of its own (edited on its way or at the collector).
    CopyBroken { detail: String },
    /// A collector received this entry; the host no longer has it.
    RemovedAfterExport,
    /// The host holds other content at this position than the collector received.
    ChangedAfterExport,
    /// The host holds here what the collector received at seq `from`.
    MovedAfterExport { from: u64 },
    /// Same content, another hash: the chain before it was rewritten.
    RewrittenAfterExport,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seq = self.seq;
        match &self.problem {
            Problem::ContentMismatch => {
                write!(
                    f,
                    "seq {seq}: content does not match its hash (edited, forged, or moved from another position)"
                )
            }
            Problem::BrokenLink { previous: Some(p) } => {
                write!(
                    f,
                    "seq {seq}: chain broken, does not follow seq {p} (entry inserted, deleted or reordered)"
                )
            }
            Problem::BrokenLink { previous: None } => {
                write!(f, "seq {seq}: first entry does not start the chain")
            }
            Problem::Missing { from, to } => {
                write!(f, "seq {from}..={to}: missing (deleted) before seq {seq}")
            }
            Problem::UnaccountedStart => {
                write!(
                    f,
                    "seq {seq}: chain starts here but no retention marker accounts for earlier entries (deleted)"
                )
            }
            Problem::ColumnEdited { column } => {
                write!(f, "seq {seq}: index column {column} edited")
            }
            Problem::PatientsEdited => write!(f, "seq {seq}: patient index edited"),
            Problem::OrphanPatients { count } => {
                write!(f, "{count} patient index rows with no entry (inserted)")
            }
            Problem::PatientCopyDiffers { missing, extra } => write!(
                f,
                "patient index copy edited: {missing} rows missing, {extra} rows not in the store"
            ),
            Problem::Unreadable { detail } => write!(f, "seq {seq}: unreadable entry: {detail}"),
            Problem::AnchorMismatch => write!(
                f,
                "seq {seq}: hash differs from the external anchor (history rewritten)"
            ),
            Problem::JournalDamaged { detail } => {
                write!(
                    f,
                    "seq {seq}: the journal is damaged after this entry: {detail}"
                )
            }
            Problem::IndexDiffers => write!(
                f,
                "seq {seq}: the index differs from the journal (index edited or replaced)"
            ),
            Problem::NotIndexed { from, to } => write!(
                f,
                "seq {from}..={to}: in the journal but missing from the index (deleted)"
            ),
            Problem::CopyBroken { detail } => {
                write!(f, "seq {seq} of the collector's copy: {detail}")
            }
            Problem::RemovedAfterExport => write!(
                f,
                "seq {seq}: removed from the host after the collector received it"
            ),
            Problem::ChangedAfterExport => write!(
                f,
                "seq {seq}: changed on the host after the collector received it"
            ),
            Problem::MovedAfterExport { from } => write!(
                f,
                "seq {seq}: holds what the collector received as seq {from} (reordered on the host)"
            ),
            Problem::RewrittenAfterExport => write!(
                f,
                "seq {seq}: content as received but another hash (history before it rewritten on the host)"
            ),
            Problem::Truncated { head, known } => {
                write!(
                    f,
                    "seq {seq}: missing, the chain ends at seq {head} but {known} (tail truncated)"
                )
            }
        }
    }
}

/// One stored row, as read for verification.
struct Stored {
    seq: u64,
    cols: IndexCols,
    /// `None` when it could not be read (a finding says why).
    body: Option<String>,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
}

/// Walks the whole chain, then checks it against a collector's copy of it (`fhirwall audit
/// export --jsonl` lines): every entry the collector received must still be on the host, at
/// its position, as received. `received` in the result counts the copy's entries.
pub fn verify_against(
    conn: &Connection,
    anchors: &[Anchor],
    copy: &std::path::Path,
) -> Result<(Verification, u64), AuditError> {
    let mut verification = verify(conn, anchors)?;
    let pruned = verification.pruned_through.unwrap_or(0);
    let (findings, received) = against::against(conn, copy, pruned)?;
    let room = MAX_FINDINGS.saturating_sub(verification.findings.len());
    verification
        .findings
        .extend(findings.into_iter().take(room));
    Ok((verification, received))
}

/// Walks the whole chain. `anchors` are positions known from outside the store.
pub fn verify(conn: &Connection, anchors: &[Anchor]) -> Result<Verification, AuditError> {
    let read = |source| AuditError::Read { source };
    let mut sorted = anchors.to_vec();
    sorted.sort_by_key(|a| a.seq);
    let mut walk = Walk {
        anchor_seen: vec![false; sorted.len()],
        anchors: sorted,
        ..Walk::default()
    };
    let sql =
        format!("SELECT seq, {COLUMNS}, body, prev_hash, hash, frame_at FROM entries ORDER BY seq");
    let mut stmt = conn.prepare(&sql).map_err(read)?;
    let mut patients_stmt = conn
        .prepare("SELECT seq, patient FROM patients ORDER BY seq, patient")
        .map_err(read)?;
    let mut patients = patients_stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
        .map_err(read)?
        .peekable();
    let rows = stmt
        .query_map([], |r| {
            let seq = u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0);
            Ok((
                Stored {
                    seq,
                    cols: IndexCols::read(r, 1)?,
                    body: r.get(15)?,
                    prev_hash: r.get(16)?,
                    hash: r.get(17)?,
                },
                r.get::<_, Option<i64>>(18)?,
            ))
        })
        .map_err(read)?;
    let mut bodies = Bodies::of(conn);
    for row in rows {
        let (mut row, frame_at) = row.map_err(read)?;
        let read = bodies.get(row.seq, row.body.take(), frame_at);
        row.body = match read {
            Ok(Some(body)) => Some(body),
            unreadable => {
                let detail = match unreadable {
                    Err(e) => super::writer::error_chain(&e),
                    _ => "its journal segment is gone".to_owned(),
                };
                walk.find(row.seq, Problem::Unreadable { detail });
                None
            }
        };
        let mut mine = Vec::new();
        while let Some(Ok((seq, _))) = patients.peek() {
            let seq = u64::try_from(*seq).unwrap_or(0);
            if seq > row.seq {
                break;
            }
            if let Some(Ok((_, p))) = patients.next() {
                if seq == row.seq {
                    mine.push(p);
                } else {
                    walk.orphans += 1;
                }
            }
        }
        walk.entry(&row, &mine);
    }
    walk.orphans += patients.count() as u64;
    let cursors = export_cursors(conn).map_err(read)?;
    let copy = match pindex::usable_upto(conn) {
        Some(upto) if upto > 0 => pindex::differences(conn, upto).map_err(read)?,
        _ => (0, 0),
    };
    let mut verification = walk.finish(&cursors);
    if let Some(db) = conn.path().filter(|p| !p.is_empty()) {
        let dir = super::indexer::journal_dir(std::path::Path::new(db));
        let pruned = verification.pruned_through.unwrap_or(0);
        check_journal(conn, &dir, pruned, &mut verification.findings)?;
    }
    if copy != (0, 0) && verification.findings.len() < MAX_FINDINGS {
        verification.findings.push(Finding {
            seq: 0,
            problem: Problem::PatientCopyDiffers {
                missing: copy.0,
                extra: copy.1,
            },
        });
    }
    Ok(verification)
}

/// Walks the journal (the commit point) as one chain across its segments and checks that the
/// index holds each of its entries as it is.
fn check_journal(
    conn: &Connection,
    dir: &std::path::Path,
    pruned_through: u64,
    findings: &mut Vec<Finding>,
) -> Result<(), AuditError> {
    let read = |source| AuditError::Read { source };
    let mut find = |seq, problem| {
        if findings.len() < MAX_FINDINGS {
            findings.push(Finding { seq, problem });
        }
    };
    let mut stmt = conn
        .prepare("SELECT hash FROM entries WHERE seq = ?1")
        .map_err(read)?;
    let mut expect: Option<Head> = None;
    let mut missing: Option<(u64, u64)> = None;
    let segments = super::journal::segments(dir).map_err(AuditError::journal)?;
    let last = segments.len().saturating_sub(1);
    for (i, (_, path)) in segments.iter().enumerate() {
        let mut reader =
            super::journal::SegmentReader::open(path, expect).map_err(AuditError::journal)?;
        loop {
            let frame = match reader.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    find(
                        expect.map_or(0, |h| h.seq),
                        Problem::JournalDamaged {
                            detail: e.to_string(),
                        },
                    );
                    if i < last {
                        return Ok(());
                    }
                    break;
                }
            };
            expect = Some(Head {
                seq: frame.seq,
                hash: frame.hash,
            });
            if frame.seq <= pruned_through {
                // Retention removed it from the index; its segment goes once nothing newer is
                // in it.
                continue;
            }
            let indexed: Option<Vec<u8>> = stmt
                .query_row([super::store::seq_i64(frame.seq)], |r| r.get(0))
                .optional()
                .map_err(read)?;
            match indexed {
                None => {
                    missing =
                        Some(missing.map_or((frame.seq, frame.seq), |(from, _)| (from, frame.seq)));
                    continue;
                }
                Some(hash) if hash != frame.hash => find(frame.seq, Problem::IndexDiffers),
                Some(_) => {}
            }
            if let Some((from, to)) = missing.take() {
                find(to, Problem::NotIndexed { from, to });
            }
        }
    }
    if let Some((from, to)) = missing {
        find(to, Problem::NotIndexed { from, to });
    }
    Ok(())
}

fn export_cursors(conn: &Connection) -> rusqlite::Result<Vec<(String, u64)>> {
    let mut stmt = conn.prepare("SELECT name, seq FROM export_cursors")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
        ))
    })?;
    rows.collect()
}

#[derive(Default)]
struct Walk {
    out: Verification,
    prev: Option<Head>,
    first_prev_hash: Option<Vec<u8>>,
    /// (last pruned seq, hash of it) for every retention marker seen.
    markers: Vec<(u64, Option<Hash>)>,
    /// Sorted by seq; `anchor_seen` marks those whose position the walk reached.
    anchors: Vec<Anchor>,
    anchor_seen: Vec<bool>,
    orphans: u64,
}

impl Walk {
    fn find(&mut self, seq: u64, problem: Problem) {
        if self.out.findings.len() < MAX_FINDINGS {
            self.out.findings.push(Finding { seq, problem });
        }
    }

    fn entry(&mut self, row: &Stored, patients: &[String]) {
        self.out.entries += 1;
        let seq = row.seq;
        let stored_hash = chain::from_blob(&row.hash);
        let prev_hash = chain::from_blob(&row.prev_hash);
        if let Some(body) = &row.body {
            let recomputed = prev_hash.map(|p| chain::link(&p, seq, body.as_bytes()));
            if recomputed.is_none() || recomputed != stored_hash {
                self.find(seq, Problem::ContentMismatch);
            }
        }
        match self.prev {
            None => {
                self.out.first_seq = Some(seq);
                self.first_prev_hash = Some(row.prev_hash.clone());
            }
            Some(prev) => {
                if seq != prev.seq + 1 {
                    self.find(
                        seq,
                        Problem::Missing {
                            from: prev.seq + 1,
                            to: seq - 1,
                        },
                    );
                }
                if prev_hash != Some(prev.hash) {
                    self.find(
                        seq,
                        Problem::BrokenLink {
                            previous: Some(prev.seq),
                        },
                    );
                }
            }
        }
        self.check_body(row, patients);
        let hash = stored_hash.unwrap_or(GENESIS);
        if let Ok(i) = self.anchors.binary_search_by_key(&seq, |a| a.seq) {
            self.anchor_seen[i] = true;
            if self.anchors[i].hash != hash {
                self.find(seq, Problem::AnchorMismatch);
            }
        }
        self.prev = Some(Head { seq, hash });
    }

    fn check_body(&mut self, row: &Stored, patients: &[String]) {
        let Some(body) = &row.body else {
            return;
        };
        let entry: Entry = match serde_json::from_str(body) {
            Ok(e) => e,
            Err(e) => {
                return self.find(
                    row.seq,
                    Problem::Unreadable {
                        detail: e.to_string(),
                    },
                );
            }
        };
        for column in column_differences(&IndexCols::of(&entry), &row.cols) {
            self.find(
                row.seq,
                Problem::ColumnEdited {
                    column: column.to_owned(),
                },
            );
        }
        let mut expected = entry.patients().to_vec();
        expected.sort_unstable();
        if expected != patients {
            self.find(row.seq, Problem::PatientsEdited);
        }
        if let Entry::Pruned(m) = entry {
            self.markers
                .push((m.last_seq, chain::from_hex(&m.last_hash)));
        }
    }

    fn finish(mut self, cursors: &[(String, u64)]) -> Verification {
        if self.orphans > 0 {
            let orphans = self.orphans;
            self.find(0, Problem::OrphanPatients { count: orphans });
        }
        self.check_start();
        let head_seq = self.prev.map_or(0, |h| h.seq);
        let unseen: Vec<Anchor> = self
            .anchors
            .iter()
            .zip(&self.anchor_seen)
            .filter(|(_, seen)| !**seen)
            .map(|(a, _)| *a)
            .collect();
        for anchor in &unseen {
            self.check_unseen_anchor(anchor, head_seq);
        }
        for (name, seq) in cursors {
            if *seq > head_seq {
                self.find(
                    *seq,
                    Problem::Truncated {
                        head: head_seq,
                        known: format!("exporter {name:?} already sent it"),
                    },
                );
            }
        }
        self.out.head = self.prev.map(|h| Anchor {
            seq: h.seq,
            hash: h.hash,
        });
        self.out.findings.sort_by_key(|f| f.seq);
        self.out
    }

    fn check_start(&mut self) {
        let (Some(first), Some(prev_hash)) = (self.out.first_seq, self.first_prev_hash.take())
        else {
            return;
        };
        let prev_hash = chain::from_blob(&prev_hash);
        if first == 1 {
            if prev_hash != Some(GENESIS) {
                self.find(first, Problem::BrokenLink { previous: None });
            }
            return;
        }
        let accounted = self
            .markers
            .iter()
            .any(|(last, hash)| *last == first - 1 && hash.is_some() && *hash == prev_hash);
        if accounted {
            self.out.pruned_through = Some(first - 1);
        } else {
            self.find(first, Problem::UnaccountedStart);
        }
    }

    /// An anchor whose position is not in the store: past the head (truncated), or pruned (then
    /// a marker that recorded that position must agree), or in a gap (already reported missing).
    fn check_unseen_anchor(&mut self, anchor: &Anchor, head_seq: u64) {
        if anchor.seq > head_seq {
            self.find(
                anchor.seq,
                Problem::Truncated {
                    head: head_seq,
                    known: format!("the anchor {anchor} names it"),
                },
            );
            return;
        }
        let disagrees = self
            .markers
            .iter()
            .any(|(last, hash)| *last == anchor.seq && *hash != Some(anchor.hash));
        if disagrees {
            self.find(anchor.seq, Problem::AnchorMismatch);
        }
    }
}

fn column_differences(want: &IndexCols, got: &IndexCols) -> Vec<&'static str> {
    let checks = [
        ("kind", want.kind == got.kind),
        ("time_us", want.time_us == got.time_us),
        ("correlation_id", want.correlation_id == got.correlation_id),
        ("ref_seq", want.ref_seq == got.ref_seq),
        ("integration", want.integration == got.integration),
        ("exe", want.workload.exe == got.workload.exe),
        (
            "exe_sha256",
            want.workload.exe_sha256 == got.workload.exe_sha256,
        ),
        ("pid", want.workload.pid == got.workload.pid),
        (
            "container_id",
            want.workload.container_id == got.workload.container_id,
        ),
        ("pod_uid", want.workload.pod_uid == got.workload.pod_uid),
        (
            "systemd_unit",
            want.workload.systemd_unit == got.workload.systemd_unit,
        ),
        ("credential_fp", want.credential_fp == got.credential_fp),
        ("resource_type", want.resource_type == got.resource_type),
        ("decision", want.decision == got.decision),
    ];
    checks
        .into_iter()
        .filter(|(_, same)| !same)
        .map(|(name, _)| name)
        .collect()
}
