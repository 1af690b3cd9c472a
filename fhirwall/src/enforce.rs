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

/// The kernel's per-workload verdicts for `policy`, given the running processes and existing
/// cgroups. Pure: table-tested below.
///
/// - A process whose integration is revoked, suspended or expired: `Deny`.
/// - With `enforcement: kernel`, a process of a live integration: `Allow` (anything else is
///   refused as unregistered).
/// - A uid-only selector, which the kernel can evaluate before any process is classified, gets
///   an entry of its own: new processes of that user are right from their first `connect()`.
///   (Unit, container, pod and cgroup names alone are no selector: any local user could make a
///   cgroup of that name in a subtree of their own.)
#[must_use]
pub fn verdicts(
    policy: &Policy,
    processes: &[Workload],
    enforcement: Enforcement,
    now: jiff::Timestamp,
) -> BTreeMap<WorkloadEntry, Verdict> {
    let verdict = |i: &Integration| integration_verdict(i, enforcement, now);
    let mut out = BTreeMap::new();
    for integration in &policy.integrations {
        let Some(v) = verdict(integration) else {
            continue;
        };
        if let Some(uid) = uid_only(&integration.workload) {
            out.insert(WorkloadEntry::User(uid), v);
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

fn uid_only(s: &WorkloadSelector) -> Option<u32> {
    let only = WorkloadSelector {
        uid: s.uid,
        ..WorkloadSelector::default()
    };
    (s.uid.is_some() && *s == only).then_some(s.uid).flatten()
}

/// Resolves every upstream and egress proxy address, this host's other addresses added for one
/// on this host ([`with_local_aliases`]). A name that does not resolve now keeps the addresses
/// it had (`previous`): a DNS outage must not lift protection. Returns the addresses per name
/// and the names that failed.
pub async fn resolve(
    policy: &Policy,
    proxies: &[HostPort],
    previous: &BTreeMap<HostPort, BTreeSet<SocketAddr>>,
) -> (
    BTreeMap<HostPort, BTreeSet<SocketAddr>>,
    Vec<(HostPort, std::io::Error)>,
) {
    let mut resolved = BTreeMap::new();
    let mut failures = Vec::new();
    for hp in policy
        .upstreams
        .iter()
        .flat_map(|u| &u.addresses)
        .chain(proxies)
    {
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
    with_local_aliases(&mut resolved, &local_addresses());
    (resolved, failures)
}

/// [`resolve`], blocking and without earlier answers to fall back on (a name that does not
/// resolve has no addresses): for the node CA's name constraints, when it is created.
#[must_use]
pub fn resolve_now(policy: &Policy) -> BTreeMap<HostPort, BTreeSet<SocketAddr>> {
    use std::net::ToSocketAddrs as _;
    let mut resolved = policy
        .upstreams
        .iter()
        .flat_map(|u| &u.addresses)
        .map(|hp| {
            let addrs = (hp.host.as_str(), hp.port).to_socket_addrs();
            (hp.clone(), addrs.map(Iterator::collect).unwrap_or_default())
        })
        .collect();
    with_local_aliases(&mut resolved, &local_addresses());
    resolved
}

/// For every upstream address that is this host's own (`local`: its interfaces' addresses,
/// loopback included), adds all of this host's addresses with the same port. A server on this
/// host listening on all addresses answers on each of them, so protecting only the configured
/// one would leave the others as a way around the sidecar. The rest of 127.0.0.0/8 is covered
/// by the kernel programs, which treat any IPv4 loopback address as 127.0.0.1.
fn with_local_aliases(
    resolved: &mut BTreeMap<HostPort, BTreeSet<SocketAddr>>,
    local: &BTreeSet<std::net::IpAddr>,
) {
    for addrs in resolved.values_mut() {
        let ports: BTreeSet<u16> = addrs
            .iter()
            .filter(|a| local.contains(&a.ip()))
            .map(SocketAddr::port)
            .collect();
        for port in ports {
            addrs.extend(local.iter().map(|ip| SocketAddr::new(*ip, port)));
        }
    }
}

/// This host's addresses: every interface's, loopback included. Empty when they cannot be
/// listed (then only the configured addresses are protected, as before).
#[must_use]
pub fn local_addresses() -> BTreeSet<std::net::IpAddr> {
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        return BTreeSet::new();
    };
    interfaces
        .filter_map(|i| i.address)
        .filter_map(|a| {
            a.as_sockaddr_in()
                .map(|v4| std::net::IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| std::net::IpAddr::V6(v6.ip())))
        })
        // A link-local IPv6 address needs its interface to be reached: not one a client names.
        .filter(|ip| !matches!(ip, std::net::IpAddr::V6(v6) if v6.is_unicast_link_local()))
        .collect()
}

/// Every protected destination. IPv4 addresses need no IPv4-mapped twin: the kernel programs map
/// what they see themselves. An upstream with `protect_all_ports` adds its addresses with port
/// 0 (every other port refused), except this host's own (`local`).
#[must_use]
pub fn destinations(
    policy: &Policy,
    resolved: &BTreeMap<HostPort, BTreeSet<SocketAddr>>,
    local: &BTreeSet<std::net::IpAddr>,
) -> BTreeSet<SocketAddr> {
    let mut out: BTreeSet<SocketAddr> = resolved.values().flatten().copied().collect();
    let all_ports = policy
        .upstreams
        .iter()
        .filter(|u| u.protect_all_ports)
        .flat_map(|u| &u.addresses)
        .filter_map(|hp| resolved.get(hp))
        .flatten()
        .filter(|a| !local.contains(&a.ip()))
        .map(|a| SocketAddr::new(a.ip(), 0));
    out.extend(all_ports);
    out
}

#[cfg(test)]
mod tests;
