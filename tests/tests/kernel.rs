//! Kernel tests: the real eBPF programs attached to a dedicated test cgroup, real processes
//! (`fw-probe`) connecting from inside it. Need root and BTF; skipped with a reason on a laptop,
//! failing in CI.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read as _, Write as _},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use fhirwall::kernel::{
    ConnTable, Kernel, KernelEvent, KernelSettings, LayerState, Refusal, Verdict, WorkloadEntry,
    destroy_connections_to,
};
use fhirwall_tests::{PinDir, Probe, TestCgroup, eventually, kernel_available};
use serde_json::{Value, json};

const MARK: u32 = 0xf1f0;
const EPERM: i64 = 1;

/// A test cgroup with `agent` and `work` children, a kernel instance attached to it, a sidecar
/// that answers with the kernel's record of each connection, and a real destination.
struct Fixture {
    kernel: Kernel,
    protected_v4: SocketAddr,
    protected_v6: SocketAddr,
    work: PathBuf,
    agent: PathBuf,
    _pins: PinDir,
    _cgroup: TestCgroup,
}

impl Fixture {
    fn new(kernel_enforcement: bool) -> Self {
        Self::with_capacity(kernel_enforcement, None)
    }

    fn with_lsm() -> Self {
        Self::build(false, None, true)
    }

    fn with_capacity(kernel_enforcement: bool, conns_capacity: Option<u32>) -> Self {
        Self::build(kernel_enforcement, conns_capacity, false)
    }

    fn build(kernel_enforcement: bool, conns_capacity: Option<u32>, lsm_layer: bool) -> Self {
        let cgroup = TestCgroup::new().expect("test cgroup");
        let work = cgroup.child("work").expect("work cgroup");
        let agent = cgroup.child("agent").expect("agent cgroup");
        let pins = PinDir::new();
        let (v4, v6) = sidecar_listeners();
        let sidecar_port = v4.local_addr().expect("bound").port();
        let protected_v4 = echo_server(Ipv4Addr::new(127, 0, 0, 3).into());
        let protected_v6 = echo_server(Ipv6Addr::LOCALHOST.into());
        let settings = KernelSettings {
            pin_dir: pins.path.clone(),
            attach_cgroup: cgroup.dir.clone(),
            agent_cgroup: TestCgroup::id(&agent),
            agent_mark: MARK,
            sidecar_v4: Ipv4Addr::LOCALHOST,
            sidecar_v6: Ipv6Addr::LOCALHOST,
            sidecar_port,
            kernel_enforcement,
            heartbeat_timeout: Duration::from_secs(30),
            conns_capacity,
            lsm_layer,
        };
        let mut kernel = Kernel::load(settings).expect("loading the kernel programs");
        kernel
            .set_protected(&BTreeSet::from([protected_v4, protected_v6]))
            .expect("protected set");
        let conns = kernel.conns();
        for listener in [v4, v6] {
            let conns = conns.clone();
            thread::spawn(move || sidecar(&listener, &conns));
        }
        kernel.activate().expect("attaching");
        Self {
            kernel,
            protected_v4,
            protected_v6,
            work,
            agent,
            _pins: pins,
            _cgroup: cgroup,
        }
    }

    fn probe(cgroup: &Path, extra: &[&str], dst: SocketAddr) -> Value {
        let dst = dst.to_string();
        let mut args = vec![
            "--cgroup",
            cgroup.to_str().expect("utf-8 path"),
            "--send",
            "hello",
        ];
        args.extend_from_slice(extra);
        args.push(&dst);
        Probe::run(&args).expect("probe run")
    }

    fn events(&mut self) -> Vec<KernelEvent> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _guard = rt.enter();
        let mut reader = self
            .kernel
            .take_events()
            .expect("events not taken")
            .expect("reader");
        let mut out = Vec::new();
        reader.drain(&mut out);
        out
    }
}

fn sidecar_listeners() -> (TcpListener, TcpListener) {
    for _ in 0..20 {
        let v4 = TcpListener::bind("127.0.0.1:0").expect("bind v4");
        let port = v4.local_addr().expect("bound").port();
        if let Ok(v6) = TcpListener::bind(SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port)) {
            return (v4, v6);
        }
    }
    panic!("no port free on both 127.0.0.1 and ::1");
}

