//! Real FHIR clients through the whole stack: python fhirclient and fhirpy, npm fhir-kit-client,
//! and curl, each against helios-hfs behind nginx TLS, with a fhirwall agent in between that the
//! client does not know about. The client runs inside the test cgroup and connects to the FHIR
//! server's own address: the eBPF program redirects it into the sidecar, which terminates TLS
//! with a leaf from the node CA (the client trusts that CA, as EHR hosts do), classifies,
//! decides, audits and forwards over TLS to nginx (verified against the EHR CA).
//!
//! Each client does the same: create, read, update, a transaction Bundle, a search with
//! _include, and a search its integration has no scope for, whose OperationOutcome the library
//! must surface. Every action must be in the audit trail, attributed to the client's own process
//! (its executable, its pid).
//!
//! Needs root, BTF, hfs and nginx (`cargo xtask setup`), and installs its clients with pip/npm
//! under target/; skipped with a reason on a laptop that lacks one of them, failing in CI.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use fhirwall_tests::{
    PinDir, TestCgroup,
    agent::{Agent, AgentFiles},
    client_libs, confined,
    ehr::{EhrServer, ehr_available, unique_loopback},
    kernel_available, unique,
};
use serde_json::{Value, json};

const MARK: u32 = 0x00f1_c1e0;
/// The actions every scenario performs, in order, with the audit trail they must leave.
const ACTIONS: [(&str, &str, Option<&str>, &str); 6] = [
    ("create", "create", Some("Patient"), "allow"),
    ("read", "read", Some("Patient"), "allow"),
    ("update", "update", Some("Patient"), "allow"),
    ("transaction", "transaction", None, "allow"),
    ("search", "search-type", Some("Observation"), "allow"),
    ("denied", "search-type", Some("Condition"), "deny"),
];

/// The agent, the EHR and the cgroup a client runs in; torn down in field order.
struct Stack {
    agent: Agent,
    ehr: EhrServer,
    files: AgentFiles,
    client_cgroup: PathBuf,
    _pins: PinDir,
    _cgroup: TestCgroup,
    _dir: Scratch,
}

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

impl Stack {
    /// Everything up, with one integration registering `exe` (the client's interpreter or
    /// binary): read/write on Patient and Observation, and read on what `Observation.subject`
    /// can reference, so the search's _include is allowed; nothing on Condition.
    fn start(exe: &Path) -> Self {
        let dir = Scratch(std::env::temp_dir().join(unique("fhirwall-clients")));
        fs::create_dir_all(&dir.0).expect("scratch dir");
        let cgroup = TestCgroup::new().expect("cgroup");
        let pins = PinDir::new();
        let ehr = EhrServer::start(&dir.0.join("ehr"), unique_loopback(), unique_loopback())
            .expect("EHR");
        let files =
            AgentFiles::new(&dir.0.join("agent"), &cgroup, &pins.path, MARK).expect("agent files");
        files
            .write_policy(
                "policy.yaml",
                // The kernel sees the resolved binary (a venv's python is a symlink).
                &policy(&ehr, &fs::canonicalize(exe).expect("exe")),
            )
            .expect("policy");
        let agent = Agent::start(&files, &cgroup.child("agent").expect("cgroup")).expect("agent");
        Self {
            agent,
            ehr,
            files,
            client_cgroup: cgroup.child("client").expect("cgroup"),
            _pins: pins,
            _cgroup: cgroup,
            _dir: dir,
        }
    }

    fn node_ca(&self) -> PathBuf {
        self.files.dir.join("state/ca/ca.pem")
    }

    /// A command for `program` inside the client cgroup.
    fn command(&self, program: &Path) -> Command {
        confined::command(&self.client_cgroup, None, program).expect("command")
    }

    /// Runs a scenario script to completion: its pid and its JSON lines.
    fn run(&self, mut cmd: Command) -> (u32, Vec<Value>) {
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the client");
        let pid = child.id();
        let out = child.wait_with_output().expect("client output");
        let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        assert!(
            out.status.success() && lines.len() == ACTIONS.len(),
            "the client failed ({}):\nstdout: {lines:?}\nstderr: {}\nagent log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.agent.log_text()
        );
        (pid, lines)
    }

    /// The audit records of one process, oldest first.
    fn audit_of(&self, pid: u32) -> Vec<Value> {
        self.files
            .audit(&["--limit", "0", "--pid", &pid.to_string()])
            .expect("fhirwall audit query")
    }
}

