//! The policy documents as typed values. Every struct denies unknown fields, so a typo is a load
//! error that names the file and line, never a silently ignored setting.

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr};

use fhirwall_fhir::{ClassifyConfig, ClassifyError, TenantMode};
use serde::{Deserialize, Serialize};

use super::credential::HeaderName;

/// `host:port` of a protected FHIR endpoint; the host may be a name, resolved by the agent.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Self {
                host: addr.ip().to_string(),
                port: addr.port(),
            });
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("`{s}` is not host:port"))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("`{port}` is not a port number"))?;
        let valid_host = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid_host || port == 0 {
            return Err(format!("`{s}` is not a valid host:port"));
        }
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl TryFrom<String> for HostPort {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<HostPort> for String {
    fn from(hp: HostPort) -> Self {
        hp.to_string()
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// How the sidecar talks to an upstream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// TLS with certificate verification (the default).
    #[default]
    Tls,
    /// Plain HTTP, for internal endpoints that have no TLS.
    Plain,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    #[serde(default)]
    pub mode: TlsMode,
    /// PEM bundle of CAs that sign the upstream's certificate; the system roots when absent.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Name to verify and send as SNI; the host of the first address when absent.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// A protected FHIR endpoint: every connection to one of its addresses goes through the sidecar.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub name: String,
    /// At least one `host:port`; names are resolved at load and re-resolved periodically.
    pub addresses: Vec<HostPort>,
    /// FHIR base path, e.g. `/fhir/R4`.
    #[serde(default = "root_path")]
    pub base_path: String,
    #[serde(default)]
    pub tls: UpstreamTls,
    /// How requests name a tenant, for multi-tenant FHIR servers; none when absent.
    #[serde(default)]
    pub tenant: Option<UpstreamTenant>,
    /// Where this server reads requests differently from the conservative default.
    #[serde(default)]
    pub server: ServerProfile,
    /// Refuse every other port of this upstream's addresses to the host's workloads (a second
    /// API listener, an admin console, SSH), not only the FHIR port. Not applied to this host's
    /// own addresses, where it would close every local service.
    #[serde(default)]
    pub protect_all_ports: bool,
}

/// How a server reads what R4 leaves open. Every default is the conservative reading: the one
/// under which a request is allowed only if it is safe whatever the server does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerProfile {
    /// Query parameters the server uses for paging continuations (HAPI: `_getpages`,
    /// `_getpagesoffset`; helios-hfs: `_cursor`, `_offset`). A request carrying one must
    /// follow a link the server gave the same integration.
    #[serde(default = "default_paging_params")]
    pub paging_params: Vec<QueryParamName>,
    /// Parameters starting with `_` the server defines beyond R4's (each one read by the
    /// server in a way the policy cannot see: list only those that select no data).
    #[serde(default)]
    pub parameters: Vec<QueryParamName>,
    /// Request headers forwarded beyond the built-in list (tracing or routing headers the
    /// server needs and that select no data).
    #[serde(default)]
    pub headers: Vec<HeaderName>,
    /// Whether the server applies `_type` on history (not an R4 history parameter).
    #[serde(default)]
    pub history_type: Applied,
    /// Whether the server honours method-override headers (`X-HTTP-Method-Override`): then
    /// they are refused; when it ignores them they are stripped.
    #[serde(default)]
    pub method_override: Honoured,
}

impl Default for ServerProfile {
    fn default() -> Self {
        ServerProfile {
            paging_params: default_paging_params(),
            parameters: Vec::new(),
            headers: Vec::new(),
            history_type: Applied::Ignored,
            method_override: Honoured::Honoured,
        }
    }
}

fn default_paging_params() -> Vec<QueryParamName> {
    [
        "_getpages",
        "_getpagesoffset",
        "_page",
        "_offset",
        "_cursor",
    ]
    .map(|p| QueryParamName(p.to_owned()))
    .to_vec()
}

/// Whether a server applies a parameter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Applied {
    Applied,
    #[default]
    Ignored,
}

/// Whether a server honours a header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Honoured {
    #[default]
    Honoured,
    Ignored,
}

/// A query parameter name starting with `_` (`[A-Za-z0-9_-]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QueryParamName(String);

impl QueryParamName {
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for QueryParamName {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        let ok = name.len() > 1
            && name.starts_with('_')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(QueryParamName(name))
        } else {
            Err(format!(
                "`{name}` is not a parameter name starting with _ (letters, digits, _ and -)"
            ))
        }
    }
}

impl From<QueryParamName> for String {
    fn from(name: QueryParamName) -> Self {
        name.0
    }
}

