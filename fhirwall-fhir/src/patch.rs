//! What a PATCH document does to the resource it targets.
//!
//! The proxy never sees the resource a PATCH changes, only the patch document. So that a
//! patient-bound client cannot move data between patient compartments (`replace /subject` with
//! `Patient/B`), the policy needs two facts from the document: which top-level elements of the
//! target it changes, and which references it writes. [`read`] gives both for the three formats
//! the FHIR servers behind fhirwall accept (<http://hl7.org/fhir/R4/http.html#patch>):
//! - JSON Patch (RFC 6902, `application/json-patch+json`), see `json_patch.rs`;
//! - JSON Merge Patch (RFC 7396, `application/merge-patch+json`), see `merge_patch.rs`;
//! - FHIRPath Patch (<http://hl7.org/fhir/R4/fhirpatch.html>, a `Parameters` resource), see
//!   `fhirpath_patch.rs` and `fhirpath_path.rs`.
//!
//! Rules shared by all three:
//! - Anything a server could read differently from us is an error, never a guess: unknown
//!   operations, members or parts, malformed pointers, FHIRPath paths we cannot follow. The
//!   caller denies on every error.
//! - Errors name the operation index and the rule, never the input: patches carry patient data,
//!   and errors reach logs and audit records.
//! - A top-level key `_x` (FHIR JSON's sibling for the id and extensions of primitive `x`,
//!   <http://hl7.org/fhir/R4/json.html#primitive>) changes element `x`.
//! - Walks over values are iterative, so a deeply nested document cannot exhaust the stack.

// "FHIRPath" and JSON member names fill the prose here; backticks on each would hurt more than
// help (the fhirwall workspace allows this lint for the same reason).
#![expect(clippy::doc_markdown, reason = "FHIRPath is a name, not code")]

mod error;
mod fhirpath_patch;
mod fhirpath_path;
mod json_patch;
mod merge_patch;
#[cfg(test)]
mod tests;

use std::collections::HashSet;

use serde_json::Value;

pub use self::error::{FhirPathProblem, OperationProblem, PartName, PatchError, PointerMember};

/// The patch formats a FHIR server accepts, chosen by the caller from the Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchFormat {
    /// RFC 6902, `application/json-patch+json`.
    JsonPatch,
    /// RFC 7396, `application/merge-patch+json`.
    MergePatch,
    /// A `Parameters` resource (<http://hl7.org/fhir/R4/fhirpatch.html>).
    FhirPathPatch,
}

/// What one patch document does to its target resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatchEffect {
    /// One entry per effect, in document order (a move gives two).
    pub changes: Vec<Change>,
    /// Every reference the patch writes, deduplicated, in first-seen order.
    pub references: Vec<String>,
}

/// One change to one top-level element of the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub element: Element,
    pub kind: ChangeKind,
}

/// The top-level element of the target resource a change reaches: `subject` for `/subject/reference`,
/// `Observation.subject.reference` or a merge patch key `subject`; `Whole` when the patch replaces or
/// reaches the whole resource (JSON Pointer "" or a merge patch that is not an object).
///
/// FHIRPath names a choice element by its base name (`Observation.effective`, not
/// `effectiveDateTime`), and servers resolve a name to any property that extends it at a
/// camel-case boundary; match with [`Element::reaches`], not `==`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Element {
    Named(String),
    Whole,
}

/// How a change affects its element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Set to a value the patch itself carries (its references are in `PatchEffect::references`).
    /// Also a partial change: a merge patch object merges into the element.
    Set,
    /// Set to a value copied from elsewhere in the target (JSON Patch copy/move): unknown to the proxy.
    SetUnknown,
    Remove,
    /// Reordered within the same list (FHIRPath move): membership unchanged.
    Reorder,
}

