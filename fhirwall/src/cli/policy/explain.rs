//! `fhirwall policy explain`: the proxy's path for one request, without a network: classify with
//! the upstream's classifier config, build the subject from the headers, decide, print.

use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use fhirwall_fhir::{
    ClassifyConfig, FhirRequest, HttpRequest, classify,
    response::{BodyFormat, CheckMode, ResponseCheck, ResponseRules},
};
use fhirwall_policy::{
    Decision, Integration, Policy, PurposeOfUse, Rule, Subject, decide, response_rules,
};
use serde_json::{Value, json};

use super::ExplainArgs;

/// What `--response` is checked with when the agent config is not at hand: its default
/// `sidecar.max_response_hold_bytes`.
const MAX_HELD: usize = 8 << 20;

/// Exit status for an invalid policy or wrong arguments.
const USAGE: u8 = 2;

pub(super) fn run(args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    // The policy is validated as of now, as the agent would load it; the decision is made as
    // of --at, to ask what happens when an exception or an integration expires.
    let now = args.at.unwrap_or_else(jiff::Timestamp::now);
    let policy = match super::load_reporting(&args.dir) {
        Ok(Some(policy)) => policy,
        Ok(None) => return Ok(ExitCode::from(USAGE)),
        Err(e) => {
            eprintln!("{e:#}");
            return Ok(ExitCode::from(USAGE));
        }
    };
    match explain(&policy, args, now) {
        Ok(report) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report.json)?);
            } else {
                print!("{}", report.text);
            }
            Ok(if report.forwards {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Err(e) => {
            eprintln!("fhirwall policy explain: {e:#}");
            Ok(ExitCode::from(USAGE))
        }
    }
}

struct Report {
    forwards: bool,
    json: Value,
    text: String,
}

/// The request as given on the command line.
struct Input {
    method: String,
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Option<Vec<u8>>,
}

fn explain(policy: &Policy, args: &ExplainArgs, now: jiff::Timestamp) -> anyhow::Result<Report> {
    let integration = policy.integration(&args.integration).ok_or_else(|| {
        let known: Vec<&str> = policy
            .integrations
            .iter()
            .map(|i| i.name.as_str())
            .collect();
        anyhow!(
            "no integration `{}` (known: {})",
            args.integration,
            known.join(", ")
        )
    })?;
    let upstream = match &args.upstream {
        Some(name) => name.as_str(),
        None => integration
            .upstreams
            .first()
            .map(String::as_str)
            .context("the integration names no upstream")?,
    };
    let config = policy
        .classify_config(upstream)
        .with_context(|| format!("no upstream `{upstream}` in the policy"))?;
    let input = input(policy, args, upstream, config)?;
    let headers: Vec<(&str, &[u8])> = input
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    let http = HttpRequest {
        method: &input.method,
        target: &input.target,
        headers: &headers,
        body: input.body.as_deref(),
    };
    let subject = Subject::from_headers(policy, Some(integration), upstream, &headers, now);
    let response = match &args.response {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("reading the response {}", path.display()))?,
        ),
        None => None,
    };
    let report = match classify(&http, config) {
        Ok(request) => decided(
            policy,
            &subject,
            &request,
            integration,
            upstream,
            response.as_deref(),
        ),
        Err(e) => unclassifiable(&e, integration, upstream),
    };
    Ok(report)
}

