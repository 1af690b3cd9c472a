//! SMART App Launch resource scopes, v2 and v1, parsed into one typed form
//! (<https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html>).
//!
//! ```text
//! v2: (patient|user|system)/(Type|*).[c][r][u][d][s][?param=value[&param=value]...]
//! v1: (patient|user|system)/(Type|*).(read|write|*)
//! ```
//!
//! v1 maps onto v2 as the SMART spec's table does: `read` = `rs`, `write` = `cud`, `*` = `cruds`.
//! v2 permissions must be written in the canonical order c, r, u, d, s, each at most once (the
//! spec: "permissions SHALL be listed in the order cruds"), so one scope has one spelling.
//!
//! Granular parameters (`?category=...`) restrict which resources a scope covers. A proxy that
//! does not read response bodies can only check them on searches (the request must carry the
//! restricting parameter), so a granular scope must grant `s` and must not grant `c`, `u` or `d`:
//! a write is checked against the body, which this engine does not inspect, and allowing it
//! silently would widen the scope. Launch-context scopes (`openid`, `launch/patient`, ...) mean
//! nothing to a proxy and are refused.

use std::fmt;

use fhirwall_fhir::ResourceType;
use serde::{Deserialize, Serialize};

/// Whose data a scope is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScopeContext {
    /// `patient/`: only requests confined to one patient's compartment.
    Patient,
    /// `user/`: whatever the user may see; the proxy has no user, so treated like `system/`
    /// except that `$export` needs `system/`.
    User,
    /// `system/`: a backend service's own access.
    System,
}

impl ScopeContext {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            ScopeContext::Patient => "patient",
            ScopeContext::User => "user",
            ScopeContext::System => "system",
        }
    }
}

/// One SMART v2 permission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Perm {
    Create = 1,
    Read = 2,
    Update = 4,
    Delete = 8,
    Search = 16,
}

impl Perm {
    pub const ALL: [Perm; 5] = [
        Perm::Create,
        Perm::Read,
        Perm::Update,
        Perm::Delete,
        Perm::Search,
    ];

    /// The letter SMART v2 uses.
    #[must_use]
    pub const fn letter(self) -> char {
        match self {
            Perm::Create => 'c',
            Perm::Read => 'r',
            Perm::Update => 'u',
            Perm::Delete => 'd',
            Perm::Search => 's',
        }
    }
}

/// A set of permissions, as a bitset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Perms(u8);

impl Perms {
    pub const NONE: Perms = Perms(0);
    pub const ALL: Perms = Perms(31);
    /// v1 `read`.
    pub const READ_SEARCH: Perms = Perms(Perm::Read as u8 | Perm::Search as u8);
    /// v1 `write`.
    pub const WRITE: Perms = Perms(Perm::Create as u8 | Perm::Update as u8 | Perm::Delete as u8);

    #[must_use]
    pub const fn contains(self, perm: Perm) -> bool {
        self.0 & perm as u8 != 0
    }

    #[must_use]
    pub const fn union(self, other: Perms) -> Perms {
        Perms(self.0 | other.0)
    }

    #[must_use]
    pub const fn with(self, perm: Perm) -> Perms {
        Perms(self.0 | perm as u8)
    }

    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Perms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for perm in Perm::ALL.into_iter().filter(|p| self.contains(*p)) {
            write!(f, "{}", perm.letter())?;
        }
        Ok(())
    }
}

/// A `name=value` restriction of a granular scope.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ScopeParam {
    /// A search parameter name of the scope's type, without modifier.
    pub name: String,
    /// The exact value the request must use (`system|code` for tokens).
    pub value: String,
}

/// One resource scope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Scope {
    pub context: ScopeContext,
    /// The type, or `None` for `*` (every type).
    pub resource_type: Option<ResourceType>,
    pub perms: Perms,
    /// Granular restrictions, all of which must hold (v2 only).
    pub params: Vec<ScopeParam>,
    /// As written in the policy, for messages.
    text: String,
}

impl Scope {
    /// As written in the policy.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the scope covers `resource_type` (a `*` scope covers every type).
    #[must_use]
    pub fn covers(&self, resource_type: ResourceType) -> bool {
        self.resource_type.is_none_or(|t| t == resource_type)
    }

