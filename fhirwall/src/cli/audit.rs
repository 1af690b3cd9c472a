//! `fhirwall audit query|report|verify|export`: the incident responder's side of the audit trail.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::{Args, Subcommand, ValueEnum};
use jiff::Timestamp;

use crate::audit::{
    self, Anchor, AuditError, BusinessHours, Disposition, FhirExport, Filter, JsonlExport,
    JsonlTarget, Order, QueryRow,
};

/// Where the agent keeps its audit store unless the config says otherwise.
pub const DEFAULT_DB: &str = "/var/lib/fhirwall/audit.db";

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List decisions by workload, integration, patient, credential and time.
    Query(QueryArgs),
    /// Summarize what one integration accessed over a time window; with --policies, the
    /// grants it never used and, without --integration, every integration's (idle ones
    /// flagged).
    Report(ReportArgs),
    /// Check the hash chain; exit 1 and say where if anything was tampered with.
    Verify(VerifyArgs),
    /// Stream entries for central collection (JSON lines or FHIR `AuditEvents`), resuming from a
    /// durable cursor.
    Export(ExportArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// One JSON object per line.
    Json,
    /// A FHIR R4 Bundle of IHE BALP `AuditEvents`.
    Fhir,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OrderArg {
    Oldest,
    Newest,
}

#[derive(Debug, Args)]
pub struct DbArg {
    /// The audit store.
    #[arg(long, default_value = DEFAULT_DB)]
    pub db: PathBuf,
}

#[derive(Debug, Args)]
pub struct WindowArgs {
    /// Only the last SPAN, e.g. `7d`, `12h`, `90m`.
    #[arg(long, value_parser = parse_since, conflicts_with = "from")]
    pub since: Option<Timestamp>,
    /// From this time (RFC 3339), inclusive.
    #[arg(long)]
    pub from: Option<Timestamp>,
    /// Until this time (RFC 3339), exclusive.
    #[arg(long)]
    pub to: Option<Timestamp>,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub db: DbArg,
    #[arg(long, conflicts_with = "unattributed")]
    pub integration: Option<String>,
    /// Only requests no registered integration matched.
    #[arg(long)]
    pub unattributed: bool,
    /// Executable path.
    #[arg(long)]
    pub exe: Option<String>,
    /// Executable SHA-256 (hex).
    #[arg(long)]
    pub sha256: Option<String>,
    /// Process id.
    #[arg(long)]
    pub pid: Option<u32>,
    #[arg(long)]
    pub container: Option<String>,
    /// Kubernetes pod UID.
    #[arg(long)]
    pub pod: Option<String>,
    /// systemd unit.
    #[arg(long)]
    pub unit: Option<String>,
    /// Credential fingerprint.
    #[arg(long)]
    pub credential: Option<String>,
    /// `Patient/<id>`.
    #[arg(long)]
    pub patient: Option<String>,
    #[arg(long)]
    pub resource_type: Option<String>,
    /// allow, deny, would-deny, kernel-refused, malformed.
    #[arg(long, value_parser = parse_decision)]
    pub decision: Option<Disposition>,
    #[command(flatten)]
    pub window: WindowArgs,
    /// At most this many rows (0: no limit).
    #[arg(long, default_value_t = 1000)]
    pub limit: u32,
    #[arg(long, value_enum, default_value_t = OrderArg::Oldest)]
    pub order: OrderArg,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// The integration reported on; without it (and with --policies), every integration's
    /// unused grants and last request.
    #[arg(long, required_unless_present = "policies")]
    pub integration: Option<String>,
    /// The policy directory in force: adds the grants (scopes, operations, purposes of use)
    /// that no request of the window needed, and flags integrations idle since --idle-after.
    #[arg(long)]
    pub policies: Option<PathBuf>,
    /// An integration with no request for this long is reported idle (with --policies).
    #[arg(long, value_parser = parse_since, default_value = "30d")]
    pub idle_after: Timestamp,
    #[command(flatten)]
    pub window: WindowArgs,
    /// Working hours in the host's time zone, Monday to Friday; other requests count as off-hours.
    #[arg(long, default_value = "07:00-19:00", value_parser = BusinessHours::parse)]
    pub business_hours: BusinessHours,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// A `SEQ:SHA256` head printed by an earlier verify and kept elsewhere; catches truncation
    /// and rewritten history. Repeatable.
    #[arg(long)]
    pub anchor: Vec<Anchor>,
    /// What a collector received (`fhirwall audit export --jsonl` lines, as it stored them):
    /// every entry in it must still be on the host, at its position, as received. Names each
    /// entry changed, removed or reordered after export, even in a consistently rewritten chain.
    #[arg(long, value_name = "FILE")]
    pub against: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("target").required(true))]
