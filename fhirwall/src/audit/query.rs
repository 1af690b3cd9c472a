//! Filtered reads of request records, each joined with its completion.

use std::{collections::BTreeSet, fmt::Write as _};

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension as _, params_from_iter, types::Value};
use serde::Serialize;

use super::{
    AuditError,
    bodies::Bodies,
    chain, pindex,
    record::{Completion, Disposition, Entry, Record},
    store::seq_i64,
};

/// Which records to return. Every set field must match; `None` matches anything.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub integration: Option<String>,
    /// Only records no integration matched.
    pub unattributed: bool,
    pub exe: Option<String>,
    pub exe_sha256: Option<String>,
    /// Process id (thread group id).
    pub pid: Option<u32>,
    pub container_id: Option<String>,
    pub pod_uid: Option<String>,
    pub systemd_unit: Option<String>,
    pub credential_fingerprint: Option<String>,
    /// A `Patient/<id>` reference.
    pub patient: Option<String>,
    pub resource_type: Option<String>,
    pub decision: Option<Disposition>,
    /// Inclusive lower bound on the record time.
    pub from: Option<Timestamp>,
    /// Exclusive upper bound on the record time.
    pub to: Option<Timestamp>,
    /// Only entries after this seq (export cursors, paging).
    pub after_seq: Option<u64>,
    pub limit: Option<u32>,
    pub order: Order,
}

/// Chain order, which is commit order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Order {
    #[default]
    OldestFirst,
    NewestFirst,
}

/// A request record with where it sits in the chain and how it ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryRow {
    pub seq: u64,
    /// Chain hash (hex) of the entry.
    pub hash: String,
    #[serde(flatten)]
    pub record: Record,
    pub completion: Option<Completion>,
}

