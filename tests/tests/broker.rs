//! Brokered tokens end to end: legacy workloads that send the host's one shared static
//! credential reach the EHR with short-lived tokens of their own integrations.
//!
//! The parts are real: the agent with its kernel redirect; npm oidc-provider as the EHR's
//! authorization server (client credentials with `private_key_jwt` against the JWKS that
//! `fhirwall credentials jwks` printed, introspection, revocation); helios-hfs behind nginx,
//! whose `auth_request` introspects every bearer token at the provider, so a request the EHR
//! answered carried a token the provider held active at that moment. The workloads are curl
//! and a Python `http.client` loop, which know nothing of tokens.
//!
//! Needs root, BTF, hfs, nginx with njs and node (`cargo xtask setup`); skipped with a reason
//! on a laptop that lacks one, failing in CI.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use fhirwall_tests::{
    PinDir, TempDir, TestCgroup,
    agent::{Agent, AgentFiles},
    auth::{AuthClient, AuthServer},
    client_libs, confined,
    ehr::{EhrServer, ehr_available, unique_loopback},
    eventually, kernel_available, target_binary, unique,
};
use serde_json::{Value, json};

const MARK: u32 = 0x00f1_b0c3;
/// The tokens' lifetime at the authorization server.
const TTL: u64 = 30;
/// What every legacy workload on the host sends.
const SHARED: &str = "Bearer host-shared-interface-credential";
/// curl's integration: reads Patients and Observations.
const LAB: (&str, &str) = ("lab-feed", "system/Patient.rs system/Observation.rs");
/// The Python reader's integration: reads Patients only.
const REPORTS: (&str, &str) = ("report-writer", "system/Patient.rs");

struct Stack {
    agent: Agent,
    auth: AuthServer,
    ehr: EhrServer,
    files: AgentFiles,
    work: PathBuf,
    python: PathBuf,
    _pins: PinDir,
    _cgroup: TestCgroup,
    _dir: TempDir,
}

