//! Typed handles on the kernel maps, and keeping them in step with what policy says.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc};

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, RingBuf},
};
use fhirwall_common::{
    Config, ConnKey, ConnRecord, KEY_CGROUP, KEY_TGID, KEY_UID, LsmConfig, MAP_CONFIG, MAP_CONNS,
    MAP_EVENTS, MAP_HEARTBEAT, MAP_LSM, MAP_PROTECTED, MAP_SOCKETS, MAP_STATS, MAP_WORKLOADS,
    PROTECTED_CAPACITY, ProtectedKey, REASON_DENIED, STAT_AGENT_PASSED, STAT_CONNS_FULL,
    STAT_EVENTS_DROPPED, STAT_LSM_CALLS, STAT_LSM_REFUSED_CONNECT, STAT_LSM_REFUSED_DATA,
    STAT_REDIRECTED, STAT_REFUSED_AGENT_DOWN, STAT_REFUSED_DENIED, STAT_REFUSED_NOT_TCP,
    STAT_REFUSED_OTHER_PORT, STAT_REFUSED_STORE_FULL, STAT_REFUSED_UNREGISTERED, VERDICT_ALLOW,
    VERDICT_DENY, WORKLOADS_CAPACITY, WorkloadKey, WorkloadVerdict,
};
use serde::Serialize;

use super::{KernelError, addr::to_addr};

/// A workload as the kernel can name it at `connect()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum WorkloadEntry {
    /// A process (thread group id). The agent removes it when the process is gone.
    Process(u32),
    /// A cgroup v2 id (systemd unit, container, pod).
    Cgroup(u64),
    /// A user id.
    User(u32),
}

/// What the kernel does with a workload's connects to protected destinations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// Redirect to the sidecar (and, with `enforcement: kernel`, count as registered).
    Allow,
    /// Refuse with `EPERM` in the kernel (revoked or suspended integration).
    Deny,
}

impl WorkloadEntry {
    /// The `CONFIG_F_HAS_*` flag that makes the hook look this kind up.
    #[must_use]
    pub fn config_flag(self) -> u32 {
        match self {
            Self::Process(_) => fhirwall_common::CONFIG_F_HAS_TGID,
            Self::Cgroup(_) => fhirwall_common::CONFIG_F_HAS_CGROUP,
            Self::User(_) => fhirwall_common::CONFIG_F_HAS_UID,
        }
    }

    fn key(self) -> WorkloadKey {
        let (kind, id) = match self {
            Self::Process(tgid) => (KEY_TGID, u64::from(tgid)),
            Self::Cgroup(id) => (KEY_CGROUP, id),
            Self::User(uid) => (KEY_UID, u64::from(uid)),
        };
        WorkloadKey { kind, pad: 0, id }
    }
}

fn verdict_value(verdict: Verdict) -> WorkloadVerdict {
    match verdict {
        Verdict::Allow => WorkloadVerdict {
            verdict: VERDICT_ALLOW,
            reason: 0,
        },
        Verdict::Deny => WorkloadVerdict {
            verdict: VERDICT_DENY,
            reason: REASON_DENIED,
        },
    }
}

/// Counters kept by the kernel programs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct KernelStats {
    pub redirected: u64,
    pub refused_denied: u64,
    pub refused_unregistered: u64,
    pub refused_agent_down: u64,
    pub refused_store_full: u64,
    pub refused_not_tcp: u64,
    pub conns_full: u64,
    pub events_dropped: u64,
    pub agent_passed: u64,
    /// Refused by the LSM layer: connects the redirect was not verified to catch, and sends or
    /// receives on sockets that bypassed it.
    pub lsm_refused_connect: u64,
    pub lsm_refused_data: u64,
    /// Runs of the LSM connect hook (host-wide): shows the hook fires.
    pub lsm_calls: u64,
    pub refused_other_port: u64,
}

