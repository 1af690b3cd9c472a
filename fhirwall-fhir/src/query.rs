//! Query strings and form bodies -> [`Query`]: search parameters with their modifiers, chains and
//! reverse chains, includes, and the result parameters
//! (<http://hl7.org/fhir/R4/search.html>).
//!
//! Decoding follows application/x-www-form-urlencoded (`+` is a space, `%XX` a byte), once.
//! Malformed escapes and invalid UTF-8 are errors rather than replacement characters, so the
//! policy never sees a different value than the server. Duplicate parameters are kept in order.

mod decode;
mod param;

use serde::Serialize;

pub(super) use self::decode::raw_pairs;
pub use self::param::comparator_prefix;
use super::{ClassifyConfig, ClassifyError, ParamSource, QueryProblem, ResourceType};

/// The parameters of one request, sorted by what they do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Query {
    /// Search (filter) parameters in request order, including chained params and `_has`.
    /// Operation parameters passed in the URL also land here.
    pub params: Vec<SearchParam>,
    /// `_include` and `_revinclude`, in order.
    pub includes: Vec<Include>,
    /// `_type` (system search, `$export`).
    pub types: Vec<ResourceType>,
    /// `_summary`.
    pub summary: Option<Summary>,
    /// `_total`.
    pub total: Option<Total>,
    /// `_elements`.
    pub elements: Vec<String>,
    /// `_count`.
    pub count: Option<u32>,
    /// `_sort`, in priority order.
    pub sort: Vec<SortKey>,
    /// Paging continuation parameters (`ClassifyConfig::paging_params`).
    pub paging: Vec<RawParam>,
    /// Presentation controls: `_format`, `_pretty`, `_contained`, `_containedType` (the last
    /// two do reach other data: see [`Query::searches_contained`]), and a `_type` on history that
    /// the server does not apply.
    pub controls: Vec<RawParam>,
}

impl Query {
    /// Whether any parameter selects data (search params, includes or `_type`).
    #[must_use]
    pub fn has_criteria(&self) -> bool {
        !self.params.is_empty()
    }

    /// Whether the search looks inside contained resources (`_contained=true|both`) or returns
    /// their containers (`_containedType=container`): what comes back is then not bounded by
    /// the searched type (<http://hl7.org/fhir/R4/search.html#contained>).
    #[must_use]
    pub fn searches_contained(&self) -> bool {
        self.controls.iter().any(|c| {
            (c.name == "_contained" && c.value != "false")
                || (c.name == "_containedType" && c.value == "container")
        })
    }

    /// Every resource type the query names beyond the searched type: `_include` and
    /// `_revinclude` sources and targets, chain type qualifiers, `_has` types and `_type`.
    /// A policy must allow reading each of them. Wildcards are not expanded: an include with
    /// `search_param: None` (`*`, `Type:*`) or without `target_type`, and a chain link without a
    /// type qualifier, can reach any type the reference allows; deny or check those explicitly.
    #[must_use]
    pub fn reached_types(&self) -> Vec<ResourceType> {
        let mut out: Vec<ResourceType> = self.types.clone();
        for include in &self.includes {
            out.extend(include.source_type);
            out.extend(include.target_type);
        }
        for param in &self.params {
            out.extend(param.reverse_chain.iter().map(|link| link.resource_type));
            out.extend(param.modifier.and_then(Modifier::resource_type));
            out.extend(
                param
                    .chain
                    .iter()
                    .filter_map(|l| l.modifier.and_then(Modifier::resource_type)),
            );
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// One search parameter: `name[:modifier][.chain...]=value[,value...]`, optionally behind
/// reverse chains (`_has:Type:param:...`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchParam {
    /// `_has` links, outermost first. When non-empty, `name`, `modifier` and `chain` apply to the
    /// innermost `_has` type, not to the searched type.
    pub reverse_chain: Vec<ReverseChainLink>,
    /// The parameter name (first chain link): `subject` in `subject:Patient.name=x`.
    pub name: String,
    /// Modifier of the first link: `Patient` in `subject:Patient.name`, `exact` in `name:exact`.
    pub modifier: Option<Modifier>,
    /// Further chain links: `[name]` in `subject:Patient.name`.
    pub chain: Vec<ChainLink>,
    /// Values (OR-ed), split on `,` with `\,` unescaped to `,`; other escapes (`\$`, `\|`, `\\`)
    /// are kept for the type-specific parser.
    pub values: Vec<String>,
}

/// A link of a forward chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainLink {
    /// Parameter name on the previous link's target.
    pub name: String,
    /// Type qualifier (intermediate links) or value modifier (last link).
    pub modifier: Option<Modifier>,
}

/// A `_has:Type:param` link: resources of `resource_type` whose `reference_param` points back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReverseChainLink {
    /// The type searched in reverse (read by the server to answer).
    pub resource_type: ResourceType,
    /// Its reference parameter that points at the outer resource.
    pub reference_param: String,
}

