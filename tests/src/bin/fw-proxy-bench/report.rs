//! Samples per subject, their medians, and the one table the benchmark prints.

use std::collections::BTreeMap;

use serde_json::Value;

use super::disk::{Commits, FsyncProbe};

/// What wrk printed.
#[derive(Clone, Copy, Debug)]
pub struct Wrk {
    pub rps: f64,
    pub requests: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: u64,
}

impl Wrk {
    /// Reads `Requests/sec`, the request count, the 50% and 99% lines of `--latency`, and any
    /// error lines.
    pub fn parse(text: &str) -> Option<Self> {
        let mut wrk = Self {
            rps: 0.0,
            requests: 0.0,
            p50_us: 0.0,
            p99_us: 0.0,
            errors: 0,
        };
        for line in text.lines().map(str::trim) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                ["Requests/sec:", n] => wrk.rps = n.parse().ok()?,
                ["50%", t] => wrk.p50_us = micros(t)?,
                ["99%", t] => wrk.p99_us = micros(t)?,
                [n, "requests", "in", ..] => wrk.requests = n.parse().ok()?,
                ["Non-2xx", "or", "3xx", "responses:", n] => wrk.errors += n.parse::<u64>().ok()?,
                ["Socket", "errors:", rest @ ..] => {
                    wrk.errors += rest
                        .iter()
                        .filter_map(|f| f.trim_end_matches(',').parse::<u64>().ok())
                        .sum::<u64>();
                }
                _ => {}
            }
        }
        (wrk.rps > 0.0).then_some(wrk)
    }
}

/// `612.00us`, `1.23ms`, `2.00s` in microseconds.
fn micros(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    Some(number.parse::<f64>().ok()? * scale)
}

/// Per thread name: (nanoseconds on a CPU, nanoseconds runnable but waiting for a CPU).
pub type ThreadTimes = BTreeMap<String, (u64, u64)>;

/// Per thread name: microseconds per request on a CPU and waiting for one, between two readings.
#[expect(
    clippy::cast_precision_loss,
    reason = "nanosecond totals of a run are far below 2^52"
)]
pub fn per_request(
    before: &ThreadTimes,
    after: &ThreadTimes,
    requests: f64,
) -> BTreeMap<String, (f64, f64)> {
    after
        .iter()
        .map(|(name, (on, wait))| {
            let (on0, wait0) = before.get(name).copied().unwrap_or_default();
            let us = |now: u64, then: u64| now.saturating_sub(then) as f64 / 1000.0 / requests;
            (name.clone(), (us(*on, on0), us(*wait, wait0)))
        })
        .filter(|(_, (on, wait))| on + wait >= 0.5)
        .collect()
}

/// One saturation run.
#[derive(Clone, Debug)]
pub struct Saturation {
    pub wrk: Wrk,
    /// CPU time of the subject's processes per request, in microseconds.
    pub cpu_us_per_request: f64,
    /// Per thread name, microseconds per request on a CPU and waiting for one.
    pub threads: BTreeMap<String, (f64, f64)>,
}

impl Saturation {
    pub fn new(wrk: Wrk, ticks: f64, threads: BTreeMap<String, (f64, f64)>) -> Self {
        // Clock ticks are 1/100 s (USER_HZ) on Linux.
        let cpu_us = ticks * 10_000.0;
        Self {
            wrk,
            cpu_us_per_request: if wrk.requests > 0.0 {
                cpu_us / wrk.requests
            } else {
                0.0
            },
            threads,
        }
    }
}

/// One fixed-rate run.
#[derive(Clone, Debug)]
pub struct Half {
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub errors: u64,
    /// Per thread name, microseconds per request on a CPU and waiting for one.
    pub threads: BTreeMap<String, (f64, f64)>,
}

