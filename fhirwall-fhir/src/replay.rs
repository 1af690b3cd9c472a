//! A classified request as the audit store keeps it for replay: what a policy decision reads,
//! compact, and without values that could identify a patient other than by reference.
//!
//! [`Recorded::of`] keeps the interaction, types, ids, operation, the names, modifiers and
//! chains of every parameter, includes, the patients the request names (the audit store holds
//! those anyway, never logs) and patch effects. Of parameter values it keeps only those a
//! policy can decide on without reading PHI: the values of coded parameters a granular scope
//! can constrain ([`CODED`]), and patient references in compartment parameters (they confine
//! a request to one patient). Every other value becomes [`REDACTED`]: a name, a birth date, an
//! MRN never reach the record. [`Recorded::request`] turns it back into a [`FhirRequest`] that
//! a policy decides the same way as the original, as long as its granular scopes constrain
//! coded parameters only.

use serde::{Deserialize, Serialize};

use super::{
    Compartment, FhirMethod, FhirRequest, Interaction, Operation, OperationLevel, ResourceType,
    patch::{Change, ChangeKind, Element, PatchEffect},
    patient_compartment_params,
    query::{ChainLink, Include, Modifier, Query, RawParam, ReverseChainLink, SearchParam},
};

/// Search parameters whose values are codes, not facts about a person, and which granular
/// SMART scopes constrain (`?category=...`, `?code=...`): kept for replay.
pub const CODED: [&str; 12] = [
    "category",
    "code",
    "type",
    "status",
    "class",
    "intent",
    "clinical-status",
    "verification-status",
    "_tag",
    "_profile",
    "_security",
    "_type",
];

/// What replaces every other parameter value.
pub const REDACTED: &str = "~";

/// One recorded request; short keys and no empty fields, since one is kept per request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    #[serde(rename = "i")]
    interaction: Interaction,
    #[serde(rename = "m")]
    method: FhirMethod,
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    resource_type: Option<ResourceType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(rename = "vid", default, skip_serializing_if = "Option::is_none")]
    version_id: Option<String>,
    #[serde(rename = "tn", default, skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
    /// `Type/id`.
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    compartment: Option<(ResourceType, String)>,
    #[serde(rename = "op", default, skip_serializing_if = "Option::is_none")]
    operation: Option<(String, OperationLevel)>,
    #[serde(rename = "q", default, skip_serializing_if = "RecordedQuery::is_empty")]
    query: RecordedQuery,
    #[serde(rename = "if", default, skip_serializing_if = "Option::is_none")]
    conditional: Option<RecordedQuery>,
    #[serde(rename = "e", default, skip_serializing_if = "Vec::is_empty")]
    entries: Vec<Recorded>,
    #[serde(rename = "p", default, skip_serializing_if = "Vec::is_empty")]
    patients: Vec<String>,
    #[serde(rename = "pa", default, skip_serializing_if = "Option::is_none")]
    patch: Option<RecordedPatch>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct RecordedQuery {
    #[serde(rename = "s", default, skip_serializing_if = "Vec::is_empty")]
    params: Vec<RecordedParam>,
    #[serde(rename = "inc", default, skip_serializing_if = "Vec::is_empty")]
    includes: Vec<RecordedInclude>,
    #[serde(rename = "ty", default, skip_serializing_if = "Vec::is_empty")]
    types: Vec<ResourceType>,
    /// A paging continuation (its token is not kept).
    #[serde(rename = "pg", default, skip_serializing_if = "std::ops::Not::not")]
    paging: bool,
    /// `_contained` and `_containedType`, which reach other data.
    #[serde(rename = "ctl", default, skip_serializing_if = "Vec::is_empty")]
    contained: Vec<(String, String)>,
}