fn policy(ehr: &EhrServer, exe: &Path) -> String {
    format!(
        "kind: Upstream\nname: ehr\naddresses: [\"{tls}\"]\nbase_path: /\n\
         tls:\n  mode: tls\n  ca_file: {ca}\n---\n\
         kind: Integration\nname: e2e-client\nowner: Tests <tests@example.test>\n\
         purpose: end-to-end tests with real FHIR clients\ndata_classes: [test]\n\
         expected_resources: [Patient, Observation, Group, Device, Location]\nstatus: active\n\
         workload:\n  exe: {exe}\nupstreams: [ehr]\n\
         scopes:\n  - system/Patient.cruds\n  - system/Observation.cruds\n\
         \x20 - system/Group.r\n  - system/Device.r\n  - system/Location.r\n\
         purposes_of_use: [TREAT]\ndefault_purpose: TREAT\npatient:\n  mode: any\n",
        tls = ehr.tls,
        ca = ehr.ca.cert.display(),
        exe = exe.display(),
    )
}

/// Whether the test can run: root, BTF, the EHR, and the client library.
fn available<T>(test: &str, client: Result<T, String>) -> Option<T> {
    if !kernel_available(test) || !ehr_available(test) {
        return None;
    }
    match client {
        Ok(c) => Some(c),
        Err(reason) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: {reason}; CI must run the client tests, refusing to skip"
            );
            eprintln!("SKIPPED {test}: {reason}");
            None
        }
    }
}

/// The scenario's own report, then the audit trail of the client's process.
fn check(stack: &Stack, exe: &Path, lines: &[(u32, Value)]) {
    for ((_, line), (action, ..)) in lines.iter().zip(ACTIONS) {
        assert_eq!(line["action"], action, "{lines:?}");
        assert_eq!(line["ok"], true, "{action} failed: {line}");
    }
    let denied = &lines[ACTIONS.len() - 1].1;
    assert_eq!(denied["status"], 403, "{denied}");
    assert_eq!(denied["code"], "forbidden", "{denied}");
    assert!(
        denied["diagnostics"]
            .as_str()
            .is_some_and(|d| d.contains("Condition")),
        "the library surfaces fhirwall's reason: {denied}"
    );
    let exe = fs::canonicalize(exe).expect("exe").display().to_string();
    let mut pids: Vec<u32> = lines.iter().map(|(pid, _)| *pid).collect();
    pids.dedup();
    let records: Vec<Value> = pids.iter().flat_map(|pid| stack.audit_of(*pid)).collect();
    let seen: Vec<Value> = records
        .iter()
        .map(|r| json!([r["interaction"], r["resourceType"], r["decision"]]))
        .collect();
    let expected: Vec<Value> = ACTIONS
        .iter()
        .map(|(_, interaction, kind, decision)| json!([interaction, kind, decision]))
        .collect();
    assert_eq!(seen, expected, "audit trail of the client: {records:#?}");
    for (record, (pid, _)) in records.iter().zip(lines) {
        assert_eq!(record["workload"]["tgid"], *pid, "{record}");
        assert_eq!(record["workload"]["exe"], exe.as_str(), "{record}");
        assert_eq!(record["integration"], "e2e-client", "{record}");
    }
    let created = lines[0].1["id"].as_str().expect("created id");
    let stored = stack
        .ehr
        .get(&format!("/Patient/{created}"))
        .expect("the patient reached the EHR");
    assert_eq!(stored["meta"]["versionId"], "2", "{stored}");
}

fn one_process(pid: u32, lines: Vec<Value>) -> Vec<(u32, Value)> {
    lines.into_iter().map(|l| (pid, l)).collect()
}

#[test]
fn python_fhirclient_through_the_sidecar() {
    let test = "python_fhirclient_through_the_sidecar";
    let Some(python) = available(test, client_libs::python()) else {
        return;
    };
    let stack = Stack::start(&python);
    let mut cmd = stack.command(&python);
    cmd.arg(client_libs::script("fhirclient_scenario.py"))
        .arg(stack.ehr.base_url())
        .env("REQUESTS_CA_BUNDLE", stack.node_ca());
    let (pid, lines) = stack.run(cmd);
    check(&stack, &python, &one_process(pid, lines));
}

#[test]
fn python_fhirpy_through_the_sidecar() {
    let test = "python_fhirpy_through_the_sidecar";
    let Some(python) = available(test, client_libs::python()) else {
        return;
    };
    let stack = Stack::start(&python);
    let mut cmd = stack.command(&python);
    cmd.arg(client_libs::script("fhirpy_scenario.py"))
        .arg(stack.ehr.base_url())
        .env("REQUESTS_CA_BUNDLE", stack.node_ca());
    let (pid, lines) = stack.run(cmd);
    check(&stack, &python, &one_process(pid, lines));
}

