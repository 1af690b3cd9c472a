//! FHIR classification cost per request, for typical requests an EHR integration sends.
//! `cargo bench -p fhirwall --bench classify` (with `AYA_BUILD_SKIP=1` when the kernel
//! toolchain is absent).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use fhirwall_fhir::{ClassifyConfig, HttpRequest, classify};

const JSON: &[(&str, &[u8])] = &[
    ("Content-Type", b"application/fhir+json"),
    ("Host", b"fhir.example"),
];
const FORM: &[(&str, &[u8])] = &[("Content-Type", b"application/x-www-form-urlencoded")];

/// (name, method, target, headers, body)
type Case<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a [(&'a str, &'a [u8])],
    Option<&'a [u8]>,
);

fn transaction(entries: usize) -> String {
    let entry = r#"{"fullUrl":"urn:uuid:x","resource":{"resourceType":"Observation","status":"final",
        "code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"subject":{"reference":"Patient/123"},
        "valueQuantity":{"value":72,"unit":"beats/minute"}},"request":{"method":"POST","url":"Observation"}}"#;
    format!(
        r#"{{"resourceType":"Bundle","type":"transaction","entry":[{}]}}"#,
        vec![entry; entries].join(",")
    )
}

fn bench(c: &mut Criterion) {
    let config = ClassifyConfig::new("/fhir/R4").expect("valid base");
    let tx10 = transaction(10);
    let tx100 = transaction(100);
    let create =
        r#"{"resourceType":"Observation","status":"final","subject":{"reference":"Patient/123"}}"#;
    let cases: [Case<'_>; 8] = [
        ("read", "GET", "/fhir/R4/Patient/123", &[], None),
        ("vread", "GET", "/fhir/R4/Patient/123/_history/4", &[], None),
        (
            "search_params",
            "GET",
            "/fhir/R4/Observation?patient=123&code=http://loinc.org|8867-4&date=ge2024-01-01&_count=50&_sort=-date",
            &[],
            None,
        ),
        (
            "search_include_chain",
            "GET",
            "/fhir/R4/Observation?subject:Patient.identifier=http://acme.org/mrn|42&_include=Observation:subject:Patient&_revinclude=Provenance:target",
            &[],
            None,
        ),
        (
            "compartment",
            "GET",
            "/fhir/R4/Patient/123/Observation?category=vital-signs",
            &[],
            None,
        ),
        (
            "post_search",
            "POST",
            "/fhir/R4/Observation/_search",
            FORM,
            Some(b"patient=123&code=8867-4&_count=10"),
        ),
        (
            "create_json",
            "POST",
            "/fhir/R4/Observation",
            JSON,
            Some(create.as_bytes()),
        ),
        (
            "transaction_10",
            "POST",
            "/fhir/R4",
            JSON,
            Some(tx10.as_bytes()),
        ),
    ];
    let mut group = c.benchmark_group("classify");
    for (name, method, target, headers, body) in cases {
        let request = HttpRequest {
            method,
            target,
            headers,
            body,
        };
        assert!(classify(&request, &config).is_ok(), "{name} classifies");
        group.bench_function(name, |b| b.iter(|| classify(black_box(&request), &config)));
    }
    let request = HttpRequest {
        method: "POST",
        target: "/fhir/R4",
        headers: JSON,
        body: Some(tx100.as_bytes()),
    };
    assert!(
        classify(&request, &config).is_ok(),
        "transaction_100 classifies"
    );
    group.bench_function("transaction_100", |b| {
        b.iter(|| classify(black_box(&request), &config));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
