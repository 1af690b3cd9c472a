//! Why a request was refused, as values (for tests and metrics) that print as one sentence for
//! the OperationOutcome and the audit record. Sentences name types, interactions, scopes,
//! headers and policy names; never a patient id, a search value, a tenant or a credential.

use std::fmt;

use fhirwall_fhir::{Interaction, ResourceType};

use super::{Part, Presented};
use crate::{
    model::IntegrationStatus,
    purpose::{PurposeSet, RequestedPurpose},
    scope::{Perm, Scope},
};

/// The reason of a Deny or WouldDeny.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason<'a> {
    Unregistered,
    Status {
        status: IntegrationStatus,
    },
    Expired {
        at: jiff::Timestamp,
    },
    Upstream {
        upstream: &'a str,
    },
    Credential {
        presented: Presented,
    },
    Tenant {
        present: bool,
    },
    Purpose {
        stated: RequestedPurpose,
        allowed: PurposeSet,
    },
    /// The request (or Bundle entry `entry`) is not covered.
    Request {
        entry: Option<usize>,
        why: Why<'a>,
    },
}

/// A permission one interaction needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Need {
    pub interaction: Interaction,
    pub resource_type: ResourceType,
    pub perm: Perm,
    /// Needed because the request reaches every type (no `_type`).
    pub every_type: bool,
}

impl Need {
    pub(super) const fn one(interaction: Interaction, t: ResourceType, perm: Perm) -> Need {
        Need {
            interaction,
            resource_type: t,
            perm,
            every_type: false,
        }
    }
}

/// How a search reaches a type other than its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    Include,
    Revinclude,
    Has,
    Chain,
}

impl Reach {
    const fn as_str(self) -> &'static str {
        match self {
            Reach::Include => "_include",
            Reach::Revinclude => "_revinclude",
            Reach::Has => "_has",
            Reach::Chain => "a chained parameter",
        }
    }
}

/// Why a request is not confined to one patient. Only writes (and Bundles) get here: a read the
/// request cannot tie to a patient is allowed with its response checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confinement {
    /// A conditional write whose criteria name no single patient.
    Search,
    /// A create whose body references no patient, or several.
    Body,
    /// An update, patch or delete by id of a type other than Patient.
    InstanceWrite,
    /// A patch that removes, copies into or re-points an element that puts the resource in the
    /// patient's compartment.
    PatchMoves,
    /// Several patients (in one request, or across Bundle entries).
    Mixed,
}

/// Why one request (or entry) is not covered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why<'a> {
    NoScope(Need),
    /// A granular scope would cover the type, but the interaction has no search parameters to
    /// check it against (a read by id, history).
    GranularUnchecked {
        need: Need,
        index: usize,
        scope: &'a Scope,
    },
    /// A granular scope covers the type, but the search does not restrict itself as it says.
    GranularUnmet {
        index: usize,
        scope: &'a Scope,
    },
    Reached {
        via: Reach,
        resource_type: ResourceType,
        perm: Perm,
    },
    /// An include or chain without a type, which could reach any type.
    Unnamed {
        via: Reach,
    },
    /// A parameter whose reach cannot be read from the request (`_filter`, `_query`).
    Opaque {
        param: &'static str,
    },
    Operation {
        name: &'a str,
    },
    Export {
        resource_type: ResourceType,
        every_type: bool,
    },
    /// An operation asked for a type (`_type`) the integration may not read.
    OperationType {
        name: &'a str,
        resource_type: ResourceType,
    },
    /// A paging continuation the server did not give this integration.
    Continuation,
    NotConfined(Confinement),
    /// The patient header is missing or unreadable.
    PatientHeader {
        header: &'a str,
        present: bool,
    },
    /// The request concerns a patient the patient header does not list.
    OtherPatient {
        header: &'a str,
    },
    /// A type-level interaction without a type (the classifier never produces one).
    Untyped {
        interaction: Interaction,
    },
    NestedBundle,
}

impl Why<'_> {
    /// The integration part this refusal is charged to.
    #[must_use]
    pub const fn part(&self) -> Part {
        match self {
            Why::GranularUnchecked { index, .. } | Why::GranularUnmet { index, .. } => {
                Part::Scope(*index)
            }
            Why::Operation { .. } => Part::Operations,
            Why::NotConfined(_) | Why::PatientHeader { .. } | Why::OtherPatient { .. } => {
                Part::Patient
            }
            Why::NoScope(_)
            | Why::Reached { .. }
            | Why::Unnamed { .. }
            | Why::Opaque { .. }
            | Why::Export { .. }
            | Why::OperationType { .. }
            | Why::Untyped { .. }
            | Why::NestedBundle => Part::Scopes,
            Why::Continuation => Part::Continuation,
        }
    }
}

