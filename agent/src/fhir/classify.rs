//! The classification pipeline: headers -> target -> path -> route -> query -> body -> patient refs.

use serde_json::Value;

use super::{
    BodyNeed, ClassifyConfig, ClassifyError, EntryProblem, FhirRequest, HeaderProblem, HttpRequest,
    Interaction, Method, ParamSource, Query, ResourceType, TenantMode, TenantProblem,
    body::{self, MediaKind, media_kind},
    bundle, path,
    patient::PatientRefs,
    query,
    route::{self, BodyUse, Route},
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
    let method = Method::parse(request.method).ok_or(ClassifyError::UnsupportedMethod {})?;
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
    classify_parts(
        &ctx,
        method,
        target.path,
        target.query,
        headers.if_none_exist,
        body,
    )
}

/// Classifies a split request (top level or Bundle entry).
pub(super) fn classify_parts(
    ctx: &Context<'_>,
    method: Method,
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
    let query = read_query(config, &route, raw_query, &body)?;
    let conditional = conditional(config, method, &route, &query, if_none_exist)?;

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
        read_resource(config, &route, &body, &mut refs)?;
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
    })
}

/// URL query, plus the form body for POST `_search` (URL parameters first; both count).
fn read_query(
    config: &ClassifyConfig,
    route: &Route,
    raw_query: Option<&str>,
    body: &Body<'_>,
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
    query::build(pairs, config)
}

/// The criteria of a conditional create, update, patch or delete.
fn conditional(
    config: &ClassifyConfig,
    method: Method,
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

/// Batch or transaction body.
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
        Some(MediaKind::Xml) => Err(ClassifyError::XmlBundle {}),
        _ => Err(ClassifyError::UnsupportedContentType {
            need,
            expected: "application/fhir+json",
        }),
    }
}

/// Create/update resources, patch documents and operation input: checked where the URL says what
/// they must be, scanned for patient references. HTTP bodies are read only when present and
/// JSON; entry resources are required for create and update and refused where meaningless.
fn read_resource(
    config: &ClassifyConfig,
    route: &Route,
    body: &Body<'_>,
    refs: &mut PatientRefs,
) -> Result<(), ClassifyError> {
    let parsed;
    let resource = match body {
        Body::Http {
            content_type: Some(ct),
            bytes: Some(bytes),
        } if matches!(route.body, BodyUse::Resource | BodyUse::OperationInput)
            && media_kind(ct) == MediaKind::Json =>
        {
            parsed = body::parse_json::<Value>(bytes, config.json_depth())?;
            Some(&parsed)
        }
        Body::Http { .. } => None,
        Body::Entry(resource) => {
            match (route.body, resource) {
                (BodyUse::Resource, None) => {
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
            *resource
        }
    };
    let Some(resource) = resource else {
        return Ok(());
    };
    if let (BodyUse::Resource, Some(expected)) = (route.body, route.resource_type) {
        body::check_resource(resource, expected, route.id.as_deref())?;
    }
    refs.add_resource(resource);
    Ok(())
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