impl Half {
    pub fn from_json(v: &Value) -> Option<Self> {
        Some(Self {
            rps: v["rps"].as_f64()?,
            p50_us: v["p50_us"].as_f64()?,
            p99_us: v["p99_us"].as_f64()?,
            p999_us: v["p999_us"].as_f64()?,
            errors: v["errors"].as_u64()?,
            threads: BTreeMap::new(),
        })
    }
}

/// Idle connections held open.
#[derive(Clone, Copy, Debug)]
pub struct Idle {
    pub connections: usize,
    pub before_kib: u64,
    pub after_kib: u64,
}

impl Idle {
    #[expect(clippy::cast_precision_loss, reason = "KiB counts fit f64 exactly")]
    fn per_connection_kib(&self) -> f64 {
        self.after_kib.saturating_sub(self.before_kib) as f64 / self.connections as f64
    }
}

/// Every sample, by subject label, in the order subjects were first seen.
pub struct Report {
    seconds: u64,
    rounds: usize,
    connections: usize,
    /// The fixed rate of the half-load runs.
    pub rate: f64,
    order: Vec<String>,
    saturation: BTreeMap<String, Vec<Saturation>>,
    half: BTreeMap<String, Vec<Half>>,
    idle: BTreeMap<String, Idle>,
    /// The idle disk's fsync latency, under the audit store.
    pub fsync: Option<FsyncProbe>,
    /// The disk-backed sidecar's audit commits over the whole run.
    pub commits: Option<Commits>,
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

const DIRECT: &str = "direct to the upstream";
const SIDECAR: &str = "fhirwall sidecar";

impl Report {
    pub fn new(seconds: u64, rounds: usize, connections: usize) -> Self {
        Self {
            seconds,
            rounds,
            connections,
            rate: 0.0,
            order: Vec::new(),
            saturation: BTreeMap::new(),
            half: BTreeMap::new(),
            idle: BTreeMap::new(),
            fsync: None,
            commits: None,
        }
    }

    fn note(&mut self, label: &str) {
        if !self.order.iter().any(|l| l == label) {
            self.order.push(label.to_owned());
        }
    }

    pub fn saturation(&mut self, label: &str, sample: Saturation) {
        self.note(label);
        self.saturation
            .entry(label.to_owned())
            .or_default()
            .push(sample);
    }

    pub fn half(&mut self, label: &str, sample: Half) {
        self.note(label);
        self.half.entry(label.to_owned()).or_default().push(sample);
    }

    pub fn idle(&mut self, label: &str, idle: Idle) {
        self.note(label);
        self.idle.insert(label.to_owned(), idle);
    }

    fn sat(&self, label: &str, f: impl Fn(&Saturation) -> f64) -> f64 {
        median(
            self.saturation
                .get(label)
                .map(|s| s.iter().map(&f).collect())
                .unwrap_or_default(),
        )
    }

    fn half_of(&self, label: &str, f: impl Fn(&Half) -> f64) -> f64 {
        median(
            self.half
                .get(label)
                .map(|s| s.iter().map(&f).collect())
                .unwrap_or_default(),
        )
    }

    /// Median saturation req/s of `label`.
    pub fn median_rps(&self, label: &str) -> f64 {
        self.sat(label, |s| s.wrk.rps)
    }

    pub fn print(&self) {
        println!(
            "\nfhirwall proxy benchmark: GET /Patient/1 (small FHIR JSON), TLS in and out, {} \
             keep-alive connections, {} rounds x {} s, medians",
            self.connections, self.rounds, self.seconds
        );
        self.print_saturation();
        self.print_half();
        self.print_idle();
        self.print_threads();
        self.print_disk();
        self.print_targets();
    }