/// Search modifiers R4 defines (<http://hl7.org/fhir/R4/search.html#modifiers>), plus a
/// resource type. Unknown modifiers are refused: R4 says servers SHALL reject them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Modifier {
    Missing,
    Exact,
    Contains,
    Text,
    Not,
    Above,
    Below,
    In,
    NotIn,
    Identifier,
    OfType,
    /// `:[type]` on a reference parameter.
    Type(ResourceType),
}

impl Modifier {
    /// Parses a modifier token.
    #[must_use]
    pub fn parse(token: &str) -> Option<Modifier> {
        Some(match token {
            "missing" => Modifier::Missing,
            "exact" => Modifier::Exact,
            "contains" => Modifier::Contains,
            "text" => Modifier::Text,
            "not" => Modifier::Not,
            "above" => Modifier::Above,
            "below" => Modifier::Below,
            "in" => Modifier::In,
            "not-in" => Modifier::NotIn,
            "identifier" => Modifier::Identifier,
            "of-type" => Modifier::OfType,
            _ => Modifier::Type(ResourceType::parse(token)?),
        })
    }

    /// The modifier token.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Modifier::Missing => "missing",
            Modifier::Exact => "exact",
            Modifier::Contains => "contains",
            Modifier::Text => "text",
            Modifier::Not => "not",
            Modifier::Above => "above",
            Modifier::Below => "below",
            Modifier::In => "in",
            Modifier::NotIn => "not-in",
            Modifier::Identifier => "identifier",
            Modifier::OfType => "of-type",
            Modifier::Type(t) => t.as_str(),
        }
    }

    /// The type of a `:[type]` modifier.
    #[must_use]
    pub const fn resource_type(self) -> Option<ResourceType> {
        match self {
            Modifier::Type(t) => Some(t),
            _ => None,
        }
    }
}

impl Serialize for Modifier {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// One `_include` or `_revinclude` (<http://hl7.org/fhir/R4/search.html#include>).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Include {
    /// `_revinclude` rather than `_include`.
    pub reverse: bool,
    /// `:iterate` (or its R3 name `:recurse`).
    pub iterate: bool,
    /// The type whose reference parameter is followed; `None` for `*`.
    pub source_type: Option<ResourceType>,
    /// The reference search parameter; `None` for `*` or `Type:*`.
    pub search_param: Option<String>,
    /// The target type qualifier (`Observation:subject:Patient`).
    pub target_type: Option<ResourceType>,
}

/// `_summary` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Summary {
    True,
    False,
    Text,
    Data,
    Count,
}

/// `_total` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Total {
    None,
    Estimate,
    Accurate,
}

/// One `_sort` key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SortKey {
    /// Parameter sorted by.
    pub name: String,
    /// `-name`.
    pub descending: bool,
}

/// A decoded `name=value` pair kept as-is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RawParam {
    pub name: String,
    pub value: String,
}

/// Parses decoded pairs (from any sources, in order) into a [`Query`].
pub(super) fn build(
    pairs: Vec<(ParamSource, usize, RawParam)>,
    config: &ClassifyConfig,
) -> Result<Query, ClassifyError> {
    let mut query = Query::default();
    for (source_kind, position, pair) in pairs {
        param::add(&mut query, pair, config).map_err(|problem| ClassifyError::Query {
            source_kind,
            position,
            problem,
        })?;
    }
    Ok(query)
}

/// Parses one query string (URL, form body or If-None-Exist) alone.
pub(super) fn parse(
    raw: &[u8],
    source: ParamSource,
    config: &ClassifyConfig,
) -> Result<Query, ClassifyError> {
    let mut pairs = Vec::new();
    raw_pairs(raw, source, config.max_params, &mut pairs)?;
    build(pairs, config)
}

/// Problem type for parameter-level errors.
type ParamResult<T> = Result<T, QueryProblem>;