    /// Whether this is a granular scope (restricted by search parameters).
    #[must_use]
    pub fn is_granular(&self) -> bool {
        !self.params.is_empty()
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<Scope> for String {
    fn from(scope: Scope) -> Self {
        scope.text
    }
}

impl TryFrom<String> for Scope {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        parse(&text).map(|(context, resource_type, perms, params)| Scope {
            context,
            resource_type,
            perms,
            params,
            text,
        })
    }
}

type Parts = (ScopeContext, Option<ResourceType>, Perms, Vec<ScopeParam>);

fn parse(text: &str) -> Result<Parts, String> {
    let (base, query) = match text.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (text, None),
    };
    let (context, rest) = base.split_once('/').ok_or_else(|| {
        format!(
            "`{text}` is not a resource scope ((patient|user|system)/Type.perms); launch and \
             identity scopes mean nothing to a proxy"
        )
    })?;
    let context = match context {
        "patient" => ScopeContext::Patient,
        "user" => ScopeContext::User,
        "system" => ScopeContext::System,
        other => return Err(format!("`{other}` is not patient, user or system")),
    };
    let (target, perms) = rest
        .split_once('.')
        .ok_or_else(|| format!("`{text}` has no .permissions after the resource type"))?;
    let resource_type =
        match target {
            "*" => None,
            code => Some(ResourceType::parse(code).ok_or_else(|| {
                format!("`{code}` is not an R4 resource type (case-sensitive) or *")
            })?),
        };
    let (perms, v1) = parse_perms(perms)?;
    let params = match query {
        None => Vec::new(),
        Some(_) if v1 => {
            return Err("granular ?parameters need v2 permissions (cruds), not v1".into());
        }
        Some(query) => parse_params(query)?,
    };
    if !params.is_empty() {
        check_granular(resource_type, perms)?;
    }
    Ok((context, resource_type, perms, params))
}

/// `read` / `write` / `*` (v1), or letters of `cruds` in that order (v2). Returns the set and
/// whether it was v1.
fn parse_perms(text: &str) -> Result<(Perms, bool), String> {
    match text {
        "read" => return Ok((Perms::READ_SEARCH, true)),
        "write" => return Ok((Perms::WRITE, true)),
        "*" => return Ok((Perms::ALL, true)),
        _ => {}
    }
    let mut perms = Perms::NONE;
    let mut order = Perm::ALL.iter();
    for c in text.chars() {
        // Each letter must come later in `cruds` than the one before: that forbids repeats and
        // any other order with one pass.
        let Some(perm) = order.by_ref().find(|p| p.letter() == c) else {
            return Err(format!(
                "permissions `{text}`: use letters of cruds, in that order, each once \
                 (or v1 read, write, *)"
            ));
        };
        perms = perms.with(*perm);
    }
    if perms.is_empty() {
        return Err("no permissions after the `.`".into());
    }
    Ok((perms, false))
}

/// `name=value(&name=value)*`. Values are taken literally (the SMART examples write token values
/// as `system|code`); characters that would be ambiguous in a URL query or a YAML list are
/// refused rather than interpreted.
fn parse_params(query: &str) -> Result<Vec<ScopeParam>, String> {
    let mut params: Vec<ScopeParam> = Vec::new();
    for pair in query.split('&') {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("granular parameter `{pair}` is not name=value"))?;
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(format!(
                "granular parameter name `{name}`: letters, digits, _ and - only (no modifiers)"
            ));
        }
        let value_ok = !value.is_empty()
            && value
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b",&%#\\=".contains(&b));
        if !value_ok {
            return Err(format!(
                "granular value for `{name}`: one literal value without spaces , & % # \\ or = \
                 (use one scope per value)"
            ));
        }
        if params.iter().any(|p| p.name == name) {
            return Err(format!("granular parameter `{name}` is repeated"));
        }
        params.push(ScopeParam {
            name: name.to_owned(),
            value: value.to_owned(),
        });
    }
    Ok(params)
}

fn check_granular(resource_type: Option<ResourceType>, perms: Perms) -> Result<(), String> {
    if resource_type.is_none() {
        return Err("granular parameters need a resource type, not *".into());
    }
    if [Perm::Create, Perm::Update, Perm::Delete]
        .iter()
        .any(|p| perms.contains(*p))
    {
        return Err(
            "granular parameters cannot be checked on c, u or d (fhirwall does not match request \
             bodies against them): grant writes in a scope of their own"
                .into(),
        );
    }
    if !perms.contains(Perm::Search) {
        return Err(
            "a granular scope without s can never be checked (reads need the response): add s"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