/// The sidecar's part: look each accepted connection up, answer with what the kernel recorded.
fn sidecar(listener: &TcpListener, conns: &ConnTable) {
    for stream in listener.incoming().flatten() {
        let conns = conns.clone();
        thread::spawn(move || answer(stream, &conns));
    }
}

fn answer(mut stream: TcpStream, conns: &ConnTable) {
    {
        let (peer, local) = (
            stream.peer_addr().expect("peer"),
            stream.local_addr().expect("local"),
        );
        let record = eventually(Duration::from_millis(500), || {
            conns.lookup(peer, local).ok().flatten()
        });
        let mut request = Vec::new();
        let _ = stream.read_to_end(&mut request);
        let answer = record.map_or(json!({"found": false}), |r| {
            json!({
                "found": true,
                "tgid": r.tgid,
                "uid": r.uid,
                "cgroup": r.cgroup_id,
                "comm": fhirwall::kernel::comm(&r.comm),
                "dst": SocketAddr::new(fhirwall::kernel::from_addr(&r.orig_addr), r.orig_port).to_string(),
                "request": String::from_utf8_lossy(&request),
            })
        });
        let _ = stream.write_all(answer.to_string().as_bytes());
    }
}

/// A destination that answers `direct` (proving the connection was NOT redirected).
fn echo_server(ip: std::net::IpAddr) -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0)).expect("bind destination");
    let addr = listener.local_addr().expect("bound");
    thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink);
            let _ = stream.write_all(b"direct");
        }
    });
    addr
}

fn sidecar_answer(report: &Value) -> Value {
    assert_eq!(report["ok"], true, "connect failed: {report}");
    serde_json::from_str(report["reply"].as_str().expect("reply"))
        .unwrap_or_else(|_| json!({"raw": report["reply"]}))
}

#[test]
fn redirects_ipv4_and_attributes_the_process() {
    if !kernel_available("redirects_ipv4_and_attributes_the_process") {
        return;
    }
    let fx = Fixture::new(false);
    let baseline = (fx.kernel.conns().len(), fx.kernel.sockets_len());
    let mut probe = Probe::spawn(&[
        "--cgroup",
        fx.work.to_str().expect("utf-8"),
        "--wait",
        "--send",
        "hello",
        &fx.protected_v4.to_string(),
    ])
    .expect("probe");
    let pid = probe.pid;
    probe.go().expect("go");
    let report = probe.report().expect("report");
    let answer = sidecar_answer(&report);
    assert_eq!(answer["found"], true, "{answer}");
    assert_eq!(answer["tgid"], pid);
    assert_eq!(answer["uid"], 0);
    assert_eq!(answer["cgroup"], TestCgroup::id(&fx.work));
    assert_eq!(answer["comm"], "fw-probe");
    assert_eq!(answer["dst"], fx.protected_v4.to_string());
    assert_eq!(answer["request"], "hello");
    // getpeername shows the original destination, not the sidecar.
    assert_eq!(report["peer"], fx.protected_v4.to_string());
    drop(probe);
    let settled = eventually(Duration::from_secs(5), || {
        ((fx.kernel.conns().len(), fx.kernel.sockets_len()) == baseline).then_some(())
    });
    assert!(
        settled.is_some(),
        "the connection and socket tables did not return to their baseline"
    );
    assert_eq!(fx.kernel.stats().expect("stats").redirected, 1);
}

#[test]
fn redirects_ipv6_and_ipv4_mapped_connects() {
    if !kernel_available("redirects_ipv6_and_ipv4_mapped_connects") {
        return;
    }
    let fx = Fixture::new(false);
    let v6 = Fixture::probe(&fx.work, &[], fx.protected_v6);
    let answer = sidecar_answer(&v6);
    assert_eq!(answer["dst"], fx.protected_v6.to_string());
    assert_eq!(v6["peer"], fx.protected_v6.to_string());
    // A dual-stack IPv6 socket to ::ffff:127.0.0.3, as Java clients connect.
    let mapped = Fixture::probe(&fx.work, &["--v6"], fx.protected_v4);
    let answer = sidecar_answer(&mapped);
    assert_eq!(answer["found"], true, "{answer}");
    assert_eq!(answer["dst"], fx.protected_v4.to_string());
    let expected_peer = format!("[::ffff:127.0.0.3]:{}", fx.protected_v4.port());
    assert_eq!(mapped["peer"], expected_peer);
}

