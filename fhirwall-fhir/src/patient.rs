//! Patient ids a request names, collected for the audit store (never for logs).
//!
//! Over-collecting is harmless (the audit trail lists a patient the request may touch);
//! under-collecting loses an audit fact, so every place a request can name a patient is read.

use serde_json::Value;

use super::{Modifier, Query, ResourceType, path::is_fhir_id};

/// Deduplicating, order-keeping list of patient ids.
#[derive(Debug, Default)]
pub(super) struct PatientRefs(Vec<String>);

impl PatientRefs {
    pub fn push(&mut self, id: &str) {
        if !self.0.iter().any(|known| known == id) {
            self.0.push(id.to_owned());
        }
    }

    pub fn extend<'a>(&mut self, ids: impl IntoIterator<Item = &'a String>) {
        for id in ids {
            self.push(id);
        }
    }

    pub fn into_vec(self) -> Vec<String> {
        self.0
    }

    /// A reference string, if it names a patient.
    pub fn add_reference(&mut self, reference: &str) {
        if let Some(id) = patient_id_of_reference(reference) {
            self.push(id);
        }
    }

    /// Values of search parameters: `Patient/x` references anywhere (`subject=Patient/1`,
    /// `_has:...:subject=Patient/1`), bare ids where the parameter itself targets patients
    /// (`patient=1`, `subject:Patient=1`, `_id=1` on a Patient search).
    pub fn add_query(&mut self, searched: Option<ResourceType>, query: &Query) {
        for param in query.params.iter().filter(|p| p.chain.is_empty()) {
            if matches!(
                param.modifier,
                Some(
                    Modifier::Missing
                        | Modifier::Identifier
                        | Modifier::Text
                        | Modifier::Contains
                        | Modifier::Exact
                )
            ) {
                continue;
            }
            let direct = param.reverse_chain.is_empty();
            let bare_ids = param.name == "patient"
                || param.modifier == Some(Modifier::Type(ResourceType::Patient))
                || (direct && param.name == "_id" && searched == Some(ResourceType::Patient));
            for value in &param.values {
                if let Some(id) = patient_id_of_reference(value) {
                    self.push(id);
                } else if bare_ids && is_fhir_id(value) {
                    self.push(value);
                }
            }
        }
    }

    /// References inside a resource body, and the id of a Patient resource itself.
    pub fn add_resource(&mut self, resource: &Value) {
        if resource.get("resourceType").and_then(Value::as_str) == Some("Patient")
            && let Some(id) = resource.get("id").and_then(Value::as_str)
            && is_fhir_id(id)
        {
            self.push(id);
        }
        self.add_references(resource);
    }

    /// Every `"reference": "...Patient/x"` in the tree. The depth is already bounded by the
    /// body's depth check, so recursion here is bounded too.
    fn add_references(&mut self, value: &Value) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    match (key.as_str(), child) {
                        ("reference", Value::String(reference)) => {
                            if let Some(id) = patient_id_of_reference(reference) {
                                self.push(id);
                            }
                        }
                        _ => self.add_references(child),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| self.add_references(item)),
            _ => {}
        }
    }
}

/// The patient id of a reference that ends in `Patient/[id]` or `Patient/[id]/_history/[vid]`,
/// relative or absolute (<http://hl7.org/fhir/R4/references.html#literal>).
#[must_use]
pub fn patient_id_of_reference(reference: &str) -> Option<&str> {
    let segments: Vec<&str> = reference.split('/').collect();
    let tail = match segments.as_slice() {
        [.., "Patient", id] => *id,
        [.., "Patient", id, "_history", vid] if is_fhir_id(vid) => *id,
        _ => return None,
    };
    is_fhir_id(tail).then_some(tail)
}
