//! `verify` against every kind of tampering, done the way an attacker with the files would:
//! SQL on the index, and rewritten frames (with valid CRCs) in the journal.

use rusqlite::{Connection, params};

use super::support::{body_of, cut_journal_after, edit_journal, rw, seed, temp_store};
use crate::audit::{Anchor, Problem, Verification, chain, open_read_only, verify};

const N: u64 = 10;

fn check(path: &std::path::Path, anchors: &[Anchor]) -> Verification {
    verify(&open_read_only(path).unwrap(), anchors).unwrap()
}

fn hash_at(conn: &Connection, seq: i64) -> [u8; 32] {
    let blob: Vec<u8> = conn
        .query_row("SELECT hash FROM entries WHERE seq = ?1", [seq], |r| {
            r.get(0)
        })
        .unwrap();
    chain::from_blob(&blob).unwrap()
}

/// Moves rows `from..` up by one seq (through a scratch range, as the primary key is unique).
fn shift_up(conn: &Connection, from: i64) {
    conn.execute(
        "UPDATE entry_rows SET seq = seq + 1000 WHERE seq >= ?1",
        [from],
    )
    .unwrap();
    conn.execute(
        "UPDATE entry_rows SET seq = seq - 999 WHERE seq >= 1000",
        [],
    )
    .unwrap();
    conn.execute(
        "UPDATE patients SET seq = seq + 1000 WHERE seq >= ?1",
        [from],
    )
    .unwrap();
    conn.execute("UPDATE patients SET seq = seq - 999 WHERE seq >= 1000", [])
        .unwrap();
}

