//! The response side of an exchange: the check it gets, the URLs it issues bound to the
//! integration, the counters, and what the completion record will say.

use std::time::Instant;

use fhirwall_fhir::response::{CheckMode, PatientRule, Report};
use fhirwall_http::{ExchangeId, ResponseHead};

use super::{
    ConnectionHandler,
    bindings::{Bound, BoundKind},
    inspect::ResponseGuard,
    record::Checked,
};
use crate::metrics::NO_INTEGRATION;

impl ConnectionHandler {
    /// The guard for the response to the request just forwarded. A `$export` kick-off's status
    /// URL is bound to its integration here (its 202 has no body to inspect).
    pub(super) fn response_guard(
        &mut self,
        id: ExchangeId,
        head: &ResponseHead,
        has_body: bool,
    ) -> Option<ResponseGuard> {
        let pending = self.check.take()?;
        if pending.kickoff
            && head.status() == 202
            && let (Some(issued), Some(location)) =
                (&pending.issued, head.headers.get("content-location"))
            && let Ok(location) = std::str::from_utf8(location)
        {
            let bound = Bound {
                integration: issued.integration.clone(),
                kind: BoundKind::ExportStatus,
                patients: issued.patients.clone(),
            };
            self.shared
                .bindings
                .issue(&self.upstream, location, bound, Instant::now());
        }
        if !has_body {
            return None;
        }
        self.issued = pending.issued;
        Some(ResponseGuard::new(id, pending.rules, pending.expect, head))
    }

    /// The body went through the guard: bind the URLs it issued (unless it was withheld),
    /// count, and keep what it saw for the completion record.
    pub(super) fn after_response(&mut self, guard: &ResponseGuard) {
        let report = guard.report();
        let refusal = guard.refusal().cloned();
        if refusal.is_none()
            && let Some(issued) = self.issued.take()
        {
            self.bind_links(&report, &issued.integration, issued.patients);
        }
        self.count(guard.mode(), &report, refusal.is_some(), guard);
        self.checked = Some(Checked {
            mode: guard.mode(),
            report,
            refusal,
        });
    }

    /// Paging links and export files of a released response may be followed by the same
    /// integration, held to the same patients (the one a `One` rule bound to, once known).
    fn bind_links(&self, report: &Report, integration: &str, patients: PatientRule) {
        let patients = match (&patients, &report.bound) {
            (PatientRule::One, Some(bound)) => PatientRule::Only(vec![bound.clone()]),
            _ => patients,
        };
        let now = Instant::now();
        for (relation, url) in &report.links {
            let kind = match relation.as_str() {
                "output" | "error" => BoundKind::ExportFile,
                _ => BoundKind::Page,
            };
            let bound = Bound {
                integration: integration.to_owned(),
                kind,
                patients: patients.clone(),
            };
            self.shared.bindings.issue(&self.upstream, url, bound, now);
        }
    }

    fn count(&self, mode: CheckMode, report: &Report, refused: bool, guard: &ResponseGuard) {
        let m = &self.shared.metrics;
        let withheld = report.withheld_total();
        let result = match guard.refusal() {
            Some(r) if r.released => "cut",
            Some(_) => "refused",
            None if withheld > 0 => "filtered",
            None if report.unread => "unread",
            None => "passed",
        };
        m.response_checks
            .with_label_values(&[mode.as_str(), result])
            .inc();
        let Some(violation) = report.violation else {
            return;
        };
        let integration = self
            .matched
            .as_ref()
            .and_then(|(state, handle)| state.policy.integration_at((*handle)?))
            .map_or(NO_INTEGRATION, |i| i.name.as_str());
        let counted = if refused { 1 } else { u64::from(withheld) };
        if counted > 0 {
            m.response_withheld
                .with_label_values(&[integration, violation.slug()])
                .inc_by(counted);
        }
    }
}