#[test]
fn every_loopback_address_counts_as_127_0_0_1_when_that_is_protected() {
    if !kernel_available("every_loopback_address_counts_as_127_0_0_1_when_that_is_protected") {
        return;
    }
    let mut fx = Fixture::new(false);
    // A server on this host listening on all addresses, protected at 127.0.0.1 (as the agent
    // protects an upstream on this host).
    let local = echo_server(Ipv4Addr::UNSPECIFIED.into());
    let registered = SocketAddr::from(([127, 0, 0, 1], local.port()));
    fx.kernel
        .set_protected(&BTreeSet::from([
            fx.protected_v4,
            fx.protected_v6,
            registered,
        ]))
        .expect("protected set");
    let other = SocketAddr::from(([127, 0, 0, 9], local.port()));
    let answer = sidecar_answer(&Fixture::probe(&fx.work, &[], other));
    assert_eq!(answer["found"], true, "{answer}");
    assert_eq!(
        answer["dst"],
        other.to_string(),
        "redirected, the address kept"
    );
    // A loopback address of an unprotected port stays untouched.
    let free = echo_server(Ipv4Addr::new(127, 0, 0, 9).into());
    let direct = Fixture::probe(&fx.work, &[], free);
    assert_eq!(direct["reply"], "direct", "{direct}");
}

#[test]
fn leaves_unprotected_destinations_and_the_agents_own_sockets_alone() {
    if !kernel_available("leaves_unprotected_destinations_and_the_agents_own_sockets_alone") {
        return;
    }
    let fx = Fixture::new(false);
    let other = echo_server(Ipv4Addr::new(127, 0, 0, 4).into());
    assert_eq!(Fixture::probe(&fx.work, &[], other)["reply"], "direct");
    // The agent: its cgroup AND its mark.
    let mark = MARK.to_string();
    assert_eq!(
        Fixture::probe(&fx.agent, &["--mark", &mark], fx.protected_v4)["reply"],
        "direct"
    );
    // Either one alone is not the agent.
    assert_eq!(
        sidecar_answer(&Fixture::probe(&fx.agent, &[], fx.protected_v4))["found"],
        true
    );
    assert_eq!(
        sidecar_answer(&Fixture::probe(
            &fx.work,
            &["--mark", &mark],
            fx.protected_v4
        ))["found"],
        true
    );
    assert_eq!(fx.kernel.stats().expect("stats").agent_passed, 1);
}

#[test]
fn refuses_denied_workloads_with_eperm_and_an_event() {
    if !kernel_available("refuses_denied_workloads_with_eperm_and_an_event") {
        return;
    }
    let mut fx = Fixture::new(false);
    let work_id = TestCgroup::id(&fx.work);
    fx.kernel
        .set_workloads(&BTreeMap::from([(
            WorkloadEntry::Cgroup(work_id),
            Verdict::Deny,
        )]))
        .expect("deny map");
    let report = Fixture::probe(&fx.work, &[], fx.protected_v4);
    assert_eq!(report["ok"], false);
    assert_eq!(report["errno"], EPERM);
    // A process-level allow is more specific than the cgroup deny.
    let mut probe = Probe::spawn(&[
        "--cgroup",
        fx.work.to_str().expect("utf-8"),
        "--wait",
        "--send",
        "x",
        &fx.protected_v4.to_string(),
    ])
    .expect("probe");
    fx.kernel
        .set_workloads(&BTreeMap::from([
            (WorkloadEntry::Cgroup(work_id), Verdict::Deny),
            (WorkloadEntry::Process(probe.pid), Verdict::Allow),
        ]))
        .expect("allow the process");
    probe.go().expect("go");
    assert_eq!(
        sidecar_answer(&probe.report().expect("report"))["found"],
        true
    );
    let refused: Vec<_> = fx
        .events()
        .into_iter()
        .filter_map(|e| match e {
            KernelEvent::Refused {
                caller,
                destination,
                refusal,
            } => Some((caller, destination, refusal)),
            _ => None,
        })
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].1, fx.protected_v4);
    assert_eq!(refused[0].2, Refusal::Denied);
    assert_eq!(refused[0].0.cgroup_id, work_id);
    assert_eq!(fx.kernel.stats().expect("stats").refused_denied, 1);
}