/// Runs `filter` against the store.
pub fn query(conn: &Connection, filter: &Filter) -> Result<Vec<QueryRow>, AuditError> {
    let read = |source| AuditError::Read { source };
    let copy_upto = filter
        .patient
        .as_ref()
        .and_then(|_| pindex::usable_upto(conn));
    let (sql, values) = build_sql(filter, copy_upto);
    let mut stmt = conn.prepare(&sql).map_err(read)?;
    let rows = stmt
        .query_map(params_from_iter(values), |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<i64>>(3)?,
            ))
        })
        .map_err(read)?;
    let mut completion = conn
        .prepare_cached(
            "SELECT seq, body, frame_at FROM entries WHERE ref_seq = ?1 AND kind = 'completion'
             ORDER BY seq LIMIT 1",
        )
        .map_err(read)?;
    let mut bodies = Bodies::of(conn);
    let mut out = Vec::new();
    for row in rows {
        let (seq, hash, body, frame_at) = row.map_err(read)?;
        let seq = u64::try_from(seq).unwrap_or(0);
        // `None`: removed by retention since the row was read.
        let Some(Entry::Request(record)) = parse(seq, bodies.get(seq, body, frame_at)?)? else {
            continue;
        };
        let done: Option<(i64, Option<String>, Option<i64>)> = completion
            .query_row([seq_i64(seq)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()
            .map_err(read)?;
        let completion = match done {
            Some((at, body, frame_at)) => {
                let at = u64::try_from(at).unwrap_or(0);
                match parse(at, bodies.get(at, body, frame_at)?)? {
                    Some(Entry::Completion(c)) => Some(c),
                    _ => None,
                }
            }
            None => None,
        };
        out.push(QueryRow {
            seq,
            hash: chain::to_hex(&hash),
            record,
            completion,
        });
    }
    Ok(out)
}

/// How reports name the requests no integration matched.
pub const UNREGISTERED: &str = "(unregistered)";

/// Every identity (an integration's name, or [`UNREGISTERED`]) that presented `credential`
/// (a fingerprint as recorded) in `[from, to)`.
pub fn presenters(
    conn: &Connection,
    credential: &str,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> Result<BTreeSet<String>, AuditError> {
    let bound = |t: Option<Timestamp>, open: i64| t.map_or(open, Timestamp::as_microsecond);
    let mut stmt = conn
        .prepare_cached(
            "SELECT DISTINCT coalesce(integration, ?2) FROM entries
             WHERE credential_fp = ?1 AND kind = 'request' AND time_us >= ?3 AND time_us < ?4",
        )
        .map_err(|source| AuditError::Read { source })?;
    let names = stmt
        .query_map(
            rusqlite::params![
                credential,
                UNREGISTERED,
                bound(from, i64::MIN),
                bound(to, i64::MAX)
            ],
            |r| r.get::<_, String>(0),
        )
        .and_then(Iterator::collect)
        .map_err(|source| AuditError::Read { source })?;
    Ok(names)
}

/// The start of a window reaching back `span` (`7d`, `12h`, `1w 2d`; days are 24 hours) from
/// `now`. Errors say what is expected; they echo the input, which is never PHI here.
pub fn since(span: &str, now: Timestamp) -> Result<Timestamp, String> {
    let parsed: jiff::Span = span
        .parse()
        .map_err(|e| format!("bad span {span:?} (try 7d, 12h, 30m): {e}"))?;
    let duration = parsed
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|e| format!("bad span {span:?}: {e}"))?;
    now.checked_sub(duration.abs())
        .map_err(|e| format!("span {span:?} too large: {e}"))
}

fn parse(seq: u64, body: Option<String>) -> Result<Option<Entry>, AuditError> {
    body.map(|b| Entry::from_body(seq, &b)).transpose()
}

/// The SQL and its parameters for `filter`. Values are always bound, never spliced into the SQL.
/// `copy_upto`: how far the patient index copy reaches (`pindex.rs`), `None` without one.
fn build_sql(f: &Filter, copy_upto: Option<u64>) -> (String, Vec<Value>) {
    let mut sql =
        String::from("SELECT seq, hash, body, frame_at FROM entries WHERE kind = 'request'");
    let mut values = Vec::new();
    let mut eq = |column: &str, value: Option<Value>| {
        if let Some(v) = value {
            values.push(v);
            let _ = write!(sql, " AND {column} ?{}", values.len());
        }
    };
    let text = |s: &Option<String>| s.clone().map(Value::Text);
    eq("integration =", text(&f.integration));
    eq("exe =", text(&f.exe));
    eq("exe_sha256 =", text(&f.exe_sha256));
    eq("pid =", f.pid.map(|p| Value::Integer(i64::from(p))));
    eq("container_id =", text(&f.container_id));
    eq("pod_uid =", text(&f.pod_uid));
    eq("systemd_unit =", text(&f.systemd_unit));
    eq("credential_fp =", text(&f.credential_fingerprint));
    eq("resource_type =", text(&f.resource_type));
    eq(
        "decision =",
        f.decision.map(|d| Value::Text(d.as_str().to_owned())),
    );
    eq(
        "time_us >=",
        f.from.map(|t| Value::Integer(t.as_microsecond())),
    );
    eq(
        "time_us <",
        f.to.map(|t| Value::Integer(t.as_microsecond())),
    );
    eq("seq >", f.after_seq.map(|s| Value::Integer(seq_i64(s))));
    if let Some(patient) = &f.patient {
        values.push(Value::Text(patient.clone()));
        let p = values.len();
        // The entries naming the patient: requests that named them, and completions whose
        // response carried their data (a search that never named them), which count for
        // their request.
        let naming = match copy_upto {
            // The copy up to where it reaches, the chained rows after that.
            Some(upto) => {
                values.push(Value::Integer(seq_i64(upto)));
                let u = values.len();
                format!(
                    "SELECT seq FROM pidx.patient_seq WHERE patient = ?{p} AND seq <= ?{u} \
                     UNION ALL SELECT seq FROM patients WHERE seq > ?{u} AND patient = ?{p}"
                )
            }
            None => format!("SELECT seq FROM patients WHERE patient = ?{p}"),
        };
        let _ = write!(
            sql,
            " AND (seq IN ({naming}) OR seq IN (SELECT ref_seq FROM entries \
             WHERE kind = 'completion' AND seq IN ({naming})))"
        );
    }
    if f.unattributed {
        sql.push_str(" AND integration IS NULL");
    }
    sql.push_str(match f.order {
        Order::OldestFirst => " ORDER BY seq ASC",
        Order::NewestFirst => " ORDER BY seq DESC",
    });
    if let Some(limit) = f.limit {
        let _ = write!(sql, " LIMIT {limit}");
    }
    (sql, values)
}
