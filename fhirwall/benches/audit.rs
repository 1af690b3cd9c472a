//! Audit store throughput and commit latency under group commit.
//!
//! `commit/64_submitters`: records/s with 64 tasks each awaiting its own commit in a loop (the
//! sidecar's shape: every request awaits its record). A closed loop like this tops out at
//! `submitters / fsync latency`; `commit/1024_submitters` shows the rate when as many requests
//! are in flight as a busy sidecar has (Little's law: 50k/s at 5 ms per fsync is 250 in flight). `commit/1_submitter`: one commit at a time,
//! so the time per element is the full latency of an unshared fsync. `latency_under_load` prints
//! the p50/p99 latency one commit adds while 64 submitters keep the writer busy.
//!
//! The journal lives in a temporary directory on the machine's disk and every measured commit
//! is durable (`fdatasync`ed) before it is acknowledged; the index is fed behind it.

use std::{
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fhirwall::audit::{AuditConfig, AuditSink, Disposition, Record, WorkloadRecord};
use tokio::runtime::Runtime;

fn sample(n: u64) -> Record {
    let workload = WorkloadRecord {
        pid: 4242,
        tgid: 4242,
        start_time: 1_234_567,
        exe: Some("/opt/mirth/bin/mirth".to_owned()),
        exe_sha256: Some(
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".to_owned(),
        ),
        exe_verified: true,
        uid: 998,
        gid: 998,
        user: Some("mirth".to_owned()),
        comm: "mirth".to_owned(),
        cgroup_path: Some("/system.slice/mirth.service".to_owned()),
        container_id: None,
        pod_uid: None,
        systemd_unit: Some("mirth.service".to_owned()),
        cgroup_delegated: false,
    };
    let mut r = Record::new(
        format!("req-{n}"),
        "ehr-node-1",
        workload,
        "GET",
        "/Observation?patient&category",
        Disposition::Allow,
    );
    r.integration = Some("lab-results".to_owned());
    r.credential_fingerprint = Some("sha256:1f2e3d4c".to_owned());
    r.upstream = Some("epic".to_owned());
    r.interaction = Some("search-type".to_owned());
    r.resource_type = Some("Observation".to_owned());
    r.patients = vec![format!("Patient/{}", n % 1000)];
    r.purpose_of_use = Some("TREAT".to_owned());
    r.rule = Some("integration.lab-results.scopes".to_owned());
    r
}

/// Where the bench store lives: `AUDIT_BENCH_DIR` (e.g. a tmpfs, to see the writer's CPU
/// ceiling without the disk), else a temporary directory on the default disk.
fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("AUDIT_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).expect("tempdir in AUDIT_BENCH_DIR"),
        None => tempfile::tempdir().expect("tempdir"),
    }
}

fn start(
    dir: &tempfile::TempDir,
) -> (
    Arc<AuditSink>,
    fhirwall::audit::AuditWriter,
    prometheus::Histogram,
) {
    let syncs =
        prometheus::Histogram::with_opts(prometheus::HistogramOpts::new("syncs", "journal syncs"))
            .expect("a histogram");
    let config = AuditConfig {
        commit_seconds: Some(syncs.clone()),
        ..AuditConfig::new(dir.path().join("audit.db"))
    };
    let (sink, writer) = AuditSink::start(config).expect("start the audit writer");
    (Arc::new(sink), writer, syncs)
}

/// Commits `total` records from `submitters` tasks, each awaiting its own commits in turn.
async fn run(sink: &Arc<AuditSink>, submitters: u64, total: u64) {
    let per = total.div_ceil(submitters);
    let mut tasks = Vec::new();
    for t in 0..submitters {
        let sink = Arc::clone(sink);
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                black_box(sink.commit(sample(t * per + i)).await.expect("commit"));
            }
        }));
    }
    for task in tasks {
        task.await.expect("submitter");
    }
}

fn commit(c: &mut Criterion) {
    commit_group(c, "commit", &[1, 64, 1024]);
}

#[expect(
    clippy::cast_precision_loss,
    reason = "iteration counts far below 2^52"
)]
fn commit_group(c: &mut Criterion, name: &str, submitters: &[u64]) {
    let rt = Runtime::new().expect("tokio runtime");
    let dir = bench_dir();
    let (sink, _writer, _) = start(&dir);
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for &submitters in submitters {
        group.bench_function(
            format!(
                "{submitters}_submitter{}",
                if submitters == 1 { "" } else { "s" }
            ),
            |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    rt.block_on(run(&sink, submitters, iters.max(submitters)));
                    start
                        .elapsed()
                        .mul_f64(iters as f64 / iters.max(submitters) as f64)
                });
            },
        );
    }
    group.finish();
}

fn latency_under_load(_c: &mut Criterion) {
    latency("latency_under_load");
}

/// Per-commit latency percentiles while 64 submitters keep the writer saturated.
#[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
fn latency(name: &str) {
    let rt = Runtime::new().expect("tokio runtime");
    let dir = bench_dir();
    let (sink, _writer, syncs) = start(&dir);
    let mut latencies: Vec<Duration> = rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..64u64 {
            let sink = Arc::clone(&sink);
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::with_capacity(4000);
                for i in 0..4000 {
                    let started = Instant::now();
                    sink.commit(sample(t * 4000 + i)).await.expect("commit");
                    out.push(started.elapsed());
                }
                out
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.expect("submitter"));
        }
        all
    });
    latencies.sort_unstable();
    let pct = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    let stats = sink.stats();
    println!(
        "{name} (64 submitters, {} commits, {} transactions, {:.0} records/txn, {} held for more): p50 {:?}  p99 {:?}  max {:?}; group commits (write + sync) {} (mean {:?})",
        latencies.len(),
        stats.committed_batches,
        stats.committed_records as f64 / stats.committed_batches.max(1) as f64,
        stats.gathered_batches,
        pct(50),
        pct(99),
        latencies[latencies.len() - 1],
        syncs.get_sample_count(),
        Duration::from_secs_f64(syncs.get_sample_sum() / syncs.get_sample_count().max(1) as f64),
    );
}

criterion_group!(benches, commit, latency_under_load);
criterion_main!(benches);
