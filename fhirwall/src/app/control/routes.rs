//! What the data plane needs to know about upstreams, built from policy and resolution: which
//! upstream a destination belongs to, what certificate name to present, how to connect.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::Arc,
};

use fhirwall_policy::{HostPort, Policy, Upstream, Workload};

use crate::{
    audit::{Disposition, Record, WorkloadRecord},
    kernel::{Caller, Refusal},
    proxy::{
        listener::Routes,
        tls::{ClientIdentity, LeafName, UpstreamSpec, UpstreamTable},
    },
};

/// Destinations -> upstream names, certificate names, and the explicit listener's upstream.
#[must_use]
pub fn routes(
    policy: &Policy,
    resolved: &BTreeMap<HostPort, BTreeSet<SocketAddr>>,
    explicit: Option<(SocketAddr, &str)>,
    proxies: &[HostPort],
    destinations: &BTreeSet<SocketAddr>,
) -> Routes {
    let mut routes = Routes::default();
    routes.egress.proxies = proxies
        .iter()
        .filter_map(|hp| resolved.get(hp))
        .flatten()
        .copied()
        .collect();
    for upstream in &policy.upstreams {
        let name: Arc<str> = Arc::from(upstream.name.as_str());
        for addr in addresses(upstream, resolved) {
            routes.by_destination.insert(addr, Arc::clone(&name));
            if destinations.contains(&SocketAddr::new(addr.ip(), 0)) {
                routes.egress.all_ports.insert(addr.ip(), Arc::clone(&name));
            }
        }
        let hosts = upstream.addresses.iter().map(|a| a.host.as_str());
        for host in hosts.chain(upstream.tls.server_name.as_deref()) {
            if host.parse::<std::net::IpAddr>().is_err() {
                routes
                    .egress
                    .names
                    .insert(host.to_ascii_lowercase(), Arc::clone(&name));
            }
        }
        let host = upstream
            .tls
            .server_name
            .clone()
            .or_else(|| upstream.addresses.first().map(|a| a.host.clone()));
        if let Some(leaf) = host.and_then(|h| LeafName::parse(&h).ok()) {
            routes.leaf_names.insert(name, leaf);
        }
    }
    routes.explicit = explicit.map(|(listen, upstream)| (listen, Arc::from(upstream)));
    routes
}

/// The names the sidecar answers TLS as: every protected upstream's host names (and
/// `tls.server_name`) and the addresses they resolved to. Any other server name gets no leaf.
#[must_use]
pub fn served_names(
    policy: &Policy,
    resolved: &BTreeMap<HostPort, BTreeSet<SocketAddr>>,
) -> BTreeSet<LeafName> {
    let mut names = BTreeSet::new();
    for upstream in &policy.upstreams {
        let hosts = upstream.addresses.iter().map(|a| a.host.as_str());
        let certified = hosts.chain(upstream.tls.server_name.as_deref());
        names.extend(certified.filter_map(|h| LeafName::parse(h).ok()));
        names.extend(
            addresses(upstream, resolved)
                .into_iter()
                .map(|a| LeafName::Ip(a.ip())),
        );
    }
    names
}

/// How to connect to a policy upstream whose addresses resolved to `addresses`: the server name
/// is `tls.server_name`, else the host of its first address. (The TLS layer knows connection
/// specs, not the policy's upstreams.)
fn upstream_spec(upstream: &Upstream, addresses: Vec<SocketAddr>) -> UpstreamSpec {
    let server_name = upstream.tls.server_name.clone().unwrap_or_else(|| {
        upstream
            .addresses
            .first()
            .map(|a| a.host.clone())
            .unwrap_or_default()
    });
    UpstreamSpec {
        name: upstream.name.clone(),
        addresses,
        mode: upstream.tls.mode,
        server_name,
        ca_file: upstream.tls.ca_file.clone(),
    }
}

/// How to connect to each upstream, and each integration's client certificate.
#[must_use]
pub fn upstream_table(
    policy: &Policy,
    resolved: &BTreeMap<HostPort, BTreeSet<SocketAddr>>,
) -> UpstreamTable {
    let upstreams = policy
        .upstreams
        .iter()
        .map(|u| (u.name.clone(), upstream_spec(u, addresses(u, resolved))))
        .collect();
    let identities = policy
        .integrations
        .iter()
        .filter_map(|i| {
            let cert = i.credentials.client_certificate.as_ref()?;
            let identity = ClientIdentity {
                cert_file: cert.cert_file.path().to_owned(),
                key_file: cert.key_file.path().to_owned(),
            };
            Some((i.name.clone(), identity))
        })
        .collect();
    UpstreamTable {
        upstreams,
        identities,
    }
}

