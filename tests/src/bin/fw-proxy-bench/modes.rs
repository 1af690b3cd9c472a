//! The benchmark's client processes: `fw-proxy-bench load ...` and `fw-proxy-bench idle ...`,
//! started by the driver (inside the test cgroup when the kernel must redirect them), each
//! answering with one JSON line on stdout.

use std::{collections::HashMap, fs, path::Path, time::Duration};

use anyhow::Context as _;

use crate::{
    CONNECTIONS, IDLE_CONNECTIONS, PATH,
    client::{self, LoadSpec, Target},
};

/// `--key value` pairs.
pub fn options(args: &[String]) -> HashMap<String, String> {
    args.chunks(2)
        .filter_map(|p| Some((p[0].strip_prefix("--")?.to_owned(), p.get(1)?.clone())))
        .collect()
}

fn join_cgroup(options: &HashMap<String, String>) -> anyhow::Result<()> {
    if let Some(dir) = options.get("cgroup") {
        fs::write(
            Path::new(dir).join("cgroup.procs"),
            std::process::id().to_string(),
        )
        .context("joining the cgroup")?;
    }
    Ok(())
}

fn target_from(options: &HashMap<String, String>) -> anyhow::Result<Target> {
    let get = |k: &str| options.get(k).with_context(|| format!("--{k} is required"));
    Ok(Target {
        addr: get("addr")?.parse()?,
        server_name: get("name")?.clone(),
        ca: get("ca")?.into(),
    })
}

pub fn load(options: &HashMap<String, String>) -> anyhow::Result<()> {
    join_cgroup(options)?;
    let target = target_from(options)?;
    let seconds = |k: &str, d: f64| {
        options
            .get(k)
            .and_then(|v| v.parse().ok())
            .map_or(Duration::from_secs_f64(d), Duration::from_secs_f64)
    };
    let spec = LoadSpec {
        connections: options
            .get("connections")
            .and_then(|c| c.parse().ok())
            .unwrap_or(CONNECTIONS),
        rate: options.get("rate").and_then(|r| r.parse().ok()),
        duration: seconds("seconds", 10.0),
        warmup: seconds("warmup", 2.0),
        path: options.get("path").cloned().unwrap_or_else(|| PATH.into()),
    };
    println!("{}", client::run(&target, &spec)?);
    Ok(())
}

pub fn idle(options: &HashMap<String, String>) -> anyhow::Result<()> {
    join_cgroup(options)?;
    let target = target_from(options)?;
    let count = options
        .get("count")
        .and_then(|c| c.parse().ok())
        .unwrap_or(IDLE_CONNECTIONS);
    client::hold_idle(&target, count, PATH)
}
