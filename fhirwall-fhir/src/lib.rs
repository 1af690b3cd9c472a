//! FHIR R4 request classification: one HTTP request -> [`FhirRequest`] (interaction, resource
//! type, id, compartment, operation, search parameters, Bundle entries, patient references), or a
//! [`ClassifyError`] that the proxy turns into a deny.
//!
//! ```text
//! HttpRequest { method, target, headers, body? }
//!   classify.rs  method, the headers it needs (Content-Type, Host, If-None-Exist, tenant)
//!   path.rs      target -> authority, strictly decoded segments (no dot, empty, encoded-delimiter
//!                or ;param segments), base path and tenant matched exactly
//!   route.rs     method x segments -> interaction, type, id, version, compartment, operation
//!   query.rs     URL query (+ form body of POST _search) -> params, includes, _type, results
//!   bundle.rs    batch/transaction JSON -> one FhirRequest per entry (limits on depth, count)
//!   patient.rs   patient ids named anywhere above, for the audit store
//! ```
//!
//! Pure code: no I/O and no logging. Anything two readers of the request could interpret
//! differently is an error, never a guess: the policy denies it.
//!
//! Spec pages: <http://hl7.org/fhir/R4/http.html>, <http://hl7.org/fhir/R4/search.html>,
//! <http://hl7.org/fhir/R4/bundle.html>, <http://hl7.org/fhir/R4/operations.html>,
//! <http://hl7.org/fhir/R4/compartmentdefinition.html>.

mod body;
mod bundle;
mod classify;
mod compartment;
mod config;
mod error;
mod headers;
pub mod patch;
mod path;
mod patient;
mod query;
mod reference_targets;
pub mod replay;
mod request;
mod resource_type;
pub mod response;
mod route;
pub mod xml;

pub use self::{
    classify::classify,
    compartment::{
        PATIENT_COMPARTMENT, PATIENT_COMPARTMENT_ELEMENTS, patient_compartment_elements,
        patient_compartment_params,
    },
    config::{ClassifyConfig, MAX_JSON_DEPTH_CEILING, TenantMode},
    error::{
        BodyNeed, ClassifyError, EntryProblem, HeaderProblem, IdKind, IssueType, JsonProblem,
        ParamSource, PathProblem, PathShape, QueryProblem, TargetProblem, TenantProblem,
    },
    headers::{HeaderRefusal, screen_bound},
    patient::patient_id_of_reference,
    query::{
        ChainLink, Include, Modifier, Query, RawParam, ReverseChainLink, SearchParam, SortKey,
        Summary, Total, comparator_prefix,
    },
    reference_targets::reference_targets,
    request::{
        Compartment, FhirMethod, FhirRequest, HttpRequest, Interaction, Operation, OperationLevel,
    },
    resource_type::{ResourceType, TypeSet},
};

#[cfg(test)]
mod tests;
