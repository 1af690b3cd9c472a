//! `fhirwall policy suggest`: the narrowest version of an integration that would have allowed
//! what it really did, from its allowed (and would-deny) requests in the audit trail.
//!
//! One pass gathers the evidence ([`Evidence`]): per resource type the permission letters its
//! requests needed, the codes every search of a type carried (a granular `?category=` scope
//! when they were always there), operations invoked, purposes stated, the peak rate. From it
//! [`Evidence::narrowest`] writes the candidate. A second pass replays the recorded requests
//! under it ([`super::replay`]): a candidate that would deny any of them is widened with the
//! scopes in force for the types it broke, and the patient mode becomes `compartment` only if
//! every recorded request still passes with it. So what `suggest` prints never breaks what it
//! saw.

mod yaml;

use std::collections::{BTreeMap, BTreeSet};

use fhirwall_fhir::{
    FhirRequest, Interaction, OperationLevel, ResourceType,
    replay::{CODED, REDACTED},
};
use fhirwall_policy::{
    Integration, OperationRule, PatientConstraint, PatientMode, Perm, Policy, PurposeOfUse,
    PurposeSet, RateLimit, Scope, Scopes,
};

use crate::audit::{Disposition, Record};

/// The granular parameters `suggest` may narrow a search scope by, in preference order.
const GRANULAR: [&str; 3] = ["category", "code", "type"];
/// More distinct codes than this on a type: a plain search scope reads better than a list.
const MAX_CODES: usize = 4;

/// How often something was seen, and when first and last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub count: u64,
    pub first: jiff::Timestamp,
    pub last: jiff::Timestamp,
}

impl Seen {
    fn at(time: jiff::Timestamp) -> Self {
        Self {
            count: 1,
            first: time,
            last: time,
        }
    }

    fn add(&mut self, time: jiff::Timestamp) {
        self.count += 1;
        self.first = self.first.min(time);
        self.last = self.last.max(time);
    }
}

fn note<K: Ord>(map: &mut BTreeMap<K, Seen>, key: K, time: jiff::Timestamp) {
    map.entry(key)
        .and_modify(|s| s.add(time))
        .or_insert_with(|| Seen::at(time));
}

/// Per granular parameter, the codes of a type's searches that carried exactly one (`None` once
/// a search went without it or with several).
type Searches = BTreeMap<&'static str, Option<BTreeMap<String, Seen>>>;

/// What one integration's requests needed.
#[derive(Clone, Debug, Default)]
pub struct Evidence {
    /// Requests counted (allowed or would-deny).
    pub requests: Option<Seen>,
    /// `(type, permission letter)` -> when needed.
    pub needs: BTreeMap<(ResourceType, char), Seen>,
    /// Per type, the codes its searches carried by granular parameter.
    searches: BTreeMap<ResourceType, Searches>,
    /// `(operation, level, type)` -> when invoked.
    pub operations: BTreeMap<(String, OperationLevel, Option<ResourceType>), Seen>,
    /// Purposes of use in force -> when.
    pub purposes: BTreeMap<String, Seen>,
    /// Most requests in one second.
    pub peak_per_second: u32,
    /// Per type and coded parameter, every single code searches carried (for unused granular
    /// scopes).
    codes: BTreeMap<(ResourceType, String), BTreeSet<String>>,
    /// Requests not confined to one patient by the request itself (the compartment mode would
    /// leave them to the response check, or refuse them).
    pub unconfined: u64,
    second: (i64, u32),
}

impl Evidence {
    /// Takes one record of the integration into account.
    pub fn record(&mut self, record: &Record) {
        if !matches!(record.decision, Disposition::Allow | Disposition::WouldDeny) {
            return;
        }
        let Some(input) = record.replay.as_deref() else {
            return;
        };
        let time = record.time;
        match &mut self.requests {
            Some(seen) => seen.add(time),
            None => self.requests = Some(Seen::at(time)),
        }
        let second = time.as_second();
        self.second = if self.second.0 == second {
            (second, self.second.1 + 1)
        } else {
            (second, 1)
        };
        self.peak_per_second = self.peak_per_second.max(self.second.1);
        if let Some(purpose) = &record.purpose_of_use {
            note(&mut self.purposes, purpose.clone(), time);
        }
        let request = input.request.request();
        if !fhirwall_policy::confined_by_request(&request, &[]) {
            self.unconfined += 1;
        }
        for r in request.with_entries() {
            self.request(r, time);
        }
    }

