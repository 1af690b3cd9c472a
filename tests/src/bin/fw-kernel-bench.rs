//! `cargo xtask bench kernel`: what the kernel programs cost, measured in one run.
//!
//! 1. The kernel's own accounting (`BPF_ENABLE_STATS`): average run time of `connect4` on the
//!    path every connect on the host takes (destination not protected) and on the redirect path,
//!    and of `sock_ops`. Goal: connect hook under 500 ns per call.
//! 2. What a process sees: median and p99 `connect()` latency from a workload in a test cgroup,
//!    without the programs (baseline), with them to an unprotected destination, and redirected.
//!
//! Programs attach to a dedicated test cgroup, never the machine's root. Needs root.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener},
    path::Path,
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};
use fhirwall::kernel::{Kernel, KernelSettings, ProgramStats};
use fhirwall_tests::{PinDir, Probe, TestCgroup};

const CONNECTS: usize = 20_000;

fn main() -> anyhow::Result<()> {
    let cgroup = TestCgroup::new()?;
    let work = cgroup.child("work")?;
    let agent = cgroup.child("agent")?;
    let pins = PinDir::new();
    let sidecar = sink(Ipv4Addr::LOCALHOST)?;
    let protected = sink(Ipv4Addr::new(127, 0, 0, 3))?;
    let unprotected = sink(Ipv4Addr::new(127, 0, 0, 4))?;

    let baseline = connects(&work, unprotected)?;
    let mut kernel = Kernel::load(KernelSettings {
        pin_dir: pins.path.clone(),
        attach_cgroup: cgroup.dir.clone(),
        agent_cgroup: TestCgroup::id(&agent),
        agent_mark: 0xf1f0,
        sidecar_v4: Ipv4Addr::LOCALHOST,
        sidecar_v6: Ipv6Addr::LOCALHOST,
        sidecar_port: sidecar.port(),
        kernel_enforcement: false,
        heartbeat_timeout: Duration::from_mins(10),
        conns_capacity: None,
        lsm_layer: false,
    })?;
    kernel.set_protected(&BTreeSet::from([protected]))?;
    // As the agent does at start: no workload entries, so the hook skips those lookups.
    kernel.set_workloads(&std::collections::BTreeMap::new())?;
    kernel.activate()?;
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).context("BPF_ENABLE_STATS")?;

    let before = kernel.program_stats()?;
    let passing = connects(&work, unprotected)?;
    let after_pass = kernel.program_stats()?;
    let redirected = connects(&work, protected)?;
    let after_redirect = kernel.program_stats()?;

    println!("kernel accounting (BPF_ENABLE_STATS), {CONNECTS} connects per row:");
    println!(
        "  {:<38} {:>10} {:>12}",
        "program / path", "calls", "ns per call"
    );
    row(
        "connect4, destination not protected",
        &before,
        &after_pass,
        "fw_connect4",
    );
    row(
        "connect4, redirected to the sidecar",
        &after_pass,
        &after_redirect,
        "fw_connect4",
    );
    row(
        "sock_ops, not protected",
        &before,
        &after_pass,
        "fw_sock_ops",
    );
    row(
        "sock_ops, redirected (re-key + close)",
        &after_pass,
        &after_redirect,
        "fw_sock_ops",
    );
    println!();
    println!("connect() latency seen by the workload (median / p99, ns):");
    let line = |label: &str, r: &Latency| {
        // Latencies are far below 2^52 ns: the conversion is exact.
        #[expect(
            clippy::cast_precision_loss,
            reason = "nanosecond latencies fit f64 exactly"
        )]
        let ratio = r.median as f64 / baseline.median.max(1) as f64;
        println!(
            "  {label:<38} {:>8} / {:>8}   x{ratio:.2} of baseline median",
            r.median, r.p99
        );
    };
    line("no programs (baseline)", &baseline);
    line("programs attached, not protected", &passing);
    line("programs attached, redirected", &redirected);
    Ok(())
}

fn row(label: &str, before: &[ProgramStats], after: &[ProgramStats], program: &str) {
    let find = |s: &[ProgramStats]| {
        s.iter()
            .find(|p| p.name == program)
            .map_or((0, 0), |p| (p.run_count, p.run_time.as_nanos()))
    };
    let (c0, t0) = find(before);
    let (c1, t1) = find(after);
    let calls = c1.saturating_sub(c0);
    let per_call = if calls == 0 {
        0
    } else {
        t1.saturating_sub(t0) / u128::from(calls)
    };
    println!("  {label:<38} {calls:>10} {per_call:>12}");
}

struct Latency {
    median: u64,
    p99: u64,
}

fn connects(cgroup: &Path, dst: SocketAddr) -> anyhow::Result<Latency> {
    let n = CONNECTS.to_string();
    let dst = dst.to_string();
    let report = Probe::run(&[
        "--cgroup",
        cgroup.to_str().context("utf-8")?,
        "--repeat",
        &n,
        &dst,
    ])?;
    if report["ok"] != true {
        bail!("probe failed: {report}");
    }
    Ok(Latency {
        median: report["median_ns"].as_u64().unwrap_or(0),
        p99: report["p99_ns"].as_u64().unwrap_or(0),
    })
}

/// A listener that accepts and drops connections, on its own thread.
fn sink(ip: Ipv4Addr) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(SocketAddr::new(ip.into(), 0))?;
    let addr = listener.local_addr()?;
    thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    Ok(addr)
}
