//! Shared fixtures: sample records and seeded stores.

use std::path::{Path, PathBuf};

use jiff::{Timestamp, ToSpan as _};
use tempfile::TempDir;

use crate::audit::{
    AuditConfig, AuditSink, AuditWriter, BreakGlassUse, Disposition, Record, WorkloadRecord,
};

pub const NODE: &str = "ehr-node-1";

/// A workload like the ones on an EHR host: `n` picks one of three.
pub fn workload(n: u64) -> WorkloadRecord {
    let (exe, unit, container) = match n % 3 {
        0 => ("/opt/mirth/bin/mirth", Some("mirth.service"), None),
        1 => ("/usr/local/bin/lab-sync", Some("lab-sync.service"), None),
        _ => ("/app/portal-backend", None, Some("c0ffee00")),
    };
    WorkloadRecord {
        pid: u32::try_from(1000 + n % 3).unwrap_or(0),
        tgid: u32::try_from(1000 + n % 3).unwrap_or(0),
        start_time: 42,
        exe: Some(exe.to_owned()),
        exe_sha256: Some(format!("{:064x}", n % 3)),
        exe_verified: n % 3 != 2,
        uid: 998,
        gid: 998,
        user: Some(format!("svc{}", n % 3)),
        comm: "worker".to_owned(),
        cgroup_path: Some("/system.slice/x.service".to_owned()),
        container_id: container.map(str::to_owned),
        pod_uid: container.map(|_| "pod-1234".to_owned()),
        systemd_unit: unit.map(str::to_owned),
        cgroup_delegated: false,
    }
}

/// Record `n`: integration `lab` for workload 1, `mirth` for 0, none (unattributed) for 2.
pub fn record(n: u64, time: Timestamp) -> Record {
    let mut r = Record::new(
        format!("req-{n}"),
        NODE,
        workload(n),
        "GET",
        format!("/Observation?patient=Patient%2F{n}"),
        Disposition::Allow,
    );
    r.time = time;
    r.integration = match n % 3 {
        0 => Some("mirth".to_owned()),
        1 => Some("lab".to_owned()),
        _ => None,
    };
    r.credential_fingerprint = Some(format!("sha256:{:08x}", n % 2));
    r.upstream = Some("epic".to_owned());
    r.interaction = Some("search-type".to_owned());
    r.resource_type = Some(
        if n.is_multiple_of(2) {
            "Observation"
        } else {
            "Patient"
        }
        .to_owned(),
    );
    r.patients = vec![format!("Patient/p{}", n % 5)];
    r.purpose_of_use = Some("TREAT".to_owned());
    if n % 4 == 3 {
        r.decision = Disposition::Deny;
        r.reason = Some(if n % 8 == 3 { "scope" } else { "revoked" }.to_owned());
        r.rule = Some("integration.lab.scopes".to_owned());
        r.status = Some(403);
    }
    if n == 7 {
        r.break_glass = Some(BreakGlassUse {
            justification_id: "INC-7".to_owned(),
        });
    }
    r
}

/// Monday 2026-11-23 00:00 UTC plus `hours`.
pub fn monday_plus(hours: i64) -> Timestamp {
    let monday: Timestamp = "2026-11-23T00:00:00Z".parse().unwrap();
    monday + hours.hours()
}

/// Commits records `1..=n`, record `i` at [`monday_plus`]`(i)`, and waits for the writer.
pub async fn seed_fixed(path: &Path, n: u64) {
    let (sink, writer) = AuditSink::start(AuditConfig::new(path)).unwrap();
    for i in 1..=n {
        sink.commit(record(i, monday_plus(i64::try_from(i).unwrap())))
            .await
            .unwrap();
    }
    stop(sink, writer).await;
}

/// Drops the last sink and waits for the writer to drain its queue and exit.
pub async fn stop(sink: AuditSink, writer: AuditWriter) {
    drop(sink);
    tokio::task::spawn_blocking(move || writer.join())
        .await
        .unwrap();
}

/// A fresh store path in a temporary directory (kept alive by the returned guard).
pub fn temp_store() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let path = dir.path().join("audit.db");
    (dir, path)
}

/// Commits records `1..=n`, one minute apart ending now, and waits for the writer to exit.
pub async fn seed(path: &Path, n: u64) {
    let (sink, writer) =
        AuditSink::start(AuditConfig::new(path)).unwrap_or_else(|e| panic!("start: {e}"));
    let start = Timestamp::now() - (i64::try_from(n).unwrap_or(0)).minutes();
    for i in 1..=n {
        let t = start + i64::try_from(i).unwrap_or(0).minutes();
        sink.commit(record(i, t))
            .await
            .unwrap_or_else(|e| panic!("commit {i}: {e}"));
    }
    drop(sink);
    tokio::task::spawn_blocking(move || writer.join())
        .await
        .unwrap_or_else(|e| panic!("join: {e}"));
}