    fn request(&mut self, r: &FhirRequest, time: jiff::Timestamp) {
        let t = r.resource_type;
        let letter = match r.interaction {
            Interaction::Read | Interaction::Vread | Interaction::HistoryInstance => Some('r'),
            Interaction::SearchType
            | Interaction::SearchSystem
            | Interaction::HistoryType
            | Interaction::HistorySystem => Some('s'),
            Interaction::Create => Some('c'),
            Interaction::Update | Interaction::Patch => Some('u'),
            Interaction::Delete => Some('d'),
            Interaction::Operation => {
                if let Some(op) = &r.operation {
                    note(&mut self.operations, (op.name.clone(), op.level, t), time);
                }
                None
            }
            Interaction::Capabilities | Interaction::Batch | Interaction::Transaction => None,
        };
        let (Some(t), Some(letter)) = (t, letter) else {
            return;
        };
        note(&mut self.needs, (t, letter), time);
        if letter == 's' && r.interaction == Interaction::SearchType {
            self.search(r, t, time);
        }
        // Types reached by includes and chains are read too.
        for reached in r.query.reached_types() {
            if reached != t {
                note(&mut self.needs, (reached, 'r'), time);
            }
        }
    }

    fn search(&mut self, r: &FhirRequest, t: ResourceType, time: jiff::Timestamp) {
        // Plain parameters: not chained, no modifier (what a granular scope constrains).
        let plain = || {
            r.query.params.iter().filter(|p| {
                p.reverse_chain.is_empty() && p.chain.is_empty() && p.modifier.is_none()
            })
        };
        for p in plain() {
            if let ([value], true) = (&p.values[..], CODED.contains(&p.name.as_str())) {
                self.codes
                    .entry((t, p.name.clone()))
                    .or_default()
                    .insert(value.clone());
            }
        }
        let by_param = self.searches.entry(t).or_insert_with(|| {
            GRANULAR
                .iter()
                .map(|p| (*p, Some(BTreeMap::new())))
                .collect()
        });
        for (param, codes) in by_param.iter_mut() {
            let single = plain()
                .find(|p| p.name == *param)
                .and_then(|p| match &p.values[..] {
                    [v] if v != REDACTED => Some(v.clone()),
                    _ => None,
                });
            match (single, codes.as_mut()) {
                (Some(code), Some(codes)) => note(codes, code, time),
                _ => *codes = None,
            }
        }
    }

    /// Whether any recorded request needed what `scope` grants: a permission letter on a type
    /// it covers, and for a granular scope a search of its type with its codes.
    #[must_use]
    pub fn uses_scope(&self, scope: &Scope) -> bool {
        let perm = |letter| match letter {
            'c' => Perm::Create,
            'r' => Perm::Read,
            'u' => Perm::Update,
            'd' => Perm::Delete,
            _ => Perm::Search,
        };
        self.needs.keys().any(|(t, letter)| {
            scope.covers(*t)
                && scope.perms.contains(perm(*letter))
                && scope.params.iter().all(|p| {
                    self.codes
                        .get(&(*t, p.name.clone()))
                        .is_some_and(|codes| codes.contains(&p.value))
                })
        })
    }

    /// The granular parameter and codes every search of `t` carried, if few enough.
    fn granular(&self, t: ResourceType) -> Option<(&'static str, &BTreeMap<String, Seen>)> {
        let by_param = self.searches.get(&t)?;
        GRANULAR.iter().find_map(|p| {
            let codes = by_param.get(p)?.as_ref()?;
            (!codes.is_empty() && codes.len() <= MAX_CODES).then_some((*p, codes))
        })
    }
}

/// A suggested scope with the evidence behind it.
#[derive(Clone, Debug)]
pub struct SuggestedScope {
    pub scope: Scope,
    pub evidence: Seen,
}

/// What `suggest` proposes for one integration.
#[derive(Clone, Debug)]
pub struct Suggestion {
    /// The integration as proposed.
    pub integration: Integration,
    pub scopes: Vec<SuggestedScope>,
    pub evidence: Evidence,
    /// Scopes in force the first candidate would have broken recorded requests without.
    pub kept_for_replay: Vec<String>,
}