    fn print_saturation(&self) {
        println!(
            "\n1. saturation (wrk -t1 -c{}, closed loop)",
            self.connections
        );
        println!(
            "  {:<36} {:>9} {:>9} {:>9} {:>11} {:>8} {:>8} {:>8}",
            "subject", "req/s", "p50 us", "p99 us", "CPU us/req", "/direct", "/envoy", "/nginx"
        );
        let envoy = self.label_starting("Envoy");
        let nginx = self.label_starting("nginx");
        for label in self
            .order
            .iter()
            .filter(|l| self.saturation.contains_key(*l))
        {
            let rps = self.median_rps(label);
            let ratio =
                |other: Option<&String>| other.map_or(f64::NAN, |o| rps / self.median_rps(o));
            println!(
                "  {label:<36} {rps:>9.0} {:>9.0} {:>9.0} {:>11.1} {:>8.2} {:>8.2} {:>8.2}",
                self.sat(label, |s| s.wrk.p50_us),
                self.sat(label, |s| s.wrk.p99_us),
                self.sat(label, |s| s.cpu_us_per_request),
                ratio(Some(&DIRECT.to_owned())),
                ratio(envoy),
                ratio(nginx),
            );
        }
        println!(
            "  (CPU us/req: the subject's own processes; for direct, the upstream's. wrk's \
             percentiles under saturation suffer coordinated omission: orientation only.)"
        );
    }

    fn print_half(&self) {
        println!(
            "\n2. half load: {:.0} req/s fixed rate (half the sidecar's saturation), latency from \
             the scheduled send",
            self.rate
        );
        println!(
            "  {:<36} {:>9} {:>9} {:>9} {:>10} {:>15} {:>7}",
            "subject", "req/s", "p50 us", "p99 us", "p99.9 us", "added p99 us", "errors"
        );
        let direct_p99 = self.half_of(DIRECT, |h| h.p99_us);
        for label in self.order.iter().filter(|l| self.half.contains_key(*l)) {
            let p99 = self.half_of(label, |h| h.p99_us);
            let errors: u64 = self.half[label].iter().map(|h| h.errors).sum();
            println!(
                "  {label:<36} {:>9.0} {:>9.0} {p99:>9.0} {:>10.0} {:>15.0} {errors:>7}",
                self.half_of(label, |h| h.rps),
                self.half_of(label, |h| h.p50_us),
                self.half_of(label, |h| h.p999_us),
                p99 - direct_p99,
            );
        }
    }

    fn print_idle(&self) {
        println!("\n3. idle TLS connections (one request each, then idle)");
        println!(
            "  {:<36} {:>12} {:>12} {:>14}",
            "subject", "RSS before", "RSS after", "KiB per conn"
        );
        for label in self.order.iter().filter(|l| self.idle.contains_key(*l)) {
            let idle = self.idle[label];
            println!(
                "  {label:<36} {:>9} KiB {:>9} KiB {:>14.1}",
                idle.before_kib,
                idle.after_kib,
                idle.per_connection_kib()
            );
        }
    }

    /// Where the sidecars' time goes, per thread: on a CPU, and runnable but waiting for one
    /// (the machine's cores are shared with the client and the upstream).
    fn print_threads(&self) {
        println!(
            "\n4. the sidecar's threads, us per request: on a CPU / waiting for a CPU (schedstat)"
        );
        for label in self.order.iter().filter(|l| l.starts_with("fhirwall")) {
            let samples = [
                (
                    "saturation",
                    self.saturation
                        .get(label)
                        .map(|s| s.iter().map(|x| &x.threads).collect::<Vec<_>>()),
                ),
                (
                    "half load",
                    self.half
                        .get(label)
                        .map(|s| s.iter().map(|x| &x.threads).collect()),
                ),
            ];
            for (phase, runs) in samples {
                let Some(runs) = runs else { continue };
                let names: std::collections::BTreeSet<&String> =
                    runs.iter().flat_map(|r| r.keys()).collect();
                let cells: Vec<String> = names
                    .iter()
                    .map(|name| {
                        let on = median(
                            runs.iter()
                                .map(|r| r.get(*name).map_or(0.0, |t| t.0))
                                .collect(),
                        );
                        let wait = median(
                            runs.iter()
                                .map(|r| r.get(*name).map_or(0.0, |t| t.1))
                                .collect(),
                        );
                        format!("{name} {on:.1}/{wait:.1}")
                    })
                    .collect();
                println!("  {label:<36} {phase:<11} {}", cells.join(", "));
            }
        }
    }