impl Upstream {
    /// The name requests to this endpoint carry in `Host`: the TLS server name when set, else
    /// the first address (its port left out when it is the scheme's default).
    #[must_use]
    pub fn authority(&self) -> String {
        if let Some(name) = &self.tls.server_name {
            return name.clone();
        }
        let default_port = if self.tls.mode == TlsMode::Plain {
            80
        } else {
            443
        };
        match self.addresses.first() {
            Some(a) if a.port == default_port => a.host.clone(),
            Some(a) => a.to_string(),
            None => String::new(),
        }
    }

    /// The classifier settings for this endpoint: base path, tenant mode, and the names it is
    /// reachable under (for absolute URLs in Bundle entries).
    pub fn classify_config(&self) -> Result<ClassifyConfig, ClassifyError> {
        let mut config = ClassifyConfig::new(&self.base_path)?;
        config.tenant = match &self.tenant {
            None => TenantMode::None,
            Some(UpstreamTenant::PathSegment) => TenantMode::PathSegment,
            Some(UpstreamTenant::Header(name)) => TenantMode::Header(name.as_str().to_owned()),
        };
        let default_port = if self.tls.mode == TlsMode::Plain {
            80
        } else {
            443
        };
        for address in &self.addresses {
            config.authorities.push(if address.port == default_port {
                address.host.clone()
            } else {
                address.to_string()
            });
        }
        if let Some(name) = &self.tls.server_name {
            config.authorities.push(name.to_ascii_lowercase());
        }
        let server = &self.server;
        config.paging_params = server
            .paging_params
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect();
        config.extra_params = server
            .parameters
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect();
        config.extra_headers = server
            .headers
            .iter()
            .map(|h| h.as_str().to_ascii_lowercase())
            .collect();
        if let Some(UpstreamTenant::Header(name)) = &self.tenant {
            config
                .extra_headers
                .push(name.as_str().to_ascii_lowercase());
        }
        config.history_type = server.history_type == Applied::Applied;
        config.strip_method_override = server.method_override == Honoured::Ignored;
        Ok(config)
    }
}

/// Where a multi-tenant server reads the tenant from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TenantDoc", into = "TenantDoc")]
pub enum UpstreamTenant {
    /// `[base]/[tenant]/Patient/1`.
    PathSegment,
    /// A request header.
    Header(HeaderName),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum TenantModeName {
    PathSegment,
    Header,
}

/// The YAML form of [`UpstreamTenant`]: `{ mode: path-segment }` or `{ mode: header, header: X-Tenant }`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantDoc {
    mode: TenantModeName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    header: Option<HeaderName>,
}

impl TryFrom<TenantDoc> for UpstreamTenant {
    type Error = String;

    fn try_from(doc: TenantDoc) -> Result<Self, Self::Error> {
        match (doc.mode, doc.header) {
            (TenantModeName::PathSegment, None) => Ok(UpstreamTenant::PathSegment),
            (TenantModeName::Header, Some(h)) => Ok(UpstreamTenant::Header(h)),
            (TenantModeName::PathSegment, Some(_)) => {
                Err("`header` only goes with mode: header".into())
            }
            (TenantModeName::Header, None) => {
                Err("mode: header needs `header:` naming the request header".into())
            }
        }
    }
}

impl From<UpstreamTenant> for TenantDoc {
    fn from(t: UpstreamTenant) -> Self {
        match t {
            UpstreamTenant::PathSegment => TenantDoc {
                mode: TenantModeName::PathSegment,
                header: None,
            },
            UpstreamTenant::Header(h) => TenantDoc {
                mode: TenantModeName::Header,
                header: Some(h),
            },
        }
    }
}

fn root_path() -> String {
    "/".to_owned()
}

/// Lifecycle state of an integration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntegrationStatus {
    Active,
    /// Temporarily stopped; its workloads are refused like revoked ones.
    Suspended,
    /// Permanently withdrawn.
    Revoked,
}

impl IntegrationStatus {
    /// As written in policy files.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            IntegrationStatus::Active => "active",
            IntegrationStatus::Suspended => "suspended",
            IntegrationStatus::Revoked => "revoked",
        }
    }
}

/// Whether policy denials are enforced or only audited (rollout).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    /// Audit "would deny" and let the request through.
    Observe,
}

/// Where unregistered workloads are stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    /// In the sidecar, with an OperationOutcome and an audit record (the default).
    #[default]
    Sidecar,
    /// Already at `connect()`, in the kernel (`EPERM`).
    Kernel,
}
