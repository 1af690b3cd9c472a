//! Every request record of a window, in order, for the analyses that read the whole trail
//! (`fhirwall policy replay`, `suggest`, unused grants): one pass, no completion joins.

use rusqlite::Connection;

use super::{AuditError, Entry, Record, bodies::Bodies};

/// Which request records to read.
#[derive(Clone, Debug, Default)]
pub struct Scan<'a> {
    /// From this time on (inclusive).
    pub since: Option<jiff::Timestamp>,
    /// Only this integration's.
    pub integration: Option<&'a str>,
}

/// Calls `each` with every request record of the window, oldest first; returns how many.
pub fn scan_requests(
    conn: &Connection,
    scan: &Scan<'_>,
    mut each: impl FnMut(u64, Record),
) -> Result<u64, AuditError> {
    let read = |source| AuditError::Read { source };
    let mut sql = String::from(
        "SELECT seq, body, frame_at FROM entries WHERE kind = 'request' AND time_us >= ?1",
    );
    if scan.integration.is_some() {
        sql.push_str(" AND integration = ?2");
    }
    sql.push_str(" ORDER BY seq");
    let since = scan.since.map_or(i64::MIN, jiff::Timestamp::as_microsecond);
    let mut stmt = conn.prepare(&sql).map_err(read)?;
    let rows = match scan.integration {
        Some(name) => stmt.query((since, name)),
        None => stmt.query([since]),
    };
    let mut rows = rows.map_err(read)?;
    let mut bodies = Bodies::of(conn);
    let mut n = 0;
    while let Some(row) = rows.next().map_err(read)? {
        let seq = u64::try_from(row.get::<_, i64>(0).map_err(read)?).unwrap_or(0);
        let body: Option<String> = row.get(1).map_err(read)?;
        let frame_at: Option<i64> = row.get(2).map_err(read)?;
        // Gone meanwhile: retention removed it.
        let Some(body) = bodies.get(seq, body, frame_at)? else {
            continue;
        };
        if let Entry::Request(record) = Entry::from_body(seq, &body)? {
            n += 1;
            each(seq, record);
        }
    }
    Ok(n)
}
