//! `fhirwall audit report`: what one integration accessed over a window, in one screen.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{
    Timestamp,
    civil::{Time, Weekday},
    tz::TimeZone,
};
use rusqlite::Connection;
use serde::Serialize;

use super::{
    AuditError,
    query::{self, Filter, QueryRow},
    record::{Disposition, rfc3339},
};

/// Working hours; requests outside them are counted as off-hours use.
#[derive(Clone, Debug)]
pub struct BusinessHours {
    pub start: Time,
    pub end: Time,
    /// The zone the hours are in; the host's local zone by default.
    pub tz: TimeZone,
}

impl Default for BusinessHours {
    fn default() -> Self {
        Self {
            start: Time::constant(7, 0, 0, 0),
            end: Time::constant(19, 0, 0, 0),
            tz: TimeZone::system(),
        }
    }
}

impl BusinessHours {
    /// Parses `HH:MM-HH:MM` (in the host's zone).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("expected HH:MM-HH:MM, got {s:?}"))?;
        let time = |t: &str| {
            t.trim()
                .parse::<Time>()
                .map_err(|e| format!("bad time {t:?}: {e}"))
        };
        let (start, end) = (time(a)?, time(b)?);
        if start >= end {
            return Err(format!("business hours {s:?} end before they start"));
        }
        Ok(Self {
            start,
            end,
            ..Self::default()
        })
    }

    /// Monday to Friday, `start <= local time < end`.
    #[must_use]
    pub fn contains(&self, t: Timestamp) -> bool {
        let local = t.to_zoned_datetime(self.tz.clone());
        let weekday = !matches!(local.weekday(), Weekday::Saturday | Weekday::Sunday);
        let time = local.time();
        weekday && self.start <= time && time < self.end
    }
}

/// The summary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub requests: u64,
    pub decisions: BTreeMap<String, u64>,
    pub resource_types: BTreeMap<String, u64>,
    pub interactions: BTreeMap<String, u64>,
    pub distinct_patients: u64,
    /// Every refused (or would-be-refused) request, by reason.
    pub denials_by_reason: BTreeMap<String, u64>,
    #[serde(serialize_with = "opt_time")]
    pub first_seen: Option<Timestamp>,
    #[serde(serialize_with = "opt_time")]
    pub last_seen: Option<Timestamp>,
    pub off_hours: u64,
    pub break_glass: u64,
    pub upstream_failures: u64,
    pub workloads: Vec<WorkloadSeen>,
    /// The credentials these workloads presented that other identities presented too in the
    /// window: fingerprint -> every identity that presented it (see [`add_sharing`]).
    pub shared_credentials: BTreeMap<String, BTreeSet<String>>,
}

/// One executable (by path and hash) and where it ran.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSeen {
    pub exe: Option<String>,
    pub exe_sha256: Option<String>,
    pub requests: u64,
    pub users: BTreeSet<String>,
    pub units: BTreeSet<String>,
    pub containers: BTreeSet<String>,
    pub credentials: BTreeSet<String>,
}

/// Summarizes `rows` (a pure function: the caller chooses the window with a [`super::Filter`]).
pub fn report<'a>(rows: impl IntoIterator<Item = &'a QueryRow>, hours: &BusinessHours) -> Report {
    let mut out = Report::default();
    let mut patients = BTreeSet::new();
    let mut workloads: BTreeMap<(Option<String>, Option<String>), WorkloadSeen> = BTreeMap::new();
    for row in rows {
        let r = &row.record;
        out.requests += 1;
        *out.decisions
            .entry(r.decision.as_str().to_owned())
            .or_default() += 1;
        let rt = r
            .resource_type
            .clone()
            .unwrap_or_else(|| "(none)".to_owned());
        *out.resource_types.entry(rt).or_default() += 1;
        let interaction = r.interaction.clone().unwrap_or_else(|| "(none)".to_owned());
        *out.interactions.entry(interaction).or_default() += 1;
        patients.extend(r.patients.iter().cloned());
        if r.decision != Disposition::Allow {
            let reason = r
                .reason
                .clone()
                .unwrap_or_else(|| r.decision.as_str().to_owned());
            *out.denials_by_reason.entry(reason).or_default() += 1;
        }
        out.first_seen = Some(out.first_seen.map_or(r.time, |t| t.min(r.time)));
        out.last_seen = Some(out.last_seen.map_or(r.time, |t| t.max(r.time)));
        out.off_hours += u64::from(!hours.contains(r.time));
        out.break_glass += u64::from(r.break_glass.is_some());
        let failed = row
            .completion
            .as_ref()
            .is_some_and(|c| c.outcome == super::Fate::UpstreamFailure);
        out.upstream_failures += u64::from(failed);
        let w = &r.workload;
        let seen = workloads
            .entry((w.exe.clone(), w.exe_sha256.clone()))
            .or_insert_with(|| WorkloadSeen {
                exe: w.exe.clone(),
                exe_sha256: w.exe_sha256.clone(),
                ..WorkloadSeen::default()
            });
        seen.requests += 1;
        seen.users
            .insert(w.user.clone().unwrap_or_else(|| format!("uid {}", w.uid)));
        seen.units.extend(w.systemd_unit.clone());
        seen.containers.extend(w.container_id.clone());
        seen.credentials.extend(r.credential_fingerprint.clone());
    }
    out.distinct_patients = patients.len() as u64;
    out.workloads = workloads.into_values().collect();
    out
}

/// The report over what `filter` selects, with the credentials shared in its window, and the
/// rows it summarizes.
pub fn report_from(
    conn: &Connection,
    filter: &Filter,
    hours: &BusinessHours,
) -> Result<(Vec<QueryRow>, Report), AuditError> {
    let rows = query::query(conn, filter)?;
    let mut summary = report(&rows, hours);
    add_sharing(&mut summary, |credential| {
        query::presenters(conn, credential, filter.from, filter.to)
    })?;
    Ok((rows, summary))
}

/// Fills [`Report::shared_credentials`]: each credential the report's workloads presented,
/// with every identity that presented it, when that is more than one. `presenters` looks one
/// fingerprint up over the report's window (`query::presenters` on the store).
fn add_sharing(
    report: &mut Report,
    mut presenters: impl FnMut(&str) -> Result<BTreeSet<String>, AuditError>,
) -> Result<(), AuditError> {
    let credentials: BTreeSet<&String> = report
        .workloads
        .iter()
        .flat_map(|w| &w.credentials)
        .collect();
    let mut shared = BTreeMap::new();
    for credential in credentials {
        let who = presenters(credential)?;
        if who.len() > 1 {
            shared.insert(credential.clone(), who);
        }
    }
    report.shared_credentials = shared;
    Ok(())
}

#[expect(
    clippy::ref_option,
    reason = "the signature serde's serialize_with requires"
)]
fn opt_time<S: serde::Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339::serialize(t, s),
        None => s.serialize_none(),
    }
}
