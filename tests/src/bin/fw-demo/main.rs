//! `cargo xtask demo [--once] [--kernel-enforcement]`: fhirwall on a real FHIR server, with
//! real workloads that share one credential.
//!
//! 1. The EHR: helios-hfs (FHIR R4) behind nginx TLS on 127.0.0.2:8443, the address the
//!    `ehr-fhir` upstream of policies/ protects, seeded with synthetic patients. nginx checks
//!    bearer tokens at the EHR's authorization server (npm oidc-provider on 127.0.0.2:9000),
//!    which issues the claims job's integration its short-lived tokens; the static credentials
//!    of the other integrations are still accepted as they are.
//! 2. The agent: `fhirwall run` with (a copy of) policies/, attached to a dedicated demo cgroup,
//!    never the host's root cgroup; state, audit store and admin socket under target/demo.
//! 3. Four workloads in the demo cgroup (see scenario.rs), each matching its integration's
//!    selector for real: the executable path, the user and the systemd unit (cgroup) it names.
//! 4. The summary: each workload as fhirwall attributed it, each request with its decision,
//!    rule and reason, from the audit store; `fhirwall audit verify`; the main metrics.
//!
//! Without `--once` the agent, its admin API and /metrics stay up and new audit records are
//! printed as they arrive, until Ctrl-C. With `--once` every expectation is checked and the exit
//! status says whether all held. Everything the demo creates (processes, cgroup, pinned
//! programs, users, files under /opt) is removed on exit, on failure and on Ctrl-C.

mod host;
mod live;
mod report;
mod scenario;
mod setup;

use std::{
    fs,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
    time::Instant,
};

use anyhow::{Context as _, bail};
use fhirwall_tests::{
    PinDir, TestCgroup,
    agent::{Agent, AgentFiles, free_port, http_get},
    ehr::EhrServer,
    kernel_available, synthetic, target_binary,
};

use crate::{host::HostChanges, scenario::Share};

const EHR_HTTP: &str = "127.0.0.2:8080";
const EHR_TLS: &str = "127.0.0.2:8443";
/// The EHR's authorization server (plain HTTP on loopback, as the broker allows it there).
const EHR_AUTH: &str = "127.0.0.2:9000";
const PATIENTS: usize = 8;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

struct Args {
    once: bool,
    kernel_enforcement: bool,
}

fn main() -> ExitCode {
    let args = Args {
        once: std::env::args().any(|a| a == "--once"),
        kernel_enforcement: std::env::args().any(|a| a == "--kernel-enforcement"),
    };
    catch_interrupts();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("\nthe demo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Ctrl-C and SIGTERM set a flag that every step checks, so the guards below unwind in order
/// (agent, programs, cgroup, host changes, EHR) instead of the process dying mid-way.
fn catch_interrupts() {
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            INTERRUPTED.store(true, Ordering::SeqCst);
        });
    });
}

fn interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Paths of this checkout (the binary is built from it).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_owned)
}