impl Evidence {
    /// The narrowest candidate from the evidence, on `current`'s identity, upstreams and
    /// credentials. `None` when there is no evidence at all.
    #[must_use]
    pub fn narrowest(&self, current: &Integration) -> Option<Suggestion> {
        self.requests?;
        let scopes = self.scopes(current);
        let mut integration = current.clone();
        integration.scopes = scopes
            .iter()
            .map(|s| s.scope.clone())
            .collect::<Vec<_>>()
            .into();
        integration.expected_resources = expected(&scopes, current);
        integration.operations = current
            .operations
            .iter()
            .filter(|rule| {
                self.operations
                    .keys()
                    .any(|(name, level, t)| rule_allows(rule, name, *level, *t))
            })
            .cloned()
            .collect();
        let seen: Vec<PurposeOfUse> = self
            .purposes
            .keys()
            .filter_map(|p| PurposeOfUse::parse(p))
            .collect();
        if !seen.is_empty() {
            integration.purposes_of_use = PurposeSet::from_iter(seen);
        }
        integration.default_purpose = current
            .default_purpose
            .filter(|d| integration.purposes_of_use.contains(*d));
        // Half again the peak second, never above a limit already in force.
        let per_second = (self.peak_per_second.max(1) * 3).div_ceil(2);
        let observed = RateLimit {
            per_second,
            burst: per_second * 2,
        };
        integration.rate_limit = Some(match current.rate_limit {
            Some(limit) if limit.per_second <= observed.per_second => limit,
            _ => observed,
        });
        Some(Suggestion {
            integration,
            scopes,
            evidence: self.clone(),
            kept_for_replay: Vec::new(),
        })
    }

    /// One scope per type: the letters needed, in the context of the scope in force for the
    /// type; a type whose searches always carried one of a few codes gets its `s` as granular
    /// scopes, one per code.
    fn scopes(&self, current: &Integration) -> Vec<SuggestedScope> {
        let mut by_type: BTreeMap<ResourceType, (BTreeSet<char>, Option<Seen>)> = BTreeMap::new();
        for ((t, letter), seen) in &self.needs {
            let (letters, evidence) = by_type.entry(*t).or_default();
            letters.insert(*letter);
            match evidence {
                Some(e) => {
                    e.count += seen.count;
                    e.first = e.first.min(seen.first);
                    e.last = e.last.max(seen.last);
                }
                None => *evidence = Some(*seen),
            }
        }
        let mut out = Vec::new();
        for (t, (letters, evidence)) in by_type {
            let Some(evidence) = evidence else { continue };
            let context = context_for(current, t);
            let granular = letters.contains(&'s').then(|| self.granular(t)).flatten();
            let plain: String = "cruds"
                .chars()
                .filter(|l| letters.contains(l) && !(granular.is_some() && *l == 's'))
                .collect();
            if !plain.is_empty() {
                let text = format!("{context}/{}.{plain}", t.as_str());
                if let Ok(scope) = Scope::try_from(text) {
                    out.push(SuggestedScope { scope, evidence });
                }
            }
            if let Some((param, codes)) = granular {
                for (code, seen) in codes {
                    let text = format!("{context}/{}.s?{param}={code}", t.as_str());
                    if let Ok(scope) = Scope::try_from(text) {
                        out.push(SuggestedScope {
                            scope,
                            evidence: *seen,
                        });
                    }
                }
            }
        }
        out
    }
}

/// The context (`system`, `user`, `patient`) of the scope in force that covers `t`.
fn context_for(current: &Integration, t: ResourceType) -> &'static str {
    current
        .scopes
        .list()
        .iter()
        .find(|s| s.covers(t))
        .map_or("system", |s| s.context.as_str())
}

/// The types the scopes name; the current list when they name none (a list may not be empty).
fn expected(scopes: &[SuggestedScope], current: &Integration) -> Vec<ResourceType> {
    let mut types: Vec<ResourceType> = scopes
        .iter()
        .filter_map(|s| s.scope.resource_type)
        .collect();
    types.sort_unstable();
    types.dedup();
    if types.is_empty() {
        current.expected_resources.clone()
    } else {
        types
    }
}

fn rule_allows(
    rule: &OperationRule,
    name: &str,
    level: OperationLevel,
    t: Option<ResourceType>,
) -> bool {
    rule.allows(
        &fhirwall_fhir::Operation {
            name: name.to_owned(),
            level,
        },
        t,
    )
}

impl Suggestion {
    /// The policy in force with this integration replaced by the suggestion.
    #[must_use]
    pub fn in_policy(&self, current: &Policy) -> Policy {
        let mut policy = current.clone();
        if let Some(i) = policy
            .integrations
            .iter_mut()
            .find(|i| i.name == self.integration.name)
        {
            *i = self.integration.clone();
        }
        policy
    }

    /// Adds back the scopes in force for `types` (what a replay found broken), and the
    /// operations in force when an operation broke.
    pub fn widen(
        &mut self,
        current: &Integration,
        types: &BTreeSet<ResourceType>,
        operations: bool,
    ) {
        let mut scopes: Vec<Scope> = self.integration.scopes.list().to_vec();
        for scope in current.scopes.list() {
            let relevant = scope.resource_type.is_none_or(|t| types.contains(&t));
            if relevant && !scopes.contains(scope) {
                scopes.push(scope.clone());
                self.kept_for_replay.push(scope.to_string());
            }
        }
        self.integration.scopes = Scopes::from(scopes);
        for t in types {
            if !self.integration.expected_resources.contains(t) {
                self.integration.expected_resources.push(*t);
            }
        }
        if operations {
            self.integration.operations.clone_from(&current.operations);
        }
    }

