//! One decoded `name=value` pair -> its place in a [`Query`].

use super::{
    ChainLink, Include, Modifier, ParamResult, Query, RawParam, ReverseChainLink, SearchParam,
    SortKey, Summary, Total,
};
use crate::{ClassifyConfig, QueryProblem, ResourceType};

/// Files `pair` into `query`.
pub(super) fn add(query: &mut Query, pair: RawParam, config: &ClassifyConfig) -> ParamResult<()> {
    let RawParam { name, value } = pair;
    if name.is_empty() {
        return Err(QueryProblem::EmptyName);
    }
    if config.paging_params.contains(&name) {
        query.paging.push(RawParam { name, value });
        return Ok(());
    }
    let (base, modifier) = match name.split_once(':') {
        Some((base, modifier)) => (base, Some(modifier)),
        None => (name.as_str(), None),
    };
    match base {
        "_include" | "_revinclude" => add_includes(query, base == "_revinclude", modifier, &value),
        "_has" => {
            let param = parse_has(&name, value_list(&value))?;
            query.params.push(param);
            Ok(())
        }
        "_format" | "_pretty" | "_contained" | "_containedType" => {
            no_modifier(modifier)?;
            let known = match base {
                "_contained" => matches!(value.as_str(), "true" | "false" | "both"),
                "_containedType" => matches!(value.as_str(), "container" | "contained"),
                "_pretty" => matches!(value.as_str(), "true" | "false"),
                _ => true,
            };
            if !known {
                return Err(QueryProblem::InvalidValue);
            }
            query.controls.push(RawParam { name, value });
            Ok(())
        }
        "_type" | "_summary" | "_total" | "_count" | "_elements" | "_sort" => {
            no_modifier(modifier)?;
            add_result_param(query, base, &value)
        }
        _ if base.starts_with('_')
            && !R4_PARAMETERS.contains(&base)
            && !config.extra_params.iter().any(|p| p == base) =>
        {
            Err(QueryProblem::UnknownParameter)
        }
        _ => {
            let (name, modifier, chain) = parse_chain(&name)?;
            let values = value_list(&value);
            query.params.push(SearchParam {
                reverse_chain: Vec::new(),
                name,
                modifier,
                chain,
                values,
            });
            Ok(())
        }
    }
}

/// The parameters starting with `_` that R4 defines and that are not read above: the common
/// search parameters (<http://hl7.org/fhir/R4/search.html#all>), history's `_since` and `_at`
/// (<http://hl7.org/fhir/R4/http.html#history>), and the Bulk Data kick-off parameters
/// (<https://hl7.org/fhir/uv/bulkdata/export.html#query-parameters>). Case-sensitive, as
/// servers match them.
const R4_PARAMETERS: &[&str] = &[
    "_id",
    "_lastUpdated",
    "_tag",
    "_profile",
    "_security",
    "_text",
    "_content",
    "_list",
    "_query",
    "_filter",
    "_source",
    "_since",
    "_at",
    "_outputFormat",
    "_typeFilter",
];

fn no_modifier(modifier: Option<&str>) -> ParamResult<()> {
    modifier.map_or(Ok(()), |_| Err(QueryProblem::ModifierNotAllowed))
}

/// `_type`, `_summary`, `_total`, `_count`, `_elements`, `_sort`.
fn add_result_param(query: &mut Query, base: &str, value: &str) -> ParamResult<()> {
    match base {
        "_type" => {
            for code in value_list(value) {
                query
                    .types
                    .push(ResourceType::parse(&code).ok_or(QueryProblem::UnknownResourceType)?);
            }
        }
        "_summary" => set_once(&mut query.summary, parse_summary(value)?)?,
        "_total" => set_once(&mut query.total, parse_total(value)?)?,
        "_count" => {
            let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
            let count = value
                .parse()
                .ok()
                .filter(|_| digits)
                .ok_or(QueryProblem::InvalidCount)?;
            set_once(&mut query.count, count)?;
        }
        "_elements" => query.elements.extend(value_list(value)),
        _ => {
            for key in value_list(value) {
                let (name, descending) = match key.strip_prefix('-') {
                    Some(name) => (name.to_owned(), true),
                    None => (key, false),
                };
                check_name(&name)?;
                query.sort.push(SortKey { name, descending });
            }
        }
    }
    Ok(())
}

/// Result parameters that may appear once: a second one is ambiguous (which one wins differs
/// between servers), so it is refused.
fn set_once<T>(slot: &mut Option<T>, value: T) -> ParamResult<()> {
    if slot.is_some() {
        return Err(QueryProblem::Repeated);
    }
    *slot = Some(value);
    Ok(())
}

fn parse_summary(value: &str) -> ParamResult<Summary> {
    Ok(match value {
        "true" => Summary::True,
        "false" => Summary::False,
        "text" => Summary::Text,
        "data" => Summary::Data,
        "count" => Summary::Count,
        _ => return Err(QueryProblem::InvalidValue),
    })
}

fn parse_total(value: &str) -> ParamResult<Total> {
    Ok(match value {
        "none" => Total::None,
        "estimate" => Total::Estimate,
        "accurate" => Total::Accurate,
        _ => return Err(QueryProblem::InvalidValue),
    })
}

