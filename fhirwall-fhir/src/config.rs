//! What the classifier needs to know about one protected FHIR endpoint.

use super::{ClassifyError, path};

/// Built-in ceiling for [`ClassifyConfig::max_json_depth`]: `serde_json` itself stops at 128, and
/// the depth pre-scan must trip first so the error says "too deep", not "syntax".
pub const MAX_JSON_DEPTH_CEILING: usize = 100;

/// How a request names its tenant (for multi-tenant FHIR servers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantMode {
    /// No tenants: [`FhirRequest::tenant`](super::FhirRequest::tenant) is always `None`.
    None,
    /// The first path segment after the base is the tenant: `[base]/[tenant]/Patient/1`.
    PathSegment,
    /// A request header (matched case-insensitively) carries the tenant; it is required.
    Header(String),
}

/// Classifier settings for one upstream. Build with [`ClassifyConfig::new`], then adjust fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassifyConfig {
    /// Base path segments, validated by `new`; empty for a base of `/`.
    pub(super) base_segments: Vec<String>,
    /// Where the tenant comes from.
    pub tenant: TenantMode,
    /// Largest number of Bundle entries accepted (batch/transaction). Default 1000.
    pub max_bundle_entries: usize,
    /// Largest number of query parameters (URL, form body and If-None-Exist together).
    /// Default 256.
    pub max_params: usize,
    /// Deepest JSON nesting accepted in a body; capped at [`MAX_JSON_DEPTH_CEILING`]. Default 64.
    pub max_json_depth: usize,
    /// Authorities (`host` or `host:port`, lower-case, default port omitted) under which this
    /// base is also reachable, for absolute URLs in Bundle entries. The request's own authority
    /// (absolute-form target, else the Host header) is always accepted.
    pub authorities: Vec<String>,
    /// Query parameters a server uses for paging continuations (e.g. HAPI's `_getpages`). They
    /// are reported in [`Query::paging`](super::Query::paging) rather than as search
    /// parameters.
    pub paging_params: Vec<String>,
    /// Parameters starting with `_` that the server defines beyond R4's; any other unknown one
    /// is refused.
    pub extra_params: Vec<String>,
    /// Request headers (lower-case) forwarded beyond the built-in list: the ones the policy
    /// reads (purpose of use, patient headers, the tenant header) and the server profile's.
    pub extra_headers: Vec<String>,
    /// The server applies `_type` on history. Most do not (it is not an R4 history
    /// parameter), so by default `_type` on history restricts nothing.
    pub history_type: bool,
    /// The server ignores method-override headers: strip them rather than refuse them.
    pub strip_method_override: bool,
    /// Most elements an XML body may have.
    pub max_xml_elements: usize,
}

impl ClassifyConfig {
    /// A configuration for the FHIR base at `base_path` (`/fhir/R4`, or `/`), no tenants and the
    /// default limits.
    pub fn new(base_path: &str) -> Result<ClassifyConfig, ClassifyError> {
        Ok(ClassifyConfig {
            base_segments: path::base_segments(base_path)?,
            tenant: TenantMode::None,
            max_bundle_entries: 1000,
            max_params: 256,
            max_json_depth: 64,
            authorities: Vec::new(),
            paging_params: [
                "_getpages",
                "_getpagesoffset",
                "_page",
                "_offset",
                "_cursor",
            ]
            .map(String::from)
            .to_vec(),
            extra_params: Vec::new(),
            extra_headers: Vec::new(),
            history_type: false,
            strip_method_override: false,
            max_xml_elements: 200_000,
        })
    }

    /// The base path as configured, normalized (`/` or `/a/b`).
    #[must_use]
    pub fn base_path(&self) -> String {
        if self.base_segments.is_empty() {
            "/".to_owned()
        } else {
            self.base_segments.iter().fold(String::new(), |mut out, s| {
                out.push('/');
                out.push_str(s);
                out
            })
        }
    }

    /// The effective JSON depth limit.
    pub(super) fn json_depth(&self) -> usize {
        self.max_json_depth.min(MAX_JSON_DEPTH_CEILING)
    }
}
