//! Loading, attaching, pinning and handing over the kernel programs.

use std::{
    fs::{self, File},
    io,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{
        CgroupAttachMode, CgroupSockAddr, Lsm, RawTracePoint, SockOps,
        links::{FdLink, PinnedLink},
    },
};
use fhirwall_common::{
    CONFIG_F_ANY_PORT, CONFIG_F_HAS_CGROUP, CONFIG_F_HAS_TGID, CONFIG_F_HAS_UID,
    CONFIG_F_KERNEL_ENFORCEMENT, CONFIG_F_READY, CONFIG_F_REDIRECT_VERIFIED, Config,
    LAYOUT_VERSION, LsmConfig, PINNED_MAPS, PROG_CONNECT4, PROG_CONNECT6, PROG_EXEC, PROG_EXIT,
    PROG_GETPEERNAME4, PROG_GETPEERNAME6, PROG_LSM_CONNECT, PROG_LSM_RECVMSG, PROG_LSM_SENDMSG,
    PROG_SENDMSG4, PROG_SENDMSG6, PROG_SOCK_OPS,
};

use super::{
    KernelError, addr,
    events::EventReader,
    layers::{self, LayerState, Layers},
    maps::{ConnTable, ControlMaps},
    query,
};

/// The kernel programs, built by agent/build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fhirwall"));

const LINK_MODE: CgroupAttachMode = CgroupAttachMode::Single;

const SOCK_ADDR_PROGRAMS: [&str; 6] = [
    PROG_CONNECT4,
    PROG_CONNECT6,
    PROG_SENDMSG4,
    PROG_SENDMSG6,
    PROG_GETPEERNAME4,
    PROG_GETPEERNAME6,
];

/// The programs whose attachment the redirect layer depends on, with their attach types
/// (the peer-name restore is cosmetic and not checked).
const REDIRECT_PROGRAMS: [(&str, u32); 5] = [
    (PROG_CONNECT4, query::ATTACH_INET4_CONNECT),
    (PROG_CONNECT6, query::ATTACH_INET6_CONNECT),
    (PROG_SENDMSG4, query::ATTACH_UDP4_SENDMSG),
    (PROG_SENDMSG6, query::ATTACH_UDP6_SENDMSG),
    (PROG_SOCK_OPS, query::ATTACH_SOCK_OPS),
];

/// The LSM programs and their hooks.
const LSM_PROGRAMS: [(&str, &str); 3] = [
    (PROG_LSM_CONNECT, "socket_connect"),
    (PROG_LSM_SENDMSG, "socket_sendmsg"),
    (PROG_LSM_RECVMSG, "socket_recvmsg"),
];

/// What the kernel programs need to know, from the agent configuration.
#[derive(Clone, Debug)]
pub struct KernelSettings {
    /// bpffs directory for pins, e.g. `/sys/fs/bpf/fhirwall`.
    pub pin_dir: PathBuf,
    /// cgroup v2 directory the programs attach to: the hierarchy root in production, a dedicated
    /// child cgroup in tests.
    pub attach_cgroup: PathBuf,
    /// cgroup id and `SO_MARK` that together identify the agent's own upstream sockets.
    pub agent_cgroup: u64,
    pub agent_mark: u32,
    /// The sidecar's transparent listener.
    pub sidecar_v4: Ipv4Addr,
    pub sidecar_v6: Ipv6Addr,
    pub sidecar_port: u16,
    /// `enforcement: kernel`: refuse workloads no integration registers, in the kernel.
    pub kernel_enforcement: bool,
    pub heartbeat_timeout: Duration,
    /// Size of the established-connection table (`FW_CONNS`); `None` keeps the built-in size.
    /// Takes effect when the map is created, not when a pinned one is reused.
    pub conns_capacity: Option<u32>,
    /// Load and attach the LSM programs (`kernel.lsm_layer`).
    pub lsm_layer: bool,
}

/// Kernel accounting of one program (`bpf_prog_info.run_cnt`, `run_time_ns`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramStats {
    pub name: String,
    pub run_count: u64,
    pub run_time: Duration,
}

