//! The attributor against a stand-in connection table, with this test process in the real
//! `/proc` and made-up processes in a procfs-shaped temporary directory.

use std::{
    fmt::Write as _,
    fs,
    net::SocketAddr,
    os::unix::fs::{MetadataExt as _, symlink},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use fhirwall_common::ConnRecord;
use ring::digest::{SHA256, digest};

use super::*;
use crate::attribution::parse_stat;

const PEER: &str = "127.0.0.1:40000";
const LOCAL: &str = "127.0.0.1:15001";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test literal")
}

/// A connection table that has `record` from the `from`-th lookup on.
struct FakeConns {
    record: Option<ConnRecord>,
    from: u32,
    calls: AtomicU32,
    fail: bool,
}

impl FakeConns {
    fn new(record: Option<ConnRecord>, from: u32) -> Self {
        Self {
            record,
            from,
            calls: AtomicU32::new(0),
            fail: false,
        }
    }
}

impl ConnLookup for Arc<FakeConns> {
    fn lookup(&self, _: SocketAddr, _: SocketAddr) -> Result<Option<ConnRecord>, KernelError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fail {
            return Err(KernelError::NoKernelObject);
        }
        Ok(self.record.filter(|_| call >= self.from))
    }
}

fn monotonic_now() -> u64 {
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("monotonic clock");
    u64::try_from(ts.tv_sec()).expect("positive") * 1_000_000_000
        + u64::try_from(ts.tv_nsec()).expect("positive")
}

fn comm16(s: &str) -> [u8; 16] {
    let mut comm = [0u8; 16];
    comm[..s.len()].copy_from_slice(s.as_bytes());
    comm
}

