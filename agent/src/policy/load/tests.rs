use super::*;

const UPSTREAM: &str =
    "kind: Upstream\nname: ehr\naddresses: [\"fhir.ehr.test:443\"]\nbase_path: /fhir/R4\n";

fn integration(name: &str, exe: &str) -> String {
    format!(
        "kind: Integration\nname: {name}\nowner: Lab IT <lab-it@hospital.test>\npurpose: results\n\
         data_classes: [laboratory]\nexpected_resources: [Observation]\nstatus: active\n\
         workload:\n  exe: {exe}\nupstreams: [ehr]\n"
    )
}

fn load(files: &[(&str, &str)]) -> Result<Policy, Vec<String>> {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        fs::write(dir.path().join(name), text).expect("write");
    }
    let now = "2026-06-01T00:00:00Z".parse().expect("timestamp");
    load_dir(dir.path(), now).map_err(|e| match e {
        LoadError::Invalid { problems } => problems
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
            .collect(),
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
}

#[test]
fn unknown_fields_name_file_and_line() {
    let text = format!(
        "{UPSTREAM}---\n{}colour: blue\n",
        integration("lab", "/opt/lab")
    );
    let problems = load(&[("p.yaml", &text)]).expect_err("unknown field");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("p.yaml:16:"), "{problems:?}");
    assert!(problems[0].contains("colour"), "{problems:?}");
}

#[test]
fn a_bad_value_points_at_its_line() {
    let text = UPSTREAM.replace("fhir.ehr.test:443", "fhir.ehr.test:99999");
    let problems = load(&[("u.yml", &text)]).expect_err("bad port");
    assert!(problems[0].starts_with("u.yml:3:"), "{problems:?}");
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
            .any(|p| p.contains(":upstreams:unknown upstream `nope`")),
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
    let text = format!("{UPSTREAM}---\n{empty_owner}---\n{expired}---\n{revoked}---\n{no_kind}");
    let problems = load(&[("y.yaml", &text)]).expect_err("problems");
    assert!(
        problems.iter().any(|p| p.contains(":owner:")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains(":expires:expired")),
        "{problems:?}"
    );
    assert!(
        !problems.iter().any(|p| p.contains("gone")),
        "a revoked entry may keep its old expiry: {problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains(":kind:missing")),
        "{problems:?}"
    );
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
        problems.iter().any(|p| p.contains(":base_path:")),
        "{problems:?}"
    );
}

#[test]
fn only_yaml_files_are_read_and_comments_are_not_documents() {
    let text = format!("# header comment\n---\n{UPSTREAM}---\n# trailing\n");
    let policy = load(&[("a.yaml", &text), ("README.md", "not yaml: [")]).expect("valid");
    assert_eq!(policy.upstreams.len(), 1);
}
