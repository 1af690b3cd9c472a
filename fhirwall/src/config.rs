//! The agent's own configuration (`fhirwall run --config FILE`): where things live and how the
//! kernel and the sidecar are set up. What is allowed lives in the policy directory instead.

use std::{
    fs,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use fhirwall_policy::Enforcement;
use serde::{Deserialize, Serialize};

/// Default transparent listener port. Below 1024 on purpose: while the agent is down, only a
/// privileged process could bind it and catch redirected connections.
pub const DEFAULT_TRANSPARENT_PORT: u16 = 944;
/// `SO_MARK` of the agent's upstream sockets (0x6677 "fw").
pub const DEFAULT_AGENT_MARK: u32 = 0x0066_7700;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Name of this node in audit records; the host name by default.
    pub node_name: String,
    /// Directory of policy files.
    pub policies: PathBuf,
    /// Where unregistered workloads are stopped: `sidecar` (default) or `kernel`.
    pub enforcement: Enforcement,
    /// Persistent state: audit store, local CA.
    pub state_dir: PathBuf,
    pub sidecar: SidecarConfig,
    pub kernel: KernelConfig,
    pub admin: AdminConfig,
    pub audit: AuditSettings,
}

/// How the audit store is written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// `fsync` (default): a write is forwarded, and a read's response released, only once its
    /// record's group commit is fsynced in the journal. `background`: records reach the operating
    /// system first (an agent crash loses nothing) and the journal is fsynced every
    /// `fsync_interval_ms` (a power loss can lose that interval).
    pub durability: DurabilityMode,
    /// With `durability: background`: the longest a committed record may wait for its fsync.
    pub fsync_interval_ms: u64,
    /// Size of each journal segment file, in MiB, written in full before use (so a full disk
    /// shows at a rotation, not in the middle of a segment).
    pub segment_mb: u64,
    /// How often the agent reads the trail for its unused-grant and last-request metrics
    /// (`fhirwall_integration_unused_grants`, `..._last_request_timestamp_seconds`); 0: never.
    pub usage_interval_s: u64,
    /// The window of those metrics, in days.
    pub usage_window_days: u64,
    /// Stream the trail as IHE ATNA syslog over TLS to an Audit Record Repository, from the
    /// running agent (what `fhirwall audit export --syslog --follow` does on its own).
    pub syslog: Option<SyslogSettings>,
}

/// `audit.syslog`: where the agent streams its trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogSettings {
    /// `tls://HOST:PORT`.
    pub target: String,
    /// CA certificates (PEM) the repository's certificate is checked against, beside the
    /// system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key (PEM), for repositories that authenticate nodes.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DurabilityMode {
    #[default]
    Fsync,
    Background,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            durability: DurabilityMode::Fsync,
            fsync_interval_ms: 100,
            segment_mb: 64,
            usage_interval_s: 600,
            usage_window_days: 30,
            syslog: None,
        }
    }
}

