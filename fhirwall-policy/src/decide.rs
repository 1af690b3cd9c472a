//! `decide()`: one classified request, one subject -> Allow, Deny or WouldDeny, with the rule
//! that decided and a reason without PHI.
//!
//! Pure: no I/O, no clock (the time is in the [`Subject`]), no allocation. Order of checks:
//!
//! ```text
//! registered?                 no  -> break-glass for the workload's user? else Deny default/unregistered
//! status / expiry             revoked, suspended, expired -> Deny (observe mode does not soften these)
//! upstream, credential, tenant
//! capabilities                always allowed (no patient data)
//! purpose of use              stated, or the default; in the allowed set
//! every request (and entry)   scopes, reached types, operations, granular params, patient constraint
//!   denied?                   -> a live exception that, with the scopes, allows it?
//!                             -> an open break-glass session that allows it?
//!                             -> observe mode: WouldDeny (forwarded, audited as would-deny)
//! ```

mod check;
mod patient;
mod reason;
mod subject;

use std::fmt;

use fhirwall_fhir::{FhirRequest, Interaction};

use self::check::{Checker, Granted};
pub(crate) use self::patient::{Confined, confine};
pub use self::{
    patient::confined_by_request,
    reason::{Confinement, Need, Reach, Reason, Why},
    subject::{HeaderValue, Presented, Subject},
};
use super::{
    Policy,
    exception::{BreakGlass, SessionTarget},
    integration::Integration,
    model::{IntegrationStatus, Mode},
    purpose::{PurposeOfUse, RequestedPurpose},
};

/// The outcome for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Forward. `purpose` is the purpose of use in force (for the audit record); `None` for
    /// capabilities.
    Allow {
        rule: Rule<'a>,
        purpose: Option<PurposeOfUse>,
    },
    /// Answer 403 with an OperationOutcome carrying `reason`.
    Deny { rule: Rule<'a>, reason: Reason<'a> },
    /// Observe mode: the request would be denied, but is forwarded; audit it as "would deny".
    WouldDeny { rule: Rule<'a>, reason: Reason<'a> },
}

impl<'a> Decision<'a> {
    /// Whether the proxy forwards the request.
    #[must_use]
    pub const fn forwards(&self) -> bool {
        !matches!(self, Decision::Deny { .. })
    }

    /// `allow`, `deny` or `would-deny`.
    #[must_use]
    pub const fn label(&self) -> &'static str {
        match self {
            Decision::Allow { .. } => "allow",
            Decision::Deny { .. } => "deny",
            Decision::WouldDeny { .. } => "would-deny",
        }
    }

    #[must_use]
    pub const fn rule(&self) -> Rule<'a> {
        match self {
            Decision::Allow { rule, .. }
            | Decision::Deny { rule, .. }
            | Decision::WouldDeny { rule, .. } => *rule,
        }
    }

    #[must_use]
    pub const fn reason(&self) -> Option<&Reason<'a>> {
        match self {
            Decision::Allow { .. } => None,
            Decision::Deny { reason, .. } | Decision::WouldDeny { reason, .. } => Some(reason),
        }
    }

    /// Allowed by a break-glass session: alert on it.
    #[must_use]
    pub const fn is_break_glass(&self) -> bool {
        matches!(
            self,
            Decision::Allow {
                rule: Rule::BreakGlass { .. },
                ..
            }
        )
    }
}

/// What decided, printed as a path: `integration/lab-results/scope[2]`,
/// `exception/quarterly-report`, `break-glass/ed-emergency`, `default/unregistered`,
/// `default/capabilities`, `default/unclassifiable`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule<'a> {
    Unregistered,
    Capabilities,
    /// Not decided by `decide()`: the request could not be classified (the proxy denies it
    /// with the `ClassifyError`; named here so audit records and `explain` use one vocabulary).
    Unclassifiable,
    Integration {
        name: &'a str,
        part: Part,
    },
    Exception {
        name: &'a str,
    },
    BreakGlass {
        name: &'a str,
    },
}

