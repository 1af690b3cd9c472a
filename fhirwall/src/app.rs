//! Wiring: two runtimes, the data plane apart from everything else.
//!
//! - The data-plane runtime (`sidecar.worker_threads` threads, its own OS thread) accepts
//!   connections and carries requests. Nothing else runs there, so its latency does not depend
//!   on admin traffic.
//! - The control runtime (the main thread) owns the kernel programs: heartbeat, events, policy
//!   reloads, re-resolution, the verdict map, routes and upstream configs; it serves the admin
//!   API and metrics.
//! - The audit writer is a std thread of its own (SQLite).
//!
//! Startup order matters for fail-closed behaviour: the sidecar's listeners are bound before the
//! kernel redirects to them, the protected set, verdicts and routes are filled before the
//! programs are attached, and connections that predate the agent are reset last.

mod control;
mod listen;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::{Arc, atomic::AtomicU64},
    time::{Duration, Instant},
};

use fhirwall_http::{Pool, PoolConfig};
use fhirwall_policy::{LoadError, Policy, RateLimiter};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::{
    admin::{AdminState, AuditQueries},
    attribution::{AttributionSettings, Attributor},
    audit::{AuditConfig, AuditError, AuditSink, Producers},
    broker::{Broker, keys::KeyStore},
    config::AgentConfig,
    kernel::{CgroupRoot, Kernel, KernelError, KernelSettings},
    metrics::Metrics,
    private_files,
    proxy::{
        listener::{Listener, Routes, first_connection_id},
        live::LiveConnections,
        sidecar::{Bindings, BreakGlassSessions, CredentialSharing, PolicyState, Secrets, Shared},
        tls::{
            self, CaSpec, ConnectorConfig, LeafCache, LeafPolicy, LocalCa, TerminatorConfig,
            TlsError, TlsTerminator, UpstreamConnector, UpstreamTable, rotation,
        },
    },
};