impl KernelStats {
    /// Each counter with its name, as metrics and reports show them.
    #[must_use]
    pub fn named(&self) -> [(&'static str, u64); 12] {
        [
            ("redirected", self.redirected),
            ("refused_denied", self.refused_denied),
            ("refused_unregistered", self.refused_unregistered),
            ("refused_agent_down", self.refused_agent_down),
            ("refused_store_full", self.refused_store_full),
            ("refused_not_tcp", self.refused_not_tcp),
            ("conns_full", self.conns_full),
            ("events_dropped", self.events_dropped),
            ("agent_passed", self.agent_passed),
            ("lsm_refused_connect", self.lsm_refused_connect),
            ("lsm_refused_data", self.lsm_refused_data),
            ("refused_other_port", self.refused_other_port),
        ]
    }
}

/// The established redirected connections, keyed as the sidecar sees them.
#[derive(Clone)]
pub struct ConnTable(Arc<HashMap<MapData, ConnKey, ConnRecord>>);

impl ConnTable {
    /// The kernel's record of the connection the sidecar accepted from `client` on `sidecar`.
    pub fn lookup(
        &self,
        client: SocketAddr,
        sidecar: SocketAddr,
    ) -> Result<Option<ConnRecord>, KernelError> {
        let key = ConnKey {
            client: to_addr(client.ip()),
            sidecar: to_addr(sidecar.ip()),
            client_port: client.port(),
            sidecar_port: sidecar.port(),
        };
        match self.0.get(&key, 0) {
            Ok(record) => Ok(Some(record)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(MAP_CONNS)(e)),
        }
    }

    /// Entries in the table (walks the map: for tests and metrics, not the request path).
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.keys().flatten().count()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A read-only handle on the kernel counters, opened from the pin, for the admin runtime.
pub struct StatsReader(PerCpuArray<MapData, u64>);

impl StatsReader {
    pub fn open(pin: &std::path::Path) -> Result<Self, KernelError> {
        let data = MapData::from_pin(pin).map_err(map_err(MAP_STATS))?;
        let map = aya::maps::Map::PerCpuArray(data);
        Ok(Self(
            PerCpuArray::try_from(map).map_err(map_err(MAP_STATS))?,
        ))
    }

    pub fn read(&self) -> Result<KernelStats, KernelError> {
        read_stats(&self.0)
    }
}

/// The maps the agent writes. Protected and workload maps are mirrored in memory after the
/// first sync, so later syncs touch only what changed instead of walking the kernel map.
pub struct ControlMaps {
    config: Array<MapData, Config>,
    lsm: Array<MapData, LsmConfig>,
    heartbeat: Array<MapData, u64>,
    protected: HashMap<MapData, ProtectedKey, u32>,
    workloads: HashMap<MapData, WorkloadKey, WorkloadVerdict>,
    stats: PerCpuArray<MapData, u64>,
    sockets: Array<MapData, ConnRecord>,
    protected_mirror: Option<std::collections::HashMap<ProtectedKey, u32>>,
    workloads_mirror: Option<std::collections::HashMap<WorkloadKey, WorkloadVerdict>>,
}

impl ControlMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<(Self, ConnTable, RingBuf<MapData>), KernelError> {
        let maps = Self {
            config: take(ebpf, MAP_CONFIG)?,
            lsm: take(ebpf, MAP_LSM)?,
            heartbeat: take(ebpf, MAP_HEARTBEAT)?,
            protected: take(ebpf, MAP_PROTECTED)?,
            workloads: take(ebpf, MAP_WORKLOADS)?,
            stats: take(ebpf, MAP_STATS)?,
            sockets: take(ebpf, MAP_SOCKETS)?,
            protected_mirror: None,
            workloads_mirror: None,
        };
        let conns = ConnTable(Arc::new(take(ebpf, MAP_CONNS)?));
        let ring: RingBuf<MapData> = take(ebpf, MAP_EVENTS)?;
        Ok((maps, conns, ring))
    }

    pub fn set_config(&mut self, config: &Config) -> Result<(), KernelError> {
        self.config.set(0, config, 0).map_err(map_err(MAP_CONFIG))
    }

    pub fn set_lsm(&mut self, lsm: &LsmConfig) -> Result<(), KernelError> {
        self.lsm.set(0, lsm, 0).map_err(map_err(MAP_LSM))
    }

    pub fn set_heartbeat(&mut self, ns: u64) -> Result<(), KernelError> {
        self.heartbeat.set(0, ns, 0).map_err(map_err(MAP_HEARTBEAT))
    }

