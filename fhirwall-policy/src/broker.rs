//! `credentials.broker`: the integration's short-lived token, obtained by the agent from the
//! EHR's authorization server with the SMART Backend Services flow (OAuth 2.0 client
//! credentials with a signed JWT assertion, RFC 7523;
//! <https://hl7.org/fhir/smart-app-launch/backend-services.html>). The policy names the server
//! and the client; the signing keys are the agent's own (`fhirwall credentials keygen`).

use std::{fmt, net::IpAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

use super::scope::Scope;

/// Where and how the agent obtains the integration's tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBroker {
    /// The authorization server's token endpoint.
    pub token_endpoint: Endpoint,
    /// The client id the authorization server registered for this integration.
    pub client_id: String,
    /// The assertion's `aud`; the token endpoint when absent (what SMART asks for).
    #[serde(default)]
    pub audience: Option<String>,
    /// The scopes to request; the integration's own scopes when absent. Each must be one of
    /// them, so the token the EHR sees is never broader than the policy.
    #[serde(default)]
    pub scopes: Option<Vec<Scope>>,
    /// RFC 7009 revocation endpoint: a revoked integration's token is revoked there too.
    #[serde(default)]
    pub revocation_endpoint: Option<Endpoint>,
    /// CA certificates (PEM) the authorization server's certificate is checked against, in
    /// addition to the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl TokenBroker {
    /// The assertion's audience.
    #[must_use]
    pub fn audience(&self) -> &str {
        self.audience
            .as_deref()
            .unwrap_or(self.token_endpoint.as_str())
    }

    /// The `scope` parameter: the listed scopes, or else `own`, space-separated.
    #[must_use]
    pub fn scope_parameter(&self, own: &[Scope]) -> String {
        let scopes = self.scopes.as_deref().unwrap_or(own);
        let texts: Vec<String> = scopes.iter().map(ToString::to_string).collect();
        texts.join(" ")
    }
}

/// An authorization server URL: `https://`, or `http://` to a loopback address only (a token
/// and its assertion must not cross a network in clear text).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Endpoint(String);

impl Endpoint {
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Endpoint {
    type Error = String;

    fn try_from(url: String) -> Result<Self, Self::Error> {
        let (plain, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (true, rest)
        } else {
            return Err(format!("`{url}`: expected an https:// URL"));
        };
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        if authority.is_empty() || authority.contains('@') || url.contains(['#', ' ']) {
            return Err(format!(
                "`{url}`: expected https://host[:port]/path, without credentials or a fragment"
            ));
        }
        if plain && !loopback(authority) {
            return Err(format!(
                "`{url}`: plain http:// only to a loopback address; use https://"
            ));
        }
        Ok(Endpoint(url))
    }
}

impl From<Endpoint> for String {
    fn from(e: Endpoint) -> Self {
        e.0
    }
}

/// Whether `host[:port]` names a loopback address literally.
fn loopback(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_https_or_loopback() {
        for ok in [
            "https://auth.ehr.example/oauth/token",
            "https://10.0.0.5:8443/token",
            "http://127.0.0.1:3000/token",
            "http://127.4.0.1/token",
            "http://[::1]:3000/token",
        ] {
            assert!(Endpoint::try_from(ok.to_owned()).is_ok(), "{ok}");
        }
        for bad in [
            "http://auth.ehr.example/token",
            "http://10.0.0.5/token",
            "ftp://127.0.0.1/token",
            "https://user:pw@auth/token",
            "https:///token",
            "https://auth/token#x",
            "auth/token",
        ] {
            assert!(Endpoint::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }
}