/// How long in-flight connections may take to finish after SIGTERM.
const DRAIN: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("the policy in {dir} is not valid")]
    Policy {
        dir: PathBuf,
        #[source]
        source: LoadError,
    },
    #[error("sidecar.explicit names upstream `{upstream}`, which the policy does not define")]
    ExplicitUpstream { upstream: String },
    #[error("kernel programs")]
    Kernel(#[from] KernelError),
    #[error("TLS (local CA, termination or upstream)")]
    Tls(#[from] TlsError),
    #[error("the audit store")]
    Audit(#[from] AuditError),
    #[error("operator overrides")]
    Overrides(#[from] control::OverrideError),
    #[error("the state directory")]
    State(#[from] private_files::PrivateFileError),
    #[error("starting {what}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the agent until SIGTERM or SIGINT.
pub fn run(config: &AgentConfig) -> Result<(), AppError> {
    state_dir(&config.state_dir)?;
    let (policy, overrides) = load_policy(config)?;
    // The audit flusher holds a batch for more entries while the data plane still runs.
    let producers = Arc::new(Producers::default());
    let data_rt = runtime(
        config.sidecar.worker_threads,
        "fhirwall-data",
        Some(&producers),
    )?;
    let control_rt = runtime(1, "fhirwall-control", None)?;
    let listeners = {
        // Registered with the data-plane runtime's reactor, where they are served.
        let _entered = data_rt.enter();
        listen::bind(&config.sidecar)?
    };
    let cgroups = CgroupRoot::discover()?;
    let agent_cgroup = listen::own_cgroup_id(&cgroups)?;
    let kernel = Kernel::load(kernel_settings(config, &cgroups, agent_cgroup))?;
    let metrics = Arc::new(Metrics::new());
    // The loaded policy (operator revocations applied); reloads go through `Control::publish`.
    metrics.set_policy(policy.expiries(), &policy.integrations_by_status());
    let audit_db = config.state_dir.join("audit.db");
    let (audit, audit_writer) = AuditSink::start(audit_config(config, &metrics, producers))?;
    let attributor = Attributor::new(
        kernel.conns(),
        AttributionSettings {
            cgroup_mount: cgroups.mount.clone(),
            ..AttributionSettings::default()
        },
    );
    let state = PolicyState {
        limiter: RateLimiter::new(&policy, Instant::now()),
        policy: Arc::new(policy),
    };
    let (policy_tx, policy_rx) = watch::channel(Arc::new(state));
    usage_metrics(config, policy_rx.clone(), &metrics)?;
    stream_syslog(config)?;
    let (routes_tx, routes_rx) = watch::channel(Arc::new(Routes::default()));
    let live = Arc::new(LiveConnections::default());
    let sidecar = sidecar(
        config,
        &attributor,
        policy_rx,
        routes_rx,
        &audit,
        &metrics,
        &live,
    )?;
    let (commands_tx, commands_rx) = tokio::sync::mpsc::channel(16);
    let (layers_tx, layers_rx) = watch::channel(None);
    let admin = Arc::new(AdminState {
        node: config.node_name.clone(),
        metrics: Arc::clone(&metrics),
        live: Arc::clone(&live),
        kernel_stats: kernel.stats_reader().ok(),
        commands: Some(commands_tx),
        audit: audit.monitor(),
        audit_queries: AuditQueries::new(audit_db),
        leaves: Some(Arc::clone(sidecar.terminator.leaves())),
        layers: Some(layers_rx),
        broker: Some(Arc::clone(&sidecar.exchange.broker)),
    });
    let mut control = control::Control {
        config: config.clone(),
        kernel,
        attributor,
        policy: policy_tx,
        routes: routes_tx,
        sidecar: Arc::clone(&sidecar),
        metrics,
        audit,
        resolved: BTreeMap::default(),
        ca_uncovered: BTreeSet::default(),
        processes: BTreeMap::default(),
        policy_stamp: control::stamp(&config.policies),
        events: None,
        overrides,
        commands: commands_rx,
        refusals: tokio::task::JoinSet::new(),
        layers: layers_tx,
    };
    control_rt.block_on(control.start())?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let data_plane = std::thread::Builder::new()
        .name("fhirwall-data".into())
        .spawn(move || data_rt.block_on(serve_data_plane(sidecar, listeners, shutdown_rx, live)))
        .map_err(|source| AppError::Io {
            what: "the data-plane thread",
            source,
        })?;
    info!("fhirwall is enforcing");
    let outcome = control_rt.block_on(control.run(admin, &config.admin));
    let _ = shutdown_tx.send(true);
    if data_plane.join().is_err() {
        warn!("the data-plane thread panicked");
    }
    control.stop();
    control_rt.block_on(control.finish_audit());
    drop(control);
    // Every sink is gone now: the writer commits what is queued and stops.
    audit_writer.join();
    outcome
}

/// The unused-grant and last-request metrics, read from the trail every
/// `audit.usage_interval_s` against the policy in force.
fn usage_metrics(
    config: &AgentConfig,
    policy: watch::Receiver<Arc<PolicyState>>,
    metrics: &Arc<Metrics>,
) -> Result<(), AppError> {
    if config.audit.usage_interval_s == 0 {
        return Ok(());
    }
    crate::least_privilege::usage::spawn_metrics(
        config.state_dir.join("audit.db"),
        Duration::from_secs(config.audit.usage_interval_s),
        config.audit.usage_window_days,
        move || Arc::clone(&policy.borrow().policy),
        Arc::clone(metrics),
    )
    .map_err(|source| AppError::Io {
        what: "the usage metrics thread",
        source,
    })
}

/// `audit.syslog`: the trail streamed to the Audit Record Repository from a thread of its own
/// (the exporter reads the store with blocking calls; nothing on the control runtime waits for
/// it), from the same durable cursor `fhirwall audit export --syslog` uses. Detached: it
/// resumes from the cursor at the next start.
fn stream_syslog(config: &AgentConfig) -> Result<(), AppError> {
    let Some(syslog) = &config.audit.syslog else {
        return Ok(());
    };
    let cfg = crate::audit::SyslogExport {
        db: config.state_dir.join("audit.db"),
        cursor: format!("syslog:{}", syslog.target),
        target: syslog.target.clone(),
        ca_file: syslog.ca_file.clone(),
        client: syslog.client_cert.clone().zip(syslog.client_key.clone()),
        hostname: config.node_name.clone(),
        follow: true,
        poll: Duration::from_millis(200),
        max_backoff: Duration::from_secs(30),
        max_attempts: None,
    };
    let io = |source| AppError::Io {
        what: "the syslog export thread",
        source,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io)?;
    std::thread::Builder::new()
        .name("fhirwall-syslog".into())
        .spawn(move || {
            // Follows for ever; it ends only on an error no retry can mend (a bad target).
            if let Err(e) = rt.block_on(crate::audit::export_syslog(&cfg)) {
                tracing::error!(error = %crate::error_chain(&e), "the syslog export stopped");
            }
        })
        .map(drop)
        .map_err(io)
}

/// The audit store's settings from the agent config.
fn audit_config(config: &AgentConfig, metrics: &Metrics, producers: Arc<Producers>) -> AuditConfig {
    let mut audit = AuditConfig::new(config.state_dir.join("audit.db"));
    audit.store.durability = config.audit.durability();
    audit.journal.segment_bytes = config.audit.segment_mb * 1024 * 1024;
    audit.commit_seconds = Some(metrics.audit_commit_seconds.clone());
    audit.producers = Some(producers);
    audit
}

/// The policy as enforced at start: the files, checked against the agent config, with the
/// operator's revocations applied.
fn load_policy(config: &AgentConfig) -> Result<(Policy, control::Overrides), AppError> {
    let mut policy = Policy::load(&config.policies).map_err(|source| AppError::Policy {
        dir: config.policies.clone(),
        source,
    })?;
    if let Some(explicit) = &config.sidecar.explicit
        && policy.upstream(&explicit.upstream).is_none()
    {
        return Err(AppError::ExplicitUpstream {
            upstream: explicit.upstream.clone(),
        });
    }
    let overrides = control::Overrides::load(&config.state_dir.join("overrides.json"))?;
    overrides.apply(&mut policy);
    control::warn_unverifiable_exes(&policy);
    info!(
        upstreams = policy.upstreams.len(),
        integrations = policy.integrations.len(),
        "policy loaded"
    );
    Ok((policy, overrides))
}

/// The sidecar and what its connections share.
fn sidecar(
    config: &AgentConfig,
    attributor: &Attributor,
    policy: watch::Receiver<Arc<PolicyState>>,
    routes: watch::Receiver<Arc<Routes>>,
    audit: &AuditSink,
    metrics: &Arc<Metrics>,
    live: &Arc<LiveConnections>,
) -> Result<Arc<Listener>, AppError> {
    let terminator = terminator(config, &policy.borrow().policy)?;
    let shared = Arc::new(Shared {
        node: config.node_name.clone(),
        policy,
        audit: audit.clone(),
        metrics: Arc::clone(metrics),
        secrets: Secrets::default(),
        sessions: Arc::new(BreakGlassSessions::default()),
        sharing: CredentialSharing::default(),
        bindings: Bindings::default(),
        max_response_hold: config.sidecar.max_response_hold_bytes,
        broker: Arc::new(Broker::new(
            KeyStore::new(keys_dir(config)),
            config.node_name.clone(),
            Arc::clone(metrics),
            audit.clone(),
        )),
    });
    Ok(Arc::new(Listener {
        attributor: attributor.clone(),
        exchange: shared,
        terminator,
        pool: Pool::new(connector(config), PoolConfig::default()),
        routes,
        live: Arc::clone(live),
        metrics: Arc::clone(metrics),
        limits: config.http_limits(),
        agent_mark: config.sidecar.agent_mark,
        next_id: AtomicU64::new(first_connection_id()),
    }))
}

/// The data plane: accept loops, then after shutdown a bounded drain of open connections.
async fn serve_data_plane(
    sidecar: Arc<Listener>,
    listeners: Vec<tokio::net::TcpListener>,
    mut shutdown: watch::Receiver<bool>,
    live: Arc<LiveConnections>,
) {
    for listener in listeners {
        tokio::spawn(Arc::clone(&sidecar).serve(listener, shutdown.clone()));
    }
    drop(sidecar);
    let _ = shutdown.changed().await;
    let deadline = Instant::now() + DRAIN;
    while !live.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !live.is_empty() {
        warn!(
            remaining = live.len(),
            "connections still open at the end of the drain period"
        );
    }
}

/// The state directory (audit store, CA, overrides): created private to the agent's user, or
/// narrowed to it when it was left readable (a `hostPath`, an older version, a hand-made one).
fn state_dir(dir: &std::path::Path) -> Result<(), AppError> {
    let narrowed = private_files::secure_state_dir(dir)?;
    if !narrowed.is_empty() {
        warn!(
            dir = %dir.display(),
            entries = narrowed.len(),
            "the state directory was readable by other users; narrowed to the agent's user"
        );
    }
    Ok(())
}

/// What a new node CA for `policy` looks like: permitted to sign for the protected upstreams'
/// names and the addresses they resolve to now (resolved here, blocking; the control plane keeps
/// resolving on its own).
#[must_use]
pub fn ca_spec(config: &AgentConfig, policy: &Policy) -> CaSpec {
    let resolved = crate::enforce::resolve_now(policy);
    CaSpec {
        permitted: control::served_names(policy, &resolved)
            .into_iter()
            .collect(),
        ..CaSpec::new(&config.node_name)
    }
}

/// The integrations' signing keys for brokered tokens (`fhirwall credentials keygen`).
#[must_use]
pub fn keys_dir(config: &AgentConfig) -> PathBuf {
    config.state_dir.join("keys")
}

/// The node CA's directory.
#[must_use]
pub fn ca_dir(config: &AgentConfig) -> PathBuf {
    config.state_dir.join("ca")
}

/// TLS termination with leaves from the node CA: created on first start (see [`ca_spec`]),
/// kept afterwards, replaced by a rotated one whose time has come.
fn terminator(config: &AgentConfig, policy: &Policy) -> Result<TlsTerminator, AppError> {
    let dir = ca_dir(config);
    if rotation::switch_if_due(&dir, jiff::Timestamp::now())? {
        info!("switched to the rotated node CA");
    }
    let (ca, created) = LocalCa::init(&dir, &ca_spec(config, policy))?;
    info!(created = ?created, "node CA ready; trust it on EHR hosts with `fhirwall ca export`");
    if !ca.scope().is_constrained() {
        warn!(
            "the node CA has no name constraints (made by an older version or by hand): a copy of \
             its key could impersonate any server to the hosts that trust it; replace it with \
             `fhirwall ca rotate`"
        );
    }
    let provider = tls::provider();
    let leaves = Arc::new(LeafCache::new(
        Arc::new(ca),
        Arc::clone(&provider),
        LeafPolicy::default(),
    ));
    let handshake_timeout = Duration::from_millis(config.sidecar.header_timeout_ms);
    Ok(TlsTerminator::new(
        leaves,
        provider,
        TerminatorConfig {
            handshake_timeout,
            ..TerminatorConfig::default()
        },
    )?)
}

/// Upstream connections; the table of upstreams is filled by the control loop.
fn connector(config: &AgentConfig) -> UpstreamConnector {
    let timeout = Duration::from_millis(config.sidecar.connect_timeout_ms);
    let settings = ConnectorConfig {
        mark: config.sidecar.agent_mark,
        connect_timeout: timeout,
        handshake_timeout: timeout,
    };
    UpstreamConnector::new(settings, tls::provider(), UpstreamTable::default())
}

/// A runtime of `threads` threads named `name`; with `producers`, they report when they run
/// and when they park.
fn runtime(
    threads: usize,
    name: &str,
    producers: Option<&Arc<Producers>>,
) -> Result<tokio::runtime::Runtime, AppError> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    if let Some(p) = producers {
        let (unparked, parked) = (Arc::clone(p), Arc::clone(p));
        builder
            .on_thread_unpark(move || unparked.unparked())
            .on_thread_park(move || parked.parked());
    }
    builder
        .enable_all()
        .thread_name(name)
        .build()
        .map_err(|source| AppError::Io {
            what: "a runtime",
            source,
        })
}

fn kernel_settings(
    config: &AgentConfig,
    cgroups: &CgroupRoot,
    agent_cgroup: u64,
) -> KernelSettings {
    let s = &config.sidecar;
    KernelSettings {
        pin_dir: config.kernel.pin_dir.clone(),
        attach_cgroup: config
            .kernel
            .cgroup
            .clone()
            .unwrap_or_else(|| cgroups.mount.clone()),
        agent_cgroup,
        agent_mark: s.agent_mark,
        sidecar_v4: s.listen_v4,
        sidecar_v6: s.listen_v6.unwrap_or(std::net::Ipv6Addr::LOCALHOST),
        sidecar_port: s.transparent_port,
        kernel_enforcement: config.enforcement == fhirwall_policy::Enforcement::Kernel,
        heartbeat_timeout: Duration::from_millis(config.kernel.heartbeat_timeout_ms),
        conns_capacity: config.kernel.conns_capacity,
        lsm_layer: config.kernel.lsm_layer,
    }
}
