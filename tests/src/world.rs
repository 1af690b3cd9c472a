//! The agent's world for end-to-end tests: a test cgroup with `agent` and `work` children, a pin
//! directory, a config and policy in a temporary directory, and a protected plain-HTTP
//! destination. Everything is removed on drop, also when the test fails.

use std::{
    path::PathBuf,
    process::{Command, Output},
};

use serde_json::Value;

use crate::{
    PinDir, Probe, TempDir, TestCgroup,
    agent::{Agent, AgentFiles, AgentOptions},
    destination::Destination,
    target_binary,
};

/// `SO_MARK` of the test agent's upstream sockets.
pub const MARK: u32 = 0x00f1_f1f1;

pub struct World {
    pub files: AgentFiles,
    pub destination: Destination,
    /// Workload processes run here.
    pub work: PathBuf,
    /// The agent runs here (its connects are not redirected).
    pub agent_cgroup: PathBuf,
    _dir: TempDir,
    pub pins: PinDir,
    pub cgroup: TestCgroup,
}

impl World {
    /// A world whose one integration (`probe-integration`, for `fw-probe`) has `status`.
    #[must_use]
    pub fn new(status: &str) -> Self {
        Self::with_options(status, &AgentOptions::default())
    }

    /// Like [`World::new`], with the optional parts of the agent's config.
    #[must_use]
    pub fn with_options(status: &str, options: &AgentOptions) -> Self {
        let cgroup = TestCgroup::new().expect("cgroup");
        let work = cgroup.child("work").expect("work");
        let agent_cgroup = cgroup.child("agent").expect("agent");
        let pins = PinDir::new();
        let dir = TempDir::new("fhirwall-agent-test").expect("temp dir");
        let files = AgentFiles::with_options(&dir.0, &cgroup, &pins.path, MARK, options)
            .expect("agent files");
        let destination = Destination::start([127, 0, 0, 8]);
        let world = Self {
            files,
            destination,
            work,
            agent_cgroup,
            _dir: dir,
            pins,
            cgroup,
        };
        world.write_policy(status, &probe_exe());
        world
    }

    /// The policy: upstream `ehr` (the destination, plain HTTP) and `probe-integration`, which
    /// may read Patients, for the executable `exe`.
    pub fn write_policy(&self, status: &str, exe: &str) {
        let text = format!(
            "kind: Upstream\nname: ehr\naddresses: [\"{dst}\"]\nbase_path: /\ntls:\n  mode: plain\n---\n\
             kind: Integration\nname: probe-integration\nowner: Test <test@example.test>\n\
             purpose: agent end-to-end tests\ndata_classes: [test]\nexpected_resources: [Patient]\n\
             status: {status}\nworkload:\n  exe: {exe}\nupstreams: [ehr]\nscopes: [system/Patient.rs]\n\
             purposes_of_use: [TREAT]\ndefault_purpose: TREAT\npatient:\n  mode: any\n",
            dst = self.destination.addr,
        );
        self.files
            .write_policy("policy.yaml", &text)
            .expect("policy");
    }

    /// Starts the agent and waits until it serves.
    #[must_use]
    pub fn start(&self) -> Agent {
        Agent::start(&self.files, &self.agent_cgroup).expect("agent start")
    }

    /// The agent's state directory (audit store, CA).
    #[must_use]
    pub fn state_dir(&self) -> PathBuf {
        self.files.state_dir()
    }

    /// The agent's audit store.
    #[must_use]
    pub fn db(&self) -> PathBuf {
        self.state_dir().join("audit.db")
    }

    /// `fw-probe` in the `work` cgroup, connecting to the destination, run to completion.
    #[must_use]
    pub fn probe(&self, extra: &[&str]) -> Value {
        self.spawn_probe(extra).report().expect("probe report")
    }

    /// `fw-probe` in the `work` cgroup, connecting to the destination.
    #[must_use]
    pub fn spawn_probe(&self, extra: &[&str]) -> Probe {
        let dst = self.destination.addr.to_string();
        let mut args = vec!["--cgroup", self.work.to_str().expect("utf-8")];
        args.extend_from_slice(extra);
        args.push(&dst);
        Probe::spawn(&args).expect("probe")
    }

    /// A value from the agent's `/metrics`, by the start of its line.
    #[must_use]
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.files.metric(name)
    }

    /// `fhirwall ARGS`.
    #[must_use]
    pub fn fhirwall(&self, args: &[&str]) -> Output {
        Command::new(target_binary("fhirwall").expect("fhirwall"))
            .args(args)
            .output()
            .expect("running fhirwall")
    }

    /// `fhirwall audit query --format json` against this agent's store, filtered by `args`.
    #[must_use]
    pub fn audit(&self, args: &[&str]) -> Vec<Value> {
        self.files.audit(args).expect("fhirwall audit query")
    }

    /// `fhirwall workloads --json` through the admin socket.
    #[must_use]
    pub fn workloads(&self) -> Value {
        let socket = self.files.socket.to_str().expect("utf-8");
        let out = self.fhirwall(&["workloads", "--json", "--socket", socket]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    }
}

/// The path of `fw-probe`, which the policy names as the integration's executable.
#[must_use]
pub fn probe_exe() -> String {
    target_binary("fw-probe")
        .expect("fw-probe")
        .display()
        .to_string()
}

/// The status code of a probe's `reply`.
#[must_use]
pub fn status(report: &Value) -> Option<u16> {
    report["reply"]
        .as_str()?
        .strip_prefix("HTTP/1.1 ")?
        .get(..3)?
        .parse()
        .ok()
}
