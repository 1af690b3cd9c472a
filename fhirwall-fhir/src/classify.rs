//! The classification pipeline: headers -> target -> path -> route -> query -> body -> patient refs.

use std::borrow::Cow;

use serde_json::Value;

use super::{
    BodyNeed, ClassifyConfig, ClassifyError, EntryProblem, FhirMethod, FhirRequest, HeaderProblem,
    HttpRequest, Interaction, ParamSource, Query, ResourceType, TenantMode, TenantProblem,
    body::{self, MediaKind, media_kind},
    bundle, headers,
    patch::{self, PatchEffect, PatchFormat},
    path,
    patient::PatientRefs,
    query::{self, RawParam},
    route::{self, BodyUse, Route},
    xml,
};

/// What an entry inherits from the request that carried its Bundle.
pub(super) struct Context<'a> {
    pub config: &'a ClassifyConfig,
    /// The request's authority (absolute-form target, else Host), as sent.
    pub authority: Option<String>,
    /// Tenant from the header (top level) or of the enclosing request (entries).
    pub tenant: Option<String>,
}

impl Context<'_> {
    /// Whether an absolute URL's normalized `authority` names this server.
    pub fn accepts_authority(&self, scheme: &str, authority: &str) -> bool {
        self.authority
            .iter()
            .chain(&self.config.authorities)
            .filter_map(|known| path::normalize_authority(scheme, known).ok())
            .any(|known| known == authority)
    }

    /// Base path plus tenant segment, without a trailing slash (`""` for base `/`).
    pub fn entry_prefix(&self) -> String {
        let mut prefix = if self.config.base_segments.is_empty() {
            String::new()
        } else {
            self.config.base_path()
        };
        if let (TenantMode::PathSegment, Some(tenant)) = (&self.config.tenant, &self.tenant) {
            prefix.push('/');
            prefix.push_str(tenant);
        }
        prefix
    }
}

/// The body as the pipeline sees it.
#[derive(Clone, Copy)]
pub(super) enum Body<'a> {
    /// An HTTP request body (`None`: not buffered).
    Http {
        content_type: Option<&'a str>,
        bytes: Option<&'a [u8]>,
    },
    /// A Bundle entry's `resource`.
    Entry(Option<&'a Value>),
}

/// Classifies one HTTP request. Pure: no I/O, no logging.
pub fn classify(
    request: &HttpRequest<'_>,
    config: &ClassifyConfig,
) -> Result<FhirRequest, ClassifyError> {
    let method = FhirMethod::parse(request.method).ok_or(ClassifyError::UnsupportedMethod {})?;
    let headers = Headers::read(request.headers, config)?;
    let target = path::split_target(request.target)?;
    let tenant = match &config.tenant {
        TenantMode::Header(_) => {
            let value = headers.tenant.ok_or(ClassifyError::Tenant {
                problem: TenantProblem::Missing,
            })?;
            Some(valid_tenant(value)?.to_owned())
        }
        TenantMode::None | TenantMode::PathSegment => None,
    };
    let authority = target
        .authority
        .clone()
        .or_else(|| headers.host.map(str::to_ascii_lowercase));
    let ctx = Context {
        config,
        authority,
        tenant,
    };
    let body = Body::Http {
        content_type: headers.content_type,
        bytes: request.body,
    };
    let mut fhir = classify_parts(
        &ctx,
        method,
        target.path,
        target.query,
        headers.if_none_exist,
        body,
    )?;
    let screening = headers::Context {
        method,
        interaction: fhir.interaction,
        operation: fhir.operation.as_ref(),
    };
    fhir.stripped_headers = headers::screen(request.headers, screening, config)?;
    Ok(fhir)
}

