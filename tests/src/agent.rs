//! A real `fhirwall run` for tests: its own config, policy directory, pins and cgroup, started
//! inside the test cgroup's `agent` child and stopped (SIGTERM, then SIGKILL) on drop.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{TestCgroup, eventually, target_binary};

/// Where a test agent lives.
pub struct AgentFiles {
    pub dir: PathBuf,
    pub policies: PathBuf,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub metrics: SocketAddr,
    pub transparent_port: u16,
    /// The agent's state: audit store (`audit.db`) and node CA (`ca/ca.pem`).
    pub state_dir: PathBuf,
}

/// Optional parts of a test agent's config.
#[derive(Clone, Debug, Default)]
pub struct AgentOptions {
    /// `sidecar.explicit`: a plain-HTTP listener forwarding to the named upstream.
    pub explicit: Option<(SocketAddr, String)>,
    /// `state_dir`, when not `<dir>/state` (e.g. on tmpfs, to take fsync out of a benchmark).
    pub state_dir: Option<PathBuf>,
    /// `audit.durability: background` with this `fsync_interval_ms`, instead of an fsync per
    /// group commit.
    pub background_fsync_ms: Option<u64>,
    /// `sidecar.header_timeout_ms`, when not the default.
    pub header_timeout_ms: Option<u64>,
    /// `audit.segment_mb`, when not the default.
    pub segment_mb: Option<u64>,
    /// `sidecar.egress_proxies`.
    pub egress_proxies: Vec<SocketAddr>,
    /// `audit.usage_interval_s`, when not the default.
    pub usage_interval_s: Option<u64>,
    /// `audit.syslog`: the repository's `tls://HOST:PORT` and the CA its certificate is from.
    pub syslog: Option<(String, PathBuf)>,
}

impl AgentFiles {
    /// Writes a config for an agent attached to `cgroup`, pinning under `pin_dir`.
    pub fn new(dir: &Path, cgroup: &TestCgroup, pin_dir: &Path, mark: u32) -> anyhow::Result<Self> {
        Self::with_options(dir, cgroup, pin_dir, mark, &AgentOptions::default())
    }

