//! A full disk: commits fail promptly with `DiskFull`, nothing acknowledged is lost, and writes
//! resume without a restart once space is freed.

use std::{
    fs::File,
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use super::support::{record, stop};
use crate::audit::{
    AuditConfig, AuditSink, Filter, Health, WriteFailure, open_read_only, query, verify,
};

/// A small tmpfs, unmounted on drop (also when the test fails).
struct TmpfsGuard {
    dir: tempfile::TempDir,
}

impl TmpfsGuard {
    fn mount(size: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TmpfsGuard {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the file system with `path` until ENOSPC.
fn fill(path: &Path) -> PathBuf {
    let filler = path.join("filler");
    let mut f = File::create(&filler).unwrap();
    let block = vec![0xa5u8; 16 * 1024];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
    // Small writes catch the last partial block.
    while f.write_all(&[0]).and_then(|()| f.sync_all()).is_ok() {}
    filler
}

fn assert_readable_while_full(db: &Path, acked: &[(u64, String)]) {
    let conn = open_read_only(db).unwrap();
    let seen: std::collections::BTreeSet<u64> = query(&conn, &Filter::default())
        .unwrap()
        .into_iter()
        .map(|r| r.seq)
        .collect();
    for (seq, _) in acked {
        assert!(
            seen.contains(seq),
            "acknowledged record {seq} missing while full"
        );
    }
    let v = verify(&conn, &[]).unwrap();
    assert!(v.is_intact(), "{:?}", v.findings);
}

/// Commits until one succeeds: its seq and correlation id.
async fn first_success(sink: &AuditSink, n: &mut u64) -> (u64, String) {
    loop {
        *n += 1;
        let mut r = record(*n, jiff::Timestamp::now());
        r.correlation_id = format!("c{n}");
        if let Ok(seq) = sink.commit(r).await {
            return (seq.0, format!("c{n}"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_fails_commits_loses_nothing_and_recovers() {
    let mount = match TmpfsGuard::mount("2M") {
        Ok(m) => m,
        Err(why) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but the full-disk test cannot run: {why}"
            );
            eprintln!("skipping full-disk test: {why} (needs root to mount tmpfs)");
            return;
        }
    };
    let db = mount.path().join("audit.db");
    let mut config = AuditConfig::new(&db);
    // Segments small enough that the full disk is met at a rotation, the only time the journal
    // asks for space: appends go into segments written in full beforehand.
    config.journal.segment_bytes = 256 * 1024;
    let (sink, writer) = AuditSink::start(config).unwrap();
    let mut acked = Vec::new();
    let mut n = 0u64;
    let commit = |sink: AuditSink, n: u64| async move {
        let mut r = record(n, jiff::Timestamp::now());
        r.correlation_id = format!("c{n}");
        (sink.commit(r).await, n)
    };
    for _ in 0..20 {
        n += 1;
        let (res, i) = commit(sink.clone(), n).await;
        acked.push((res.unwrap().0, format!("c{i}")));
    }

    let filler = fill(mount.path());
    // The current segment still has room; commit until the journal needs a new one.
    let mut failure = None;
    for _ in 0..100_000 {
        n += 1;
        match commit(sink.clone(), n).await {
            (Ok(seq), i) => acked.push((seq.0, format!("c{i}"))),
            (Err(e), _) => {
                failure = Some(e);
                break;
            }
        }
    }
    let failure = failure.expect("a full disk must fail a commit");
    assert_eq!(
        failure.write_failure(),
        Some(WriteFailure::DiskFull),
        "{failure:?}"
    );
    assert!(
        matches!(sink.health(), Health::Failing { .. }),
        "{:?} {failure:?} {:?}",
        sink.health(),
        sink.stats()
    );
    // Still full: the next commit fails too, promptly, instead of hanging.
    n += 1;
    assert!(commit(sink.clone(), n).await.0.is_err());
    let failed = sink.stats().failed_records;
    assert!(failed >= 2, "{:?}", sink.stats());

    // While the disk is full the index cannot take the journal's tail: a reader lays it over
    // the index instead, so every acknowledged record is in the answer.
    assert_readable_while_full(&db, &acked);

    std::fs::remove_file(&filler).unwrap();
    // The next segment is retried in the background: commits resume within moments, without a
    // restart, and then every one succeeds.
    let resumed = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        first_success(&sink, &mut n),
    )
    .await
    .expect("writes must resume once space is back");
    acked.push(resumed);
    for _ in 0..5 {
        n += 1;
        let (res, i) = commit(sink.clone(), n).await;
        acked.push((
            res.unwrap_or_else(|e| panic!("writes must resume once space is back: {e}"))
                .0,
            format!("c{i}"),
        ));
    }
    assert_eq!(sink.health(), Health::Healthy);
    stop(sink, writer).await;

    let conn = open_read_only(&db).unwrap();
    let v = verify(&conn, &[]).unwrap();
    assert!(v.is_intact(), "{:?}", v.findings);
    let stored: std::collections::BTreeMap<u64, String> = query(&conn, &Filter::default())
        .unwrap()
        .into_iter()
        .map(|r| (r.seq, r.record.correlation_id))
        .collect();
    for (seq, id) in &acked {
        assert_eq!(stored.get(seq), Some(id), "acknowledged record {seq} lost");
    }
    drop(conn);
    drop(mount);
}
