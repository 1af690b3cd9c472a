//! Attribution with the real kernel programs: `fw-probe` processes in a test cgroup connect to a
//! protected destination, the kernel redirects them to a sidecar listener, and the attributor
//! turns each accepted connection into a workload that must match what the test finds out on its
//! own (`/proc`, `sha256sum`, the cgroup it created). Need root and BTF; skipped with a reason on
//! a laptop, failing in CI.

use std::{
    collections::BTreeSet,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Duration,
};

use fhirwall::{
    attribution::{AttributionError, AttributionSettings, Attributor, Hashing},
    kernel::{CgroupRoot, Kernel, KernelEvent, KernelSettings},
};
use fhirwall_tests::{PinDir, Probe, TestCgroup, eventually, kernel_available, target_binary};

/// Kernel programs on a test cgroup, a sidecar listener they redirect to, an attributor.
struct Fixture {
    kernel: Kernel,
    attributor: Attributor,
    sidecar: TcpListener,
    protected: SocketAddr,
    work: PathBuf,
    /// `work` as `/proc/<pid>/cgroup` shows it: relative to the cgroup2 mount.
    work_path: String,
    rt: tokio::runtime::Runtime,
    _pins: PinDir,
    _cgroup: TestCgroup,
}

impl Fixture {
    fn new() -> Self {
        let cgroup = TestCgroup::new().expect("test cgroup");
        let work = cgroup.child("work").expect("work cgroup");
        let agent = cgroup.child("agent").expect("agent cgroup");
        let root = CgroupRoot::discover().expect("cgroup2");
        let work_path = format!(
            "/{}",
            work.strip_prefix(&root.mount)
                .expect("inside the mount")
                .display()
        );
        let pins = PinDir::new();
        let sidecar = TcpListener::bind("127.0.0.1:0").expect("bind sidecar");
        sidecar.set_nonblocking(true).expect("nonblocking");
        let protected = echo_server();
        let settings = KernelSettings {
            pin_dir: pins.path.clone(),
            attach_cgroup: cgroup.dir.clone(),
            agent_cgroup: TestCgroup::id(&agent),
            agent_mark: 0xf1f0,
            sidecar_v4: Ipv4Addr::LOCALHOST,
            sidecar_v6: Ipv6Addr::LOCALHOST,
            sidecar_port: sidecar.local_addr().expect("bound").port(),
            kernel_enforcement: false,
            heartbeat_timeout: Duration::from_secs(30),
            conns_capacity: None,
            lsm_layer: false,
        };
        let mut kernel = Kernel::load(settings).expect("loading the kernel programs");
        kernel
            .set_protected(&BTreeSet::from([protected]))
            .expect("protected set");
        kernel.activate().expect("attaching");
        let attributor = Attributor::new(
            kernel.conns(),
            AttributionSettings {
                cgroup_mount: root.mount,
                ..AttributionSettings::default()
            },
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Self {
            kernel,
            attributor,
            sidecar,
            protected,
            work,
            work_path,
            rt,
            _pins: pins,
            _cgroup: cgroup,
        }
    }

    fn work_arg(&self) -> &str {
        self.work.to_str().expect("utf-8 path")
    }

    /// The next connection the sidecar accepts (the probe connects on its own schedule).
    fn accept(&self) -> TcpStream {
        let (stream, _) = eventually(Duration::from_secs(5), || self.sidecar.accept().ok())
            .expect("no connection reached the sidecar");
        stream.set_nonblocking(false).expect("blocking");
        stream
    }
}

/// The protected destination: answers `direct`, which a redirected probe must never see.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.3:0").expect("bind destination");
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

/// `/proc/<pid>/stat` field 22, read independently of the agent's parser.
fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("probe stat");
    let after_comm = &stat[stat.rfind(')').expect("comm") + 2..];
    after_comm
        .split(' ')
        .nth(22 - 3)
        .expect("field 22")
        .parse()
        .expect("number")
}

/// SHA-256 by coreutils, not by the code under test.
fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    assert!(out.status.success(), "sha256sum failed");
    String::from_utf8(out.stdout).expect("utf-8")[..64].to_owned()
}