impl AuditSettings {
    /// The audit store's durability from these settings.
    #[must_use]
    pub fn durability(&self) -> crate::audit::Durability {
        match self.durability {
            DurabilityMode::Fsync => crate::audit::Durability::Fsync,
            DurabilityMode::Background => crate::audit::Durability::Background {
                fsync_interval: Duration::from_millis(self.fsync_interval_ms),
            },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SidecarConfig {
    /// Address of the transparent listener for redirected IPv4 connections. Loopback by default;
    /// on Kubernetes the node address, so pods reach it from their own network namespace.
    pub listen_v4: Ipv4Addr,
    /// Address for redirected IPv6 connections; `null` when the node has no IPv6.
    pub listen_v6: Option<Ipv6Addr>,
    pub transparent_port: u16,
    /// `SO_MARK` on the agent's upstream sockets, which the kernel lets through.
    pub agent_mark: u32,
    /// Worker threads of the data plane runtime.
    pub worker_threads: usize,
    /// Upstream connect timeout in milliseconds.
    pub connect_timeout_ms: u64,
    /// A listener for applications configured to talk plain HTTP to the sidecar (loopback),
    /// forwarding to one configured upstream. Their connections are attributed like redirected
    /// ones (the kernel records them without redirecting).
    pub explicit: Option<ExplicitListener>,
    /// Largest request body buffered for classification (Bundles, `_search` forms, PATCH,
    /// creates and updates); larger ones are answered 413.
    pub max_body_bytes: usize,
    /// Time to receive a request head, and to finish a TLS handshake, in milliseconds.
    pub header_timeout_ms: u64,
    /// Time an idle keep-alive connection is kept, in milliseconds.
    pub idle_timeout_ms: u64,
    /// Time from the end of a forwarded request to the upstream's response head, in milliseconds.
    pub response_timeout_ms: u64,
    /// Most bytes of one response held back for checking: a whole response that must be
    /// judged before any of it is released, or one Bundle entry of a filtered one. Beyond it a
    /// patient-bound integration's response is refused (403); any other's is released and
    /// checked as it streams.
    pub max_response_hold_bytes: usize,
    /// HTTP proxies on this host's way out (`host:port`, names re-resolved like upstreams'):
    /// workloads' connections to them come to the sidecar, which relays `CONNECT` tunnels to
    /// anything but a protected upstream and refuses the rest.
    pub egress_proxies: Vec<fhirwall_policy::HostPort>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplicitListener {
    pub listen: SocketAddr,
    /// Name of the policy upstream its requests go to.
    pub upstream: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KernelConfig {
    /// bpffs directory for pinned programs and maps.
    pub pin_dir: PathBuf,
    /// cgroup v2 directory to attach to; the root of the hierarchy when absent.
    pub cgroup: Option<PathBuf>,
    pub heartbeat_interval_ms: u64,
    /// Protected connects are refused once the heartbeat is older than this.
    pub heartbeat_timeout_ms: u64,
    /// Re-resolve upstream host names this often.
    pub resolve_interval_s: u64,
    /// Reset connections to protected destinations that predate the agent.
    pub teardown_existing: bool,
    /// Size of the established-connection table.
    pub conns_capacity: Option<u32>,
    /// Load the BPF LSM programs as a second layer (needs BPF LSM active and a kernel that
    /// loads BTF trampoline programs). Off by default: see README, "Enforcement layers".
    pub lsm_layer: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Unix socket of the admin API (mode 0600): revoke, break-glass, workloads.
    pub socket: PathBuf,
    /// Plain-HTTP address for Prometheus `/metrics` and `/healthz`; `null` to disable.
    pub metrics: Option<SocketAddr>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            node_name: hostname(),
            policies: "/etc/fhirwall/policies".into(),
            enforcement: Enforcement::default(),
            state_dir: "/var/lib/fhirwall".into(),
            sidecar: SidecarConfig::default(),
            kernel: KernelConfig::default(),
            admin: AdminConfig::default(),
            audit: AuditSettings::default(),
        }
    }
}

impl Default for SidecarConfig {
    fn default() -> Self {
        Self {
            listen_v4: Ipv4Addr::LOCALHOST,
            listen_v6: Some(Ipv6Addr::LOCALHOST),
            transparent_port: DEFAULT_TRANSPARENT_PORT,
            agent_mark: DEFAULT_AGENT_MARK,
            worker_threads: 1,
            connect_timeout_ms: 5_000,
            explicit: None,
            max_body_bytes: 16 << 20,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            response_timeout_ms: 60_000,
            max_response_hold_bytes: 8 << 20,
            egress_proxies: Vec::new(),
        }
    }
}

impl Default for KernelConfig {
    fn default() -> Self {
        Self {
            pin_dir: "/sys/fs/bpf/fhirwall".into(),
            cgroup: None,
            heartbeat_interval_ms: 1_000,
            heartbeat_timeout_ms: 5_000,
            resolve_interval_s: 30,
            teardown_existing: true,
            conns_capacity: None,
            lsm_layer: false,
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            socket: "/run/fhirwall/admin.sock".into(),
            metrics: Some(SocketAddr::from(([127, 0, 0, 1], 9944))),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl AgentConfig {
    /// Reads a YAML config file; fields left out take their defaults.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Self = serde_saphyr::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            line: e.location().map_or(0, |l| l.line()),
            message: e.without_snippet().to_string(),
        })?;
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let k = &self.kernel;
        if self.sidecar.agent_mark == 0 {
            return Err(
                "sidecar.agent_mark must not be 0 (unmarked sockets would count as the agent's)"
                    .into(),
            );
        }
        if self.sidecar.transparent_port == 0 || self.sidecar.worker_threads == 0 {
            return Err(
                "sidecar.transparent_port and sidecar.worker_threads must be positive".into(),
            );
        }
        if !(1..=10_000).contains(&self.audit.fsync_interval_ms) {
            return Err(
                "audit.fsync_interval_ms must be between 1 and 10000 (the records a power loss may take)"
                    .into(),
            );
        }
        if let Some(syslog) = &self.audit.syslog {
            if !syslog.target.starts_with("tls://") {
                return Err("audit.syslog.target must be tls://HOST:PORT".into());
            }
            if syslog.client_cert.is_some() != syslog.client_key.is_some() {
                return Err("audit.syslog: client_cert and client_key go together".into());
            }
        }
        if !(1..=3650).contains(&self.audit.usage_window_days) {
            return Err("audit.usage_window_days must be between 1 and 3650".into());
        }
        if !(1..=1024).contains(&self.audit.segment_mb) {
            return Err("audit.segment_mb must be between 1 and 1024".into());
        }
        if k.heartbeat_interval_ms == 0 || k.heartbeat_timeout_ms < 2 * k.heartbeat_interval_ms {
            return Err(
                "kernel.heartbeat_timeout_ms must be at least twice heartbeat_interval_ms".into(),
            );
        }
        Ok(())
    }

    /// The HTTP engine's limits from this configuration.
    #[must_use]
    pub fn http_limits(&self) -> fhirwall_http::Limits {
        let s = &self.sidecar;
        fhirwall_http::Limits {
            max_buffered_body: s.max_body_bytes,
            header_timeout: Duration::from_millis(s.header_timeout_ms),
            idle_timeout: Duration::from_millis(s.idle_timeout_ms),
            connect_timeout: Duration::from_millis(s.connect_timeout_ms),
            response_timeout: Duration::from_millis(s.response_timeout_ms),
            ..fhirwall_http::Limits::default()
        }
    }

    #[must_use]
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.kernel.heartbeat_interval_ms)
    }
}

/// This host's name, `localhost` when it has none.
#[must_use]
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.yaml");
        fs::write(&path, text).expect("write");
        AgentConfig::load(&path)
    }

    #[test]
    fn fields_left_out_take_defaults() {
        let config =
            parse("node_name: ehr-1\nsidecar:\n  transparent_port: 15001\n").expect("valid");
        assert_eq!(config.node_name, "ehr-1");
        assert_eq!(config.sidecar.transparent_port, 15001);
        assert_eq!(config.sidecar.agent_mark, DEFAULT_AGENT_MARK);
        assert_eq!(config.kernel.pin_dir, PathBuf::from("/sys/fs/bpf/fhirwall"));
    }

    #[test]
    fn typos_and_unsafe_values_are_errors() {
        let err = parse("sidecar:\n  transparent_prot: 1\n").expect_err("typo");
        assert!(matches!(err, ConfigError::Parse { line: 2, .. }), "{err}");
        assert!(parse("sidecar:\n  agent_mark: 0\n").is_err());
        assert!(
            parse("kernel:\n  heartbeat_interval_ms: 1000\n  heartbeat_timeout_ms: 1500\n")
                .is_err()
        );
        assert!(parse("enforcement: kernel\n").is_ok());
        assert!(parse("enforcement: both\n").is_err());
        assert!(parse("audit:\n  durability: sometimes\n").is_err());
        assert!(parse("audit:\n  fsync_interval_ms: 0\n").is_err());
        assert!(parse("audit:\n  fsync_interval_ms: 60000\n").is_err());
        assert!(parse("audit:\n  segment_mb: 0\n").is_err());
        assert!(parse("audit:\n  segment_mb: 4096\n").is_err());
        assert_eq!(
            parse("audit:\n  segment_mb: 8\n")
                .expect("valid")
                .audit
                .segment_mb,
            8
        );
    }

    #[test]
    fn the_shipped_config_shows_the_defaults() {
        let shipped = parse(include_str!("../../deploy/agent.yaml")).expect("deploy/agent.yaml");
        assert_eq!(shipped, AgentConfig::default());
    }

    #[test]
    fn audit_durability_is_fsync_unless_asked_otherwise() {
        use crate::audit::Durability;
        let default = parse("node_name: x\n").expect("valid");
        assert_eq!(default.audit.durability(), Durability::Fsync);
        let background =
            parse("audit:\n  durability: background\n  fsync_interval_ms: 50\n").expect("valid");
        assert_eq!(
            background.audit.durability(),
            Durability::Background {
                fsync_interval: Duration::from_millis(50)
            }
        );
    }
}