/// `(reverse, iterate, source type, search parameter, target type)` of an `_include` or
/// `_revinclude`.
type RecordedInclude = (
    bool,
    bool,
    Option<ResourceType>,
    Option<String>,
    Option<ResourceType>,
);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct RecordedParam {
    #[serde(rename = "n")]
    name: String,
    #[serde(rename = "mo", default, skip_serializing_if = "Option::is_none")]
    modifier: Option<String>,
    /// `(name, modifier)` of each further chain link.
    #[serde(rename = "ch", default, skip_serializing_if = "Vec::is_empty")]
    chain: Vec<(String, Option<String>)>,
    /// `(type, reference parameter)` of each `_has` link.
    #[serde(rename = "has", default, skip_serializing_if = "Vec::is_empty")]
    reverse_chain: Vec<(ResourceType, String)>,
    #[serde(rename = "v", default, skip_serializing_if = "Vec::is_empty")]
    values: Vec<String>,
}

/// `(element or None for the whole resource, kind)` per change, and the references written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct RecordedPatch {
    changes: Vec<(Option<String>, u8)>,
    references: Vec<String>,
}

impl Recorded {
    /// The request as kept for replay.
    #[must_use]
    pub fn of(request: &FhirRequest) -> Self {
        let t = request.resource_type;
        Self {
            interaction: request.interaction,
            method: request.method,
            resource_type: t,
            id: request.id.clone(),
            version_id: request.version_id.clone(),
            tenant: request.tenant.clone(),
            compartment: request
                .compartment
                .as_ref()
                .map(|c| (c.resource_type, c.id.clone())),
            operation: request
                .operation
                .as_ref()
                .map(|o| (o.name.clone(), o.level)),
            query: RecordedQuery::of(&request.query, t),
            conditional: request
                .conditional
                .as_ref()
                .map(|q| RecordedQuery::of(q, t)),
            entries: request.entries.iter().map(Recorded::of).collect(),
            patients: request.patient_refs.clone(),
            patch: request.patch.as_ref().map(RecordedPatch::of),
        }
    }

    /// The request again, for a policy to decide on.
    #[must_use]
    pub fn request(&self) -> FhirRequest {
        FhirRequest {
            interaction: self.interaction,
            method: self.method,
            tenant: self.tenant.clone(),
            resource_type: self.resource_type,
            id: self.id.clone(),
            version_id: self.version_id.clone(),
            compartment: self
                .compartment
                .as_ref()
                .map(|(resource_type, id)| Compartment {
                    resource_type: *resource_type,
                    id: id.clone(),
                }),
            operation: self.operation.as_ref().map(|(name, level)| Operation {
                name: name.clone(),
                level: *level,
            }),
            query: self.query.query(),
            conditional: self.conditional.as_ref().map(RecordedQuery::query),
            entries: self.entries.iter().map(Recorded::request).collect(),
            patient_refs: self.patients.clone(),
            patch: self.patch.as_ref().map(RecordedPatch::effect),
            stripped_headers: Vec::new(),
        }
    }
}

impl RecordedQuery {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    fn of(query: &Query, t: Option<ResourceType>) -> Self {
        Self {
            params: query
                .params
                .iter()
                .map(|p| RecordedParam::of(p, t))
                .collect(),
            includes: query
                .includes
                .iter()
                .map(|i| {
                    (
                        i.reverse,
                        i.iterate,
                        i.source_type,
                        i.search_param.clone(),
                        i.target_type,
                    )
                })
                .collect(),
            types: query.types.clone(),
            paging: !query.paging.is_empty(),
            contained: query
                .controls
                .iter()
                .filter(|c| c.name == "_contained" || c.name == "_containedType")
                .map(|c| (c.name.clone(), c.value.clone()))
                .collect(),
        }
    }

