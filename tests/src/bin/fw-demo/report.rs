//! What the demo shows and checks: each workload's requests next to the audit records fhirwall
//! wrote for them (who was attributed, what was allowed, what was denied and why).

use std::{fmt::Write as _, path::Path, process::Command};

use anyhow::{Context as _, bail};
use fhirwall_tests::ehr::EhrServer;
use serde_json::Value;

use crate::scenario::{self, Ran, SHARED_CREDENTIAL, Workload};

/// `fhirwall audit query --format json` (every record, oldest first).
pub fn audit_records(fhirwall: &Path, db: &Path) -> anyhow::Result<Vec<Value>> {
    let out = Command::new(fhirwall)
        .args(["audit", "query", "--format", "json", "--limit", "0", "--db"])
        .arg(db)
        .output()
        .context("running fhirwall audit query")?;
    if !out.status.success() {
        bail!(
            "fhirwall audit query: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// The records of one process.
pub fn of_process(records: &[Value], pid: u32) -> Vec<&Value> {
    records
        .iter()
        .filter(|r| r["workload"]["tgid"] == pid)
        .collect()
}

/// A workload's block: its identity as attributed, then one line per request.
pub fn render(workload: &Workload, ran: &Ran, records: &[&Value]) -> String {
    let mut out = String::new();
    let first = records.first().map(|r| &r["workload"]);
    let field = |k: &str| first.and_then(|w| w[k].as_str()).unwrap_or("-").to_owned();
    let _ = writeln!(out, "\n== {} (pid {}) ", workload.label, ran.pid);
    let _ = writeln!(
        out,
        "   attributed: exe {}  user {}  unit {}",
        field("exe"),
        field("user"),
        field("systemdUnit")
    );
    let integration = records
        .iter()
        .find_map(|r| r["integration"].as_str())
        .unwrap_or("(none: unregistered)");
    let credential = records
        .iter()
        .find_map(|r| r["credentialFingerprint"].as_str())
        .map_or_else(
            || "none seen (no request was made)".to_owned(),
            |c| format!("{}... (the host's shared one)", &c[..c.len().min(15)]),
        );
    let _ = writeln!(
        out,
        "   integration: {integration}   credential: {credential}"
    );
    for (i, step) in ran.steps.iter().enumerate() {
        let record = records.get(i);
        let _ = writeln!(out, "   {}", step_line(step, record.copied()));
    }
    out
}

fn step_line(step: &Value, record: Option<&Value>) -> String {
    let status = step["status"].as_u64().unwrap_or(0);
    let verdict = match record.and_then(|r| r["decision"].as_str()) {
        Some("allow") => "ALLOW",
        Some("deny") => "DENY ",
        Some("kernel-refused") => "REFUSED IN KERNEL",
        Some(other) => other,
        None => "(no audit record)",
    };
    let what = record.map_or_else(String::new, |r| {
        format!(
            "{} {}",
            r["interaction"].as_str().unwrap_or("connect"),
            r["resourceType"]
                .as_str()
                .or(r["operation"].as_str())
                .unwrap_or("")
        )
    });
    let name = step["name"].as_str().unwrap_or("?");
    let mut line = format!("{verdict} {status:>3}  {name:<40} {what:<26}");
    if let Some(r) = record {
        let rule = r["rule"].as_str().unwrap_or("-");
        let _ = write!(line, " rule {rule}");
        if let Some(reason) = r["reason"].as_str() {
            let _ = write!(line, "\n{:>12}why: {reason}", "");
        }
    }
    line
}

/// Every expectation of one workload; each failure as a sentence.
pub fn check(workload: &Workload, ran: &Ran, records: &[&Value]) -> Vec<String> {
    let mut failures = Vec::new();
    let label = workload.label;
    let mut expected = Vec::with_capacity(workload.expect.len());
    for (name, status) in &workload.expect {
        let got = ran
            .steps
            .iter()
            .find(|s| s["name"] == *name)
            .and_then(|s| s["status"].as_u64());
        // With `enforcement: kernel`, a process that connects within moments of its exec, before
        // the agent has classified its new image, is decided by the sidecar instead (the kernel
        // marks it pending rather than refusing a process that may be registered): denied all
        // the same, as unregistered, and audited as such.
        let status = if *status == 0 && got == Some(403) {
            403
        } else {
            *status
        };
        if got != Some(u64::from(status)) {
            failures.push(format!("{label}: `{name}` got {got:?}, expected {status}"));
        }
        expected.push((*name, status));
    }
    if records.len() != workload.expect.len() {
        failures.push(format!(
            "{label}: {} audit records for pid {}, expected {}",
            records.len(),
            ran.pid,
            workload.expect.len()
        ));
    }
    for (record, (name, status)) in records.iter().zip(&expected) {
        failures.extend(check_record(workload, record, name, *status));
    }
    failures
}

fn check_record(workload: &Workload, record: &Value, name: &str, status: u16) -> Vec<String> {
    let mut failures = Vec::new();
    let label = workload.label;
    let w = &record["workload"];
    let decision = match status {
        0 => "kernel-refused",
        200..=299 => "allow",
        _ => "deny",
    };
    let mut expect = vec![
        (
            "decision",
            record["decision"].clone(),
            Value::from(decision),
        ),
        (
            "integration",
            record["integration"].clone(),
            workload.integration.map_or(Value::Null, Value::from),
        ),
    ];
    if status != 0 {
        // A kernel refusal knows the process only as the kernel saw it (no /proc enrichment).
        expect.extend([
            (
                "exe",
                w["exe"].clone(),
                Value::from(workload.exe.display().to_string()),
            ),
            (
                "user",
                w["user"].clone(),
                Value::from(workload.user.unwrap_or("root")),
            ),
            (
                "systemd unit",
                w["systemdUnit"].clone(),
                workload.unit.map_or(Value::Null, Value::from),
            ),
            (
                "credential",
                record["credentialFingerprint"].clone(),
                Value::from(
                    fhirwall_policy::Fingerprint::of_authorization(SHARED_CREDENTIAL.as_bytes())
                        .to_string(),
                ),
            ),
        ]);
    }
    for (what, got, want) in expect {
        if got != want {
            failures.push(format!(
                "{label}: `{name}`: audit {what} is {got}, expected {want}"
            ));
        }
    }
    failures
}

/// `fhirwall audit verify`: the hash chain is intact.
pub fn verify(fhirwall: &Path, db: &Path) -> anyhow::Result<String> {
    let out = Command::new(fhirwall)
        .args(["audit", "verify", "--db"])
        .arg(db)
        .output()
        .context("running fhirwall audit verify")?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("fhirwall audit verify failed: {text}");
    }
    Ok(text.trim().to_owned())
}

/// The metrics an operator would look at first.
pub fn metrics_excerpt(text: &str) -> String {
    text.lines()
        .filter(|l| {
            !l.starts_with('#')
                && [
                    "fhirwall_requests_total",
                    "fhirwall_connections_total",
                    "fhirwall_kernel{counter=\"redirected",
                    "fhirwall_kernel{counter=\"refused",
                    "fhirwall_audit_failures_total",
                    "fhirwall_policy_denials_total",
                    "fhirwall_shared_credential",
                    "fhirwall_response_checks_total",
                    "fhirwall_response_withheld_total",
                    "fhirwall_broker_token",
                ]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .fold(String::new(), |mut out, l| {
            let _ = writeln!(out, "   {l}");
            out
        })
}

/// The one credential every workload presents is reported as shared, so ops get the alert
/// (`FhirwallSharedCredential`) that says to give each integration its own.
pub fn metrics_checks(text: &str) -> Vec<String> {
    let shared = text
        .lines()
        .find_map(|l| l.strip_prefix("fhirwall_shared_credentials "));
    if shared == Some("1") {
        Vec::new()
    } else {
        vec![format!(
            "fhirwall_shared_credentials is {shared:?}, expected 1: the workloads' one credential"
        )]
    }
}

/// What reached the EHR: the lab interface's two results were stored; nginx saw exactly the
/// allowed requests and nothing that was denied.
pub fn upstream_checks(
    ehr: &EhrServer,
    workloads: &[scenario::Workload],
    ran: &[scenario::Ran],
    observations_before: u64,
) -> anyhow::Result<Vec<String>> {
    let mut failures = Vec::new();
    let after = total(ehr, "Observation")?;
    if after != observations_before + 2 {
        failures.push(format!(
            "the EHR holds {after} Observations, expected {} (the lab interface's two results)",
            observations_before + 2
        ));
    }
    let allowed = ran
        .iter()
        .flat_map(|r| &r.steps)
        .filter(|s| {
            s["status"]
                .as_u64()
                .is_some_and(|c| (200..300).contains(&c))
        })
        .count();
    let expected: usize = workloads
        .iter()
        .flat_map(|w| &w.expect)
        .filter(|(_, s)| (200..300).contains(s))
        .count();
    let log = ehr.access_log();
    let seen = log.lines().count();
    if seen != expected || allowed != expected {
        failures.push(format!(
            "nginx saw {seen} requests and workloads got {allowed} successes, expected {expected} \
             (only allowed requests reach the EHR)"
        ));
    }
    // The lab interface's requests carry its own client certificate (policy
    // credentials.client_certificate), the others none: the EHR can tell integrations apart.
    let lab = workloads
        .iter()
        .find(|w| w.integration == Some("lab-results-interface"))
        .map_or(0, |w| {
            w.expect
                .iter()
                .filter(|(_, s)| (200..300).contains(s))
                .count()
        });
    let with_cert = log
        .lines()
        .filter(|l| l.contains("client_cert=\"CN=lab-results-interface\""))
        .count();
    println!(
        "\n   the EHR (nginx) saw {seen} requests, {with_cert} of them with the lab interface's own \
         client certificate (mTLS per integration)"
    );
    if with_cert != lab {
        failures.push(format!(
            "nginx saw {with_cert} requests with the lab interface's client certificate, expected {lab}"
        ));
    }
    failures.extend(brokered_checks(workloads, &log));
    Ok(failures)
}

/// The claims job sends the shared credential, and reached the EHR only with tokens of its own
/// integration, each of which the EHR's nginx checked at the authorization server.
fn brokered_checks(workloads: &[scenario::Workload], log: &str) -> Vec<String> {
    let (integration, _) = crate::setup::BROKERED;
    let expected = workloads
        .iter()
        .find(|w| w.integration == Some(integration))
        .map_or(0, |w| {
            w.expect
                .iter()
                .filter(|(_, s)| (200..300).contains(s))
                .count()
        });
    let tag = format!("token_client=\"{integration}\"");
    let brokered: Vec<&str> = log.lines().filter(|l| l.contains(&tag)).collect();
    let tokens: std::collections::BTreeSet<&str> = brokered
        .iter()
        .filter_map(|l| l.split("authorization=\"").nth(1))
        .collect();
    println!(
        "   {} of them with a short-lived token of {integration}, issued to the agent by the \
         EHR's authorization server ({} token(s)), though the claims job sent the shared credential",
        brokered.len(),
        tokens.len()
    );
    if brokered.len() == expected {
        Vec::new()
    } else {
        vec![format!(
            "nginx saw {} requests with {integration}'s brokered token, expected {expected}",
            brokered.len()
        )]
    }
}

pub fn total(ehr: &EhrServer, kind: &str) -> anyhow::Result<u64> {
    let bundle = ehr.get(&format!("/{kind}?_summary=count"))?;
    bundle["total"]
        .as_u64()
        .with_context(|| format!("hfs gave no total for {kind}"))
}