fn record(tgid: u32, uid: u32, cgroup_id: u64, comm: &str) -> ConnRecord {
    ConnRecord {
        cookie: 77,
        cgroup_id,
        time_ns: monotonic_now(),
        tgid,
        pid: tgid,
        uid,
        gid: uid,
        orig_addr: crate::kernel::to_addr(addr("10.0.0.9:443").ip()),
        orig_port: 443,
        family: 2,
        flags: 1,
        comm: comm16(comm),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    digest(&SHA256, bytes)
        .as_ref()
        .iter()
        .fold(String::new(), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

/// A procfs-shaped directory and a cgroup hierarchy, both made up.
struct FakeHost {
    proc: tempfile::TempDir,
    cgroups: tempfile::TempDir,
    bins: tempfile::TempDir,
}

impl FakeHost {
    fn new() -> Self {
        let host = Self {
            proc: tempfile::tempdir().expect("tempdir"),
            cgroups: tempfile::tempdir().expect("tempdir"),
            bins: tempfile::tempdir().expect("tempdir"),
        };
        for dir in ["system.slice/lab.service", "system.slice/billing.service"] {
            fs::create_dir_all(host.cgroups.path().join(dir)).expect("mkdir");
        }
        host
    }

    fn settings(&self) -> AttributionSettings {
        AttributionSettings {
            proc_root: self.proc.path().to_owned(),
            cgroup_mount: self.cgroups.path().to_owned(),
            ..AttributionSettings::default()
        }
    }

    fn cgroup_id(&self, path: &str) -> u64 {
        fs::metadata(self.cgroups.path().join(path.trim_start_matches('/')))
            .expect("cgroup dir")
            .ino()
    }

    fn binary(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.bins.path().join(name);
        fs::write(&path, content).expect("write binary");
        path
    }

    /// Writes (or rewrites) process `tgid` as procfs would show it.
    fn process(&self, tgid: u32, comm: &str, start: u64, exe: &Path, cgroup: &str) {
        let dir = self.proc.path().join(tgid.to_string());
        let task = dir.join(format!("task/{tgid}"));
        fs::create_dir_all(&task).expect("mkdir");
        let stat_line = format!(
            "{tgid} ({comm}) S 1 {tgid} {tgid} 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 {start} 0 0\n"
        );
        fs::write(task.join("stat"), stat_line).expect("stat");
        fs::write(dir.join("status"), "Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n").expect("status");
        fs::write(dir.join("cmdline"), b"lab\0--patient=PHI-123\0").expect("cmdline");
        fs::write(dir.join("cgroup"), format!("0::{cgroup}\n")).expect("cgroup");
        let link = dir.join("exe");
        let _ = fs::remove_file(&link);
        symlink(exe, &link).expect("exe link");
    }
}

/// Start-time ticks this far after boot: comfortably before any connect made now.
const EARLY: u64 = 100;

fn boot_ticks_now() -> u64 {
    let ts = clock_gettime(ClockId::CLOCK_BOOTTIME).expect("boottime");
    u64::try_from(ts.tv_sec()).expect("positive") * 100
}

#[tokio::test]
async fn refuses_a_connection_without_a_kernel_record_after_bounded_retries() {
    let conns = Arc::new(FakeConns::new(None, 0));
    let attributor = Attributor::new(Arc::clone(&conns), AttributionSettings::default());
    let err = attributor
        .attribute(addr(PEER), addr(LOCAL))
        .await
        .expect_err("no record");
    assert!(
        matches!(err, AttributionError::NotRedirected { peer, local } if peer == addr(PEER) && local == addr(LOCAL)),
        "{err:?}"
    );
    assert_eq!(conns.calls.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn finds_a_record_that_appears_during_the_retries() {
    let own = record(std::process::id(), 0, 0, "test");
    let conns = Arc::new(FakeConns::new(Some(own), 3));
    let attributor = Attributor::new(Arc::clone(&conns), AttributionSettings::default());
    let attribution = attributor
        .attribute(addr(PEER), addr(LOCAL))
        .await
        .expect("attributed");
    assert_eq!(conns.calls.load(Ordering::SeqCst), 3);
    assert_eq!(attribution.destination, addr("10.0.0.9:443"));
    assert_eq!(attribution.cookie, 77);
    assert_eq!(attribution.workload.tgid, std::process::id());
}

#[tokio::test]
async fn kernel_errors_are_not_retried() {
    let conns = Arc::new(FakeConns {
        fail: true,
        ..FakeConns::new(None, 0)
    });
    let attributor = Attributor::new(Arc::clone(&conns), AttributionSettings::default());
    let err = attributor
        .attribute(addr(PEER), addr(LOCAL))
        .await
        .expect_err("kernel error");
    assert!(matches!(err, AttributionError::Kernel { .. }), "{err:?}");
    assert_eq!(conns.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn attributes_this_process_from_the_real_proc() {
    let tgid = std::process::id();
    let cgroup = fs::read_to_string("/proc/self/cgroup").expect("own cgroup");
    let cgroup = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("cgroup v2 line")
        .to_owned();
    let settings = AttributionSettings::default();
    let cgroup_id = fs::metadata(settings.cgroup_mount.join(cgroup.trim_start_matches('/')))
        .map_or(0, |m| m.ino());
    let attributor = Attributor::new(Arc::new(FakeConns::new(None, 0)), settings);
    let uid = nix::unistd::getuid().as_raw();
    let own = record(tgid, uid, cgroup_id, "attr-test");

    let workload = attributor.workload_of(&own).await.expect("attributed");
    let exe = std::env::current_exe().expect("current exe");
    let stat = parse_stat(&fs::read(format!("/proc/{tgid}/stat")).expect("stat")).expect("parse");
    assert!(!workload.partial);
    assert_eq!((workload.tgid, workload.pid), (tgid, tgid));
    assert_eq!(workload.start_time, stat.start_time);
    assert_eq!(workload.exe.as_ref(), Some(&exe));
    let expected = sha256_hex(&fs::read(&exe).expect("read own binary"));
    assert_eq!(workload.exe_sha256.as_deref(), Some(expected.as_str()));
    assert_eq!(workload.cmdline, std::env::args().collect::<Vec<_>>());
    assert_eq!(workload.comm, "attr-test");
    if cgroup_id != 0 {
        assert_eq!(workload.cgroup_path.as_deref(), Some(cgroup.as_str()));
    }
    let user = nix::unistd::User::from_uid(nix::unistd::getuid()).expect("nss");
    assert_eq!(workload.user, user.map(|u| u.name));

    let again = attributor.workload_of(&own).await.expect("attributed");
    assert!(Arc::ptr_eq(&workload, &again), "second connection: cached");
    assert_eq!(attributor.digests_computed(), 1);
    assert_eq!(attributor.cached_processes(), 1);
}

#[tokio::test]
async fn fits_a_cached_process_to_each_connection() {
    let tgid = std::process::id();
    let attributor = Attributor::new(
        Arc::new(FakeConns::new(None, 0)),
        AttributionSettings::default(),
    );
    let first = attributor
        .workload_of(&record(tgid, 0, 0, "main"))
        .await
        .expect("attributed");
    let mut other_thread = record(tgid, 65_534, 0, "pool-1-thread-3");
    other_thread.pid = tgid + 1;
    let second = attributor
        .workload_of(&other_thread)
        .await
        .expect("attributed");
    assert_eq!(first.user.as_deref(), Some("root"));
    assert_eq!((second.pid, second.uid), (tgid + 1, 65_534));
    assert_eq!(second.comm, "pool-1-thread-3");
    assert_ne!(second.user.as_deref(), Some("root"));
    assert_eq!(second.exe, first.exe);
    assert_eq!(second.exe_sha256, first.exe_sha256);
    assert_eq!(attributor.cached_processes(), 1);
    assert_eq!(attributor.digests_computed(), 1);
}

#[tokio::test]
async fn a_reused_pid_never_inherits_the_old_identity() {
    let host = FakeHost::new();
    let attributor = Attributor::new(Arc::new(FakeConns::new(None, 0)), host.settings());
    let lab = host.binary("lab", b"lab v1");
    let billing = host.binary("billing", b"billing v7");
    host.process(4242, "lab", EARLY, &lab, "/system.slice/lab.service");
    let lab_cgroup = host.cgroup_id("/system.slice/lab.service");
    let first = attributor
        .workload_of(&record(4242, 0, lab_cgroup, "lab"))
        .await
        .expect("attributed");
    assert_eq!(first.exe.as_deref(), Some(lab.as_path()));
    assert_eq!(first.exe_sha256, Some(sha256_hex(b"lab v1")));
    assert_eq!(first.systemd_unit.as_deref(), Some("lab.service"));
    assert_eq!(first.cmdline, ["lab", "--patient=PHI-123"]);

    // The process exits and pid 4242 comes round again, with the same comm.
    host.process(
        4242,
        "lab",
        EARLY + 1,
        &billing,
        "/system.slice/billing.service",
    );
    let billing_cgroup = host.cgroup_id("/system.slice/billing.service");
    let second = attributor
        .workload_of(&record(4242, 0, billing_cgroup, "lab"))
        .await
        .expect("attributed");
    assert_eq!(second.start_time, EARLY + 1);
    assert_eq!(second.exe.as_deref(), Some(billing.as_path()));
    assert_eq!(second.exe_sha256, Some(sha256_hex(b"billing v7")));
    assert_eq!(second.systemd_unit.as_deref(), Some("billing.service"));
    assert_eq!(
        attributor.cached_processes(),
        1,
        "the new process replaced the dead one"
    );
}

#[tokio::test]
async fn a_process_started_after_the_connect_is_not_the_caller() {
    let host = FakeHost::new();
    let attributor = Attributor::new(Arc::new(FakeConns::new(None, 0)), host.settings());
    let lab = host.binary("lab", b"lab v1");
    // Started ten seconds from now: the pid was reused after the connect.
    host.process(
        4242,
        "lab",
        boot_ticks_now() + 1000,
        &lab,
        "/system.slice/lab.service",
    );
    let cgroup = host.cgroup_id("/system.slice/billing.service");
    let workload = attributor
        .workload_of(&record(4242, 0, cgroup, "billing"))
        .await
        .expect("partial, not an error");
    assert!(workload.partial);
    assert_eq!((workload.start_time, workload.exe.as_ref()), (0, None));
    assert_eq!(workload.comm, "billing");
    assert_eq!(
        workload.cgroup_path.as_deref(),
        Some("/system.slice/billing.service")
    );
    assert_eq!(workload.systemd_unit.as_deref(), Some("billing.service"));
    assert!(workload.cmdline.is_empty());
    assert_eq!(attributor.cached_processes(), 0);
}

#[tokio::test]
async fn a_gone_process_gives_a_partial_workload_from_the_kernel_record() {
    let host = FakeHost::new();
    let attributor = Attributor::new(Arc::new(FakeConns::new(None, 0)), host.settings());
    let cgroup = host.cgroup_id("/system.slice/lab.service");
    let workload = attributor
        .workload_of(&record(31337, 0, cgroup, "lab"))
        .await
        .expect("partial, not an error");
    assert!(workload.partial);
    assert_eq!(
        (workload.tgid, workload.uid, workload.cgroup_id),
        (31337, 0, cgroup)
    );
    assert_eq!(workload.user.as_deref(), Some("root"));
    assert_eq!(workload.systemd_unit.as_deref(), Some("lab.service"));
    assert_eq!(workload.exe_sha256, None);
}

#[tokio::test]
async fn an_exec_replaces_the_cached_identity() {
    let host = FakeHost::new();
    let attributor = Attributor::new(Arc::new(FakeConns::new(None, 0)), host.settings());
    let wrapper = host.binary("wrapper", b"#!/bin/sh");
    let java = host.binary("java", b"java");
    let cgroup = "/system.slice/lab.service";
    host.process(500, "lab", EARLY, &wrapper, cgroup);
    let rec = record(500, 0, host.cgroup_id(cgroup), "lab");
    let before = attributor.workload_of(&rec).await.expect("attributed");
    assert_eq!(before.exe.as_deref(), Some(wrapper.as_path()));

    // exec keeps pid and start time. With a new comm the cache notices by itself ...
    host.process(500, "java", EARLY, &java, cgroup);
    let after = attributor.workload_of(&rec).await.expect("attributed");
    assert_eq!(after.exe.as_deref(), Some(java.as_path()));

    // ... with the same comm it takes the kernel's exec event: until that arrives the cached
    // identity stands (see `Attributor::on_exec`).
    host.process(500, "java", EARLY, &wrapper, cgroup);
    let stale = attributor.workload_of(&rec).await.expect("attributed");
    assert_eq!(stale.exe.as_deref(), Some(java.as_path()));
    let caller = crate::kernel::Caller::from_record(&rec);
    let exec = attributor
        .on_exec(&caller, Hashing::Compute)
        .await
        .expect("classified")
        .expect("alive");
    assert_eq!(exec.exe.as_deref(), Some(wrapper.as_path()));
    let next = attributor.workload_of(&rec).await.expect("attributed");
    assert_eq!(next.exe.as_deref(), Some(wrapper.as_path()));
}

#[tokio::test]
async fn scans_without_hashing_then_hashes_at_the_first_connection() {
    let tgid = std::process::id();
    let attributor = Attributor::new(
        Arc::new(FakeConns::new(None, 0)),
        AttributionSettings::default(),
    );
    let all = attributor
        .scan_processes(Hashing::Skip)
        .await
        .expect("scan");
    let own = all.iter().find(|w| w.tgid == tgid).expect("this process");
    assert_eq!(own.exe, Some(std::env::current_exe().expect("exe")));
    assert_eq!(own.exe_sha256, None);
    assert_eq!(attributor.digests_computed(), 0);
    if fs::read_to_string("/proc/2/stat").is_ok_and(|s| s.contains("(kthreadd)")) {
        assert!(
            all.iter().all(|w| w.tgid != 2),
            "kernel threads are left out"
        );
    }
    let attributed = attributor
        .workload_of(&record(tgid, 0, own.cgroup_id, "t"))
        .await
        .expect("attributed");
    assert!(attributed.exe_sha256.is_some());
}

#[tokio::test]
async fn sweeps_processes_that_are_gone() {
    let host = FakeHost::new();
    let attributor = Attributor::new(Arc::new(FakeConns::new(None, 0)), host.settings());
    let lab = host.binary("lab", b"lab");
    for tgid in [10, 11] {
        host.process(tgid, "lab", EARLY, &lab, "/system.slice/lab.service");
        attributor
            .classify(tgid, Hashing::Skip)
            .await
            .expect("classified")
            .expect("alive");
    }
    fs::remove_dir_all(host.proc.path().join("10")).expect("process 10 exits");
    let report = attributor.sweep().await.expect("sweep");
    assert_eq!(
        report,
        SweepReport {
            checked: 2,
            removed: 1
        }
    );
    assert_eq!(attributor.cached_processes(), 1);
}

#[tokio::test]
async fn a_cached_process_that_exits_is_noticed_through_its_pidfd() {
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    let attributor = Attributor::new(
        Arc::new(FakeConns::new(None, 0)),
        AttributionSettings::default(),
    );
    let rec = record(child.id(), 0, 0, "sleep");
    let alive = attributor.workload_of(&rec).await.expect("attributed");
    assert!(!alive.partial);
    assert_eq!(alive.comm, "sleep");
    assert!(alive.exe.as_ref().is_some_and(|e| e.ends_with("sleep")));
    assert_eq!(attributor.cached_processes(), 1);
    let again = attributor.workload_of(&rec).await.expect("attributed");
    assert!(Arc::ptr_eq(&alive, &again), "served from the cache");

    child.kill().expect("kill");
    child.wait().expect("reap");
    let gone = attributor.workload_of(&rec).await.expect("partial");
    assert!(gone.partial);
    assert_eq!(gone.exe, None);
    assert_eq!(
        attributor.cached_processes(),
        0,
        "the dead process left the cache"
    );
}

#[test]
fn futures_can_be_spawned_on_a_multi_threaded_runtime() {
    fn send<T: Send>(_: &T) {}
    let attributor = Attributor::new(
        Arc::new(FakeConns::new(None, 0)),
        AttributionSettings::default(),
    );
    let rec = record(1, 0, 0, "x");
    let caller = crate::kernel::Caller::from_record(&rec);
    send(&attributor);
    send(&attributor.attribute(addr(PEER), addr(LOCAL)));
    send(&attributor.workload_of(&rec));
    send(&attributor.on_exec(&caller, Hashing::Skip));
    send(&attributor.scan_processes(Hashing::Skip));
    send(&attributor.sweep());
}

#[tokio::test]
async fn a_failed_hash_is_tried_again_at_the_next_connection() {
    let host = FakeHost::new();
    let attributor = Attributor::new(Arc::new(FakeConns::new(None, 0)), host.settings());
    // A directory opens but cannot be read: hashing fails with EISDIR.
    let odd = host.bins.path().join("odd");
    fs::create_dir(&odd).expect("mkdir");
    host.process(600, "odd", EARLY, &odd, "/system.slice/lab.service");
    let rec = record(600, 0, host.cgroup_id("/system.slice/lab.service"), "odd");
    let first = attributor.workload_of(&rec).await.expect("attributed");
    assert_eq!(first.exe_sha256, None);
    assert!(!first.partial);
    let _ = attributor.workload_of(&rec).await.expect("attributed");
    assert_eq!(
        attributor.digests_computed(),
        2,
        "the failure was not cached"
    );

    fs::remove_dir(&odd).expect("rmdir");
    fs::write(&odd, b"odd v2").expect("now a file");
    let fixed = attributor.workload_of(&rec).await.expect("attributed");
    assert_eq!(fixed.exe_sha256, Some(sha256_hex(b"odd v2")));
    let _ = attributor.workload_of(&rec).await.expect("attributed");
    assert_eq!(attributor.digests_computed(), 3, "a digest is cached");
}

#[tokio::test]
async fn hashes_what_runs_even_after_its_file_was_replaced() {
    use std::os::unix::fs::PermissionsExt as _;

    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("lab-sender");
    fs::copy("/bin/sleep", &bin).expect("copy sleep");
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).expect("chmod");
    let running = fs::read(&bin).expect("read");
    let mut child = std::process::Command::new(&bin)
        .arg("30")
        .spawn()
        .expect("spawn");
    // An upgrade (or an attacker) puts other content at the path while the old image runs.
    let staged = dir.path().join("staged");
    fs::write(&staged, b"not what runs").expect("write");
    fs::rename(&staged, &bin).expect("replace");

    let attributor = Attributor::new(
        Arc::new(FakeConns::new(None, 0)),
        AttributionSettings::default(),
    );
    let workload = attributor
        .workload_of(&record(child.id(), 0, 0, "lab-sender"))
        .await
        .expect("attributed");
    let _ = child.kill();
    let _ = child.wait();
    assert!(workload.exe_deleted);
    assert_eq!(workload.exe.as_deref(), Some(bin.as_path()));
    assert_eq!(workload.exe_sha256, Some(sha256_hex(&running)));
    assert_ne!(workload.exe_sha256, Some(sha256_hex(b"not what runs")));
}
