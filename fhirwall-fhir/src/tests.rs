//! Classification tests. Tables compare a compact rendering of the classification (or of the
//! error) with the expected one, and report every failing row at once.
//!
//! - `tests/http.rs`: every URL form of <http://hl7.org/fhir/R4/http.html> plus path rules.
//! - `tests/search.rs`: search syntax of <http://hl7.org/fhir/R4/search.html>.
//! - `tests/bundle.rs`: batch and transaction Bundles.
//! - `tests/leak.rs`: what a policy must see (includes, chains, `_has`, hidden entries, tricks).
//! - `tests/hostile.rs`: hostile inputs return errors without panicking.

mod bundle;
mod hostile;
mod http;
mod leak;
mod model;
mod search;

use std::fmt::Write as _;

use super::{
    BodyNeed, ClassifyConfig, ClassifyError, FhirRequest, HttpRequest, Include, Query, SearchParam,
    classify,
};

const BASE: &str = "/fhir/R4";

/// Request headers in tests.
type Headers = &'static [(&'static str, &'static str)];

/// Headers of a form-encoded POST `_search`.
const FORM: &[(&str, &str)] = &[("Content-Type", "application/x-www-form-urlencoded")];

/// The config most tests use: base `/fhir/R4`, reachable as `fhir.example`.
fn config() -> ClassifyConfig {
    let mut config = ClassifyConfig::new(BASE).expect("the test base path is valid");
    config.authorities.push("fhir.example".to_owned());
    config
}

/// Classifies with explicit headers and body under `config`. URL tables write creates, updates
/// and patches without the body they must carry: such a request is classified again with the
/// smallest body that fits its URL.
fn run(
    config: &ClassifyConfig,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<FhirRequest, ClassifyError> {
    let result = run_as_given(config, method, target, headers, body);
    let (content_type, body) = match (&result, body) {
        (
            Err(ClassifyError::BodyRequired {
                need: BodyNeed::Resource,
            }),
            None,
        ) => {
            let path = target.split('?').next().unwrap_or_default();
            let after_base = path.strip_prefix(BASE).unwrap_or(path);
            let resource_type = after_base.split('/').find(|s| !s.is_empty()).unwrap_or("");
            let body = format!(r#"{{"resourceType":"{resource_type}"}}"#);
            ("application/fhir+json", body)
        }
        (
            Err(ClassifyError::BodyRequired {
                need: BodyNeed::Patch,
            }),
            None,
        ) => ("application/json-patch+json", "[]".to_owned()),
        _ => return result,
    };
    let mut headers = headers.to_vec();
    headers.push(("Content-Type", content_type));
    run_as_given(config, method, target, &headers, Some(&body))
}

fn run_as_given(
    config: &ClassifyConfig,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<FhirRequest, ClassifyError> {
    let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
    let request = HttpRequest {
        method,
        target,
        headers: &headers,
        body: body.map(str::as_bytes),
    };
    classify(&request, config)
}

/// Classifies a request without headers under the default config.
fn req(method: &str, target: &str) -> Result<FhirRequest, ClassifyError> {
    run(&config(), method, target, &[], None)
}

/// Classifies a request that must succeed.
fn ok(method: &str, target: &str, headers: &[(&str, &str)], body: Option<&str>) -> FhirRequest {
    match run(&config(), method, target, headers, body) {
        Ok(request) => request,
        Err(e) => panic!("{method} {target}: unexpected error {e:?}"),
    }
}

/// `interaction [Type] [id=..] [vid=..] [comp=..] [op=$x@level] [cond(n)] [entries=n]`, or
/// `err:<Debug of the error>`.
fn summary(result: &Result<FhirRequest, ClassifyError>) -> String {
    let r = match result {
        Ok(r) => r,
        Err(e) => return format!("err:{e:?}"),
    };
    let mut s = r.interaction.code().to_owned();
    if let Some(t) = r.resource_type {
        let _ = write!(s, " {t}");
    }
    if let Some(id) = &r.id {
        let _ = write!(s, " id={id}");
    }
    if let Some(vid) = &r.version_id {
        let _ = write!(s, " vid={vid}");
    }
    if let Some(c) = &r.compartment {
        let _ = write!(s, " comp={}/{}", c.resource_type, c.id);
    }
    if let Some(op) = &r.operation {
        let _ = write!(s, " op={}@{:?}", op.name, op.level);
    }
    if let Some(criteria) = &r.conditional {
        let _ = write!(s, " cond({})", criteria.params.len());
    }
    if !r.entries.is_empty() {
        let _ = write!(s, " entries={}", r.entries.len());
    }
    s
}

/// One search parameter as `<Type.param>...name:modifier.link:modifier=["v", ...]`.
fn render_param(p: &SearchParam) -> String {
    let mut s = String::new();
    for link in &p.reverse_chain {
        let _ = write!(s, "<{}.{}>", link.resource_type, link.reference_param);
    }
    s.push_str(&p.name);
    if let Some(m) = p.modifier {
        let _ = write!(s, ":{}", m.as_str());
    }
    for link in &p.chain {
        let _ = write!(s, ".{}", link.name);
        if let Some(m) = link.modifier {
            let _ = write!(s, ":{}", m.as_str());
        }
    }
    let _ = write!(s, "={:?}", p.values);
    s
}

fn render_include(i: &Include) -> String {
    let kind = if i.reverse { "rev" } else { "inc" };
    let iterate = if i.iterate { ":iterate" } else { "" };
    let source = i.source_type.map_or("*", |t| t.as_str());
    let param = i.search_param.as_deref().unwrap_or("*");
    let target = i.target_type.map_or(String::new(), |t| format!(":{t}"));
    format!("{kind}{iterate}={source}:{param}{target}")
}

/// Every part of a query, in a fixed order.
fn render_query(q: &Query) -> Vec<String> {
    let mut out: Vec<String> = q.params.iter().map(render_param).collect();
    out.extend(q.includes.iter().map(render_include));
    if !q.types.is_empty() {
        out.push(format!(
            "_type={:?}",
            q.types.iter().map(|t| t.as_str()).collect::<Vec<_>>()
        ));
    }
    out.extend(q.summary.map(|v| format!("_summary={v:?}")));
    out.extend(q.total.map(|v| format!("_total={v:?}")));
    out.extend(q.count.map(|v| format!("_count={v}")));
    if !q.elements.is_empty() {
        out.push(format!("_elements={:?}", q.elements));
    }
    for key in &q.sort {
        out.push(format!(
            "sort={}{}",
            if key.descending { "-" } else { "+" },
            key.name
        ));
    }
    out.extend(
        q.paging
            .iter()
            .map(|p| format!("paging:{}={}", p.name, p.value)),
    );
    out.extend(
        q.controls
            .iter()
            .map(|p| format!("control:{}={}", p.name, p.value)),
    );
    out
}

/// Fails with every mismatching row, so one run shows all regressions.
fn check_rows(failures: &[String], rows: usize) {
    assert!(
        failures.is_empty(),
        "{} of {rows} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