fn fhirwall(args: &[&str]) -> Output {
    let out = Command::new(target_binary("fhirwall").expect("fhirwall"))
        .args(args)
        .output()
        .expect("running fhirwall");
    assert!(
        out.status.success(),
        "fhirwall {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Stack {
    fn start() -> Self {
        let dir = TempDir::new("fhirwall-broker").expect("scratch dir");
        let cgroup = TestCgroup::new().expect("cgroup");
        let pins = PinDir::new();
        let files = AgentFiles::new(&dir.path().join("agent"), &cgroup, &pins.path, MARK)
            .expect("agent files");
        // Each integration's key, made and published the way an operator does it.
        let keys = files.state_dir().join("keys");
        let keys = keys.to_str().expect("utf-8");
        let clients: Vec<AuthClient> = [LAB, REPORTS]
            .into_iter()
            .map(|(name, scope)| {
                fhirwall(&[
                    "credentials",
                    "keygen",
                    "--integration",
                    name,
                    "--keys-dir",
                    keys,
                ]);
                let jwks = fhirwall(&[
                    "credentials",
                    "jwks",
                    "--integration",
                    name,
                    "--keys-dir",
                    keys,
                ]);
                AuthClient {
                    client_id: name.into(),
                    scope: scope.into(),
                    jwks: serde_json::from_slice(&jwks.stdout).expect("JWKS"),
                }
            })
            .collect();
        let auth = AuthServer::start(&dir.path().join("auth"), unique_loopback(), TTL, &clients)
            .expect("authorization server");
        let ehr = EhrServer::start_with(
            &dir.path().join("ehr"),
            unique_loopback(),
            unique_loopback(),
            Some(auth.introspection(&[])),
        )
        .expect("EHR");
        ehr.put(&json!({"resourceType": "Patient", "id": "brokered-1", "active": true}))
            .expect("seed");
        // Debian's interpreter, resolved: the executable the kernel reports (a pyenv shim on
        // PATH would be a shell script that execs another).
        let python = fs::canonicalize("/usr/bin/python3").expect("/usr/bin/python3");
        files
            .write_policy("policy.yaml", &policy(&ehr, &auth, &python))
            .expect("policy");
        let agent = Agent::start(&files, &cgroup.child("agent").expect("cgroup")).expect("agent");
        Self {
            agent,
            work: cgroup.child("work").expect("cgroup"),
            auth,
            ehr,
            files,
            python,
            _pins: pins,
            _cgroup: cgroup,
            _dir: dir,
        }
    }

    /// curl (integration lab-feed) GETs `path` with the shared credential: the status, `000`
    /// when there was no HTTP answer.
    fn curl(&self, path: &str) -> String {
        let cmd = confined::command(&self.work, None, Path::new("/usr/bin/curl")).expect("command");
        curl_status(
            cmd,
            &self.files.node_ca(),
            &format!("{}{path}", self.ehr.base_url()),
        )
    }

    /// The Python reader (integration report-writer): a GET of the patient every `interval`
    /// seconds for `duration` seconds on one kept-alive connection; a JSON line per request.
    fn read(&self, duration: u64, interval: f64) -> Vec<Value> {
        let out = confined::command(&self.work, None, &self.python)
            .expect("command")
            .arg(client_libs::script("steady_reader.py"))
            .arg(self.ehr.tls.to_string())
            .arg("/Patient/brokered-1")
            .arg(self.files.node_ca())
            .arg(duration.to_string())
            .arg(interval.to_string())
            .arg(SHARED)
            .stderr(Stdio::piped())
            .output()
            .expect("python reader");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    /// The tokens nginx saw from `client`, in order (the Authorization values it let through).
    fn tokens_of(&self, client: &str) -> Vec<String> {
        let tag = format!("token_client=\"{client}\"");
        self.ehr
            .access_log()
            .lines()
            .filter(|l| l.contains(&tag))
            .filter_map(|l| l.split("authorization=\"Bearer ").nth(1)?.split('"').next())
            .map(str::to_owned)
            .collect()
    }

    fn expiry(&self, integration: &str) -> Option<f64> {
        self.files.metric(&format!(
            "fhirwall_broker_token_expiry_seconds{{integration=\"{integration}\"}}"
        ))
    }

    fn fetches(&self, integration: &str, result: &str) -> f64 {
        self.files
            .metric(&format!(
                "fhirwall_broker_token_fetches_total{{integration=\"{integration}\",result=\"{result}\"}}"
            ))
            .unwrap_or(0.0)
    }

    /// Every audit entry, as exported to JSON lines.
    fn audit_entries(&self) -> Vec<Value> {
        let file = self.files.dir.join(unique("export.jsonl"));
        let db = self.files.state_dir().join("audit.db");
        fhirwall(&[
            "audit",
            "export",
            "--db",
            db.to_str().expect("utf-8"),
            "--jsonl",
            file.to_str().expect("utf-8"),
            "--cursor",
            &unique("test"),
        ]);
        fs::read_to_string(&file)
            .expect("export")
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("JSON line")["entry"].clone())
            .collect()
    }
}

fn policy(ehr: &EhrServer, auth: &AuthServer, python: &Path) -> String {
    let fingerprint = fhirwall_policy::Fingerprint::of_authorization(SHARED.as_bytes());
    let integration = |(name, scopes): (&str, &str), exe: &str, types: &str| {
        let scopes: Vec<&str> = scopes.split(' ').collect();
        format!(
            "kind: Integration\nname: {name}\nowner: Tests <tests@example.test>\n\
             purpose: brokered token tests\ndata_classes: [test]\nexpected_resources: [{types}]\n\
             status: active\nworkload:\n  exe: {exe}\nupstreams: [ehr]\nscopes: [{scopes}]\n\
             purposes_of_use: [TREAT]\ndefault_purpose: TREAT\npatient:\n  mode: any\n\
             credentials:\n  accepted: [\"{fingerprint}\"]\n  broker:\n\
             \x20   token_endpoint: {token}\n    revocation_endpoint: {revocation}\n\
             \x20   client_id: {name}\n",
            scopes = scopes.join(", "),
            token = auth.token_endpoint(),
            revocation = auth.revocation_endpoint(),
        )
    };
    format!(
        "kind: Upstream\nname: ehr\naddresses: [\"{tls}\"]\nbase_path: /\n\
         tls:\n  mode: tls\n  ca_file: {ca}\n---\n{lab}---\n{reports}",
        tls = ehr.tls,
        ca = ehr.ca.cert.display(),
        lab = integration(LAB, "/usr/bin/curl", "Patient, Observation"),
        reports = integration(REPORTS, &python.display().to_string(), "Patient"),
    )
}

#[test]
fn legacy_workloads_reach_the_ehr_with_short_lived_tokens_of_their_own() {
    const TEST: &str = "legacy_workloads_reach_the_ehr_with_short_lived_tokens_of_their_own";
    if !kernel_available(TEST) || !ehr_available(TEST) {
        return;
    }
    let mut s = Stack::start();
    the_ehr_turns_the_shared_credential_away(&s);
    let lab_token = each_integration_gets_its_own_token(&s);
    let seen = two_minutes_of_30_second_tokens(&s);
    issuances_are_audited_without_tokens(&s, &seen, &lab_token);
    revocation_reaches_the_token(&s);
    a_provider_outage_refuses_closed_and_recovers(&mut s);
    assert!(
        s.agent.stop(),
        "the agent stops cleanly with brokered integrations"
    );
}

/// The EHR really checks: the shared credential, sent to it directly (this test process is
/// outside the redirected cgroup), is turned away.
fn the_ehr_turns_the_shared_credential_away(s: &Stack) {
    let url = format!("{}/Patient/brokered-1", s.ehr.base_url());
    assert_eq!(
        curl_status(Command::new("curl"), &s.ehr.ca.cert, &url),
        "401"
    );
}

/// `cmd` (curl) GETs `url` with the shared credential, trusting `ca`: the status.
fn curl_status(cmd: Command, ca: &Path, url: &str) -> String {
    fhirwall_tests::curl_status(cmd, ca, url, &[&format!("Authorization: {SHARED}")])
}

/// Two integrations, one shared credential on the host: each reaches the EHR with a token of
/// its own, holding its own scopes (as the provider says of the very token nginx saw).
/// Returns lab-feed's token.
fn each_integration_gets_its_own_token(s: &Stack) -> String {
    assert_eq!(
        s.curl("/Patient/brokered-1"),
        "200",
        "{}",
        s.agent.log_text()
    );
    let first = s.read(0, 0.0);
    assert_eq!(first[0]["status"], 200, "{first:?}\n{}", s.agent.log_text());
    let lab_token = s
        .tokens_of(LAB.0)
        .pop()
        .expect("nginx saw lab-feed's token");
    let reports_token = s
        .tokens_of(REPORTS.0)
        .pop()
        .expect("nginx saw report-writer's token");
    assert_ne!(lab_token, reports_token);
    for (token, (client, scope)) in [(&lab_token, LAB), (&reports_token, REPORTS)] {
        let info = s.auth.introspect(token).expect("introspection");
        assert_eq!(info["active"], true, "{info}");
        assert_eq!(info["client_id"], client, "{info}");
        assert_eq!(info["scope"], scope, "{info}");
        let lifetime = info["exp"].as_i64().unwrap_or(0) - info["iat"].as_i64().unwrap_or(0);
        assert_eq!(lifetime, i64::try_from(TTL).unwrap_or(0), "{info}");
    }
    let shared: Vec<String> = s
        .ehr
        .access_log()
        .lines()
        .filter(|l| l.contains("host-shared-interface-credential"))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        shared.len(),
        1,
        "only the direct request carried the shared credential: {shared:?}"
    );
    lab_token
}

