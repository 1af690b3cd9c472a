//! JSON Merge Patch (RFC 7396).
//!
//! Section 2: an object patch merges key by key (`null` removes the key, anything else merges
//! into it); any other patch replaces the whole target.

use serde_json::Value;

use super::{ChangeKind, Effect, Element, PatchEffect, PatchError};

pub(super) fn read(patch: &Value) -> Result<PatchEffect, PatchError> {
    let not_text = |_| PatchError::MergeReferenceNotText {};
    let mut effect = Effect::default();
    let Some(members) = patch.as_object() else {
        effect.change(Element::Whole, ChangeKind::Set);
        effect.references_in(patch, false).map_err(not_text)?;
        return Ok(effect.finish());
    };
    for (key, value) in members {
        let kind = if value.is_null() {
            ChangeKind::Remove
        } else {
            ChangeKind::Set
        };
        effect.change(Element::from_key(key), kind);
        effect
            .references_in(value, key == "reference")
            .map_err(not_text)?;
    }
    Ok(effect.finish())
}
