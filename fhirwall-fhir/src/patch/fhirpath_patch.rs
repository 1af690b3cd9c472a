//! FHIRPath Patch (<http://hl7.org/fhir/R4/fhirpatch.html>): a `Parameters` resource with one
//! `operation` parameter per change, each made of parts.
//!
//! The parts each type takes follow the spec's table exactly (`index` for insert, `source` and
//! `destination` for move); every one of them is required and no other is allowed, each at most
//! once. Values in `type`, `path`, `name` and the integer parts must be the one typed value the
//! Parameters encoding gives them. Integers may be digits in a string as well as JSON numbers,
//! since converters from XML (where every value is an attribute string) produce that.

use serde_json::{Map, Value};

use super::{
    ChangeKind, Effect, Element, OperationProblem, PartName, PatchEffect, PatchError,
    fhirpath_path::{self, PathReach},
};

type Object = Map<String, Value>;

/// The operation types of the spec's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatchType {
    Add,
    Insert,
    Delete,
    Replace,
    Move,
}

impl PatchType {
    fn parse(code: &str) -> Option<Self> {
        Some(match code {
            "add" => Self::Add,
            "insert" => Self::Insert,
            "delete" => Self::Delete,
            "replace" => Self::Replace,
            "move" => Self::Move,
            _ => return None,
        })
    }

    /// The parts the type takes besides `type` and `path`; all of them are required.
    fn parts(self) -> &'static [PartName] {
        match self {
            Self::Add => &[PartName::Name, PartName::Value],
            Self::Insert => &[PartName::Value, PartName::Index],
            Self::Delete => &[],
            Self::Replace => &[PartName::Value],
            Self::Move => &[PartName::Source, PartName::Destination],
        }
    }
}

pub(super) fn read(patch: &Value, resource_type: &str) -> Result<PatchEffect, PatchError> {
    let members = patch
        .as_object()
        .filter(|members| members.get("resourceType").and_then(Value::as_str) == Some("Parameters"))
        .ok_or(PatchError::NotParameters {})?;
    let known = |key: &str| matches!(key, "resourceType" | "id" | "meta" | "parameter");
    if !members.keys().all(|key| known(key)) {
        return Err(PatchError::ParametersMember {});
    }
    let parameters = members
        .get("parameter")
        .and_then(list_items)
        .ok_or(PatchError::ParameterList {})?;
    let mut effect = Effect::default();
    for (index, parameter) in parameters.iter().enumerate() {
        read_operation(parameter, resource_type, &mut effect)
            .map_err(|problem| PatchError::Operation { index, problem })?;
    }
    Ok(effect.finish())
}

fn read_operation(
    parameter: &Value,
    resource_type: &str,
    effect: &mut Effect,
) -> Result<(), OperationProblem> {
    let parts = Parts::collect(parameter)?;
    let kind = PatchType::parse(parts.text(PartName::Type, "valueCode")?)
        .ok_or(OperationProblem::UnknownType)?;
    parts.check_allowed(kind)?;
    let reach = fhirpath_path::read(parts.text(PartName::Path, "valueString")?, resource_type)?;
    match kind {
        PatchType::Add => read_add(&parts, &reach, effect),
        PatchType::Insert | PatchType::Replace => {
            if kind == PatchType::Insert {
                parts.integer(PartName::Index)?;
            }
            let element = first_element(&reach)?;
            parts.value(reach.at_reference, effect)?;
            effect.change(element, ChangeKind::Set);
            Ok(())
        }
        PatchType::Delete => {
            effect.change(first_element(&reach)?, ChangeKind::Remove);
            Ok(())
        }
        PatchType::Move => {
            parts.integer(PartName::Source)?;
            parts.integer(PartName::Destination)?;
            effect.change(first_element(&reach)?, ChangeKind::Reorder);
            Ok(())
        }
    }
}

/// `add` writes its value as child `name` of what `path` selects, so a path that is just the
/// type adds top-level element `name`, and a `name` of `reference` makes a text value a
/// reference (as does a path ending in `.reference`, which only over-approximates).
fn read_add(
    parts: &Parts<'_>,
    reach: &PathReach<'_>,
    effect: &mut Effect,
) -> Result<(), OperationProblem> {
    let name = element_name(parts.text(PartName::Name, "valueString")?)
        .ok_or(OperationProblem::BadName)?;
    let element = Element::from_key(reach.first.unwrap_or(name));
    parts.value(reach.at_reference || name == "reference", effect)?;
    effect.change(element, ChangeKind::Set);
    Ok(())
}

/// Only `add` may name the whole resource; the other types act on what the path selects.
fn first_element(reach: &PathReach<'_>) -> Result<Element, OperationProblem> {
    reach
        .first
        .map(Element::from_key)
        .ok_or(OperationProblem::PathIsType)
}

/// An element name as `add` and nested value parts give it: a FHIRPath identifier, optionally
/// with the `[x]` of a choice element, which servers strip before appending the value's type.
fn element_name(name: &str) -> Option<&str> {
    let base = name.strip_suffix("[x]").unwrap_or(name);
    let mut bytes = base.bytes();
    let first = bytes.next()?;
    let valid = (first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    valid.then_some(base)
}

/// The items of a list FHIR JSON writes as an array; one object counts as a list of one, since
/// a converter from XML (where a single repeat has no list marker) may produce that.
fn list_items(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(items) => Some(items),
        Value::Object(_) => Some(std::slice::from_ref(value)),
        _ => None,
    }
}

/// The parts of one `operation` parameter, by name.
struct Parts<'a>(Vec<(PartName, &'a Object)>);