/// Two minutes on one connection with 30-second tokens: every request answered by the EHR,
/// which let each through only with a token active at that moment, under several tokens.
/// Returns the tokens nginx saw.
fn two_minutes_of_30_second_tokens(s: &Stack) -> BTreeSet<String> {
    let run = s.read(120, 2.0);
    assert!(run.len() >= 55, "{run:?}");
    assert!(
        run.iter().all(|r| r["status"] == 200),
        "{run:?}\n{}",
        s.agent.log_text()
    );
    let seen: BTreeSet<String> = s.tokens_of(REPORTS.0).into_iter().collect();
    assert!(
        seen.len() >= 4,
        "tokens seen over two minutes: {}",
        seen.len()
    );
    let refused = s
        .ehr
        .access_log()
        .lines()
        .filter(|l| l.contains(" 401 "))
        .count();
    assert_eq!(
        refused,
        1,
        "only the direct request was refused:\n{}",
        s.ehr.access_log()
    );
    seen
}

/// Each issuance is in the audit trail, by the assertion's jti, its expiry and the scopes
/// granted; no token is.
fn issuances_are_audited_without_tokens(s: &Stack, seen: &BTreeSet<String>, lab_token: &str) {
    let entries = s.audit_entries();
    let issued: Vec<&Value> = entries
        .iter()
        .filter(|e| e["kind"] == "credential" && e["event"] == "token-issued")
        .collect();
    assert!(issued.len() > seen.len(), "{issued:#?}");
    let lab = issued
        .iter()
        .find(|e| e["integration"] == LAB.0)
        .expect("lab-feed issuance");
    assert_eq!(lab["scope"], LAB.1);
    assert!(lab["expires"].as_str().is_some(), "{lab}");
    assert!(lab["jti"].as_str().is_some_and(|j| j.len() >= 20), "{lab}");
    let text = serde_json::to_string(&entries).unwrap_or_default();
    assert!(
        seen.iter().all(|t| !text.contains(t.as_str())) && !text.contains(lab_token),
        "a token in the audit trail"
    );
}