/// Reads what `patch`, already parsed from a request body of `format`, does to a resource of
/// `resource_type` (the type in the request URL, e.g. `Observation`).
///
/// # Errors
///
/// A [`PatchError`] for every document a server could read differently from us: not of its
/// format's shape, an unknown operation, member or part, a malformed pointer, a FHIRPath path
/// outside the subset `fhirpath_path.rs` follows, a `reference` that is not text.
pub fn read(
    format: PatchFormat,
    patch: &Value,
    resource_type: &str,
) -> Result<PatchEffect, PatchError> {
    match format {
        PatchFormat::JsonPatch => json_patch::read(patch),
        PatchFormat::MergePatch => merge_patch::read(patch),
        PatchFormat::FhirPathPatch => fhirpath_patch::read(patch, resource_type),
    }
}

impl Element {
    /// The element a top-level JSON key or FHIRPath step changes (the `_` sibling rule).
    fn from_key(key: &str) -> Self {
        let name = match key.strip_prefix('_') {
            Some(base) if !base.is_empty() => base,
            _ => key,
        };
        Self::Named(name.to_owned())
    }

    /// Whether this change may reach the property `name` of the target (e.g. `subject`,
    /// `policyHolder`, `effectiveDateTime`; without the `_` of a primitive's sibling).
    ///
    /// A FHIRPath server resolves a step that names no property to the properties extending it
    /// at an upper-case letter (choice types: `value` reaches `valueQuantity`; helios-hfs does
    /// this for any such property, so `Coverage.policy` reaches `policyHolder`), and writes an
    /// `add` or `replace` of a choice to `name` + the value's type. Matching that way for every
    /// format over-approximates JSON Patch and merge patch keys, which only deny more.
    #[must_use]
    pub fn reaches(&self, name: &str) -> bool {
        match self {
            Self::Whole => true,
            Self::Named(element) => name.strip_prefix(element.as_str()).is_some_and(|rest| {
                rest.is_empty() || rest.chars().next().is_some_and(char::is_uppercase)
            }),
        }
    }
}

/// Collects changes and references while a reader walks a document.
#[derive(Debug, Default)]
struct Effect {
    changes: Vec<Change>,
    references: Vec<String>,
    seen: HashSet<String>,
}

/// A `reference` holding a number or boolean: no FHIR element has that shape, so a server
/// could only reject or coerce it; coercion would write a reference we did not see as one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ReferenceNotText;

impl From<ReferenceNotText> for OperationProblem {
    fn from(_: ReferenceNotText) -> Self {
        OperationProblem::ReferenceNotText
    }
}

impl Effect {
    fn change(&mut self, element: Element, kind: ChangeKind) {
        self.changes.push(Change { element, kind });
    }

    fn reference(&mut self, reference: &str) {
        if self.seen.insert(reference.to_owned()) {
            self.references.push(reference.to_owned());
        }
    }

    /// Collects every text under a `reference` key inside `value`. `at_reference` says the patch
    /// writes `value` itself at a `reference` (JSON Patch `/subject/reference`). Text in a list
    /// under `reference` counts too: no FHIR `reference` is a list, but a lenient server could
    /// still store one.
    fn references_in(&mut self, value: &Value, at_reference: bool) -> Result<(), ReferenceNotText> {
        // Children are pushed in reverse so they pop in document order (first-seen order).
        let mut stack = vec![(value, at_reference)];
        while let Some((value, at_reference)) = stack.pop() {
            match value {
                Value::String(text) if at_reference => self.reference(text),
                Value::Number(_) | Value::Bool(_) if at_reference => return Err(ReferenceNotText),
                Value::Object(members) => stack.extend(
                    members
                        .iter()
                        .rev()
                        .map(|(key, child)| (child, key == "reference")),
                ),
                Value::Array(items) => {
                    stack.extend(items.iter().rev().map(|item| (item, at_reference)));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn finish(self) -> PatchEffect {
        PatchEffect {
            changes: self.changes,
            references: self.references,
        }
    }
}
