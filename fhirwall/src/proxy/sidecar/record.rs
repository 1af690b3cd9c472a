//! Audit records of the sidecar's decisions. Only normalized paths, types, ids and patient
//! references go in: never a query value, a body or a credential (its fingerprint only).

use std::net::SocketAddr;

use fhirwall_fhir::{FhirRequest, IssueType};
use fhirwall_http::{ExchangeId, Finished, RequestHead};
use fhirwall_policy::{self as policy, BreakGlassSession, Presented, Rule, Subject, Workload};

use crate::audit::{self, BreakGlassUse, CommittedSeq, Completion, Disposition, Record};

/// A record of what arrived, before anything is decided (decision `Deny` until said otherwise).
pub fn base(
    node: &str,
    id: &ExchangeId,
    workload: &Workload,
    client: SocketAddr,
    upstream: &str,
    head: &RequestHead,
) -> Record {
    let mut record = Record::new(
        id.to_string(),
        node,
        workload.into(),
        String::from_utf8_lossy(head.method().as_bytes()).into_owned(),
        String::from_utf8_lossy(head.path()).into_owned(),
        Disposition::Deny,
    );
    record.client_addr = Some(client.to_string());
    record.upstream = Some(upstream.to_owned());
    record
}

pub fn unknown_upstream(record: &mut Record) {
    record.rule = Some("default/upstream".into());
    record.reason = Some("the destination is no longer a protected upstream in the policy".into());
    record.status = Some(403);
}

pub fn malformed(record: &mut Record, status: u16, reason: &str) {
    record.decision = Disposition::Malformed;
    record.rule = Some(Rule::Unclassifiable.to_string());
    record.reason = Some(reason.to_owned());
    record.status = Some(status);
}

pub fn limited(record: &mut Record, integration: &str) {
    record.decision = Disposition::Deny;
    record.rule = Some(format!("integration/{integration}/rate_limit"));
    record.reason = Some("rate limit exceeded".into());
    record.status = Some(429);
}

pub fn internal_failure(record: &mut Record, reason: &str) {
    record.decision = Disposition::Deny;
    record.rule = Some("default/internal".into());
    record.reason = Some(reason.to_owned());
    record.status = Some(503);
}

/// Allowed by policy, refused because the integration's brokered token cannot be had.
pub fn token_unavailable(record: &mut Record, reason: &str) {
    internal_failure(record, reason);
    record.rule = Some("credential/broker".into());
}

/// Fills in the FHIR meaning and the decision.
pub fn decided(
    record: &mut Record,
    fhir: &FhirRequest,
    subject: &Subject<'_>,
    decision: &policy::Decision<'_>,
    session: Option<&BreakGlassSession>,
) {
    record.tenant.clone_from(&fhir.tenant);
    record.interaction = Some(match &fhir.operation {
        Some(op) => op.name.clone(),
        None => fhir.interaction.code().to_owned(),
    });
    record.resource_type = fhir.resource_type.map(|t| t.as_str().to_owned());
    record.resource_id.clone_from(&fhir.id);
    record.patients = patient_references(fhir);
    record.replay = Some(Box::new(policy::ReplayInput::of(subject, fhir)));
    if let Presented::Credential(fingerprint) = subject.credential {
        record.credential_fingerprint = Some(fingerprint.to_string());
    }
    record.decision = match decision {
        policy::Decision::Allow { .. } => Disposition::Allow,
        policy::Decision::Deny { .. } => Disposition::Deny,
        policy::Decision::WouldDeny { .. } => Disposition::WouldDeny,
    };
    if let policy::Decision::Allow {
        purpose: Some(purpose),
        ..
    } = decision
    {
        record.purpose_of_use = Some(purpose.to_string());
    }
    let rule = decision.rule();
    record.rule = Some(rule.to_string());
    record.reason = decision.reason().map(ToString::to_string);
    if let Rule::Exception { name } = rule {
        record.exception = Some(name.to_owned());
    }
    if decision.is_break_glass() {
        record.break_glass = session.map(|s| BreakGlassUse {
            justification_id: s.justification.clone(),
        });
    }
}

/// A request for a URL the server issued outside any FHIR interaction (an export's status or
/// file), decided by `policy::decide_bound`.
pub fn decided_bound(record: &mut Record, subject: &Subject<'_>, decision: &policy::Decision<'_>) {
    if let Presented::Credential(fingerprint) = subject.credential {
        record.credential_fingerprint = Some(fingerprint.to_string());
    }
    record.decision = match decision {
        policy::Decision::Allow { .. } => Disposition::Allow,
        policy::Decision::Deny { .. } => Disposition::Deny,
        policy::Decision::WouldDeny { .. } => Disposition::WouldDeny,
    };
    if let policy::Decision::Allow {
        purpose: Some(purpose),
        ..
    } = decision
    {
        record.purpose_of_use = Some(purpose.to_string());
    }
    record.rule = Some(decision.rule().to_string());
    record.reason = decision.reason().map(ToString::to_string);
}

