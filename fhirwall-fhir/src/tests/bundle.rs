//! Batch and transaction Bundles (<http://hl7.org/fhir/R4/http.html#transaction>).

use super::{Headers, config, ok, run, summary};
use crate::{ClassifyError, EntryProblem, Interaction, TenantMode};

const JSON: &[(&str, &str)] = &[
    ("Content-Type", "application/fhir+json"),
    ("Host", "fhir.example"),
];

fn bundle(kind: &str, entries: &str) -> String {
    format!(r#"{{"resourceType":"Bundle","type":"{kind}","entry":[{entries}]}}"#)
}

fn post(body: &str) -> Result<crate::FhirRequest, ClassifyError> {
    run(&config(), "POST", "/fhir/R4", JSON, Some(body))
}

/// The error of entry `index`, unwrapped.
fn entry_error(result: Result<crate::FhirRequest, ClassifyError>, index: usize) -> ClassifyError {
    match result {
        Err(ClassifyError::Entry { index: got, source }) if got == index => *source,
        other => panic!("expected an error in entry {index}, got {other:?}"),
    }
}

#[test]
fn transaction_entries_are_each_classified() {
    let body = bundle(
        "transaction",
        r#"
        {"fullUrl":"urn:uuid:1","resource":{"resourceType":"Patient","name":[{"family":"X"}]},
         "request":{"method":"POST","url":"Patient","ifNoneExist":"identifier=http://x|1"}},
        {"resource":{"resourceType":"Observation","id":"o1","subject":{"reference":"Patient/7"}},
         "request":{"method":"PUT","url":"Observation/o1"}},
        {"request":{"method":"GET","url":"Patient/7/Observation?code=1234-5"}},
        {"request":{"method":"GET","url":"Patient/7/_history/3"}},
        {"request":{"method":"DELETE","url":"Patient?identifier=http://x|2"}},
        {"request":{"method":"HEAD","url":"metadata"}},
        {"resource":{"resourceType":"Parameters"},"request":{"method":"POST","url":"Patient/7/$everything"}},
        {"resource":{"resourceType":"Parameters","parameter":[{"name":"operation","part":[
            {"name":"type","valueCode":"replace"},{"name":"path","valueString":"Patient.active"},
            {"name":"value","valueBoolean":false}]}]},"request":{"method":"PATCH","url":"Patient/7"}},
        {"request":{"method":"POST","url":"Observation/_search?code=1"}}
        "#,
    );
    let r = post(&body).expect("valid transaction");
    assert_eq!(r.interaction, Interaction::Transaction);
    let got: Vec<String> = r.entries.iter().map(|e| summary(&Ok(e.clone()))).collect();
    assert_eq!(
        got,
        [
            "create Patient cond(1)",
            "update Observation id=o1",
            "search-type Observation comp=Patient/7",
            "vread Patient id=7 vid=3",
            "delete Patient cond(1)",
            "capabilities",
            "operation Patient id=7 op=$everything@Instance",
            "patch Patient id=7",
            "search-type Observation",
        ]
    );
    assert_eq!(
        r.patient_refs,
        ["7"],
        "entries' patient refs roll up to the Bundle"
    );
}

#[test]
fn batch_and_absolute_urls_under_this_base() {
    let body = bundle(
        "batch",
        r#"{"request":{"method":"GET","url":"https://fhir.example/fhir/R4/Patient/1"}},
           {"request":{"method":"GET","url":"HTTPS://FHIR.EXAMPLE:443/fhir/R4/Observation?subject=Patient/2"}},
           {"request":{"method":"GET","url":"Patient?identifier=http://acme.org/mrn|3"}}"#,
    );
    let r = post(&body).expect("valid batch");
    assert_eq!(r.interaction, Interaction::Batch);
    let got: Vec<String> = r.entries.iter().map(|e| summary(&Ok(e.clone()))).collect();
    assert_eq!(
        got,
        [
            "read Patient id=1",
            "search-type Observation",
            "search-type Patient"
        ]
    );
    assert_eq!(r.patient_refs, ["1", "2"]);
}

#[test]
fn entry_urls_elsewhere_are_refused() {
    let cases = [
        (
            "https://evil.example/fhir/R4/Patient/1",
            ClassifyError::EntryShape {
                problem: EntryProblem::ForeignUrl,
            },
        ),
        (
            "https://fhir.example/other/Patient/1",
            ClassifyError::OutsideBase {},
        ),
        (
            "https://fhir.example:8443/fhir/R4/Patient/1",
            ClassifyError::EntryShape {
                problem: EntryProblem::ForeignUrl,
            },
        ),
        (
            "ftp://fhir.example/fhir/R4/Patient/1",
            ClassifyError::EntryShape {
                problem: EntryProblem::Url,
            },
        ),
        (
            "/fhir/R4/Patient/1",
            ClassifyError::EntryShape {
                problem: EntryProblem::Url,
            },
        ),
        (
            "Patient/../Observation",
            ClassifyError::Path {
                segment: 4,
                problem: crate::PathProblem::Dot,
            },
        ),
        (
            "patient/1",
            ClassifyError::UnknownResourceType { segment: 3 },
        ),
        (
            "Patient/1#x",
            ClassifyError::Target {
                problem: crate::TargetProblem::Fragment,
            },
        ),
    ];
    for (url, want) in cases {
        let body = bundle(
            "batch",
            &format!(r#"{{"request":{{"method":"GET","url":"{url}"}}}}"#),
        );
        assert_eq!(entry_error(post(&body), 0), want, "url {url}");
    }
}

#[test]
fn absolute_entry_urls_need_a_known_authority() {
    // No Host header and no configured authority: nothing absolute can be matched to this base.
    let mut config = config();
    config.authorities.clear();
    let body = bundle(
        "batch",
        r#"{"request":{"method":"GET","url":"https://fhir.example/fhir/R4/Patient/1"}}"#,
    );
    let headers = [("Content-Type", "application/fhir+json")];
    let err =
        run(&config, "POST", "/fhir/R4", &headers, Some(&body)).expect_err("unknown authority");
    assert_eq!(
        err,
        ClassifyError::Entry {
            index: 0,
            source: Box::new(ClassifyError::EntryShape {
                problem: EntryProblem::ForeignUrl
            })
        }
    );
    // The Host header names it.
    let headers = [
        ("Content-Type", "application/fhir+json"),
        ("Host", "FHIR.example:443"),
    ];
    assert!(run(&config, "POST", "/fhir/R4", &headers, Some(&body)).is_ok());
}

#[test]
fn malformed_entries_are_refused() {
    let cases = [
        (
            r#"{"resource":{"resourceType":"Patient"}}"#,
            ClassifyError::EntryShape {
                problem: EntryProblem::MissingRequest,
            },
        ),
        (
            r#"{"request":{"url":"Patient"}}"#,
            ClassifyError::EntryShape {
                problem: EntryProblem::MissingRequest,
            },
        ),
        (
            r#"{"request":{"method":"GET"}}"#,
            ClassifyError::EntryShape {
                problem: EntryProblem::MissingRequest,
            },
        ),
        (
            r#"{"request":{"method":"get","url":"Patient"}}"#,
            ClassifyError::UnsupportedMethod {},
        ),
        (
            r#"{"request":{"method":"POST","url":"Patient"}}"#,
            ClassifyError::EntryShape {
                problem: EntryProblem::ResourceMissing,
            },
        ),
        (
            r#"{"request":{"method":"PUT","url":"Patient/1"}}"#,
            ClassifyError::EntryShape {
                problem: EntryProblem::ResourceMissing,
            },
        ),
        (
            r#"{"resource":{"resourceType":"Patient"},"request":{"method":"GET","url":"Patient/1"}}"#,
            ClassifyError::EntryShape {
                problem: EntryProblem::ResourceNotAllowed,
            },
        ),
        (
            r#"{"resource":{"resourceType":"Patient"},"request":{"method":"DELETE","url":"Patient/1"}}"#,
            ClassifyError::EntryShape {
                problem: EntryProblem::ResourceNotAllowed,
            },
        ),
        (
            r#"{"resource":{"resourceType":"Observation"},"request":{"method":"POST","url":"Patient"}}"#,
            ClassifyError::ResourceTypeMismatch {
                expected: crate::ResourceType::Patient,
            },
        ),
        (
            r#"{"resource":{"name":"x"},"request":{"method":"POST","url":"Patient"}}"#,
            ClassifyError::ResourceTypeMismatch {
                expected: crate::ResourceType::Patient,
            },
        ),
        (
            r#"{"resource":{"resourceType":"Patient","id":"2"},"request":{"method":"PUT","url":"Patient/1"}}"#,
            ClassifyError::IdMismatch {},
        ),
        (
            r#"{"request":{"method":"DELETE","url":""}}"#,
            ClassifyError::MethodNotAllowed {
                method: crate::FhirMethod::Delete,
                shape: crate::PathShape::Base,
            },
        ),
        (
            r#"{"request":{"method":"PUT","url":"Patient"},"resource":{"resourceType":"Patient"}}"#,
            ClassifyError::MissingConditionalCriteria {
                method: crate::FhirMethod::Put,
            },
        ),
    ];
    for (entry, want) in cases {
        let body = bundle(
            "transaction",
            &format!(r#"{{"request":{{"method":"GET","url":"metadata"}}}},{entry}"#),
        );
        assert_eq!(entry_error(post(&body), 1), want, "entry {entry}");
    }
}

#[test]
fn nested_bundles_are_refused() {
    let inner = bundle("batch", r#"{"request":{"method":"GET","url":"Patient/1"}}"#);
    for url in ["", "https://fhir.example/fhir/R4"] {
        let entry =
            format!(r#"{{"resource":{inner},"request":{{"method":"POST","url":"{url}"}}}}"#);
        let body = bundle("transaction", &entry);
        assert_eq!(
            entry_error(post(&body), 0),
            ClassifyError::EntryShape {
                problem: EntryProblem::Nested
            },
            "url {url:?}"
        );
    }
    // Storing a Bundle resource (e.g. a document) is a create of type Bundle, not a nested batch.
    let document = r#"{"resourceType":"Bundle","type":"document","entry":[{"resource":{"resourceType":"Composition","subject":{"reference":"Patient/5"}}}]}"#;
    let entry =
        format!(r#"{{"resource":{document},"request":{{"method":"POST","url":"Bundle"}}}}"#);
    let r = post(&bundle("transaction", &entry)).expect("create of a document Bundle");
    assert_eq!(summary(&Ok(r.entries[0].clone())), "create Bundle");
    assert_eq!(r.patient_refs, ["5"]);
}

#[test]
fn bundle_envelope_is_checked() {
    let cases = [
        (
            r#"{"resourceType":"Bundle","type":"document"}"#,
            ClassifyError::NotBatchOrTransaction {},
        ),
        (
            r#"{"resourceType":"Bundle","type":"searchset"}"#,
            ClassifyError::NotBatchOrTransaction {},
        ),
        (
            r#"{"resourceType":"Bundle"}"#,
            ClassifyError::NotBatchOrTransaction {},
        ),
        (
            r#"{"resourceType":"Patient","type":"batch"}"#,
            ClassifyError::NotBatchOrTransaction {},
        ),
        (
            r#"{"type":"batch"}"#,
            ClassifyError::NotBatchOrTransaction {},
        ),
        ("[]", ClassifyError::NotBatchOrTransaction {}),
        (
            r#"["Bundle","batch",[]]"#,
            ClassifyError::NotBatchOrTransaction {},
        ),
        (
            r#"{"resourceType":"Bundle","type":"batch","type":"transaction"}"#,
            ClassifyError::Json {
                problem: crate::JsonProblem::Data,
                line: 0,
                column: 0,
            },
        ),
        (
            r#"{"resourceType":"Bundle","type":"batch","entry":{}}"#,
            ClassifyError::Json {
                problem: crate::JsonProblem::Data,
                line: 0,
                column: 0,
            },
        ),
        (
            r#"{"resourceType":"Bundle","#,
            ClassifyError::Json {
                problem: crate::JsonProblem::Eof,
                line: 0,
                column: 0,
            },
        ),
    ];
    for (body, want) in cases {
        // Positions are checked once below; here only the kind of failure matters.
        let got = match post(body).expect_err(body) {
            ClassifyError::Json { problem, .. } => ClassifyError::Json {
                problem,
                line: 0,
                column: 0,
            },
            other => other,
        };
        assert_eq!(got, want, "body {body}");
    }
    let err = post("{\n  \"resourceType\": \"Bundle\",\n  \"type\": batch\n}").expect_err("syntax");
    assert_eq!(
        err,
        ClassifyError::Json {
            problem: crate::JsonProblem::Syntax,
            line: 3,
            column: 11
        }
    );
    assert_eq!(
        (err.issue_type().code(), err.http_status()),
        ("structure", 400)
    );
    let empty = ok("POST", "/fhir/R4", JSON, Some(&bundle("batch", "")));
    assert!(empty.entries.is_empty());
}

#[test]
fn bundle_content_type_and_presence() {
    let config = config();
    let body = bundle("batch", "");
    let expected = "application/fhir+json or application/fhir+xml";
    let cases: [(Headers, Option<&str>, ClassifyError); 3] = [
        (
            &[],
            Some(&body),
            ClassifyError::UnsupportedContentType {
                need: crate::BodyNeed::Bundle,
                expected,
            },
        ),
        (
            &[("Content-Type", "text/plain")],
            Some(&body),
            ClassifyError::UnsupportedContentType {
                need: crate::BodyNeed::Bundle,
                expected,
            },
        ),
        (
            &[("Content-Type", "application/fhir+json")],
            None,
            ClassifyError::BodyRequired {
                need: crate::BodyNeed::Bundle,
            },
        ),
    ];
    for (headers, body, want) in cases {
        assert_eq!(
            run(&config, "POST", "/fhir/R4", headers, body).expect_err("refused"),
            want
        );
    }
    for content_type in [
        "application/json",
        "application/fhir+json; charset=UTF-8",
        "application/fhir+json; fhirVersion=4.0",
        "application/json+fhir",
        "APPLICATION/FHIR+JSON",
    ] {
        let headers = [("Content-Type", content_type)];
        assert!(
            run(&config, "POST", "/fhir/R4", &headers, Some(&body)).is_ok(),
            "{content_type}"
        );
    }
    // A parameter a substring-matching server would read as another format.
    let headers = [("Content-Type", "application/fhir+json; x=json-patch+json")];
    assert!(run(&config, "POST", "/fhir/R4", &headers, Some(&body)).is_err());
    let err = run(
        &config,
        "POST",
        "/fhir/R4",
        &[("Content-Type", "application/xml")],
        Some(&body),
    )
    .expect_err("JSON sent as XML");
    assert!(matches!(err, ClassifyError::Xml { .. }), "{err:?}");
}

#[test]
fn xml_bundles_are_read_like_json_ones() {
    let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<Bundle xmlns="http://hl7.org/fhir">
  <type value="transaction"/>
  <entry>
    <resource>
      <Observation>
        <status value="final"/>
        <code><text value="potassium"/></code>
        <subject><reference value="Patient/b-2"/></subject>
      </Observation>
    </resource>
    <request><method value="POST"/><url value="Observation"/></request>
  </entry>
</Bundle>"#;
    let headers = [
        ("Content-Type", "application/fhir+xml"),
        ("Host", "fhir.example"),
    ];
    let r = run(&config(), "POST", "/fhir/R4", &headers, Some(xml)).expect("an XML transaction");
    assert_eq!(r.interaction, Interaction::Transaction);
    assert_eq!(summary(&Ok(r.entries[0].clone())), "create Observation");
    assert_eq!(r.patient_refs, ["b-2"], "the XML body names patient b-2");
}

#[test]
fn entry_count_limit() {
    let mut config = config();
    config.max_bundle_entries = 3;
    let entry = r#"{"request":{"method":"GET","url":"metadata"}}"#;
    let three = bundle("batch", &[entry; 3].join(","));
    let four = bundle("batch", &[entry; 4].join(","));
    assert_eq!(
        run(&config, "POST", "/fhir/R4", JSON, Some(&three)).map(|r| r.entries.len()),
        Ok(3)
    );
    let err = run(&config, "POST", "/fhir/R4", JSON, Some(&four)).expect_err("over the limit");
    assert_eq!(err, ClassifyError::TooManyEntries { max: 3 });
    assert_eq!(err.issue_type().code(), "too-costly");
}

#[test]
fn tenants_in_path_and_header() {
    let mut config = config();
    config.tenant = TenantMode::PathSegment;
    let r = run(&config, "GET", "/fhir/R4/acme/Patient/1", &[], None).expect("tenant path");
    assert_eq!(
        (r.tenant.as_deref(), summary(&Ok(r.clone())).as_str()),
        (Some("acme"), "read Patient id=1")
    );
    assert_eq!(
        run(&config, "GET", "/fhir/R4", &[], None).expect_err("no tenant"),
        ClassifyError::Tenant {
            problem: crate::TenantProblem::Missing
        }
    );
    assert_eq!(
        summary(&run(&config, "GET", "/fhir/R4/acme/", &[], None)),
        "search-system"
    );
    let body = bundle(
        "batch",
        r#"{"request":{"method":"GET","url":"Patient/1"}},
           {"request":{"method":"GET","url":"https://fhir.example/fhir/R4/acme/Patient/2"}}"#,
    );
    let r = run(&config, "POST", "/fhir/R4/acme", JSON, Some(&body)).expect("same tenant");
    assert!(
        r.entries
            .iter()
            .all(|e| e.tenant.as_deref() == Some("acme"))
    );
    let cross = bundle(
        "batch",
        r#"{"request":{"method":"GET","url":"https://fhir.example/fhir/R4/other/Patient/2"}}"#,
    );
    let err = run(&config, "POST", "/fhir/R4/acme", JSON, Some(&cross)).expect_err("cross tenant");
    assert_eq!(
        err,
        ClassifyError::Entry {
            index: 0,
            source: Box::new(ClassifyError::Tenant {
                problem: crate::TenantProblem::Mismatch
            })
        }
    );

    config.tenant = TenantMode::Header("X-Tenant".to_owned());
    let r = run(
        &config,
        "GET",
        "/fhir/R4/Patient/1",
        &[("x-tenant", "acme")],
        None,
    )
    .expect("tenant header");
    assert_eq!(r.tenant.as_deref(), Some("acme"));
    assert_eq!(
        run(&config, "GET", "/fhir/R4/Patient/1", &[], None).expect_err("missing"),
        ClassifyError::Tenant {
            problem: crate::TenantProblem::Missing
        }
    );
    assert_eq!(
        run(
            &config,
            "GET",
            "/fhir/R4/Patient/1",
            &[("X-Tenant", "a/b")],
            None
        )
        .expect_err("bad"),
        ClassifyError::Tenant {
            problem: crate::TenantProblem::Invalid
        }
    );
    let twice = [("X-Tenant", "a"), ("x-tenant", "b")];
    assert_eq!(
        run(&config, "GET", "/fhir/R4/Patient/1", &twice, None).expect_err("twice"),
        ClassifyError::Header {
            name: "tenant",
            problem: crate::HeaderProblem::Repeated
        }
    );
}
