//! Queries and the report over a seeded store (record `i` at Monday 00:00 UTC + `i` hours; see
//! `support::record` for which fields each `i` gets).

use std::collections::{BTreeMap, BTreeSet};

use jiff::tz::TimeZone;

use super::support::{monday_plus, seed_fixed, temp_store};
use crate::audit::{
    BusinessHours, Disposition, Filter, Order, QueryRow, UNREGISTERED, open_read_only, query,
    report, report_from, report_text,
};

fn seqs(rows: &[QueryRow]) -> Vec<u64> {
    rows.iter().map(|r| r.seq).collect()
}

#[expect(
    clippy::unnecessary_wraps,
    reason = "reads like the optional Filter fields it fills"
)]
fn text(s: &str) -> Option<String> {
    Some(s.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(clippy::too_many_lines, reason = "one table of cases")]
async fn filters_select_the_right_rows() {
    let (_dir, path) = temp_store();
    seed_fixed(&path, 30).await;
    let conn = open_read_only(&path).unwrap();
    let lab = vec![1, 4, 7, 10, 13, 16, 19, 22, 25, 28];
    let unattributed = vec![2, 5, 8, 11, 14, 17, 20, 23, 26, 29];
    let mirth = vec![3, 6, 9, 12, 15, 18, 21, 24, 27, 30];
    let odd: Vec<u64> = (1..=30).filter(|n| n % 2 == 1).collect();
    let even: Vec<u64> = (1..=30).filter(|n| n % 2 == 0).collect();
    let cases: Vec<(&str, Filter, Vec<u64>)> = vec![
        (
            "integration",
            Filter {
                integration: text("lab"),
                ..Filter::default()
            },
            lab.clone(),
        ),
        (
            "unattributed",
            Filter {
                unattributed: true,
                ..Filter::default()
            },
            unattributed.clone(),
        ),
        (
            "exe",
            Filter {
                exe: text("/usr/local/bin/lab-sync"),
                ..Filter::default()
            },
            lab.clone(),
        ),
        (
            "sha256",
            Filter {
                exe_sha256: Some(format!("{:064x}", 1)),
                ..Filter::default()
            },
            lab.clone(),
        ),
        (
            "pid",
            Filter {
                pid: Some(1001),
                ..Filter::default()
            },
            lab.clone(),
        ),
        (
            "container",
            Filter {
                container_id: text("c0ffee00"),
                ..Filter::default()
            },
            unattributed.clone(),
        ),
        (
            "pod",
            Filter {
                pod_uid: text("pod-1234"),
                ..Filter::default()
            },
            unattributed,
        ),
        (
            "unit",
            Filter {
                systemd_unit: text("mirth.service"),
                ..Filter::default()
            },
            mirth,
        ),
        (
            "credential",
            Filter {
                credential_fingerprint: text("sha256:00000001"),
                ..Filter::default()
            },
            odd,
        ),
        (
            "resource type",
            Filter {
                resource_type: text("Observation"),
                ..Filter::default()
            },
            even,
        ),
        (
            "patient",
            Filter {
                patient: text("Patient/p2"),
                ..Filter::default()
            },
            vec![2, 7, 12, 17, 22, 27],
        ),
        (
            "decision",
            Filter {
                decision: Some(Disposition::Deny),
                ..Filter::default()
            },
            vec![3, 7, 11, 15, 19, 23, 27],
        ),
        (
            "integration and decision",
            Filter {
                integration: text("lab"),
                decision: Some(Disposition::Deny),
                ..Filter::default()
            },
            vec![7, 19],
        ),
        (
            "time window",
            Filter {
                from: Some(monday_plus(21)),
                to: Some(monday_plus(24)),
                ..Filter::default()
            },
            vec![21, 22, 23],
        ),
        (
            "newest first, limited",
            Filter {
                order: Order::NewestFirst,
                limit: Some(3),
                ..Filter::default()
            },
            vec![30, 29, 28],
        ),
        (
            "after a seq",
            Filter {
                after_seq: Some(27),
                ..Filter::default()
            },
            vec![28, 29, 30],
        ),
        (
            "nothing",
            Filter {
                integration: text("nobody"),
                ..Filter::default()
            },
            vec![],
        ),
    ];
    for (name, filter, want) in cases {
        assert_eq!(seqs(&query(&conn, &filter).unwrap()), want, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_paths_never_keep_query_values() {
    let (_dir, path) = temp_store();
    seed_fixed(&path, 3).await;
    let rows = query(&open_read_only(&path).unwrap(), &Filter::default()).unwrap();
    assert!(
        rows.iter().all(|r| r.record.path == "/Observation?patient"),
        "{:?}",
        rows[0].record.path
    );
    let journal = crate::audit::journal::read_from(&path.with_extension("journal"), 1, 100)
        .unwrap()
        .into_iter()
        .map(|f| f.body)
        .collect::<String>();
    let index: String = super::support::rw(&path)
        .query_row(
            "SELECT group_concat(correlation_id) FROM entries",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(journal.contains("/Observation?patient"), "{journal}");
    for stored in [journal, index] {
        assert!(
            !stored.contains("Patient%2F"),
            "search values must not reach the store"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_summarizes_one_integration() {
    let (_dir, path) = temp_store();
    seed_fixed(&path, 30).await;
    let rows = query(
        &open_read_only(&path).unwrap(),
        &Filter {
            integration: text("lab"),
            ..Filter::default()
        },
    )
    .unwrap();
    let hours = BusinessHours {
        tz: TimeZone::UTC,
        ..BusinessHours::parse("07:00-19:00").unwrap()
    };
    let r = report(&rows, &hours);
    assert_eq!(r.requests, 10);
    assert_eq!(r.resource_types.get("Observation"), Some(&5));
    assert_eq!(r.resource_types.get("Patient"), Some(&5));
    assert_eq!(r.distinct_patients, 5);
    assert_eq!(
        r.denials_by_reason.get("revoked"),
        Some(&1),
        "{:?}",
        r.denials_by_reason
    );
    assert_eq!(
        r.denials_by_reason.get("scope"),
        Some(&1),
        "{:?}",
        r.denials_by_reason
    );
    assert_eq!(r.decisions.get("allow"), Some(&8));
    assert_eq!(r.break_glass, 1);
    // In hours (Monday 07:00-19:00 UTC): records 7, 10, 13, 16.
    assert_eq!(r.off_hours, 6);
    assert_eq!(r.first_seen, Some(monday_plus(1)));
    assert_eq!(r.last_seen, Some(monday_plus(28)));
    assert_eq!(r.workloads.len(), 1);
    let w = &r.workloads[0];
    assert_eq!(w.exe.as_deref(), Some("/usr/local/bin/lab-sync"));
    assert_eq!(w.requests, 10);
    assert_eq!(w.users.iter().collect::<Vec<_>>(), ["svc1"]);
    assert_eq!(w.units.iter().collect::<Vec<_>>(), ["lab-sync.service"]);
    assert_eq!(w.credentials.len(), 2);
}

#[test]
fn business_hours_are_weekdays_within_the_window() {
    let hours = BusinessHours {
        tz: TimeZone::UTC,
        ..BusinessHours::parse("07:00-19:00").unwrap()
    };
    let cases = [
        ("2026-11-23T07:00:00Z", true, "Monday opening"),
        ("2026-11-23T06:59:59Z", false, "before opening"),
        ("2026-11-23T18:59:59Z", true, "before closing"),
        ("2026-11-23T19:00:00Z", false, "closing"),
        ("2026-11-27T12:00:00Z", true, "Friday noon"),
        ("2026-11-28T12:00:00Z", false, "Saturday noon"),
        ("2026-11-29T12:00:00Z", false, "Sunday noon"),
    ];
    for (t, want, what) in cases {
        assert_eq!(hours.contains(t.parse().unwrap()), want, "{what}");
    }
    for bad in ["", "7-19", "19:00-07:00", "07:00"] {
        assert!(BusinessHours::parse(bad).is_err(), "{bad:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_name_who_else_presented_the_integrations_credentials() {
    let (_dir, path) = temp_store();
    seed_fixed(&path, 30).await;
    let conn = open_read_only(&path).unwrap();
    // Records 1-4: 1 lab/cred 1, 2 unregistered/cred 0, 3 mirth/cred 1, 4 lab/cred 0.
    let window = Filter {
        integration: text("lab"),
        from: Some(monday_plus(1)),
        to: Some(monday_plus(5)),
        ..Filter::default()
    };
    let (_, r) = report_from(&conn, &window, &BusinessHours::default()).unwrap();
    let who = |names: &[&str]| names.iter().map(|&n| n.to_owned()).collect::<BTreeSet<_>>();
    assert_eq!(
        r.shared_credentials,
        BTreeMap::from([
            ("sha256:00000000".to_owned(), who(&[UNREGISTERED, "lab"])),
            ("sha256:00000001".to_owned(), who(&["lab", "mirth"])),
        ])
    );
    // Record 1 alone: nobody else presented credential 1 yet.
    let first = Filter {
        to: Some(monday_plus(2)),
        ..window
    };
    let (_, r) = report_from(&conn, &first, &BusinessHours::default()).unwrap();
    assert_eq!(r.requests, 1);
    assert!(
        r.shared_credentials.is_empty(),
        "{:?}",
        r.shared_credentials
    );
    let text = report_text("lab", &r);
    assert!(
        text.contains("credentials also presented by other identities:\n    (none)"),
        "{text}"
    );
}