/// Allowed, but its response must be checked and the request asks for a format the check
/// does not read: refused with 406 before anything moves.
pub fn refused_format(record: &mut Record) {
    record.decision = Disposition::Deny;
    record.rule = Some("default/response-format".into());
    record.reason = Some(
        "the response must be checked, and the request asks for XML, which the check does not read"
            .into(),
    );
    record.status = Some(406);
}

/// The patients a request (with its Bundle entries) names, as the `Patient/<id>` references the
/// audit store keeps and queries by (classification yields bare ids).
fn patient_references(fhir: &FhirRequest) -> Vec<String> {
    fhir.with_entries()
        .flat_map(|r| &r.patient_refs)
        .map(|id| format!("Patient/{id}"))
        .collect()
}

/// How a request the sidecar committed ended; `checked`: what the response check saw.
#[must_use]
pub fn completion(
    seq: CommittedSeq,
    correlation: String,
    outcome: &Finished<'_>,
    checked: Option<&Checked>,
) -> Completion {
    let withheld = checked.is_some_and(|c| c.refusal.is_some());
    let result = match (outcome.forwarded, outcome.error) {
        _ if withheld => audit::Fate::Withheld,
        (_, Some(e)) if e.error_source() == fhirwall_http::ErrorSource::Downstream => {
            audit::Fate::ClientAborted
        }
        (true, Some(_)) => audit::Fate::UpstreamFailure,
        _ => audit::Fate::Completed,
    };
    let mut completion = Completion::new(seq, correlation, result);
    completion.status = outcome.status;
    completion.bytes_in = outcome.request_body_bytes;
    completion.bytes_out = outcome.response_body_bytes;
    completion.latency_us = u64::try_from(outcome.duration.as_micros()).unwrap_or(u64::MAX);
    completion.reason = outcome.error.map(|e| e.reason().to_owned());
    if let Some(checked) = checked {
        completion.patients = checked
            .report
            .patients
            .iter()
            .map(|id| format!("Patient/{id}"))
            .collect();
        completion.response = Some(check_record(checked));
    }
    completion
}

/// What the response check did, for the completion record: types, counts, fixed words.
fn check_record(checked: &Checked) -> audit::ResponseCheckRecord {
    let report = &checked.report;
    audit::ResponseCheckRecord {
        mode: checked.mode.as_str().to_owned(),
        resources: report.resources,
        withheld: report
            .withheld
            .iter()
            .map(|(t, n)| (t.map_or("(unknown)", |t| t.as_str()).to_owned(), *n))
            .collect(),
        refused: checked.refusal.as_ref().map(|r| r.violation.to_string()),
        violation: report.violation.map(|v| v.slug().to_owned()),
        patients_truncated: report.patients_truncated,
        unread: report.unread,
    }
}

/// What the response check of one exchange saw.
#[derive(Debug)]
pub struct Checked {
    pub mode: fhirwall_fhir::response::CheckMode,
    pub report: fhirwall_fhir::response::Report,
    pub refusal: Option<fhirwall_fhir::response::Refusal>,
}

/// The issue type a classification error is answered with: a missing element or a path fhirwall
/// does not protect is answered as `invalid`, like any other request it will not pass.
#[must_use]
pub fn issue_type(t: IssueType) -> IssueType {
    match t {
        IssueType::Required | IssueType::NotFound => IssueType::Invalid,
        other => other,
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use fhirwall_fhir::{self, ClassifyConfig, HttpRequest};

    use super::patient_references;

    #[test]
    fn patients_are_recorded_as_references() {
        let config = ClassifyConfig::new("/").unwrap();
        let cases: [(&str, &[&str]); 3] = [
            ("/Patient/1", &["Patient/1"]),
            ("/Observation?patient=Patient/p-7&code=x", &["Patient/p-7"]),
            ("/Observation?code=x", &[]),
        ];
        for (target, want) in cases {
            let request = HttpRequest {
                method: "GET",
                target,
                headers: &[],
                body: None,
            };
            let fhir = fhirwall_fhir::classify(&request, &config).unwrap();
            assert_eq!(patient_references(&fhir), want, "{target}");
        }
    }
}
