//! Policy decision cost: `decide()` with 200 integrations, for typical allowed and denied
//! requests, against the same rules in cedar-policy measured in the same run (targets: median
//! under 1 us, at least 10x faster than cedar-policy). Prints the ratio of medians at the end.
//!
//! `cargo xtask bench policy`, or `AYA_BUILD_SKIP=1 cargo bench -p fhirwall --bench policy`.
//!
//! Both engines get their inputs prepared, as a proxy would have them when it decides:
//! `decide()` a classified `FhirRequest` and a `Subject`; Cedar one prepared `Request` per
//! permission the FHIR request needs (a search with `_include` needs two; a transaction one
//! per entry), all of which must be allowed. Classification, header reading and building
//! Cedar requests are not measured.

use std::{
    fmt::Write as _,
    hint::black_box,
    path::{Path, PathBuf},
    time::SystemTime,
};

use cedar_policy::{Authorizer, Context, Entities, EntityUid, PolicySet, Request};
use criterion::{Criterion, SamplingMode};
use fhirwall_fhir::{FhirRequest, HttpRequest, classify};
use fhirwall_policy::{Policy, ReplayInput, Subject, Workload, decide};
use serde_json::json;

/// Counts allocations, to show that `decide()` makes none.
#[global_allocator]
static GLOBAL: bench_alloc::Counting = bench_alloc::Counting;

const INTEGRATIONS: usize = 200;
/// The integration the benchmark requests come from (in the middle of the list).
const CALLER: usize = 100;
const LAB: &str = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory";
/// The per-integration extra scope, by index modulo the list length.
const EXTRA: [&str; 8] = [
    "Condition",
    "Procedure",
    "MedicationRequest",
    "Immunization",
    "AllergyIntolerance",
    "CarePlan",
    "Claim",
    "Coverage",
];

fn extra(i: usize) -> &'static str {
    EXTRA[i % EXTRA.len()]
}

/// 200 integrations: each reads Patient and Encounter, searches lab Observations (granular),
/// writes DiagnosticReports, and reads one more type.
fn policy_yaml() -> String {
    let mut out = String::from(
        "kind: Upstream\nname: ehr-fhir\naddresses: [\"127.0.0.2:8443\"]\nbase_path: /\n",
    );
    for i in 0..INTEGRATIONS {
        let extra = extra(i);
        write!(
            out,
            "---\nkind: Integration\nname: int-{i}\nowner: team-{i}\npurpose: benchmark\n\
             data_classes: [clinical]\n\
             expected_resources: [Patient, Encounter, Observation, DiagnosticReport, {extra}]\n\
             status: active\nworkload:\n  exe: /opt/app-{i}/bin/run\nupstreams: [ehr-fhir]\n\
             scopes:\n  - system/Patient.rs\n  - system/Encounter.rs\n\
             \x20 - system/Observation.rs?category={LAB}\n  - system/DiagnosticReport.cu\n\
             \x20 - system/{extra}.rs\n\
             purposes_of_use: [TREAT, HOPERAT]\ndefault_purpose: TREAT\npatient:\n  mode: any\n"
        )
        .expect("writing to a String");
    }
    out
}

