//! From a decided request to what the proxy does with it: refuse it, or forward it with the
//! headers that pass and the check its response gets.

use fhirwall_fhir::{
    FhirRequest, Interaction, IssueType,
    response::{CheckMode, ResponseRules},
};
use fhirwall_http::{ExchangeId, LocalResponse};
use fhirwall_policy::{
    self as policy, BreakGlassSession, Decision, OnViolation, Part, Policy, Rule, Subject, Why,
};

use super::{
    ConnectionHandler,
    bindings::{Bound, BoundKind},
    inspect::{Expect, PendingCheck},
    record, signals,
};
use crate::{audit, proxy::operation_outcome};

/// What happens to a request once decided.
pub(super) enum Plan {
    Refuse(LocalResponse),
    Forward {
        check: PendingCheck,
        /// Request headers not forwarded (lower-case names).
        strip: Vec<String>,
        /// Known to change nothing on the server (reads, searches, history, capabilities, pages
        /// and export files), so it may go out before its record is durable as long as its
        /// response waits (with a GET or HEAD method: checked where the method is known).
        read_only: bool,
    },
}

/// The URL the server issued, its owner and its answer's rules.
pub(super) struct Issued {
    pub integration: String,
    pub patients: fhirwall_fhir::response::PatientRule,
}

impl ConnectionHandler {
    /// A classified request: decided, recorded, and planned.
    pub(super) fn plan_fhir(
        &self,
        request: Decided<'_, '_>,
        record: &mut audit::Record,
        id: ExchangeId,
    ) -> Plan {
        let Decided {
            policy,
            subject,
            fhir,
            continuation,
            session,
            accept,
        } = request;
        let decision = policy::decide(policy, subject, fhir);
        record::decided(record, fhir, subject, &decision, session);
        record.stripped_headers.clone_from(&fhir.stripped_headers);
        let integration = subject.integration.map(|i| i.name.as_str());
        signals::note(&self.shared, &decision, subject.credential, integration);
        if decision.is_break_glass() {
            tracing::warn!(integration = ?integration, correlation = %id, "break-glass access");
            self.shared.metrics.break_glass.inc();
        }
        if let Decision::Deny { reason, .. } = decision {
            record.status = Some(403);
            return Plan::Refuse(operation_outcome::forbidden(&reason.to_string(), id));
        }
        let max = self.shared.max_response_hold;
        let mut rules = policy::response_rules(policy, subject, fhir, &decision, max);
        if let Some(bound) = continuation {
            // A continuation answers for its first page: held to the same patients.
            rules.patients = bound.patients;
        }
        if rules.mode != CheckMode::Record && asks_for_xml(fhir, accept) {
            record::refused_format(record);
            let reason = "fhirwall checks this response and reads FHIR JSON: ask for \
                          application/fhir+json (the request asked for XML)";
            return Plan::Refuse(operation_outcome::answer(
                406,
                IssueType::NotSupported,
                reason,
                id,
            ));
        }
        let kickoff = fhir.operation.as_ref().is_some_and(|o| o.name == "$export");
        let issued = integration.map(|name| Issued {
            integration: name.to_owned(),
            patients: rules.patients.clone(),
        });
        Plan::Forward {
            check: PendingCheck {
                rules,
                expect: Expect::Resource,
                kickoff,
                issued,
            },
            strip: fhir.stripped_headers.clone(),
            read_only: fhir.operation.is_none()
                && matches!(
                    fhir.interaction,
                    Interaction::Read
                        | Interaction::Vread
                        | Interaction::HistoryInstance
                        | Interaction::HistoryType
                        | Interaction::HistorySystem
                        | Interaction::SearchType
                        | Interaction::SearchSystem
                        | Interaction::Capabilities
                ),
        }
    }

    /// A URL the server issued outside any FHIR interaction (a bulk export's status or file):
    /// only the integration it was issued to may fetch it, and what comes back is checked.
    pub(super) fn plan_bound(
        &self,
        subject: &Subject<'_>,
        bound: Bound,
        strip: Vec<String>,
        record: &mut audit::Record,
        id: ExchangeId,
    ) -> Plan {
        record.interaction = Some(
            match bound.kind {
                BoundKind::ExportStatus => "export-status",
                BoundKind::ExportFile | BoundKind::Page => "export-file",
            }
            .to_owned(),
        );
        let integration = subject.integration;
        let decision = match integration {
            Some(i) if i.name == bound.integration => policy::decide_bound(subject),
            Some(i) => Decision::Deny {
                rule: Rule::Integration {
                    name: &i.name,
                    part: Part::Continuation,
                },
                reason: policy::Reason::Request {
                    entry: None,
                    why: Why::Continuation,
                },
            },
            None => policy::decide_bound(subject),
        };
        record::decided_bound(record, subject, &decision);
        record.stripped_headers.clone_from(&strip);
        signals::note(
            &self.shared,
            &decision,
            subject.credential,
            integration.map(|i| i.name.as_str()),
        );
        let (Decision::Allow { .. }, Some(integration)) = (&decision, integration) else {
            let reason = decision
                .reason()
                .map(ToString::to_string)
                .unwrap_or_default();
            record.status = Some(403);
            return Plan::Refuse(operation_outcome::forbidden(&reason, id));
        };
        let rules = ResponseRules {
            mode: match integration.response_check.on_violation {
                OnViolation::Deny => CheckMode::Deny,
                OnViolation::Filter => CheckMode::Filter,
            },
            readable: integration.scopes.readable(),
            patients: bound.patients.clone(),
            exempt: integration.patient.exempt.iter().copied().collect(),
            max_held: self.shared.max_response_hold,
        };
        let expect = match bound.kind {
            BoundKind::ExportStatus => Expect::ExportStatus,
            BoundKind::ExportFile | BoundKind::Page => Expect::ExportFile,
        };
        Plan::Forward {
            check: PendingCheck {
                rules,
                expect,
                kickoff: false,
                issued: Some(Issued {
                    integration: bound.integration,
                    patients: bound.patients,
                }),
            },
            strip,
            // A page, an export file, an export's status; a DELETE of the status URL (which
            // cancels the export) is not read-only, which the method check catches.
            read_only: true,
        }
    }
}

/// What a classified request is decided with.
pub(super) struct Decided<'p, 'r> {
    pub policy: &'p Policy,
    pub subject: &'r Subject<'p>,
    pub fhir: &'r FhirRequest,
    /// The paging link it follows, when the server issued it to this integration.
    pub continuation: Option<Bound>,
    pub session: Option<&'r BreakGlassSession>,
    /// The request's `Accept` header.
    pub accept: Option<&'r [u8]>,
}

/// Whether the request asks for XML only (`_format`, or an `Accept` that names XML and no
/// JSON). Without either, the server answers in its default, which the check then reads.
fn asks_for_xml(fhir: &FhirRequest, accept: Option<&[u8]>) -> bool {
    let format = fhir
        .query
        .controls
        .iter()
        .find(|c| c.name == "_format")
        .map(|c| c.value.to_ascii_lowercase());
    if let Some(format) = format {
        return format.contains("xml");
    }
    let Some(accept) = accept else {
        return false;
    };
    let ranges: Vec<String> = String::from_utf8_lossy(accept)
        .split(',')
        .map(|r| {
            r.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .collect();
    let json = ranges.iter().any(|r| {
        matches!(
            r.as_str(),
            "*/*"
                | "application/*"
                | "application/json"
                | "application/fhir+json"
                | "application/json+fhir"
                | "application/fhir+ndjson"
        )
    });
    !json && ranges.iter().any(|r| r.contains("xml"))
}
