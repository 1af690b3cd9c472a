//! `cargo xtask bench privilege`: `fhirwall policy replay` and `fhirwall policy suggest` over
//! a million recorded requests, timed as the commands an operator runs (target: under 10 s
//! each), beside `fhirwall audit verify` over the same store as the baseline (one full pass
//! that reads and hashes every entry, deciding nothing).
//!
//! The store is written by the audit writer itself (background durability, as a busy agent
//! would) with records made the way the sidecar makes them: requests of the example lab
//! interface (`policies/`), classified, decided and recorded, in a realistic mix: lab searches
//! by category, order and patient lookups, result creates, `$validate`, the odd denied read.
//!
//! usage: fw-privilege-bench [RECORDS]   (default 1000000)

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use fhirwall::{
    audit::{AuditConfig, AuditSink, Disposition, Durability, Record, WorkloadRecord},
    proxy::sidecar::record,
};
use fhirwall_fhir::{HttpRequest, classify};
use fhirwall_policy::{Policy, Subject};
use fhirwall_tests::target_binary;

const LAB: &str = "lab-results-interface";
const LAB_AUTH: &str = "Basic ZWhyLWludGVyZmFjZTpsZWdhY3k=";
const CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory";
const RUNS: usize = 3;

fn main() -> anyhow::Result<()> {
    let records: u64 = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()
        .context("RECORDS is a number")?
        .unwrap_or(1_000_000);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let policies = root.join("policies");
    let policy = Policy::load(&policies).map_err(|e| anyhow::anyhow!("policies/: {e}"))?;
    let dir = tempfile_dir()?;
    let db = dir.join("audit.db");
    let started = Instant::now();
    write_store(&policy, &db, records)?;
    println!(
        "{records} records of {LAB} written in {:.1} s ({} MiB on disk)",
        started.elapsed().as_secs_f64(),
        du(&dir) / (1024 * 1024)
    );
    let fhirwall = target_binary("fhirwall")?;
    let db_arg = db.display().to_string();
    let policies_arg = policies.display().to_string();
    let commands: [(&str, Vec<&str>); 3] = [
        (
            "audit verify (baseline)",
            vec!["audit", "verify", "--db", &db_arg],
        ),
        (
            "policy replay",
            vec!["policy", "replay", &policies_arg, "--db", &db_arg],
        ),
        (
            "policy suggest",
            vec![
                "policy",
                "suggest",
                "--integration",
                LAB,
                "--policies",
                &policies_arg,
                "--db",
                &db_arg,
                "--since",
                "3650d",
            ],
        ),
    ];
    let mut medians = Vec::new();
    for (label, args) in &commands {
        let median = time(&fhirwall, args)?;
        println!(
            "{label:<26} median of {RUNS}: {:>6.2} s",
            median.as_secs_f64()
        );
        medians.push(median);
    }
    let ratio = |d: Duration| d.as_secs_f64() / medians[0].as_secs_f64();
    println!(
        "ratios to the baseline: replay {:.2}x, suggest {:.2}x (target: each under 10 s)",
        ratio(medians[1]),
        ratio(medians[2])
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The median wall time of `RUNS` runs of `fhirwall args` (its output discarded).
fn time(fhirwall: &Path, args: &[&str]) -> anyhow::Result<Duration> {
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        let out = Command::new(fhirwall).args(args).output()?;
        let took = started.elapsed();
        // replay exits 1 when it finds breaks; anything else is a failure.
        if !matches!(out.status.code(), Some(0 | 1)) {
            bail!(
                "fhirwall {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        times.push(took);
    }
    times.sort();
    Ok(times[RUNS / 2])
}

/// The request mix, each `(weight, method, target, body)`.
fn mix() -> Vec<(u32, &'static str, String, Option<&'static str>)> {
    vec![
        (
            40,
            "GET",
            format!("/Observation?category={CATEGORY}&patient=Patient/p-1"),
            None,
        ),
        (15, "GET", "/ServiceRequest/sr-1".into(), None),
        (15, "GET", "/Patient?identifier=urn:mrn|000123".into(), None),
        (
            20,
            "POST",
            "/Observation".into(),
            Some(
                r#"{"resourceType":"Observation","status":"final","code":{"text":"glucose"},"subject":{"reference":"Patient/p-1"}}"#,
            ),
        ),
        (
            5,
            "POST",
            "/Observation/$validate".into(),
            Some(r#"{"resourceType":"Parameters"}"#),
        ),
        (5, "GET", "/Condition?patient=Patient/p-1".into(), None),
    ]
}

/// Classifies and decides each request of the mix once, as the sidecar would, then commits
/// `n` records cycling through them (with their own correlation ids and times).
fn write_store(policy: &Policy, db: &Path, n: u64) -> anyhow::Result<()> {
    let config = policy
        .classify_config("ehr-fhir")
        .context("upstream ehr-fhir")?;
    let now = jiff::Timestamp::now();
    let mut templates = Vec::new();
    for (weight, method, target, body) in mix() {
        let mut headers: Vec<(&str, &[u8])> = vec![
            ("Host", b"127.0.0.2:8443"),
            ("Authorization", LAB_AUTH.as_bytes()),
        ];
        if body.is_some() {
            headers.push(("Content-Type", b"application/fhir+json"));
        }
        let http = HttpRequest {
            method,
            target: &target,
            headers: &headers,
            body: body.map(str::as_bytes),
        };
        let fhir = classify(&http, config).map_err(|e| anyhow::anyhow!("{target}: {e}"))?;
        let subject =
            Subject::from_headers(policy, policy.integration(LAB), "ehr-fhir", &headers, now);
        let decision = fhirwall_policy::decide(policy, &subject, &fhir);
        let mut r = Record::new(
            "",
            "bench-node",
            WorkloadRecord::default(),
            method,
            target.as_str(),
            Disposition::Deny,
        );
        r.integration = Some(LAB.into());
        r.upstream = Some("ehr-fhir".into());
        record::decided(&mut r, &fhir, &subject, &decision, None);
        for _ in 0..weight {
            templates.push(r.clone());
        }
    }
    let mut audit = AuditConfig::new(db);
    audit.store.durability = Durability::Background {
        fsync_interval: Duration::from_millis(100),
    };
    let (sink, writer) = AuditSink::start(audit)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let start = now - jiff::SignedDuration::from_secs(i64::try_from(n).unwrap_or(0) / 100);
        for i in 0..n {
            let template = &templates[usize::try_from(i).unwrap_or(0) % templates.len()];
            let mut r = template.clone();
            r.correlation_id = format!("bench-{i:08}");
            r.time = start + jiff::SignedDuration::from_millis(i64::try_from(i * 10).unwrap_or(0));
            sink.append(r).await?;
        }
        anyhow::Ok(())
    })?;
    drop(sink);
    writer.join();
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("fw-privilege-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Bytes under `path`.
fn du(path: &Path) -> u64 {
    let Ok(meta) = std::fs::metadata(path) else {
        return 0;
    };
    if meta.is_file() {
        return meta.len();
    }
    std::fs::read_dir(path).map_or(0, |entries| entries.flatten().map(|e| du(&e.path())).sum())
}