#[test]
fn kernel_enforcement_refuses_unregistered_workloads() {
    if !kernel_available("kernel_enforcement_refuses_unregistered_workloads") {
        return;
    }
    let mut fx = Fixture::new(true);
    // A process the agent has not classified yet (the exec hook marked it pending) goes to the
    // sidecar, which decides: never refused just for being new.
    let fresh = Fixture::probe(&fx.work, &[], fx.protected_v4);
    assert_eq!(sidecar_answer(&fresh)["found"], true, "{fresh}");
    // Once the agent has found it unregistered (no entry), the kernel refuses it.
    let work = fx.work.to_str().expect("utf-8").to_owned();
    let dst = fx.protected_v4.to_string();
    let mut probe =
        Probe::spawn(&["--cgroup", &work, "--wait", "--send", "x", &dst]).expect("probe");
    fx.kernel
        .set_workload(WorkloadEntry::Process(probe.pid), None)
        .expect("classified");
    probe.go().expect("go");
    let report = probe.report().expect("report");
    assert_eq!(report["errno"], EPERM, "{report}");
    let registered = BTreeMap::from([(
        WorkloadEntry::Cgroup(TestCgroup::id(&fx.work)),
        Verdict::Allow,
    )]);
    fx.kernel.set_workloads(&registered).expect("register");
    assert_eq!(
        sidecar_answer(&Fixture::probe(&fx.work, &[], fx.protected_v4))["found"],
        true
    );
    let unregistered = fx.events().into_iter().any(|e| {
        matches!(
            e,
            KernelEvent::Refused {
                refusal: Refusal::Unregistered,
                ..
            }
        )
    });
    assert!(unregistered);
}

#[test]
fn refuses_while_the_agent_is_down_and_datagrams_always() {
    if !kernel_available("refuses_while_the_agent_is_down_and_datagrams_always") {
        return;
    }
    let mut fx = Fixture::new(false);
    let udp = Fixture::probe(&fx.work, &["--udp"], fx.protected_v4);
    assert_eq!(udp["errno"], EPERM, "{udp}");
    let other_udp = Fixture::probe(
        &fx.work,
        &["--udp"],
        "127.0.0.4:9".parse().expect("literal"),
    );
    assert_eq!(other_udp["ok"], true);
    fx.kernel.mark_down().expect("mark down");
    assert_eq!(
        Fixture::probe(&fx.work, &[], fx.protected_v4)["errno"],
        EPERM
    );
    fx.kernel.heartbeat().expect("heartbeat");
    assert_eq!(
        sidecar_answer(&Fixture::probe(&fx.work, &[], fx.protected_v4))["found"],
        true
    );
    let stats = fx.kernel.stats().expect("stats");
    assert_eq!((stats.refused_not_tcp, stats.refused_agent_down), (1, 1));
}

#[test]
fn enforcement_survives_the_agent_and_uninstall_removes_it() {
    if !kernel_available("enforcement_survives_the_agent_and_uninstall_removes_it") {
        return;
    }
    let mut fx = Fixture::new(false);
    let pin_dir = fx.kernel.settings().pin_dir.clone();
    // The agent exits cleanly: the pinned programs keep refusing.
    fx.kernel.mark_down().expect("mark down");
    let Fixture {
        kernel,
        work,
        protected_v4,
        _pins,
        _cgroup,
        ..
    } = fx;
    drop(kernel);
    let report = Probe::run(&[
        "--cgroup",
        work.to_str().expect("utf-8"),
        &protected_v4.to_string(),
    ])
    .expect("probe");
    assert_eq!(report["errno"], EPERM, "{report}");
    let removed = fhirwall::kernel::uninstall(&pin_dir).expect("uninstall");
    assert!(removed >= 7, "removed only {removed} pins");
    assert!(!pin_dir.exists());
    let report = Probe::run(&[
        "--cgroup",
        work.to_str().expect("utf-8"),
        "--send",
        "x",
        &protected_v4.to_string(),
    ])
    .expect("probe");
    assert_eq!(report["reply"], "direct");
}

