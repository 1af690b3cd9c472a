//! Attribution at accept, cached path (target: under 5 us).
//!
//! - `attribute/cached`: everything but the kernel lookup, with a stand-in table that hands back a
//!   record of this process: cache hit, pidfd poll, start-time check. Runs anywhere.
//! - `attribute/cached_thread_pool`: the same with each connection from another thread (pid and
//!   comm differ), as a Java client's pool makes them: the cached workload is copied and fitted.
//! - `conn_table/lookup`: one lookup in the real kernel map (`bpf(BPF_MAP_LOOKUP_ELEM)`). Needs
//!   root and an agent built with its kernel programs (no AYA_BUILD_SKIP); skipped otherwise.
//!
//! The accept path costs about `conn_table/lookup` plus one of the `attribute/*`.

use std::{
    hint::black_box,
    net::SocketAddr,
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use criterion::{Criterion, criterion_group, criterion_main};
use fhirwall::{
    attribution::{AttributionSettings, Attributor, ConnLookup, parse_stat},
    kernel::{ConnTable, Kernel, KernelError, KernelSettings, to_addr, uninstall},
};
use fhirwall_common::ConnRecord;

struct Fixed(ConnRecord);

impl ConnLookup for Fixed {
    fn lookup(&self, _: SocketAddr, _: SocketAddr) -> Result<Option<ConnRecord>, KernelError> {
        Ok(Some(self.0))
    }
}

/// Alternates between two threads of this process.
struct Alternating(ConnRecord, ConnRecord, AtomicBool);

impl ConnLookup for Alternating {
    fn lookup(&self, _: SocketAddr, _: SocketAddr) -> Result<Option<ConnRecord>, KernelError> {
        let first = self.2.fetch_xor(true, Ordering::Relaxed);
        Ok(Some(if first { self.0 } else { self.1 }))
    }
}

fn own_record() -> ConnRecord {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    let now = u64::try_from(ts.tv_sec()).expect("positive") * 1_000_000_000
        + u64::try_from(ts.tv_nsec()).expect("positive");
    let mut comm = [0u8; 16];
    comm[..5].copy_from_slice(b"bench");
    ConnRecord {
        cookie: 1,
        cgroup_id: 0,
        time_ns: now,
        tgid: std::process::id(),
        pid: std::process::id(),
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        orig_addr: to_addr("10.0.0.9".parse().expect("literal")),
        orig_port: 443,
        family: 2,
        flags: 1,
        comm,
    }
}

fn cached(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let attributor = Attributor::new(Fixed(own_record()), AttributionSettings::default());
    let peer: SocketAddr = "127.0.0.1:40000".parse().expect("literal");
    let local: SocketAddr = "127.0.0.1:15001".parse().expect("literal");
    // Warm the cache (this hashes the bench binary once).
    rt.block_on(attributor.attribute(peer, local))
        .expect("attributed");
    c.bench_function("attribute/cached", |b| {
        b.iter(|| rt.block_on(attributor.attribute(black_box(peer), black_box(local))));
    });
    let mut other = own_record();
    other.pid += 1;
    other.comm[..5].copy_from_slice(b"pool2");
    let pool = Attributor::new(
        Alternating(own_record(), other, AtomicBool::new(false)),
        AttributionSettings::default(),
    );
    rt.block_on(pool.attribute(peer, local))
        .expect("attributed");
    c.bench_function("attribute/cached_thread_pool", |b| {
        b.iter(|| rt.block_on(pool.attribute(black_box(peer), black_box(local))));
    });
    let stat = std::fs::read(format!("/proc/{}/stat", std::process::id())).expect("stat");
    c.bench_function("parse_stat", |b| b.iter(|| parse_stat(black_box(&stat))));
}

/// Loads the kernel programs without attaching them, just for their connection table.
fn kernel_table() -> Option<(Kernel, PathBuf)> {
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/fhirwall-bench-{}", std::process::id()));
    let settings = KernelSettings {
        pin_dir: pin_dir.clone(),
        attach_cgroup: PathBuf::from("/nonexistent"),
        agent_cgroup: 0,
        agent_mark: 0,
        sidecar_v4: std::net::Ipv4Addr::LOCALHOST,
        sidecar_v6: std::net::Ipv6Addr::LOCALHOST,
        sidecar_port: 15001,
        kernel_enforcement: false,
        heartbeat_timeout: Duration::from_secs(30),
        conns_capacity: None,
        lsm_layer: false,
    };
    match Kernel::load(settings) {
        Ok(kernel) => Some((kernel, pin_dir)),
        Err(e) => {
            eprintln!("SKIPPED conn_table/lookup: {e}");
            let _ = uninstall(&pin_dir);
            None
        }
    }
}

fn conn_table(c: &mut Criterion) {
    let Some((kernel, pin_dir)) = kernel_table() else {
        return;
    };
    let table: ConnTable = kernel.conns();
    let peer: SocketAddr = "127.0.0.1:40000".parse().expect("literal");
    let local: SocketAddr = "127.0.0.1:15001".parse().expect("literal");
    c.bench_function("conn_table/lookup", |b| {
        b.iter(|| table.lookup(black_box(peer), black_box(local)));
    });
    drop(kernel);
    if let Err(e) = uninstall(&pin_dir) {
        eprintln!("cleaning {}: {e}", pin_dir.display());
    }
}

criterion_group!(benches, cached, conn_table);
criterion_main!(benches);
