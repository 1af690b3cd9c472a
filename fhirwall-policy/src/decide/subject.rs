//! The subject of a decision: who is asking, from where, when, for what purpose, with which
//! credential, for which patients, under which break-glass session.

use super::super::{
    Policy,
    credential::Fingerprint,
    exception::BreakGlassSession,
    integration::Integration,
    purpose::{PurposeOfUse, RequestedPurpose},
};

/// Who is asking, as the proxy knows it when the request arrives.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    /// The integration the workload matched (`Policy::integration_for`); `None`: unregistered.
    pub integration: Option<&'a Integration>,
    /// The upstream the connection was headed for.
    pub upstream: &'a str,
    pub now: jiff::Timestamp,
    /// The purpose-of-use header.
    pub purpose: RequestedPurpose,
    /// The Authorization header's fingerprint.
    pub credential: Presented,
    /// The integration's patient header (`patient.mode: header`).
    pub patients: HeaderValue<'a>,
    /// The workload's user name, for break-glass sessions opened for a user.
    pub user: Option<&'a str>,
    /// The open break-glass session covering this workload, if any.
    pub break_glass: Option<&'a BreakGlassSession>,
    /// The request follows a paging link the server returned to this integration (the proxy
    /// remembers them; see `Why::Continuation`).
    pub continuation: bool,
}

/// The Authorization header as seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presented {
    Absent,
    Credential(Fingerprint),
    /// Sent more than once: ambiguous, never accepted.
    Repeated,
}

/// A request header's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderValue<'a> {
    Absent,
    One(&'a str),
    /// Repeated or not UTF-8.
    Invalid,
}

impl<'a> Subject<'a> {
    /// The subject of a request from the headers the policy reads: the purpose header
    /// ([`Settings::purpose_header`](crate::Settings::purpose_header)), `Authorization` (fingerprinted, never
    /// kept) and the integration's patient header. Break-glass session and user stay `None`;
    /// set them when the admin state has a session for this workload.
    #[must_use]
    pub fn from_headers(
        policy: &Policy,
        integration: Option<&'a Integration>,
        upstream: &'a str,
        headers: &'a [(&'a str, &'a [u8])],
        now: jiff::Timestamp,
    ) -> Subject<'a> {
        let purpose = match header(headers, |n| policy.settings.purpose_header.is(n)) {
            HeaderValue::Absent => RequestedPurpose::Absent,
            HeaderValue::One(value) => PurposeOfUse::from_header(value.as_bytes()),
            HeaderValue::Invalid => RequestedPurpose::Invalid,
        };
        let mut auth = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("authorization"));
        let credential = match (auth.next(), auth.next()) {
            (None, _) => Presented::Absent,
            (Some((_, value)), None) => Presented::Credential(Fingerprint::of_authorization(value)),
            (Some(_), Some(_)) => Presented::Repeated,
        };
        let patients = match integration.and_then(Integration::patient_header) {
            Some(name) => header(headers, |n| name.is(n)),
            None => HeaderValue::Absent,
        };
        Subject {
            integration,
            upstream,
            now,
            purpose,
            credential,
            patients,
            user: None,
            break_glass: None,
            continuation: false,
        }
    }
}

fn header<'a>(headers: &'a [(&'a str, &'a [u8])], is: impl Fn(&str) -> bool) -> HeaderValue<'a> {
    let mut found = headers.iter().filter(|(n, _)| is(n));
    match (found.next(), found.next()) {
        (None, _) => HeaderValue::Absent,
        (Some((_, value)), None) => std::str::from_utf8(value).map_or(HeaderValue::Invalid, |v| {
            HeaderValue::One(v.trim_matches([' ', '\t']))
        }),
        (Some(_), Some(_)) => HeaderValue::Invalid,
    }
}