/// Removes the demo directory on drop unless told to keep it.
struct DemoDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for DemoDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!(
                "logs and the audit store are kept in {}",
                self.path.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

fn run(args: &Args) -> anyhow::Result<bool> {
    let started = Instant::now();
    preflight()?;
    let root = workspace();
    let mut demo = DemoDir {
        path: root.join("target/demo"),
        keep: true,
    };
    let _ = fs::remove_dir_all(&demo.path);
    fs::create_dir_all(&demo.path)?;
    let share_dir = share_dir()?;

    let fhirwall = target_binary("fhirwall")?;
    let state = demo.path.join("state");
    say("starting the EHR's authorization server (oidc-provider, SMART Backend Services)");
    let auth = setup::authorization_server(&fhirwall, &demo.path, &state, parse(EHR_AUTH)?)?;
    say("starting the EHR: helios-hfs (FHIR R4) behind nginx TLS, checking bearer tokens");
    let ehr = EhrServer::start_with(
        &demo.path.join("ehr"),
        parse(EHR_HTTP)?,
        parse(EHR_TLS)?,
        Some(auth.introspection(&setup::LEGACY_CREDENTIALS)),
    )?;
    seed(&ehr)?;
    interrupted()?;

    let python = python()?;
    let policies = setup::policies(&root.join("policies"), &demo.path, &ehr, &auth, &python)?;
    policy_check(&fhirwall, &policies)?;

    let cgroup = TestCgroup::with_prefix("fhirwall-demo")?;
    let pins = PinDir::with_prefix("fhirwall-demo");
    let files = agent_files(&demo.path, policies)?;
    setup::agent_config(
        &files,
        &state,
        &cgroup.dir,
        &pins.path,
        args.kernel_enforcement,
    )?;
    say(&format!(
        "starting the agent, attached to cgroup {} only",
        cgroup.dir.display()
    ));
    let agent = Agent::start(&files, &cgroup.child("fhirwall-agent")?)?;
    interrupted()?;

    let share = Share {
        node_ca: trust_node_ca(&state, &share_dir.0)?,
        client: target_binary("fw-demo-client")?,
        base_url: ehr.base_url(),
        dir: share_dir.0.clone(),
    };
    let mut host = HostChanges::default();
    let workloads = scenario::workloads(
        &python,
        &share.dir.join("quality_report.py"),
        args.kernel_enforcement,
    );
    prepare_host(&mut host, &share, &root)?;
    say(&format!("host: {}", host.describe()));

    let outcome =
        scenario_and_summary(&workloads, &cgroup, &share, &fhirwall, &state, &files, &ehr);
    let ok = match outcome {
        Ok(ok) => ok,
        Err(e) => {
            eprintln!("agent log: {}", agent.log.display());
            return Err(e);
        }
    };
    if !args.once {
        let try_it = format!(
            "sh -c 'echo $$ > {}/cgroup.procs && exec curl -s --cacert {} -H \"Authorization: {}\" {}/Claim'",
            cgroup.child("adhoc-shell")?.display(),
            share.node_ca.display(),
            scenario::SHARED_CREDENTIAL,
            share.base_url
        );
        live::live(&fhirwall, &state, &files, &try_it)?;
    }
    drop(agent);
    println!(
        "\nthe demo took {:.0} s; cleaning up (agent, programs, cgroup, users, /opt files, EHR)",
        started.elapsed().as_secs_f64()
    );
    demo.keep = !ok;
    drop((host, pins, cgroup, ehr, auth));
    Ok(ok)
}

/// Runs the workloads, prints what fhirwall made of them, checks every expectation.
fn scenario_and_summary(
    workloads: &[scenario::Workload],
    cgroup: &TestCgroup,
    share: &Share,
    fhirwall: &Path,
    state: &Path,
    files: &AgentFiles,
    ehr: &EhrServer,
) -> anyhow::Result<bool> {
    let observations_before = report::total(ehr, "Observation")?;
    let mut ran = Vec::new();
    for w in workloads {
        interrupted()?;
        say(&format!("running the {} ({})", w.label, w.exe.display()));
        ran.push(scenario::run(w, &cgroup.child(w.cgroup)?, share)?);
    }
    let db = state.join("audit.db");
    let records = report::audit_records(fhirwall, &db)?;
    println!(
        "\n===== what fhirwall saw: {} workloads, ONE shared credential, {} audit records =====",
        workloads.len(),
        records.len()
    );
    let mut failures = Vec::new();
    for (w, r) in workloads.iter().zip(&ran) {
        let mine = report::of_process(&records, r.pid);
        print!("{}", report::render(w, r, &mine));
        failures.extend(report::check(w, r, &mine));
    }
    failures.extend(report::upstream_checks(
        ehr,
        workloads,
        &ran,
        observations_before,
    )?);
    println!("\n===== audit trail =====");
    match report::verify(fhirwall, &db) {
        Ok(text) => println!("   fhirwall audit verify: {text}"),
        Err(e) => failures.push(format!("{e:#}")),
    }
    match http_get(files.metrics, "/metrics") {
        Ok(metrics) => {
            println!("\n===== metrics (http://{}/metrics) =====", files.metrics);
            print!("{}", report::metrics_excerpt(&metrics));
            failures.extend(report::metrics_checks(&metrics));
        }
        Err(e) => failures.push(format!("reading /metrics: {e:#}")),
    }
    println!("\n===== expectations =====");
    if failures.is_empty() {
        println!(
            "   all expectations met: each workload attributed to its own process and integration,"
        );
        println!(
            "   allowed requests forwarded, denied ones answered 403 with the reason, chain verified"
        );
    }
    for f in &failures {
        println!("   FAILED: {f}");
    }
    Ok(failures.is_empty())
}

fn say(text: &str) {
    println!("-- {text}");
}

fn parse(addr: &str) -> anyhow::Result<SocketAddr> {
    let addr: SocketAddr = addr.parse()?;
    if TcpListener::bind(addr).is_err() {
        bail!("{addr} is in use: the demo's EHR listens there (policies/upstreams.yaml)");
    }
    Ok(addr)
}

fn preflight() -> anyhow::Result<()> {
    if !kernel_available("the demo") {
        bail!("the demo loads eBPF programs: run it as root on a kernel with BTF");
    }
    if !fhirwall_tests::ehr::ehr_available("the demo") {
        bail!("the demo needs hfs and nginx: run `cargo xtask setup`");
    }
    for (program, flag) in [("setpriv", "--version"), ("curl", "--version")] {
        if !std::process::Command::new(program)
            .arg(flag)
            .output()
            .is_ok_and(|o| o.status.success())
        {
            bail!("the demo needs {program} (util-linux / curl)");
        }
    }
    Ok(())
}

/// The Python the reporting integration names; the host's python3 if it has no python3.11.
fn python() -> anyhow::Result<PathBuf> {
    let named = Path::new(setup::POLICY_PYTHON);
    if named.exists() {
        return Ok(named.to_owned());
    }
    for candidate in ["/usr/bin/python3", "/usr/local/bin/python3"] {
        if let Ok(real) = fs::canonicalize(candidate) {
            return Ok(real);
        }
    }
    bail!("the reporting workload needs a Python 3 in /usr/bin")
}

fn seed(ehr: &EhrServer) -> anyhow::Result<()> {
    let patients = synthetic::patients(PATIENTS);
    ehr.post("/", &synthetic::transaction(&patients))
        .context("seeding the EHR")?;
    let counts: Vec<String> = synthetic::expected_counts(PATIENTS)
        .iter()
        .map(|(kind, n)| format!("{n} {kind}"))
        .collect();
    say(&format!(
        "seeded the EHR with synthetic records: {}",
        counts.join(", ")
    ));
    Ok(())
}

fn policy_check(fhirwall: &Path, policies: &Path) -> anyhow::Result<()> {
    let out = std::process::Command::new(fhirwall)
        .args(["policy", "check"])
        .arg(policies)
        .output()?;
    if !out.status.success() {
        bail!(
            "the demo's copy of policies/ does not load: {}",
            String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr)
        );
    }
    say(&format!(
        "policy: {}",
        String::from_utf8_lossy(&out.stdout).trim()
    ));
    Ok(())
}