#[test]
fn a_new_agent_takes_over_without_a_gap() {
    if !kernel_available("a_new_agent_takes_over_without_a_gap") {
        return;
    }
    let fx = Fixture::new(false);
    let links_dir = fx
        .kernel
        .settings()
        .pin_dir
        .join(format!("v{}/links", fhirwall_common::LAYOUT_VERSION));
    let first: BTreeSet<_> = std::fs::read_dir(&links_dir)
        .expect("links")
        .flatten()
        .map(|e| e.path())
        .collect();
    let mut second = Kernel::load(fx.kernel.settings().clone()).expect("second load");
    second
        .set_protected(&BTreeSet::from([fx.protected_v4]))
        .expect("protected");
    second.activate().expect("takeover");
    let after: BTreeSet<_> = std::fs::read_dir(&links_dir)
        .expect("links")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(after.len(), first.len());
    assert!(after.is_disjoint(&first), "old links were not removed");
    assert_eq!(
        sidecar_answer(&Fixture::probe(&fx.work, &[], fx.protected_v4))["found"],
        true
    );
}

#[test]
fn a_full_connection_table_fails_closed() {
    if !kernel_available("a_full_connection_table_fails_closed") {
        return;
    }
    let fx = Fixture::with_capacity(false, Some(1));
    let work = fx.work.to_str().expect("utf-8");
    let mut holder =
        Probe::spawn(&["--cgroup", work, "--hold", &fx.protected_v4.to_string()]).expect("probe");
    assert_eq!(holder.report().expect("report")["ok"], true);
    // The table is full: the next connection is established but has no record, so the sidecar
    // cannot attribute it and refuses it. Nothing is let through to the destination.
    let second = Probe::run(&[
        "--cgroup",
        work,
        "--send",
        "x",
        &fx.protected_v4.to_string(),
    ])
    .expect("probe");
    assert_eq!(second["ok"], true);
    assert_eq!(sidecar_answer(&second)["found"], false);
    assert_eq!(fx.kernel.stats().expect("stats").conns_full, 1);
}

#[test]
fn tears_down_connections_opened_before_the_agent() {
    if !kernel_available("tears_down_connections_opened_before_the_agent") {
        return;
    }
    let cgroup = TestCgroup::new().expect("cgroup");
    let work = cgroup.child("work").expect("work");
    let destination = echo_server(Ipv4Addr::new(127, 0, 0, 5).into());
    let mut probe = Probe::spawn(&[
        "--cgroup",
        work.to_str().expect("utf-8"),
        "--hold",
        &destination.to_string(),
    ])
    .expect("probe");
    assert_eq!(probe.report().expect("report")["ok"], true);
    // A connection of the agent itself (mark + cgroup) survives; this test process plays the agent.
    let own_cgroup = fhirwall::kernel::own_cgroup_path().expect("own cgroup");
    let root = fhirwall::kernel::CgroupRoot::discover().expect("root");
    let own_id = fhirwall::kernel::cgroup_id(&root.dir(&own_cgroup)).expect("own id");
    let agent_socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    agent_socket.set_mark(MARK).expect("mark");
    agent_socket
        .connect(&destination.into())
        .expect("agent connect");
    let destroyed =
        destroy_connections_to(&BTreeSet::from([destination]), MARK, own_id).expect("destroy");
    assert_eq!(destroyed, 1);
    probe.go().expect("go");
    let after = probe.report().expect("after");
    assert!(
        after["after"]
            .as_str()
            .is_some_and(|a| a.starts_with("error:")),
        "{after}"
    );
    let mut agent_stream: TcpStream = agent_socket.into();
    agent_stream
        .write_all(b"still here")
        .expect("the agent's connection must survive");
}

