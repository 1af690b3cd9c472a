use fhirwall_fhir::ClassifyConfig;

use super::*;

const UPSTREAM: &str =
    "kind: Upstream\nname: ehr\naddresses: [\"fhir.ehr.test:443\"]\nbase_path: /fhir/R4\n";

/// An integration document; its line numbers are the ones the field tests below name.
fn integration(name: &str, exe: &str) -> String {
    format!(
        "kind: Integration\n\
         name: {name}\n\
         owner: Lab IT <lab-it@hospital.test>\n\
         purpose: results\n\
         data_classes: [laboratory]\n\
         expected_resources: [Observation, DiagnosticReport]\n\
         status: active\n\
         workload:\n  exe: {exe}\n\
         upstreams: [ehr]\n\
         scopes:\n  - system/Observation.rs\n  - system/DiagnosticReport.cu\n\
         purposes_of_use: [TREAT]\n\
         patient:\n  mode: any\n"
    )
}

const NOW: &str = "2026-11-28T12:00:00Z";

fn render(problems: &[Problem]) -> Vec<String> {
    problems
        .iter()
        .map(|p| {
            let file = p
                .file
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            format!(
                "{file}:{}:{}:{}",
                p.line,
                p.field.clone().unwrap_or_default(),
                p.message
            )
        })
        .collect()
}

fn load(files: &[(&str, &str)]) -> Result<Policy, Vec<String>> {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        fs::write(dir.path().join(name), text).expect("write");
    }
    load_dir(dir.path(), NOW.parse().expect("timestamp")).map_err(|e| match e {
        LoadError::Invalid { problems } => render(&problems),
        LoadError::Dir { .. } => vec!["dir".into()],
    })
}

/// Parses without a file system.
fn parse(files: &[(&str, &str)]) -> Result<Policy, Vec<String>> {
    let sources = files.iter().map(|(n, t)| (Path::new(n), *t));
    parse_sources(sources, NOW.parse().expect("timestamp")).map_err(|e| match e {
        LoadError::Invalid { problems } => render(&problems),
        LoadError::Dir { .. } => vec!["dir".into()],
    })
}

#[test]
fn loads_several_documents_per_file() {
    let text = format!(
        "{UPSTREAM}---\n{}---\n{}",
        integration("lab", "/opt/lab"),
        integration("claims", "/opt/claims")
    );
    let policy = load(&[("a.yaml", &text)]).expect("valid policy");
    assert_eq!(policy.upstreams.len(), 1);
    assert_eq!(policy.integrations.len(), 2);
    assert_eq!(policy.upstreams[0].addresses[0].port, 443);
    assert_eq!(
        policy.classify_config("ehr").map(ClassifyConfig::base_path),
        Some("/fhir/R4".to_owned())
    );
    assert_eq!(policy.settings.purpose_header.as_str(), "X-Purpose-Of-Use");
}

#[test]
fn unknown_fields_name_file_and_line() {
    let text = format!(
        "{UPSTREAM}---\n{}colour: blue\n",
        integration("lab", "/opt/lab")
    );
    let problems = load(&[("p.yaml", &text)]).expect_err("unknown field");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("p.yaml:22:colour:"), "{problems:?}");
    assert!(
        problems[0].contains("unknown field `colour`"),
        "{problems:?}"
    );
}

#[test]
fn a_bad_value_points_at_its_line() {
    let text = UPSTREAM.replace("fhir.ehr.test:443", "fhir.ehr.test:99999");
    let problems = load(&[("u.yml", &text)]).expect_err("bad port");
    assert!(
        problems[0].starts_with("u.yml:3:addresses:"),
        "{problems:?}"
    );
}

#[test]
fn cross_document_problems_name_the_field() {
    let overlapping = integration("claims", "/opt/*");
    let unknown =
        integration("report", "/usr/bin/report").replace("upstreams: [ehr]", "upstreams: [nope]");
    let text = format!(
        "{UPSTREAM}---\n{}---\n{overlapping}---\n{unknown}",
        integration("lab", "/opt/lab")
    );
    let problems = load(&[("x.yaml", &text)]).expect_err("problems");
    assert!(
        problems
            .iter()
            .any(|p| p.contains(":workload:") && p.contains("overlap integration `lab`")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("x.yaml:49:upstreams:unknown upstream `nope`")),
        "{problems:?}"
    );
}