pub struct ExportArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// Write JSON lines to FILE (`-` for stdout).
    #[arg(long, group = "target", value_name = "FILE")]
    pub jsonl: Option<PathBuf>,
    /// POST BALP `AuditEvents` to this FHIR `AuditEvent` endpoint (http:// or https://).
    #[arg(long, group = "target", value_name = "URL")]
    pub fhir: Option<String>,
    /// Stream every entry as IHE ATNA syslog (RFC 5424 over TLS, RFC 5425 framing) to an
    /// Audit Record Repository: `tls://HOST:PORT`.
    #[arg(long, group = "target", value_name = "tls://HOST:PORT")]
    pub syslog: Option<String>,
    /// With --syslog: CA certificates (PEM) the repository's certificate is checked against,
    /// beside the system's roots.
    #[arg(long, value_name = "FILE", requires = "syslog")]
    pub syslog_ca: Option<PathBuf>,
    /// With --syslog: a client certificate (PEM) for repositories that authenticate nodes.
    #[arg(long, value_name = "FILE", requires_all = ["syslog", "syslog_key"])]
    pub syslog_cert: Option<PathBuf>,
    /// The key of --syslog-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "syslog_cert")]
    pub syslog_key: Option<PathBuf>,
    /// Keep running and export new entries as they are committed.
    #[arg(long)]
    pub follow: bool,
    /// Name of the durable cursor (default: derived from the target).
    #[arg(long)]
    pub cursor: Option<String>,
    /// Without --follow, give up on an undeliverable event after this many attempts.
    #[arg(long, default_value_t = 8)]
    pub max_attempts: u32,
}

/// Runs an audit subcommand, printing to stdout. `Ok(ExitCode::FAILURE)` means "ran fine,
/// found tampering".
pub fn run(args: AuditArgs) -> Result<ExitCode, AuditError> {
    run_to(args, &mut std::io::stdout().lock())
}

/// [`run`], printing to `w`.
pub fn run_to(args: AuditArgs, w: &mut dyn std::io::Write) -> Result<ExitCode, AuditError> {
    match args.command {
        AuditCommand::Query(a) => run_query(&a, w),
        AuditCommand::Report(a) => run_report(&a, w),
        AuditCommand::Verify(a) => run_verify(&a, w),
        AuditCommand::Export(a) => run_export(a),
    }
}

fn run_query(a: &QueryArgs, w: &mut dyn std::io::Write) -> Result<ExitCode, AuditError> {
    let filter = Filter {
        integration: a.integration.clone(),
        unattributed: a.unattributed,
        exe: a.exe.clone(),
        exe_sha256: a.sha256.as_ref().map(|s| s.to_ascii_lowercase()),
        pid: a.pid,
        container_id: a.container.clone(),
        pod_uid: a.pod.clone(),
        systemd_unit: a.unit.clone(),
        credential_fingerprint: a.credential.clone(),
        patient: a.patient.clone(),
        resource_type: a.resource_type.clone(),
        decision: a.decision,
        from: a.window.since.or(a.window.from),
        to: a.window.to,
        after_seq: None,
        limit: (a.limit > 0).then_some(a.limit),
        order: match a.order {
            OrderArg::Oldest => Order::OldestFirst,
            OrderArg::Newest => Order::NewestFirst,
        },
    };
    let rows = audit::query(&audit::open_read_only(&a.db.db)?, &filter)?;
    print_rows(&rows, a.format, w)?;
    Ok(ExitCode::SUCCESS)
}