/// The part of an integration that decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Status,
    Expires,
    Upstreams,
    Credentials,
    Tenants,
    PurposesOfUse,
    /// The scope at this index in `scopes`.
    Scope(usize),
    /// The scope list as a whole (no scope grants it; several scopes for a Bundle).
    Scopes,
    /// The entry at this index in `operations`.
    Operation(usize),
    Operations,
    Patient,
    /// A paging link the server returned to this integration (`Why::Continuation` when not).
    Continuation,
    /// A bulk export status or file URL the server returned to this integration.
    Export,
}

impl fmt::Display for Rule<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Unregistered => f.write_str("default/unregistered"),
            Rule::Capabilities => f.write_str("default/capabilities"),
            Rule::Unclassifiable => f.write_str("default/unclassifiable"),
            Rule::Exception { name } => write!(f, "exception/{name}"),
            Rule::BreakGlass { name } => write!(f, "break-glass/{name}"),
            Rule::Integration { name, part } => {
                write!(f, "integration/{name}/")?;
                match part {
                    Part::Status => f.write_str("status"),
                    Part::Expires => f.write_str("expires"),
                    Part::Upstreams => f.write_str("upstreams"),
                    Part::Credentials => f.write_str("credentials"),
                    Part::Tenants => f.write_str("tenants"),
                    Part::PurposesOfUse => f.write_str("purposes_of_use"),
                    Part::Scope(i) => write!(f, "scope[{i}]"),
                    Part::Scopes => f.write_str("scopes"),
                    Part::Operation(i) => write!(f, "operations[{i}]"),
                    Part::Operations => f.write_str("operations"),
                    Part::Patient => f.write_str("patient"),
                    Part::Continuation => f.write_str("continuation"),
                    Part::Export => f.write_str("export"),
                }
            }
        }
    }
}

/// Decides one classified request. See the module docs for the order of checks.
#[must_use]
pub fn decide<'a>(
    policy: &'a Policy,
    subject: &Subject<'a>,
    request: &'a FhirRequest,
) -> Decision<'a> {
    let Some(integration) = subject.integration else {
        return break_glass(policy, subject, None)
            .and_then(|bg| allow_break_glass(bg, None, subject, request))
            .unwrap_or(Decision::Deny {
                rule: Rule::Unregistered,
                reason: Reason::Unregistered,
            });
    };
    let rule = |part| Rule::Integration {
        name: &integration.name,
        part,
    };
    match integration.status {
        IntegrationStatus::Active => {}
        status => {
            let reason = Reason::Status { status };
            return Decision::Deny {
                rule: rule(Part::Status),
                reason,
            };
        }
    }
    if let Some(at) = integration.expires.filter(|e| subject.now >= *e) {
        let reason = Reason::Expired { at };
        return Decision::Deny {
            rule: rule(Part::Expires),
            reason,
        };
    }
    let outcome = admit(policy, integration, subject, request);
    let (part, reason) = match outcome {
        // An open session lifts the patient constraint that the response check would apply.
        Ok(decision) if subject.break_glass.is_some() && by_response(integration, request) => {
            return break_glass(policy, subject, Some(integration))
                .and_then(|bg| allow_break_glass(bg, Some(integration), subject, request))
                .unwrap_or(decision);
        }
        Ok(decision) => return decision,
        Err(denied) => denied,
    };
    // A continuation is the server's to issue: no exception or session stands in for that.
    let widened = matches!(reason, Reason::Request { .. } | Reason::Purpose { .. })
        && part != Part::Continuation;
    if widened {
        if let Reason::Request { .. } = reason
            && let Some(allowed) = exceptions(policy, integration, subject, request)
        {
            return allowed;
        }
        if let Some(allowed) = break_glass(policy, subject, Some(integration))
            .and_then(|bg| allow_break_glass(bg, Some(integration), subject, request))
        {
            return allowed;
        }
    }
    let rule = rule(part);
    match integration.mode {
        Mode::Observe => Decision::WouldDeny { rule, reason },
        Mode::Enforce => Decision::Deny { rule, reason },
    }
}