pub fn rw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// Removes the journal, as an attacker who also controls it would, so what the index alone
/// shows can be tested.
pub fn drop_journal(path: &Path) {
    let dir = path.with_extension("journal");
    std::fs::remove_dir_all(dir).unwrap();
}

/// The body of journal entry `seq`.
pub fn body_of(path: &Path, seq: u64) -> String {
    let dir = path.with_extension("journal");
    let frames = crate::audit::journal::read_from(&dir, seq, 1).unwrap();
    assert_eq!(frames.first().map(|f| f.seq), Some(seq), "frame {seq}");
    frames.into_iter().next().unwrap().body
}

/// The segment holding `seq`, its bytes, and every frame's (seq, offset, prev, body) in it,
/// rewritten with every frame on its own (no blocks), the index pointing at them: what an
/// attacker would do first to edit single frames in place.
type Framed = (u64, usize, crate::audit::chain::Hash, String);
fn segment_with(path: &Path, seq: u64) -> (PathBuf, Vec<u8>, Vec<Framed>) {
    use crate::audit::journal::{SegmentReader, encode, segments};
    let dir = path.with_extension("journal");
    let (_, file) = segments(&dir)
        .unwrap()
        .into_iter()
        .rev()
        .find(|(first, _)| *first <= seq)
        .unwrap();
    let size = usize::try_from(std::fs::metadata(&file).unwrap().len()).unwrap();
    let mut reader = SegmentReader::open(&file, None).unwrap();
    let (mut data, mut frames) = (Vec::new(), Vec::new());
    let conn = rw(path);
    while let Some(frame) = reader.next_frame().unwrap() {
        frames.push((frame.seq, data.len(), frame.prev_hash, frame.body.clone()));
        conn.execute(
            "UPDATE entry_rows SET frame_at = ?1 WHERE seq = ?2",
            rusqlite::params![
                i64::try_from(data.len()).unwrap(),
                i64::try_from(frame.seq).unwrap()
            ],
        )
        .unwrap();
        encode(
            &mut data,
            frame.seq,
            &frame.prev_hash,
            frame.body.as_bytes(),
        )
        .unwrap();
    }
    assert!(
        data.len() <= size,
        "the frames fit in their segment on their own"
    );
    data.resize(size, 0);
    (file, data, frames)
}

/// Edits journal entries as an attacker with the files would, keeping every frame's CRC valid:
/// `edit` changes the body of `seq` (keeping its length, so nothing moves); with `rechain`,
/// every later frame of its segment is re-encoded to follow the new hash (a rewritten history),
/// and the index rows get the new hashes too. Returns the new hash of each rewritten seq.
pub fn edit_journal(
    path: &Path,
    seq: u64,
    edit: impl Fn(&str) -> String,
    rechain: bool,
) -> Vec<(u64, crate::audit::chain::Hash)> {
    use crate::audit::{chain, journal::encode};
    let (file, mut data, frames) = segment_with(path, seq);
    let mut prev = None;
    let mut rewritten = Vec::new();
    for (s, at, stored_prev, body) in frames {
        if s < seq || (s > seq && !rechain) {
            continue;
        }
        let body = if s == seq { edit(&body) } else { body };
        let prev_hash = prev.unwrap_or(stored_prev);
        let mut frame = Vec::new();
        encode(&mut frame, s, &prev_hash, body.as_bytes()).unwrap();
        data[at..at + frame.len()].copy_from_slice(&frame);
        let hash = chain::link(&prev_hash, s, body.as_bytes());
        rewritten.push((s, hash));
        if rechain {
            rw(path)
                .execute(
                    "UPDATE entry_rows SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
                    rusqlite::params![&prev_hash[..], &hash[..], i64::try_from(s).unwrap()],
                )
                .unwrap();
        }
        prev = Some(hash);
    }
    std::fs::write(file, data).unwrap();
    rewritten
}

/// Cuts the journal after entry `seq` (zeros from the next frame to the end of its segment),
/// as an attacker truncating the trail would.
pub fn cut_journal_after(path: &Path, seq: u64) {
    let (file, mut data, frames) = segment_with(path, seq);
    let (_, at, _, _) = frames.iter().find(|f| f.0 == seq + 1).unwrap();
    let at = *at;
    data[at..].fill(0);
    std::fs::write(file, data).unwrap();
}