fn print_rows(
    rows: &[QueryRow],
    format: Format,
    w: &mut dyn std::io::Write,
) -> Result<(), AuditError> {
    let text = match format {
        Format::Table => audit::table(rows),
        Format::Json => {
            let lines: Result<Vec<String>, _> = rows.iter().map(audit::jsonl_line).collect();
            lines?.into_iter().map(|l| l + "\n").collect()
        }
        Format::Fhir => pretty(&audit::bundle(rows))?,
    };
    out(w, &text)
}

fn run_report(a: &ReportArgs, w: &mut dyn std::io::Write) -> Result<ExitCode, AuditError> {
    let usage = match &a.policies {
        Some(dir) => Some(unused_grants(a, dir)?),
        None => None,
    };
    let Some(integration) = &a.integration else {
        let unused = usage.unwrap_or_default();
        let text = match a.format {
            Format::Json => pretty(&unused)?,
            _ => crate::least_privilege::usage::text(&unused, a.idle_after),
        };
        out(w, &text)?;
        return Ok(ExitCode::SUCCESS);
    };
    let filter = Filter {
        integration: Some(integration.clone()),
        from: a.window.since.or(a.window.from),
        to: a.window.to,
        ..Filter::default()
    };
    let conn = audit::open_read_only(&a.db.db)?;
    let (rows, report) = audit::report_from(&conn, &filter, &a.business_hours)?;
    let text = match a.format {
        Format::Table => {
            let from = filter
                .from
                .map_or_else(|| "the beginning".to_owned(), |t| format!("{t:.0}"));
            let to = filter
                .to
                .map_or_else(|| "now".to_owned(), |t| format!("{t:.0}"));
            let mut text = audit::report_text(
                &format!("integration {integration} from {from} to {to}"),
                &report,
            );
            if let Some(unused) = &usage {
                text.push_str("\nunused grants:\n");
                text.push_str(&crate::least_privilege::usage::text(unused, a.idle_after));
            }
            text
        }
        Format::Json => match &usage {
            Some(unused) => pretty(&serde_json::json!({ "report": report, "unused": unused }))?,
            None => pretty(&report)?,
        },
        Format::Fhir => pretty(&audit::bundle(&rows))?,
    };
    out(w, &text)?;
    Ok(ExitCode::SUCCESS)
}

/// The unused grants of the report's integration (or of every one) in the report's window.
fn unused_grants(
    a: &ReportArgs,
    dir: &std::path::Path,
) -> Result<Vec<crate::least_privilege::usage::Unused>, AuditError> {
    let policy = fhirwall_policy::Policy::load(dir).map_err(|source| AuditError::Policy {
        dir: dir.to_owned(),
        source,
    })?;
    let conn = audit::open_read_only(&a.db.db)?;
    let scan = audit::Scan {
        since: a.window.since.or(a.window.from),
        integration: a.integration.as_deref(),
    };
    let mut usage = crate::least_privilege::usage::Usage::default();
    audit::scan_requests(&conn, &scan, |_, record| usage.record(&record))?;
    let mut unused = usage.unused(&policy);
    if let Some(name) = &a.integration {
        unused.retain(|u| &u.integration == name);
    }
    Ok(unused)
}