impl Reason<'_> {
    /// A fixed word for the reason, for metrics labels (`fhirwall_policy_denials_total`) and
    /// alerts: bounded, and never a value from the request.
    #[must_use]
    pub const fn slug(&self) -> &'static str {
        match self {
            Reason::Unregistered => "unregistered",
            Reason::Status { status } => status.as_str(),
            Reason::Expired { .. } => "expired",
            Reason::Upstream { .. } => "upstream",
            Reason::Credential { .. } => "credential",
            Reason::Tenant { .. } => "tenant",
            Reason::Purpose { .. } => "purpose",
            Reason::Request { why, .. } => match why.part() {
                Part::Patient => "patient",
                Part::Operation(_) | Part::Operations => "operation",
                Part::Continuation | Part::Export => "continuation",
                Part::Status
                | Part::Expires
                | Part::Upstreams
                | Part::Credentials
                | Part::Tenants
                | Part::PurposesOfUse
                | Part::Scope(_)
                | Part::Scopes => "scope",
            },
        }
    }
}

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Unregistered => {
                f.write_str("the calling workload matches no registered integration")
            }
            Reason::Status { status } => write!(f, "the integration is {}", status.as_str()),
            Reason::Expired { at } => write!(f, "the integration expired at {at}"),
            Reason::Upstream { upstream } => {
                write!(f, "the integration may not call upstream `{upstream}`")
            }
            Reason::Credential { presented } => f.write_str(match presented {
                Presented::Absent => "the request carries no Authorization credential, and the integration requires one it accepts",
                Presented::Repeated => "the request carries more than one Authorization header",
                Presented::Credential(_) => "the request's Authorization credential is not one the integration accepts",
            }),
            Reason::Tenant { present: false } => f.write_str("the request names no tenant"),
            Reason::Tenant { present: true } => {
                f.write_str("the request's tenant is not one the integration may address")
            }
            Reason::Purpose { stated, allowed } => match stated {
                RequestedPurpose::Absent => write!(
                    f,
                    "the request states no purpose of use and the integration has no default (allowed: {allowed})"
                ),
                RequestedPurpose::Invalid => write!(
                    f,
                    "the purpose-of-use header is not one v3 PurposeOfUse code (allowed: {allowed})"
                ),
                RequestedPurpose::Stated(p) => write!(
                    f,
                    "purpose of use {p} is not allowed for the integration (allowed: {allowed})"
                ),
            },
            Reason::Request { entry: Some(i), why } => write!(f, "Bundle entry {i}: {why}"),
            Reason::Request { entry: None, why } => write!(f, "{why}"),
        }
    }
}

impl fmt::Display for Why<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::NoScope(need) => write!(f, "{need}, which no scope grants"),
            Why::GranularUnchecked { need, index, scope } => write!(
                f,
                "{need}, but scope[{index}] `{scope}` grants it only for resources matching its \
                 parameters, which cannot be checked without the response; search with _id and \
                 those parameters instead"
            ),
            Why::GranularUnmet { index, scope } => {
                write!(
                    f,
                    "scope[{index}] `{scope}` requires the search to restrict "
                )?;
                for (i, p) in scope.params.iter().enumerate() {
                    let sep = if i == 0 { "" } else { " and " };
                    write!(f, "{sep}{}={}", p.name, p.value)?;
                }
                f.write_str(", which it does not")
            }
            Why::Reached {
                via,
                resource_type,
                perm,
            } => write!(
                f,
                "{} reaches {resource_type}, which needs permission `{}` that no scope grants",
                via.as_str(),
                perm.letter()
            ),
            Why::Unnamed { via: Reach::Chain } => f.write_str(
                "a chained parameter without a type qualifier can reach any type: write \
                 param:Type.name",
            ),
            Why::Unnamed { via } => write!(
                f,
                "{} without a target type, of `*` or of a parameter whose targets fhirwall does \
                 not know, can reach any type: write Type:param:Target",
                via.as_str()
            ),
            Why::Opaque { param } => write!(
                f,
                "{param} is refused: which types it reaches cannot be read from the request"
            ),
            Why::Operation { name } => {
                write!(f, "operation {name} is not on the integration's allowlist")
            }
            Why::Export {
                resource_type,
                every_type,
            } => {
                let scope = if *every_type {
                    "without _type exports every type, and "
                } else {
                    ""
                };
                write!(
                    f,
                    "$export {scope}needs a system/ read scope for {resource_type}, which is not granted"
                )
            }
            Why::OperationType {
                name,
                resource_type,
            } => write!(
                f,
                "operation {name} asks for {resource_type}, which needs permission `r` that no scope grants"
            ),
            Why::Continuation => f.write_str(
                "the paging link or export URL was not issued to this integration: follow only \
                 the links the server returned to your own requests",
            ),
            Why::NotConfined(c) => write!(f, "the request is not confined to one patient: {c}"),
            Why::PatientHeader { header, present } => {
                let what = if *present {
                    "unreadable or repeated"
                } else {
                    "missing"
                };
                write!(f, "the patient header {header} is {what}")
            }
            Why::OtherPatient { header } => write!(
                f,
                "the request concerns a patient that the patient header {header} does not list"
            ),
            Why::Untyped { interaction } => {
                write!(f, "{} without a resource type", interaction.code())
            }
            Why::NestedBundle => f.write_str("a Bundle inside a Bundle is refused"),
        }
    }
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let every = if self.every_type {
            " (it reaches every type)"
        } else {
            ""
        };
        write!(
            f,
            "{} needs permission `{}` on {}{every}",
            self.interaction.code(),
            self.perm.letter(),
            self.resource_type
        )
    }
}

impl fmt::Display for Confinement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Confinement::Search => {
                "the write's criteria name no Patient compartment and no single patient parameter"
            }
            Confinement::Body => "the body references no patient, or several",
            Confinement::InstanceWrite => {
                "a write by id cannot be tied to one patient without reading the resource first"
            }
            Confinement::PatchMoves => {
                "the patch removes or re-points an element that ties the resource to its patient"
            }
            Confinement::Mixed => "it names more than one patient",
        })
    }
}
