//! The audit subcommands against real stores, driven through clap as the binary is.

use clap::Parser as _;

use super::*;
use crate::audit::tests_support as support;

#[derive(Debug, clap::Parser)]
struct Cli {
    #[command(flatten)]
    audit: AuditArgs,
}

fn fhirwall_audit(args: &[&str]) -> (ExitCode, String) {
    let cli = Cli::try_parse_from(std::iter::once("audit").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let mut out = Vec::new();
    let code = run_to(cli.audit, &mut out).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    (code, String::from_utf8(out).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_read_a_real_store() {
    let (_dir, path) = support::temp_store();
    support::seed_fixed(&path, 30).await;
    let db = path.to_str().unwrap_or_default();

    let (code, text) = fhirwall_audit(&["verify", "--db", db]);
    assert_eq!(code, ExitCode::SUCCESS, "{text}");
    assert!(text.contains("ok: 30 entries"), "{text}");
    let head = text
        .lines()
        .find_map(|l| l.strip_prefix("head "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_default()
        .to_owned();

    let (_, text) = fhirwall_audit(&[
        "query",
        "--db",
        db,
        "--patient",
        "Patient/p2",
        "--format",
        "json",
    ]);
    assert_eq!(text.lines().count(), 6, "{text}");
    let (_, text) = fhirwall_audit(&[
        "query",
        "--db",
        db,
        "--integration",
        "lab",
        "--decision",
        "deny",
    ]);
    assert!(
        text.contains("2 record(s)") && text.contains("revoked") && text.contains("scope"),
        "{text}"
    );
    let (_, text) = fhirwall_audit(&[
        "query",
        "--db",
        db,
        "--from",
        "2026-11-23T21:00:00Z",
        "--to",
        "2026-11-23T23:00:00Z",
        "--format",
        "fhir",
    ]);
    let bundle: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    assert_eq!(bundle["entry"].as_array().map(Vec::len), Some(2), "{text}");
    let (_, text) = fhirwall_audit(&[
        "report",
        "--db",
        db,
        "--integration",
        "lab",
        "--format",
        "json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    assert_eq!(report["requests"], 10, "{text}");
    assert_eq!(report["distinctPatients"], 5, "{text}");

    support::rw(&path)
        .execute("DELETE FROM entry_rows WHERE seq = 12", [])
        .unwrap_or_default();
    let (code, text) = fhirwall_audit(&["verify", "--db", db]);
    assert_eq!(code, ExitCode::FAILURE, "{text}");
    assert!(text.contains("seq 12..=12: missing"), "{text}");
    // Cutting the tail needs the journal gone too (else the next reader indexes it again).
    support::drop_journal(&path);
    support::rw(&path)
        .execute("DELETE FROM entry_rows WHERE seq > 25", [])
        .unwrap_or_default();
    let (code, text) = fhirwall_audit(&["verify", "--db", db, "--anchor", &head]);
    assert_eq!(code, ExitCode::FAILURE, "{text}");
    assert!(
        text.contains("seq 30: missing, the chain ends at seq 25"),
        "{text}"
    );
}

#[test]
fn since_accepts_friendly_spans() {
    let now = Timestamp::now();
    for (text, secs) in [
        ("7d", 7 * 86_400),
        ("12h", 12 * 3600),
        ("90m", 90 * 60),
        ("1w", 7 * 86_400),
    ] {
        let t = parse_since(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let back = now.as_second() - t.as_second();
        assert!((secs..=secs + 5).contains(&back), "{text}: {back}");
    }
    for bad in ["", "soon", "7 parsecs"] {
        assert!(parse_since(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn decisions_parse_by_their_stored_names() {
    for d in Disposition::ALL {
        assert_eq!(parse_decision(d.as_str()), Ok(d));
    }
    assert!(parse_decision("maybe").is_err());
}