    fn print_targets(&self) {
        let sidecar = self.median_rps(SIDECAR);
        let envoy = self.label_starting("Envoy").map(|l| self.median_rps(l));
        let nginx_label = self.label_starting("nginx").cloned();
        let nginx = nginx_label.as_deref().map(|l| self.median_rps(l));
        let direct_p99 = self.half_of(DIRECT, |h| h.p99_us);
        let added = self.half_of(SIDECAR, |h| h.p99_us) - direct_p99;
        let nginx_added = nginx_label
            .as_deref()
            .map(|l| self.half_of(l, |h| h.p99_us) - direct_p99);
        let fsync_p99 = self.fsync.as_ref().map(|p| p.p99_us);
        let idle = self.idle.get(SIDECAR).map(Idle::per_connection_kib);
        let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
        let ratio = |of: Option<f64>| of.map_or(f64::NAN, |o| sidecar / o);
        println!("\nTargets (sidecar, audit trail on disk, durable before release):");
        println!(
            "  req/s at least 1.5x Envoy's and 0.9x nginx's: {sidecar:.0} = {:.2}x Envoy, {:.2}x nginx: {}",
            ratio(envoy),
            ratio(nginx),
            verdict(ratio(envoy) >= 1.5 && ratio(nginx) >= 0.9)
        );
        let budget = nginx_added.unwrap_or(f64::NAN) + fsync_p99.unwrap_or(f64::NAN);
        println!(
            "  added p99 at half load at most nginx's added p99 + the disk's fsync p99: {added:.0} us vs {:.0} + {:.0} = {budget:.0} us: {}",
            nginx_added.unwrap_or(f64::NAN),
            fsync_p99.unwrap_or(f64::NAN),
            verdict(added <= budget)
        );
        if let Some(background) = self.label_starting("fhirwall sidecar, audit fsync in background")
        {
            let rps = self.median_rps(background);
            let added_bg = self.half_of(background, |h| h.p99_us) - direct_p99;
            println!(
                "  background durability: req/s at least nginx's: {rps:.0} = {:.2}x: {}; added p99 at most nginx's: {added_bg:.0} vs {:.0} us: {}",
                nginx.map_or(f64::NAN, |n| rps / n),
                verdict(nginx.is_some_and(|n| rps >= n)),
                nginx_added.unwrap_or(f64::NAN),
                verdict(nginx_added.is_some_and(|n| added_bg <= n))
            );
        }
        println!(
            "  idle TLS connection under 30 KB: {:.1} KiB: {}",
            idle.unwrap_or(f64::NAN),
            verdict(idle.is_some_and(|k| k * 1024.0 < 30_000.0))
        );
    }

    fn print_disk(&self) {
        println!("\n5. the audit store's disk");
        if let Some(p) = &self.fsync {
            println!(
                "  idle machine, 16 KiB write + fsync: {} samples, p50 {:.0} us, p99 {:.0} us, \
                 max {:.0} us, {} over 20 ms",
                p.count, p.p50_us, p.p99_us, p.max_us, p.over_20ms
            );
        }
        if let Some(c) = &self.commits {
            println!(
                "  the sidecar's audit commits (all runs): {:.0}, mean {:.0} us, over 10 ms: {:.0}, \
                 over 100 ms: {:.0}, over 250 ms: {:.0}",
                c.count,
                c.sum_seconds / c.count * 1e6,
                c.over(0.01),
                c.over(0.1),
                c.over(0.25)
            );
            println!(
                "  (every request waits for one commit before it is forwarded: a commit that stalls \
                 for 100 ms holds every request arriving meanwhile)"
            );
        }
    }

    fn label_starting(&self, prefix: &str) -> Option<&String> {
        self.order.iter().find(|l| l.starts_with(prefix))
    }
}
