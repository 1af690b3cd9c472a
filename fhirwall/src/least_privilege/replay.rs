//! `fhirwall policy replay`: every recorded request decided again under a candidate policy,
//! and what would change: allowed requests it would deny (what the candidate breaks) and
//! denied ones it would allow (what it opens), grouped by integration and rule.
//!
//! A request is replayed as its integration (by name) sent it, at the time it was sent, with
//! the purpose, credential and patient header it carried. Not replayed: requests no
//! integration matched (the candidate's selectors are not re-run against recorded
//! attributes), requests under break-glass (an operator act), and records written before the
//! agent kept requests for replay.

use std::collections::BTreeMap;

use fhirwall_policy::{Policy, RecordedSubject};
use serde::Serialize;

use crate::audit::{Disposition, Record};

/// What a replay found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReplayReport {
    /// Requests decided again.
    pub replayed: u64,
    /// Of those, decided as before (allowed or not).
    pub unchanged: u64,
    /// Records not replayed, by why.
    pub skipped: BTreeMap<&'static str, u64>,
    /// What changed, allowed-to-denied first, larger groups first.
    pub changes: Vec<Change>,
}

/// Which way a decision changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Direction {
    /// Allowed then, denied by the candidate: what the candidate would break.
    #[serde(rename = "allow->deny")]
    Breaks,
    /// Denied then, allowed by the candidate: what the candidate would open.
    #[serde(rename = "deny->allow")]
    Opens,
}

/// One group of changed decisions.
#[derive(Clone, Debug, Serialize)]
pub struct Change {
    pub direction: Direction,
    pub integration: String,
    /// The candidate's rule for these requests.
    pub rule: String,
    /// The candidate's reason (for denials).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The rule that decided them when they were made.
    pub was: String,
    pub count: u64,
    /// Up to a few of them, oldest first.
    pub examples: Vec<Example>,
}

/// A changed request, by its correlation id and what it was (no values, no ids).
#[derive(Clone, Debug, Serialize)]
pub struct Example {
    pub correlation_id: String,
    pub time: jiff::Timestamp,
    pub method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interaction: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
}

type GroupKey = (Direction, String, String, String);

/// A replay in progress: feed it records, then take the report.
pub struct Replay<'p> {
    policy: &'p Policy,
    examples: usize,
    report: ReplayReport,
    groups: BTreeMap<GroupKey, Change>,
}

impl<'p> Replay<'p> {
    /// A replay under `policy`, keeping up to `examples` example requests per group.
    #[must_use]
    pub fn new(policy: &'p Policy, examples: usize) -> Self {
        Self {
            policy,
            examples,
            report: ReplayReport::default(),
            groups: BTreeMap::new(),
        }
    }

    /// Decides one recorded request again.
    pub fn record(&mut self, record: &Record) {
        let Some(integration) = record.integration.as_deref() else {
            return self.skip("unregistered");
        };
        let Some(input) = record.replay.as_deref() else {
            return self.skip("not recorded for replay");
        };
        if record.break_glass.is_some() {
            return self.skip("break-glass");
        }
        let Some(was_allowed) = policy_allowed(record) else {
            return self.skip("not a policy decision");
        };
        let subject = RecordedSubject {
            integration,
            upstream: record.upstream.as_deref().unwrap_or_default(),
            credential: record.credential_fingerprint.as_deref(),
            time: record.time,
        };
        let now = input.decide(self.policy, &subject);
        self.report.replayed += 1;
        let direction = match (was_allowed, now.allowed) {
            (true, false) => Direction::Breaks,
            (false, true) => Direction::Opens,
            _ => {
                self.report.unchanged += 1;
                return;
            }
        };
        let was = record.rule.clone().unwrap_or_default();
        let key = (
            direction,
            integration.to_owned(),
            now.rule.clone(),
            was.clone(),
        );
        let change = self.groups.entry(key).or_insert_with(|| Change {
            direction,
            integration: integration.to_owned(),
            rule: now.rule,
            reason: now.reason,
            was,
            count: 0,
            examples: Vec::new(),
        });
        change.count += 1;
        if change.examples.len() < self.examples {
            change.examples.push(Example {
                correlation_id: record.correlation_id.clone(),
                time: record.time,
                method: record.method.clone(),
                interaction: record.interaction.clone(),
                resource_type: record.resource_type.clone(),
            });
        }
    }

    fn skip(&mut self, why: &'static str) {
        *self.report.skipped.entry(why).or_default() += 1;
    }

    #[must_use]
    pub fn finish(mut self) -> ReplayReport {
        let mut changes: Vec<Change> = self.groups.into_values().collect();
        changes.sort_by(|a, b| {
            (a.direction, std::cmp::Reverse(a.count))
                .cmp(&(b.direction, std::cmp::Reverse(b.count)))
        });
        self.report.changes = changes;
        self.report
    }
}

/// Whether the policy in force allowed the request: `None` for records no policy decided
/// (malformed requests, kernel refusals). A request the policy allowed and the sidecar then
/// refused (rate limit, no credential to inject, no token) was allowed by the policy.
pub(super) fn policy_allowed(record: &Record) -> Option<bool> {
    let rule = record.rule.as_deref().unwrap_or_default();
    match record.decision {
        Disposition::Allow => Some(true),
        Disposition::WouldDeny => Some(false),
        Disposition::Deny => Some(
            rule.ends_with("/rate_limit")
                || rule.starts_with("credential/")
                || rule == "default/internal",
        ),
        Disposition::Malformed | Disposition::KernelRefused => None,
    }
}

impl ReplayReport {
    /// Whether the candidate would deny anything that was allowed.
    #[must_use]
    pub fn breaks_anything(&self) -> bool {
        self.changes
            .iter()
            .any(|c| c.direction == Direction::Breaks)
    }

    /// For people: the totals, then each group with its examples.
    #[must_use]
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = format!(
            "replayed {} request(s): {} unchanged, {} change(s)\n",
            self.replayed,
            self.unchanged,
            self.changes.iter().map(|c| c.count).sum::<u64>()
        );
        for (why, n) in &self.skipped {
            let _ = writeln!(out, "  not replayed ({why}): {n}");
        }
        for c in &self.changes {
            let direction = match c.direction {
                Direction::Breaks => "ALLOW -> DENY",
                Direction::Opens => "DENY -> ALLOW",
            };
            let _ = writeln!(
                out,
                "\n{direction}  {}  {} request(s)\n  now: {}{}\n  was: {}",
                c.integration,
                c.count,
                c.rule,
                c.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default(),
                c.was
            );
            for e in &c.examples {
                let _ = writeln!(
                    out,
                    "    {}  {}  {} {} {}",
                    e.correlation_id,
                    e.time,
                    e.method,
                    e.interaction.as_deref().unwrap_or("-"),
                    e.resource_type.as_deref().unwrap_or("-")
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
