//! Parsing of the audit routes' query strings (the routes themselves are tested against a seeded
//! store in `admin/tests.rs`).

use jiff::Timestamp;

use super::{Ask, ParamError, RowFormat, parse};
use crate::audit::{Disposition, Order};

fn now() -> Timestamp {
    "2026-11-30T12:00:00Z".parse().unwrap()
}

fn query(q: &str) -> (crate::audit::Filter, RowFormat) {
    match parse("/v1/audit/query", q, now()) {
        Ok(Some(Ask::Query { filter, format })) => (filter, format),
        other => panic!("{q}: {other:?}"),
    }
}

fn refused(path: &str, q: &str) -> ParamError {
    match parse(path, q, now()) {
        Err(e) => e,
        Ok(other) => panic!("{path}?{q} must be refused, got {other:?}"),
    }
}

#[test]
fn query_parameters_become_a_filter() {
    let (f, format) = query(
        "integration=lab-sync&exe=%2Fopt%2Flab%2Fbin%2Fsync&sha256=ABCD&pid=42&container=c1&pod=p1\
         &unit=lab.service&credential=sha256%3A01&patient=Patient%2F123&resource-type=Observation\
         &decision=would-deny&since=7d&to=2026-11-30T00%3A00%3A00Z&limit=50&after=9&order=newest\
         &format=jsonl",
    );
    assert_eq!(f.integration.as_deref(), Some("lab-sync"));
    assert_eq!(f.exe.as_deref(), Some("/opt/lab/bin/sync"));
    assert_eq!(
        f.exe_sha256.as_deref(),
        Some("abcd"),
        "hex is compared lowercase"
    );
    assert_eq!(f.pid, Some(42));
    assert_eq!(f.container_id.as_deref(), Some("c1"));
    assert_eq!(f.pod_uid.as_deref(), Some("p1"));
    assert_eq!(f.systemd_unit.as_deref(), Some("lab.service"));
    assert_eq!(f.credential_fingerprint.as_deref(), Some("sha256:01"));
    assert_eq!(f.patient.as_deref(), Some("Patient/123"));
    assert_eq!(f.resource_type.as_deref(), Some("Observation"));
    assert_eq!(f.decision, Some(Disposition::WouldDeny));
    assert_eq!(f.from, Some("2026-11-23T12:00:00Z".parse().unwrap()));
    assert_eq!(f.to, Some("2026-11-30T00:00:00Z".parse().unwrap()));
    assert_eq!(f.limit, Some(50));
    assert_eq!(f.after_seq, Some(9));
    assert_eq!(f.order, Order::NewestFirst);
    assert_eq!(format, RowFormat::Jsonl);
}

#[test]
fn query_defaults() {
    let (f, format) = query("");
    assert_eq!(f.limit, Some(1_000));
    assert_eq!(f.order, Order::OldestFirst);
    assert_eq!(format, RowFormat::Json);
    assert!(f.integration.is_none() && f.patient.is_none() && f.from.is_none());
    let (f, _) = query("unattributed&from=2026-11-01T00:00:00Z");
    assert!(f.unattributed);
    assert_eq!(f.from, Some("2026-11-01T00:00:00Z".parse().unwrap()));
}

#[test]
fn bad_query_strings_are_refused_with_the_parameter_named() {
    let cases: [(&str, &str, ParamError); 13] = [
        (
            "/v1/audit/query",
            "integration=a&bogus=1",
            ParamError::Unknown {
                name: "bogus".into(),
            },
        ),
        (
            "/v1/audit/query",
            "patient=Patient%2F1&patient=Patient%2F2",
            ParamError::Repeated { name: "patient" },
        ),
        ("/v1/audit/query", "patient=%zz", ParamError::Encoding),
        ("/v1/audit/query", "patient=%C3", ParamError::Encoding),
        (
            "/v1/audit/query",
            "patient=",
            ParamError::Empty { name: "patient" },
        ),
        (
            "/v1/audit/query",
            "limit=0",
            ParamError::Invalid {
                name: "limit",
                expected: "1 to 10000 rows (page with after=SEQ)",
            },
        ),
        (
            "/v1/audit/query",
            "limit=10001",
            ParamError::Invalid {
                name: "limit",
                expected: "1 to 10000 rows (page with after=SEQ)",
            },
        ),
        (
            "/v1/audit/query",
            "pid=-1",
            ParamError::Invalid {
                name: "pid",
                expected: "a process id",
            },
        ),
        (
            "/v1/audit/query",
            "since=7d&from=2026-11-01T00:00:00Z",
            ParamError::Conflict {
                a: "since",
                b: "from",
            },
        ),
        (
            "/v1/audit/query",
            "integration=a&unattributed",
            ParamError::Conflict {
                a: "integration",
                b: "unattributed",
            },
        ),
        (
            "/v1/audit/query",
            "since=fortnight",
            ParamError::Invalid {
                name: "since",
                expected: "a span such as 7d, 12h or 90m",
            },
        ),
        (
            "/v1/audit/report",
            "since=7d",
            ParamError::Missing {
                name: "integration",
            },
        ),
        (
            "/v1/audit/verify",
            "anchor=12",
            ParamError::Invalid {
                name: "anchor",
                expected: "SEQ:SHA256 as printed by verify",
            },
        ),
    ];
    for (path, q, want) in cases {
        assert_eq!(refused(path, q), want, "{path}?{q}");
    }
    let decision = refused("/v1/audit/query", "decision=maybe");
    assert_eq!(
        decision.to_string(),
        "parameter decision: expected one of allow, deny, would-deny, kernel-refused, malformed"
    );
}

#[test]
fn report_and_verify_parameters() {
    let Ok(Some(Ask::Report(r))) = parse(
        "/v1/audit/report",
        "integration=lab&since=7d&business-hours=08%3A00-17%3A00&format=fhir",
        now(),
    ) else {
        panic!("report must parse");
    };
    assert_eq!(r.filter.integration.as_deref(), Some("lab"));
    assert_eq!(r.filter.from, Some("2026-11-23T12:00:00Z".parse().unwrap()));
    assert_eq!(r.hours.start, jiff::civil::time(8, 0, 0, 0));
    assert!(r.fhir);
    assert!(matches!(
        parse("/v1/audit/report", "integration=lab&limit=5", now()),
        Err(ParamError::Unknown { .. })
    ));

    let anchor = format!("3:{}", "ab".repeat(32));
    let two = format!("anchor={anchor}&anchor=4%3A{}", "cd".repeat(32));
    let Ok(Some(Ask::Verify { anchors })) = parse("/v1/audit/verify", &two, now()) else {
        panic!("verify must parse");
    };
    assert_eq!(anchors.len(), 2, "anchor may repeat");
    assert_eq!(anchors[0].to_string(), anchor);
    assert!(matches!(parse("/v1/audit/other", "", now()), Ok(None)));
}