/// Classifies a split request (top level or Bundle entry).
pub(super) fn classify_parts(
    ctx: &Context<'_>,
    method: FhirMethod,
    raw_path: &str,
    raw_query: Option<&str>,
    if_none_exist: Option<&str>,
    body: Body<'_>,
) -> Result<FhirRequest, ClassifyError> {
    let config = ctx.config;
    let (segments, trailing) = path::segments(raw_path)?;
    if !segments.starts_with(&config.base_segments) {
        return Err(ClassifyError::OutsideBase {});
    }
    let mut consumed = config.base_segments.len();
    let tenant = match &config.tenant {
        TenantMode::None => None,
        TenantMode::Header(_) => ctx.tenant.clone(),
        TenantMode::PathSegment => {
            let segment = segments.get(consumed).ok_or(ClassifyError::Tenant {
                problem: TenantProblem::Missing,
            })?;
            valid_tenant(segment)?;
            if ctx.tenant.as_ref().is_some_and(|outer| outer != segment) {
                return Err(ClassifyError::Tenant {
                    problem: TenantProblem::Mismatch,
                });
            }
            consumed += 1;
            Some(segment.clone())
        }
    };
    let rest = segments.get(consumed..).unwrap_or_default();
    if trailing && !rest.is_empty() {
        let segment = segments.len() + 1;
        return Err(ClassifyError::Path {
            segment,
            problem: super::PathProblem::TrailingSlash,
        });
    }
    let route = route::route(method, rest, consumed)?;
    // An operation's Parameters body is read with its URL parameters; other bodies after the
    // URL, so a URL problem is the one reported.
    let operation_input = route.body == BodyUse::OperationInput;
    let input = if operation_input {
        body_value(config, &route, &body)?
    } else {
        None
    };
    let mut query = read_query(config, &route, raw_query, &body, input.as_deref())?;
    history_types(config, route.interaction, &mut query);
    let conditional = conditional(config, method, &route, &query, if_none_exist)?;
    let value = if operation_input {
        input
    } else {
        body_value(config, &route, &body)?
    };

    let mut refs = PatientRefs::default();
    if let Some(compartment) = route
        .compartment
        .as_ref()
        .filter(|c| c.resource_type == ResourceType::Patient)
    {
        refs.push(&compartment.id);
    }
    if let (Some(ResourceType::Patient), Some(id)) = (route.resource_type, &route.id) {
        refs.push(id);
    }
    refs.add_query(route.resource_type, &query);
    if let Some(criteria) = &conditional {
        refs.add_query(route.resource_type, criteria);
    }
    let mut interaction = route.interaction;
    let mut entries = Vec::new();
    let mut patch = None;
    if route.body == BodyUse::Bundle {
        let child = Context {
            config,
            authority: ctx.authority.clone(),
            tenant: tenant.clone(),
        };
        (interaction, entries) = read_bundle(&child, &body)?;
        for entry in &entries {
            refs.extend(&entry.patient_refs);
        }
    } else {
        patch = read_resource(&route, &body, value.as_deref(), &mut refs)?;
    }
    Ok(FhirRequest {
        interaction,
        method,
        tenant,
        resource_type: route.resource_type,
        id: route.id,
        version_id: route.version_id,
        compartment: route.compartment,
        operation: route.operation,
        query,
        conditional,
        entries,
        patient_refs: refs.into_vec(),
        patch,
        stripped_headers: Vec::new(),
    })
}

/// URL query, plus the form body for POST `_search` and the simple parameters of an operation's
/// `Parameters` body (URL parameters first; all count, and all pass the same checks).
fn read_query(
    config: &ClassifyConfig,
    route: &Route,
    raw_query: Option<&str>,
    body: &Body<'_>,
    parameters: Option<&Value>,
) -> Result<Query, ClassifyError> {
    let mut pairs = Vec::new();
    if let Some(raw) = raw_query {
        query::raw_pairs(
            raw.as_bytes(),
            ParamSource::Url,
            config.max_params,
            &mut pairs,
        )?;
    }
    // Entries carry no form body: their search parameters are all in request.url.
    if let (
        BodyUse::FormSearch,
        Body::Http {
            content_type,
            bytes,
        },
    ) = (route.body, body)
    {
        let need = BodyNeed::FormSearch;
        let bytes = bytes.ok_or(ClassifyError::BodyRequired { need })?;
        if content_type.map(media_kind) != Some(MediaKind::Form) {
            let expected = "application/x-www-form-urlencoded";
            return Err(ClassifyError::UnsupportedContentType { need, expected });
        }
        query::raw_pairs(bytes, ParamSource::Form, config.max_params, &mut pairs)?;
    }
    if let Some(parameters) = parameters {
        parameter_pairs(parameters, config.max_params, &mut pairs)?;
    }
    query::build(pairs, config)
}