#[test]
fn a_failed_connect_leaves_no_record() {
    if !kernel_available("a_failed_connect_leaves_no_record") {
        return;
    }
    let cgroup = TestCgroup::new().expect("cgroup");
    let work = cgroup.child("work").expect("work");
    let agent = cgroup.child("agent").expect("agent");
    let pins = PinDir::new();
    let protected = echo_server(Ipv4Addr::new(127, 0, 0, 6).into());
    // Nothing listens on the sidecar port: every redirected connect is refused by the stack.
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut kernel = Kernel::load(KernelSettings {
        pin_dir: pins.path.clone(),
        attach_cgroup: cgroup.dir.clone(),
        agent_cgroup: TestCgroup::id(&agent),
        agent_mark: MARK,
        sidecar_v4: Ipv4Addr::LOCALHOST,
        sidecar_v6: Ipv6Addr::LOCALHOST,
        sidecar_port: closed_port,
        kernel_enforcement: false,
        heartbeat_timeout: Duration::from_secs(30),
        conns_capacity: None,
        lsm_layer: false,
    })
    .expect("load");
    kernel
        .set_protected(&BTreeSet::from([protected]))
        .expect("protected");
    kernel.activate().expect("attach");
    for _ in 0..3 {
        let report = Fixture::probe(&work, &[], protected);
        assert_eq!(report["ok"], false, "{report}");
        assert_eq!(
            report["errno"], 111,
            "ECONNREFUSED from the sidecar port: {report}"
        );
    }
    let empty = eventually(Duration::from_secs(5), || {
        (kernel.sockets_len() == 0).then_some(())
    });
    assert!(
        empty.is_some(),
        "{} socket records left behind",
        kernel.sockets_len()
    );
    assert_eq!(kernel.stats().expect("stats").redirected, 3);
}

#[test]
fn a_process_verdict_leaves_with_its_process() {
    if !kernel_available("a_process_verdict_leaves_with_its_process") {
        return;
    }
    let mut fx = Fixture::new(false);
    let work = fx.work.to_str().expect("utf-8").to_owned();
    let dst = fx.protected_v4.to_string();
    let spawn = || Probe::spawn(&["--cgroup", &work, "--wait", "--send", "x", &dst]);
    let leaving = spawn().expect("probe");
    let staying = spawn().expect("probe");
    for pid in [leaving.pid, staying.pid] {
        fx.kernel
            .set_workload(WorkloadEntry::Process(pid), Some(Verdict::Deny))
            .expect("deny");
        assert_eq!(
            fx.kernel.workload_in_kernel(WorkloadEntry::Process(pid)),
            Some(fhirwall_common::VERDICT_DENY)
        );
    }
    let gone = leaving.pid;
    // Killed and reaped: from now on the pid may be handed to another process.
    drop(leaving);
    assert_eq!(
        fx.kernel.workload_in_kernel(WorkloadEntry::Process(gone)),
        None,
        "a later process with this pid must not inherit the verdict"
    );
    assert_eq!(
        fx.kernel
            .workload_in_kernel(WorkloadEntry::Process(staying.pid)),
        Some(fhirwall_common::VERDICT_DENY),
        "only the exiting process's entry goes"
    );
}

