//! The operations allowlist: entries written the way the FHIR spec writes invocation URLs
//! (<http://hl7.org/fhir/R4/operations.html#executing>):
//!
//! ```text
//! $export                      system level
//! Patient/$export              type level on Patient
//! */$validate                  type level on any type
//! Patient/[id]/$everything     instance level on Patient
//! */[id]/$validate             instance level on any type
//! ```

use std::fmt;

use fhirwall_fhir::{Operation, OperationLevel, ResourceType};
use serde::{Deserialize, Serialize};

/// One allowed operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OperationRule {
    /// The name with its `$`.
    pub name: String,
    pub level: OperationLevel,
    /// The type for type and instance level; `None` for system level or `*`.
    pub resource_type: Option<ResourceType>,
    text: String,
}

impl OperationRule {
    /// Whether an invocation matches this entry.
    #[must_use]
    pub fn allows(&self, op: &Operation, resource_type: Option<ResourceType>) -> bool {
        self.name == op.name
            && self.level == op.level
            && (self.level == OperationLevel::System
                || self.resource_type.is_none_or(|t| Some(t) == resource_type))
    }
}

impl fmt::Display for OperationRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<OperationRule> for String {
    fn from(rule: OperationRule) -> Self {
        rule.text
    }
}

impl TryFrom<String> for OperationRule {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let parts: Vec<&str> = text.split('/').collect();
        let (target, level, name) = match parts.as_slice() {
            [name] => (None, OperationLevel::System, *name),
            [target, name] => (Some(*target), OperationLevel::Type, *name),
            [target, "[id]", name] => (Some(*target), OperationLevel::Instance, *name),
            _ => {
                return Err(format!(
                    "`{text}`: write $op, Type/$op, */$op, Type/[id]/$op or */[id]/$op"
                ));
            }
        };
        let valid_name = name.strip_prefix('$').is_some_and(|n| {
            (1..=64).contains(&n.len())
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
        if !valid_name {
            return Err(format!("`{name}` is not an operation name ($ and a code)"));
        }
        let resource_type = match target {
            None | Some("*") => None,
            Some(code) => Some(ResourceType::parse(code).ok_or_else(|| {
                format!("`{code}` is not an R4 resource type (case-sensitive) or *")
            })?),
        };
        Ok(OperationRule {
            name: name.to_owned(),
            level,
            resource_type,
            text,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> OperationRule {
        OperationRule::try_from(text.to_owned()).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn op(name: &str, level: OperationLevel) -> Operation {
        Operation {
            name: name.into(),
            level,
        }
    }

    #[test]
    fn entries_match_name_level_and_type() {
        use OperationLevel::{Instance, System, Type};
        use ResourceType::{Observation, Patient};
        // (entry, operation, level, type on the request, allowed)
        let table: &[(&str, &str, OperationLevel, Option<ResourceType>, bool)] = &[
            ("$export", "$export", System, None, true),
            ("$export", "$export", Type, Some(Patient), false),
            ("Patient/$export", "$export", Type, Some(Patient), true),
            ("Patient/$export", "$export", Type, Some(Observation), false),
            ("Patient/$export", "$export", System, None, false),
            (
                "Patient/[id]/$everything",
                "$everything",
                Instance,
                Some(Patient),
                true,
            ),
            (
                "Patient/[id]/$everything",
                "$everything",
                Type,
                Some(Patient),
                false,
            ),
            ("*/$validate", "$validate", Type, Some(Observation), true),
            (
                "*/$validate",
                "$validate",
                Instance,
                Some(Observation),
                false,
            ),
            (
                "*/[id]/$validate",
                "$validate",
                Instance,
                Some(Patient),
                true,
            ),
            ("*/$validate", "$validation", Type, Some(Patient), false),
        ];
        for (entry, name, level, resource_type, allowed) in table {
            assert_eq!(
                rule(entry).allows(&op(name, *level), *resource_type),
                *allowed,
                "{entry} vs {name} {level:?} {resource_type:?}"
            );
        }
    }

    #[test]
    fn malformed_entries_are_refused() {
        for bad in [
            "export",
            "$",
            "patient/$everything",
            "Patient/123/$everything",
            "Patient/[id]/_history/$x",
            "/$export",
            "$ex port",
        ] {
            assert!(OperationRule::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }
}