    /// Replaces the protected destinations: each with `PROTECTED_REDIRECT`,
    /// `PROTECTED_RECORD_ONLY`, or (port 0) `PROTECTED_REFUSE`.
    pub fn sync_protected(
        &mut self,
        destinations: &BTreeMap<SocketAddr, u32>,
    ) -> Result<(), KernelError> {
        let wanted: std::collections::HashMap<ProtectedKey, u32> = destinations
            .iter()
            .map(|(d, v)| {
                (
                    ProtectedKey {
                        addr: to_addr(d.ip()),
                        port: d.port(),
                        pad: 0,
                    },
                    *v,
                )
            })
            .collect();
        if wanted.len() > PROTECTED_CAPACITY as usize {
            return Err(KernelError::MapFull {
                map: MAP_PROTECTED,
                capacity: PROTECTED_CAPACITY,
            });
        }
        let present = match self.protected_mirror.take() {
            Some(mirror) => mirror,
            None => self.protected.iter().filter_map(Result::ok).collect(),
        };
        // Insert first, then remove: a destination never drops out during a resync.
        for (key, value) in wanted.iter().filter(|(k, v)| present.get(k) != Some(v)) {
            self.protected
                .insert(key, value, 0)
                .map_err(map_err(MAP_PROTECTED))?;
        }
        for key in present.keys().filter(|k| !wanted.contains_key(k)) {
            remove_if_present(&mut self.protected, key, MAP_PROTECTED)?;
        }
        self.protected_mirror = Some(wanted);
        Ok(())
    }

    pub fn sync_workloads(
        &mut self,
        verdicts: &BTreeMap<WorkloadEntry, Verdict>,
    ) -> Result<(), KernelError> {
        if verdicts.len() > WORKLOADS_CAPACITY as usize {
            return Err(KernelError::MapFull {
                map: MAP_WORKLOADS,
                capacity: WORKLOADS_CAPACITY,
            });
        }
        let wanted: std::collections::HashMap<WorkloadKey, WorkloadVerdict> = verdicts
            .iter()
            .map(|(e, v)| (e.key(), verdict_value(*v)))
            .collect();
        // Read back from the kernel rather than the mirror: the exec hook writes pending entries
        // of its own, and those of processes that have exited must go.
        let present: std::collections::HashMap<WorkloadKey, WorkloadVerdict> =
            self.workloads.iter().filter_map(Result::ok).collect();
        // A pending process entry is left to its exec event: the verdict here was computed from
        // what the agent knew of the process before that exec.
        let pending = |k: &WorkloadKey| present.get(k).is_some_and(|v| is_pending(k, *v));
        for (key, value) in wanted
            .iter()
            .filter(|(k, v)| present.get(k) != Some(v) && !pending(k))
        {
            self.workloads
                .insert(key, value, 0)
                .map_err(map_err(MAP_WORKLOADS))?;
        }
        for (key, value) in present.iter().filter(|(k, _)| !wanted.contains_key(k)) {
            if is_pending_for_a_live_process(key, *value) {
                continue; // its exec event is still on its way: the agent will decide it then
            }
            remove_if_present(&mut self.workloads, key, MAP_WORKLOADS)?;
        }
        self.workloads_mirror = Some(wanted);
        Ok(())
    }

    /// Sets or clears a process's verdict as classified after its exec `token`, unless the
    /// process has exec'd again since: its entry is then pending for the newer exec, whose own
    /// event decides it (a late verdict for the earlier image must not replace it). Returns
    /// whether the verdict was applied. (The kernel may still write a newer pending entry
    /// between this read and the write: a window of two syscalls, against the milliseconds
    /// classifying an exec takes.)
    pub fn set_process_after_exec(
        &mut self,
        tgid: u32,
        token: u32,
        verdict: Option<Verdict>,
    ) -> Result<bool, KernelError> {
        let entry = WorkloadEntry::Process(tgid);
        let newer_exec = match self.workloads.get(&entry.key(), 0) {
            Ok(present) => is_pending(&entry.key(), present) && present.reason != token,
            Err(MapError::KeyNotFound) => false,
            Err(e) => return Err(map_err(MAP_WORKLOADS)(e)),
        };
        if newer_exec {
            return Ok(false);
        }
        self.set_workload(entry, verdict).map(|()| true)
    }

