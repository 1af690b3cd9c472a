//! `GET /v1/audit/query|report|verify`: the questions `fhirwall audit` answers, asked of the
//! running agent.
//!
//! Read-only and off the control loop: each request opens its own read-only `SQLite` connection
//! on the blocking pool (at most [`CONCURRENT`] at a time), so a long query or a verify of a large
//! store never stalls heartbeats or policy reloads, and never the data plane (another runtime).
//! Answers carry patient references, so these routes exist only on the root-only Unix socket,
//! and nothing here logs a request's parameters.
//!
//! Query strings are parsed strictly: form-urlencoded
//! (<https://url.spec.whatwg.org/#urlencoded-parsing>) with malformed escapes and non-UTF-8
//! bytes refused, unknown or repeated parameters refused, values typed. The parameter names are
//! the long options of `fhirwall audit`, so operators learn one vocabulary.

mod params;

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::Semaphore;

pub use self::params::ParamError;
use self::params::Params;
use super::server::Response;
use crate::audit::{
    self, Anchor, AuditError, BusinessHours, Disposition, Filter, Order, QueryRow, Verification,
};

/// Audit reads running at once; more wait their turn.
const CONCURRENT: usize = 2;
/// Rows per query answer; page with `after=SEQ` for more.
pub const MAX_LIMIT: u32 = 10_000;
const DEFAULT_LIMIT: u32 = 1_000;

/// The audit routes of the operator socket.
#[derive(Debug)]
pub struct AuditQueries {
    db: PathBuf,
    permits: Semaphore,
}

/// A parsed request.
#[derive(Debug)]
enum Ask {
    Query { filter: Filter, format: RowFormat },
    Report(ReportAsk),
    Verify { anchors: Vec<Anchor> },
}

#[derive(Debug)]
struct ReportAsk {
    filter: Filter,
    hours: BusinessHours,
    fhir: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RowFormat {
    /// One JSON array.
    Json,
    /// One JSON object per line (`application/x-ndjson`).
    Jsonl,
    /// A FHIR Bundle of BALP `AuditEvents`.
    Fhir,
}

impl AuditQueries {
    /// Reads the store at `db` (the agent's `<state_dir>/audit.db`).
    #[must_use]
    pub fn new(db: PathBuf) -> Self {
        Self {
            db,
            permits: Semaphore::new(CONCURRENT),
        }
    }

    /// Answers `GET path?query` for a path under `/v1/audit/`.
    pub(super) async fn answer(&self, path: &str, query: &str) -> Response {
        let ask = match parse(path, query, Timestamp::now()) {
            Ok(Some(ask)) => ask,
            Ok(None) => return Response::text(404, "not found\n"),
            Err(e) => return Response::text(400, &format!("{e}\n")),
        };
        // The semaphore is never closed, so acquiring only waits.
        let Ok(_permit) = self.permits.acquire().await else {
            return Response::text(503, "busy\n");
        };
        let db = self.db.clone();
        match tokio::task::spawn_blocking(move || run(&db, ask)).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                let status = if matches!(e, AuditError::Open { .. }) {
                    503
                } else {
                    500
                };
                Response::text(status, &format!("{}\n", audit::error_chain(&e)))
            }
            Err(_) => Response::text(500, "the audit read failed\n"),
        }
    }
}

/// Parses a request; `None` for a path that is not an audit route.
fn parse(path: &str, query: &str, now: Timestamp) -> Result<Option<Ask>, ParamError> {
    let mut params = Params::parse(query)?;
    let ask = match path {
        "/v1/audit/query" => parse_query(&mut params, now)?,
        "/v1/audit/report" => parse_report(&mut params, now)?,
        "/v1/audit/verify" => Ask::Verify {
            anchors: params.all("anchor", "SEQ:SHA256 as printed by verify")?,
        },
        _ => return Ok(None),
    };
    params.finish()?;
    Ok(Some(ask))
}

fn parse_query(p: &mut Params, now: Timestamp) -> Result<Ask, ParamError> {
    let unattributed = p.flag("unattributed")?;
    let integration = p.text("integration")?;
    if unattributed && integration.is_some() {
        return Err(ParamError::Conflict {
            a: "integration",
            b: "unattributed",
        });
    }
    let (from, to) = window(p, now)?;
    let limit = p
        .typed::<u32>("limit", "a number of rows")?
        .unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ParamError::Invalid {
            name: "limit",
            expected: "1 to 10000 rows (page with after=SEQ)",
        });
    }
    let filter = Filter {
        integration,
        unattributed,
        exe: p.text("exe")?,
        exe_sha256: p.text("sha256")?.map(|s| s.to_ascii_lowercase()),
        pid: p.typed("pid", "a process id")?,
        container_id: p.text("container")?,
        pod_uid: p.text("pod")?,
        systemd_unit: p.text("unit")?,
        credential_fingerprint: p.text("credential")?,
        patient: p.text("patient")?,
        resource_type: p.text("resource-type")?,
        decision: p.choice("decision", &Disposition::ALL, |d| d.as_str())?,
        from,
        to,
        after_seq: p.typed("after", "a sequence number")?,
        limit: Some(limit),
        order: p
            .choice(
                "order",
                &[Order::OldestFirst, Order::NewestFirst],
                |o| match o {
                    Order::OldestFirst => "oldest",
                    Order::NewestFirst => "newest",
                },
            )?
            .unwrap_or_default(),
    };
    let format = p
        .choice(
            "format",
            &[RowFormat::Json, RowFormat::Jsonl, RowFormat::Fhir],
            |f| match f {
                RowFormat::Json => "json",
                RowFormat::Jsonl => "jsonl",
                RowFormat::Fhir => "fhir",
            },
        )?
        .unwrap_or(RowFormat::Json);
    Ok(Ask::Query { filter, format })
}

