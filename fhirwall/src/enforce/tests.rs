use fhirwall_policy::IntegrationStatus;

use super::*;

fn policy(yaml_selectors: &[(&str, IntegrationStatus, &str)]) -> Policy {
    let integrations = yaml_selectors
        .iter()
        .map(|(name, status, selector)| {
            let workload: WorkloadSelector =
                serde_saphyr::from_str(selector).expect("test selector");
            let mut integration = Integration::minimal(name, *status);
            integration.workload = workload;
            integration
        })
        .collect();
    Policy::of_integrations(integrations)
}

fn process(tgid: u32, exe: &str, uid: u32) -> Workload {
    Workload {
        tgid,
        uid,
        exe: Some(exe.into()),
        exe_verified: true,
        ..Workload::default()
    }
}

const NOW: &str = "2026-06-01T00:00:00Z";

#[test]
fn sidecar_mode_only_refuses_what_is_not_live() {
    use IntegrationStatus::{Active, Revoked};
    let p = policy(&[
        ("lab", Active, "exe: /opt/lab"),
        ("old", Revoked, "exe: /opt/old"),
    ]);
    let procs = [
        process(10, "/opt/lab", 0),
        process(11, "/opt/old", 0),
        process(12, "/usr/bin/curl", 0),
    ];
    let v = verdicts(&p, &procs, Enforcement::Sidecar, NOW.parse().expect("ts"));
    assert_eq!(
        v,
        BTreeMap::from([(WorkloadEntry::Process(11), Verdict::Deny)])
    );
}

#[test]
fn kernel_mode_allows_registered_processes_only() {
    use IntegrationStatus::{Active, Suspended};
    let p = policy(&[
        ("lab", Active, "exe: /opt/lab"),
        ("paused", Suspended, "exe: /opt/paused"),
    ]);
    let procs = [
        process(10, "/opt/lab", 0),
        process(11, "/opt/paused", 0),
        process(12, "/usr/bin/curl", 0),
    ];
    let v = verdicts(&p, &procs, Enforcement::Kernel, NOW.parse().expect("ts"));
    assert_eq!(
        v,
        BTreeMap::from([
            (WorkloadEntry::Process(10), Verdict::Allow),
            (WorkloadEntry::Process(11), Verdict::Deny)
        ])
    );
}

#[test]
fn expired_integrations_are_refused_like_revoked_ones() {
    let mut p = policy(&[("lab", IntegrationStatus::Active, "exe: /opt/lab")]);
    p.integrations[0].expires = Some("2026-05-01T00:00:00Z".parse().expect("ts"));
    let v = verdicts(
        &p,
        &[process(10, "/opt/lab", 0)],
        Enforcement::Sidecar,
        NOW.parse().expect("ts"),
    );
    assert_eq!(v.get(&WorkloadEntry::Process(10)), Some(&Verdict::Deny));
}

#[test]
fn uid_selectors_get_entries_before_any_process_is_seen() {
    use IntegrationStatus::{Active, Revoked};
    let p = policy(&[
        ("lab", Active, "uid: 1400"),
        ("batch", Revoked, "uid: 1500"),
        ("mixed", Revoked, "uid: 1600\nexe: /opt/mixed"),
    ]);
    let v = verdicts(&p, &[], Enforcement::Kernel, NOW.parse().expect("ts"));
    assert_eq!(
        v,
        BTreeMap::from([
            (WorkloadEntry::User(1400), Verdict::Allow),
            (WorkloadEntry::User(1500), Verdict::Deny)
        ]),
        "a uid+exe selector cannot be decided by uid alone"
    );
}

#[test]
fn an_upstream_on_this_host_is_protected_at_every_address_of_the_host() {
    let addr = |s: &str| s.parse::<SocketAddr>().expect("addr");
    let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
    let local = BTreeSet::from([ip("127.0.0.1"), ip("192.0.2.2"), ip("::1")]);
    let hp = |s: &str| s.parse::<HostPort>().expect("host:port");
    let mut resolved = BTreeMap::from([
        (
            hp("127.0.0.1:8080"),
            BTreeSet::from([addr("127.0.0.1:8080")]),
        ),
        (hp("ehr.remote:443"), BTreeSet::from([addr("10.1.2.3:443")])),
    ]);
    with_local_aliases(&mut resolved, &local);
    assert_eq!(
        resolved[&hp("127.0.0.1:8080")],
        BTreeSet::from([
            addr("127.0.0.1:8080"),
            addr("192.0.2.2:8080"),
            addr("[::1]:8080")
        ])
    );
    assert_eq!(
        resolved[&hp("ehr.remote:443")],
        BTreeSet::from([addr("10.1.2.3:443")]),
        "a remote upstream is left as it resolved"
    );
    assert!(
        local_addresses().iter().any(std::net::IpAddr::is_loopback),
        "this host's own addresses include loopback"
    );
}

#[test]
fn protect_all_ports_adds_every_port_of_remote_addresses_only() {
    let addr = |s: &str| s.parse::<SocketAddr>().expect("addr");
    let hp = |s: &str| s.parse::<HostPort>().expect("host:port");
    let upstream = |name: &str, address: &str, all: bool| -> fhirwall_policy::Upstream {
        serde_saphyr::from_str(&format!(
            "name: {name}\naddresses: [\"{address}\"]\nprotect_all_ports: {all}\n"
        ))
        .expect("test upstream")
    };
    let mut policy = Policy::of_integrations(Vec::new());
    policy.upstreams = vec![
        upstream("remote", "ehr.remote:443", true),
        upstream("local", "127.0.0.1:8080", true),
        upstream("other", "lab.remote:443", false),
    ];
    let resolved = BTreeMap::from([
        (
            hp("ehr.remote:443"),
            BTreeSet::from([addr("10.1.2.3:443"), addr("[2001:db8::3]:443")]),
        ),
        (
            hp("127.0.0.1:8080"),
            BTreeSet::from([addr("127.0.0.1:8080")]),
        ),
        (hp("lab.remote:443"), BTreeSet::from([addr("10.9.9.9:443")])),
    ]);
    let local = BTreeSet::from(["127.0.0.1".parse().expect("ip")]);
    assert_eq!(
        destinations(&policy, &resolved, &local),
        BTreeSet::from([
            addr("10.1.2.3:443"),
            addr("10.1.2.3:0"),
            addr("[2001:db8::3]:443"),
            addr("[2001:db8::3]:0"),
            addr("127.0.0.1:8080"),
            addr("10.9.9.9:443"),
        ])
    );
}
