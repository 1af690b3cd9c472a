//! The demo's copy of policies/ and the files it names, and the agent's configuration.
//!
//! policies/ is used unchanged except for machine-specific paths:
//! - the upstream `ehr-fhir` gets `tls.ca_file:` the demo EHR CA (generated per run);
//! - `/etc/fhirwall/...` (credentials to inject, mTLS client certificates) become paths under
//!   the demo directory, where the demo writes those files;
//! - only if this host has no `/usr/bin/python3.11`: the Python selectors name the host's
//!   Python instead;
//! - the brokered integration's authorization server is the demo's (oidc-provider on loopback).

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use fhirwall_tests::{
    agent::AgentFiles,
    auth::{AuthClient, AuthServer},
    ehr::EhrServer,
};

use crate::scenario::SHARED_CREDENTIAL;

/// The interpreter policies/ names for the Python integrations.
pub const POLICY_PYTHON: &str = "/usr/bin/python3.11";

/// The integration that runs on brokered tokens in the demo, and the scopes it is registered
/// for at the authorization server (those of policies/payer-claims.yaml).
pub const BROKERED: (&str, &str) = (
    "payer-claims-batch",
    "system/Claim.rs system/Coverage.rs system/ExplanationOfBenefit.rs",
);

/// What the demo EHR still accepts without a token check: the secrets the sidecar injects for
/// two integrations, and the shared credential the reporting script's requests carry.
pub const LEGACY_CREDENTIALS: [&str; 3] = [
    "Bearer lab-results-interface-own-demo-token",
    "Bearer patient-portal-backend-own-demo-token",
    SHARED_CREDENTIAL,
];

/// The brokered integration's key (`fhirwall credentials keygen`, in the agent's state) and the
/// authorization server that registers its JWKS, issuing tokens for five minutes.
pub fn authorization_server(
    fhirwall: &Path,
    demo: &Path,
    state: &Path,
    addr: std::net::SocketAddr,
) -> anyhow::Result<AuthServer> {
    let keys = state.join("keys");
    let run = |args: &[&str]| -> anyhow::Result<Vec<u8>> {
        let out = std::process::Command::new(fhirwall)
            .args(args)
            .arg("--keys-dir")
            .arg(&keys)
            .output()?;
        if !out.status.success() {
            bail!(
                "fhirwall {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out.stdout)
    };
    run(&["credentials", "keygen", "--integration", BROKERED.0])?;
    let jwks = run(&["credentials", "jwks", "--integration", BROKERED.0])?;
    let client = AuthClient {
        client_id: BROKERED.0.into(),
        scope: BROKERED.1.into(),
        jwks: serde_json::from_slice(&jwks)?,
    };
    AuthServer::start(&demo.join("auth"), addr, 300, &[client])
}

/// Writes `demo/policies` from `source`, and the secrets and certificates it refers to.
pub fn policies(
    source: &Path,
    demo: &Path,
    ehr: &EhrServer,
    auth: &AuthServer,
    python: &Path,
) -> anyhow::Result<PathBuf> {
    let target = demo.join("policies");
    fs::create_dir_all(&target)?;
    let etc = demo.join("etc/fhirwall");
    let mut files: Vec<PathBuf> = fs::read_dir(source)
        .with_context(|| format!("reading {}", source.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    for file in files {
        let mut text = fs::read_to_string(&file)?;
        text = text.replace("/etc/fhirwall/", &format!("{}/", etc.display()));
        if python != Path::new(POLICY_PYTHON) {
            text = text.replace(POLICY_PYTHON, &python.display().to_string());
        }
        if text.contains("kind: Upstream") {
            text = with_ca_file(&text, &ehr.ca.cert)?;
        }
        text = text
            .replace(
                "https://auth.stmarys.example.org/oauth2/token",
                &auth.token_endpoint(),
            )
            .replace(
                "https://auth.stmarys.example.org/oauth2/revoke",
                &auth.revocation_endpoint(),
            );
        let name = file.file_name().context("a file name")?;
        fs::write(target.join(name), text)?;
    }
    write_credentials(&etc, ehr)?;
    Ok(target)
}

/// Adds `ca_file` to the `tls:` block of the upstream.
fn with_ca_file(text: &str, ca: &Path) -> anyhow::Result<String> {
    let anchor = "tls:\n  mode: tls\n";
    if !text.contains(anchor) {
        bail!("policies/upstreams.yaml no longer has `{anchor}`: update the demo");
    }
    Ok(text.replacen(anchor, &format!("{anchor}  ca_file: {}\n", ca.display()), 1))
}

/// The credentials the sidecar injects upstream, and the lab interface's mTLS certificate.
fn write_credentials(etc: &Path, ehr: &EhrServer) -> anyhow::Result<()> {
    let secrets = etc.join("secrets");
    fs::create_dir_all(&secrets)?;
    for integration in ["lab-results-interface", "patient-portal-backend"] {
        let path = secrets.join(format!("{integration}.token"));
        fs::write(&path, format!("Bearer {integration}-own-demo-token\n"))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
    }
    let tls = etc.join("tls");
    ehr.ca.client(&tls, "lab-results-interface")?;
    Ok(())
}

/// The agent's configuration: attached to the demo cgroup only, state and admin socket under
/// the demo directory, metrics on loopback.
pub fn agent_config(
    files: &AgentFiles,
    state: &Path,
    cgroup: &Path,
    pins: &Path,
    kernel_enforcement: bool,
) -> anyhow::Result<()> {
    let text = format!(
        "# Written by `cargo xtask demo`; see deploy/agent.yaml for every field.\n\
         node_name: demo-ehr-host\n\
         policies: {policies}\n\
         enforcement: {enforcement}\n\
         state_dir: {state}\n\
         sidecar:\n  listen_v4: 127.0.0.1\n  listen_v6: \"::1\"\n  transparent_port: {port}\n  agent_mark: 0x00de7000\n\
         kernel:\n  pin_dir: {pins}\n  cgroup: {cgroup}\n\
         admin:\n  socket: {socket}\n  metrics: {metrics}\n",
        policies = files.policies.display(),
        enforcement = if kernel_enforcement {
            "kernel"
        } else {
            "sidecar"
        },
        state = state.display(),
        port = files.transparent_port,
        pins = pins.display(),
        cgroup = cgroup.display(),
        socket = files.socket.display(),
        metrics = files.metrics,
    );
    fs::write(&files.config, text).context("writing the agent config")
}