/// The loaded kernel programs and their maps. Dropping it leaves the pinned links and maps in
/// place (enforcement continues, refusing while no heartbeat comes); [`uninstall`] removes them.
pub struct Kernel {
    ebpf: Ebpf,
    settings: KernelSettings,
    dir: PathBuf,
    generation: String,
    maps: ControlMaps,
    conns: ConnTable,
    events: Option<aya::maps::RingBuf<aya::maps::MapData>>,
    /// This agent's pinned links, with their pin paths.
    links: Vec<(PathBuf, PinnedLink)>,
    /// `CONFIG_F_READY` once activated.
    ready: bool,
    /// `CONFIG_F_HAS_*` for the kinds of workload entries the kernel map may hold.
    kinds: u32,
    protected: std::collections::BTreeSet<std::net::SocketAddr>,
    explicit: Option<std::net::SocketAddr>,
    /// (attach type, program id) of the redirect programs once attached.
    redirect_ids: Vec<(u32, u32)>,
    /// Whether the redirect is verified attached (`CONFIG_F_REDIRECT_VERIFIED`), and the LSM
    /// programs run.
    layers: Layers,
    /// The LSM programs loaded and configured, ready to attach.
    lsm_loaded: bool,
}

impl Kernel {
    /// Loads the programs (verifier included) and opens the maps, reusing pinned maps left by a
    /// previous agent so live connections keep their records. Nothing is attached yet.
    pub fn load(settings: KernelSettings) -> Result<Self, KernelError> {
        if OBJECT.is_empty() {
            return Err(KernelError::NoKernelObject);
        }
        super::bpffs::ensure_mounted(&settings.pin_dir)?;
        let dir = settings.pin_dir.join(format!("v{LAYOUT_VERSION}"));
        for sub in ["maps", "links"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(|source| KernelError::Pin { path, source })?;
        }
        let map_pins: Vec<(&str, PathBuf)> = PINNED_MAPS
            .iter()
            .map(|name| (*name, dir.join("maps").join(name)))
            .collect();
        let mut loader = EbpfLoader::new();
        for (name, path) in &map_pins {
            loader.map_pin_path(name, path.as_path());
        }
        if let Some(capacity) = settings.conns_capacity {
            loader.map_max_entries(fhirwall_common::MAP_CONNS, capacity);
        }
        let mut ebpf = loader.load(OBJECT).map_err(|e| KernelError::Load {
            source: Box::new(e),
        })?;
        load_programs(&mut ebpf)?;
        let lsm = if settings.lsm_layer {
            prepare_lsm(&mut ebpf, &settings.attach_cgroup)
        } else {
            Err("off (kernel.lsm_layer: false)".to_owned())
        };
        let (maps, conns, events) = ControlMaps::take(&mut ebpf)?;
        let generation = generation();
        let mut kernel = Self {
            ebpf,
            settings,
            dir,
            generation,
            maps,
            conns,
            events: Some(events),
            links: Vec::new(),
            ready: false,
            // Until the first sync says otherwise, whatever a previous agent left may be there.
            kinds: CONFIG_F_HAS_TGID | CONFIG_F_HAS_CGROUP | CONFIG_F_HAS_UID,
            protected: std::collections::BTreeSet::new(),
            explicit: None,
            redirect_ids: Vec::new(),
            layers: Layers {
                redirect: LayerState::missing("not attached yet"),
                lsm: LayerState::missing("not attached yet"),
            },
            lsm_loaded: lsm.is_ok(),
        };
        match lsm {
            Ok(config) => kernel.maps.set_lsm(&config)?,
            Err(reason) => kernel.layers.lsm = LayerState::missing(reason),
        }
        kernel.write_config()?;
        Ok(kernel)
    }

    /// Marks the configuration complete, starts the heartbeat and attaches the programs; then
    /// removes the links of any previous agent. Call after the protected set and workload map
    /// are filled and the sidecar listener is bound.
    pub fn activate(&mut self) -> Result<(), KernelError> {
        self.ready = true;
        self.write_config()?;
        self.heartbeat()?;
        self.attach()?;
        self.verify_layers()?;
        self.remove_foreign_links()
    }

