//! Hostile inputs: each must come back as an error (or a classification), never a panic, a stack
//! overflow or unbounded memory. Generated inputs come from a fixed-seed PRNG so failures
//! reproduce; the fuzz target (`fuzz/fuzz_targets/classify.rs`) explores further.

use super::{FORM, config, run};
use crate::{ClassifyConfig, ClassifyError, HttpRequest, MAX_JSON_DEPTH_CEILING, classify};

const JSON: &[(&str, &str)] = &[("Content-Type", "application/fhir+json")];

/// xorshift64*: deterministic, dependency-free randomness for generated cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let len = u64::try_from(items.len()).expect("small slice");
        let index = usize::try_from(self.next() % len).expect("index fits");
        &items[index]
    }
}

#[test]
fn deep_json_is_too_deep_not_a_stack_overflow() {
    let config = config();
    for depth in [65, 129, 10_000, 200_000] {
        let deep_array = format!(
            r#"{{"resourceType":"Bundle","type":"batch","x":{}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let err = run(&config, "POST", "/fhir/R4", JSON, Some(&deep_array)).expect_err("too deep");
        assert_eq!(err, ClassifyError::JsonTooDeep { max: 64 });
        let unclosed = "{\"a\":".repeat(depth);
        let err =
            run(&config, "POST", "/fhir/R4/Patient", JSON, Some(&unclosed)).expect_err("too deep");
        assert_eq!(err, ClassifyError::JsonTooDeep { max: 64 });
    }
    // Brackets inside strings do not count.
    let in_string = format!(
        r#"{{"resourceType":"Patient","text":"{}\"{}"}}"#,
        "[".repeat(1000),
        "{".repeat(1000)
    );
    assert!(run(&config, "POST", "/fhir/R4/Patient", JSON, Some(&in_string)).is_ok());
    // A configured depth above the ceiling is capped below serde_json's own limit of 128.
    let mut lax = config.clone();
    lax.max_json_depth = 10_000;
    let deep = format!(
        r#"{{"resourceType":"Patient","x":{}{}}}"#,
        "[".repeat(150),
        "]".repeat(150)
    );
    let err = run(&lax, "POST", "/fhir/R4/Patient", JSON, Some(&deep)).expect_err("capped");
    assert_eq!(
        err,
        ClassifyError::JsonTooDeep {
            max: MAX_JSON_DEPTH_CEILING
        }
    );
}

#[test]
fn huge_entry_counts_are_refused_before_they_are_kept() {
    let config = config();
    let entries = vec!["{}"; 500_000].join(",");
    let body = format!(r#"{{"resourceType":"Bundle","type":"transaction","entry":[{entries}]}}"#);
    let err = run(&config, "POST", "/fhir/R4", JSON, Some(&body)).expect_err("too many");
    assert_eq!(err, ClassifyError::TooManyEntries { max: 1000 });
}

#[test]
fn invalid_utf8_anywhere_is_an_error() {
    let config = config();
    let bad: &[u8] = b"name=\xff\xfe";
    let request = |method, target, headers: &[(&str, &[u8])], body| {
        classify(
            &HttpRequest {
                method,
                target,
                headers,
                body,
            },
            &config,
        )
    };
    let form: &[(&str, &[u8])] = &[("Content-Type", b"application/x-www-form-urlencoded")];
    assert!(matches!(
        request("POST", "/fhir/R4/Patient/_search", form, Some(bad)),
        Err(ClassifyError::Query {
            problem: crate::QueryProblem::InvalidUtf8,
            ..
        })
    ));
    let json: &[(&str, &[u8])] = &[("Content-Type", b"application/fhir+json")];
    assert!(matches!(
        request(
            "POST",
            "/fhir/R4",
            json,
            Some(b"{\"resourceType\":\"Bundle\xff\"}")
        ),
        Err(ClassifyError::Json { .. })
    ));
    let bad_header: &[(&str, &[u8])] = &[("Content-Type", b"application/fhir+json\xff")];
    assert_eq!(
        request("POST", "/fhir/R4", bad_header, Some(b"{}")).expect_err("header"),
        ClassifyError::Header {
            name: "Content-Type",
            problem: crate::HeaderProblem::NotUtf8
        }
    );
    let twice: &[(&str, &[u8])] = &[
        ("Content-Type", b"application/fhir+json"),
        ("content-type", b"application/fhir+xml"),
    ];
    assert_eq!(
        request("POST", "/fhir/R4", twice, Some(b"{}")).expect_err("repeated"),
        ClassifyError::Header {
            name: "Content-Type",
            problem: crate::HeaderProblem::Repeated
        }
    );
    assert!(matches!(
        request("GET", "/fhir/R4/Patient?name=%C0%AF", &[], None),
        Err(ClassifyError::Query {
            problem: crate::QueryProblem::InvalidUtf8,
            ..
        })
    ));
}

#[test]
fn long_and_repetitive_inputs_stay_bounded() {
    let config = config();
    let long_value = format!("/fhir/R4/Patient?name={}", "a\\,".repeat(100_000));
    let r = run(&config, "GET", &long_value, &[], None).expect("one long value");
    assert_eq!(r.query.params[0].values.len(), 1);
    let many_values = format!("/fhir/R4/Patient?name={}", ",".repeat(100_000));
    assert_eq!(
        run(&config, "GET", &many_values, &[], None).map(|r| r.query.params[0].values.len()),
        Ok(100_001)
    );
    let deep_has = format!(
        "/fhir/R4/Patient?{}code=1",
        "_has:Observation:patient:".repeat(1000)
    );
    assert_eq!(
        run(&config, "GET", &deep_has, &[], None).map(|r| r.query.params[0].reverse_chain.len()),
        Ok(1000)
    );
    let long_chain = format!(
        "/fhir/R4/Observation?subject{}=x",
        ".subject".repeat(10_000)
    );
    assert!(run(&config, "GET", &long_chain, &[], None).is_ok());
    let many_params = format!("/fhir/R4/Patient?{}", "a=1&".repeat(100_000));
    assert_eq!(
        run(&config, "GET", &many_params, &[], None).expect_err("params"),
        ClassifyError::TooManyParams { max: 256 }
    );
    let many_segments = format!("/fhir/R4{}", "/Patient".repeat(50_000));
    assert!(run(&config, "GET", &many_segments, &[], None).is_err());
    let many_form = "a=1&".repeat(100_000);
    assert!(
        run(
            &config,
            "POST",
            "/fhir/R4/Patient/_search",
            FORM,
            Some(&many_form)
        )
        .is_err()
    );
}

/// Random targets built from the tokens that matter to the parser, under several configs.
#[test]
fn generated_targets_never_panic() {
    const PIECES: &[&str] = &[
        "/",
        "//",
        "Patient",
        "patient",
        "Observation",
        "1",
        "a.b",
        "_history",
        "_search",
        "$everything",
        "$",
        "*",
        "metadata",
        "%2F",
        "%2e",
        "%25",
        "%41",
        "%",
        "%zz",
        ";",
        "..",
        ".",
        "?",
        "&",
        "=",
        ":",
        "_has:",
        "_include",
        ":iterate",
        ",",
        "\\,",
        "\\",
        "+",
        "#",
        "fhir",
        "R4",
        "https://",
        "fhir.example",
        "@",
        "%FF",
        "%C3",
        "_type",
        "_count",
        "-",
        "~",
        " ",
        "\u{e9}",
    ];
    let mut configs = vec![config(), ClassifyConfig::new("/").expect("root")];
    let mut tenant = config();
    tenant.tenant = crate::TenantMode::PathSegment;
    configs.push(tenant);
    let mut rng = Rng(0x5EED_F00D_1234_5678);
    for round in 0..20_000 {
        let len = 1 + rng.next() % 12;
        let mut target = if round % 3 == 0 {
            String::new()
        } else {
            "/fhir/R4/".to_owned()
        };
        for _ in 0..len {
            let piece: &&str = rng.pick(PIECES);
            target.push_str(piece);
        }
        let method = *rng.pick(&["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]);
        let config = rng.pick(&configs);
        // The result may be Ok or Err; reaching the next iteration is the property.
        if let Ok(r) = run(config, method, &target, FORM, Some("name=x")) {
            assert!(serde_json::to_string(&r).is_ok(), "{target}");
        }
    }
}

/// Random Bundle bodies: mixed valid and broken entries.
#[test]
fn generated_bundles_never_panic() {
    const ENTRIES: &[&str] = &[
        r#"{"request":{"method":"GET","url":"Patient/1"}}"#,
        r#"{"request":{"method":"POST","url":"Patient"},"resource":{"resourceType":"Patient"}}"#,
        r#"{"request":{"method":"PUT","url":"Patient?x=1"},"resource":{"resourceType":"Patient"}}"#,
        r#"{"request":{"method":"POST","url":""},"resource":{"resourceType":"Bundle","type":"batch"}}"#,
        r#"{"request":{"method":"GET","url":"https://fhir.example/fhir/R4/Patient/1"}}"#,
        r#"{"request":{"method":"GET","url":"https://x/Patient/1"}}"#,
        r#"{"request":[1,2]}"#,
        r#"{"request":{"method":7,"url":null}}"#,
        r#"{"resource":"x","request":{"method":"POST","url":"Patient"}}"#,
        "[]",
        "null",
        r#"{"request":{"method":"GET","url":"Patient/../1"}}"#,
        r#"{"request":{"method":"GET","url":"Patient?_has:Observation:patient:code=%FF"}}"#,
    ];
    let config = config();
    let mut rng = Rng(42);
    for _ in 0..3_000 {
        let count = rng.next() % 6;
        let entries: Vec<&str> = (0..count).map(|_| *rng.pick(ENTRIES)).collect();
        let kind = *rng.pick(&["batch", "transaction", "document", ""]);
        let body = format!(
            r#"{{"resourceType":"Bundle","type":"{kind}","entry":[{}]}}"#,
            entries.join(",")
        );
        let _ = run(&config, "POST", "/fhir/R4", JSON, Some(&body));
        // Truncations are syntax errors, never panics.
        let cut =
            usize::try_from(rng.next() % u64::try_from(body.len()).expect("len")).expect("fits");
        if let Some(prefix) = body.get(..cut) {
            assert!(run(&config, "POST", "/fhir/R4", JSON, Some(prefix)).is_err());
        }
    }
}