#[test]
fn required_identity_fields_and_expiry_are_enforced() {
    let empty_owner = integration("lab", "/opt/lab")
        .replace("owner: Lab IT <lab-it@hospital.test>", "owner: \"  \"");
    let expired = integration("old", "/opt/old") + "expires: 2026-01-01T00:00:00Z\n";
    let revoked = integration("gone", "/opt/gone").replace("status: active", "status: revoked")
        + "expires: 2026-01-01T00:00:00Z\n";
    let no_kind = "name: x\n";
    let no_scopes = integration("bare", "/opt/bare").replace(
        "scopes:\n  - system/Observation.rs\n  - system/DiagnosticReport.cu\n",
        "",
    );
    let text = format!(
        "{UPSTREAM}---\n{empty_owner}---\n{expired}---\n{revoked}---\n{no_kind}---\n{no_scopes}"
    );
    let problems = load(&[("y.yaml", &text)]).expect_err("problems");
    let has = |needle: &str| problems.iter().any(|p| p.contains(needle));
    assert!(has("y.yaml:8:owner:"), "{problems:?}");
    assert!(has("y.yaml:39:expires:expired"), "{problems:?}");
    assert!(
        !problems.iter().any(|p| p.contains("gone")),
        "a revoked entry may keep its old expiry: {problems:?}"
    );
    assert!(has(":kind:missing"), "{problems:?}");
    assert!(has(":scopes:missing field `scopes`"), "{problems:?}");
}

#[test]
fn duplicate_names_and_bad_base_paths_are_errors() {
    let text = format!(
        "{UPSTREAM}---\n{}",
        UPSTREAM.replace("/fhir/R4", "/fhir/../x")
    );
    let problems = load(&[("d.yaml", &text)]).expect_err("problems");
    assert!(
        problems
            .iter()
            .any(|p| p.contains("duplicate upstream name `ehr`")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("d.yaml:9:base_path:")),
        "{problems:?}"
    );
}

#[test]
fn only_yaml_files_are_read_and_comments_are_not_documents() {
    let text = format!("# header comment\n---\n{UPSTREAM}---\n# trailing\n");
    let policy = load(&[("a.yaml", &text), ("README.md", "not yaml: [")]).expect("valid");
    assert_eq!(policy.upstreams.len(), 1);
}

