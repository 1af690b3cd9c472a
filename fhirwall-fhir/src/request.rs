//! The classifier's input (one HTTP request) and output ([`FhirRequest`]).

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

use super::{Query, ResourceType, patch::PatchEffect};

/// One HTTP request as the proxy's HTTP/1.1 layer parsed it.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    /// Request method, case-sensitive as RFC 9110 section 9.1 requires.
    pub method: &'a str,
    /// Request target: origin-form (`/fhir/Patient/1?x=y`) or absolute-form
    /// (`https://host/fhir/Patient/1`).
    pub target: &'a str,
    /// Request headers (name, raw value). Only Content-Type, Host, If-None-Exist and the
    /// configured tenant header are read; the rest may be passed or left out.
    pub headers: &'a [(&'a str, &'a [u8])],
    /// The body, when the proxy buffered it. `None` makes body-dependent requests (Bundles,
    /// POST _search) an error.
    pub body: Option<&'a [u8]>,
}

/// The HTTP methods FHIR R4 uses (<http://hl7.org/fhir/R4/http.html>).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum FhirMethod {
    Get,
    /// Treated as GET (R4 allows HEAD wherever GET reads).
    Head,
    Post,
    Put,
    Patch,
    Delete,
}

impl FhirMethod {
    /// Parses a method token; case-sensitive (`get` is not `GET`).
    #[must_use]
    pub fn parse(token: &str) -> Option<FhirMethod> {
        match token {
            "GET" => Some(FhirMethod::Get),
            "HEAD" => Some(FhirMethod::Head),
            "POST" => Some(FhirMethod::Post),
            "PUT" => Some(FhirMethod::Put),
            "PATCH" => Some(FhirMethod::Patch),
            "DELETE" => Some(FhirMethod::Delete),
            _ => None,
        }
    }

    /// GET or HEAD.
    #[must_use]
    pub const fn is_read(self) -> bool {
        matches!(self, FhirMethod::Get | FhirMethod::Head)
    }

    /// The method token.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            FhirMethod::Get => "GET",
            FhirMethod::Head => "HEAD",
            FhirMethod::Post => "POST",
            FhirMethod::Put => "PUT",
            FhirMethod::Patch => "PATCH",
            FhirMethod::Delete => "DELETE",
        }
    }
}

impl fmt::Display for FhirMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// FHIR restful interaction codes (<http://hl7.org/fhir/R4/valueset-restful-interaction.html>),
/// serialized as those codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Interaction {
    Read,
    Vread,
    Update,
    Patch,
    Delete,
    HistoryInstance,
    HistoryType,
    HistorySystem,
    Create,
    SearchType,
    SearchSystem,
    Batch,
    Transaction,
    Capabilities,
    Operation,
}

impl Interaction {
    /// The restful-interaction code.
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            Interaction::Read => "read",
            Interaction::Vread => "vread",
            Interaction::Update => "update",
            Interaction::Patch => "patch",
            Interaction::Delete => "delete",
            Interaction::HistoryInstance => "history-instance",
            Interaction::HistoryType => "history-type",
            Interaction::HistorySystem => "history-system",
            Interaction::Create => "create",
            Interaction::SearchType => "search-type",
            Interaction::SearchSystem => "search-system",
            Interaction::Batch => "batch",
            Interaction::Transaction => "transaction",
            Interaction::Capabilities => "capabilities",
            Interaction::Operation => "operation",
        }
    }

    /// Whether the interaction changes server state (create, update, patch, delete). Batches,
    /// transactions and operations are decided by their entries / operation name.
    #[must_use]
    pub const fn is_write(self) -> bool {
        matches!(
            self,
            Interaction::Create | Interaction::Update | Interaction::Patch | Interaction::Delete
        )
    }
}

/// The compartment a search is scoped to: `Patient/123` in `GET [base]/Patient/123/Observation`.
/// Serialized as `"Patient/123"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Compartment {
    /// The compartment type (`Patient`, `Encounter`, `RelatedPerson`, `Practitioner` or `Device`).
    pub resource_type: ResourceType,
    /// The compartment owner's id.
    pub id: String,
}

impl Serialize for Compartment {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{}/{}", self.resource_type, self.id))
    }
}

/// The level an operation is invoked at (<http://hl7.org/fhir/R4/operations.html>).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperationLevel {
    /// `[base]/$op`
    System,
    /// `[base]/[type]/$op`
    Type,
    /// `[base]/[type]/[id]/$op` (or on a version: `.../_history/[vid]/$op`)
    Instance,
}

/// An operation invocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Operation {
    /// The name including the `$`: `$everything`, `$export`, `$validate`.
    pub name: String,
    /// Where it was invoked.
    pub level: OperationLevel,
}

/// One classified FHIR request. Batch and transaction entries are classified the same way, each
/// into its own `FhirRequest` in [`entries`](FhirRequest::entries).
///
/// Serialized in camelCase (`resourceType`, `versionId`, `patientRefs`, ...); absent values are
/// `null` and empty lists `[]`, so every key is always present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FhirRequest {
    /// The restful interaction.
    pub interaction: Interaction,
    /// The HTTP method (HEAD stays HEAD; its interaction is the GET one).
    pub method: FhirMethod,
    /// The tenant, when tenants are configured.
    pub tenant: Option<String>,
    /// The resource type the request acts on or searches: `Observation` for
    /// `GET Patient/1/Observation`. `None` for system-level interactions and `Patient/1/*`.
    pub resource_type: Option<ResourceType>,
    /// The logical id for instance interactions.
    pub id: Option<String>,
    /// The version id for vread (and operations on a version).
    pub version_id: Option<String>,
    /// The compartment a search is restricted to.
    pub compartment: Option<Compartment>,
    /// The operation, for `interaction == Operation`.
    pub operation: Option<Operation>,
    /// URL query parameters, merged with the form body for POST `_search` (URL first).
    pub query: Query,
    /// Criteria of a conditional interaction: the If-None-Exist header for create, the query's
    /// search parameters for update, patch and delete on a type. `None` when unconditional.
    pub conditional: Option<Query>,
    /// For batch and transaction: the entries, in Bundle order.
    pub entries: Vec<FhirRequest>,
    /// Ids of patients this request names (compartment, Patient reads, `patient=` /
    /// `Patient/x` values, references in bodies and entries), deduplicated in order of first
    /// appearance. For the audit store only: never log them.
    pub patient_refs: Vec<String>,
    /// What a PATCH document changes (the elements it reaches, the references it writes).
    #[serde(skip)]
    pub patch: Option<PatchEffect>,
    /// Request headers (lower-case names) that will not be forwarded: everything outside the
    /// positive list of `headers.rs`. Top-level requests only.
    pub stripped_headers: Vec<String>,
}

impl FhirRequest {
    /// This request followed by its Bundle entries: what a policy decides on. A batch or
    /// transaction is allowed only if every entry is.
    pub fn with_entries(&self) -> impl Iterator<Item = &FhirRequest> {
        std::iter::once(self).chain(&self.entries)
    }
}
