//! The EHR's authorization server for the token broker tests and the demo: npm `oidc-provider`
//! run by `tests/clients/auth_server.mjs` (client credentials with `private_key_jwt`,
//! introspection, revocation), on plain HTTP on a loopback address, stopped on drop. Its
//! tokens live in its memory: a restart forgets them.

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::{client_libs, ehr::Introspection, eventually, http1};

/// A client the server registers: an integration's client id, the scopes it may be granted,
/// and its public keys (`fhirwall credentials jwks --integration ...`).
#[derive(Clone, Debug)]
pub struct AuthClient {
    pub client_id: String,
    pub scope: String,
    pub jwks: Value,
}

pub struct AuthServer {
    pub addr: SocketAddr,
    dir: PathBuf,
    node: PathBuf,
    modules: PathBuf,
    child: Option<Child>,
}

/// The client the EHR's nginx introspects tokens as.
const INTROSPECTOR: (&str, &str) = ("ehr-nginx", "ehr-nginx-introspection-secret");

impl AuthServer {
    /// Installs oidc-provider when missing and starts it on `addr`, issuing tokens that live
    /// `ttl` seconds to `clients`; its files and log under `dir`.
    pub fn start(
        dir: &Path,
        addr: SocketAddr,
        ttl: u64,
        clients: &[AuthClient],
    ) -> anyhow::Result<Self> {
        let (node, modules) = client_libs::oidc_provider().map_err(anyhow::Error::msg)?;
        fs::create_dir_all(dir)?;
        let config = json!({
            "host": addr.ip().to_string(),
            "port": addr.port(),
            "ttl": ttl,
            "clients": clients.iter().map(|c| json!({
                "client_id": c.client_id,
                "scope": c.scope,
                "jwks": c.jwks,
            })).collect::<Vec<_>>(),
            "introspector": { "client_id": INTROSPECTOR.0, "client_secret": INTROSPECTOR.1 },
        });
        fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
        let mut server = Self {
            addr,
            dir: dir.to_owned(),
            node,
            modules,
            child: None,
        };
        server.restart()?;
        Ok(server)
    }

    /// `http://<addr>/token`.
    #[must_use]
    pub fn token_endpoint(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// `http://<addr>/token/revocation`.
    #[must_use]
    pub fn revocation_endpoint(&self) -> String {
        format!("http://{}/token/revocation", self.addr)
    }

    /// How the EHR's nginx reaches this server's introspection; `legacy` Authorization values
    /// pass without it.
    #[must_use]
    pub fn introspection(&self, legacy: &[&str]) -> Introspection {
        Introspection {
            server: self.addr,
            client_id: INTROSPECTOR.0.into(),
            client_secret: INTROSPECTOR.1.into(),
            legacy: legacy.iter().map(|&l| l.to_owned()).collect(),
        }
    }

    /// What the server says about `token` (RFC 7662): `active`, `client_id`, `scope`, `exp`.
    pub fn introspect(&self, token: &str) -> anyhow::Result<Value> {
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", INTROSPECTOR.0, INTROSPECTOR.1));
        let authorization = format!("Basic {basic}");
        let body = format!("token={token}");
        let host = self.addr.to_string();
        let response = http1::plain(
            self.addr,
            &http1::Request {
                method: "POST",
                target: "/token/introspection",
                host: &host,
                headers: &[
                    ("Authorization", &authorization),
                    ("Content-Type", "application/x-www-form-urlencoded"),
                ],
                body: Some(body.as_bytes()),
            },
        )?;
        if response.status != 200 {
            bail!("introspection answered {}", response.status);
        }
        Ok(response.json())
    }

    /// Stops the server (SIGTERM, then SIGKILL).
    pub fn stop(&mut self) {
        crate::ehr::stop(self.child.take());
    }

    /// Starts the server again (a fresh memory: earlier tokens are unknown to it).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let child = crate::spawn_server(
            Command::new(&self.node)
                .arg(crate::client_libs::script("auth_server.mjs"))
                .arg(self.dir.join("config.json"))
                .env("OIDC_PROVIDER_MODULES", &self.modules),
            &self.dir.join("auth-server.log"),
        )
        .context("starting the authorization server (node oidc-provider)")?;
        self.child = Some(child);
        let ready = eventually(Duration::from_secs(30), || {
            if self
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some())
            {
                return Some(false);
            }
            std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(200))
                .ok()
                .map(|_| true)
        });
        if ready != Some(true) {
            bail!("the authorization server did not start:\n{}", self.log());
        }
        Ok(())
    }

    /// Its log (what it refused and why).
    #[must_use]
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("auth-server.log")).unwrap_or_default()
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        self.stop();
    }
}
