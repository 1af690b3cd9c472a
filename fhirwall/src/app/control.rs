//! The control loop: owns the kernel programs and keeps them in step with policy, DNS and the
//! processes on the host; serves the admin API. Runs on the control runtime, never on the data
//! plane.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use fhirwall_policy::{HostPort, Policy, Workload};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
};
use tracing::{error, info, warn};

use super::AppError;
use crate::{
    admin::{self, AdminState},
    attribution::{Attributor, Hashing},
    audit::AuditSink,
    config::{AdminConfig, AgentConfig},
    enforce,
    kernel::{
        Caller, EventReader, Kernel, KernelEvent, LayerState, Layers, Refusal,
        destroy_connections_to,
    },
    metrics::{Metrics, NO_INTEGRATION},
    proxy::{
        listener::{Listener, Routes},
        sidecar::PolicyState,
        tls::{LeafName, LocalCa, rotation},
    },
};

mod commands;
mod overrides;
mod routes;

pub use overrides::{OverrideError, Overrides};
pub use routes::served_names;

/// How often policy files are checked for changes (SIGHUP reloads at once).
const POLICY_POLL: Duration = Duration::from_secs(2);

pub struct Control {
    pub config: AgentConfig,
    pub kernel: Kernel,
    pub attributor: Attributor,
    pub policy: watch::Sender<Arc<PolicyState>>,
    pub routes: watch::Sender<Arc<Routes>>,
    pub sidecar: Arc<Listener>,
    pub metrics: Arc<Metrics>,
    pub audit: AuditSink,
    pub resolved: BTreeMap<HostPort, BTreeSet<SocketAddr>>,
    /// Upstream names the node CA's constraints do not cover, as last told.
    pub ca_uncovered: BTreeSet<LeafName>,
    pub processes: BTreeMap<u32, Arc<Workload>>,
    pub policy_stamp: Vec<(std::path::PathBuf, SystemTime)>,
    pub events: Option<EventReader>,
    pub overrides: Overrides,
    pub commands: tokio::sync::mpsc::Receiver<crate::admin::Envelope>,
    /// Audit commits of kernel refusals in flight; awaited before the agent exits.
    pub refusals: tokio::task::JoinSet<()>,
    /// The enforcement layers as last verified, for `/v1/health`.
    pub layers: watch::Sender<Option<Layers>>,
}

impl Control {
    /// Fills the kernel maps, attaches the programs and resets connections that predate us.
    pub async fn start(&mut self) -> Result<(), AppError> {
        self.events = self.kernel.take_events().transpose()?;
        let explicit = self.config.sidecar.explicit.as_ref().map(|e| e.listen);
        self.kernel.set_explicit_listener(explicit)?;
        self.refresh_destinations().await?;
        self.rescan().await?;
        self.kernel.activate()?;
        self.publish_layers();
        if let LayerState::Missing { reason } = &self.kernel.layers().lsm {
            info!(%reason, "the LSM layer is not in place; the redirect alone enforces");
        }
        if self.config.kernel.teardown_existing {
            self.reset_bypassing_connections("before it started");
        }
        self.metrics.policy_reloads.with_label_values(&["ok"]).inc();
        // The brokered integrations' first tokens are fetched from now on.
        self.sidecar
            .exchange
            .broker
            .reconfigure(&self.current_policy());
        Ok(())
    }

