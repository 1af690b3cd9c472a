//! Deciding a recorded request again under another policy (`fhirwall policy replay`): what the
//! audit record keeps of the request and its subject ([`ReplayInput`]), and the decision a
//! policy gives it.

use fhirwall_fhir::{FhirRequest, replay::Recorded};
use serde::{Deserialize, Serialize};

use super::{
    Fingerprint, Policy,
    decide::{Decision, HeaderValue, Presented, Subject, decide},
    purpose::{PurposeOfUse, RequestedPurpose},
};

/// What a decision read of one request, beyond what the audit record says anyway (the
/// integration, the upstream, the time, the credential's fingerprint).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayInput {
    /// The classified request, without values that could identify a person.
    #[serde(rename = "r")]
    pub request: Recorded,
    /// The purpose-of-use header as sent: a code, `!` when invalid, absent when none.
    #[serde(rename = "pu", default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// The integration's patient header (`patient.mode: header`): patient ids, kept like the
    /// record's patient references (audit store only).
    #[serde(rename = "ph", default, skip_serializing_if = "Option::is_none")]
    pub patient_header: Option<String>,
    /// More than one Authorization header was sent (the record has no fingerprint then).
    #[serde(rename = "auth2", default, skip_serializing_if = "std::ops::Not::not")]
    pub credential_repeated: bool,
    /// Followed a paging link the server had issued to this integration.
    #[serde(rename = "cont", default, skip_serializing_if = "std::ops::Not::not")]
    pub continuation: bool,
}

/// The decision a policy gives a replayed request: its label and rule, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replayed {
    /// Allowed (forwarded); `false` for deny and would-deny.
    pub allowed: bool,
    pub rule: String,
    pub reason: Option<String>,
}

/// The recorded subject of a request, besides what [`ReplayInput`] holds.
#[derive(Clone, Copy, Debug)]
pub struct RecordedSubject<'a> {
    pub integration: &'a str,
    pub upstream: &'a str,
    pub credential: Option<&'a str>,
    pub time: jiff::Timestamp,
}

impl ReplayInput {
    /// What to keep of a request about to be decided.
    #[must_use]
    pub fn of(subject: &Subject<'_>, request: &FhirRequest) -> Self {
        Self {
            request: Recorded::of(request),
            purpose: match subject.purpose {
                RequestedPurpose::Absent => None,
                RequestedPurpose::Stated(p) => Some(p.to_string()),
                RequestedPurpose::Invalid => Some("!".into()),
            },
            patient_header: match subject.patients {
                HeaderValue::One(v) => Some(v.to_owned()),
                HeaderValue::Invalid => Some(String::new()),
                HeaderValue::Absent => None,
            },
            credential_repeated: subject.credential == Presented::Repeated,
            continuation: subject.continuation,
        }
    }

    /// Decides the request again under `policy`, as the recorded subject. An integration the
    /// policy no longer has is decided as unregistered; break-glass sessions are not replayed.
    #[must_use]
    pub fn decide(&self, policy: &Policy, subject: &RecordedSubject<'_>) -> Replayed {
        let request = self.request.request();
        let purpose = match self.purpose.as_deref() {
            None => RequestedPurpose::Absent,
            Some(code) => PurposeOfUse::parse(code)
                .map_or(RequestedPurpose::Invalid, RequestedPurpose::Stated),
        };
        let credential = match subject.credential {
            _ if self.credential_repeated => Presented::Repeated,
            None => Presented::Absent,
            Some(text) => Fingerprint::try_from(text.to_owned())
                .map_or(Presented::Repeated, Presented::Credential),
        };
        let patients = match self.patient_header.as_deref() {
            None => HeaderValue::Absent,
            Some("") => HeaderValue::Invalid,
            Some(value) => HeaderValue::One(value),
        };
        let subject = Subject {
            integration: policy.integration(subject.integration),
            upstream: subject.upstream,
            now: subject.time,
            purpose,
            credential,
            patients,
            user: None,
            break_glass: None,
            continuation: self.continuation,
        };
        let decision = decide(policy, &subject, &request);
        Replayed {
            allowed: matches!(decision, Decision::Allow { .. }),
            rule: decision.rule().to_string(),
            reason: decision.reason().map(ToString::to_string),
        }
    }
}
