//! Human and machine renderings of query results and reports.

use std::fmt::Write as _;

use super::{AuditError, query::QueryRow, record::rfc3339, report::Report};

/// One JSON object per row (the record fields, plus `seq`, `hash` and `completion`).
pub fn jsonl_line(row: &QueryRow) -> Result<String, AuditError> {
    serde_json::to_string(row).map_err(|source| AuditError::Serialize { source })
}

/// An aligned text table, one line per request.
pub fn table(rows: &[QueryRow]) -> String {
    const HEADER: [&str; 11] = [
        "SEQ",
        "TIME (UTC)",
        "INTEGRATION",
        "EXE",
        "USER",
        "DECISION",
        "STATUS",
        "REQUEST",
        "RESOURCE",
        "PATIENTS",
        "REASON",
    ];
    let lines: Vec<[String; 11]> = rows.iter().map(cells).collect();
    let mut widths = HEADER.map(str::len);
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    push_line(&mut out, &HEADER.map(str::to_owned), &widths);
    for line in &lines {
        push_line(&mut out, line, &widths);
    }
    let _ = writeln!(out, "{} record(s)", rows.len());
    out
}

fn cells(row: &QueryRow) -> [String; 11] {
    let r = &row.record;
    let dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".to_owned());
    let status = row.completion.as_ref().and_then(|c| c.status).or(r.status);
    let mut decision = r.decision.as_str().to_owned();
    if r.break_glass.is_some() {
        decision.push_str("+break-glass");
    }
    if let Some(e) = &r.exception {
        let _ = write!(decision, "+exception:{e}");
    }
    [
        row.seq.to_string(),
        format!("{:.3}", r.time),
        r.integration
            .clone()
            .unwrap_or_else(|| "(unattributed)".to_owned()),
        dash(&r.workload.exe),
        r.workload
            .user
            .clone()
            .unwrap_or_else(|| r.workload.uid.to_string()),
        decision,
        status.map_or_else(|| "-".to_owned(), |s| s.to_string()),
        format!("{} {}", r.method, r.path),
        match (&r.resource_type, &r.resource_id) {
            (Some(t), Some(id)) => format!("{t}/{id}"),
            (Some(t), None) => t.clone(),
            _ => "-".to_owned(),
        },
        if r.patients.is_empty() {
            "-".to_owned()
        } else {
            r.patients.join(",")
        },
        dash(&r.reason),
    ]
}

fn push_line(out: &mut String, cells: &[String; 11], widths: &[usize; 11]) {
    let mut line = String::new();
    for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
        if i + 1 == cells.len() {
            line.push_str(cell);
        } else {
            let _ = write!(line, "{cell:<w$}  ");
        }
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

/// The report as readable text.
pub fn report_text(title: &str, r: &Report) -> String {
    let mut out = String::new();
    let time =
        |t: &Option<jiff::Timestamp>| t.as_ref().map_or_else(|| "-".to_owned(), rfc3339::format);
    let _ = writeln!(out, "{title}");
    let _ = writeln!(out, "  requests            {}", r.requests);
    let _ = writeln!(out, "  first seen          {}", time(&r.first_seen));
    let _ = writeln!(out, "  last seen           {}", time(&r.last_seen));
    let _ = writeln!(out, "  distinct patients   {}", r.distinct_patients);
    let _ = writeln!(out, "  off-hours requests  {}", r.off_hours);
    let _ = writeln!(out, "  break-glass uses    {}", r.break_glass);
    let _ = writeln!(out, "  upstream failures   {}", r.upstream_failures);
    for (name, map) in [
        ("decisions", &r.decisions),
        ("resource types", &r.resource_types),
        ("interactions", &r.interactions),
        ("denials by reason", &r.denials_by_reason),
    ] {
        let _ = writeln!(out, "  {name}:");
        if map.is_empty() {
            let _ = writeln!(out, "    (none)");
        }
        let width = map.keys().map(String::len).max().unwrap_or(0);
        for (k, v) in map {
            let _ = writeln!(out, "    {k:<width$}  {v}");
        }
    }
    let _ = writeln!(out, "  workloads:");
    for w in &r.workloads {
        let join = |s: &std::collections::BTreeSet<String>| {
            if s.is_empty() {
                "-".to_owned()
            } else {
                s.iter().cloned().collect::<Vec<_>>().join(",")
            }
        };
        let _ = writeln!(
            out,
            "    {} sha256={} requests={} users={} units={} containers={} credentials={}",
            w.exe.as_deref().unwrap_or("-"),
            w.exe_sha256.as_deref().unwrap_or("-"),
            w.requests,
            join(&w.users),
            join(&w.units),
            join(&w.containers),
            join(&w.credentials),
        );
    }
    let _ = writeln!(out, "  credentials also presented by other identities:");
    if r.shared_credentials.is_empty() {
        let _ = writeln!(out, "    (none)");
    }
    for (credential, identities) in &r.shared_credentials {
        let who: Vec<&str> = identities.iter().map(String::as_str).collect();
        let _ = writeln!(out, "    {credential}  {}", who.join(", "));
    }
    out
}
