//! Keeping the kernel in step with policy and with the processes on the host: which
//! destinations are protected (upstream addresses, names re-resolved) and what the kernel does
//! with each known workload (refuse revoked ones; with `enforcement: kernel`, let only
//! registered ones through).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
};

use fhirwall_policy::{Enforcement, HostPort, Integration, Policy, Workload, WorkloadSelector};

use crate::kernel::{Verdict, WorkloadEntry};

/// A cgroup that exists on the host, for selectors that name units, containers or pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostCgroup {
    pub id: u64,
    /// As a workload in it would be identified: path, unit, container, pod.
    pub identity: Workload,
}

/// The kernel's per-workload verdicts for `policy`, given the running processes and existing
/// cgroups. Pure: table-tested below.
///
/// - A process whose integration is revoked, suspended or expired: `Deny`.
/// - With `enforcement: kernel`, a process of a live integration: `Allow` (anything else is
///   refused as unregistered).
/// - Selectors the kernel can evaluate before any process is classified get entries of their
///   own: a cgroup matched by a unit/container/pod/cgroup-only selector, a uid-only selector.
///   New processes of those workloads are then right from their first `connect()`.
#[must_use]
pub fn verdicts(
    policy: &Policy,
    processes: &[Workload],
    cgroups: &[HostCgroup],
    enforcement: Enforcement,
    now: jiff::Timestamp,
) -> BTreeMap<WorkloadEntry, Verdict> {
    let verdict = |i: &Integration| integration_verdict(i, enforcement, now);
    let mut out = BTreeMap::new();
    for integration in &policy.integrations {
        let Some(v) = verdict(integration) else {
            continue;
        };
        let selector = &integration.workload;
        if let Some(uid) = uid_only(selector) {
            out.insert(WorkloadEntry::User(uid), v);
        }
        if cgroup_only(selector) {
            for cgroup in cgroups.iter().filter(|c| selector.matches(&c.identity)) {
                out.insert(WorkloadEntry::Cgroup(cgroup.id), v);
            }
        }
    }
    for process in processes {
        if let Some(v) = process_verdict(policy, process, enforcement, now) {
            out.insert(WorkloadEntry::Process(process.tgid), v);
        }
    }
    out
}

/// The kernel's verdict for one process (`None`: no entry, the default applies).
#[must_use]
pub fn process_verdict(
    policy: &Policy,
    process: &Workload,
    enforcement: Enforcement,
    now: jiff::Timestamp,
) -> Option<Verdict> {
    policy
        .integration_for(process)
        .and_then(|i| integration_verdict(i, enforcement, now))
}

fn integration_verdict(
    i: &Integration,
    enforcement: Enforcement,
    now: jiff::Timestamp,
) -> Option<Verdict> {
    if !i.is_live(now) {
        Some(Verdict::Deny)
    } else if enforcement == Enforcement::Kernel {
        Some(Verdict::Allow)
    } else {
        None
    }
}

/// Whether any selector can be decided per cgroup, i.e. whether [`host_cgroups`] is needed.
#[must_use]
pub fn needs_cgroups(policy: &Policy) -> bool {
    policy.integrations.iter().any(|i| cgroup_only(&i.workload))
}

/// Every cgroup under `mount` (breadth-first, at most `limit`), identified as a workload in it
/// would be.
#[must_use]
pub fn host_cgroups(mount: &std::path::Path, limit: usize) -> Vec<HostCgroup> {
    use std::os::unix::fs::MetadataExt as _;
    let mut out = Vec::new();
    let mut queue = std::collections::VecDeque::from([mount.to_path_buf()]);
    while let Some(dir) = queue.pop_front() {
        if out.len() >= limit {
            break;
        }
        let Ok(meta) = std::fs::metadata(&dir) else {
            continue;
        };
        let rel = dir
            .strip_prefix(mount)
            .map(|r| format!("/{}", r.display()))
            .unwrap_or_default();
        let id = crate::attribution::parse_cgroup_path(&rel);
        out.push(HostCgroup {
            id: meta.ino(),
            identity: Workload {
                cgroup_path: Some(rel),
                container_id: id.container_id,
                pod_uid: id.pod_uid,
                systemd_unit: id.systemd_unit,
                ..Workload::default()
            },
        });
        if let Ok(entries) = std::fs::read_dir(&dir) {
            queue.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    out
}

fn uid_only(s: &WorkloadSelector) -> Option<u32> {
    let only = WorkloadSelector {
        uid: s.uid,
        ..WorkloadSelector::default()
    };
    (s.uid.is_some() && *s == only).then_some(s.uid).flatten()
}

fn cgroup_only(s: &WorkloadSelector) -> bool {
    let only = WorkloadSelector {
        cgroup: s.cgroup.clone(),
        systemd_unit: s.systemd_unit.clone(),
        container_id: s.container_id.clone(),
        pod_uid: s.pod_uid.clone(),
        ..WorkloadSelector::default()
    };
    !s.is_empty() && *s == only
}

/// Resolves every upstream address. A name that does not resolve now keeps the addresses it
/// had (`previous`): a DNS outage must not lift protection. Returns the addresses per name and
/// the names that failed.
pub async fn resolve(
    policy: &Policy,
    previous: &BTreeMap<HostPort, BTreeSet<SocketAddr>>,
) -> (
    BTreeMap<HostPort, BTreeSet<SocketAddr>>,
    Vec<(HostPort, std::io::Error)>,
) {
    let mut resolved = BTreeMap::new();
    let mut failures = Vec::new();
    for hp in policy.upstreams.iter().flat_map(|u| &u.addresses) {
        match tokio::net::lookup_host((hp.host.as_str(), hp.port)).await {
            Ok(addrs) => {
                resolved.insert(hp.clone(), addrs.collect());
            }
            Err(e) => {
                if let Some(old) = previous.get(hp) {
                    resolved.insert(hp.clone(), old.clone());
                }
                failures.push((hp.clone(), e));
            }
        }
    }
    (resolved, failures)
}

/// Every protected destination. IPv4 addresses need no IPv4-mapped twin: the kernel programs map
/// what they see themselves.
#[must_use]
pub fn destinations(resolved: &BTreeMap<HostPort, BTreeSet<SocketAddr>>) -> BTreeSet<SocketAddr> {
    resolved.values().flatten().copied().collect()
}

#[cfg(test)]
mod tests;