/// Every new integration field: a change to the integration document (alone in `i.yaml`, so
/// its lines are the template's) and the `line:field:` and words the problem must carry.
#[test]
#[expect(clippy::too_many_lines, reason = "one table of cases")]
fn integration_field_errors_name_line_and_field() {
    let base = integration("lab", "/opt/lab");
    // (what, edit of the document, expected "line:field:", words in the message)
    let table: Vec<(&str, String, &str, &str)> = vec![
        (
            "wrong-case expected resource",
            base.replace("[Observation, Diag", "[observation, Diag"),
            "6:expected_resources:",
            "case-sensitive",
        ),
        (
            "scope permissions out of order",
            base.replace("Observation.rs", "Observation.sr"),
            "12:scopes:",
            "in that order",
        ),
        (
            "scope type not in expected_resources",
            base.replace(
                "  - system/DiagnosticReport.cu\n",
                "  - system/DiagnosticReport.cu\n  - system/Patient.rs\n",
            ),
            "14:scopes[2]:",
            "expected_resources does not list",
        ),
        (
            "unknown purpose of use",
            base.replace("[TREAT]", "[TREATMENT]"),
            "14:purposes_of_use:",
            "PurposeOfUse code",
        ),
        (
            "default purpose outside the list",
            base.clone() + "default_purpose: HPAYMT\n",
            "17:default_purpose:",
            "not in purposes_of_use",
        ),
        (
            "header mode without a header",
            base.replace("  mode: any", "  mode: header"),
            "16:patient",
            "needs `header:`",
        ),
        (
            "exempt type inside the compartment",
            base.replace(
                "  mode: any",
                "  mode: compartment\n  exempt: [Observation]",
            ),
            "16:patient",
            "cannot be exempt",
        ),
        (
            "patient header that carries the purpose",
            base.replace("  mode: any", "  mode: header\n  header: x-purpose-of-use"),
            "17:patient.header:",
            "carries something else",
        ),
        (
            "zero rate",
            base.clone() + "rate_limit: { per_second: 0, burst: 5 }\n",
            "17:rate_limit:",
            "at least 1",
        ),
        (
            "malformed fingerprint",
            base.clone() + "credentials:\n  accepted: [sha256:abc]\n",
            "18:credentials.accepted:",
            "64 lowercase hex",
        ),
        (
            "relative secret path",
            base.clone()
                + "credentials:\n  inject:\n    header: Authorization\n    value_file: secrets/lab\n",
            "20:credentials.inject.value_file:",
            "absolute path",
        ),
        (
            "a secret in the YAML",
            base.clone()
                + "credentials:\n  inject:\n    header: Authorization\n    value: Bearer x\n",
            "20:credentials.inject.value:",
            "unknown field `value`",
        ),
        (
            "a brokered token broader than the scopes",
            base.clone()
                + "credentials:\n  broker:\n    token_endpoint: https://auth/token\n    client_id: lab\n    scopes: [system/Patient.rs]\n",
            "21:credentials.broker.scopes[0]:",
            "not one of the integration's scopes",
        ),
        (
            "two upstream credentials",
            base.clone()
                + "credentials:\n  inject:\n    header: Authorization\n    value_file: /x\n  broker:\n    token_endpoint: https://auth/token\n    client_id: lab\n",
            "21:credentials.broker:",
            "`inject` or `broker`, not both",
        ),
        (
            "a token endpoint in clear text",
            base.clone()
                + "credentials:\n  broker:\n    token_endpoint: http://auth.example/token\n    client_id: lab\n",
            "19:credentials.broker.token_endpoint:",
            "only to a loopback address",
        ),
        (
            "relative client key",
            base.clone()
                + "credentials:\n  client_certificate:\n    cert_file: /etc/x.crt\n    key_file: x.key\n",
            "20:credentials.client_certificate.key_file:",
            "absolute path",
        ),
        (
            "no patient constraint",
            base.replace("patient:\n  mode: any\n", ""),
            "",
            ":patient:missing field `patient`",
        ),
        (
            "unknown patient mode",
            base.replace("  mode: any", "  mode: everyone"),
            "16:patient.mode:",
            "everyone",
        ),
        (
            "operation not in URL form",
            base.clone() + "operations: [everything]\n",
            "17:operations:",
            "not an operation name",
        ),
        (
            "tenants on an upstream without tenants",
            base.clone() + "tenants: [north]\n",
            "17:tenants:",
            "has tenants",
        ),
        (
            "bad tenant id",
            base.clone() + "tenants: [\"a/b\"]\n",
            "17:tenants:",
            "not a tenant id",
        ),
    ];
    for (what, doc, at, words) in &table {
        let problems = parse(&[("u.yaml", UPSTREAM), ("i.yaml", doc)]).expect_err(what);
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with(&format!("i.yaml:{at}")) && p.contains(words)),
            "{what}: {problems:?}"
        );
    }
}

#[test]
fn tenanted_upstreams_need_tenants_and_get_them_in_the_classifier() {
    let upstream = format!("{UPSTREAM}tenant:\n  mode: header\n  header: X-Tenant\n");
    let lab = integration("lab", "/opt/lab");
    let problems = parse(&[("u.yaml", &upstream), ("i.yaml", &lab)]).expect_err("no tenants");
    assert!(
        problems.iter().any(|p| p.contains(":tenants:an upstream")),
        "{problems:?}"
    );
    let with = lab + "tenants: [north]\n";
    let policy = parse(&[("u.yaml", &upstream), ("i.yaml", &with)]).expect("valid");
    let config = policy.classify_config("ehr").expect("config");
    assert_eq!(
        config.tenant,
        fhirwall_fhir::TenantMode::Header("X-Tenant".into())
    );
    let bad = format!("{UPSTREAM}tenant:\n  mode: header\n");
    let problems = parse(&[("u.yaml", &bad)]).expect_err("no header");
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("u.yaml:6:tenant") && p.contains("needs `header:`")),
        "{problems:?}"
    );
}