/// The `name` / `value[x]` pairs of an operation's `Parameters` body whose value is a primitive
/// (<http://hl7.org/fhir/R4/operations.html#request>): servers read them as they read URL
/// parameters, so the decision does too (`POST $export` with `_type` in the body).
/// Parameters holding a resource, a reference or parts are scanned for patients with the rest of
/// the body. A body that is not a `Parameters` resource (`$validate` takes the resource itself)
/// adds nothing here.
fn parameter_pairs(
    body: &Value,
    max_params: usize,
    out: &mut Vec<(ParamSource, usize, RawParam)>,
) -> Result<(), ClassifyError> {
    if body.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Ok(());
    }
    let list = match body.get("parameter") {
        None => return Ok(()),
        Some(Value::Array(list)) => &list[..],
        Some(one) => std::slice::from_ref(one),
    };
    for parameter in list {
        let position = out.len() + 1;
        let problem = |problem| ClassifyError::Query {
            source_kind: ParamSource::Body,
            position,
            problem,
        };
        let Some(name) = parameter.get("name").and_then(Value::as_str) else {
            return Err(problem(super::QueryProblem::EmptyName));
        };
        let value = parameter.as_object().and_then(|fields| {
            fields
                .iter()
                .find(|(key, _)| key.starts_with("value") && key.len() > 5)
                .map(|(_, v)| v)
        });
        let value = match value {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Bool(b)) => b.to_string(),
            _ => continue,
        };
        if position > max_params {
            return Err(ClassifyError::TooManyParams { max: max_params });
        }
        let name = name.to_owned();
        out.push((ParamSource::Body, position, RawParam { name, value }));
    }
    Ok(())
}

/// `_type` on history: R4 defines no such history parameter, and servers that do not apply it
/// (the default reading, unless the server profile says otherwise) answer with every type. It
/// then restricts nothing, and is kept as a control for the record.
fn history_types(config: &ClassifyConfig, interaction: Interaction, query: &mut Query) {
    let history = matches!(
        interaction,
        Interaction::HistorySystem | Interaction::HistoryType
    );
    if !history || config.history_type || query.types.is_empty() {
        return;
    }
    let value = query
        .types
        .drain(..)
        .map(ResourceType::as_str)
        .collect::<Vec<_>>()
        .join(",");
    query.controls.push(RawParam {
        name: "_type".to_owned(),
        value,
    });
}

/// The criteria of a conditional create, update, patch or delete.
fn conditional(
    config: &ClassifyConfig,
    method: FhirMethod,
    route: &Route,
    query: &Query,
    if_none_exist: Option<&str>,
) -> Result<Option<Query>, ClassifyError> {
    if route.conditional {
        if !query.has_criteria() {
            return Err(ClassifyError::MissingConditionalCriteria { method });
        }
        return Ok(Some(Query {
            params: query.params.clone(),
            ..Query::default()
        }));
    }
    match (route.interaction, if_none_exist) {
        (Interaction::Create, Some(header)) => {
            let raw = header.strip_prefix('?').unwrap_or(header);
            let criteria = query::parse(raw.as_bytes(), ParamSource::IfNoneExist, config)?;
            if !criteria.has_criteria() {
                return Err(ClassifyError::MissingConditionalCriteria { method });
            }
            Ok(Some(criteria))
        }
        _ => Ok(None),
    }
}

