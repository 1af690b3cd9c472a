//! Why a request could not be classified.
//!
//! Every message names the rule that failed and where (segment, parameter or entry position), and
//! never the offending text: paths carry patient ids, query values carry names and birth dates,
//! bodies carry whole records. The proxy puts [`ClassifyError::issue_type`] and the message into an
//! `OperationOutcome` (<http://hl7.org/fhir/R4/operationoutcome.html>) and denies; nothing is guessed.

use serde::Serialize;
use thiserror::Error;

use super::{FhirMethod, ResourceType, headers::HeaderRefusal, patch::PatchError, xml::XmlError};

/// Everything the classifier rejects. The proxy denies every one of them (fail closed).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClassifyError {
    /// `ClassifyConfig::new` got a base path that is not `/` or `/seg[/seg...]` of plain segments.
    #[error(
        "configured base path must be \"/\" or absolute, without dot or empty segments, query or escapes"
    )]
    InvalidBasePath {},

    /// The method is not one the FHIR REST API uses.
    #[error("HTTP method is not used by the FHIR RESTful API")]
    UnsupportedMethod {},

    /// The method has no FHIR meaning on this kind of path (e.g. DELETE on the base).
    #[error("{method} is not allowed on {shape}")]
    MethodNotAllowed {
        method: FhirMethod,
        shape: PathShape,
    },

    /// The request target is not an origin-form or http(s) absolute-form URL.
    #[error("request target: {problem}")]
    Target { problem: TargetProblem },

    /// A path segment breaks the normalization rules (see `path.rs`).
    #[error("path segment {segment}: {problem}")]
    Path {
        segment: usize,
        problem: PathProblem,
    },

    /// The path does not start with the configured base path.
    #[error("path is not under the configured FHIR base path")]
    OutsideBase {},

    /// A segment where a resource type belongs is not an R4 type (case-sensitive).
    #[error("path segment {segment} is not an R4 resource type (type names are case-sensitive)")]
    UnknownResourceType { segment: usize },

    /// An id, version id or compartment id breaks the FHIR id syntax.
    #[error("{kind} is not a valid FHIR id ([A-Za-z0-9-.]{{1,64}})")]
    InvalidId { kind: IdKind },

    /// The operation name is not `$` followed by a name.
    #[error("operation name is not valid")]
    InvalidOperationName {},

    /// The path has a shape no R4 interaction uses.
    #[error("path does not match any FHIR R4 RESTful interaction")]
    UnknownPath {},

    /// `[base]/[type]/[id]/[type]` where the first type defines no compartment.
    #[error("{resource_type} does not define a compartment")]
    NotACompartment { resource_type: ResourceType },

    /// A compartment search for a type that is never in that compartment.
    #[error("{resource_type} is never in a {compartment} compartment")]
    NotInCompartment {
        compartment: ResourceType,
        resource_type: ResourceType,
    },

    /// PUT, PATCH or DELETE on a type without search parameters would hit every resource.
    #[error("{method} on a resource type needs an id or conditional search parameters")]
    MissingConditionalCriteria { method: FhirMethod },

    /// Classification needs the body but the proxy did not buffer one.
    #[error("{need} needs the request body, which is absent")]
    BodyRequired { need: BodyNeed },

    /// The body has a content type the classifier cannot read for this request.
    #[error("{need} needs Content-Type {expected}")]
    UnsupportedContentType {
        need: BodyNeed,
        expected: &'static str,
    },

    /// An XML body the classifier cannot read as FHIR XML (see `xml.rs`).
    #[error("request body is not FHIR XML fhirwall can read: {source}")]
    Xml {
        #[source]
        source: XmlError,
    },

    /// A patch document the classifier cannot read (see `patch.rs`).
    #[error("patch document: {source}")]
    Patch {
        #[source]
        source: PatchError,
    },

    /// A patch that changes the resource's id or type, or replaces the resource whole: what it
    /// would write cannot be tied to the resource the URL names.
    #[error("a patch may not change the resource's id or resourceType, or replace it whole")]
    PatchIdentity {},

    /// A header fhirwall will not forward, and will not drop either (see `headers.rs`).
    #[error("header {name} is refused: {reason}")]
    RefusedHeader {
        name: &'static str,
        reason: HeaderRefusal,
    },

    /// A header the classifier needs is malformed, repeated or missing.
    #[error("header {name}: {problem}")]
    Header {
        name: &'static str,
        problem: HeaderProblem,
    },

    /// The tenant is missing, malformed or differs from the request's.
    #[error("tenant: {problem}")]
    Tenant { problem: TenantProblem },

    /// A query parameter (URL, form body or If-None-Exist) breaks the search syntax.
    #[error("{source_kind} parameter {position}: {problem}")]
    Query {
        source_kind: ParamSource,
        position: usize,
        problem: QueryProblem,
    },

    /// More parameters than `ClassifyConfig::max_params`.
    #[error("more than {max} query parameters")]
    TooManyParams { max: usize },

    /// The JSON body does not parse. Position only: `serde_json` messages quote the input.
    #[error("request body is not valid JSON ({problem} at line {line}, column {column})")]
    Json {
        problem: JsonProblem,
        line: usize,
        column: usize,
    },

    /// JSON nested deeper than `ClassifyConfig::max_json_depth`.
    #[error("JSON body nests deeper than {max} levels")]
    JsonTooDeep { max: usize },

    /// The body's `resourceType` is absent or differs from the URL's type.
    #[error("body resourceType does not match the {expected} the URL names")]
    ResourceTypeMismatch { expected: ResourceType },

    /// A PUT body's `id` differs from the URL id.
    #[error("body id does not match the URL id")]
    IdMismatch {},

    /// The body sent by POST to the base is not a Bundle of type batch or transaction.
    #[error("a POST to the base must be a Bundle of type batch or transaction")]
    NotBatchOrTransaction {},

    /// More entries than `ClassifyConfig::max_bundle_entries`.
    #[error("Bundle has more than {max} entries")]
    TooManyEntries { max: usize },

    /// A Bundle entry is malformed (see [`EntryProblem`]).
    #[error("{problem}")]
    EntryShape { problem: EntryProblem },

    /// A Bundle entry failed classification; `source` says why.
    #[error("Bundle entry {index}: {source}")]
    Entry {
        index: usize,
        #[source]
        source: Box<ClassifyError>,
    },
}

