//! The response check's cost: throughput on one core (MB/s) over a realistic searchset Bundle in
//! each mode, the time added to one 100-entry search Bundle, and the memory a 50 MB Bundle
//! takes while it streams through (the peak of live heap bytes above what was live before it
//! started, counted by this binary's allocator, and the growth of the peak RSS; printed before
//! criterion runs). `cargo xtask bench response`.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group};
use fhirwall_fhir::{
    ResourceType, TypeSet,
    response::{BodyFormat, CheckMode, PatientRule, ResponseCheck, ResponseRules},
};

/// What the sidecar's HTTP engine hands the check at a time (its read buffer).
const CHUNK: usize = 16 * 1024;
/// The agent's default `sidecar.max_response_hold_bytes`.
const HOLD: usize = 8 << 20;

/// One search result as servers send them: codings, a value, a narrative, a subject, a performer.
fn entry(i: usize, patient: &str) -> String {
    format!(
        r#"{{"fullUrl":"https://ehr.example/fhir/Observation/obs-{i}","resource":{{"resourceType":"Observation","id":"obs-{i}","meta":{{"versionId":"1","lastUpdated":"2026-11-30T10:15:00.000+00:00"}},"text":{{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">Potassium 4.{i} mmol/L, drawn 2026-11-30 08:00, reviewed by the laboratory</div>"}},"status":"final","category":[{{"coding":[{{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"laboratory","display":"Laboratory"}}]}}],"code":{{"coding":[{{"system":"http://loinc.org","code":"2823-3","display":"Potassium [Moles/volume] in Serum or Plasma"}}],"text":"Potassium"}},"subject":{{"reference":"Patient/{patient}","display":"Doe, Jane"}},"effectiveDateTime":"2026-11-30T08:00:00+00:00","issued":"2026-11-30T09:12:00+00:00","performer":[{{"reference":"Practitioner/pr-17","display":"Lab"}}],"valueQuantity":{{"value":4.{i},"unit":"mmol/L","system":"http://unitsofmeasure.org","code":"mmol/L"}},"referenceRange":[{{"low":{{"value":3.5,"unit":"mmol/L"}},"high":{{"value":5.1,"unit":"mmol/L"}}}}]}},"search":{{"mode":"match"}}}}"#
    )
}

/// A searchset of `n` entries, every `other`-th of another patient (0: none).
fn bundle(n: usize, other: usize) -> Vec<u8> {
    let entries: Vec<String> = (0..n)
        .map(|i| {
            let patient = if other > 0 && i % other == other - 1 {
                "pat-b"
            } else {
                "pat-a"
            };
            entry(i % 1000, patient)
        })
        .collect();
    format!(
        r#"{{"resourceType":"Bundle","id":"s-1","meta":{{"lastUpdated":"2026-11-30T10:15:00Z"}},"type":"searchset","total":{n},"link":[{{"relation":"self","url":"https://ehr.example/fhir/Observation?patient=pat-a"}},{{"relation":"next","url":"https://ehr.example/fhir/Observation?patient=pat-a&_cursor=eyJ2IjoxfQ"}}],"entry":[{}]}}"#,
        entries.join(",")
    )
    .into_bytes()
}

fn rules(mode: CheckMode, patients: PatientRule) -> ResponseRules {
    ResponseRules {
        mode,
        readable: [ResourceType::Observation, ResourceType::Patient]
            .into_iter()
            .collect(),
        patients,
        exempt: TypeSet::EMPTY,
        max_held: HOLD,
    }
}

/// The body through a check in the engine's chunks; bytes released.
fn check(rules: &ResponseRules, body: &[u8]) -> usize {
    let mut check = ResponseCheck::new(rules.clone(), BodyFormat::Json);
    let mut out = BytesMut::with_capacity(CHUNK);
    let mut released = 0;
    for piece in body.chunks(CHUNK) {
        if check.feed(piece, &mut out).is_err() {
            return released;
        }
        released += out.len();
        out.clear();
    }
    let _ = check.finish(&mut out);
    released + out.len()
}