#[test]
fn a_late_verdict_for_an_earlier_image_does_not_replace_a_newer_exec() {
    if !kernel_available("a_late_verdict_for_an_earlier_image_does_not_replace_a_newer_exec") {
        return;
    }
    // A workload is started as `sh` -> `setpriv` -> the program, one exec after the other. The
    // agent classifies each exec in turn; classifying the early images can finish after the
    // program's own exec left its pending entry. That late verdict ("unregistered: sh") must
    // not replace the entry, or the registered program is refused until its own exec event is
    // handled (seen as a flaky `cargo xtask demo --kernel-enforcement`).
    let mut fx = Fixture::new(true);
    let work = fx.work.to_str().expect("utf-8").to_owned();
    let dst = fx.protected_v4.to_string();
    let mut probe =
        Probe::spawn(&["--cgroup", &work, "--wait", "--send", "x", &dst]).expect("probe");
    let entry = WorkloadEntry::Process(probe.pid);
    let token = fx
        .events()
        .into_iter()
        .filter_map(|e| match e {
            KernelEvent::Exec { caller } if caller.tgid == probe.pid => Some(caller.exec_token),
            _ => None,
        })
        .next_back()
        .expect("the probe's exec event");
    let pending = Some(fhirwall_common::VERDICT_PENDING);
    assert_eq!(fx.kernel.workload_in_kernel(entry), pending);
    // A verdict for an earlier image (another token) is not applied, and neither is the
    // periodic sweep's, which only knows the process as it was before this exec.
    let stale = fx
        .kernel
        .set_process_after_exec(probe.pid, token.wrapping_add(1), None)
        .expect("set");
    assert!(!stale);
    fx.kernel
        .set_workloads(&BTreeMap::from([(entry, Verdict::Deny)]))
        .expect("sweep");
    assert_eq!(fx.kernel.workload_in_kernel(entry), pending);
    // The verdict for this exec is: unregistered, so refused in the kernel.
    let applied = fx
        .kernel
        .set_process_after_exec(probe.pid, token, None)
        .expect("set");
    assert!(applied);
    assert_eq!(fx.kernel.workload_in_kernel(entry), None);
    probe.go().expect("go");
    let report = probe.report().expect("report");
    assert_eq!(report["errno"], EPERM, "{report}");
}

/// The pinned links of the programs whose names start with `prefix` (e.g. `fw_connect4-`).
fn pinned_links(kernel: &Kernel, prefix: &str) -> Vec<PathBuf> {
    let dir = kernel
        .settings()
        .pin_dir
        .join(format!("v{}/links", fhirwall_common::LAYOUT_VERSION));
    std::fs::read_dir(dir)
        .expect("links")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect()
}

#[test]
fn a_detached_redirect_is_found_and_attached_again() {
    if !kernel_available("a_detached_redirect_is_found_and_attached_again") {
        return;
    }
    let mut fx = Fixture::new(false);
    let layers = fx.kernel.layers().clone();
    assert!(layers.redirect.is_active(), "{layers:?}");
    assert!(
        matches!(&layers.lsm, LayerState::Missing { reason } if reason.contains("lsm_layer: false")),
        "{layers:?}"
    );
    // Someone detaches the connect programs (the pins stay, as after `bpftool link detach`).
    detach_connect_links(&fx.kernel);
    let mut bypass = Probe::spawn(&[
        "--cgroup",
        fx.work.to_str().expect("utf-8"),
        "--hold",
        &fx.protected_v4.to_string(),
    ])
    .expect("probe");
    let connected = bypass.report().expect("report");
    assert_eq!(
        connected["peer"],
        fx.protected_v4.to_string(),
        "{connected}"
    );

    // The agent's check at its next heartbeat finds them gone and attaches them again.
    let layers = fx.kernel.verify_layers().expect("verify").clone();
    assert!(
        matches!(&layers.redirect, LayerState::Missing { reason } if reason.contains("no longer attached")),
        "{layers:?}"
    );
    let repaired = fx.kernel.repair_redirect().expect("repair");
    assert_eq!(repaired, ["fw_connect4", "fw_connect6"]);
    assert!(fx.kernel.layers().redirect.is_active());
    assert!(
        fx.kernel
            .repair_redirect()
            .expect("nothing to repair")
            .is_empty()
    );
    for dst in [fx.protected_v4, fx.protected_v6] {
        assert_eq!(
            sidecar_answer(&Fixture::probe(&fx.work, &[], dst))["found"],
            true
        );
    }
    // ... and resets what went around it meanwhile.
    let destroyed = destroy_connections_to(
        &BTreeSet::from([fx.protected_v4]),
        MARK,
        TestCgroup::id(&fx.agent),
    )
    .expect("destroy");
    assert_eq!(destroyed, 1);
    bypass.go().expect("go");
    let after = bypass.report().expect("after");
    assert!(
        after["after"]
            .as_str()
            .is_some_and(|a| a.starts_with("error:")),
        "{after}"
    );
}

