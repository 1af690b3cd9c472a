//! `cargo xtask fuzz`: the cargo-fuzz targets in `fuzz/`, all or one. Every target is built,
//! each chosen one replays its regression inputs (`fuzz/regressions/TARGET/`, past crashes and
//! hand-picked hostile inputs), and only then is fuzzed for a time.
//!
//! A target is a `[[bin]]` of fuzz/Cargo.toml with its source in fuzz/fuzz_targets/. A source
//! file there without a `[[bin]]` entry is an error: a target added with a new parser must not be
//! left out of CI by a forgotten manifest entry.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    time::SystemTime,
};

use anyhow::{Context as _, bail};

use crate::{setup, sh};

/// Seconds per target when `cargo xtask test` runs the targets: with eight targets the step
/// takes about four minutes in CI (a fresh clone builds them in two and a half).
pub const TEST_SECONDS: u32 = 10;

const DIR: &str = "fuzz";

/// libFuzzer's per-input time limit (its default is 20 minutes): a hang fails a short run in
/// seconds instead of outlasting it.
const INPUT_TIMEOUT: &str = "-timeout=30";

/// Returns how many targets were replayed and fuzzed without a failure (all that were chosen:
/// the first failure is an error).
pub fn run(target: Option<&str>, seconds: u32) -> anyhow::Result<usize> {
    setup::fuzzer()?;
    let all = targets()?;
    let chosen = match target {
        None => all.clone(),
        Some(t) if all.iter().any(|a| a == t) => vec![t.to_owned()],
        Some(t) => bail!("no fuzz target `{t}`; the targets are {}", all.join(", ")),
    };
    // Every target, chosen or not: one that no longer builds fails here, named by cargo.
    sh::run("cargo", &["+nightly", "fuzz", "build", "--fuzz-dir", DIR])
        .context("building the fuzz targets (fuzz/Cargo.toml)")?;
    for t in &chosen {
        replay(t)?;
    }
    for t in &chosen {
        fuzz(t, seconds)?;
    }
    Ok(chosen.len())
}

/// The targets `cargo fuzz list` reads from fuzz/Cargo.toml, checked against the sources in
/// fuzz/fuzz_targets/.
fn targets() -> anyhow::Result<Vec<String>> {
    let listed: Vec<String> = sh::output("cargo", &["fuzz", "list", "--fuzz-dir", DIR])
        .context("listing the fuzz targets (`cargo fuzz list`)")?
        .lines()
        .map(str::to_owned)
        .collect();
    let sources: BTreeSet<String> = fs::read_dir(Path::new(DIR).join("fuzz_targets"))
        .context("reading fuzz/fuzz_targets")?
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let stem = path.file_stem()?.to_str()?.to_owned();
            (path.extension()? == "rs").then_some(stem)
        })
        .collect();
    let unlisted: Vec<&String> = sources.iter().filter(|s| !listed.contains(s)).collect();
    if !unlisted.is_empty() {
        bail!(
            "fuzz/fuzz_targets has targets without a [[bin]] entry in fuzz/Cargo.toml: {unlisted:?}"
        );
    }
    if listed.is_empty() {
        bail!("`cargo fuzz list` found no fuzz targets in fuzz/Cargo.toml");
    }
    Ok(listed)
}

/// Runs each regression input of a target once (libFuzzer runs inputs given as files one by
/// one, without fuzzing). On a failure each input is run alone, to name the ones that fail.
fn replay(target: &str) -> anyhow::Result<()> {
    let dir = Path::new(DIR).join("regressions").join(target);
    let Ok(entries) = fs::read_dir(&dir) else {
        eprintln!(
            "fuzz target {target}: no regression inputs ({} is missing)",
            dir.display()
        );
        return Ok(());
    };
    let mut inputs: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
    inputs.sort();
    if sh::run("cargo", &run_args(target, &inputs, &[])).is_ok() {
        return Ok(());
    }
    // Quietly: the first failure's report is above.
    let mut failing = Vec::new();
    for input in &inputs {
        let alone = run_args(target, std::slice::from_ref(input), &[]);
        if !sh::succeeds("cargo", &alone) {
            failing.push(input.display().to_string());
        }
    }
    bail!("fuzz target {target} fails on its regression inputs {failing:?}")
}

/// Fuzzes a target for `seconds` from its corpus in fuzz/corpus/TARGET/. The regression inputs
/// are not seeds: a slow one (the YAML alias bomb takes seconds) would take a short run's time,
/// and a large one raises libFuzzer's input size limit to its own size.
fn fuzz(target: &str, seconds: u32) -> anyhow::Result<()> {
    let corpus = Path::new(DIR).join("corpus").join(target);
    fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let artifacts = Path::new(DIR).join("artifacts").join(target);
    let started = SystemTime::now();
    let time = format!("-max_total_time={seconds}");
    let Err(err) = sh::run(
        "cargo",
        &run_args(target, &[corpus], &[&time, "-print_final_stats=1"]),
    ) else {
        return Ok(());
    };
    let found = newer_files(&artifacts, started);
    if found.is_empty() {
        return Err(err.context(format!("fuzz target {target} failed")));
    }
    bail!(
        "fuzz target {target} failed on {found:?}; once fixed, copy the input into \
         fuzz/regressions/{target}/ so every run replays it"
    )
}

/// `cargo fuzz run TARGET INPUTS... -- FLAGS`: cargo-fuzz saves a failing input in
/// fuzz/artifacts/TARGET/.
fn run_args<'a>(target: &'a str, inputs: &'a [PathBuf], flags: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["+nightly", "fuzz", "run", "--fuzz-dir", DIR, target];
    // Names under fuzz/ are ASCII: libFuzzer's crash-<sha1>, or chosen by hand.
    args.extend(inputs.iter().filter_map(|p| p.to_str()));
    args.extend(["--", INPUT_TIMEOUT]);
    args.extend(flags);
    args
}

fn newer_files(dir: &Path, since: SystemTime) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<String> = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let modified = entry.metadata().ok()?.modified().ok()?;
            (modified >= since).then(|| entry.path().display().to_string())
        })
        .collect();
    found.sort();
    found
}