    /// With `patient: compartment` in place of `any`, when every recorded request was
    /// confined to one patient by the request itself.
    #[must_use]
    pub fn confined(&self) -> Option<Suggestion> {
        if self.integration.patient.mode != PatientMode::Any || self.evidence.unconfined > 0 {
            return None;
        }
        let mut confined = self.clone();
        confined.integration.patient = PatientConstraint {
            mode: PatientMode::Compartment,
            exempt: self.integration.patient.exempt.clone(),
        };
        Some(confined)
    }

    /// The suggestion as a policy document with its evidence in comments, and how it differs
    /// from `current`.
    #[must_use]
    pub fn yaml(&self, current: &Integration, window: &str) -> String {
        yaml::document(self, current, window)
    }
}

pub use self::yaml::permissions;

/// Suggests a narrower version of integration `name` of `current` from the records `pass`
/// feeds (called once to gather the evidence, then once per verification round). `None` when
/// the policy has no such integration or the records none of its requests.
pub fn suggest<E>(
    current: &Policy,
    name: &str,
    mut pass: impl FnMut(&mut dyn FnMut(&Record)) -> Result<(), E>,
) -> Result<Option<Suggestion>, E> {
    let Some(in_force) = current.integration(name) else {
        return Ok(None);
    };
    let mut evidence = Evidence::default();
    pass(&mut |r| evidence.record(r))?;
    let Some(mut suggestion) = evidence.narrowest(in_force) else {
        return Ok(None);
    };
    // What breaks is widened back: first the scopes in force for the types that broke, then
    // every scope, operation and purpose in force; if even that breaks a recorded request,
    // the integration in force is returned as it is (nothing narrower was found).
    for round in 0..3 {
        let confined = suggestion.confined();
        let candidates: Vec<Policy> = std::iter::once(&suggestion)
            .chain(confined.as_ref())
            .map(|s| s.in_policy(current))
            .collect();
        let mut verify = Verify::new(&candidates, name);
        pass(&mut |r| verify.record(r))?;
        if let (Some(confined), Some(None)) = (confined, verify.broken.get(1))
            && verify.broken[0].is_none()
        {
            return Ok(Some(confined));
        }
        let Some((types, operations)) = verify.broken[0].take() else {
            return Ok(Some(suggestion));
        };
        match round {
            0 => suggestion.widen(in_force, &types, operations),
            1 => {
                let every: BTreeSet<ResourceType> = ResourceType::ALL.iter().copied().collect();
                suggestion.widen(in_force, &every, true);
                suggestion.integration.purposes_of_use = in_force.purposes_of_use;
                suggestion.integration.default_purpose = in_force.default_purpose;
            }
            _ => {
                suggestion.integration = in_force.clone();
                suggestion.kept_for_replay = vec!["everything in force".into()];
            }
        }
    }
    Ok(Some(suggestion))
}

/// One verification pass: each recorded request the policy in force allowed, decided under
/// each candidate; what each would break (types, and whether an operation).
struct Verify<'a> {
    candidates: &'a [Policy],
    name: &'a str,
    broken: Vec<Option<(BTreeSet<ResourceType>, bool)>>,
}

impl<'a> Verify<'a> {
    fn new(candidates: &'a [Policy], name: &'a str) -> Self {
        Self {
            candidates,
            name,
            broken: vec![None; candidates.len()],
        }
    }

    fn record(&mut self, record: &Record) {
        let Some(input) = record.replay.as_deref() else {
            return;
        };
        if record.break_glass.is_some() || super::replay::policy_allowed(record) != Some(true) {
            return;
        }
        let subject = fhirwall_policy::RecordedSubject {
            integration: self.name,
            upstream: record.upstream.as_deref().unwrap_or_default(),
            credential: record.credential_fingerprint.as_deref(),
            time: record.time,
        };
        for (policy, broken) in self.candidates.iter().zip(&mut self.broken) {
            if input.decide(policy, &subject).allowed {
                continue;
            }
            let (types, operations) = broken.get_or_insert_with(Default::default);
            let request = input.request.request();
            for r in request.with_entries() {
                types.extend(r.resource_type);
                types.extend(r.query.reached_types());
                *operations |= r.operation.is_some();
            }
        }
    }
}

#[cfg(test)]
mod tests;