impl ClassifyError {
    /// The FHIR issue type (<http://hl7.org/fhir/R4/valueset-issue-type.html>) for the
    /// `OperationOutcome`. Entry errors report their cause's type.
    #[must_use]
    pub fn issue_type(&self) -> IssueType {
        match self {
            ClassifyError::Entry { source, .. } => source.issue_type(),
            ClassifyError::UnsupportedMethod {}
            | ClassifyError::MethodNotAllowed { .. }
            | ClassifyError::UnknownResourceType { .. }
            | ClassifyError::UnknownPath {}
            | ClassifyError::NotACompartment { .. }
            | ClassifyError::NotInCompartment { .. }
            | ClassifyError::UnsupportedContentType { .. }
            | ClassifyError::RefusedHeader { .. } => IssueType::NotSupported,
            ClassifyError::OutsideBase {} => IssueType::NotFound,
            ClassifyError::TooManyParams { .. }
            | ClassifyError::JsonTooDeep { .. }
            | ClassifyError::TooManyEntries { .. } => IssueType::TooCostly,
            ClassifyError::BodyRequired { .. } => IssueType::Incomplete,
            ClassifyError::Json { .. } | ClassifyError::Xml { .. } => IssueType::Structure,
            ClassifyError::MissingConditionalCriteria { .. } => IssueType::Required,
            ClassifyError::Query { problem, .. } if problem.is_unsupported() => {
                IssueType::NotSupported
            }
            _ => IssueType::Invalid,
        }
    }

