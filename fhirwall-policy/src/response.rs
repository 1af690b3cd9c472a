//! How the response to an allowed request is checked: the rules of
//! [`fhirwall_fhir::response`] derived from the integration and the request.
//!
//! A response is checked (in the integration's `on_violation` mode) when the request cannot
//! bound what comes back:
//! - under a patient constraint (or a `patient/` scope), every read: even a search confined to
//!   patient A's compartment returns resources that are in B's compartment too (an Observation
//!   of B that A performed), so no request bounds whose data comes back;
//! - whatever the constraint, every response that may carry types beyond the request's own:
//!   `_include` and `_revinclude`, `_contained`, system-level search and history, operations,
//!   batches and transactions, and paging continuations.
//!
//! Every other response (a read or a search of one type without a patient constraint, a
//! write, capabilities) is bounded by the request; its body is still read, in `Record` mode, to
//! note whose data it carried. Observe mode and break-glass record and never withhold: they
//! exist to let traffic through.

use fhirwall_fhir::{
    FhirRequest, Interaction, ResourceType, TypeSet,
    response::{CheckMode, PatientRule, ResponseRules},
};

use super::{
    Decision, Integration, OnViolation, Part, PatientMode, Policy, Rule, ScopeContext, Subject,
    decide::{Confined, HeaderValue, confine},
};

/// The rules the response to `request` is held to. `max_held` is the agent's cap on the bytes
/// held for checking.
#[must_use]
pub fn response_rules(
    policy: &Policy,
    subject: &Subject<'_>,
    request: &FhirRequest,
    decision: &Decision<'_>,
    max_held: usize,
) -> ResponseRules {
    let mut rules = ResponseRules {
        mode: CheckMode::Record,
        readable: TypeSet::EMPTY,
        patients: PatientRule::Any,
        exempt: TypeSet::EMPTY,
        max_held,
    };
    let (Decision::Allow { rule, .. }, Some(integration)) = (decision, subject.integration) else {
        return rules;
    };
    if matches!(rule, Rule::BreakGlass { .. } | Rule::Capabilities) {
        return rules;
    }
    rules.readable = readable(policy, integration, request, *rule);
    rules.exempt = integration.patient.exempt.iter().copied().collect();
    let confined = confine(request, &integration.patient.exempt);
    rules.patients = patient_rule(integration, subject, *rule, confined);
    let patient_bound = rules.patients != PatientRule::Any;
    let reads = !matches!(
        request.interaction,
        Interaction::Create
            | Interaction::Update
            | Interaction::Patch
            | Interaction::Delete
            | Interaction::Capabilities
    );
    let continuation = matches!(
        rule,
        Rule::Integration {
            part: Part::Continuation | Part::Export,
            ..
        }
    );
    if continuation || (patient_bound && reads) || !types_bounded(request) {
        rules.mode = match integration.response_check.on_violation {
            OnViolation::Deny => CheckMode::Deny,
            OnViolation::Filter => CheckMode::Filter,
        };
    }
    rules
}

/// Types the response may carry: what the integration's scopes (and the exception that allowed
/// the request) let it read or search, the types it is exempt for, and the request's own type
/// (a search a granular scope allowed returns its own type).
fn readable(
    policy: &Policy,
    integration: &Integration,
    request: &FhirRequest,
    rule: Rule<'_>,
) -> TypeSet {
    let mut set = integration.scopes.readable();
    if let Rule::Exception { name } = rule
        && let Some(exception) = policy.exceptions.iter().find(|e| e.name == name)
    {
        set = set.union(exception.scopes.readable());
    }
    for r in request.with_entries() {
        if r.interaction != Interaction::Operation
            && let Some(t) = r.resource_type
        {
            set.insert(t);
        }
    }
    set
}

/// Whose data the response may carry.
fn patient_rule(
    integration: &Integration,
    subject: &Subject<'_>,
    rule: Rule<'_>,
    confined: Result<Confined<'_>, super::Confinement>,
) -> PatientRule {
    let one = match confined {
        Ok(Confined::Patient(p)) => PatientRule::Only(vec![p.to_owned()]),
        _ => PatientRule::One,
    };
    match &integration.patient.mode {
        PatientMode::Compartment => one,
        PatientMode::Header(_) => match (&one, subject.patients) {
            (PatientRule::Only(_), _) => one,
            (_, HeaderValue::One(list)) => PatientRule::Only(
                list.split(',')
                    .map(str::trim)
                    .filter(|id| !id.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
            // The decision checked the header; without one nothing may come back.
            _ => PatientRule::Only(Vec::new()),
        },
        PatientMode::Any if patient_scoped(integration, rule) => one,
        PatientMode::Any => PatientRule::Any,
    }
}

/// Whether the rule that allowed the request rests on a `patient/` scope (for a rule naming
/// several, whether the integration has any).
fn patient_scoped(integration: &Integration, rule: Rule<'_>) -> bool {
    let list = integration.scopes.list();
    match rule {
        Rule::Integration {
            part: Part::Scope(i),
            ..
        } => list
            .get(i)
            .is_some_and(|s| s.context == ScopeContext::Patient),
        _ => list.iter().any(|s| s.context == ScopeContext::Patient),
    }
}

/// Whether what comes back is bounded to the request's own type (and the OperationOutcomes a
/// server adds): no includes, no contained, no system level, no operation, no Bundle of
/// requests, no continuation.
fn types_bounded(request: &FhirRequest) -> bool {
    let query = &request.query;
    let own_type_only = query.includes.is_empty() && !query.searches_contained();
    let typed = request
        .resource_type
        .is_some_and(|t| t != ResourceType::Bundle);
    match request.interaction {
        Interaction::Read
        | Interaction::Vread
        | Interaction::HistoryInstance
        | Interaction::HistoryType
        | Interaction::Create
        | Interaction::Update
        | Interaction::Patch
        | Interaction::Delete
        | Interaction::Capabilities => typed || request.interaction == Interaction::Capabilities,
        Interaction::SearchType => typed && own_type_only && query.paging.is_empty(),
        Interaction::SearchSystem
        | Interaction::HistorySystem
        | Interaction::Operation
        | Interaction::Batch
        | Interaction::Transaction => false,
    }
}

#[cfg(test)]
mod tests;