/// Method, target (made absolute under the base path), headers (Host, purpose, Content-Type
/// filled in when not given), body.
fn input(
    policy: &Policy,
    args: &ExplainArgs,
    upstream: &str,
    config: &ClassifyConfig,
) -> anyhow::Result<Input> {
    let (method, target) = args
        .request
        .trim()
        .split_once(char::is_whitespace)
        .context("--request must be \"METHOD TARGET\"")?;
    let target = target.trim();
    let lower = target.to_ascii_lowercase();
    let absolute = lower.starts_with("http://") || lower.starts_with("https://");
    let target = if target.starts_with('/') || absolute {
        target.to_owned()
    } else {
        let base = config.base_path();
        format!("{}/{target}", base.trim_end_matches('/'))
    };
    let mut headers = Vec::new();
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .with_context(|| format!("--header `{header}` is not \"Name: value\""))?;
        headers.push((name.trim().to_owned(), value.trim().as_bytes().to_vec()));
    }
    let has = |headers: &[(String, Vec<u8>)], name: &str| {
        headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    };
    if let Some(purpose) = &args.purpose {
        let name = policy.settings.purpose_header.as_str().to_owned();
        headers.push((name, purpose.as_bytes().to_vec()));
    }
    if !has(&headers, "host")
        && let Some(address) = policy.upstream(upstream).and_then(|u| u.addresses.first())
    {
        headers.push(("Host".into(), address.to_string().into_bytes()));
    }
    let body = match &args.body {
        Some(path) => Some(
            std::fs::read(path).with_context(|| format!("reading the body {}", path.display()))?,
        ),
        None => None,
    };
    if let Some(body) = &body
        && !has(&headers, "content-type")
    {
        let content_type = match body.trim_ascii_start().first() {
            Some(b'{') => "application/fhir+json",
            Some(b'<') => "application/fhir+xml",
            Some(b'[') => "application/json-patch+json",
            _ => "application/x-www-form-urlencoded",
        };
        headers.push(("Content-Type".into(), content_type.as_bytes().to_vec()));
    }
    if method.is_empty() {
        bail!("--request must be \"METHOD TARGET\"");
    }
    Ok(Input {
        method: method.to_owned(),
        target,
        headers,
        body,
    })
}

fn decided(
    policy: &Policy,
    subject: &Subject<'_>,
    request: &FhirRequest,
    integration: &Integration,
    upstream: &str,
    response: Option<&[u8]>,
) -> Report {
    let decision = decide(policy, subject, request);
    let rules = decision
        .forwards()
        .then(|| response_rules(policy, subject, request, &decision, MAX_HELD));
    let response_check = rules
        .as_ref()
        .filter(|r| r.mode != CheckMode::Record)
        .map(|r| r.mode.as_str());
    let response_report = match (&rules, response) {
        (Some(rules), Some(body)) => check_response(rules, body),
        _ => Value::Null,
    };
    let purpose = match decision {
        Decision::Allow { purpose, .. } => purpose.map(PurposeOfUse::code),
        Decision::Deny { .. } | Decision::WouldDeny { .. } => None,
    };
    let entries: Vec<Value> = request
        .entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let d = decide(policy, subject, entry);
            json!({
                "index": index,
                "method": entry.method,
                "interaction": entry.interaction,
                "resourceType": entry.resource_type,
                "id": entry.id,
                "compartment": entry.compartment,
                "operation": entry.operation.as_ref().map(|o| &o.name),
                "decision": d.label(),
                "rule": d.rule().to_string(),
                "reason": d.reason().map(ToString::to_string),
            })
        })
        .collect();
    let json = json!({
        "decision": if decision.forwards() { "allow" } else { "deny" },
        "wouldDeny": matches!(decision, Decision::WouldDeny { .. }),
        "outcome": decision.label(),
        "rule": decision.rule().to_string(),
        "reason": decision.reason().map(ToString::to_string),
        "breakGlass": decision.is_break_glass(),
        "integration": integration.name,
        "mode": integration.mode,
        "upstream": upstream,
        "purposeOfUse": purpose,
        "method": request.method,
        "interaction": request.interaction,
        "resourceType": request.resource_type,
        "id": request.id,
        "versionId": request.version_id,
        "compartment": request.compartment,
        "operation": request.operation.as_ref().map(|o| &o.name),
        "tenant": request.tenant,
        "entries": entries,
        "httpStatus": if decision.forwards() { Value::Null } else { json!(403) },
        "strippedHeaders": request.stripped_headers,
        "responseCheck": response_check,
        "response": response_report,
    });
    let text = text(&json);
    Report {
        forwards: decision.forwards(),
        json,
        text,
    }
}