/// Decides a request for a URL the server returned to this integration and that no FHIR
/// interaction names (a bulk export's status and file URLs): the integration must be live, on
/// this upstream, with an accepted credential and an allowed purpose; what comes back is
/// checked against its scopes.
#[must_use]
pub fn decide_bound<'a>(subject: &Subject<'a>) -> Decision<'a> {
    let Some(integration) = subject.integration else {
        return Decision::Deny {
            rule: Rule::Unregistered,
            reason: Reason::Unregistered,
        };
    };
    let rule = |part| Rule::Integration {
        name: &integration.name,
        part,
    };
    let refused = integration
        .refusal(subject.now)
        .map(|_| match integration.status {
            IntegrationStatus::Active => (
                Part::Expires,
                Reason::Expired {
                    at: integration.expires.unwrap_or(subject.now),
                },
            ),
            status => (Part::Status, Reason::Status { status }),
        });
    let checked = refused.map_or_else(
        || {
            admit_caller(integration, subject)?;
            purpose(integration, subject.purpose)
        },
        Err,
    );
    match checked {
        Ok(purpose) => Decision::Allow {
            rule: rule(Part::Export),
            purpose: Some(purpose),
        },
        Err((part, reason)) => Decision::Deny {
            rule: rule(part),
            reason,
        },
    }
}

/// Upstream and credential: who may call at all.
fn admit_caller<'a>(
    integration: &'a Integration,
    subject: &Subject<'a>,
) -> Result<(), (Part, Reason<'a>)> {
    if !integration.upstreams.iter().any(|u| u == subject.upstream) {
        let reason = Reason::Upstream {
            upstream: subject.upstream,
        };
        return Err((Part::Upstreams, reason));
    }
    let accepted = &integration.credentials.accepted;
    if !accepted.is_empty() {
        let ok = matches!(subject.credential, Presented::Credential(f) if accepted.contains(&f));
        if !ok {
            let reason = Reason::Credential {
                presented: subject.credential,
            };
            return Err((Part::Credentials, reason));
        }
    }
    Ok(())
}

/// The checks of a live integration, in order; `Err` names the part that denied.
fn admit<'a>(
    policy: &'a Policy,
    integration: &'a Integration,
    subject: &Subject<'a>,
    request: &'a FhirRequest,
) -> Result<Decision<'a>, (Part, Reason<'a>)> {
    admit_caller(integration, subject)?;
    // The classifier sets a tenant exactly when the upstream has tenants (it refuses a request
    // without one there); a request without a tenant is checked against the upstream's mode.
    let tenant_ok = match request.tenant.as_deref() {
        Some(t) => integration.tenants.iter().any(|a| a.as_str() == t),
        None => policy
            .upstream(subject.upstream)
            .is_some_and(|u| u.tenant.is_none()),
    };
    if !tenant_ok {
        let reason = Reason::Tenant {
            present: request.tenant.is_some(),
        };
        return Err((Part::Tenants, reason));
    }
    if request.interaction == Interaction::Capabilities {
        return Ok(Decision::Allow {
            rule: Rule::Capabilities,
            purpose: None,
        });
    }
    let purpose = purpose(integration, subject.purpose)?;
    if !request.query.paging.is_empty() {
        // The link was decided when its first page was; what it returns is checked again.
        if !subject.continuation {
            let why = Why::Continuation;
            return Err((Part::Continuation, Reason::Request { entry: None, why }));
        }
        let rule = Rule::Integration {
            name: &integration.name,
            part: Part::Continuation,
        };
        let purpose = Some(purpose);
        return Ok(Decision::Allow { rule, purpose });
    }
    let checker = Checker::new(integration, subject, None);
    let granted = checker
        .request(request)
        .map_err(|(entry, why)| (why.part(), Reason::Request { entry, why }))?;
    let part = match granted {
        Granted::Scope(i) => Part::Scope(i),
        Granted::Operation(i) => Part::Operation(i),
        Granted::Several => Part::Scopes,
        Granted::Capabilities => {
            return Ok(Decision::Allow {
                rule: Rule::Capabilities,
                purpose: Some(purpose),
            });
        }
    };
    let rule = Rule::Integration {
        name: &integration.name,
        part,
    };
    Ok(Decision::Allow {
        rule,
        purpose: Some(purpose),
    })
}

