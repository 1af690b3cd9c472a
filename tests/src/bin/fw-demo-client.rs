//! The demo's stand-in for legacy integration software (an interface engine channel, a claims
//! batch): it knows nothing of fhirwall. It connects straight to the FHIR server's address over
//! TLS, with the host's shared credential, and runs a script of requests. The kernel redirects
//! the connection into the sidecar; the client only has to trust the node CA, as EHR hosts do.
//!
//! fw-demo-client --base https://HOST:PORT --ca FILE < script.json
//!
//! The script is a JSON array of steps: {"name", "method", "target", "headers": {..},
//! "body": <JSON>, "save": {"var": "/json/pointer"}}. `{var}` in a target or body is replaced by
//! a value saved from an earlier response. One JSON line per step on stdout: name, status, and
//! for FHIR answers the resource type, id, entry count and OperationOutcome diagnostics.

use std::{
    collections::BTreeMap,
    io::Read as _,
    net::{SocketAddr, TcpStream},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, bail};
use fhirwall_tests::http1::{self, Request, Response};
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, StreamOwned,
    pki_types::{CertificateDer, ServerName, pem::PemObject as _},
};
use serde_json::{Value, json};

struct Args {
    base: String,
    ca: String,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut base = None;
    let mut ca = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--base" => base = it.next(),
            "--ca" => ca = it.next(),
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(Args {
        base: base.context("--base https://HOST:PORT is required")?,
        ca: ca.context("--ca FILE is required")?,
    })
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let authority = args
        .base
        .strip_prefix("https://")
        .context("--base must be an https:// URL")?
        .trim_end_matches('/')
        .to_owned();
    let addr: SocketAddr = authority
        .parse()
        .context("the demo addresses its server by IP:port")?;
    let config = Arc::new(tls_config(&args.ca)?);
    let mut script = String::new();
    std::io::stdin().read_to_string(&mut script)?;
    let steps: Vec<Value> = serde_json::from_str(&script).context("the script on stdin")?;
    let mut vars = BTreeMap::new();
    for step in &steps {
        let line = match run_step(&config, addr, &authority, step, &mut vars) {
            Ok(line) => line,
            Err(e) => json!({"name": step["name"], "error": format!("{e:#}")}),
        };
        println!("{line}");
    }
    Ok(())
}

fn tls_config(ca: &str) -> anyhow::Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {ca}"))? {
        roots.add(cert?)?;
    }
    Ok(ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn run_step(
    config: &Arc<ClientConfig>,
    addr: SocketAddr,
    authority: &str,
    step: &Value,
    vars: &mut BTreeMap<String, String>,
) -> anyhow::Result<Value> {
    let method = step["method"].as_str().context("step without method")?;
    let target = substitute(
        step["target"].as_str().context("step without target")?,
        vars,
    );
    let body = match &step["body"] {
        Value::Null => None,
        b => Some(substitute(&b.to_string(), vars).into_bytes()),
    };
    let mut headers: Vec<(String, String)> = step["headers"]
        .as_object()
        .map(|h| {
            h.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    headers.push(("Accept".into(), "application/fhir+json".into()));
    if body.is_some() {
        headers.push(("Content-Type".into(), "application/fhir+json".into()));
    }
    let header_refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let response = send(
        config,
        addr,
        &Request {
            method,
            target: &target,
            host: authority,
            headers: &header_refs,
            body: body.as_deref(),
        },
    )?;
    let json = response.json();
    if let Some(save) = step["save"].as_object() {
        for (var, pointer) in save {
            if let Some(value) = pointer.as_str().and_then(|p| json.pointer(p)) {
                let text = value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned);
                vars.insert(var.clone(), text);
            }
        }
    }
    Ok(summary(step, method, &target, &response, &json))
}

/// What the step saw, without the body: no PHI on the demo's screen beyond ids.
fn summary(step: &Value, method: &str, target: &str, response: &Response, json: &Value) -> Value {
    let diagnostics = (json["resourceType"] == "OperationOutcome")
        .then(|| json["issue"][0]["diagnostics"].clone());
    json!({
        "name": step["name"],
        "method": method,
        "target": target,
        "status": response.status,
        "resourceType": json["resourceType"],
        "id": json["id"],
        "entries": json["entry"].as_array().map(Vec::len),
        "diagnostics": diagnostics,
    })
}

fn send(
    config: &Arc<ClientConfig>,
    addr: SocketAddr,
    request: &Request<'_>,
) -> anyhow::Result<Response> {
    // What the application asked for: its connect() is redirected by the kernel, not by us.
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connect({addr})"))?;
    tcp.set_read_timeout(Some(Duration::from_mins(1)))?;
    let name = ServerName::from(addr.ip());
    let conn = ClientConnection::new(Arc::clone(config), name)?;
    let mut tls = StreamOwned::new(conn, tcp);
    http1::exchange(&mut tls, request)
}

fn substitute(text: &str, vars: &BTreeMap<String, String>) -> String {
    vars.iter().fold(text.to_owned(), |acc, (k, v)| {
        acc.replace(&format!("{{{k}}}"), v)
    })
}
