//! A real `fhirwall run` for tests: its own config, policy directory, pins and cgroup, started
//! inside the test cgroup's `agent` child and stopped (SIGTERM, then SIGKILL) on drop.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
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
}

impl AgentFiles {
    /// Writes a config for an agent attached to `cgroup`, pinning under `pin_dir`.
    pub fn new(dir: &Path, cgroup: &TestCgroup, pin_dir: &Path, mark: u32) -> anyhow::Result<Self> {
        let policies = dir.join("policies");
        fs::create_dir_all(&policies)?;
        let socket = dir.join("admin.sock");
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let transparent_port = free_port()?;
        let config = dir.join("agent.yaml");
        let text = format!(
            "node_name: test-node\npolicies: {policies}\nstate_dir: {state}\n\
             sidecar:\n  listen_v4: 127.0.0.1\n  listen_v6: \"::1\"\n  transparent_port: {transparent_port}\n  agent_mark: {mark}\n\
             kernel:\n  pin_dir: {pins}\n  cgroup: {cgroup}\n  heartbeat_interval_ms: 200\n  heartbeat_timeout_ms: 1000\n\
             admin:\n  socket: {socket}\n  metrics: {metrics}\n",
            policies = policies.display(),
            state = dir.join("state").display(),
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
        })
    }

    /// The agent's `state_dir` (audit store, CA); a test may mount a file system here first.
    #[must_use]
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
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