/// Batch or transaction body, JSON or XML.
fn read_bundle(
    ctx: &Context<'_>,
    body: &Body<'_>,
) -> Result<(Interaction, Vec<FhirRequest>), ClassifyError> {
    let Body::Http {
        content_type,
        bytes,
    } = body
    else {
        return Err(ClassifyError::EntryShape {
            problem: EntryProblem::Nested,
        });
    };
    let need = BodyNeed::Bundle;
    let bytes = bytes.ok_or(ClassifyError::BodyRequired { need })?;
    match content_type.map(media_kind) {
        Some(MediaKind::Json) => bundle::classify_bundle(ctx, bytes),
        Some(MediaKind::Xml) => {
            // The XML becomes the JSON the same Bundle would be, and is read as one.
            let value = read_xml(ctx.config, bytes)?;
            let json = serde_json::to_vec(&value).map_err(|e| body::json_error(&e))?;
            bundle::classify_bundle(ctx, &json)
        }
        _ => Err(ClassifyError::UnsupportedContentType {
            need,
            expected: "application/fhir+json or application/fhir+xml",
        }),
    }
}

fn read_xml(config: &ClassifyConfig, bytes: &[u8]) -> Result<Value, ClassifyError> {
    let limits = xml::XmlLimits {
        max_depth: config.json_depth(),
        max_elements: config.max_xml_elements,
    };
    xml::to_json(bytes, &limits).map_err(|source| ClassifyError::Xml { source })
}

/// The body a create, update, patch or operation carries, read for the decision: JSON or XML
/// (a patch also as JSON Patch or JSON Merge Patch). A body in any other format is refused
/// rather than forwarded unread. Entries hand over their `resource`.
fn body_value<'b>(
    config: &ClassifyConfig,
    route: &Route,
    body: &Body<'b>,
) -> Result<Option<Cow<'b, Value>>, ClassifyError> {
    let need = match route.body {
        BodyUse::Resource => BodyNeed::Resource,
        BodyUse::PatchInput => BodyNeed::Patch,
        BodyUse::OperationInput => BodyNeed::OperationInput,
        BodyUse::Ignored | BodyUse::FormSearch | BodyUse::Bundle => return Ok(None),
    };
    let (content_type, bytes) = match body {
        Body::Entry(resource) => return Ok(resource.map(Cow::Borrowed)),
        Body::Http {
            content_type,
            bytes,
        } => (content_type, bytes),
    };
    let bytes = match bytes {
        Some(b) if !b.is_empty() => b,
        _ if need == BodyNeed::OperationInput => return Ok(None),
        _ => return Err(ClassifyError::BodyRequired { need }),
    };
    let kind = content_type.map(media_kind);
    let value = match kind {
        Some(MediaKind::Json) => body::parse_json::<Value>(bytes, config.json_depth())?,
        Some(MediaKind::JsonPatch | MediaKind::MergePatch) if need == BodyNeed::Patch => {
            body::parse_json::<Value>(bytes, config.json_depth())?
        }
        Some(MediaKind::Xml) => read_xml(config, bytes)?,
        _ => {
            let expected = if need == BodyNeed::Patch {
                "application/json-patch+json, application/merge-patch+json, or a FHIRPath Patch \
                 as application/fhir+json or application/fhir+xml"
            } else {
                "application/fhir+json or application/fhir+xml"
            };
            return Err(ClassifyError::UnsupportedContentType { need, expected });
        }
    };
    Ok(Some(Cow::Owned(value)))
}

