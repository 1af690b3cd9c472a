//! `cargo xtask`: the project's own commands. Each installs what it needs first (idempotently),
//! so a fresh machine needs nothing by hand.
//!
//!   setup   install the toolchain pieces and test peers that are missing
//!   build   setup if needed, then build the workspace (release)
//!   test    setup if needed, then run every test, kernel tests included (root), then every
//!           fuzz target briefly
//!   demo    setup if needed, then run the end-to-end demo
//!   bench   run the criterion benchmarks
//!   fuzz    replay the regression inputs of the fuzz targets, then fuzz them
//!   fmt     format with nightly rustfmt

mod demo;
mod fuzz;
mod setup;
mod sh;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "fhirwall project commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what is missing: nightly rust-src, LLVM 22, bpf-linker, the FHIR server, test peers,
    /// cargo-fuzz.
    Setup,
    /// Build the workspace in release mode.
    Build,
    /// Run the whole test suite, kernel tests included (needs root), then every fuzz target for
    /// a short time after replaying its regression inputs.
    Test {
        /// Leave out the fuzz step (local runs only: refused when CI is set).
        #[arg(long)]
        skip_fuzz: bool,
        /// Extra arguments passed to `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Run the end-to-end demo: a real FHIR server, the agent with policies/, sample workloads
    /// sharing one credential (root).
    Demo {
        /// Run the scenario once, check every expectation, exit non-zero if one fails.
        #[arg(long)]
        once: bool,
        /// Unregistered processes are refused at connect() instead of answered 403.
        #[arg(long)]
        kernel_enforcement: bool,
    },
    /// Run benchmarks: all, or one of kernel, proxy, privilege, classify, attribution, http,
    /// audit, tls, policy, response; `ebpf` is kernel and attribution (the hooks' cost and the
    /// lookup at accept).
    Bench { which: Option<String> },
    /// Format the workspace and the fuzz crate with nightly rustfmt, which applies the import
    /// grouping of rustfmt.toml (`--check`: only report what differs).
    Fmt {
        #[arg(long)]
        check: bool,
    },
    /// Run the fuzz targets (all in turn, or one) for a time each, with libFuzzer through
    /// cargo-fuzz (installed if missing), after building every target and replaying each one's
    /// inputs in fuzz/regressions/TARGET/. A crash fails the command and leaves its input in
    /// fuzz/artifacts/TARGET/.
    Fuzz {
        target: Option<String>,
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u32,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Setup => setup::run(setup::Scope::Everything),
        Command::Build => {
            setup::run(setup::Scope::Build)?;
            sh::cargo(&[
                "build",
                "--release",
                "--workspace",
                "--exclude",
                "fhirwall-ebpf",
            ])
        }
        Command::Test { skip_fuzz, args } => test::run(&args, skip_fuzz),
        Command::Demo {
            once,
            kernel_enforcement,
        } => demo::run(once, kernel_enforcement),
        Command::Bench { which } => bench(which.as_deref()),
        Command::Fuzz { target, seconds } => fuzz::run(target.as_deref(), seconds).map(drop),
        Command::Fmt { check } => fmt(check),
    }
}

/// Criterion benchmarks of the agent library, and the kernel and proxy benchmarks (binaries:
/// they need root, the kernel's own accounting, real processes and real load generators rather
/// than criterion's timer).
fn bench(which: Option<&str>) -> anyhow::Result<()> {
    setup::run(setup::Scope::Build)?;
    let binaries = || {
        sh::cargo(&[
            "build",
            "--release",
            "-p",
            "fhirwall-tests",
            "-p",
            "fhirwall",
            "--bins",
        ])
    };
    if which.is_none_or(|w| w == "kernel" || w == "ebpf") {
        binaries()?;
        sh::run("target/release/fw-kernel-bench", &[])?;
    }
    if which.is_none_or(|w| w == "proxy") {
        setup::bench_peers()?;
        binaries()?;
        sh::run("target/release/fw-proxy-bench", &[])?;
    }
    if which.is_none_or(|w| w == "privilege") {
        binaries()?;
        sh::run("target/release/fw-privilege-bench", &[])?;
    }
    match which {
        Some("kernel" | "proxy" | "privilege") => Ok(()),
        Some("ebpf") => sh::cargo(&["bench", "-p", "fhirwall", "--bench", "attribution"]),
        Some(name) => sh::cargo(&["bench", "-p", bench_crate(name), "--bench", name]),
        None => sh::cargo(&[
            "bench",
            "-p",
            "fhirwall-fhir",
            "-p",
            "fhirwall-policy",
            "-p",
            "fhirwall-http",
            "-p",
            "fhirwall",
        ]),
    }
}

fn fmt(check: bool) -> anyhow::Result<()> {
    setup::nightly_rustfmt()?;
    let check = if check { &["--check"][..] } else { &[] };
    // The workspace, then the fuzz crate, which is outside it.
    for scope in [&["--all"][..], &["--manifest-path", "fuzz/Cargo.toml"]] {
        let args: Vec<&str> = ["+nightly", "fmt"]
            .iter()
            .chain(scope)
            .chain(check)
            .copied()
            .collect();
        sh::run("cargo", &args)?;
    }
    Ok(())
}

/// The crate whose benches hold criterion benchmark `name`: the smallest that has what it
/// measures.
fn bench_crate(name: &str) -> &'static str {
    match name {
        "classify" | "response" => "fhirwall-fhir",
        "policy" => "fhirwall-policy",
        "http" => "fhirwall-http",
        _ => "fhirwall",
    }
}