#[test]
fn the_lsm_layer_refuses_what_the_redirect_misses_or_says_why_it_cannot() {
    if !kernel_available("the_lsm_layer_refuses_what_the_redirect_misses_or_says_why_it_cannot") {
        return;
    }
    let mut fx = Fixture::with_lsm();
    let layers = fx.kernel.layers().clone();
    assert!(layers.redirect.is_active(), "{layers:?}");
    if let LayerState::Missing { reason } = &layers.lsm {
        // Kernels that refuse every BTF trampoline program (LSM, fentry) answer the load with
        // EPERM before verifying it. That is the only acceptable reason here: a verifier
        // rejection of our programs (EACCES/EINVAL with a log) fails the test.
        assert!(
            reason.contains("loading fw_lsm_connect failed")
                && reason.contains("Operation not permitted")
                && reason.ends_with("Verifier output: : Operation not permitted (os error 1)"),
            "{reason}"
        );
        eprintln!(
            "NOT EXERCISED: the LSM layer's enforcement; this kernel refuses BPF LSM programs: {reason}"
        );
        return;
    }
    let through = Fixture::probe(&fx.work, &[], fx.protected_v4);
    assert_eq!(sidecar_answer(&through)["found"], true);
    assert_eq!(through["send_errno"], Value::Null, "{through}");
    detach_connect_links(&fx.kernel);
    // Before the agent's next check the connect goes straight out, but no byte passes.
    let direct = Fixture::probe(&fx.work, &[], fx.protected_v4);
    assert_eq!(direct["peer"], fx.protected_v4.to_string(), "{direct}");
    assert_eq!(direct["send_errno"], EPERM, "{direct}");
    assert_eq!(direct["reply"], "", "{direct}");
    // Once the agent has seen the redirect gone, the LSM refuses the connect itself.
    fx.kernel.verify_layers().expect("verify");
    for dst in [fx.protected_v4, fx.protected_v6] {
        assert_eq!(Fixture::probe(&fx.work, &[], dst)["errno"], EPERM, "{dst}");
    }
    let stats = fx.kernel.stats().expect("stats");
    assert_eq!(
        (stats.lsm_refused_connect, stats.lsm_refused_data >= 1),
        (2, true),
        "{stats:?}"
    );
    let events = fx.events();
    assert!(
        events.iter().any(|e| matches!(
            e,
            KernelEvent::Refused {
                refusal: Refusal::NoRedirect,
                ..
            }
        )),
        "{events:?}"
    );
    // Outside the test cgroup (this test process) nothing changes: the hooks are scoped.
    let mut outside = TcpStream::connect(fx.protected_v4).expect("connect from outside the scope");
    outside
        .write_all(b"x")
        .expect("send from outside the scope");
}

/// Detaches the redirect's connect programs behind the agent's back.
fn detach_connect_links(kernel: &Kernel) {
    for prefix in ["fw_connect4-", "fw_connect6-"] {
        let links = pinned_links(kernel, prefix);
        assert_eq!(links.len(), 1, "{prefix}: {links:?}");
        fhirwall_tests::detach_link(&links[0]).expect("detach");
    }
}

#[test]
fn every_port_of_a_protected_address_can_be_closed() {
    if !kernel_available("every_port_of_a_protected_address_can_be_closed") {
        return;
    }
    let mut fx = Fixture::new(false);
    let other_port = echo_server(fx.protected_v4.ip());
    let before = Fixture::probe(&fx.work, &[], other_port);
    assert_eq!(before["reply"], "direct", "{before}");
    let any_port = SocketAddr::new(fx.protected_v4.ip(), 0);
    fx.kernel
        .set_protected(&BTreeSet::from([
            fx.protected_v4,
            fx.protected_v6,
            any_port,
        ]))
        .expect("protected");
    let refused = Fixture::probe(&fx.work, &[], other_port);
    assert_eq!(refused["errno"], EPERM, "{refused}");
    // The FHIR port itself is still redirected.
    assert_eq!(
        sidecar_answer(&Fixture::probe(&fx.work, &[], fx.protected_v4))["found"],
        true
    );
    assert_eq!(fx.kernel.stats().expect("stats").refused_other_port, 1);
    fx.kernel
        .set_protected(&BTreeSet::from([fx.protected_v4, fx.protected_v6]))
        .expect("protected");
    let after = Fixture::probe(&fx.work, &[], other_port);
    assert_eq!(after["reply"], "direct", "{after}");
}
