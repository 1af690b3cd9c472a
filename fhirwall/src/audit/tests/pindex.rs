//! The patient index copy built off the commit path: queries by patient are exact before and
//! after it catches up, an edited copy is found by `verify`, and a copy that belongs to another
//! store is not used.

use std::{path::Path, time::Duration};

use super::support::{record, rw, stop, temp_store};
use crate::audit::{
    AuditConfig, AuditSink, Filter, Problem, open_read_only, pindex, query, verify,
};

const N: u64 = 40;

fn seqs_of(db: &Path, patient: &str) -> Vec<u64> {
    let filter = Filter {
        patient: Some(patient.to_owned()),
        ..Filter::default()
    };
    let mut seqs: Vec<u64> = query(&open_read_only(db).unwrap(), &filter)
        .unwrap()
        .into_iter()
        .map(|r| r.seq)
        .collect();
    seqs.sort_unstable();
    seqs
}

fn copy_upto(db: &Path) -> Option<u64> {
    pindex::usable_upto(&open_read_only(db).unwrap())
}

/// `record(n)` names `Patient/p{n % 5}`.
fn expected(patient: u64) -> Vec<u64> {
    (1..=N).filter(|n| n % 5 == patient).collect()
}

async fn wait_for_copy(db: &Path, upto: u64) {
    for _ in 0..100 {
        if copy_upto(db) == Some(upto) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the copy never reached seq {upto}: {:?}", copy_upto(db));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_by_patient_are_exact_before_and_after_the_copy_catches_up() {
    let (_dir, db) = temp_store();
    let (sink, writer) = AuditSink::start(AuditConfig::new(&db)).unwrap();
    for i in 1..=N / 2 {
        sink.commit(record(i, jiff::Timestamp::now()))
            .await
            .unwrap();
    }
    wait_for_copy(&db, N / 2).await;
    // Half indexed, half in the tail the copy has not reached yet.
    for i in N / 2 + 1..=N {
        sink.commit(record(i, jiff::Timestamp::now()))
            .await
            .unwrap();
    }
    assert_eq!(seqs_of(&db, "Patient/p3"), expected(3));
    wait_for_copy(&db, N).await;
    for p in 0..5 {
        assert_eq!(seqs_of(&db, &format!("Patient/p{p}")), expected(p));
    }
    assert!(seqs_of(&db, "Patient/nobody").is_empty());
    let v = verify(&open_read_only(&db).unwrap(), &[]).unwrap();
    assert!(v.is_intact(), "{:?}", v.findings);
    stop(sink, writer).await;

    // Without the copy, the same answers from a scan.
    std::fs::remove_file(pindex::path_for(&db)).unwrap();
    assert_eq!(copy_upto(&db), None);
    assert_eq!(seqs_of(&db, "Patient/p1"), expected(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_copy_is_found_and_a_foreign_copy_is_not_used() {
    let (_dir, db) = temp_store();
    let (sink, writer) = AuditSink::start(AuditConfig::new(&db)).unwrap();
    for i in 1..=N {
        sink.commit(record(i, jiff::Timestamp::now()))
            .await
            .unwrap();
    }
    wait_for_copy(&db, N).await;
    stop(sink, writer).await;

    // An attacker hides one access and invents another in the copy.
    let copy = rw(&pindex::path_for(&db));
    copy.execute(
        "DELETE FROM patient_seq WHERE patient = 'Patient/p2' AND seq = 7",
        [],
    )
    .unwrap();
    copy.execute(
        "INSERT INTO patient_seq (patient, seq) VALUES ('Patient/p2', 8)",
        [],
    )
    .unwrap();
    drop(copy);
    let v = verify(&open_read_only(&db).unwrap(), &[]).unwrap();
    assert!(
        v.findings.iter().any(|f| f.problem
            == Problem::PatientCopyDiffers {
                missing: 1,
                extra: 1
            }),
        "{:?}",
        v.findings
    );

    // The copy of this store, next to another store: not used (its last entry differs).
    let (_other_dir, other) = temp_store();
    let (sink, writer) = AuditSink::start(AuditConfig::new(&other)).unwrap();
    sink.commit(record(1000, jiff::Timestamp::now()))
        .await
        .unwrap();
    stop(sink, writer).await;
    std::fs::remove_file(pindex::path_for(&other)).ok();
    std::fs::copy(pindex::path_for(&db), pindex::path_for(&other)).unwrap();
    assert_eq!(copy_upto(&other), None, "a foreign copy is not used");
    assert!(seqs_of(&other, "Patient/p2").is_empty());
    assert_eq!(seqs_of(&other, "Patient/p0"), vec![1]);

    // The indexer of that store starts the copy over.
    let (sink, writer) = AuditSink::start(AuditConfig::new(&other)).unwrap();
    wait_for_copy(&other, 1).await;
    assert_eq!(seqs_of(&other, "Patient/p0"), vec![1]);
    stop(sink, writer).await;
}

/// A search that never named a patient (`Claim?status=active`) but whose response carried
/// their data is found by that patient: the completion's patients count for its request,
/// through the copy and in the tail, and `verify` holds them to the chain like a request's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_that_carried_a_patient_finds_its_request() {
    use crate::audit::{CommittedSeq, Completion, Fate};

    let (_dir, db) = temp_store();
    let (sink, writer) = AuditSink::start(AuditConfig::new(&db)).unwrap();
    let mut search = record(1, jiff::Timestamp::now());
    search.path = "/Claim?status".into();
    search.patients.clear();
    let seq = sink.commit(search).await.unwrap();
    let mut done = Completion::new(seq, "req-1", Fate::Completed);
    done.patients = vec!["Patient/carried-b".into(), "Patient/carried-a".into()];
    sink.complete(done).unwrap();
    // A later request naming nobody, completed without patients: not found.
    let mut other = record(2, jiff::Timestamp::now());
    other.patients.clear();
    let other_seq = sink.commit(other).await.unwrap();
    sink.complete(Completion::new(other_seq, "req-2", Fate::Completed))
        .unwrap();
    stop(sink, writer).await;
    let CommittedSeq(request) = seq;
    assert_eq!(
        seqs_of(&db, "Patient/carried-a"),
        [request],
        "found in the tail"
    );
    assert_eq!(seqs_of(&db, "Patient/carried-b"), [request]);
    let (sink, writer) = AuditSink::start(AuditConfig::new(&db)).unwrap();
    wait_for_copy(&db, 4).await;
    stop(sink, writer).await;
    assert_eq!(
        seqs_of(&db, "Patient/carried-a"),
        [request],
        "and through the copy"
    );
    let report = verify(&open_read_only(&db).unwrap(), &[]).unwrap();
    assert!(report.is_intact(), "{:?}", report.findings);
    rw(&db)
        .execute(
            "DELETE FROM patients WHERE patient = 'Patient/carried-b'",
            [],
        )
        .unwrap();
    let report = verify(&open_read_only(&db).unwrap(), &[]).unwrap();
    assert!(
        report
            .findings
            .iter()
            .any(|f| matches!(f.problem, Problem::PatientsEdited)),
        "{:?}",
        report.findings
    );
}