const EXCEPTION: &str = "kind: Exception\n\
                         name: quarter\n\
                         integration: lab\n\
                         scopes: [system/Encounter.rs]\n\
                         reason: Q4 quality report\n\
                         approver: CMIO <cmio@hospital.test>\n\
                         expires: 2027-03-31T23:59:59Z\n";

const BREAK_GLASS: &str = "kind: BreakGlass\n\
                           name: ed\n\
                           owner: Clinical Safety\n\
                           invokers:\n  integrations: [lab]\n  users: [oncall]\n\
                           max_duration: 4h\n\
                           min_justification: 30\n\
                           scopes: [system/*.rs]\n";

#[test]
fn exceptions_and_break_glass_load_and_are_checked() {
    let lab = integration("lab", "/opt/lab");
    let files = |e: &str, b: &str| {
        parse(&[
            ("u.yaml", UPSTREAM),
            ("i.yaml", &lab),
            ("e.yaml", e),
            ("b.yaml", b),
        ])
    };
    let policy = files(EXCEPTION, BREAK_GLASS).expect("valid");
    assert_eq!(policy.exceptions.len(), 1);
    assert_eq!(policy.break_glass[0].max_duration.as_secs(), 4 * 3600);
    // (what, exception, break-glass, expected "file:line:field:", words)
    let table: Vec<(&str, String, String, &str, &str)> = vec![
        (
            "expired exception",
            EXCEPTION.replace("2027-03-31T23:59:59Z", "2026-11-28T12:00:00Z"),
            BREAK_GLASS.into(),
            "e.yaml:7:expires:",
            "must expire in the future",
        ),
        (
            "exception without expiry",
            EXCEPTION.replace("expires: 2027-03-31T23:59:59Z\n", ""),
            BREAK_GLASS.into(),
            "e.yaml:",
            "missing field `expires`",
        ),
        (
            "exception for nobody",
            EXCEPTION.replace("integration: lab", "integration: nope"),
            BREAK_GLASS.into(),
            "e.yaml:3:integration:",
            "unknown integration `nope`",
        ),
        (
            "exception with a bad scope",
            EXCEPTION.replace("Encounter.rs", "encounter.rs"),
            BREAK_GLASS.into(),
            "e.yaml:4:scopes:",
            "case-sensitive",
        ),
        (
            "exception without approver",
            EXCEPTION.replace("CMIO <cmio@hospital.test>", "\"\""),
            BREAK_GLASS.into(),
            "e.yaml:6:approver:",
            "empty value",
        ),
        (
            "break-glass too long",
            EXCEPTION.into(),
            BREAK_GLASS.replace("4h", "48h"),
            "b.yaml:7:max_duration:",
            "at most 24h",
        ),
        (
            "break-glass with a short justification",
            EXCEPTION.into(),
            BREAK_GLASS.replace("min_justification: 30", "min_justification: 3"),
            "b.yaml:8:min_justification:",
            "at least 10",
        ),
        (
            "break-glass for an unknown integration",
            EXCEPTION.into(),
            BREAK_GLASS.replace("[lab]", "[nope]"),
            "b.yaml:5:invokers.integrations:",
            "unknown integration `nope`",
        ),
        (
            "break-glass for nobody",
            EXCEPTION.into(),
            BREAK_GLASS.replace(
                "  integrations: [lab]\n  users: [oncall]\n",
                "  users: []\n",
            ),
            "b.yaml:4:invokers:",
            "name the integrations or users",
        ),
        (
            "break-glass duration that is not one",
            EXCEPTION.into(),
            BREAK_GLASS.replace("4h", "soon"),
            "b.yaml:7:max_duration:",
            "",
        ),
    ];
    for (what, e, b, at, words) in &table {
        let problems = files(e, b).expect_err(what);
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with(at) && p.contains(words)),
            "{what}: {problems:?}"
        );
    }
}