fn bench(c: &mut Criterion) {
    let only_a = PatientRule::Only(vec!["pat-a".into()]);
    let big = bundle(2_000, 10);
    let clean = bundle(2_000, 0);
    let mut g = c.benchmark_group("response_check");
    g.throughput(Throughput::Bytes(big.len() as u64));
    // The baseline: serde_json reading the same body as a whole, typed as nothing (validation
    // only; it builds no values and holds the whole body, which the check must not).
    g.bench_function("baseline_serde_json_validate", |b| {
        b.iter(|| serde_json::from_slice::<serde::de::IgnoredAny>(black_box(&big)).is_ok());
    });
    g.bench_function("record", |b| {
        let r = rules(CheckMode::Record, PatientRule::Any);
        b.iter(|| check(&r, black_box(&big)));
    });
    g.bench_function("deny_clean", |b| {
        let r = rules(CheckMode::Deny, only_a.clone());
        b.iter(|| check(&r, black_box(&clean)));
    });
    g.bench_function("filter_one_in_ten_withheld", |b| {
        let r = rules(CheckMode::Filter, only_a.clone());
        b.iter(|| check(&r, black_box(&big)));
    });
    g.finish();
    let mut g = c.benchmark_group("response_check_per_bundle");
    let hundred = bundle(100, 10);
    g.bench_function("search_100_entries_filter", |b| {
        let r = rules(CheckMode::Filter, only_a.clone());
        b.iter(|| check(&r, black_box(&hundred)));
    });
    g.bench_function("search_100_entries_deny", |b| {
        let r = rules(CheckMode::Deny, PatientRule::Any);
        b.iter(|| check(&r, black_box(&hundred)));
    });
    g.finish();
}

#[global_allocator]
static GLOBAL: bench_alloc::Counting = bench_alloc::Counting;

/// Peak resident memory of this process so far (`VmHWM`), in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A 50 MB Bundle streamed through the check, generated a chunk at a time so that only the
/// check's own memory can grow: peak RSS before and after, per mode.
fn memory() {
    let entries = bundle(2_000, 10);
    let start = entries
        .windows(9)
        .position(|w| w == br#""entry":["#)
        .map_or(0, |i| i + 9);
    let (head, rest) = entries.split_at(start);
    let body_entries = &rest[..rest.len() - 2];
    let target = 50usize << 20;
    for (name, r) in [
        (
            "filter",
            rules(CheckMode::Filter, PatientRule::Only(vec!["pat-a".into()])),
        ),
        (
            "deny, no patient rule (streams past the cap)",
            rules(CheckMode::Deny, PatientRule::Any),
        ),
        ("record", rules(CheckMode::Record, PatientRule::Any)),
    ] {
        let before = peak_rss_kib();
        let heap_start = bench_alloc::reset_peak();
        let mut check = ResponseCheck::new(r, BodyFormat::Json);
        let mut out = BytesMut::with_capacity(CHUNK);
        let mut fed = 0usize;
        let mut stream = |piece: &[u8], check: &mut ResponseCheck| {
            for chunk in piece.chunks(CHUNK) {
                let _ = check.feed(chunk, &mut out);
                out.clear();
            }
        };
        stream(head, &mut check);
        while fed < target {
            stream(body_entries, &mut check);
            fed += body_entries.len();
            stream(b",", &mut check);
        }
        stream(body_entries, &mut check);
        stream(b"]}", &mut check);
        let verdict = check.finish(&mut out).map_or("refused", |_| "released");
        let heap_peak = bench_alloc::peak() - heap_start;
        let grown = peak_rss_kib().saturating_sub(before);
        println!(
            "response_check memory: {} MB Bundle, {name}: {verdict}; peak heap held {} KiB, \
             peak RSS grew {grown} KiB (cap {} KiB)",
            fed >> 20,
            heap_peak >> 10,
            HOLD >> 10
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    memory();
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
