//! Wiring: two runtimes, the data plane apart from everything else.
//!
//! - The data-plane runtime (`sidecar.worker_threads` threads) accepts redirected connections and
//!   carries them. Nothing else runs there, so its latency does not depend on admin traffic.
//! - The control runtime (one thread) owns the kernel programs: heartbeat, events, policy
//!   reloads, re-resolution, the verdict map; and it serves the admin API and metrics.
//!
//! Startup order matters for fail-closed behaviour: the sidecar's listeners are bound before the
//! kernel starts redirecting to them, the protected set and verdict map are filled before the
//! programs are attached, and connections that predate the agent are reset last.

mod control;
mod listen;

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::watch;
use tracing::{info, warn};

use crate::{
    admin::AdminState,
    attribution::{AttributionSettings, Attributor},
    config::AgentConfig,
    kernel::{CgroupRoot, Kernel, KernelError, KernelSettings},
    metrics::Metrics,
    policy::{LoadError, Policy},
    proxy::{live::LiveConnections, relay::Relay},
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
    #[error("kernel programs")]
    Kernel(#[from] KernelError),
    #[error("starting {what}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the control thread failed")]
    Control(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Runs the agent until SIGTERM or SIGINT.
pub fn run(config: &AgentConfig) -> Result<(), AppError> {
    let policy = Policy::load(&config.policies).map_err(|source| AppError::Policy {
        dir: config.policies.clone(),
        source,
    })?;
    info!(
        upstreams = policy.upstreams.len(),
        integrations = policy.integrations.len(),
        "policy loaded"
    );
    let data_rt = runtime(config.sidecar.worker_threads, "fhirwall-data")?;
    let control_rt = runtime(1, "fhirwall-control")?;
    let listeners = {
        // Registered with the data-plane runtime's reactor, where they are served.
        let _entered = data_rt.enter();
        listen::bind(&config.sidecar)?
    };
    let cgroups = CgroupRoot::discover()?;
    let agent_cgroup = listen::own_cgroup_id(&cgroups)?;
    let kernel = Kernel::load(kernel_settings(config, &cgroups, agent_cgroup))?;
    let metrics = Arc::new(Metrics::new());
    let attributor = Attributor::new(
        kernel.conns(),
        AttributionSettings {
            cgroup_mount: cgroups.mount.clone(),
            ..AttributionSettings::default()
        },
    );
    let (policy_tx, policy_rx) = watch::channel(Arc::new(policy));
    let live = Arc::new(LiveConnections::default());
    let admin = Arc::new(AdminState {
        node: config.node_name.clone(),
        metrics: Arc::clone(&metrics),
        live: Arc::clone(&live),
        kernel_stats: kernel.stats_reader().ok(),
    });
    let mut control = control::Control::new(
        config.clone(),
        kernel,
        attributor.clone(),
        policy_tx,
        Arc::clone(&metrics),
        cgroups,
    );
    control_rt.block_on(control.start())?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let relay = Arc::new(Relay {
        attributor,
        policy: policy_rx,
        live: Arc::clone(&live),
        metrics,
        agent_mark: config.sidecar.agent_mark,
        connect_timeout: Duration::from_millis(config.sidecar.connect_timeout_ms),
    });
    let data_plane = std::thread::Builder::new()
        .name("fhirwall-data".into())
        .spawn(move || data_rt.block_on(serve_data_plane(relay, listeners, shutdown_rx, live)))
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
    outcome
}

/// The data plane: accept loops, then after shutdown a bounded drain of open connections.
async fn serve_data_plane(
    relay: Arc<Relay>,
    listeners: Vec<tokio::net::TcpListener>,
    mut shutdown: watch::Receiver<bool>,
    live: Arc<LiveConnections>,
) {
    for listener in listeners {
        tokio::spawn(Arc::clone(&relay).serve(listener, shutdown.clone()));
    }
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

fn runtime(threads: usize, name: &str) -> Result<tokio::runtime::Runtime, AppError> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
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
        kernel_enforcement: config.enforcement == crate::policy::Enforcement::Kernel,
        heartbeat_timeout: Duration::from_millis(config.kernel.heartbeat_timeout_ms),
        conns_capacity: config.kernel.conns_capacity,
    }
}