#[test]
fn settings_are_single_and_typed() {
    let settings = "kind: Settings\npurpose_header: X-PoU\n";
    let policy = parse(&[("s.yaml", settings)]).expect("valid");
    assert_eq!(policy.settings.purpose_header.as_str(), "X-PoU");
    let twice = format!("{settings}---\n{settings}");
    let problems = parse(&[("s.yaml", &twice)]).expect_err("two");
    assert!(
        problems.iter().any(|p| p.contains("only one Settings")),
        "{problems:?}"
    );
    let bad = parse(&[("s.yaml", "kind: Settings\npurpose_header: \"X PoU\"\n")])
        .expect_err("bad header");
    assert!(
        bad.iter()
            .any(|p| p.starts_with("s.yaml:2:purpose_header:")),
        "{bad:?}"
    );
    let unknown = parse(&[("k.yaml", "kind: Policy\n")]).expect_err("kind");
    assert!(
        unknown.iter().any(|p| p.contains("unknown kind `Policy`")),
        "{unknown:?}"
    );
}

#[test]
fn line_numbers_survive_many_separators() {
    // Documents are parsed alone and shifted, not padded (padding is quadratic in `---`s).
    let text = "---\n".repeat(20_000) + "kind: Settings\n";
    let policy = parse(&[("s.yaml", &text)]).expect("valid");
    assert_eq!(policy.settings.purpose_header.as_str(), "X-Purpose-Of-Use");
    let problems = parse(&[("s.yaml", &(text + "colour: x\n"))]).expect_err("unknown");
    assert!(
        problems[0].starts_with("s.yaml:20002:colour:"),
        "{problems:?}"
    );
}

#[test]
fn a_selector_any_local_user_could_satisfy_is_refused_with_the_reason() {
    for forgeable in [
        "systemd_unit: lab.service",
        "container_id: c0ffee",
        "pod_uid: 1234-abcd",
        "cgroup: /system.slice/lab.service",
        "group: lab",
    ] {
        let text = format!(
            "{UPSTREAM}---\n{}",
            integration("lab", "/opt/lab").replace("  exe: /opt/lab", &format!("  {forgeable}"))
        );
        let problems = load(&[("p.yaml", &text)]).expect_err(forgeable);
        assert_eq!(problems.len(), 1, "{forgeable}: {problems:?}");
        assert!(
            problems[0].contains("workload:") && problems[0].contains("any local user could"),
            "{forgeable}: {problems:?}"
        );
        let anchored = text.replace(
            &format!("  {forgeable}"),
            &format!("  {forgeable}\n  user: lab"),
        );
        load(&[("p.yaml", &anchored)]).expect("with a user it is anchored");
    }
}

#[test]
fn aliases_replaying_more_than_a_policy_needs_are_refused() {
    // 12 references to an anchored list of 1000 items: 12,000 replayed events.
    let items = vec!["x"; 1000].join(", ");
    let refs = ["*big"; 12].join(", ");
    let text = format!("{UPSTREAM}---\nkind: Settings\nbig: &big [{items}]\nmore: [{refs}]\n");
    let problems = load(&[("bomb.yaml", &text)]).expect_err("alias replay over the limit");
    assert!(
        problems
            .iter()
            .any(|p| p.contains("alias") || p.contains("replay")),
        "{problems:?}"
    );
    let few = format!("{UPSTREAM}---\nkind: Settings\nbig: &big [{items}]\nmore: [*big]\n");
    let others = load(&[("few.yaml", &few)]).expect_err("unknown fields");
    assert!(
        others
            .iter()
            .all(|p| !p.contains("alias") && !p.contains("replay")),
        "one reference is well within the limit: {others:?}"
    );
}