    /// Checks that the redirect programs are still attached and tells the LSM layer: while
    /// they are not, it refuses every protected connect itself. Call at every heartbeat.
    pub fn verify_layers(&mut self) -> Result<&Layers, KernelError> {
        let redirect = layers::redirect_state(&self.settings.attach_cgroup, &self.redirect_ids);
        if redirect != self.layers.redirect {
            self.layers.redirect = redirect;
            self.write_config()?;
        }
        Ok(&self.layers)
    }

    /// The layers as last verified.
    #[must_use]
    pub fn layers(&self) -> &Layers {
        &self.layers
    }

    /// Tells the kernel programs the agent is alive; call every heartbeat interval.
    pub fn heartbeat(&mut self) -> Result<(), KernelError> {
        self.maps.set_heartbeat(monotonic_ns())
    }

    /// Makes the kernel refuse protected connects at once (clean shutdown): the agent is going.
    pub fn mark_down(&mut self) -> Result<(), KernelError> {
        self.maps.set_heartbeat(0)
    }

    /// Replaces the set of protected destinations (their connects are redirected to the sidecar).
    pub fn set_protected(
        &mut self,
        destinations: &std::collections::BTreeSet<std::net::SocketAddr>,
    ) -> Result<(), KernelError> {
        // Port-0 entries (every port of an address) are looked up only under CONFIG_F_ANY_PORT:
        // on before such entries arrive, off after they left.
        let was_any_port = self.any_port();
        self.protected.clone_from(destinations);
        if self.any_port() && !was_any_port {
            self.write_config()?;
        }
        self.sync_protected()?;
        if was_any_port && !self.any_port() {
            self.write_config()?;
        }
        Ok(())
    }

    fn any_port(&self) -> bool {
        self.protected.iter().any(|d| d.port() == 0)
    }

    /// The sidecar's explicit listener, whose connects are recorded for attribution but not
    /// redirected; `None` when there is none.
    pub fn set_explicit_listener(
        &mut self,
        listener: Option<std::net::SocketAddr>,
    ) -> Result<(), KernelError> {
        self.explicit = listener;
        // The programs need its port too (sock_ops re-keys only connections to the sidecar).
        self.write_config()?;
        self.sync_protected()
    }

    fn sync_protected(&mut self) -> Result<(), KernelError> {
        let mut all: std::collections::BTreeMap<_, _> = self
            .protected
            .iter()
            .map(|d| {
                let value = if d.port() == 0 {
                    fhirwall_common::PROTECTED_REFUSE
                } else {
                    fhirwall_common::PROTECTED_REDIRECT
                };
                (*d, value)
            })
            .collect();
        if let Some(listener) = self.explicit {
            all.insert(listener, fhirwall_common::PROTECTED_RECORD_ONLY);
        }
        self.maps.sync_protected(&all)
    }

    /// Replaces the kernel's per-workload verdicts.
    pub fn set_workloads(
        &mut self,
        verdicts: &std::collections::BTreeMap<super::maps::WorkloadEntry, super::maps::Verdict>,
    ) -> Result<(), KernelError> {
        let wanted = verdicts
            .keys()
            .fold(0, |kinds, entry| kinds | entry.config_flag());
        // A kind's lookups are switched on before its entries arrive and off after they left,
        // so no entry is ever in the map while the hook skips its kind.
        self.set_kinds(self.kinds | wanted)?;
        self.maps.sync_workloads(verdicts)?;
        self.set_kinds(wanted)
    }

    fn set_kinds(&mut self, kinds: u32) -> Result<(), KernelError> {
        if kinds == self.kinds {
            return Ok(());
        }
        self.kinds = kinds;
        self.write_config()
    }

    /// Sets or clears one workload's verdict.
    pub fn set_workload(
        &mut self,
        entry: super::maps::WorkloadEntry,
        verdict: Option<super::maps::Verdict>,
    ) -> Result<(), KernelError> {
        self.look_up_kind_of(entry, verdict)?;
        self.maps.set_workload(entry, verdict)
    }