/// `_include[:iterate]=Type:param[:Target]`, `=Type:*` or `=*`; comma-separated lists too.
fn add_includes(
    query: &mut Query,
    reverse: bool,
    modifier: Option<&str>,
    value: &str,
) -> ParamResult<()> {
    let iterate = match modifier {
        None => false,
        Some("iterate" | "recurse") => true,
        Some(_) => return Err(QueryProblem::UnknownModifier),
    };
    for item in value_list(value) {
        let parts: Vec<&str> = item.split(':').collect();
        let (source_type, search_param, target_type) = match parts.as_slice() {
            ["*"] => (None, None, None),
            [source, "*"] => (Some(parse_type(source)?), None, None),
            [source, param] => (Some(parse_type(source)?), Some(include_param(param)?), None),
            [source, param, target] => (
                Some(parse_type(source)?),
                Some(include_param(param)?),
                Some(parse_type(target)?),
            ),
            _ => return Err(QueryProblem::InvalidInclude),
        };
        query.includes.push(Include {
            reverse,
            iterate,
            source_type,
            search_param,
            target_type,
        });
    }
    Ok(())
}

fn include_param(param: &str) -> ParamResult<String> {
    check_name(param).map_err(|_| QueryProblem::InvalidInclude)?;
    Ok(param.to_owned())
}

fn parse_type(code: &str) -> ParamResult<ResourceType> {
    ResourceType::parse(code).ok_or(QueryProblem::UnknownResourceType)
}

/// `_has:Type:param:(_has:...|name[:modifier][.chain])` (<http://hl7.org/fhir/R4/search.html#has>).
fn parse_has(name: &str, values: Vec<String>) -> ParamResult<SearchParam> {
    let mut reverse_chain = Vec::new();
    let mut rest = name;
    while let Some(after) = rest.strip_prefix("_has:") {
        let mut parts = after.splitn(3, ':');
        let (Some(resource_type), Some(reference_param), Some(tail)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(QueryProblem::InvalidHas);
        };
        let resource_type = parse_type(resource_type)?;
        check_name(reference_param).map_err(|_| QueryProblem::InvalidHas)?;
        reverse_chain.push(ReverseChainLink {
            resource_type,
            reference_param: reference_param.to_owned(),
        });
        rest = tail;
    }
    if rest == "_has" || rest.is_empty() {
        return Err(QueryProblem::InvalidHas);
    }
    let (name, modifier, chain) = parse_chain(rest)?;
    Ok(SearchParam {
        reverse_chain,
        name,
        modifier,
        chain,
        values,
    })
}

/// `name[:modifier](.name[:modifier])*`; intermediate links may only carry a type.
fn parse_chain(full: &str) -> ParamResult<(String, Option<Modifier>, Vec<ChainLink>)> {
    let mut links = Vec::new();
    let parts: Vec<&str> = full.split('.').collect();
    // `split` yields at least one part, so this cannot underflow.
    let last = parts.len().saturating_sub(1);
    for (i, part) in parts.iter().enumerate() {
        let (name, modifier) = match part.split_once(':') {
            Some((name, modifier)) => (name, Some(modifier)),
            None => (*part, None),
        };
        check_name(name)?;
        let modifier = modifier
            .map(|m| Modifier::parse(m).ok_or_else(|| unknown_modifier(m)))
            .transpose()?;
        if i < last && modifier.is_some_and(|m| m.resource_type().is_none()) {
            return Err(QueryProblem::ChainModifier);
        }
        links.push(ChainLink {
            name: name.to_owned(),
            modifier,
        });
    }
    let mut links = links.into_iter();
    // `split` always yields at least one part, so there is a first link.
    let first = links.next().ok_or(QueryProblem::EmptyName)?;
    Ok((first.name, first.modifier, links.collect()))
}

/// A modifier that looks like a type name but is not one (`subject:patient`) is an unknown
/// type; anything else an unknown modifier.
fn unknown_modifier(token: &str) -> QueryProblem {
    let type_like = token.starts_with(|c: char| c.is_ascii_uppercase())
        || ResourceType::ALL
            .iter()
            .any(|t| t.as_str().eq_ignore_ascii_case(token));
    if type_like {
        QueryProblem::UnknownResourceType
    } else {
        QueryProblem::UnknownModifier
    }
}

/// Parameter names: `[A-Za-z0-9_-]+` (search parameter codes, `_id`, `_lastUpdated`, ...).
fn check_name(name: &str) -> ParamResult<()> {
    if name.is_empty() {
        return Err(QueryProblem::EmptyName);
    }
    if name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Ok(())
    } else {
        Err(QueryProblem::InvalidName)
    }
}

/// Splits a value on unescaped commas; `\,` becomes `,`, other `\x` pairs stay as they are
/// (<http://hl7.org/fhir/R4/search.html#escaping>).
pub(super) fn value_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(',') => current.push(','),
                Some(next) => {
                    current.push('\\');
                    current.push(next);
                }
                None => current.push('\\'),
            },
            ',' => out.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    out.push(current);
    out
}

/// Splits a comparator prefix (`eq ne gt lt ge le sa eb ap`,
/// <http://hl7.org/fhir/R4/search.html#prefix>) off a number, date or quantity value. Only a
/// prefix followed by a digit or `-` counts, so tokens like `needle` are left alone; which
/// parameters are ordered types is the policy's knowledge, not the classifier's.
#[must_use]
pub fn comparator_prefix(value: &str) -> Option<(&str, &str)> {
    let (prefix, rest) = value.split_at_checked(2)?;
    let known = matches!(
        prefix,
        "eq" | "ne" | "gt" | "lt" | "ge" | "le" | "sa" | "eb" | "ap"
    );
    let numeric = rest.starts_with(|c: char| c.is_ascii_digit() || c == '-');
    (known && numeric).then_some((prefix, rest))
}