/// A request the classifier refuses: the proxy denies it with the classifier's status.
fn unclassifiable(
    e: &fhirwall_fhir::ClassifyError,
    integration: &Integration,
    upstream: &str,
) -> Report {
    let json = json!({
        "decision": "deny",
        "wouldDeny": false,
        "outcome": "deny",
        "rule": Rule::Unclassifiable.to_string(),
        "reason": e.to_string(),
        "breakGlass": false,
        "integration": integration.name,
        "mode": integration.mode,
        "upstream": upstream,
        "purposeOfUse": Value::Null,
        "method": Value::Null,
        "interaction": Value::Null,
        "resourceType": Value::Null,
        "id": Value::Null,
        "versionId": Value::Null,
        "compartment": Value::Null,
        "operation": Value::Null,
        "tenant": Value::Null,
        "entries": [],
        "httpStatus": e.http_status(),
        "issueType": e.issue_type().code(),
        "strippedHeaders": [],
        "responseCheck": Value::Null,
        "response": Value::Null,
    });
    let text = text(&json);
    Report {
        forwards: false,
        json,
        text,
    }
}

/// What the check would have done with `body` (JSON, or NDJSON when its first line is a whole
/// document followed by another). Counts and types only: the file is patient data.
fn check_response(rules: &ResponseRules, body: &[u8]) -> Value {
    let ndjson = body
        .trim_ascii()
        .split(|b| *b == b'\n')
        .filter(|l| !l.trim_ascii().is_empty())
        .count()
        > 1
        && body.trim_ascii_start().first() == Some(&b'{')
        && serde_json::from_slice::<Value>(body).is_err();
    let format = if ndjson {
        BodyFormat::Ndjson
    } else {
        BodyFormat::Json
    };
    let mut check = ResponseCheck::new(rules.clone(), format);
    let mut out = bytes::BytesMut::new();
    let result = check
        .feed(body, &mut out)
        .and_then(|_| check.finish(&mut out));
    let report = check.report();
    let withheld: serde_json::Map<String, Value> = report
        .withheld
        .iter()
        .map(|(t, n)| (t.map_or("(unknown)", |t| t.as_str()).to_owned(), json!(n)))
        .collect();
    json!({
        "mode": rules.mode.as_str(),
        "released": result.is_ok(),
        "refused": result.err().map(|r| r.violation.to_string()),
        "resources": report.resources,
        "withheld": withheld,
        "violation": report.violation.map(|v| v.slug()),
        "patientsCarried": report.patients.len(),
    })
}

/// The report for people, one line per fact.
fn text(report: &Value) -> String {
    let s = |key: &str| report.get(key).and_then(Value::as_str);
    let mut lines = vec![format!(
        "{}  rule {}",
        s("outcome").unwrap_or("?").to_uppercase(),
        s("rule").unwrap_or("?")
    )];
    let request: Vec<&str> = [
        "interaction",
        "resourceType",
        "id",
        "compartment",
        "operation",
    ]
    .into_iter()
    .filter_map(s)
    .collect();
    if !request.is_empty() {
        lines.push(format!("request   {}", request.join(" ")));
    }
    lines.push(format!(
        "caller    {} -> {}",
        s("integration").unwrap_or("?"),
        s("upstream").unwrap_or("?")
    ));
    if let Some(purpose) = s("purposeOfUse") {
        lines.push(format!("purpose   {purpose}"));
    }
    if let Some(reason) = s("reason") {
        lines.push(format!("reason    {reason}"));
    }
    let stripped: Vec<&str> = report
        .get("strippedHeaders")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !stripped.is_empty() {
        lines.push(format!("headers   not forwarded: {}", stripped.join(", ")));
    }
    if let Some(check) = s("responseCheck") {
        lines.push(format!(
            "response  checked ({check}): every resource it carries must be one the \
             integration may see"
        ));
    }
    if let Some(response) = report.get("response").filter(|r| !r.is_null()) {
        let withheld = response
            .get("withheld")
            .map_or(String::new(), Value::to_string);
        let verdict = match response.get("refused").and_then(Value::as_str) {
            Some(refused) => format!("refused: {refused}"),
            None => format!("released, withheld {withheld}"),
        };
        lines.push(format!("          --response: {verdict}"));
    }
    for entry in report
        .get("entries")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let e = |key: &str| entry.get(key).and_then(Value::as_str).unwrap_or("-");
        lines.push(format!(
            "entry {}  {} {}: {} ({})",
            entry
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or_default(),
            e("interaction"),
            e("resourceType"),
            e("decision"),
            e("rule")
        ));
    }
    lines.push(String::new());
    lines.join("\n")
}

#[cfg(test)]
mod tests;
