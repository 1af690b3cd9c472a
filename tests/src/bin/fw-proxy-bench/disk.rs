//! The disk under the audit store: what one durable write costs on an idle machine, and what
//! the sidecar's own group commits took under the benchmark's load (its
//! `fhirwall_audit_commit_seconds` histogram). Every request waits for a commit, so the
//! disk's fsync latency is a floor under the sidecar's added latency that no proxy without a
//! durable audit trail pays.

use std::{
    fs::OpenOptions,
    os::unix::fs::FileExt as _,
    path::Path,
    time::{Duration, Instant},
};

/// Writes of 16 KiB (a few WAL pages), each followed by fsync, for `duration`.
pub struct FsyncProbe {
    pub count: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub over_20ms: usize,
}

pub fn fsync_probe(dir: &Path, duration: Duration) -> std::io::Result<FsyncProbe> {
    let path = dir.join("fsync-probe");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    let block = vec![0x5a_u8; 16 * 1024];
    let mut times = Vec::new();
    let mut offset = 0;
    let end = Instant::now() + duration;
    while Instant::now() < end {
        file.write_all_at(&block, offset)?;
        // Like a WAL: appends, starting over at 64 MiB.
        offset = (offset + 16 * 1024) % (64 * 1024 * 1024);
        let start = Instant::now();
        file.sync_all()?;
        times.push(start.elapsed().as_secs_f64() * 1e6);
    }
    drop(file);
    std::fs::remove_file(&path)?;
    times.sort_by(f64::total_cmp);
    let at = |per_mille: usize| {
        times
            .get((times.len() * per_mille / 1000).min(times.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    Ok(FsyncProbe {
        count: times.len(),
        p50_us: at(500),
        p99_us: at(990),
        max_us: times.last().copied().unwrap_or(f64::NAN),
        over_20ms: times.iter().filter(|&&t| t > 20_000.0).count(),
    })
}

/// The sidecar's `fhirwall_audit_commit_seconds` histogram, from its metrics text.
#[derive(Debug, Default)]
pub struct Commits {
    pub count: f64,
    pub sum_seconds: f64,
    /// Cumulative counts by upper bound in seconds, as exposed.
    pub buckets: Vec<(f64, f64)>,
}

impl Commits {
    pub fn parse(metrics: &str) -> Option<Self> {
        let mut commits = Self::default();
        let name = "fhirwall_audit_commit_seconds";
        for line in metrics.lines() {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            let (key, value) = rest.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            if key == "_count" {
                commits.count = value;
            } else if key == "_sum" {
                commits.sum_seconds = value;
            } else if let Some(le) = key
                .strip_prefix("_bucket{le=\"")
                .and_then(|k| k.strip_suffix("\"}"))
            {
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                commits.buckets.push((bound, value));
            }
        }
        (commits.count > 0.0).then_some(commits)
    }

    /// Commits that took longer than `seconds` (a bucket bound).
    pub fn over(&self, seconds: f64) -> f64 {
        let within = self
            .buckets
            .iter()
            .find(|(bound, _)| (*bound - seconds).abs() < 1e-12)
            .map_or(f64::NAN, |(_, n)| *n);
        self.count - within
    }
}