fn parse_report(p: &mut Params, now: Timestamp) -> Result<Ask, ParamError> {
    let integration = p.text("integration")?.ok_or(ParamError::Missing {
        name: "integration",
    })?;
    let (from, to) = window(p, now)?;
    let hours = match p.text("business-hours")? {
        Some(h) => BusinessHours::parse(&h).map_err(|_| ParamError::Invalid {
            name: "business-hours",
            expected: "HH:MM-HH:MM",
        })?,
        None => BusinessHours::default(),
    };
    let fhir = p
        .choice(
            "format",
            &[false, true],
            |f| if *f { "fhir" } else { "json" },
        )?
        .unwrap_or(false);
    Ok(Ask::Report(ReportAsk {
        filter: Filter {
            integration: Some(integration),
            from,
            to,
            ..Filter::default()
        },
        hours,
        fhir,
    }))
}

/// `since=7d` or `from=RFC3339`, and `to=RFC3339`.
fn window(
    p: &mut Params,
    now: Timestamp,
) -> Result<(Option<Timestamp>, Option<Timestamp>), ParamError> {
    let since = p.text("since")?;
    let from = p.typed::<Timestamp>("from", "an RFC 3339 time")?;
    let to = p.typed::<Timestamp>("to", "an RFC 3339 time")?;
    let since = match since {
        Some(_) if from.is_some() => {
            return Err(ParamError::Conflict {
                a: "since",
                b: "from",
            });
        }
        Some(span) => Some(audit::since(&span, now).map_err(|_| ParamError::Invalid {
            name: "since",
            expected: "a span such as 7d, 12h or 90m",
        })?),
        None => None,
    };
    Ok((since.or(from), to))
}

/// Runs on the blocking pool.
fn run(db: &Path, ask: Ask) -> Result<Response, AuditError> {
    let conn = audit::open_read_only(db)?;
    match ask {
        Ask::Query { filter, format } => {
            let rows = audit::query(&conn, &filter)?;
            rows_response(&rows, format)
        }
        Ask::Report(r) if r.fhir => {
            rows_response(&audit::query(&conn, &r.filter)?, RowFormat::Fhir)
        }
        Ask::Report(r) => {
            let (_, report) = audit::report_from(&conn, &r.filter, &r.hours)?;
            json("application/json", &report)
        }
        Ask::Verify { anchors } => {
            let v = audit::verify(&conn, &anchors)?;
            json("application/json", &VerifyAnswer::from(&v))
        }
    }
}

fn rows_response(rows: &[QueryRow], format: RowFormat) -> Result<Response, AuditError> {
    match format {
        RowFormat::Json => json("application/json", &rows),
        RowFormat::Fhir => json("application/fhir+json", &audit::bundle(rows)),
        RowFormat::Jsonl => {
            let mut body = String::new();
            for row in rows {
                body.push_str(&audit::jsonl_line(row)?);
                body.push('\n');
            }
            Ok(Response::bytes(
                200,
                "application/x-ndjson",
                body.into_bytes(),
            ))
        }
    }
}

fn json<T: Serialize>(content_type: &'static str, value: &T) -> Result<Response, AuditError> {
    let body = serde_json::to_vec(value).map_err(|source| AuditError::Serialize { source })?;
    Ok(Response::bytes(200, content_type, body))
}

/// `GET /v1/audit/verify`: what `fhirwall audit verify` prints, as JSON.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct VerifyAnswer {
    intact: bool,
    entries: u64,
    first_seq: Option<u64>,
    /// `SEQ:SHA256`; keep it elsewhere and pass it back as `anchor`.
    head: Option<String>,
    pruned_through: Option<u64>,
    findings: Vec<FindingAnswer>,
}

#[derive(Debug, Serialize)]
struct FindingAnswer {
    seq: u64,
    /// The same sentence `fhirwall audit verify` prints.
    problem: String,
}

impl From<&Verification> for VerifyAnswer {
    fn from(v: &Verification) -> Self {
        Self {
            intact: v.is_intact(),
            entries: v.entries,
            first_seq: v.first_seq,
            head: v.head.map(|h| h.to_string()),
            pruned_through: v.pruned_through,
            findings: v
                .findings
                .iter()
                .map(|f| FindingAnswer {
                    seq: f.seq,
                    problem: f.to_string(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests;
