//! Unused grants and idle integrations: for each integration of a policy, the scopes,
//! operations and purposes of use its recorded requests never needed in a window, and when it
//! last made a request at all (the cue for explicit offboarding). Read by `fhirwall audit
//! report --policies` and, periodically, by the agent for its metrics.

use std::collections::BTreeMap;

use fhirwall_policy::{Integration, Policy};
use serde::Serialize;

use super::suggest::Evidence;
use crate::audit::Record;

/// The evidence of every integration, from one pass over the trail.
#[derive(Debug, Default)]
pub struct Usage {
    by_integration: BTreeMap<String, Evidence>,
}

/// What one integration did not use.
#[derive(Clone, Debug, Serialize)]
pub struct Unused {
    pub integration: String,
    /// Allowed (or would-deny) requests in the window.
    pub requests: u64,
    /// When it last made one, in the window.
    pub last_request: Option<jiff::Timestamp>,
    pub scopes: Vec<String>,
    pub operations: Vec<String>,
    pub purposes_of_use: Vec<String>,
}

impl Unused {
    /// Grants never used in the window.
    #[must_use]
    pub fn count(&self) -> usize {
        self.scopes.len() + self.operations.len() + self.purposes_of_use.len()
    }
}

impl Usage {
    pub fn record(&mut self, record: &Record) {
        if let Some(name) = &record.integration {
            self.by_integration
                .entry(name.clone())
                .or_default()
                .record(record);
        }
    }

    /// Every integration of `policy`, with what it did not use.
    #[must_use]
    pub fn unused(&self, policy: &Policy) -> Vec<Unused> {
        let none = Evidence::default();
        policy
            .integrations
            .iter()
            .map(|i| unused(i, self.by_integration.get(&i.name).unwrap_or(&none)))
            .collect()
    }
}

fn unused(i: &Integration, e: &Evidence) -> Unused {
    let scopes = i
        .scopes
        .list()
        .iter()
        .filter(|scope| !e.uses_scope(scope))
        .map(ToString::to_string)
        .collect();
    let operations = i
        .operations
        .iter()
        .filter(|rule| {
            !e.operations.keys().any(|(name, level, t)| {
                rule.allows(
                    &fhirwall_fhir::Operation {
                        name: name.clone(),
                        level: *level,
                    },
                    *t,
                )
            })
        })
        .map(ToString::to_string)
        .collect();
    let purposes_of_use = i
        .purposes_of_use
        .iter()
        .map(|p| p.to_string())
        .filter(|p| !e.purposes.contains_key(p))
        .collect();
    Unused {
        integration: i.name.clone(),
        requests: e.requests.map_or(0, |s| s.count),
        last_request: e.requests.map(|s| s.last),
        scopes,
        operations,
        purposes_of_use,
    }
}

/// For people: per integration, its unused grants and its last request, flagging those idle
/// since before `idle_before`.
#[must_use]
pub fn text(unused: &[Unused], idle_before: jiff::Timestamp) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for u in unused {
        let last = u.last_request.map_or_else(
            || "no request in the window".to_owned(),
            |t| format!("last request {}", t.strftime("%Y-%m-%dT%H:%M:%SZ")),
        );
        let idle = if u.last_request.is_none_or(|t| t < idle_before) {
            "  IDLE: offboard it, or say why it stays"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{}: {} request(s), {last}{idle}",
            u.integration, u.requests
        );
        for (what, list) in [
            ("scope", &u.scopes),
            ("operation", &u.operations),
            ("purpose of use", &u.purposes_of_use),
        ] {
            for item in list {
                let _ = writeln!(out, "  unused {what}: {item}");
            }
        }
    }
    out
}

/// Reads the trail every `interval` for the usage metrics, on a thread of its own (a full
/// read of a month of records takes seconds; nothing on a request's path waits for it).
/// Detached: it only reads, and ends with the process.
pub fn spawn_metrics(
    db: std::path::PathBuf,
    interval: std::time::Duration,
    window_days: u64,
    policy: impl Fn() -> std::sync::Arc<Policy> + Send + 'static,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) -> std::io::Result<()> {
    let window =
        jiff::SignedDuration::from_hours(i64::try_from(window_days * 24).unwrap_or(i64::MAX));
    std::thread::Builder::new()
        .name("fhirwall-usage".into())
        .spawn(move || {
            loop {
                let since = jiff::Timestamp::now().checked_sub(window).ok();
                let read = crate::audit::open_read_only(&db).and_then(|conn| {
                    let mut usage = Usage::default();
                    let scan = crate::audit::Scan {
                        since,
                        integration: None,
                    };
                    crate::audit::scan_requests(&conn, &scan, |_, r| usage.record(&r))?;
                    Ok(usage)
                });
                match read {
                    Ok(usage) => metrics.set_usage(&usage.unused(&policy())),
                    Err(e) => tracing::warn!(error = %crate::error_chain(&e), "reading the audit trail for the usage metrics failed"),
                }
                std::thread::sleep(interval);
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::least_privilege::test_support::{CATEGORY, LAB, policy, recorded};

    #[test]
    fn grants_no_request_needed_and_idle_integrations_are_listed() {
        let (_d, current) = policy(|t| t);
        let mut usage = Usage::default();
        for (n, request) in [
            format!("GET /Observation?category={CATEGORY}"),
            "GET /ServiceRequest/sr-1".to_owned(),
        ]
        .iter()
        .enumerate()
        {
            usage.record(&recorded(&current, n, request));
        }
        let unused = usage.unused(&current);
        let lab = unused.iter().find(|u| u.integration == LAB).expect("lab");
        assert_eq!(lab.requests, 2);
        assert!(lab.last_request.is_some());
        assert_eq!(
            lab.scopes,
            [
                "system/Observation.cu",
                "system/DiagnosticReport.cu",
                "system/DiagnosticReport.rs?category=http://terminology.hl7.org/CodeSystem/v2-0074|LAB",
                "system/Patient.s",
            ]
        );
        assert_eq!(
            lab.operations,
            ["Observation/$validate", "DiagnosticReport/$validate"]
        );
        assert!(lab.purposes_of_use.is_empty(), "TREAT was stated");
        // Another integration made no request: everything unused, idle.
        let other = unused
            .iter()
            .find(|u| u.integration != LAB)
            .expect("another");
        assert_eq!(other.requests, 0);
        assert!(other.last_request.is_none());
        let in_force = current.integration(&other.integration).expect("in force");
        assert_eq!(other.scopes.len(), in_force.scopes.list().len());
        let text = text(&unused, jiff::Timestamp::now());
        assert!(
            text.contains(&format!(
                "{}: 0 request(s), no request in the window  IDLE",
                other.integration
            )),
            "{text}"
        );
    }
}