    /// Sets or clears one workload's verdict (an exec or an exit), without a full resync. Process
    /// entries are always written: the exec hook may have put a pending entry there that the
    /// mirror does not know.
    pub fn set_workload(
        &mut self,
        entry: WorkloadEntry,
        verdict: Option<Verdict>,
    ) -> Result<(), KernelError> {
        let key = entry.key();
        let is_process = matches!(entry, WorkloadEntry::Process(_));
        let mirror = self.workloads_mirror.get_or_insert_with(Default::default);
        match verdict.map(verdict_value) {
            Some(value) if !is_process && mirror.get(&key) == Some(&value) => Ok(()),
            Some(value) => {
                if !mirror.contains_key(&key) && mirror.len() >= WORKLOADS_CAPACITY as usize {
                    return Err(KernelError::MapFull {
                        map: MAP_WORKLOADS,
                        capacity: WORKLOADS_CAPACITY,
                    });
                }
                self.workloads
                    .insert(key, value, 0)
                    .map_err(map_err(MAP_WORKLOADS))?;
                mirror.insert(key, value);
                Ok(())
            }
            None if mirror.remove(&key).is_some() || is_process => {
                remove_if_present(&mut self.workloads, &key, MAP_WORKLOADS)
            }
            None => Ok(()),
        }
    }

    /// Slots of the socket table holding a record (walks all 65,536: tests only). Slots of
    /// connects that never completed count until a later connect takes them.
    #[must_use]
    pub fn sockets_len(&self) -> usize {
        self.sockets
            .iter()
            .filter_map(Result::ok)
            .filter(|r| r.cookie != 0)
            .count()
    }

    /// The verdict the kernel holds for `entry` now (reads the map: tests and diagnostics).
    pub fn workload_in_kernel(&self, entry: WorkloadEntry) -> Option<u32> {
        self.workloads.get(&entry.key(), 0).ok().map(|v| v.verdict)
    }

    /// Workload entries per verdict, from the mirror.
    #[must_use]
    pub fn workload_counts(&self) -> (usize, usize) {
        self.workloads_mirror.as_ref().map_or((0, 0), |m| {
            let allow = m.values().filter(|v| v.verdict == VERDICT_ALLOW).count();
            (allow, m.len() - allow)
        })
    }

    pub fn stats(&self) -> Result<KernelStats, KernelError> {
        read_stats(&self.stats)
    }
}

fn read_stats(stats: &PerCpuArray<MapData, u64>) -> Result<KernelStats, KernelError> {
    let sum = |index: u32| -> Result<u64, KernelError> {
        let values = stats.get(&index, 0).map_err(map_err(MAP_STATS))?;
        Ok(values.iter().sum())
    };
    Ok(KernelStats {
        redirected: sum(STAT_REDIRECTED)?,
        refused_denied: sum(STAT_REFUSED_DENIED)?,
        refused_unregistered: sum(STAT_REFUSED_UNREGISTERED)?,
        refused_agent_down: sum(STAT_REFUSED_AGENT_DOWN)?,
        refused_store_full: sum(STAT_REFUSED_STORE_FULL)?,
        refused_not_tcp: sum(STAT_REFUSED_NOT_TCP)?,
        conns_full: sum(STAT_CONNS_FULL)?,
        events_dropped: sum(STAT_EVENTS_DROPPED)?,
        agent_passed: sum(STAT_AGENT_PASSED)?,
        lsm_refused_connect: sum(STAT_LSM_REFUSED_CONNECT)?,
        lsm_refused_data: sum(STAT_LSM_REFUSED_DATA)?,
        lsm_calls: sum(STAT_LSM_CALLS)?,
        refused_other_port: sum(STAT_REFUSED_OTHER_PORT)?,
    })
}

/// A pending entry the exec hook wrote for a process that still runs.
fn is_pending(key: &WorkloadKey, value: WorkloadVerdict) -> bool {
    value.verdict == fhirwall_common::VERDICT_PENDING && key.kind == KEY_TGID
}

fn is_pending_for_a_live_process(key: &WorkloadKey, value: WorkloadVerdict) -> bool {
    is_pending(key, value)
        && std::path::Path::new("/proc")
            .join(key.id.to_string())
            .exists()
}

fn remove_if_present<K: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    key: &K,
    name: &'static str,
) -> Result<(), KernelError> {
    match map.remove(key) {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(map_err(name)(e)),
    }
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, KernelError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(KernelError::MissingMap { map: name })?;
    T::try_from(map).map_err(map_err(name))
}

fn map_err(map: &'static str) -> impl Fn(MapError) -> KernelError {
    move |e| KernelError::Map {
        map,
        source: Box::new(e),
    }
}