#[test]
fn attributes_a_redirected_connection_to_the_probe_process() {
    if !kernel_available("attributes_a_redirected_connection_to_the_probe_process") {
        return;
    }
    let fx = Fixture::new();
    let dst = fx.protected.to_string();
    let mut probe = Probe::spawn(&["--cgroup", fx.work_arg(), "--wait", "--send", "hello", &dst])
        .expect("probe");
    probe.go().expect("go");
    let mut stream = fx.accept();
    let (peer, local) = (
        stream.peer_addr().expect("peer"),
        stream.local_addr().expect("local"),
    );
    let attribution = fx
        .rt
        .block_on(fx.attributor.attribute(peer, local))
        .expect("attributed");
    let mut request = Vec::new();
    stream.read_to_end(&mut request).expect("request");
    stream.write_all(b"sidecar").expect("reply");
    drop(stream);
    let report = probe.report().expect("probe report");
    assert_eq!(report["reply"], "sidecar", "{report}");
    assert_eq!(request, b"hello");

    let w = &attribution.workload;
    let exe = target_binary("fw-probe")
        .expect("fw-probe")
        .canonicalize()
        .expect("canonical");
    assert_eq!(attribution.destination, fx.protected);
    assert!(!w.partial, "{w:?}");
    assert_eq!((w.tgid, w.pid), (probe.pid, probe.pid));
    assert_eq!(w.start_time, start_time(probe.pid));
    assert_eq!(w.exe.as_deref(), Some(exe.as_path()));
    assert!(!w.exe_deleted);
    assert_eq!(w.exe_sha256.as_deref(), Some(sha256sum(&exe).as_str()));
    assert_eq!(w.comm, "fw-probe");
    assert_eq!((w.uid, w.gid), (0, 0));
    assert_eq!(w.user.as_deref(), Some("root"));
    assert_eq!(w.group.as_deref(), Some("root"));
    assert_eq!(w.cgroup_id, TestCgroup::id(&fx.work));
    assert_eq!(w.cgroup_path.as_deref(), Some(fx.work_path.as_str()));
    assert_eq!(
        (&w.container_id, &w.pod_uid, &w.systemd_unit),
        (&None, &None, &None)
    );
    assert!(w.cmdline.iter().any(|a| a == "--cgroup"), "{:?}", w.cmdline);
    assert!(w.cmdline.contains(&dst));
}

#[test]
fn a_probe_gone_before_attribution_gives_a_partial_workload() {
    if !kernel_available("a_probe_gone_before_attribution_gives_a_partial_workload") {
        return;
    }
    let fx = Fixture::new();
    let dst = fx.protected.to_string();
    let mut probe = Probe::spawn(&["--cgroup", fx.work_arg(), "--hold", &dst]).expect("probe");
    let connected = probe.report().expect("probe report");
    assert_eq!(connected["ok"], true, "{connected}");
    let stream = fx.accept();
    let (peer, local) = (
        stream.peer_addr().expect("peer"),
        stream.local_addr().expect("local"),
    );
    let conns = fx.kernel.conns();
    let record = eventually(Duration::from_secs(1), || {
        conns.lookup(peer, local).ok().flatten()
    })
    .expect("kernel record");
    let pid = probe.pid;
    drop(probe); // killed and reaped: only the kernel record remains

    let w = fx
        .rt
        .block_on(fx.attributor.workload_of(&record))
        .expect("a partial workload, not an error");
    assert!(w.partial, "{w:?}");
    assert_eq!((w.tgid, w.pid), (pid, pid));
    assert_eq!(
        (w.start_time, w.exe.as_ref(), w.exe_sha256.as_ref()),
        (0, None, None)
    );
    assert!(w.cmdline.is_empty());
    assert_eq!(w.comm, "fw-probe");
    assert_eq!(w.user.as_deref(), Some("root"));
    assert_eq!(w.cgroup_id, TestCgroup::id(&fx.work));
    assert_eq!(w.cgroup_path.as_deref(), Some(fx.work_path.as_str()));
    drop(stream);
}

#[test]
fn refuses_a_connection_the_kernel_did_not_redirect() {
    if !kernel_available("refuses_a_connection_the_kernel_did_not_redirect") {
        return;
    }
    let fx = Fixture::new();
    // This test process is outside the attached cgroup: its connect goes straight to the port.
    let client = TcpStream::connect(fx.sidecar.local_addr().expect("bound")).expect("connect");
    let stream = fx.accept();
    let (peer, local) = (
        stream.peer_addr().expect("peer"),
        stream.local_addr().expect("local"),
    );
    assert_eq!(peer, client.local_addr().expect("client"));
    let err = fx
        .rt
        .block_on(fx.attributor.attribute(peer, local))
        .expect_err("no kernel record");
    assert!(
        matches!(err, AttributionError::NotRedirected { peer: p, .. } if p == peer),
        "{err:?}"
    );
}

#[test]
fn classifies_a_process_from_its_exec_event() {
    if !kernel_available("classifies_a_process_from_its_exec_event") {
        return;
    }
    let mut fx = Fixture::new();
    let dst = fx.protected.to_string();
    let probe = Probe::spawn(&["--cgroup", fx.work_arg(), "--wait", &dst]).expect("probe");
    let _guard = fx.rt.enter();
    let mut reader = fx
        .kernel
        .take_events()
        .expect("events not taken")
        .expect("reader");
    let caller = eventually(Duration::from_secs(5), || {
        let mut events = Vec::new();
        reader.drain(&mut events);
        events.into_iter().find_map(|e| match e {
            KernelEvent::Exec { caller } if caller.tgid == probe.pid => Some(caller),
            _ => None,
        })
    })
    .expect("the probe's exec event");
    let w = fx
        .rt
        .block_on(fx.attributor.on_exec(&caller, Hashing::Compute))
        .expect("classified")
        .expect("the probe is alive");
    let exe = target_binary("fw-probe")
        .expect("fw-probe")
        .canonicalize()
        .expect("canonical");
    assert_eq!(w.tgid, probe.pid);
    assert_eq!(w.start_time, start_time(probe.pid));
    assert_eq!(w.exe.as_deref(), Some(exe.as_path()));
    assert_eq!(w.exe_sha256.as_deref(), Some(sha256sum(&exe).as_str()));
    assert_eq!(w.cgroup_path.as_deref(), Some(fx.work_path.as_str()));
    drop(probe);
}
