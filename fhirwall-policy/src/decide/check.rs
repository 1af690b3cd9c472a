//! Checks one classified request (and each Bundle entry) against scopes, the operations
//! allowlist and the patient constraint.
//!
//! Interactions map onto SMART v2 permissions as the SMART spec's table does
//! (<https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html#scopes-for-requesting-fhir-resources>):
//! `r` read, vread, history-instance; `s` search-type, search-system, history-type,
//! history-system; `c` create; `u` update, patch; `d` delete. Conditional create, update, patch
//! and delete also need `s`: the server runs their criteria as a search, and the outcome (201,
//! 200 or 412) tells whether anything matched.

use std::cell::OnceCell;

use fhirwall_fhir::{
    FhirRequest, Include, Interaction, PATIENT_COMPARTMENT, ResourceType, SearchParam,
};

use super::{
    Subject,
    patient::{Confined, confine},
    reason::{Confinement, Need, Reach, Why},
};
use crate::{
    decide::HeaderValue,
    grants::{Scopes, Source, satisfies},
    integration::{Integration, PatientConstraint, PatientMode},
    operation::OperationRule,
    scope::{Perm, ScopeContext},
};

/// What allowed a request (for the rule named in the decision).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Granted {
    Scope(usize),
    Operation(usize),
    /// Several requirements (a Bundle, a system-wide search): no single scope to name.
    Several,
    Capabilities,
}

/// Scopes, allowlist and patient constraint of one check.
pub(super) struct Checker<'a> {
    /// The integration's scopes, and extra ones (an exception's or a break-glass session's).
    sets: [Option<&'a Scopes>; 2],
    operations: &'a [OperationRule],
    /// `None` during break-glass.
    constraint: Option<&'a PatientConstraint>,
    patients: HeaderValue<'a>,
}

type Lazy<'a> = OnceCell<Result<Confined<'a>, Confinement>>;