    /// Switches on the lookups of `entry`'s kind before an entry of it arrives.
    fn look_up_kind_of(
        &mut self,
        entry: super::maps::WorkloadEntry,
        verdict: Option<super::maps::Verdict>,
    ) -> Result<(), KernelError> {
        if verdict.is_some() {
            self.set_kinds(self.kinds | entry.config_flag())?;
        }
        Ok(())
    }

    /// Sets or clears a process's verdict as classified after the exec with `token`; see
    /// `KernelMaps::set_process_after_exec`. Returns whether it was applied.
    pub fn set_process_after_exec(
        &mut self,
        tgid: u32,
        token: u32,
        verdict: Option<super::maps::Verdict>,
    ) -> Result<bool, KernelError> {
        self.look_up_kind_of(super::maps::WorkloadEntry::Process(tgid), verdict)?;
        self.maps.set_process_after_exec(tgid, token, verdict)
    }

    /// The `VERDICT_*` the kernel holds for `entry` now, if any (reads the map: tests and
    /// diagnostics).
    #[must_use]
    pub fn workload_in_kernel(&self, entry: super::maps::WorkloadEntry) -> Option<u32> {
        self.maps.workload_in_kernel(entry)
    }

    /// Socket records in the kernel map (walks it: tests and metrics only).
    #[must_use]
    pub fn sockets_len(&self) -> usize {
        self.maps.sockets_len()
    }

    /// Workload entries in the kernel map: (allow, deny).
    #[must_use]
    pub fn workload_counts(&self) -> (usize, usize) {
        self.maps.workload_counts()
    }

    /// Switches `enforcement: kernel` on or off (policy reload).
    pub fn set_kernel_enforcement(&mut self, on: bool) -> Result<(), KernelError> {
        self.settings.kernel_enforcement = on;
        self.write_config()
    }

    /// The connection table the sidecar consults at `accept()`; cheap to clone.
    #[must_use]
    pub fn conns(&self) -> ConnTable {
        self.conns.clone()
    }

    /// The ring-buffer reader, registered with the current tokio runtime; `None` once taken.
    pub fn take_events(&mut self) -> Option<Result<EventReader, KernelError>> {
        let ring = self.events.take()?;
        Some(EventReader::new(ring).map_err(|source| KernelError::Io {
            path: "ring buffer".into(),
            source,
        }))
    }

    /// Kernel-side counters, summed over CPUs.
    pub fn stats(&self) -> Result<super::KernelStats, KernelError> {
        self.maps.stats()
    }

