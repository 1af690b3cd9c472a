//! `cargo xtask test`: the whole suite, kernel tests included, then every fuzz target briefly.

use std::{fs, path::Path, time::Instant};

use anyhow::bail;

use crate::{fuzz, setup, sh};

pub fn run(extra: &[String], skip_fuzz: bool) -> anyhow::Result<()> {
    let ci = std::env::var_os("CI").is_some();
    if skip_fuzz && ci {
        bail!("--skip-fuzz is for local runs: CI must replay and run the fuzz targets");
    }
    setup::run(setup::Scope::Everything)?;
    if !setup::is_root() {
        if ci {
            bail!("CI must run the kernel tests: run `cargo xtask test` as root");
        }
        eprintln!("not root: kernel and end-to-end tests will report themselves SKIPPED");
    }
    remove_stale_objects("fhirwall-test-");
    // The tests start workspace binaries (fw-probe, fhirwall): build them first.
    sh::cargo(&[
        "build",
        "--workspace",
        "--exclude",
        "fhirwall-ebpf",
        "--bins",
    ])?;
    let mut args = vec!["test", "--workspace", "--exclude", "fhirwall-ebpf"];
    if !extra.is_empty() {
        args.push("--");
        args.extend(extra.iter().map(String::as_str));
    }
    sh::cargo(&args)?;
    if skip_fuzz {
        eprintln!(
            "fuzz step SKIPPED (--skip-fuzz): no regression input replayed, no target fuzzed"
        );
        return Ok(());
    }
    let started = Instant::now();
    let targets = fuzz::run(None, fuzz::TEST_SECONDS)?;
    // CI reads a run's closing lines for a pass/fail count; cargo test's are far above by now.
    eprintln!("fuzz step: {} s", started.elapsed().as_secs());
    eprintln!("fuzz: {targets} passed, 0 failed");
    Ok(())
}

/// Test (or demo) cgroups and bpffs pins left by a run that was killed (guards could not run):
/// `<prefix><pid>-...`. Only objects whose creating process is gone are removed.
pub fn remove_stale_objects(prefix: &str) {
    let cgroup_root = fs::read_to_string("/proc/mounts").ok().and_then(|mounts| {
        mounts.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| f[1].to_owned())
        })
    });
    for dir in [cgroup_root.as_deref(), Some("/sys/fs/bpf")]
        .into_iter()
        .flatten()
    {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix(prefix).and_then(|r| r.split('-').next()) else {
                continue;
            };
            if !Path::new("/proc").join(pid).exists() {
                remove_tree(&entry.path());
            }
        }
    }
}

/// Removes a stale test tree: pinned objects are files (unlinking unpins and, for links,
/// detaches); cgroups are directories removed bottom-up once their processes are killed.
fn remove_tree(path: &Path) {
    let _ = fs::write(path.join("cgroup.kill"), "1");
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                remove_tree(&p);
            } else if p.starts_with("/sys/fs/bpf") {
                let _ = fs::remove_file(&p);
            }
        }
    }
    let _ = fs::remove_dir(path);
}