impl<'a> Checker<'a> {
    pub(super) fn new(
        integration: &'a Integration,
        subject: &Subject<'a>,
        extra: Option<&'a Scopes>,
    ) -> Checker<'a> {
        Checker {
            sets: [Some(&integration.scopes), extra],
            operations: &integration.operations,
            constraint: Some(&integration.patient),
            patients: subject.patients,
        }
    }

    /// A break-glass check: the integration's scopes (if registered) plus the session's, no
    /// patient constraint.
    pub(super) fn break_glass(
        integration: Option<&'a Integration>,
        subject: &Subject<'a>,
        scopes: &'a Scopes,
    ) -> Checker<'a> {
        Checker {
            sets: [integration.map(|i| &i.scopes), Some(scopes)],
            operations: integration.map_or(&[], |i| &i.operations),
            constraint: None,
            patients: subject.patients,
        }
    }

    /// The request, or every entry of a batch or transaction (the first failing one is named
    /// by index). Entries under a patient constraint must all concern the same patient.
    pub(super) fn request(
        &self,
        req: &'a FhirRequest,
    ) -> Result<Granted, (Option<usize>, Why<'a>)> {
        if !matches!(
            req.interaction,
            Interaction::Batch | Interaction::Transaction
        ) {
            return self.one(req).map(|(g, _)| g).map_err(|why| (None, why));
        }
        let mut patient: Option<&'a str> = None;
        for (i, entry) in req.entries.iter().enumerate() {
            let (_, confined) = self.one(entry).map_err(|why| (Some(i), why))?;
            if let Some(p) = confined {
                if patient.is_some_and(|q| q != p) {
                    return Err((Some(i), Why::NotConfined(Confinement::Mixed)));
                }
                patient = Some(p);
            }
        }
        Ok(Granted::Several)
    }

    /// One request: permission, then the patient constraint. Returns the patient it is
    /// confined to when the constraint asked.
    fn one(&self, req: &'a FhirRequest) -> Result<(Granted, Option<&'a str>), Why<'a>> {
        let exempt = self.constraint.map_or(&[][..], |c| &c.exempt);
        let lazy: Lazy<'a> = OnceCell::new();
        let confined = || *lazy.get_or_init(|| confine(req, exempt));
        let granted = self.permission(req, &confined)?;
        let patient = self.constraint(req, &confined)?;
        Ok((granted, patient))
    }

    fn permission(
        &self,
        req: &'a FhirRequest,
        confined: &dyn Fn() -> Result<Confined<'a>, Confinement>,
    ) -> Result<Granted, Why<'a>> {
        let interaction = req.interaction;
        let typed = || req.resource_type.ok_or(Why::Untyped { interaction });
        let need = |t, perm, params| {
            self.need(Need::one(interaction, t, perm), params, confined)
                .map(Granted::Scope)
        };
        let granted = match interaction {
            Interaction::Capabilities => Granted::Capabilities,
            Interaction::Read | Interaction::Vread | Interaction::HistoryInstance => {
                need(typed()?, Perm::Read, None)?
            }
            Interaction::SearchType => {
                let granted = need(typed()?, Perm::Search, Some(&req.query.params[..]))?;
                self.reached(
                    req.resource_type,
                    &req.query.params,
                    &req.query.includes,
                    confined,
                )?;
                granted
            }
            Interaction::SearchSystem => {
                self.every(req, Perm::Search, Some(&req.query.params), confined)?;
                self.reached(None, &req.query.params, &req.query.includes, confined)?;
                Granted::Several
            }
            Interaction::HistoryType => need(typed()?, Perm::Search, None)?,
            Interaction::HistorySystem => {
                self.every(req, Perm::Search, None, confined)?;
                Granted::Several
            }
            Interaction::Create => self.write(req, typed()?, Perm::Create, confined)?,
            Interaction::Update | Interaction::Patch => {
                self.write(req, typed()?, Perm::Update, confined)?
            }
            Interaction::Delete => self.write(req, typed()?, Perm::Delete, confined)?,
            Interaction::Operation => self.operation(req)?,
            Interaction::Batch | Interaction::Transaction => return Err(Why::NestedBundle),
        };
        Ok(granted)
    }

    /// Create, update, patch, delete: the write permission, plus `s` on conditional criteria.
    fn write(
        &self,
        req: &'a FhirRequest,
        t: ResourceType,
        perm: Perm,
        confined: &dyn Fn() -> Result<Confined<'a>, Confinement>,
    ) -> Result<Granted, Why<'a>> {
        let granted = self.need(Need::one(req.interaction, t, perm), None, confined)?;
        if let Some(criteria) = &req.conditional {
            let need = Need::one(req.interaction, t, Perm::Search);
            self.need(need, Some(&criteria.params), confined)?;
            self.reached(Some(t), &criteria.params, &[], confined)?;
        }
        Ok(Granted::Scope(granted))
    }

    /// `perm` on every type a system-wide interaction reaches: the `_type` list, else the
    /// Patient compartment's types for `Patient/[id]/*`, else every type.
    fn every(
        &self,
        req: &'a FhirRequest,
        perm: Perm,
        params: Option<&'a [SearchParam]>,
        confined: &dyn Fn() -> Result<Confined<'a>, Confinement>,
    ) -> Result<(), Why<'a>> {
        let patient_compartment = req
            .compartment
            .as_ref()
            .is_some_and(|c| c.resource_type == ResourceType::Patient);
        let check = |t, every_type| {
            let need = Need {
                interaction: req.interaction,
                resource_type: t,
                perm,
                every_type,
            };
            self.need(need, params, confined).map(|_| ())
        };
        if !req.query.types.is_empty() {
            return req.query.types.iter().try_for_each(|t| check(*t, false));
        }
        if patient_compartment {
            return PATIENT_COMPARTMENT
                .iter()
                .try_for_each(|(t, _)| check(*t, true));
        }
        ResourceType::ALL.iter().try_for_each(|t| check(*t, true))
    }

    /// The index of the scope that grants `need`, checking granular parameters against
    /// `params` (the search's, or `None` when the interaction has none to check).
    fn need(
        &self,
        need: Need,
        params: Option<&[SearchParam]>,
        confined: &dyn Fn() -> Result<Confined<'a>, Confinement>,
    ) -> Result<usize, Why<'a>> {
        let (t, perm) = (need.resource_type, need.perm);
        let mut patient_only = None;
        for scopes in self.sets.iter().flatten() {
            match scopes.plain(t, perm) {
                Some(Source::Plain(i)) => return Ok(i),
                Some(Source::PatientOnly(i)) => patient_only = patient_only.or(Some(i)),
                None => {}
            }
        }
        if let Some(i) = patient_only {
            match confined() {
                Ok(_) => return Ok(i),
                Err(c) => return Err(Why::NotConfined(c)),
            }
        }
        let mut unmet = None;
        for scopes in self.sets.iter().flatten() {
            for (i, scope) in scopes.granular(t, perm) {
                let context_ok = scope.context != ScopeContext::Patient || confined().is_ok();
                if params.is_some_and(|ps| satisfies(scope, ps)) && context_ok {
                    return Ok(i);
                }
                unmet = unmet.or(Some((i, scope)));
            }
        }
        match (unmet, params) {
            (Some((index, scope)), None) => Err(Why::GranularUnchecked { need, index, scope }),
            (Some((index, scope)), Some(_)) => Err(Why::GranularUnmet { index, scope }),
            (None, _) => Err(Why::NoScope(need)),
        }
    }

    /// Types a search reaches beyond its own: `_include` targets and `:iterate` sources need
    /// `r`, `_revinclude` sources need `r`, `_has` and chain types need `s`. An include without
    /// a target type reaches every type its parameter can reference (`fhirwall_fhir::reference_targets`);
    /// one of an unknown parameter, or a chain that does not name its type, could reach any type
    /// and is refused.
    fn reached(
        &self,
        searched: Option<ResourceType>,
        params: &'a [SearchParam],
        includes: &'a [Include],
        confined: &dyn Fn() -> Result<Confined<'a>, Confinement>,
    ) -> Result<(), Why<'a>> {
        let reach = |via, t, perm| {
            let need = Need::one(Interaction::SearchType, t, perm);
            match self.need(need, None, confined) {
                Ok(_) => Ok(()),
                Err(_) => Err(Why::Reached {
                    via,
                    resource_type: t,
                    perm,
                }),
            }
        };
        for include in includes {
            let via = if include.reverse {
                Reach::Revinclude
            } else {
                Reach::Include
            };
            let (Some(source), Some(param)) =
                (include.source_type, include.search_param.as_deref())
            else {
                return Err(Why::Unnamed { via });
            };
            if include.reverse {
                reach(via, source, Perm::Read)?;
                continue;
            }
            // Without a target type the include returns whatever the parameter references:
            // every type it can point at must be readable (unknown parameters stay refused).
            let targets = match &include.target_type {
                Some(target) => std::slice::from_ref(target),
                None => {
                    fhirwall_fhir::reference_targets(source, param).ok_or(Why::Unnamed { via })?
                }
            };
            for target in targets {
                reach(via, *target, Perm::Read)?;
            }
            if Some(source) != searched {
                reach(via, source, Perm::Read)?;
            }
        }
        for param in params {
            if let Some(name) = ["_filter", "_query"].into_iter().find(|n| param.name == *n) {
                return Err(Why::Opaque { param: name });
            }
            for link in &param.reverse_chain {
                reach(Reach::Has, link.resource_type, Perm::Search)?;
            }
            if param.chain.is_empty() {
                continue;
            }
            let typed_links = std::iter::once(param.modifier).chain(
                param.chain[..param.chain.len() - 1]
                    .iter()
                    .map(|l| l.modifier),
            );
            for modifier in typed_links {
                let t = modifier
                    .and_then(fhirwall_fhir::Modifier::resource_type)
                    .ok_or(Why::Unnamed { via: Reach::Chain })?;
                reach(Reach::Chain, t, Perm::Search)?;
            }
        }
        Ok(())
    }

    /// Operations: on the allowlist; `$export` also needs `system/` read on every type it
    /// exports (`_type`, or every type without it).
    fn operation(&self, req: &'a FhirRequest) -> Result<Granted, Why<'a>> {
        let op = req.operation.as_ref().ok_or(Why::Untyped {
            interaction: req.interaction,
        })?;
        let index = self
            .operations
            .iter()
            .position(|rule| rule.allows(op, req.resource_type))
            .ok_or(Why::Operation { name: &op.name })?;
        if op.name == "$export" {
            // Without `_type` every type is exported (a `_typeFilter` only filters its own
            // type then), and a filter naming no R4 type cannot be read at all.
            let filtered = export_type_filters(req);
            let every_type = req.query.types.is_empty() || filtered.is_none();
            let types: Vec<ResourceType> = if every_type {
                ResourceType::ALL.to_vec()
            } else {
                req.query
                    .types
                    .iter()
                    .copied()
                    .chain(filtered.into_iter().flatten())
                    .collect()
            };
            let sets = || self.sets.iter().flatten();
            if let Some(t) = types
                .iter()
                .find(|t| !sets().any(|s| s.system(**t, Perm::Read)))
            {
                return Err(Why::Export {
                    resource_type: *t,
                    every_type,
                });
            }
        } else {
            // `_type` asks the operation for these types ($everything): each must be readable.
            // What comes back is checked in the response as well.
            for t in &req.query.types {
                let need = Need::one(Interaction::Operation, *t, Perm::Read);
                if self.need(need, None, &|| Ok(Confined::ByResponse)).is_err() {
                    return Err(Why::OperationType {
                        name: &op.name,
                        resource_type: *t,
                    });
                }
            }
        }
        Ok(Granted::Operation(index))
    }

    /// The integration's patient constraint; returns the patient a confined request concerns.
    /// A read left to the response check must still name no patient the constraint excludes.
    fn constraint(
        &self,
        req: &'a FhirRequest,
        confined: &dyn Fn() -> Result<Confined<'a>, Confinement>,
    ) -> Result<Option<&'a str>, Why<'a>> {
        let Some(constraint) = self.constraint else {
            return Ok(None);
        };
        let header = match &constraint.mode {
            PatientMode::Any => return Ok(None),
            PatientMode::Compartment => None,
            PatientMode::Header(name) => Some(name),
        };
        let (patient, named): (Option<&'a str>, &'a [String]) = match confined() {
            Ok(Confined::Patient(p)) => (Some(p), &[]),
            Ok(Confined::Exempt) => return Ok(None),
            Ok(Confined::ByResponse) => (None, &req.patient_refs),
            Err(c) => return Err(Why::NotConfined(c)),
        };
        if header.is_none() && named.len() > 1 {
            return Err(Why::NotConfined(Confinement::Mixed));
        }
        let Some(header) = header else {
            return Ok(patient);
        };
        let HeaderValue::One(list) = self.patients else {
            return Err(Why::PatientHeader {
                header: header.as_str(),
                present: self.patients != HeaderValue::Absent,
            });
        };
        let listed = |id: &str| list.split(',').any(|l| l.trim() == id);
        let others = patient
            .into_iter()
            .chain(named.iter().map(String::as_str))
            .any(|id| !listed(id));
        if others {
            return Err(Why::OtherPatient {
                header: header.as_str(),
            });
        }
        Ok(patient)
    }
}

/// The types named by `$export`'s `_typeFilter` values (`Observation?category=...`): each is
/// exported too, so each needs the same read as a `_type`
/// (<https://hl7.org/fhir/uv/bulkdata/export.html#_typefilter-experimental-query-parameter>).
/// `None` when one names no R4 type: what it exports cannot be read from the request.
fn export_type_filters(req: &FhirRequest) -> Option<Vec<ResourceType>> {
    req.query
        .params
        .iter()
        .filter(|p| p.name == "_typeFilter")
        .flat_map(|p| &p.values)
        .map(|v| ResourceType::parse(v.split('?').next().unwrap_or_default()))
        .collect()
}