    /// Like [`AgentFiles::new`], with the optional parts of the config.
    pub fn with_options(
        dir: &Path,
        cgroup: &TestCgroup,
        pin_dir: &Path,
        mark: u32,
        options: &AgentOptions,
    ) -> anyhow::Result<Self> {
        let policies = dir.join("policies");
        fs::create_dir_all(&policies)?;
        let socket = dir.join("admin.sock");
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let transparent_port = free_port()?;
        let config = dir.join("agent.yaml");
        let state_dir = options
            .state_dir
            .clone()
            .unwrap_or_else(|| dir.join("state"));
        let explicit = options
            .explicit
            .as_ref()
            .map(|(listen, upstream)| {
                format!("  explicit:\n    listen: {listen}\n    upstream: {upstream}\n")
            })
            .unwrap_or_default();
        let header_timeout = options
            .header_timeout_ms
            .map(|ms| format!("  header_timeout_ms: {ms}\n"))
            .unwrap_or_default();
        let background = options
            .background_fsync_ms
            .map(|ms| format!("  durability: background\n  fsync_interval_ms: {ms}\n"))
            .unwrap_or_default();
        let egress = if options.egress_proxies.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = options
                .egress_proxies
                .iter()
                .map(|p| format!("\"{p}\""))
                .collect();
            format!("  egress_proxies: [{}]\n", list.join(", "))
        };
        let segment = options
            .segment_mb
            .map(|mb| format!("  segment_mb: {mb}\n"))
            .unwrap_or_default();
        let usage = options
            .usage_interval_s
            .map(|s| format!("  usage_interval_s: {s}\n"))
            .unwrap_or_default();
        let syslog = options
            .syslog
            .as_ref()
            .map(|(target, ca)| {
                format!(
                    "  syslog:\n    target: {target}\n    ca_file: {}\n",
                    ca.display()
                )
            })
            .unwrap_or_default();
        let extra = format!("{background}{segment}{usage}{syslog}");
        let audit = if extra.is_empty() {
            String::new()
        } else {
            format!("audit:\n{extra}")
        };
        let text = format!(
            "node_name: test-node\npolicies: {policies}\nstate_dir: {state}\n{audit}\
             sidecar:\n  listen_v4: 127.0.0.1\n  listen_v6: \"::1\"\n  transparent_port: {transparent_port}\n  agent_mark: {mark}\n{header_timeout}{egress}{explicit}\
             kernel:\n  pin_dir: {pins}\n  cgroup: {cgroup}\n  heartbeat_interval_ms: 200\n  heartbeat_timeout_ms: 1000\n\
             admin:\n  socket: {socket}\n  metrics: {metrics}\n",
            policies = policies.display(),
            state = state_dir.display(),
            pins = pin_dir.display(),
            cgroup = cgroup.dir.display(),
            socket = socket.display(),
        );
        fs::write(&config, text)?;
        Ok(Self {
            dir: dir.to_owned(),
            policies,
            config,
            socket,
            metrics,
            transparent_port,
            state_dir,
        })
    }

    /// The node CA certificate clients must trust (written by the agent at its first start).
    #[must_use]
    pub fn node_ca(&self) -> PathBuf {
        self.state_dir.join("ca/ca.pem")
    }

    /// A metric's value from the agent's `/metrics`: the first sample whose line starts with
    /// `name` (labels included, e.g. `fhirwall_connections_total{outcome="attributed"}`).
    #[must_use]
    pub fn metric(&self, name: &str) -> Option<f64> {
        let text = http_get(self.metrics, "/metrics").ok()?;
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    /// `fhirwall audit query --format json` on this agent's store, filtered by `args`.
    pub fn audit(&self, args: &[&str]) -> anyhow::Result<Vec<serde_json::Value>> {
        let db = self.state_dir.join("audit.db");
        let out = Command::new(target_binary("fhirwall")?)
            .args(["audit", "query", "--db"])
            .arg(&db)
            .args(["--format", "json"])
            .args(args)
            .output()
            .context("fhirwall audit query")?;
        if !out.status.success() {
            bail!("audit query: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    /// The agent's `state_dir` (audit store, CA); a test may mount a file system here first.
    #[must_use]
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir.clone()
    }

    pub fn write_policy(&self, name: &str, text: &str) -> anyhow::Result<()> {
        fs::write(self.policies.join(name), text).context("writing a policy file")
    }
}

/// A running agent.
pub struct Agent {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Agent {
    /// Starts `fhirwall run` in `cgroup_dir` and waits until its admin API answers.
    pub fn start(files: &AgentFiles, cgroup_dir: &Path) -> anyhow::Result<Self> {
        let fhirwall = target_binary("fhirwall")?;
        let log = files
            .dir
            .join(format!("agent-{}.log", crate::unique("run")));
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec {} run --config {}",
            cgroup_dir.display(),
            fhirwall.display(),
            files.config.display()
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?)
            .spawn()
            .context("starting fhirwall run")?;
        let mut agent = Self {
            child: Some(child),
            log,
        };
        let ready = eventually(Duration::from_secs(20), || {
            if agent.exited() {
                return Some(false);
            }
            http_get(files.metrics, "/healthz").ok().map(|_| true)
        });
        match ready {
            Some(true) => Ok(agent),
            _ => bail!(
                "the agent did not become ready; its log:\n{}",
                agent.log_text()
            ),
        }
    }

    #[must_use]
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the agent process is still running (it was neither stopped nor has it exited).
    pub fn running(&mut self) -> bool {
        self.child.is_some() && !self.exited()
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }

    /// The agent's process id, while it runs.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends SIGTERM and returns at once (see [`Agent::wait`]).
    pub fn terminate(&self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }

    /// Waits up to `timeout` for the agent to exit; its exit status if it did.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = eventually(timeout, || child.try_wait().ok().flatten())?;
        self.child = None;
        Some(status)
    }

    /// SIGKILL, as a crash or the OOM killer would: no drain, no cleanup.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns whether it exited successfully in time.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = eventually(Duration::from_secs(30), || child.try_wait().ok().flatten());
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        status.is_some_and(|s| s.success())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One plain-HTTP GET, returning the body of a 200 answer.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").context("no header end")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{path}: {head}");
    }
    Ok(body.to_owned())
}

/// One GET on the agent's admin socket: the status and the body.
pub fn admin_get(socket: &Path, target: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: fhirwall\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").context("no header end")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    Ok((status, body.to_owned()))
}

/// A port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
