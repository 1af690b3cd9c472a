//! Method + path segments after the base (and tenant) -> interaction and its targets.
//!
//! The URL forms are those of <http://hl7.org/fhir/R4/http.html> (summary table and sections),
//! <http://hl7.org/fhir/R4/search.html#compartments> and <http://hl7.org/fhir/R4/operations.html>.
//! Ids cannot start with `_` or `$` (<http://hl7.org/fhir/R4/datatypes.html#id>), so `_history`,
//! `_search`, `$op` and ids never shadow each other.

use super::{
    ClassifyError, Compartment, FhirMethod, IdKind, Interaction, Operation, OperationLevel,
    PathShape, ResourceType, compartment::patient_compartment_params, path::is_fhir_id,
};

/// What the request body is for, once the path is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyUse {
    /// Not read.
    Ignored,
    /// application/x-www-form-urlencoded search parameters (POST `_search`); required.
    FormSearch,
    /// A batch or transaction Bundle (POST to the base); required.
    Bundle,
    /// The resource of a create or update: checked and scanned for patient references when
    /// present and JSON.
    Resource,
    /// A patch document: not read over HTTP; a Bundle entry may carry it as a resource.
    PatchInput,
    /// Operation input (usually Parameters): scanned for patient references when present and JSON.
    OperationInput,
}

/// The routing result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Route {
    pub interaction: Interaction,
    pub resource_type: Option<ResourceType>,
    pub id: Option<String>,
    pub version_id: Option<String>,
    pub compartment: Option<Compartment>,
    pub operation: Option<Operation>,
    pub body: BodyUse,
    /// Update, patch or delete on a type: the query's search parameters are the criteria and
    /// must not be empty.
    pub conditional: bool,
}

impl Route {
    fn new(interaction: Interaction, resource_type: Option<ResourceType>) -> Route {
        Route {
            interaction,
            resource_type,
            id: None,
            version_id: None,
            compartment: None,
            operation: None,
            body: BodyUse::Ignored,
            conditional: false,
        }
    }

    fn body(mut self, body: BodyUse) -> Route {
        self.body = body;
        self
    }
}

/// Routes `segments` (decoded, after base and tenant); `offset` is the number of path segments
/// before them, for error positions.
pub(super) fn route(
    method: FhirMethod,
    segments: &[String],
    offset: usize,
) -> Result<Route, ClassifyError> {
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    match seg.as_slice() {
        [] => system(method),
        [first, rest @ ..]
            if first.starts_with('$') || matches!(*first, "metadata" | "_search" | "_history") =>
        {
            if rest.is_empty() {
                system_keyword(method, first)
            } else {
                Err(ClassifyError::UnknownPath {})
            }
        }
        [type_code, rest @ ..] => {
            let resource_type = parse_type(type_code, offset + 1)?;
            match rest {
                [] => Ok(type_level(method, resource_type)),
                [keyword] if keyword.starts_with('$') || keyword.starts_with('_') => {
                    type_keyword(method, resource_type, keyword)
                }
                [id, rest @ ..] => instance(method, resource_type, id, rest, offset + 2),
            }
        }
    }
}

fn not_allowed(method: FhirMethod, shape: PathShape) -> ClassifyError {
    ClassifyError::MethodNotAllowed { method, shape }
}

fn parse_type(code: &str, segment: usize) -> Result<ResourceType, ClassifyError> {
    ResourceType::parse(code).ok_or(ClassifyError::UnknownResourceType { segment })
}

fn check_id(id: &str, kind: IdKind) -> Result<String, ClassifyError> {
    if is_fhir_id(id) {
        Ok(id.to_owned())
    } else {
        Err(ClassifyError::InvalidId { kind })
    }
}