#[test]
fn node_fhir_kit_client_through_the_sidecar() {
    let test = "node_fhir_kit_client_through_the_sidecar";
    let Some((node, modules)) = available(test, client_libs::node()) else {
        return;
    };
    let stack = Stack::start(&node);
    let mut cmd = stack.command(&node);
    cmd.arg(client_libs::script("fhir_kit_scenario.mjs"))
        .arg(stack.ehr.base_url())
        .env("NODE_EXTRA_CA_CERTS", stack.node_ca())
        .env("FHIR_KIT_MODULES", modules);
    let (pid, lines) = stack.run(cmd);
    check(&stack, &node, &one_process(pid, lines));
}

#[test]
fn curl_through_the_sidecar() {
    let test = "curl_through_the_sidecar";
    let Some(curl) = available(
        test,
        client_libs::which("curl").ok_or_else(|| "curl is not installed".to_owned()),
    ) else {
        return;
    };
    let stack = Stack::start(&curl);
    let lines = curl_scenario(&stack, &curl);
    check(&stack, &curl, &lines);
}

/// The scenario as a shell script would run it: one curl process per action.
fn curl_scenario(stack: &Stack, curl: &Path) -> Vec<(u32, Value)> {
    let patient = json!({"resourceType": "Patient", "name": [{"family": "E2E-curl"}]});
    let (pid, status, created) = curl_call(stack, curl, "POST", "/Patient", Some(&patient));
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    let mut lines = vec![(
        pid,
        json!({"action": "create", "ok": status == 201, "id": id}),
    )];
    let (pid, status, read) = curl_call(stack, curl, "GET", &format!("/Patient/{id}"), None);
    let ok = status == 200 && read["name"][0]["family"] == "E2E-curl";
    lines.push((pid, json!({"action": "read", "ok": ok})));
    let mut changed = read.clone();
    changed["birthDate"] = json!("1990-06-01");
    let (pid, status, updated) = curl_call(
        stack,
        curl,
        "PUT",
        &format!("/Patient/{id}"),
        Some(&changed),
    );
    let ok = status == 200 && updated["meta"]["versionId"] == "2";
    lines.push((pid, json!({"action": "update", "ok": ok})));
    let observation = |code: &str| {
        json!({"resource": {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": format!("Patient/{id}")}},
            "request": {"method": "POST", "url": "Observation"}})
    };
    let bundle = json!({"resourceType": "Bundle", "type": "transaction",
        "entry": [observation("2345-7"), observation("2524-7")]});
    let (pid, status, response) = curl_call(stack, curl, "POST", "/", Some(&bundle));
    let ok = status == 200 && response["entry"].as_array().is_some_and(|e| e.len() == 2);
    lines.push((pid, json!({"action": "transaction", "ok": ok})));
    let target = format!("/Observation?subject=Patient/{id}&_include=Observation:subject:Patient");
    let (pid, status, found) = curl_call(stack, curl, "GET", &target, None);
    let modes: Vec<&str> = found["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|x| x["search"]["mode"].as_str())
                .collect()
        })
        .unwrap_or_default();
    let ok = status == 200 && modes == ["match", "match", "include"];
    lines.push((pid, json!({"action": "search", "ok": ok, "modes": modes})));
    let target = format!("/Condition?subject=Patient/{id}");
    let (pid, status, outcome) = curl_call(stack, curl, "GET", &target, None);
    let issue = &outcome["issue"][0];
    lines.push((
        pid,
        json!({"action": "denied", "ok": outcome["resourceType"] == "OperationOutcome",
               "status": status, "code": issue["code"], "diagnostics": issue["diagnostics"]}),
    ));
    lines
}

/// One curl process: its pid, the HTTP status and the JSON body.
fn curl_call(
    stack: &Stack,
    curl: &Path,
    method: &str,
    target: &str,
    body: Option<&Value>,
) -> (u32, u16, Value) {
    let mut cmd = stack.command(curl);
    cmd.args(["--silent", "--show-error", "--max-time", "30", "-X", method])
        .arg("--cacert")
        .arg(stack.node_ca())
        .args([
            "-H",
            "Accept: application/fhir+json",
            "-w",
            "\n%{http_code}",
        ]);
    if let Some(body) = body {
        cmd.args(["-H", "Content-Type: application/fhir+json", "--data-binary"])
            .arg(body.to_string());
    }
    cmd.arg(format!("{}{target}", stack.ehr.base_url()));
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl");
    let pid = child.id();
    let out = child.wait_with_output().expect("curl output");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    let status: u16 = status.trim().parse().unwrap_or(0);
    assert_ne!(
        status,
        0,
        "curl {method} {target}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        pid,
        status,
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}
