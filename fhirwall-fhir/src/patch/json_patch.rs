//! JSON Patch (RFC 6902): an array of operation objects.
//!
//! Stricter than the RFC asks in one way: section 4 says members an operation does not define
//! are ignored, but a server that reads, say, `from` on an `add` would then act on a member we
//! skipped, so any such member is an error.

use serde_json::{Map, Value};

use super::{
    ChangeKind, Effect, Element, OperationProblem, PatchEffect, PatchError, PointerMember,
};

/// The six operations of RFC 6902 section 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Remove,
    Replace,
    Move,
    Copy,
    Test,
}

impl Op {
    fn parse(op: &str) -> Option<Self> {
        Some(match op {
            "add" => Self::Add,
            "remove" => Self::Remove,
            "replace" => Self::Replace,
            "move" => Self::Move,
            "copy" => Self::Copy,
            "test" => Self::Test,
            _ => return None,
        })
    }

    fn takes_from(self) -> bool {
        matches!(self, Self::Move | Self::Copy)
    }

    fn takes_value(self) -> bool {
        matches!(self, Self::Add | Self::Replace | Self::Test)
    }
}

/// What the reader needs from a decoded pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pointer {
    /// The top-level element; `Whole` for the empty pointer.
    element: Element,
    /// Whether the last token is `reference` (a value written there is a reference).
    at_reference: bool,
}

pub(super) fn read(patch: &Value) -> Result<PatchEffect, PatchError> {
    let operations = patch.as_array().ok_or(PatchError::NotAnArray {})?;
    let mut effect = Effect::default();
    for (index, operation) in operations.iter().enumerate() {
        read_operation(operation, &mut effect)
            .map_err(|problem| PatchError::Operation { index, problem })?;
    }
    Ok(effect.finish())
}

fn read_operation(operation: &Value, effect: &mut Effect) -> Result<(), OperationProblem> {
    let members = operation.as_object().ok_or(OperationProblem::NotAnObject)?;
    let op = match members.get("op") {
        None => return Err(OperationProblem::MissingOp),
        Some(op) => op
            .as_str()
            .and_then(Op::parse)
            .ok_or(OperationProblem::UnknownOp)?,
    };
    check_members(members, op)?;
    let path = pointer_member(members, PointerMember::Path)?;
    match op {
        Op::Add | Op::Replace => {
            let value = members.get("value").ok_or(OperationProblem::MissingValue)?;
            effect.references_in(value, path.at_reference)?;
            effect.change(path.element, ChangeKind::Set);
        }
        Op::Remove => effect.change(path.element, ChangeKind::Remove),
        Op::Move => {
            let from = pointer_member(members, PointerMember::From)?;
            effect.change(from.element, ChangeKind::Remove);
            effect.change(path.element, ChangeKind::SetUnknown);
        }
        Op::Copy => {
            // Validated even though only `path` changes: a server must not read more than we do.
            pointer_member(members, PointerMember::From)?;
            effect.change(path.element, ChangeKind::SetUnknown);
        }
        Op::Test => {}
    }
    Ok(())
}

/// Each op takes `op`, `path` and, per RFC 6902 section 4, `from` or `value`; nothing else.
fn check_members(members: &Map<String, Value>, op: Op) -> Result<(), OperationProblem> {
    let belongs = |key: &str| match key {
        "op" | "path" => true,
        "from" => op.takes_from(),
        "value" => op.takes_value(),
        _ => false,
    };
    if !members.keys().all(|key| belongs(key)) {
        return Err(OperationProblem::ExtraMember);
    }
    if !members.contains_key("path") {
        return Err(OperationProblem::MissingPath);
    }
    if op.takes_from() && !members.contains_key("from") {
        return Err(OperationProblem::MissingFrom);
    }
    if op.takes_value() && !members.contains_key("value") {
        return Err(OperationProblem::MissingValue);
    }
    Ok(())
}

fn pointer_member(
    members: &Map<String, Value>,
    member: PointerMember,
) -> Result<Pointer, OperationProblem> {
    let key = match member {
        PointerMember::Path => "path",
        PointerMember::From => "from",
    };
    members
        .get(key)
        .and_then(Value::as_str)
        .and_then(parse_pointer)
        .ok_or(OperationProblem::BadPointer { member })
}

/// RFC 6901 section 3: `""`, or `/`-separated tokens in which `~` only starts `~0` (`~`) or
/// `~1` (`/`). Every token is decoded, so a bad escape anywhere is refused, not only in the first.
fn parse_pointer(pointer: &str) -> Option<Pointer> {
    if pointer.is_empty() {
        return Some(Pointer {
            element: Element::Whole,
            at_reference: false,
        });
    }
    let mut tokens = pointer.strip_prefix('/')?.split('/');
    // `split` yields at least one item, even for "/" (the empty key).
    let first = decode_token(tokens.next()?)?;
    let mut last = first.clone();
    for token in tokens {
        last = decode_token(token)?;
    }
    Some(Pointer {
        element: Element::from_key(&first),
        at_reference: last == "reference",
    })
}

/// Decodes left to right, so `~01` is `~1` and never `/` (RFC 6901 section 4 warns about the
/// other order).
fn decode_token(token: &str) -> Option<String> {
    let mut decoded = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        decoded.push(match c {
            '~' => match chars.next()? {
                '0' => '~',
                '1' => '/',
                _ => return None,
            },
            c => c,
        });
    }
    Some(decoded)
}