/// The same rules in Cedar: one `permit` per scope, with upstream and purpose conditions, for
/// the integrations in `range`.
fn cedar_policies(range: std::ops::Range<usize>) -> String {
    let mut out = String::new();
    for i in range {
        let when =
            r#"context.upstream == "ehr-fhir" && ["TREAT", "HOPERAT"].contains(context.purpose)"#;
        let p = format!(r#"principal == Integration::"int-{i}""#);
        let rs = r#"action in [Action::"read", Action::"search"]"#;
        writeln!(
            out,
            r#"permit({p}, {rs}, resource == FhirType::"Patient") when {{ {when} }};"#
        )
        .expect("writing to a String");
        writeln!(
            out,
            r#"permit({p}, {rs}, resource == FhirType::"Encounter") when {{ {when} }};"#
        )
        .expect("writing to a String");
        writeln!(
            out,
            r#"permit({p}, action == Action::"search", resource == FhirType::"Observation") when {{ {when} && context.params has category && context.params.category == ["{LAB}"] }};"#
        )
        .expect("writing to a String");
        writeln!(
            out,
            r#"permit({p}, action in [Action::"create", Action::"update"], resource == FhirType::"DiagnosticReport") when {{ {when} }};"#
        )
        .expect("writing to a String");
        writeln!(
            out,
            r#"permit({p}, {rs}, resource == FhirType::"{}") when {{ {when} }};"#,
            extra(i)
        )
        .expect("writing to a String");
    }
    out
}

/// One benchmark case: the HTTP request, its caller and purpose, and the Cedar checks
/// (action, type, params) it amounts to.
struct Case {
    name: &'static str,
    caller: Option<usize>,
    purpose: &'static str,
    method: &'static str,
    target: String,
    body: Option<String>,
    cedar: Vec<(&'static str, &'static str, serde_json::Value)>,
    allowed: bool,
}

fn transaction(entries: usize) -> String {
    let entry = r#"{"resource":{"resourceType":"DiagnosticReport","status":"final","code":{"text":"CBC"},"subject":{"reference":"Patient/123"}},"request":{"method":"POST","url":"DiagnosticReport"}}"#;
    format!(
        r#"{{"resourceType":"Bundle","type":"transaction","entry":[{}]}}"#,
        vec![entry; entries].join(",")
    )
}

fn cases() -> Vec<Case> {
    let none = || json!({});
    let case = |name, caller, purpose, method, target: String, cedar, allowed| Case {
        name,
        caller,
        purpose,
        method,
        target,
        body: None,
        cedar,
        allowed,
    };
    vec![
        case(
            "allow_read",
            Some(CALLER),
            "TREAT",
            "GET",
            "/Patient/123".into(),
            vec![("read", "Patient", none())],
            true,
        ),
        case(
            "allow_granular_search",
            Some(CALLER),
            "TREAT",
            "GET",
            format!("/Observation?category={LAB}&patient=123&_count=50"),
            vec![(
                "search",
                "Observation",
                json!({"category": [LAB], "patient": ["123"]}),
            )],
            true,
        ),
        case(
            "allow_search_include",
            Some(CALLER),
            "HOPERAT",
            "GET",
            "/Encounter?patient=123&_include=Encounter:subject:Patient".into(),
            vec![
                ("search", "Encounter", json!({"patient": ["123"]})),
                ("read", "Patient", none()),
            ],
            true,
        ),
        Case {
            body: Some(transaction(10)),
            ..case(
                "allow_transaction_10",
                Some(CALLER),
                "TREAT",
                "POST",
                "/".into(),
                vec![("create", "DiagnosticReport", none()); 10],
                true,
            )
        },
        case(
            "deny_scope",
            Some(CALLER),
            "TREAT",
            "GET",
            "/Condition?patient=123".into(),
            vec![("search", "Condition", json!({"patient": ["123"]}))],
            false,
        ),
        case(
            "deny_granular",
            Some(CALLER),
            "TREAT",
            "GET",
            "/Observation?patient=123".into(),
            vec![("search", "Observation", json!({"patient": ["123"]}))],
            false,
        ),
        case(
            "deny_purpose",
            Some(CALLER),
            "HPAYMT",
            "GET",
            "/Patient/123".into(),
            vec![("read", "Patient", none())],
            false,
        ),
        case(
            "deny_unregistered",
            None,
            "TREAT",
            "GET",
            "/Patient/123".into(),
            vec![("read", "Patient", none())],
            false,
        ),
    ]
}

fn classified(policy: &Policy, case: &Case) -> FhirRequest {
    let config = policy.classify_config("ehr-fhir").expect("upstream config");
    let headers: &[(&str, &[u8])] = &[("Content-Type", b"application/fhir+json")];
    let request = HttpRequest {
        method: case.method,
        target: &case.target,
        headers,
        body: case.body.as_deref().map(str::as_bytes),
    };
    classify(&request, config).expect("benchmark requests classify")
}

fn cedar_requests(case: &Case) -> Vec<Request> {
    let principal = match case.caller {
        Some(i) => format!(r#"Integration::"int-{i}""#),
        None => r#"Integration::"unregistered""#.to_owned(),
    };
    case.cedar
        .iter()
        .map(|(action, resource_type, params)| {
            let context =
                json!({"upstream": "ehr-fhir", "purpose": case.purpose, "params": params});
            Request::new(
                principal.parse::<EntityUid>().expect("principal"),
                format!(r#"Action::"{action}""#).parse().expect("action"),
                format!(r#"FhirType::"{resource_type}""#)
                    .parse()
                    .expect("resource"),
                Context::from_json_value(context, None).expect("context"),
                None,
            )
            .expect("request")
        })
        .collect()
}

fn cedar_allows(
    authorizer: &Authorizer,
    requests: &[Request],
    policies: &PolicySet,
    entities: &Entities,
) -> bool {
    requests.iter().all(|r| {
        authorizer.is_authorized(r, policies, entities).decision() == cedar_policy::Decision::Allow
    })
}

/// One case, ready for both engines.
struct Prepared {
    name: &'static str,
    request: FhirRequest,
    caller: Option<usize>,
    purpose: &'static str,
    cedar: Vec<Request>,
    /// Only the caller's policies: what a deployment that indexes policies by principal
    /// would hand Cedar.
    sliced: PolicySet,
}

fn prepare(policy: &Policy, all: &PolicySet) -> Vec<Prepared> {
    let entities = Entities::empty();
    let authorizer = Authorizer::new();
    let header = policy.settings.purpose_header.as_str();
    cases()
        .into_iter()
        .map(|case| {
            let request = classified(policy, &case);
            let integration = case.caller.map(|i| &policy.integrations[i]);
            let headers: [(&str, &[u8]); 1] = [(header, case.purpose.as_bytes())];
            let subject = Subject::from_headers(
                policy,
                integration,
                "ehr-fhir",
                &headers,
                jiff::Timestamp::now(),
            );
            // Both engines must agree before their speed means anything; decide() must not
            // allocate.
            let before = bench_alloc::allocations();
            let forwards = decide(policy, &subject, &request).forwards();
            let allocations = bench_alloc::allocations() - before;
            assert_eq!(forwards, case.allowed, "{}: decide", case.name);
            assert_eq!(allocations, 0, "{}: decide() allocated", case.name);
            let cedar = cedar_requests(&case);
            let sliced: PolicySet = case
                .caller
                .map_or_else(String::new, |i| cedar_policies(i..i + 1))
                .parse()
                .expect("cedar policies");
            for set in [all, &sliced] {
                assert_eq!(
                    cedar_allows(&authorizer, &cedar, set, &entities),
                    case.allowed,
                    "{}: cedar",
                    case.name
                );
            }
            Prepared {
                name: case.name,
                request,
                caller: case.caller,
                purpose: case.purpose,
                cedar,
                sliced,
            }
        })
        .collect()
}

fn bench(c: &mut Criterion, policy: &Policy) {
    let all: PolicySet = cedar_policies(0..INTEGRATIONS)
        .parse()
        .expect("cedar policies");
    let entities = Entities::empty();
    let authorizer = Authorizer::new();
    let prepared = prepare(policy, &all);
    let header = policy.settings.purpose_header.as_str();
    let headers: Vec<[(&str, &[u8]); 1]> = prepared
        .iter()
        .map(|p| [(header, p.purpose.as_bytes())])
        .collect();
    let subjects: Vec<Subject<'_>> = prepared
        .iter()
        .zip(&headers)
        .map(|(p, headers)| {
            let integration = p.caller.map(|i| &policy.integrations[i]);
            Subject::from_headers(
                policy,
                integration,
                "ehr-fhir",
                headers,
                jiff::Timestamp::now(),
            )
        })
        .collect();
    let mut group = c.benchmark_group("decide");
    for (p, subject) in prepared.iter().zip(&subjects) {
        group.bench_function(p.name, |b| {
            b.iter(|| {
                decide(black_box(policy), black_box(subject), black_box(&p.request)).forwards()
            });
        });
    }
    group.finish();
    // What each audit record now also pays: the request kept for replay, made and serialized.
    let mut group = c.benchmark_group("replay_input");
    for (p, subject) in prepared.iter().zip(&subjects) {
        group.bench_function(p.name, |b| {
            b.iter(|| {
                let input = ReplayInput::of(black_box(subject), black_box(&p.request));
                serde_json::to_string(&input).map(|s| s.len())
            });
        });
    }
    group.finish();
    // Not per request: the proxy matches a connection's workload once and keeps the result.
    // As attribution hands it over: the executable verified root-installed at that path.
    let workload = Workload {
        exe: Some(format!("/opt/app-{CALLER}/bin/run").into()),
        exe_verified: true,
        ..Workload::default()
    };
    assert!(policy.integration_for(&workload).is_some());
    c.bench_function("match/integration_for", |b| {
        b.iter(|| policy.integration_for(black_box(&workload)).is_some());
    });
    for (name, sliced) in [("cedar", false), ("cedar_sliced", true)] {
        let mut group = c.benchmark_group(name);
        // Cedar takes milliseconds per request with every policy loaded: fewer, flat samples
        // keep the run short without changing the median.
        group.sample_size(20).sampling_mode(SamplingMode::Flat);
        for p in &prepared {
            let set = if sliced { &p.sliced } else { &all };
            group.bench_function(p.name, |b| {
                b.iter(|| cedar_allows(&authorizer, black_box(&p.cedar), set, &entities));
            });
        }
        group.finish();
    }
}

/// Where criterion writes its estimates (its own lookup order, minus `cargo metadata`).
fn criterion_dir() -> PathBuf {
    std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR").map(|t| PathBuf::from(t).join("criterion"))
        })
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion"))
}

/// The median (ns) criterion measured for `id` in this run, if it ran.
fn median(id: &str, since: SystemTime) -> Option<f64> {
    let path = criterion_dir().join(id).join("new/estimates.json");
    let fresh = std::fs::metadata(&path).and_then(|m| m.modified()).ok()? >= since;
    let estimates: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    fresh
        .then(|| estimates["median"]["point_estimate"].as_f64())
        .flatten()
}

fn main() {
    let started = SystemTime::now();
    let sources = policy_yaml();
    let policy = Policy::from_sources(
        [(Path::new("generated.yaml"), sources.as_str())],
        jiff::Timestamp::now(),
    )
    .expect("generated policy");
    assert_eq!(policy.integrations.len(), INTEGRATIONS);
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion, &policy);
    criterion.final_summary();

    println!("\nmedians: the request kept for replay (made and serialized) | decide");
    for case in cases() {
        let m = |group: &str| median(&format!("{group}/{}", case.name), started);
        if let (Some(r), Some(d)) = (m("replay_input"), m("decide")) {
            println!("  {:<24} {:>8.1} ns | {:>8.1} ns", case.name, r, d);
        }
    }
    println!(
        "\nmedians, {INTEGRATIONS} integrations: decide | cedar (all policies) | cedar (caller's only)"
    );
    for case in cases() {
        let m = |engine: &str| median(&format!("{engine}/{}", case.name), started);
        if let (Some(d), Some(c), Some(s)) = (m("decide"), m("cedar"), m("cedar_sliced")) {
            println!(
                "  {:<24} {:>8.1} ns | {:>12.1} ns = {:>7.0}x | {:>10.1} ns = {:>5.0}x",
                case.name,
                d,
                c,
                c / d,
                s,
                s / d
            );
        }
    }
}