/// Revoked: the next request fails, and the provider no longer honours the token.
fn revocation_reaches_the_token(s: &Stack) {
    let socket = s.files.socket.to_str().expect("utf-8").to_owned();
    let lab_token = s.tokens_of(LAB.0).pop().expect("lab-feed token");
    fhirwall(&[
        "revoke",
        LAB.0,
        "--reason",
        "decommissioned",
        "--socket",
        &socket,
    ]);
    assert_ne!(s.curl("/Patient/brokered-1"), "200");
    let inactive = eventually(Duration::from_secs(10), || {
        let info = s.auth.introspect(&lab_token).ok()?;
        (info["active"] == false).then_some(info)
    });
    assert!(
        inactive.is_some(),
        "the provider still holds the revoked token active"
    );
    let entries = s.audit_entries();
    let revoked = entries
        .iter()
        .find(|e| e["event"] == "token-revoked" && e["integration"] == LAB.0)
        .expect("the revocation is audited");
    assert_eq!(
        revoked["outcome"], "revoked at the authorization server",
        "{revoked}"
    );
}

/// The provider down: once the current token has run out, requests get 503 with an
/// OperationOutcome and nothing reaches the EHR; when it is back, they go through again.
fn a_provider_outage_refuses_closed_and_recovers(s: &mut Stack) {
    s.auth.stop();
    let ran_out = eventually(Duration::from_secs(TTL + 10), || {
        (s.expiry(REPORTS.0) == Some(0.0)).then_some(())
    });
    assert!(ran_out.is_some(), "report-writer's token never ran out");
    let forwarded = s.ehr.access_log().lines().count();
    let refused = s.read(0, 0.0);
    assert_eq!(refused[0]["status"], 503, "{refused:?}");
    let outcome = refused[0]["outcome"].as_str().unwrap_or_default();
    assert!(outcome.contains("authorization server"), "{outcome}");
    assert!(outcome.contains("nothing was forwarded"), "{outcome}");
    assert_eq!(
        s.ehr.access_log().lines().count(),
        forwarded,
        "nothing reached the EHR"
    );
    assert!(s.fetches(REPORTS.0, "unreachable") >= 1.0);
    s.auth.restart().expect("the provider back");
    let back = eventually(Duration::from_secs(30), || {
        (s.read(0, 0.0)[0]["status"] == 200).then_some(())
    });
    assert!(back.is_some(), "{}", s.agent.log_text());
}