/// Create/update resources, patch documents and operation input: checked where the URL says what
/// they must be, scanned for patient references. A patch is read for what it changes.
fn read_resource(
    route: &Route,
    body: &Body<'_>,
    value: Option<&Value>,
    refs: &mut PatientRefs,
) -> Result<Option<PatchEffect>, ClassifyError> {
    if let Body::Entry(resource) = body {
        match (route.body, resource) {
            (BodyUse::Resource | BodyUse::PatchInput, None) => {
                return Err(ClassifyError::EntryShape {
                    problem: EntryProblem::ResourceMissing,
                });
            }
            (BodyUse::Ignored | BodyUse::FormSearch, Some(_)) => {
                return Err(ClassifyError::EntryShape {
                    problem: EntryProblem::ResourceNotAllowed,
                });
            }
            _ => {}
        }
    }
    let Some(value) = value else {
        return Ok(None);
    };
    match (route.body, route.resource_type) {
        (BodyUse::PatchInput, Some(t)) => {
            let format = patch_format(body);
            let effect = patch::read(format, value, t.as_str())
                .map_err(|source| ClassifyError::Patch { source })?;
            // `Whole` reaches every name.
            let identity = effect
                .changes
                .iter()
                .any(|c| c.element.reaches("id") || c.element.reaches("resourceType"));
            if identity {
                return Err(ClassifyError::PatchIdentity {});
            }
            for reference in &effect.references {
                refs.add_reference(reference);
            }
            Ok(Some(effect))
        }
        (BodyUse::Resource, Some(expected)) => {
            body::check_resource(value, expected, route.id.as_deref())?;
            refs.add_resource(value);
            Ok(None)
        }
        _ => {
            refs.add_resource(value);
            Ok(None)
        }
    }
}

/// The patch format a body is in: by Content-Type over HTTP (FHIRPath Patch for FHIR JSON and
/// XML); a Bundle entry's patch is a `Parameters` resource (R4 transaction entries cannot carry
/// a JSON Patch other than as a Binary, which is refused by the FHIRPath reader).
fn patch_format(body: &Body<'_>) -> PatchFormat {
    match body {
        Body::Http {
            content_type: Some(ct),
            ..
        } => match media_kind(ct) {
            MediaKind::JsonPatch => PatchFormat::JsonPatch,
            MediaKind::MergePatch => PatchFormat::MergePatch,
            _ => PatchFormat::FhirPathPatch,
        },
        _ => PatchFormat::FhirPathPatch,
    }
}

/// Tenant ids: 1 to 64 of `[A-Za-z0-9-._~]`, not a dot segment.
fn valid_tenant(tenant: &str) -> Result<&str, ClassifyError> {
    let ok = (1..=64).contains(&tenant.len())
        && tenant != "."
        && tenant != ".."
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if ok {
        Ok(tenant)
    } else {
        Err(ClassifyError::Tenant {
            problem: TenantProblem::Invalid,
        })
    }
}

/// The headers the classifier reads. Each may appear once: two Content-Types or two tenants are
/// ambiguous, and servers differ on which one wins.
#[derive(Default)]
struct Headers<'a> {
    content_type: Option<&'a str>,
    if_none_exist: Option<&'a str>,
    host: Option<&'a str>,
    tenant: Option<&'a str>,
}

impl<'a> Headers<'a> {
    fn read(
        headers: &'a [(&'a str, &'a [u8])],
        config: &ClassifyConfig,
    ) -> Result<Headers<'a>, ClassifyError> {
        let tenant_header = match &config.tenant {
            TenantMode::Header(name) => Some(name.as_str()),
            TenantMode::None | TenantMode::PathSegment => None,
        };
        let mut out = Headers::default();
        for (name, value) in headers {
            let (slot, label) = if name.eq_ignore_ascii_case("content-type") {
                (&mut out.content_type, "Content-Type")
            } else if name.eq_ignore_ascii_case("if-none-exist") {
                (&mut out.if_none_exist, "If-None-Exist")
            } else if name.eq_ignore_ascii_case("host") {
                (&mut out.host, "Host")
            } else if tenant_header.is_some_and(|t| name.eq_ignore_ascii_case(t)) {
                (&mut out.tenant, "tenant")
            } else {
                continue;
            };
            let problem = |problem| ClassifyError::Header {
                name: label,
                problem,
            };
            if slot.is_some() {
                return Err(problem(HeaderProblem::Repeated));
            }
            let text = std::str::from_utf8(value).map_err(|_| problem(HeaderProblem::NotUtf8))?;
            *slot = Some(text.trim_matches([' ', '\t']));
        }
        Ok(out)
    }
}