fn run_verify(a: &VerifyArgs, w: &mut dyn std::io::Write) -> Result<ExitCode, AuditError> {
    let conn = audit::open_read_only(&a.db.db)?;
    let (v, received) = match &a.against {
        Some(copy) => {
            let (v, n) = audit::verify_against(&conn, &a.anchor, copy)?;
            (v, Some(n))
        }
        None => (audit::verify(&conn, &a.anchor)?, None),
    };
    let mut text = String::new();
    for f in &v.findings {
        let _ = writeln!(text, "TAMPERED: {f}");
    }
    let span = match (v.first_seq, &v.head) {
        (Some(first), Some(head)) => format!("seq {first}..={}", head.seq),
        _ => "empty".to_owned(),
    };
    let pruned = v.pruned_through.map_or_else(String::new, |p| {
        format!(", seq 1..={p} pruned by retention")
    });
    let against = received.map_or_else(String::new, |n| {
        format!(", and as the collector received its {n} entries")
    });
    if v.is_intact() {
        let _ = writeln!(
            text,
            "ok: {} entries ({span}{pruned}), chain intact{against}",
            v.entries
        );
    } else {
        let _ = writeln!(
            text,
            "FAILED: {} problem(s) in {} entries ({span})",
            v.findings.len(),
            v.entries
        );
    }
    if let Some(head) = &v.head {
        let _ = writeln!(
            text,
            "head {head}  (keep this elsewhere; pass it back with --anchor)"
        );
    }
    out(w, &text)?;
    Ok(if v.is_intact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn run_export(a: ExportArgs) -> Result<ExitCode, AuditError> {
    let poll = Duration::from_millis(500);
    if let Some(file) = a.jsonl {
        let stdout = file == Path::new("-");
        let cursor = a
            .cursor
            .unwrap_or_else(|| format!("jsonl:{}", file.display()));
        let target = if stdout {
            JsonlTarget::Stdout
        } else {
            JsonlTarget::File(file)
        };
        let n = audit::export_jsonl(&JsonlExport {
            db: a.db.db,
            cursor,
            target,
            follow: a.follow,
            poll,
        })?;
        if !stdout {
            eprintln!("exported {n} entries");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| AuditError::Io {
            what: "starting the export runtime".to_owned(),
            source,
        })?;
    if let Some(target) = a.syslog {
        let cfg = audit::SyslogExport {
            db: a.db.db,
            cursor: a.cursor.unwrap_or_else(|| format!("syslog:{target}")),
            target,
            ca_file: a.syslog_ca,
            client: a.syslog_cert.zip(a.syslog_key),
            hostname: crate::config::hostname(),
            follow: a.follow,
            poll,
            max_backoff: Duration::from_secs(30),
            max_attempts: (!a.follow).then_some(a.max_attempts.max(1)),
        };
        let n = rt.block_on(audit::export_syslog(&cfg))?;
        eprintln!("delivered {n} entries as syslog messages");
        return Ok(ExitCode::SUCCESS);
    }
    let Some(url) = a.fhir else {
        return Ok(ExitCode::FAILURE);
    };
    let cfg = FhirExport {
        db: a.db.db,
        cursor: a.cursor.unwrap_or_else(|| format!("fhir:{url}")),
        url,
        follow: a.follow,
        poll,
        settle: Duration::from_secs(30),
        max_backoff: Duration::from_mins(1),
        max_attempts: (!a.follow).then_some(a.max_attempts.max(1)),
    };
    let n = rt.block_on(audit::export_fhir(&cfg))?;
    eprintln!("delivered {n} requests as AuditEvents");
    Ok(ExitCode::SUCCESS)
}

fn pretty<T: serde::Serialize>(value: &T) -> Result<String, AuditError> {
    serde_json::to_string_pretty(value)
        .map(|s| s + "\n")
        .map_err(|source| AuditError::Serialize { source })
}

fn out(w: &mut dyn std::io::Write, text: &str) -> Result<(), AuditError> {
    w.write_all(text.as_bytes())
        .and_then(|()| w.flush())
        .map_err(|source| AuditError::Io {
            what: "writing stdout".to_owned(),
            source,
        })
}

/// `7d` / `12h` / `1w 2d`: a span back from now (days are 24 hours).
fn parse_since(s: &str) -> Result<Timestamp, String> {
    audit::since(s, Timestamp::now())
}

fn parse_decision(s: &str) -> Result<Disposition, String> {
    Disposition::parse(s).ok_or_else(|| {
        let all: Vec<&str> = Disposition::ALL.iter().map(|d| d.as_str()).collect();
        format!("unknown decision {s:?}; one of {}", all.join(", "))
    })
}

#[cfg(test)]
mod tests;
