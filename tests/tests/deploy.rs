//! What `deploy/` ships for operators holds together: the Prometheus alert rules load and pass
//! their own unit tests (`promtool`), every Grafana panel query parses, and every metric either
//! one names is a metric the agent exports. `promtool` comes from Debian's `prometheus` package
//! (`cargo xtask setup` installs it); without it these tests fail rather than skip.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use fhirwall::metrics::Metrics;
use fhirwall_tests::{TempDir, client_libs::which};
use serde_json::Value;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs `promtool` with `args` in `dir` and returns whether it succeeded, and what it said.
fn promtool(dir: &Path, args: &[&str]) -> (bool, String) {
    let promtool = which("promtool")
        .expect("promtool is missing: run `cargo xtask setup` (Debian package prometheus)");
    let out = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn dashboard() -> Value {
    let path = deploy().join("grafana/fhirwall-dashboard.json");
    serde_json::from_str(&read(&path)).expect("the dashboard is JSON")
}

/// Every panel query of the dashboard, in panel order.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    let panels = dashboard["panels"].as_array().expect("panels");
    panels
        .iter()
        .filter(|p| p["type"] != "row")
        .flat_map(|p| {
            let targets = p["targets"].as_array().cloned().unwrap_or_default();
            assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
            targets
        })
        .map(|t| {
            t["expr"]
                .as_str()
                .expect("every target has an expr")
                .to_owned()
        })
        .collect()
}

/// The `fhirwall_*` names in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("fhirwall_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// Names in `used` that the agent does not export (a histogram also exports `_bucket`, `_sum`
/// and `_count`).
fn unknown(used: &BTreeSet<String>) -> Vec<String> {
    let exported: BTreeSet<String> = Metrics::new().names().into_iter().collect();
    let known = |name: &str| {
        exported.contains(name)
            || ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| name.strip_suffix(s).is_some_and(|b| exported.contains(b)))
    };
    used.iter().filter(|n| !known(n)).cloned().collect()
}

#[test]
fn alert_rules_load_and_pass_their_unit_tests() {
    let dir = deploy().join("prometheus");
    let (ok, out) = promtool(&dir, &["check", "rules", "fhirwall-rules.yaml"]);
    assert!(ok, "promtool check rules:\n{out}");
    let (ok, out) = promtool(&dir, &["test", "rules", "fhirwall-rules.test.yaml"]);
    assert!(ok, "promtool test rules:\n{out}");
}

#[test]
fn alert_rule_tests_catch_a_wrong_expectation() {
    // The rule tests are only worth something if a wrong expectation fails them: run them
    // with one expected value changed.
    let src = deploy().join("prometheus");
    let dir = TempDir::new("fhirwall-rules").expect("temp dir");
    let rules = read(&src.join("fhirwall-rules.yaml"));
    std::fs::write(dir.0.join("fhirwall-rules.yaml"), rules).expect("copy rules");
    let tests = read(&src.join("fhirwall-rules.test.yaml"));
    let wrong = tests.replace("refused 5 times", "refused 6 times");
    assert_ne!(wrong, tests, "the expectation to change is in the tests");
    std::fs::write(dir.0.join("fhirwall-rules.test.yaml"), wrong).expect("write tests");
    let (ok, out) = promtool(&dir.0, &["test", "rules", "fhirwall-rules.test.yaml"]);
    assert!(
        !ok && out.contains("FhirwallRevokedIdentityStillTrying"),
        "{out}"
    );
}

#[test]
fn every_dashboard_query_parses() {
    let queries = dashboard_queries(&dashboard());
    assert!(queries.len() >= 20, "{} queries", queries.len());
    // promtool parses PromQL only inside rule files: make each query a recording rule.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in queries.iter().enumerate() {
        let expr = serde_json::to_string(&q.replace("$instance", ".*")).expect("a JSON string");
        let _ = write!(
            rules,
            "      - record: dashboard:query_{i}\n        expr: {expr}\n"
        );
    }
    let dir = TempDir::new("fhirwall-dashboard").expect("temp dir");
    std::fs::write(dir.0.join("queries.yaml"), rules).expect("write rules");
    let (ok, out) = promtool(&dir.0, &["check", "rules", "queries.yaml"]);
    assert!(ok, "a dashboard query does not parse:\n{out}");
}

#[test]
fn dashboard_panels_have_unique_ids_and_fit_the_grid() {
    let dashboard = dashboard();
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().expect("numeric id")),
            "duplicate id in {p}"
        );
        let (x, w) = (p["gridPos"]["x"].as_u64(), p["gridPos"]["w"].as_u64());
        assert!(
            x.zip(w).is_some_and(|(x, w)| w > 0 && x + w <= 24),
            "panel {} is outside the 24-column grid",
            p["title"]
        );
    }
}

#[test]
fn rules_and_dashboard_name_only_exported_metrics() {
    let rules = metric_names(&read(&deploy().join("prometheus/fhirwall-rules.yaml")));
    let panels = metric_names(&dashboard_queries(&dashboard()).join("\n"));
    for (what, used) in [("alert rules", &rules), ("dashboard", &panels)] {
        assert!(used.len() >= 10, "{what} name {used:?}");
        assert_eq!(
            unknown(used),
            Vec::<String>::new(),
            "{what} name metrics the agent lacks"
        );
    }
    // And the check itself tells a renamed metric apart.
    let renamed = BTreeSet::from(["fhirwall_policy_denial_total".to_owned()]);
    assert_eq!(
        unknown(&renamed),
        vec!["fhirwall_policy_denial_total".to_owned()]
    );
}