/// Whether the integration's patient constraint is left to the response check for this request.
fn by_response(integration: &Integration, request: &FhirRequest) -> bool {
    use super::integration::PatientMode;
    let exempt = &integration.patient.exempt;
    integration.patient.mode != PatientMode::Any
        && request
            .with_entries()
            .any(|r| matches!(confine(r, exempt), Ok(Confined::ByResponse)))
}

/// The purpose of use in force: the stated one, or the default; it must be allowed.
fn purpose<'a>(
    integration: &Integration,
    requested: RequestedPurpose,
) -> Result<PurposeOfUse, (Part, Reason<'a>)> {
    let allowed = integration.purposes_of_use;
    let deny = |stated| {
        let reason = Reason::Purpose { stated, allowed };
        (Part::PurposesOfUse, reason)
    };
    let purpose = match requested {
        RequestedPurpose::Stated(p) => p,
        RequestedPurpose::Absent => integration.default_purpose.ok_or(deny(requested))?,
        RequestedPurpose::Invalid => return Err(deny(requested)),
    };
    if allowed.contains(purpose) {
        Ok(purpose)
    } else {
        Err(deny(RequestedPurpose::Stated(purpose)))
    }
}

/// The first live exception for `integration` that, together with its own scopes, allows the
/// request. Exceptions add scopes only; purpose and patient constraint still apply (they were
/// checked before any scope, so a request that reaches here passed them, and the checker
/// applies the patient constraint again).
fn exceptions<'a>(
    policy: &'a Policy,
    integration: &'a Integration,
    subject: &Subject<'a>,
    request: &'a FhirRequest,
) -> Option<Decision<'a>> {
    let purpose = purpose(integration, subject.purpose).ok()?;
    policy
        .exceptions
        .iter()
        .filter(|e| e.integration == integration.name && e.is_live(subject.now))
        .find(|e| {
            Checker::new(integration, subject, Some(&e.scopes))
                .request(request)
                .is_ok()
        })
        .map(|e| Decision::Allow {
            rule: Rule::Exception { name: &e.name },
            purpose: Some(purpose),
        })
}

/// The break-glass policy that admits the subject's open session, if any.
fn break_glass<'a>(
    policy: &'a Policy,
    subject: &Subject<'a>,
    integration: Option<&'a Integration>,
) -> Option<&'a BreakGlass> {
    let session = subject.break_glass?;
    let target_matches = match (&session.target, integration) {
        (SessionTarget::Integration(name), Some(i)) => *name == i.name,
        (SessionTarget::User(user), _) => subject.user == Some(user.as_str()),
        (SessionTarget::Integration(_), None) => false,
    };
    let bg = policy
        .break_glass
        .iter()
        .find(|bg| bg.name == session.policy)?;
    (target_matches && bg.admits(session, subject.now)).then_some(bg)
}

/// Allows the request if the session's scopes (with the integration's own) cover it.
fn allow_break_glass<'a>(
    bg: &'a BreakGlass,
    integration: Option<&'a Integration>,
    subject: &Subject<'a>,
    request: &'a FhirRequest,
) -> Option<Decision<'a>> {
    let checker = Checker::break_glass(integration, subject, &bg.scopes);
    checker.request(request).ok().map(|_| Decision::Allow {
        rule: Rule::BreakGlass { name: &bg.name },
        purpose: Some(PurposeOfUse::BTG),
    })
}

#[cfg(test)]
mod tests;