fn addresses(
    upstream: &fhirwall_policy::Upstream,
    resolved: &BTreeMap<HostPort, BTreeSet<SocketAddr>>,
) -> Vec<SocketAddr> {
    upstream
        .addresses
        .iter()
        .filter_map(|hp| resolved.get(hp))
        .flatten()
        .copied()
        .collect()
}

/// The audit record of a connect the kernel refused: no HTTP was seen, the workload is what the
/// kernel knew (the process may be gone by now).
#[must_use]
pub fn kernel_refusal(
    node: &str,
    caller: &Caller,
    destination: SocketAddr,
    refusal: Refusal,
    routes: &Routes,
) -> Record {
    let workload = WorkloadRecord::from(&crate::attribution::kernel_workload(caller));
    let mut record = Record::new(
        format!("kernel-{:x}", caller.cookie),
        node,
        workload,
        "CONNECT",
        destination.to_string(),
        Disposition::KernelRefused,
    );
    record.upstream = routes
        .by_destination
        .get(&destination)
        .map(ToString::to_string);
    record.rule = Some("kernel/connect".into());
    record.reason = Some(
        match refusal {
            Refusal::Denied => "the workload's integration is revoked, suspended or expired",
            Refusal::Unregistered => "no integration registers this workload (enforcement: kernel)",
            Refusal::AgentDown => "the agent was down or not yet configured",
            Refusal::StoreFull => "the kernel's socket table was full",
            Refusal::NotTcp => "only TCP to a protected destination is allowed",
            Refusal::NoRedirect => {
                "the LSM layer refused a path around the redirect (its programs were detached, \
                 or the socket was connected without it)"
            }
            Refusal::OtherPort => "every port of this protected address is closed but the FHIR one",
            Refusal::Other(_) => "refused by the kernel",
        }
        .into(),
    );
    record
}

/// The integration a kernel refusal is charged to, and why (the words of `Reason::slug`), for
/// its audit record and `fhirwall_policy_denials_total`; `None` for refusals that are not the
/// policy's (agent down, table full, not TCP). `process` is what the agent knows of the caller.
pub fn charged_to(
    policy: &Policy,
    process: Option<&Workload>,
    refusal: Refusal,
    now: jiff::Timestamp,
) -> Option<(Option<String>, &'static str)> {
    match refusal {
        Refusal::Unregistered => Some((None, "unregistered")),
        Refusal::Denied => {
            let integration = process.and_then(|w| policy.integration_for(w));
            // Denied, yet live by now (reinstated meanwhile), or decided per cgroup for a
            // process the agent has not seen: a policy refusal all the same.
            Some(match integration {
                Some(i) => (Some(i.name.clone()), i.refusal(now).unwrap_or("denied")),
                None => (None, "denied"),
            })
        }
        Refusal::AgentDown
        | Refusal::StoreFull
        | Refusal::NotTcp
        | Refusal::NoRedirect
        | Refusal::OtherPort
        | Refusal::Other(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use fhirwall_policy::{Integration, IntegrationStatus};

    use super::*;

    #[test]
    fn kernel_refusals_are_charged_to_the_integration_and_why() {
        let now: jiff::Timestamp = "2026-06-01T00:00:00Z".parse().expect("timestamp");
        let mut expired = Integration::minimal("fax", IntegrationStatus::Active);
        expired.workload.uid = Some(3);
        expired.expires = Some("2026-05-01T00:00:00Z".parse().expect("timestamp"));
        let mut revoked = Integration::minimal("lab", IntegrationStatus::Revoked);
        revoked.workload.uid = Some(2);
        let mut live = Integration::minimal("portal", IntegrationStatus::Active);
        live.workload.uid = Some(4);
        let policy = Policy::of_integrations(vec![revoked, expired, live]);
        let process = |uid| Workload {
            uid,
            ..Workload::default()
        };
        let name = |n: &str| Some(n.to_owned());
        let cases = [
            (
                Some(process(2)),
                Refusal::Denied,
                Some((name("lab"), "revoked")),
            ),
            (
                Some(process(3)),
                Refusal::Denied,
                Some((name("fax"), "expired")),
            ),
            (
                Some(process(4)),
                Refusal::Denied,
                Some((name("portal"), "denied")),
            ),
            (None, Refusal::Denied, Some((None, "denied"))),
            (
                Some(process(9)),
                Refusal::Unregistered,
                Some((None, "unregistered")),
            ),
            (Some(process(2)), Refusal::AgentDown, None),
            (Some(process(2)), Refusal::StoreFull, None),
            (None, Refusal::NotTcp, None),
        ];
        for (process, refusal, want) in cases {
            assert_eq!(
                charged_to(&policy, process.as_ref(), refusal, now),
                want,
                "{refusal:?} of {process:?}"
            );
        }
    }
}
