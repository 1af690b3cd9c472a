//! A scope list compiled at load into per-type permission tables, so that checking "may this
//! integration search Observation" is one array index and one bit test.

use fhirwall_fhir::{ResourceType, SearchParam, TypeSet};
use serde::{Deserialize, Serialize};

use super::scope::{Perm, Perms, Scope, ScopeContext};

const TYPES: usize = ResourceType::ALL.len();

/// Index of a type in the tables: `ResourceType` is a field-less enum declared in `ALL` order,
/// so its discriminant is its position.
const fn slot(t: ResourceType) -> usize {
    t as usize
}

/// A list of scopes and its compiled tables. Deserialized from the YAML list, compiled once.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(from = "Vec<Scope>", into = "Vec<Scope>")]
pub struct Scopes {
    list: Vec<Scope>,
    /// `system/` and `user/` scopes without parameters.
    any: Box<[Perms; TYPES]>,
    /// `patient/` scopes without parameters: only for requests confined to one patient.
    patient: Box<[Perms; TYPES]>,
    /// `system/` scopes without parameters (what `$export` needs).
    system: Box<[Perms; TYPES]>,
    /// Whether any scope is granular (skips a scan of the list when none is).
    granular: bool,
    /// Types a parameter-free scope grants `r` or `s` on, in any context: what a response
    /// may carry.
    readable: TypeSet,
}

/// Where a permission came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Source {
    /// Unconditionally, by the scope at this index.
    Plain(usize),
    /// By a `patient/` scope at this index: the request must be confined to one patient.
    PatientOnly(usize),
}

impl Scopes {
    #[must_use]
    pub fn list(&self) -> &[Scope] {
        &self.list
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The permission from a scope without parameters, preferring one that needs no patient.
    pub(super) fn plain(&self, t: ResourceType, perm: Perm) -> Option<Source> {
        if self.any[slot(t)].contains(perm) {
            self.position(t, perm, |c| c != ScopeContext::Patient)
                .map(Source::Plain)
        } else if self.patient[slot(t)].contains(perm) {
            self.position(t, perm, |c| c == ScopeContext::Patient)
                .map(Source::PatientOnly)
        } else {
            None
        }
    }

    /// Types a parameter-free scope lets the integration read or search (any context).
    #[must_use]
    pub fn readable(&self) -> TypeSet {
        self.readable
    }

    /// Whether a `system/` scope without parameters grants `perm` on `t`.
    pub(super) fn system(&self, t: ResourceType, perm: Perm) -> bool {
        self.system[slot(t)].contains(perm)
    }

    /// Granular scopes on `t` that grant `perm`, with their index.
    pub(super) fn granular(
        &self,
        t: ResourceType,
        perm: Perm,
    ) -> impl Iterator<Item = (usize, &Scope)> {
        let list: &[Scope] = if self.granular { &self.list } else { &[] };
        list.iter()
            .enumerate()
            .filter(move |(_, s)| s.is_granular() && s.covers(t) && s.perms.contains(perm))
    }

    /// The first parameter-free scope of a matching context that grants `perm` on `t`: the
    /// rule named in an allow.
    fn position(
        &self,
        t: ResourceType,
        perm: Perm,
        context: impl Fn(ScopeContext) -> bool,
    ) -> Option<usize> {
        self.list.iter().position(|s| {
            !s.is_granular() && context(s.context) && s.covers(t) && s.perms.contains(perm)
        })
    }
}

/// Whether the search parameters satisfy every restriction of a granular scope: each one must
/// appear as a plain parameter (no modifier, chain or `_has`) whose values are all exactly the
/// scope's value. Parameters are AND-ed by the server, so one restricting parameter is enough
/// whatever else the request adds; a value list (`a,b`) is OR-ed, so every value must match.
#[must_use]
pub(super) fn satisfies(scope: &Scope, params: &[SearchParam]) -> bool {
    scope.params.iter().all(|required| {
        params.iter().any(|p| {
            p.reverse_chain.is_empty()
                && p.chain.is_empty()
                && p.modifier.is_none()
                && p.name == required.name
                && !p.values.is_empty()
                && p.values.iter().all(|v| *v == required.value)
        })
    })
}

impl From<Vec<Scope>> for Scopes {
    fn from(list: Vec<Scope>) -> Self {
        let mut any = Box::new([Perms::NONE; TYPES]);
        let mut patient = Box::new([Perms::NONE; TYPES]);
        let mut system = Box::new([Perms::NONE; TYPES]);
        for scope in list.iter().filter(|s| !s.is_granular()) {
            let table = match scope.context {
                ScopeContext::Patient => &mut patient,
                ScopeContext::User | ScopeContext::System => &mut any,
            };
            for t in ResourceType::ALL.iter().filter(|t| scope.covers(**t)) {
                table[slot(*t)] = table[slot(*t)].union(scope.perms);
                if scope.context == ScopeContext::System {
                    system[slot(*t)] = system[slot(*t)].union(scope.perms);
                }
            }
        }
        let granular = list.iter().any(Scope::is_granular);
        let readable = ResourceType::ALL
            .iter()
            .copied()
            .filter(|t| {
                let perms = any[slot(*t)].union(patient[slot(*t)]);
                perms.contains(Perm::Read) || perms.contains(Perm::Search)
            })
            .collect();
        Scopes {
            list,
            any,
            patient,
            system,
            granular,
            readable,
        }
    }
}

impl From<Scopes> for Vec<Scope> {
    fn from(scopes: Scopes) -> Self {
        scopes.list
    }
}

impl PartialEq for Scopes {
    fn eq(&self, other: &Self) -> bool {
        self.list == other.list
    }
}

impl Eq for Scopes {}

impl Default for Scopes {
    fn default() -> Self {
        Scopes::from(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(list: &[&str]) -> Scopes {
        Scopes::from(
            list.iter()
                .map(|s| Scope::try_from((*s).to_owned()).expect("valid scope"))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn tables_follow_context_and_wildcards() {
        use ResourceType::{Claim, Coverage, Observation, Patient};
        let s = scopes(&[
            "user/Claim.rs",
            "patient/*.r",
            "system/Observation.s?category=laboratory",
            "system/Coverage.read",
        ]);
        assert_eq!(s.plain(Claim, Perm::Read), Some(Source::Plain(0)));
        assert_eq!(s.plain(Patient, Perm::Read), Some(Source::PatientOnly(1)));
        assert_eq!(s.plain(Claim, Perm::Create), None);
        assert_eq!(s.plain(Observation, Perm::Search), None, "granular only");
        assert_eq!(s.granular(Observation, Perm::Search).count(), 1);
        assert_eq!(s.granular(Observation, Perm::Read).count(), 0);
        assert!(s.system(Coverage, Perm::Read));
        assert!(!s.system(Claim, Perm::Read), "user/ is not system/");
        assert!(!s.system(Patient, Perm::Read), "patient/ is not system/");
    }
}