fn agent_files(demo: &Path, policies: PathBuf) -> anyhow::Result<AgentFiles> {
    let preferred = SocketAddr::from(([127, 0, 0, 1], 9944));
    let metrics = if TcpListener::bind(preferred).is_ok() {
        preferred
    } else {
        SocketAddr::from(([127, 0, 0, 1], free_port()?))
    };
    Ok(AgentFiles {
        dir: demo.to_owned(),
        policies,
        config: demo.join("agent.yaml"),
        socket: demo.join("admin.sock"),
        metrics,
        transparent_port: free_port()?,
        state_dir: demo.join("state"),
    })
}

/// A world-readable directory for what the workloads (running as their own users) read: a
/// checkout under /root would not be.
struct ShareDir(PathBuf);

impl Drop for ShareDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn share_dir() -> anyhow::Result<ShareDir> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = std::env::temp_dir().join(format!("fhirwall-demo-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    Ok(ShareDir(dir))
}

/// The node CA the agent created at first start, where the workloads can read it: EHR hosts
/// trust it (README: "trusting the node CA").
fn trust_node_ca(state: &Path, share: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let target = share.join("fhirwall-node-ca.pem");
    fs::copy(state.join("ca/ca.pem"), &target).context("copying the node CA")?;
    // The certificate is public, as a trust store holds it; in the state directory it is
    // root's alone like everything there, and the copy keeps that mode.
    fs::set_permissions(&target, fs::Permissions::from_mode(0o644))?;
    Ok(target)
}

/// Users and executables the integrations' selectors name.
fn prepare_host(host: &mut HostChanges, share: &Share, root: &Path) -> anyhow::Result<()> {
    for user in ["mirth", "claimsbatch", "qualityrpt"] {
        host.ensure_user(user)?;
    }
    host.install(&share.client, Path::new(scenario::MIRTH))?;
    host.install(&share.client, Path::new(scenario::CLAIMS))?;
    fs::copy(
        root.join("tests/demo/quality_report.py"),
        share.dir.join("quality_report.py"),
    )?;
    Ok(())
}