    /// The HTTP status a deny response for this error should carry.
    #[must_use]
    pub fn http_status(&self) -> u16 {
        match self {
            ClassifyError::Entry { source, .. } => source.http_status(),
            ClassifyError::UnsupportedMethod {} | ClassifyError::MethodNotAllowed { .. } => 405,
            ClassifyError::OutsideBase {}
            | ClassifyError::UnknownResourceType { .. }
            | ClassifyError::UnknownPath {} => 404,
            ClassifyError::UnsupportedContentType { .. }
            | ClassifyError::RefusedHeader {
                reason: HeaderRefusal::ContentEncoding,
                ..
            } => 415,
            ClassifyError::TooManyParams { .. }
            | ClassifyError::JsonTooDeep { .. }
            | ClassifyError::TooManyEntries { .. } => 413,
            _ => 400,
        }
    }
}

/// The FHIR `IssueType` codes fhirwall writes in an `OperationOutcome`
/// (<https://hl7.org/fhir/R4/valueset-issue-type.html>): the classifier's and the proxy's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IssueType {
    /// Content invalid against the specification.
    Invalid,
    /// A structural issue: the body does not parse, or the message framing is malformed.
    Structure,
    /// A required element is missing.
    Required,
    /// The request needs something the proxy did not provide (the body), or the message ended
    /// before it was complete.
    Incomplete,
    /// The request uses a feature the classifier (and so the policy) or the proxy does not
    /// cover.
    NotSupported,
    /// The request would be too costly to check (limits: too many entries, too deep).
    TooCostly,
    /// The path is not a FHIR endpoint fhirwall protects.
    NotFound,
    /// A size limit was exceeded.
    TooLong,
    /// Policy denied the request.
    Forbidden,
    /// Authentication is required or failed.
    Login,
    /// A security problem (e.g. a revoked or unknown credential).
    Security,
    /// Something went wrong on the way (upstream failure).
    Exception,
    /// Something took too long.
    Timeout,
    /// A transient problem; retrying later may work.
    Transient,
    /// A rate limit was exceeded.
    Throttled,
}

impl IssueType {
    /// The code as written in `OperationOutcome.issue.code`.
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            IssueType::Invalid => "invalid",
            IssueType::Structure => "structure",
            IssueType::Required => "required",
            IssueType::Incomplete => "incomplete",
            IssueType::NotSupported => "not-supported",
            IssueType::TooCostly => "too-costly",
            IssueType::NotFound => "not-found",
            IssueType::TooLong => "too-long",
            IssueType::Forbidden => "forbidden",
            IssueType::Login => "login",
            IssueType::Security => "security",
            IssueType::Exception => "exception",
            IssueType::Timeout => "timeout",
            IssueType::Transient => "transient",
            IssueType::Throttled => "throttled",
        }
    }
}

/// What kind of path a method was refused on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PathShape {
    #[error("the system base")]
    Base,
    #[error("[base]/metadata")]
    Metadata,
    #[error("[base]/_search")]
    SystemSearch,
    #[error("a _history path")]
    History,
    #[error("an operation")]
    Operation,
    #[error("a resource type")]
    Type,
    #[error("[base]/[type]/_search")]
    TypeSearch,
    #[error("a resource instance")]
    Instance,
    #[error("a compartment")]
    Compartment,
}

/// Why the request target was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TargetProblem {
    #[error("empty")]
    Empty,
    #[error("asterisk-form and authority-form are not FHIR requests")]
    NotOriginOrAbsolute,
    #[error("only http and https absolute URLs are accepted")]
    Scheme,
    #[error("absolute URL has no valid authority")]
    Authority,
    #[error("userinfo in an absolute URL is refused")]
    Userinfo,
    #[error("fragments are refused")]
    Fragment,
    #[error("contains characters outside the URL grammar")]
    Character,
}

