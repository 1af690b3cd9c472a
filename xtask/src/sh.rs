//! Running commands, loudly: every command is echoed before it runs.

use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

/// Runs a program and fails if it fails.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    run_env(program, args, &[])
}

pub fn run_env(program: &str, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
    eprintln!("+ {program} {}", args.join(" "));
    let mut cmd = Command::new(program);
    cmd.args(args).envs(env.iter().copied());
    // .cargo/config.toml quiets nested cargo builds (aya-build); our own commands should talk.
    cmd.env_remove("CARGO_TERM_QUIET");
    let status = cmd
        .status()
        .with_context(|| format!("starting {program}"))?;
    if !status.success() {
        bail!("{program} {} failed: {status}", args.join(" "));
    }
    Ok(())
}

/// Runs `cargo` with the workspace's toolchain.
pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    run(
        &std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
        args,
    )
}

/// Whether a command succeeds, silently.
#[must_use]
pub fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A command's stdout, if it succeeds.
#[must_use]
pub fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
