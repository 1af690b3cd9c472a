//! The real FHIR client libraries the end-to-end tests drive, installed on first use with their
//! ordinary package managers into directories under target/ (never system-wide): python
//! `fhirclient` and `fhirpy` in a venv (pip), `fhir-kit-client` in a node_modules (npm), and
//! there too the EHR's authorization server of the token broker tests (`oidc-provider`).
//! Installed once, then reused by later runs.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Mutex,
};

/// Versions the tests were written against.
pub const PYTHON_PACKAGES: [&str; 2] = ["fhirclient==4.4.0", "fhirpy==2.3.1"];
pub const NPM_PACKAGE: &str = "fhir-kit-client@2.0.3";
/// The authorization server of the token broker tests and the demo.
pub const OIDC_PROVIDER: &str = "oidc-provider@9.13.3";

/// One install at a time within a test binary (the tests run in parallel threads).
static INSTALL: Mutex<()> = Mutex::new(());

/// A client script of the tests, `tests/clients/<name>`.
#[must_use]
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join(name)
}

/// Where the clients are installed: `<target>/e2e-clients`.
#[must_use]
pub fn install_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    target.join("e2e-clients")
}

/// The venv's Python with fhirclient and fhirpy importable, or why it cannot be had.
pub fn python() -> Result<PathBuf, String> {
    let _one = INSTALL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let venv = install_dir().join("venv");
    let python = venv.join("bin/python");
    let ready = || succeeds(Command::new(&python).args(["-c", "import fhirclient, fhirpy"]));
    if ready() {
        return Ok(python);
    }
    let base = ["python3", "/usr/bin/python3"]
        .into_iter()
        .find(|p| succeeds(Command::new(p).args(["-c", "import venv, ensurepip"])))
        .ok_or("no python3 with the venv and ensurepip modules")?;
    run(Command::new(base).args(["-m", "venv"]).arg(&venv))?;
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(PYTHON_PACKAGES))?;
    if ready() {
        Ok(python)
    } else {
        Err("pip installed the clients but python cannot import them".into())
    }
}

/// Node (18 or newer, for its fetch) and the node_modules directory holding fhir-kit-client.
pub fn node() -> Result<(PathBuf, PathBuf), String> {
    node_with(NPM_PACKAGE)
}

/// Node and the node_modules directory holding oidc-provider.
pub fn oidc_provider() -> Result<(PathBuf, PathBuf), String> {
    node_with(OIDC_PROVIDER)
}

/// Node and the node_modules directory holding `package` (`name@version`), installed there
/// when missing.
fn node_with(package: &str) -> Result<(PathBuf, PathBuf), String> {
    let _one = INSTALL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let node = which("node").ok_or("node is not installed")?;
    let version = output(Command::new(&node).arg("--version")).unwrap_or_default();
    let major: u32 = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 18 {
        return Err(format!(
            "node {version} is too old (fhir-kit-client needs fetch)"
        ));
    }
    let prefix = install_dir().join("node");
    let modules = prefix.join("node_modules");
    let name = package.rsplit_once('@').map_or(package, |(name, _)| name);
    if !modules.join(name).join("package.json").exists() {
        std::fs::create_dir_all(&prefix).map_err(|e| e.to_string())?;
        run(Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&prefix)
            .arg(package))?;
    }
    Ok((node, modules))
}

/// The resolved path of a program on PATH.
#[must_use]
pub fn which(program: &str) -> Option<PathBuf> {
    let path = output(Command::new("sh").args(["-c", &format!("command -v {program}")]))?;
    std::fs::canonicalize(path.trim()).ok()
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