/// Why a path segment was refused (see the rules in `path.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PathProblem {
    #[error("empty segment (repeated slash)")]
    Empty,
    #[error("dot segment")]
    Dot,
    #[error("trailing slash")]
    TrailingSlash,
    #[error("matrix parameters (;) are refused")]
    Params,
    #[error("percent-encoded delimiter, dot, percent or control byte")]
    EncodedDelimiter,
    #[error("malformed percent-encoding")]
    BadPercent,
    #[error("character not allowed in a FHIR path")]
    Character,
}

/// Which identifier was malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum IdKind {
    #[error("resource id")]
    Id,
    #[error("version id")]
    Version,
    #[error("compartment id")]
    Compartment,
    #[error("reference id")]
    Reference,
}

/// What the body was needed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum BodyNeed {
    #[error("POST _search")]
    FormSearch,
    #[error("a batch or transaction")]
    Bundle,
    #[error("a create or update")]
    Resource,
    #[error("a patch")]
    Patch,
    #[error("an operation's input")]
    OperationInput,
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum HeaderProblem {
    #[error("repeated")]
    Repeated,
    #[error("not valid UTF-8")]
    NotUtf8,
    #[error("malformed")]
    Malformed,
}

/// Why the tenant was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TenantProblem {
    #[error("missing")]
    Missing,
    #[error("malformed")]
    Invalid,
    #[error("a Bundle entry names another tenant")]
    Mismatch,
}

/// Where a query parameter came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Error)]
#[serde(rename_all = "kebab-case")]
pub enum ParamSource {
    #[error("URL query")]
    Url,
    #[error("form body")]
    Form,
    #[error("If-None-Exist")]
    IfNoneExist,
    #[error("operation Parameters body")]
    Body,
}

/// Why a query parameter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum QueryProblem {
    #[error("malformed percent-encoding")]
    BadPercent,
    #[error("not valid UTF-8 after decoding")]
    InvalidUtf8,
    #[error("empty name")]
    EmptyName,
    #[error("name has characters outside [A-Za-z0-9_-]")]
    InvalidName,
    #[error("unknown modifier")]
    UnknownModifier,
    #[error("only a resource type may qualify an intermediate chain link")]
    ChainModifier,
    #[error("names an unknown resource type")]
    UnknownResourceType,
    #[error("malformed _has (expects _has:Type:param:...)")]
    InvalidHas,
    #[error("malformed _include/_revinclude (expects Type:param[:Type] or *)")]
    InvalidInclude,
    #[error("modifier not allowed on this parameter")]
    ModifierNotAllowed,
    #[error("value is not a non-negative integer")]
    InvalidCount,
    #[error("value is not one the parameter defines")]
    InvalidValue,
    #[error("may appear only once")]
    Repeated,
    #[error(
        "is not a parameter FHIR R4 defines, nor one the upstream's server profile declares (names starting with _ are case-sensitive)"
    )]
    UnknownParameter,
}

impl QueryProblem {
    fn is_unsupported(self) -> bool {
        matches!(
            self,
            QueryProblem::UnknownModifier | QueryProblem::UnknownParameter
        )
    }
}

/// What part of JSON parsing failed, as `serde_json` categorizes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum JsonProblem {
    #[error("syntax error")]
    Syntax,
    #[error("unexpected end of input")]
    Eof,
    #[error("unexpected type or value")]
    Data,
}

/// Why a Bundle entry was refused before or after classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum EntryProblem {
    #[error("entry has no request.method and request.url")]
    MissingRequest,
    #[error("entry request.ifNoneExist or resource has the wrong JSON type")]
    Malformed,
    #[error(
        "entry request.url must be relative to the base without a leading slash, or an absolute URL under this base"
    )]
    Url,
    #[error("absolute entry URL points outside this FHIR base")]
    ForeignUrl,
    #[error("nested batch or transaction")]
    Nested,
    #[error("create and update entries need a resource")]
    ResourceMissing,
    #[error("only create, update and patch entries may carry a resource")]
    ResourceNotAllowed,
}
