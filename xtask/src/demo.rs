//! `cargo xtask demo [--once] [--kernel-enforcement]`: install what is missing, build, then
//! hand over to the demo binary (tests/src/bin/fw-demo), which does everything else and cleans
//! up after itself.

use std::{os::unix::process::CommandExt as _, path::Path, process::Command};

use anyhow::bail;

use crate::{setup, sh, test};

pub fn run(once: bool, kernel_enforcement: bool) -> anyhow::Result<()> {
    setup::run(setup::Scope::Everything)?;
    if !setup::is_root() {
        bail!("the demo loads eBPF programs and creates users: run `cargo xtask demo` as root");
    }
    test::remove_stale_objects("fhirwall-demo-");
    sh::cargo(&[
        "build",
        "--workspace",
        "--exclude",
        "fhirwall-ebpf",
        "--bins",
    ])?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."));
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), Into::into);
    let mut demo = Command::new(target.join("debug/fw-demo"));
    if once {
        demo.arg("--once");
    }
    if kernel_enforcement {
        demo.arg("--kernel-enforcement");
    }
    // Replace this process: Ctrl-C must reach the demo alone, which then stops the agent and
    // removes what it created before exiting (xtask dying first would return the prompt early).
    let error = demo.current_dir(root).exec();
    bail!("starting the demo: {error}")
}