/// Each case tampers with a fresh 10-entry store and names a finding `verify` must report.
type Tamper = fn(&std::path::Path);
type Expect = fn(&Problem) -> bool;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(clippy::too_many_lines, reason = "one table of cases")]
async fn verify_names_each_kind_of_tampering() {
    let cases: [(&str, Tamper, u64, Expect); 10] = [
        (
            "edit a body field in the journal",
            |path| {
                edit_journal(
                    path,
                    4,
                    |b| b.replace(r#""upstream":"epic""#, r#""upstream":"evil""#),
                    false,
                );
            },
            4,
            |p| *p == Problem::ContentMismatch,
        ),
        (
            "edit an index column",
            |path| {
                let c = &rw(path);
                c.execute(
                    "UPDATE entry_rows SET integration = 'someone-else' WHERE seq = 5",
                    [],
                )
                .unwrap();
            },
            5,
            |p| matches!(p, Problem::ColumnEdited { column } if column == "integration"),
        ),
        (
            "edit a workload row that several entries share",
            |path| {
                let c = &rw(path);
                c.execute(
                    "UPDATE workloads SET exe = '/tmp/innocent'
                     WHERE id = (SELECT workload FROM entry_rows WHERE seq = 4)",
                    [],
                )
                .unwrap();
            },
            7,
            |p| matches!(p, Problem::ColumnEdited { column } if column == "exe"),
        ),
        (
            "remove a patient index row",
            |path| {
                let c = &rw(path);
                c.execute("DELETE FROM patients WHERE seq = 6", []).unwrap();
            },
            6,
            |p| *p == Problem::PatientsEdited,
        ),
        (
            "add a patient index row",
            |path| {
                let c = &rw(path);
                c.execute(
                    "INSERT INTO patients (seq, patient) VALUES (2, 'Patient/forged')",
                    [],
                )
                .unwrap();
            },
            2,
            |p| *p == Problem::PatientsEdited,
        ),
        (
            "delete a row",
            |path| {
                let c = &rw(path);
                c.execute("DELETE FROM entry_rows WHERE seq = 7", [])
                    .unwrap();
            },
            8,
            |p| *p == Problem::Missing { from: 7, to: 7 },
        ),
        (
            "append a forged row",
            |path| {
                let c = &rw(path);
                let prev = hash_at(c, 10);
                let body = body_of(path, 3);
                c.execute(
                "INSERT INTO entry_rows (seq, kind, time_us, body, prev_hash, hash) VALUES (11, 'request', 0, ?1, ?2, ?3)",
                params![body, &prev[..], &[7u8; 32][..]],
            ).unwrap();
            },
            11,
            |p| *p == Problem::ContentMismatch,
        ),
        (
            "insert a forged row in the middle with a correct own hash",
            |path| {
                let c = &rw(path);
                shift_up(c, 6);
                let prev = hash_at(c, 5);
                let body = body_of(path, 5);
                let hash = chain::link(&prev, 6, body.as_bytes());
                c.execute(
                "INSERT INTO entry_rows (seq, kind, time_us, body, prev_hash, hash) SELECT 6, kind, time_us, ?3, ?1, ?2 FROM entries WHERE seq = 5",
                params![&prev[..], &hash[..], body],
            ).unwrap();
            },
            7,
            |p| *p == Problem::IndexDiffers,
        ),
        (
            "swap two rows",
            |path| {
                let c = &rw(path);
                c.execute("UPDATE entry_rows SET seq = -1 WHERE seq = 3", [])
                    .unwrap();
                c.execute("UPDATE entry_rows SET seq = 3 WHERE seq = 4", [])
                    .unwrap();
                c.execute("UPDATE entry_rows SET seq = 4 WHERE seq = -1", [])
                    .unwrap();
            },
            3,
            |p| *p == Problem::IndexDiffers,
        ),
        (
            "delete the oldest rows",
            |path| {
                let c = &rw(path);
                c.execute("DELETE FROM entry_rows WHERE seq <= 2", [])
                    .unwrap();
                c.execute("DELETE FROM patients WHERE seq <= 2", [])
                    .unwrap();
            },
            3,
            |p| *p == Problem::UnaccountedStart,
        ),
    ];
    for (name, tamper, seq, expected) in cases {
        let (_dir, path) = temp_store();
        seed(&path, N).await;
        let before = check(&path, &[]);
        assert!(
            before.is_intact(),
            "{name}: untouched store must verify: {:?}",
            before.findings
        );
        tamper(&path);
        let after = check(&path, &[]);
        assert!(
            after
                .findings
                .iter()
                .any(|f| f.seq == seq && expected(&f.problem)),
            "{name}: expected a finding at seq {seq}, got {:?}",
            after
                .findings
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_tail_is_caught_only_with_an_anchor() {
    let (_dir, path) = temp_store();
    seed(&path, N).await;
    let head = check(&path, &[]).head.unwrap();
    assert_eq!(head.seq, N);
    let cut = "DELETE FROM entry_rows WHERE seq > 8; DELETE FROM patients WHERE seq > 8;";
    // The index alone: the journal has the entries, and the next reader indexes them again.
    rw(&path).execute_batch(cut).unwrap();
    let healed = check(&path, &[]);
    assert!(healed.is_intact(), "{:?}", healed.findings);
    assert_eq!(healed.entries, N);
    // An attacker who controls the journal too cuts it, and the patient index rows (else
    // they show up as orphans).
    cut_journal_after(&path, 8);
    rw(&path).execute_batch(cut).unwrap();

    // Without outside knowledge a shorter chain is still a valid chain.
    assert!(check(&path, &[]).is_intact());
    let with_anchor = check(&path, &[head]);
    assert!(
        with_anchor
            .findings
            .iter()
            .any(|f| f.seq == N && matches!(f.problem, Problem::Truncated { head: 8, .. }))
    );
    let message = with_anchor.findings[0].to_string();
    assert!(message.contains("truncated"), "{message}");

    // An export cursor that already sent seq 10 is an anchor kept inside the store.
    rw(&path)
        .execute(
            "INSERT INTO export_cursors (name, seq, updated_us) VALUES ('siem', 10, 0)",
            [],
        )
        .unwrap();
    assert!(
        check(&path, &[]).findings.iter().any(
            |f| matches!(&f.problem, Problem::Truncated { known, .. } if known.contains("siem"))
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewritten_history_is_caught_only_with_an_anchor() {
    let (_dir, path) = temp_store();
    seed(&path, N).await;
    let head = check(&path, &[]).head.unwrap();
    let mid = {
        let c = rw(&path);
        Anchor {
            seq: 5,
            hash: hash_at(&c, 5),
        }
    };
    // An attacker who knows the algorithm edits seq 5 and recomputes every hash after it: in
    // the index alone (the journal as it was), the journal names every rewritten entry.
    let journal = path.with_extension("journal");
    let kept = tempfile::tempdir().unwrap();
    copy_dir(&journal, kept.path());
    rewrite_from_5(&path);
    copy_dir(kept.path(), &journal);
    let v = check(&path, &[]);
    let differ: Vec<u64> = v
        .findings
        .iter()
        .filter(|f| f.problem == Problem::IndexDiffers)
        .map(|f| f.seq)
        .collect();
    assert_eq!(differ, (5..=N).collect::<Vec<_>>(), "{:?}", v.findings);
    // With the journal rewritten as well, only an anchor tells.
    rewrite_from_5(&path);
    let v = check(&path, &[]);
    assert!(
        v.is_intact(),
        "a full rewrite is invisible to the chain alone: {:?}",
        v.findings
    );
    for anchor in [head, mid] {
        let v = check(&path, &[anchor]);
        assert!(
            v.findings
                .iter()
                .any(|f| f.seq == anchor.seq && f.problem == Problem::AnchorMismatch),
            "{anchor}"
        );
    }
}

fn rewrite_from_5(path: &std::path::Path) {
    let rewritten = edit_journal(
        path,
        5,
        |b| b.replace(r#""upstream":"epic""#, r#""upstream":"evil""#),
        true,
    );
    assert_eq!(rewritten.len(), usize::try_from(N).unwrap() - 4);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn anchor_parses_what_verify_prints() {
    let a = Anchor {
        seq: 42,
        hash: chain::link(&chain::GENESIS, 42, b"x"),
    };
    assert_eq!(a.to_string().parse::<Anchor>(), Ok(a));
    for bad in ["", "42", "x:00", "42:zz", "42:00"] {
        assert!(bad.parse::<Anchor>().is_err(), "{bad:?}");
    }
}

/// The collector's copy of a store: `fhirwall audit export --jsonl` into a file.
fn exported(path: &std::path::Path) -> std::path::PathBuf {
    let copy = path.with_extension("collector.jsonl");
    crate::audit::export_jsonl(&crate::audit::JsonlExport {
        db: path.to_owned(),
        cursor: "collector".into(),
        target: crate::audit::JsonlTarget::File(copy.clone()),
        follow: false,
        poll: std::time::Duration::from_millis(10),
    })
    .unwrap();
    copy
}

fn against(path: &std::path::Path, copy: &std::path::Path) -> (Verification, u64) {
    crate::audit::verify_against(&open_read_only(path).unwrap(), &[], copy).unwrap()
}

/// Tampering after export, even a consistently rewritten chain that a walk of the host's chain
/// alone finds intact, is named against the collector's copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collectors_copy_names_what_changed_after_export() {
    let cases: [(&str, Tamper, Expect, u64); 2] = [
        (
            "rewrite seq 5 and re-chain after it",
            rewrite_from_5,
            |p| *p == Problem::ChangedAfterExport,
            5,
        ),
        (
            "delete seq 7 from the index",
            |path| {
                rw(path)
                    .execute("DELETE FROM entry_rows WHERE seq = 7", [])
                    .unwrap();
            },
            |p| *p == Problem::RemovedAfterExport,
            7,
        ),
    ];
    for (what, tamper, expect, seq) in cases {
        let (_dir, path) = temp_store();
        seed(&path, N).await;
        let copy = exported(&path);
        let (intact, received) = against(&path, &copy);
        assert!(intact.is_intact(), "{what}: before: {:?}", intact.findings);
        assert_eq!(received, N);
        tamper(&path);
        let (v, _) = against(&path, &copy);
        assert!(
            v.findings
                .iter()
                .any(|f| f.seq == seq && expect(&f.problem)),
            "{what}: {:?}",
            v.findings
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consistent_rewrite_passes_alone_and_fails_against_the_copy() {
    let (_dir, path) = temp_store();
    seed(&path, N).await;
    let copy = exported(&path);
    rewrite_from_5(&path);
    assert!(
        check(&path, &[]).is_intact(),
        "a rewritten chain walks clean"
    );
    let (v, _) = against(&path, &copy);
    let named: Vec<(u64, &Problem)> = v.findings.iter().map(|f| (f.seq, &f.problem)).collect();
    assert_eq!(named[0], (5, &Problem::ChangedAfterExport), "{named:?}");
    assert!(
        named[1..]
            .iter()
            .all(|(_, p)| **p == Problem::RewrittenAfterExport),
        "after it, the content as received under new hashes: {named:?}"
    );
    // A copy edited on its way fails as a copy.
    let text = std::fs::read_to_string(&copy).unwrap();
    std::fs::write(&copy, text.replacen("\"epic\"", "\"evil\"", 1)).unwrap();
    let (v, _) = against(&path, &copy);
    assert!(
        v.findings
            .iter()
            .any(|f| matches!(f.problem, Problem::CopyBroken { .. })),
        "{:?}",
        v.findings
    );
}

/// Two entries swapped on the host (bodies of equal length, so the frames stay in place, and
/// the chain re-linked): each is named as holding what the collector received at the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_entries_are_named_as_moved() {
    let (_dir, path) = temp_store();
    seed(&path, N).await;
    let copy = exported(&path);
    let bodies: Vec<String> = (1..=N).map(|s| body_of(&path, s)).collect();
    let (a, b) = (1..=N)
        .flat_map(|a| (a + 1..=N).map(move |b| (a, b)))
        .find(|(a, b)| {
            let len = |s: u64| bodies[usize::try_from(s - 1).unwrap()].len();
            len(*a) == len(*b)
        })
        .expect("two entries of equal length");
    let body = |s: u64| bodies[usize::try_from(s - 1).unwrap()].clone();
    let (body_a, body_b) = (body(a), body(b));
    edit_journal(&path, a, |_| body_b.clone(), true);
    edit_journal(&path, b, |_| body_a.clone(), true);
    let (v, _) = against(&path, &copy);
    let named: Vec<(u64, &Problem)> = v.findings.iter().map(|f| (f.seq, &f.problem)).collect();
    assert!(
        named.contains(&(a, &Problem::MovedAfterExport { from: b })),
        "{named:?}"
    );
    assert!(
        named.contains(&(b, &Problem::MovedAfterExport { from: a })),
        "{named:?}"
    );
}