    fn query(&self) -> Query {
        Query {
            params: self.params.iter().map(RecordedParam::param).collect(),
            includes: self
                .includes
                .iter()
                .map(|(reverse, iterate, source, param, target)| Include {
                    reverse: *reverse,
                    iterate: *iterate,
                    source_type: *source,
                    search_param: param.clone(),
                    target_type: *target,
                })
                .collect(),
            types: self.types.clone(),
            paging: if self.paging {
                vec![RawParam {
                    name: "_page".into(),
                    value: REDACTED.into(),
                }]
            } else {
                Vec::new()
            },
            controls: self
                .contained
                .iter()
                .map(|(name, value)| RawParam {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            ..Query::default()
        }
    }
}

impl RecordedParam {
    fn of(param: &SearchParam, t: Option<ResourceType>) -> Self {
        let keep = keeps_values(param, t);
        Self {
            name: param.name.clone(),
            modifier: param.modifier.map(|m| m.as_str().to_owned()),
            chain: param
                .chain
                .iter()
                .map(|l| (l.name.clone(), l.modifier.map(|m| m.as_str().to_owned())))
                .collect(),
            reverse_chain: param
                .reverse_chain
                .iter()
                .map(|l| (l.resource_type, l.reference_param.clone()))
                .collect(),
            values: param
                .values
                .iter()
                .map(|v| kept_value(param, v, keep))
                .collect(),
        }
    }

    fn param(&self) -> SearchParam {
        // Written by `of` from a parsed modifier: it parses again.
        let modifier = |m: &Option<String>| m.as_deref().and_then(Modifier::parse);
        SearchParam {
            reverse_chain: self
                .reverse_chain
                .iter()
                .map(|(resource_type, reference_param)| ReverseChainLink {
                    resource_type: *resource_type,
                    reference_param: reference_param.clone(),
                })
                .collect(),
            name: self.name.clone(),
            modifier: modifier(&self.modifier),
            chain: self
                .chain
                .iter()
                .map(|(name, m)| ChainLink {
                    name: name.clone(),
                    modifier: modifier(m),
                })
                .collect(),
            values: self.values.clone(),
        }
    }
}

/// A value as kept: whole, redacted, or for `$export`'s `_typeFilter` (`Type?criteria`) its
/// type alone, which is what a policy reads of it.
fn kept_value(param: &SearchParam, value: &str, keep: bool) -> String {
    if keep {
        return value.to_owned();
    }
    if param.name == "_typeFilter"
        && let Some((t, _)) = value.split_once('?')
    {
        return format!("{t}?{REDACTED}");
    }
    REDACTED.to_owned()
}

/// Whether a parameter's values are kept: a coded parameter, or a patient reference that
/// confines the request (a compartment parameter of the type, `patient`, a Patient `_id`).
fn keeps_values(param: &SearchParam, t: Option<ResourceType>) -> bool {
    if !param.reverse_chain.is_empty() || !param.chain.is_empty() {
        return false;
    }
    let typed = param.modifier == Some(Modifier::Type(ResourceType::Patient));
    if param.modifier.is_some() && !typed {
        return false;
    }
    if CODED.contains(&param.name.as_str()) {
        return true;
    }
    match t {
        Some(ResourceType::Patient) => param.name == "_id",
        Some(t) => {
            param.name == "patient"
                || patient_compartment_params(t)
                    .is_some_and(|links| links.contains(&param.name.as_str()))
        }
        None => false,
    }
}

impl RecordedPatch {
    fn of(patch: &PatchEffect) -> Self {
        Self {
            changes: patch
                .changes
                .iter()
                .map(|c| {
                    let element = match &c.element {
                        Element::Named(name) => Some(name.clone()),
                        Element::Whole => None,
                    };
                    let kind = match c.kind {
                        ChangeKind::Set => 0,
                        ChangeKind::SetUnknown => 1,
                        ChangeKind::Remove => 2,
                        ChangeKind::Reorder => 3,
                    };
                    (element, kind)
                })
                .collect(),
            references: patch.references.clone(),
        }
    }

    fn effect(&self) -> PatchEffect {
        PatchEffect {
            changes: self
                .changes
                .iter()
                .map(|(element, kind)| Change {
                    element: element.clone().map_or(Element::Whole, Element::Named),
                    kind: match kind {
                        0 => ChangeKind::Set,
                        2 => ChangeKind::Remove,
                        3 => ChangeKind::Reorder,
                        // Unknown is what a change read from an unexpected record is.
                        _ => ChangeKind::SetUnknown,
                    },
                })
                .collect(),
            references: self.references.clone(),
        }
    }
}