    /// Runs until SIGTERM or SIGINT.
    pub async fn run(
        &mut self,
        admin: Arc<AdminState>,
        admin_config: &AdminConfig,
    ) -> Result<(), AppError> {
        spawn_admin(admin, admin_config).await?;
        let io = |what| move |source| AppError::Io { what, source };
        let mut term = signal(SignalKind::terminate()).map_err(io("signal handlers"))?;
        let mut int = signal(SignalKind::interrupt()).map_err(io("signal handlers"))?;
        let mut hup = signal(SignalKind::hangup()).map_err(io("signal handlers"))?;
        let mut heartbeat = tokio::time::interval(self.config.heartbeat_interval());
        let mut resolve = tokio::time::interval(Duration::from_secs(
            self.config.kernel.resolve_interval_s.max(1),
        ));
        let mut poll = tokio::time::interval(POLICY_POLL);
        let mut events = Vec::new();
        let mut reader = self.events.take();
        loop {
            tokio::select! {
                _ = heartbeat.tick() => self.beat(),
                _ = resolve.tick() => self.periodic().await,
                _ = poll.tick() => {
                    self.rotate_ca();
                    if stamp(&self.config.policies) != self.policy_stamp { self.reload().await }
                },
                _ = hup.recv() => self.reload().await,
                Some(envelope) = self.commands.recv() => {
                    let answer = self.command(envelope.command).await;
                    let _ = envelope.reply.send(answer);
                }
                result = next_events(reader.as_mut(), &mut events) => {
                    if let Err(e) = result {
                        error!(error = %e, "kernel event stream failed; exec events are no longer seen");
                        reader = None;
                    }
                    self.on_events(&mut events).await;
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        info!("stopping: no new connections; draining open ones");
        Ok(())
    }

    /// Waits (bounded) for the kernel refusals still being recorded.
    pub async fn finish_audit(&mut self) {
        let all = async { while self.refusals.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .is_err()
        {
            warn!("some kernel refusals were not recorded before exit");
        }
    }

    /// Clean exit: the kernel refuses protected connects until an agent runs again.
    pub fn stop(&mut self) {
        if let Err(e) = self.kernel.mark_down() {
            error!(error = %e, "could not mark the agent down; connects are refused after the heartbeat timeout");
        }
        // Its refreshers stop and it lets go of the audit writer, which then can finish.
        self.sidecar.exchange.broker.stop();
    }

    fn beat(&mut self) {
        if let Err(e) = self.kernel.heartbeat() {
            self.metrics.heartbeat_failures.inc();
            error!(error = %e, "heartbeat failed");
        }
        self.check_redirect();
    }

    /// The redirect's programs must stay attached: when one is found detached, the kernel
    /// (LSM layer, where active) refuses protected connects until it is attached again here,
    /// and connections that reached a protected destination meanwhile are reset.
    fn check_redirect(&mut self) {
        let missing = match self.kernel.verify_layers() {
            Ok(layers) => match &layers.redirect {
                LayerState::Active => None,
                LayerState::Missing { reason } => Some(reason.clone()),
            },
            Err(e) => Some(e.to_string()),
        };
        if let Some(reason) = missing {
            error!(%reason, "the redirect into the sidecar is not in place; attaching it again");
            match self.kernel.repair_redirect() {
                Ok(programs) => {
                    self.metrics.kernel_redirect_repairs.inc();
                    warn!(?programs, "attached the redirect programs again");
                    self.reset_bypassing_connections("while the redirect was detached");
                }
                Err(e) => error!(error = %e, "attaching the redirect again failed"),
            }
        }
        self.publish_layers();
    }

    fn publish_layers(&self) {
        let layers = self.kernel.layers().clone();
        self.metrics.set_layers(&layers.named());
        self.layers.send_if_modified(|old| {
            let changed = old.as_ref() != Some(&layers);
            *old = Some(layers);
            changed
        });
    }

    /// Resets the connections to protected destinations that did not come through the sidecar.
    fn reset_bypassing_connections(&self, when: &str) {
        let policy = Arc::clone(&self.policy.borrow().policy);
        let destinations =
            enforce::destinations(&policy, &self.resolved, &enforce::local_addresses());
        let s = self.kernel.settings();
        match destroy_connections_to(&destinations, s.agent_mark, s.agent_cgroup) {
            Ok(0) => {}
            Ok(n) => warn!(
                connections = n,
                "reset connections that bypassed the sidecar {when}"
            ),
            Err(e) => warn!(error = %e, "could not reset connections that bypassed the sidecar"),
        }
    }

    async fn periodic(&mut self) {
        if let Err(e) = self.refresh_destinations().await {
            error!(error = %e, "updating protected destinations failed");
        }
        let _ = self.attributor.sweep().await;
        self.processes.retain(|tgid, _| {
            std::path::Path::new("/proc")
                .join(tgid.to_string())
                .exists()
        });
        if let Err(e) = self.apply_verdicts() {
            error!(error = %e, "updating workload verdicts failed");
        }
    }

    async fn reload(&mut self) {
        self.policy_stamp = stamp(&self.config.policies);
        match Policy::load(&self.config.policies) {
            Ok(policy) => {
                info!(integrations = policy.integrations.len(), "policy reloaded");
                warn_unverifiable_exes(&policy);
                // Operator revocations stay in force over whatever the files say.
                self.publish(policy);
                self.metrics.policy_reloads.with_label_values(&["ok"]).inc();
                self.metrics.policy_stale.set(0);
                let refreshed = match self.refresh_destinations().await {
                    Ok(()) => self.rescan().await,
                    Err(e) => Err(e),
                };
                if let Err(e) = refreshed {
                    error!(error = %e, "applying the reloaded policy to the kernel failed");
                }
            }
            Err(e) => {
                self.metrics
                    .policy_reloads
                    .with_label_values(&["error"])
                    .inc();
                self.metrics.policy_stale.set(1);
                error!("policy reload failed, the last good policy stays in force:\n{e}");
            }
        }
    }

    /// Switches the sidecar to the rotated node CA once its time has come (`fhirwall ca
    /// rotate`). On failure the current CA keeps signing and the next look tries again.
    fn rotate_ca(&mut self) {
        let dir = crate::app::ca_dir(&self.config);
        let switched = rotation::switch_if_due(&dir, jiff::Timestamp::now())
            .and_then(|switched| switched.then(|| LocalCa::load(&dir)).transpose());
        match switched {
            Ok(None) => {}
            Ok(Some(ca)) => {
                let uncovered = self.sidecar.terminator.leaves().replace_ca(ca);
                info!("switched to the rotated node CA; the previous one is kept beside it");
                self.uncovered(uncovered);
            }
            Err(e) => error!(error = %e, "rotating the node CA failed; the current one stays"),
        }
    }

    async fn refresh_destinations(&mut self) -> Result<(), AppError> {
        let policy = Arc::clone(&self.policy.borrow().policy);
        let proxies = &self.config.sidecar.egress_proxies;
        let (resolved, failures) = enforce::resolve(&policy, proxies, &self.resolved).await;
        for (host, e) in failures {
            warn!(%host, error = %e, "upstream name did not resolve; keeping its last addresses");
        }
        self.resolved = resolved;
        let local = enforce::local_addresses();
        let destinations = enforce::destinations(&policy, &self.resolved, &local);
        // Routes and upstream configs first: a connection the kernel redirects must find them.
        let explicit = self
            .config
            .sidecar
            .explicit
            .as_ref()
            .map(|e| (e.listen, e.upstream.as_str()));
        self.routes.send_replace(Arc::new(routes::routes(
            &policy,
            &self.resolved,
            explicit,
            &self.config.sidecar.egress_proxies,
            &destinations,
        )));
        self.sidecar
            .pool
            .connector()
            .replace_table(routes::upstream_table(&policy, &self.resolved));
        self.kernel.set_protected(&destinations)?;
        self.metrics
            .protected_destinations
            .set(i64::try_from(destinations.len()).unwrap_or(i64::MAX));
        let uncovered = self
            .sidecar
            .terminator
            .leaves()
            .serve(routes::served_names(&policy, &self.resolved));
        self.uncovered(uncovered);
        Ok(())
    }

    /// Says which upstream names the node CA does not cover, once per change (this runs at
    /// every re-resolution).
    fn uncovered(&mut self, names: Vec<LeafName>) {
        let names: BTreeSet<LeafName> = names.into_iter().collect();
        for name in names.difference(&self.ca_uncovered) {
            warn!(
                %name,
                "the node CA's name constraints do not cover this upstream name: clients get no \
                 certificate for it until `fhirwall ca rotate`"
            );
        }
        self.metrics
            .tls_ca_uncovered_names
            .set(i64::try_from(names.len()).unwrap_or(i64::MAX));
        self.ca_uncovered = names;
    }

    /// Classifies every running process and rewrites the verdict map.
    async fn rescan(&mut self) -> Result<(), AppError> {
        let hashing = self.hashing();
        match self.attributor.scan_processes(hashing).await {
            Ok(found) => self.processes = found.into_iter().map(|w| (w.tgid, w)).collect(),
            Err(e) => warn!(error = %e, "process scan failed; verdicts use what is known"),
        }
        self.apply_verdicts()
    }

    fn apply_verdicts(&mut self) -> Result<(), AppError> {
        let policy = Arc::clone(&self.policy.borrow().policy);
        let processes: Vec<Workload> = self.processes.values().map(|w| (**w).clone()).collect();
        let verdicts = enforce::verdicts(
            &policy,
            &processes,
            self.config.enforcement,
            jiff::Timestamp::now(),
        );
        self.kernel.set_workloads(&verdicts)?;
        self.record_counts();
        Ok(())
    }

    async fn on_events(&mut self, events: &mut Vec<KernelEvent>) {
        for event in events.drain(..) {
            match &event {
                KernelEvent::Exec { caller } => {
                    self.metrics
                        .kernel_events
                        .with_label_values(&["exec"])
                        .inc();
                    let workload = self
                        .attributor
                        .on_exec(caller, self.hashing())
                        .await
                        .ok()
                        .flatten();
                    self.set_process(caller.tgid, caller.exec_token, workload);
                }
                KernelEvent::Refused {
                    caller,
                    destination,
                    refusal,
                } => {
                    self.metrics
                        .kernel_events
                        .with_label_values(&["refused"])
                        .inc();
                    warn!(tgid = caller.tgid, comm = %caller.comm, %destination, ?refusal, "kernel refused a connect");
                    self.audit_refusal(caller, *destination, *refusal);
                }
                KernelEvent::ConnsFull { destination, .. } => {
                    self.metrics
                        .kernel_events
                        .with_label_values(&["conns_full"])
                        .inc();
                    error!(%destination, "kernel connection table full: connections are refused, raise kernel.conns_capacity");
                }
                KernelEvent::Unknown { kind } => warn!(kind, "unknown kernel event"),
            }
        }
    }

    /// Every kernel refusal is an audit record too: who was stopped, where they were going, why.
    /// Committed in the background: nothing waits on it.
    fn audit_refusal(&mut self, caller: &Caller, destination: SocketAddr, refusal: Refusal) {
        let mut record = routes::kernel_refusal(
            &self.config.node_name,
            caller,
            destination,
            refusal,
            &self.routes.borrow(),
        );
        let policy = Arc::clone(&self.policy.borrow().policy);
        let process = self.processes.get(&caller.tgid).map(AsRef::as_ref);
        let now = jiff::Timestamp::now();
        if let Some((integration, reason)) = routes::charged_to(&policy, process, refusal, now) {
            self.metrics
                .policy_denials
                .with_label_values(&[
                    integration.as_deref().unwrap_or(NO_INTEGRATION),
                    reason,
                    record.decision.as_str(),
                ])
                .inc();
            record.integration = integration;
        }
        let audit = self.audit.clone();
        let metrics = Arc::clone(&self.metrics);
        while self.refusals.try_join_next().is_some() {}
        self.refusals.spawn(async move {
            if let Err(e) = audit.commit(record).await {
                metrics.audit_failures.inc();
                warn!(error = %e, "kernel refusal not recorded");
            }
        });
    }

    /// Updates one process's verdict after an exec.
    fn set_process(&mut self, tgid: u32, exec_token: u32, workload: Option<Arc<Workload>>) {
        let policy = Arc::clone(&self.policy.borrow().policy);
        let now = jiff::Timestamp::now();
        let verdict = workload
            .as_ref()
            .and_then(|w| enforce::process_verdict(&policy, w, self.config.enforcement, now));
        match workload {
            Some(w) => self.processes.insert(tgid, w),
            None => self.processes.remove(&tgid),
        };
        if let Err(e) = self
            .kernel
            .set_process_after_exec(tgid, exec_token, verdict)
        {
            error!(tgid, error = %e, "updating a process verdict failed");
        }
        self.record_counts();
    }

    fn record_counts(&self) {
        let (allow, deny) = self.kernel.workload_counts();
        let set = |label: &str, n: usize| {
            self.metrics
                .kernel_workloads
                .with_label_values(&[label])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        };
        set("allow", allow);
        set("deny", deny);
    }

    /// Executables are hashed only when a selector needs their digest.
    fn hashing(&self) -> Hashing {
        let needed = self
            .policy
            .borrow()
            .policy
            .integrations
            .iter()
            .any(|i| i.workload.sha256.is_some());
        if needed {
            Hashing::Compute
        } else {
            Hashing::Skip
        }
    }
}

async fn next_events(
    reader: Option<&mut EventReader>,
    out: &mut Vec<KernelEvent>,
) -> std::io::Result<()> {
    match reader {
        Some(reader) => reader.next_batch(out).await,
        None => std::future::pending().await,
    }
}

async fn spawn_admin(admin: Arc<AdminState>, config: &AdminConfig) -> Result<(), AppError> {
    let socket = config.socket.clone();
    let state = Arc::clone(&admin);
    tokio::spawn(async move {
        if let Err(e) = admin::serve_unix(&socket, state).await {
            error!(socket = %socket.display(), error = %e, "admin socket failed");
        }
    });
    if let Some(addr) = config.metrics {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| AppError::Io {
                what: "the metrics listener",
                source,
            })?;
        tokio::spawn(async move {
            if let Err(e) = admin::serve_metrics(listener, admin).await {
                error!(error = %e, "metrics listener failed");
            }
        });
    }
    Ok(())
}

/// Modification times of the policy files, to notice edits without inotify.
pub fn stamp(dir: &std::path::Path) -> Vec<(std::path::PathBuf, SystemTime)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| Some((e.path(), e.metadata().ok()?.modified().ok()?)))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Warns about integrations whose `exe` no process on this host can match today.
pub fn warn_unverifiable_exes(policy: &Policy) {
    for (integration, exe) in crate::attribution::unverifiable_exes(policy) {
        warn!(
            %integration,
            %exe,
            "no process on this host can match this executable: the path is missing, goes through \
             a symlink, or is not installed by root alone; the integration's processes will be \
             unregistered"
        );
    }
}