    /// Per-program run counts and total run time, as the kernel accounts them while
    /// `kernel.bpf_stats_enabled` (or a `BPF_ENABLE_STATS` fd) is on; zero otherwise.
    pub fn program_stats(&self) -> Result<Vec<ProgramStats>, KernelError> {
        let mut out = Vec::new();
        for (name, program) in self.ebpf.programs() {
            let info = match program.info() {
                Ok(info) => info,
                // The LSM programs while the layer is off or could not load.
                Err(aya::programs::ProgramError::NotLoaded) => continue,
                Err(e) => {
                    return Err(KernelError::Load {
                        source: Box::new(e.into()),
                    });
                }
            };
            out.push(ProgramStats {
                name: name.to_owned(),
                run_count: info.run_count(),
                run_time: info.run_time(),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// A separate handle on the counters for the admin runtime.
    pub fn stats_reader(&self) -> Result<super::StatsReader, KernelError> {
        super::StatsReader::open(&self.dir.join("maps").join(fhirwall_common::MAP_STATS))
    }

    #[must_use]
    pub fn settings(&self) -> &KernelSettings {
        &self.settings
    }

    fn write_config(&mut self) -> Result<(), KernelError> {
        let s = &self.settings;
        let mut flags = self.kinds;
        if s.kernel_enforcement {
            // The exec hook writes pending process entries in this mode: look them up.
            flags |= CONFIG_F_KERNEL_ENFORCEMENT | CONFIG_F_HAS_TGID;
        }
        if self.ready {
            flags |= CONFIG_F_READY;
        }
        if self.layers.redirect.is_active() {
            flags |= CONFIG_F_REDIRECT_VERIFIED;
        }
        if self.any_port() {
            flags |= CONFIG_F_ANY_PORT;
        }
        let config = Config {
            agent_cgroup: s.agent_cgroup,
            sidecar_v4: addr::ipv4_word(s.sidecar_v4),
            sidecar_v6: addr::to_addr(s.sidecar_v6.into()),
            sidecar_port: s.sidecar_port,
            explicit_port: self.explicit.map_or(0, |l| l.port()),
            agent_mark: s.agent_mark,
            flags,
            heartbeat_timeout_ms: u32::try_from(s.heartbeat_timeout.as_millis())
                .unwrap_or(u32::MAX),
            pad1: 0,
        };
        self.maps.set_config(&config)
    }

    /// Attaches with `bpf_link` (Linux 5.7+). Cgroup links always coexist with other programs
    /// on the same cgroup (multi-attach semantics) and the kernel rejects any flag on
    /// `BPF_LINK_CREATE` for cgroups, hence [`CgroupAttachMode::Single`] (no flags) below.
    fn attach(&mut self) -> Result<(), KernelError> {
        for (name, _) in REDIRECT_PROGRAMS {
            self.attach_to_cgroup(name)?;
        }
        for name in [PROG_GETPEERNAME4, PROG_GETPEERNAME6] {
            self.attach_to_cgroup(name)?;
        }
        self.redirect_ids = self.redirect_program_ids()?;
        if self.lsm_loaded {
            self.attach_lsm()?;
        }
        // Exec and exit hooks only matter to a running agent (while it is down, protected
        // connects are refused anyway, and at start it sweeps the verdicts): these links live
        // and die with it.
        for (name, tracepoint) in [
            (PROG_EXEC, "sched_process_exec"),
            (PROG_EXIT, "sched_process_exit"),
        ] {
            let prog: &mut RawTracePoint = program(&mut self.ebpf, name)?;
            prog.attach(tracepoint).map_err(prog_err(name))?;
        }
        Ok(())
    }

    /// Attaches one cgroup program with a pinned link.
    fn attach_to_cgroup(&mut self, name: &'static str) -> Result<(), KernelError> {
        let cgroup =
            File::open(&self.settings.attach_cgroup).map_err(|source| KernelError::Io {
                path: self.settings.attach_cgroup.clone(),
                source,
            })?;
        let link = if name == PROG_SOCK_OPS {
            let prog: &mut SockOps = program(&mut self.ebpf, name)?;
            let id = prog.attach(&cgroup, LINK_MODE).map_err(prog_err(name))?;
            FdLink::try_from(prog.take_link(id).map_err(prog_err(name))?).map_err(link_err(name))?
        } else {
            let prog: &mut CgroupSockAddr = program(&mut self.ebpf, name)?;
            let id = prog.attach(&cgroup, LINK_MODE).map_err(prog_err(name))?;
            FdLink::try_from(prog.take_link(id).map_err(prog_err(name))?).map_err(link_err(name))?
        };
        self.pin_link(name, link)
    }

    /// Attaches again every redirect program that is no longer attached (someone detached its
    /// link, or removed and recreated the cgroup's attachments), replacing its stale pin.
    /// Returns the programs it attached again.
    pub fn repair_redirect(&mut self) -> Result<Vec<&'static str>, KernelError> {
        let mut repaired = Vec::new();
        for (name, attach_type) in REDIRECT_PROGRAMS {
            let id = self.program_id(name)?;
            let attached =
                query::attached(&self.settings.attach_cgroup, attach_type).map_err(|source| {
                    KernelError::Io {
                        path: self.settings.attach_cgroup.clone(),
                        source,
                    }
                })?;
            if attached.contains(&id) {
                continue;
            }
            let stale = self.link_path(name);
            self.links.retain(|(path, _)| *path != stale);
            if stale.exists() {
                fs::remove_file(&stale).map_err(|source| KernelError::Pin {
                    path: stale.clone(),
                    source,
                })?;
            }
            self.attach_to_cgroup(name)?;
            repaired.push(name);
        }
        self.verify_layers()?;
        Ok(repaired)
    }

    fn redirect_program_ids(&self) -> Result<Vec<(u32, u32)>, KernelError> {
        REDIRECT_PROGRAMS
            .iter()
            .map(|(name, attach_type)| Ok((*attach_type, self.program_id(name)?)))
            .collect()
    }

    fn program_id(&self, name: &'static str) -> Result<u32, KernelError> {
        let prog = self.ebpf.program(name).ok_or(KernelError::Program {
            program: name,
            source: Box::new(aya::programs::ProgramError::UnexpectedProgramType),
        })?;
        Ok(prog.info().map_err(prog_err(name))?.id())
    }

    /// Attaches and pins the LSM programs, then checks that the connect hook fires: a kernel
    /// with BPF LSM compiled in but not active (`lsm=` without `bpf`) accepts the attachment
    /// and never runs it.
    fn attach_lsm(&mut self) -> Result<(), KernelError> {
        for (name, _) in LSM_PROGRAMS {
            let prog: &mut Lsm = program(&mut self.ebpf, name)?;
            let id = prog.attach().map_err(prog_err(name))?;
            let link: FdLink = prog.take_link(id).map_err(prog_err(name))?.into();
            self.pin_link(name, link)?;
        }
        let before = self.maps.stats()?.lsm_calls;
        let touched = layers::touch_connect_hook();
        let after = self.maps.stats()?.lsm_calls;
        self.layers.lsm = match touched {
            Ok(()) if after > before => LayerState::Active,
            Ok(()) => LayerState::missing(
                "the LSM programs are attached but never run: BPF LSM is not active in this \
                 kernel (boot with lsm=...,bpf)",
            ),
            Err(e) => LayerState::missing(format!("the LSM self-check could not connect: {e}")),
        };
        Ok(())
    }

    fn link_path(&self, name: &str) -> PathBuf {
        self.dir
            .join("links")
            .join(format!("{name}-{}", self.generation))
    }

    fn pin_link(&mut self, name: &str, link: FdLink) -> Result<(), KernelError> {
        let path = self.link_path(name);
        let pinned = link.pin(&path).map_err(|e| KernelError::Pin {
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        self.links.push((path, pinned));
        Ok(())
    }

    /// Detaches every pinned link that is not this agent's (a previous agent's, any layout).
    /// (bpffs forbids dots in names, hence the `-` separator.)
    fn remove_foreign_links(&self) -> Result<(), KernelError> {
        let ours = format!("-{}", self.generation);
        for path in pinned_links(&self.settings.pin_dir)? {
            if !path.to_string_lossy().ends_with(&ours) {
                unpin_link(&path)?;
            }
        }
        Ok(())
    }
}

/// Detaches and unpins everything fhirwall left in the kernel under `pin_dir`: after this,
/// connects to formerly protected destinations go straight out again.
pub fn uninstall(pin_dir: &Path) -> Result<usize, KernelError> {
    if !pin_dir.exists() {
        return Ok(0);
    }
    let mut removed = 0;
    for path in pinned_links(pin_dir)? {
        unpin_link(&path)?;
        removed += 1;
    }
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| KernelError::Pin { path, source }
    };
    for version in read_dir(pin_dir)? {
        let maps = version.join("maps");
        for map in read_dir(&maps).unwrap_or_default() {
            fs::remove_file(&map).map_err(io_err(&map))?;
            removed += 1;
        }
        for sub in [maps, version.join("links"), version.clone()] {
            if sub.exists() {
                fs::remove_dir(&sub).map_err(io_err(&sub))?;
            }
        }
    }
    fs::remove_dir(pin_dir).map_err(io_err(pin_dir))?;
    Ok(removed)
}

fn load_programs(ebpf: &mut Ebpf) -> Result<(), KernelError> {
    for name in SOCK_ADDR_PROGRAMS {
        program::<CgroupSockAddr>(ebpf, name)?
            .load()
            .map_err(prog_err(name))?;
    }
    program::<SockOps>(ebpf, PROG_SOCK_OPS)?
        .load()
        .map_err(prog_err(PROG_SOCK_OPS))?;
    for name in [PROG_EXEC, PROG_EXIT] {
        program::<RawTracePoint>(ebpf, name)?
            .load()
            .map_err(prog_err(name))?;
    }
    Ok(())
}

/// Writes nothing yet: loads the LSM programs against the kernel's BTF and computes their
/// configuration. Any failure leaves the LSM layer missing, with the reason, and the agent
/// running on the redirect alone (BPF LSM is optional in the kernel).
fn prepare_lsm(ebpf: &mut Ebpf, attach_cgroup: &Path) -> Result<LsmConfig, String> {
    if layers::bpf_lsm_listed() == Some(false) {
        return Err("BPF LSM is not active in this kernel (boot with lsm=...,bpf)".into());
    }
    let root = super::CgroupRoot::discover().map_err(|e| e.to_string())?;
    let level = layers::level(&root.mount, attach_cgroup).ok_or_else(|| {
        format!(
            "the attach cgroup {} is not under the cgroup2 mount {}",
            attach_cgroup.display(),
            root.mount.display()
        )
    })?;
    let scope = super::cgroup_id(attach_cgroup).map_err(|e| e.to_string())?;
    let config = layers::lsm_config(scope, level)
        .map_err(|e| format!("reading the kernel's structure layout failed: {e}"))?;
    let btf = Btf::from_sys_fs().map_err(|e| format!("the kernel has no BTF: {e}"))?;
    for (name, hook) in LSM_PROGRAMS {
        let prog: &mut Lsm = program(ebpf, name).map_err(|e| e.to_string())?;
        prog.load(hook, &btf)
            .map_err(|e| format!("loading {name} failed: {}", crate::error_chain(&e)))?;
    }
    Ok(config)
}

fn program<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, KernelError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf.program_mut(name).ok_or(KernelError::Program {
        program: name,
        source: Box::new(aya::programs::ProgramError::UnexpectedProgramType),
    })?;
    prog.try_into().map_err(prog_err(name))
}

fn prog_err(program: &'static str) -> impl Fn(aya::programs::ProgramError) -> KernelError {
    move |e| KernelError::Program {
        program,
        source: Box::new(e),
    }
}

fn link_err(program: &'static str) -> impl Fn(aya::programs::links::LinkError) -> KernelError {
    move |e| KernelError::Link {
        program,
        source: Box::new(e),
    }
}

fn pinned_links(pin_dir: &Path) -> Result<Vec<PathBuf>, KernelError> {
    let mut links = Vec::new();
    for version in read_dir(pin_dir)? {
        links.extend(read_dir(&version.join("links")).unwrap_or_default());
    }
    Ok(links)
}

fn unpin_link(path: &Path) -> Result<(), KernelError> {
    let pinned = PinnedLink::from_pin(path).map_err(|e| KernelError::Pin {
        path: path.to_owned(),
        source: io::Error::other(e),
    })?;
    // Unpinning drops the last reference once the returned link goes out of scope: detached.
    drop(pinned.unpin().map_err(|source| KernelError::Pin {
        path: path.to_owned(),
        source,
    })?);
    Ok(())
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, KernelError> {
    let entries = fs::read_dir(dir).map_err(|source| KernelError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    Ok(paths)
}

/// A suffix that tells this agent's links from earlier ones.
fn generation() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos}-{}", std::process::id())
}

/// `CLOCK_MONOTONIC`, the clock of `bpf_ktime_get_ns`.
#[must_use]
pub fn monotonic_ns() -> u64 {
    // CLOCK_MONOTONIC cannot fail on Linux; 0 ("long ago") would only make the kernel refuse.
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |ts| {
        ts.tv_sec().cast_unsigned() * 1_000_000_000 + ts.tv_nsec().cast_unsigned()
    })
}