impl<'a> Parts<'a> {
    fn collect(parameter: &'a Value) -> Result<Self, OperationProblem> {
        let members = parameter.as_object().ok_or(OperationProblem::NotAnObject)?;
        if members.get("name").and_then(Value::as_str) != Some("operation") {
            return Err(OperationProblem::NotNamedOperation);
        }
        if !members.keys().all(|key| key == "name" || key == "part") {
            return Err(OperationProblem::ParameterMember);
        }
        let list = members
            .get("part")
            .and_then(list_items)
            .ok_or(OperationProblem::PartList)?;
        let mut parts = Vec::with_capacity(list.len());
        for part in list {
            let part = part.as_object().ok_or(OperationProblem::UnnamedPart)?;
            let name = part
                .get("name")
                .and_then(Value::as_str)
                .ok_or(OperationProblem::UnnamedPart)?;
            let name = PartName::parse(name).ok_or(OperationProblem::UnknownPart)?;
            if parts.iter().any(|(seen, _)| *seen == name) {
                return Err(OperationProblem::DuplicatePart { part: name });
            }
            parts.push((name, part));
        }
        Ok(Self(parts))
    }

    fn get(&self, part: PartName) -> Option<&'a Object> {
        self.0
            .iter()
            .find(|(name, _)| *name == part)
            .map(|(_, object)| *object)
    }

    fn require(&self, part: PartName) -> Result<&'a Object, OperationProblem> {
        self.get(part).ok_or(OperationProblem::MissingPart { part })
    }

    fn check_allowed(&self, kind: PatchType) -> Result<(), OperationProblem> {
        let takes = |part: PartName| {
            matches!(part, PartName::Type | PartName::Path) || kind.parts().contains(&part)
        };
        if let Some((part, _)) = self.0.iter().find(|(part, _)| !takes(*part)) {
            return Err(OperationProblem::PartNotAllowed { part: *part });
        }
        for part in [PartName::Path].iter().chain(kind.parts()) {
            self.require(*part)?;
        }
        Ok(())
    }

    /// The one `key` value of `part`, which must be text.
    fn text(&self, part: PartName, key: &str) -> Result<&'a str, OperationProblem> {
        let object = self.require(part)?;
        only_member(object, key)
            .and_then(Value::as_str)
            .ok_or(OperationProblem::PartValue { part })
    }

    /// The one `valueInteger` of `part`: a FHIR integer (32-bit) that is not negative, as a JSON
    /// number or as digits without leading zeros (<http://hl7.org/fhir/R4/datatypes.html#integer>).
    fn integer(&self, part: PartName) -> Result<u32, OperationProblem> {
        let object = self.require(part)?;
        let number = match only_member(object, "valueInteger") {
            Some(Value::Number(number)) => number.as_u64(),
            Some(Value::String(digits)) => parse_digits(digits),
            _ => None,
        };
        number
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| i32::try_from(*n).is_ok())
            .ok_or(OperationProblem::PartValue { part })
    }

    /// Walks the `value` part, collecting references; `at_reference` says the value itself is
    /// written at a `reference`. Iterative: nested parts can be as deep as the body allows.
    fn value(&self, at_reference: bool, effect: &mut Effect) -> Result<(), OperationProblem> {
        let mut stack = vec![(self.require(PartName::Value)?, at_reference)];
        while let Some((part, at_reference)) = stack.pop() {
            match value_content(part)? {
                Content::Typed(value) => effect.references_in(value, at_reference)?,
                Content::Parts(children) => {
                    for child in children.iter().rev() {
                        let child = child.as_object().ok_or(OperationProblem::UnnamedPart)?;
                        let name = child
                            .get("name")
                            .and_then(Value::as_str)
                            .ok_or(OperationProblem::UnnamedPart)?;
                        let name = element_name(name).ok_or(OperationProblem::BadName)?;
                        stack.push((child, name == "reference"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// `object[key]` when the object holds only `name` and `key`.
fn only_member<'a>(object: &'a Object, key: &str) -> Option<&'a Value> {
    object.get(key).filter(|_| object.len() == 2)
}

fn parse_digits(digits: &str) -> Option<u64> {
    let plain = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    plain.then(|| digits.parse().ok()).flatten()
}

/// What a value part holds.
enum Content<'a> {
    /// A `value[x]`: a primitive or a complex data type in its JSON form.
    Typed(&'a Value),
    /// Nested parts: a complex value given element by element.
    Parts(&'a [Value]),
}

/// A value part must hold `name` and exactly one `value[x]` or `part`; anything else could be
/// read by a server as (part of) the value while we skip it.
fn value_content(part: &Object) -> Result<Content<'_>, OperationProblem> {
    let mut content = None;
    for (key, value) in part {
        let found = match key.as_str() {
            "name" => continue,
            "part" => Content::Parts(list_items(value).ok_or(OperationProblem::ValueShape)?),
            key if is_typed_value(key) && !value.is_array() && !value.is_null() => {
                Content::Typed(value)
            }
            _ => return Err(OperationProblem::ValueShape),
        };
        if content.replace(found).is_some() {
            return Err(OperationProblem::ValueShape);
        }
    }
    content.ok_or(OperationProblem::ValueShape)
}

/// `value` followed by a type name (`valueString`, `valueReference`): upper-case letter, then
/// letters and digits. A `value[x]` is never a list or null in FHIR JSON.
fn is_typed_value(key: &str) -> bool {
    let Some(suffix) = key.strip_prefix("value") else {
        return false;
    };
    let mut bytes = suffix.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_uppercase()) && bytes.all(|b| b.is_ascii_alphanumeric())
}