fn operation(name: &str, level: OperationLevel) -> Result<Operation, ClassifyError> {
    let valid = name.strip_prefix('$').is_some_and(|n| {
        (1..=64).contains(&n.len())
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if valid {
        Ok(Operation {
            name: name.to_owned(),
            level,
        })
    } else {
        Err(ClassifyError::InvalidOperationName {})
    }
}

/// Operations may be invoked with GET (when they change nothing) or POST.
fn operation_route(
    method: FhirMethod,
    resource_type: Option<ResourceType>,
    op: Operation,
) -> Result<Route, ClassifyError> {
    if !(method.is_read() || method == FhirMethod::Post) {
        return Err(not_allowed(method, PathShape::Operation));
    }
    let mut route = Route::new(Interaction::Operation, resource_type).body(BodyUse::OperationInput);
    route.operation = Some(op);
    Ok(route)
}

/// `[base]`: system search (GET) or batch/transaction (POST; the Bundle decides which).
fn system(method: FhirMethod) -> Result<Route, ClassifyError> {
    match method {
        m if m.is_read() => Ok(Route::new(Interaction::SearchSystem, None)),
        FhirMethod::Post => Ok(Route::new(Interaction::Batch, None).body(BodyUse::Bundle)),
        _ => Err(not_allowed(method, PathShape::Base)),
    }
}

/// `[base]/metadata`, `[base]/_search`, `[base]/_history`, `[base]/$op`.
fn system_keyword(method: FhirMethod, keyword: &str) -> Result<Route, ClassifyError> {
    match keyword {
        "metadata" if method.is_read() => Ok(Route::new(Interaction::Capabilities, None)),
        "metadata" => Err(not_allowed(method, PathShape::Metadata)),
        "_search" if method == FhirMethod::Post => {
            Ok(Route::new(Interaction::SearchSystem, None).body(BodyUse::FormSearch))
        }
        "_search" => Err(not_allowed(method, PathShape::SystemSearch)),
        "_history" if method.is_read() => Ok(Route::new(Interaction::HistorySystem, None)),
        "_history" => Err(not_allowed(method, PathShape::History)),
        op => operation_route(method, None, operation(op, OperationLevel::System)?),
    }
}

/// `[base]/[type]`: search, create, or conditional update/patch/delete.
fn type_level(method: FhirMethod, resource_type: ResourceType) -> Route {
    let t = Some(resource_type);
    let conditional = |interaction| {
        let mut route = Route::new(interaction, t);
        route.conditional = true;
        route
    };
    match method {
        FhirMethod::Get | FhirMethod::Head => Route::new(Interaction::SearchType, t),
        FhirMethod::Post => Route::new(Interaction::Create, t).body(BodyUse::Resource),
        FhirMethod::Put => conditional(Interaction::Update).body(BodyUse::Resource),
        FhirMethod::Patch => conditional(Interaction::Patch).body(BodyUse::PatchInput),
        FhirMethod::Delete => conditional(Interaction::Delete),
    }
}

/// `[base]/[type]/_search`, `[base]/[type]/_history`, `[base]/[type]/$op`.
fn type_keyword(
    method: FhirMethod,
    resource_type: ResourceType,
    keyword: &str,
) -> Result<Route, ClassifyError> {
    let t = Some(resource_type);
    match keyword {
        "_search" if method == FhirMethod::Post => {
            Ok(Route::new(Interaction::SearchType, t).body(BodyUse::FormSearch))
        }
        "_search" => Err(not_allowed(method, PathShape::TypeSearch)),
        "_history" if method.is_read() => Ok(Route::new(Interaction::HistoryType, t)),
        "_history" => Err(not_allowed(method, PathShape::History)),
        op if op.starts_with('$') => {
            operation_route(method, t, operation(op, OperationLevel::Type)?)
        }
        _ => Err(ClassifyError::UnknownPath {}),
    }
}

/// `[base]/[type]/[id]...`: instance interactions and compartment searches.
fn instance(
    method: FhirMethod,
    resource_type: ResourceType,
    id: &str,
    rest: &[&str],
    offset: usize,
) -> Result<Route, ClassifyError> {
    if let [next, ..] = rest
        && !next.starts_with(['_', '$'])
    {
        return compartment(method, resource_type, id, rest, offset);
    }
    if rest == ["_search"] {
        return compartment(method, resource_type, id, &["*", "_search"], offset);
    }
    let id = check_id(id, IdKind::Id)?;
    let mut route = match rest {
        [] => instance_plain(method, resource_type)?,
        ["_history"] if method.is_read() => {
            Route::new(Interaction::HistoryInstance, Some(resource_type))
        }
        ["_history", vid, tail @ ..] => {
            let mut route = match tail {
                [] if method.is_read() => Route::new(Interaction::Vread, Some(resource_type)),
                [] => return Err(not_allowed(method, PathShape::History)),
                [op] if op.starts_with('$') => operation_route(
                    method,
                    Some(resource_type),
                    operation(op, OperationLevel::Instance)?,
                )?,
                _ => return Err(ClassifyError::UnknownPath {}),
            };
            route.version_id = Some(check_id(vid, IdKind::Version)?);
            route
        }
        ["_history"] => return Err(not_allowed(method, PathShape::History)),
        [op] if op.starts_with('$') => operation_route(
            method,
            Some(resource_type),
            operation(op, OperationLevel::Instance)?,
        )?,
        _ => return Err(ClassifyError::UnknownPath {}),
    };
    route.id = Some(id);
    Ok(route)
}

/// `[base]/[type]/[id]`: read, update, patch, delete.
fn instance_plain(method: FhirMethod, resource_type: ResourceType) -> Result<Route, ClassifyError> {
    let t = Some(resource_type);
    Ok(match method {
        FhirMethod::Get | FhirMethod::Head => Route::new(Interaction::Read, t),
        FhirMethod::Put => Route::new(Interaction::Update, t).body(BodyUse::Resource),
        FhirMethod::Patch => Route::new(Interaction::Patch, t).body(BodyUse::PatchInput),
        FhirMethod::Delete => Route::new(Interaction::Delete, t),
        FhirMethod::Post => return Err(not_allowed(method, PathShape::Instance)),
    })
}

/// `[base]/[Compartment]/[id]/*`, `/[type]` and their POST `_search` forms
/// (<http://hl7.org/fhir/R4/search.html#compartments>).
fn compartment(
    method: FhirMethod,
    owner: ResourceType,
    id: &str,
    rest: &[&str],
    offset: usize,
) -> Result<Route, ClassifyError> {
    let (target, post_search) = match rest {
        [target] => (*target, false),
        [target, "_search"] => (*target, true),
        _ => return Err(ClassifyError::UnknownPath {}),
    };
    let resource_type = if target == "*" {
        None
    } else {
        Some(parse_type(target, offset + 1)?)
    };
    if !owner.is_compartment() {
        return Err(ClassifyError::NotACompartment {
            resource_type: owner,
        });
    }
    if let (ResourceType::Patient, Some(t)) = (owner, resource_type)
        && patient_compartment_params(t).is_none()
    {
        return Err(ClassifyError::NotInCompartment {
            compartment: owner,
            resource_type: t,
        });
    }
    let body = match (method, post_search) {
        (m, false) if m.is_read() => BodyUse::Ignored,
        (FhirMethod::Post, true) => BodyUse::FormSearch,
        _ => return Err(not_allowed(method, PathShape::Compartment)),
    };
    let interaction = if resource_type.is_some() {
        Interaction::SearchType
    } else {
        Interaction::SearchSystem
    };
    let mut route = Route::new(interaction, resource_type).body(body);
    route.compartment = Some(Compartment {
        resource_type: owner,
        id: check_id(id, IdKind::Compartment)?,
    });
    Ok(route)
}
