//! The sidecar as the applications see it: real clients (curl, python requests) run inside the
//! test cgroup, the kernel redirects their connects to a TLS FHIR upstream into the agent, which
//! terminates TLS with its node CA, decides, audits and forwards over verified TLS. Every check
//! is made twice: what the client got, and what the upstream itself received.
//! Needs root and BTF; skipped with a reason on a laptop, failing in CI.

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use fhirwall_tests::{
    PinDir, Probe, TempDir, TestCgroup,
    agent::{Agent, AgentFiles, AgentOptions, free_port},
    client_libs, eventually, in_cgroup, kernel_available,
    pki::TestPki,
    proc_status_kib,
    upstream::{TlsUpstream, file_sha256, generated_sha256, search_bundle, sha256_hex},
};
use serde_json::Value;

const MARK: u32 = 0x00f1_f1f2;
/// The name the upstream's certificate carries and clients use (curl `--resolve`).
const HOST: &str = "ehr.test";
const ECONNREFUSED: i64 = 111;
const EPERM: i64 = 1;

/// Test cgroup (`agent` and `work` children), pins, agent files, the TLS upstream.
struct World {
    files: AgentFiles,
    upstream: TlsUpstream,
    work: PathBuf,
    agent_cgroup: PathBuf,
    dir: TempDir,
    _pins: PinDir,
    _cgroup: TestCgroup,
}

impl World {
    fn new() -> Self {
        Self::with(|_| AgentOptions::default())
    }

    /// `options` gets a free loopback address to use for an explicit listener.
    fn with(options: impl FnOnce(SocketAddr) -> AgentOptions) -> Self {
        let cgroup = TestCgroup::new().expect("cgroup");
        let work = cgroup.child("work").expect("work");
        let agent_cgroup = cgroup.child("agent").expect("agent");
        let pins = PinDir::new();
        let dir = TempDir::new("fhirwall-sidecar-test").expect("temp dir");
        let pki = TestPki::new(&dir.0.join("pki"), "upstream").expect("test CA");
        let cert = pki.server(&[HOST]).expect("upstream certificate");
        let upstream =
            TlsUpstream::start(SocketAddr::from(([127, 0, 0, 9], 0)), &cert).expect("upstream");
        let explicit = SocketAddr::from(([127, 0, 0, 1], free_port().expect("port")));
        let files = AgentFiles::with_options(&dir.0, &cgroup, &pins.path, MARK, &options(explicit))
            .expect("agent files");
        let work_path = work
            .strip_prefix(
                cgroup
                    .dir
                    .parent()
                    .expect("the test cgroup is below the mount"),
            )
            .expect("below the mount");
        files
            .write_policy(
                "policy.yaml",
                &policy(
                    upstream.addr,
                    &pki.ca_file,
                    &format!("/{}", work_path.display()),
                ),
            )
            .expect("policy");
        Self {
            files,
            upstream,
            work,
            agent_cgroup,
            dir,
            _pins: pins,
            _cgroup: cgroup,
        }
    }

    fn start(&self) -> Agent {
        Agent::start(&self.files, &self.agent_cgroup).expect("agent start")
    }

    /// `https://ehr.test:<port><path>`.
    fn url(&self, path: &str) -> String {
        format!("https://{HOST}:{}{path}", self.upstream.addr.port())
    }

    /// curl inside the work cgroup, trusting the node CA, `ehr.test` resolved to the upstream.
    fn curl(&self, args: &[&str]) -> Command {
        let mut curl = in_cgroup(&self.work, "curl");
        curl.args(["-sS", "--max-time", "60", "--cacert"])
            .arg(self.files.node_ca())
            .arg("--resolve")
            .arg(format!(
                "{HOST}:{}:{}",
                self.upstream.addr.port(),
                self.upstream.addr.ip()
            ))
            .args(args);
        curl
    }

    /// Connections the agent accepted and attributed, by its own metric.
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a counter: a small whole number"
    )]
    fn attributed(&self) -> u64 {
        self.files
            .metric("fhirwall_connections_total{outcome=\"attributed\"}")
            .unwrap_or(0.0) as u64
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.0.join(name)
    }
}

/// One upstream over TLS with the test CA; one integration: every process of the work cgroup,
/// reading and creating Patients, reading Binaries.
fn policy(upstream: SocketAddr, ca_file: &Path, work_cgroup: &str) -> String {
    format!(
        "kind: Upstream\nname: ehr\naddresses: [\"{upstream}\"]\nbase_path: /\n\
         tls:\n  mode: tls\n  ca_file: {ca}\n  server_name: {HOST}\n---\n\
         kind: Integration\nname: test-clients\nowner: Test <test@example.test>\n\
         purpose: sidecar end-to-end tests\ndata_classes: [test]\n\
         expected_resources: [Patient, Binary]\nstatus: active\n\
         workload:\n  cgroup: {work_cgroup}\n  uid: 0\nupstreams: [ehr]\n\
         scopes: [system/Patient.cruds, system/Binary.rs]\n\
         purposes_of_use: [TREAT]\ndefault_purpose: TREAT\npatient:\n  mode: any\n",
        ca = ca_file.display(),
    )
}

fn run(mut command: Command) -> Output {
    let out = command
        .stdin(Stdio::null())
        .output()
        .expect("the client runs");
    assert!(
        out.status.success(),
        "client failed ({}): {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn curl_reuses_one_connection_for_two_requests() {
    if !kernel_available("curl_reuses_one_connection_for_two_requests") {
        return;
    }
    let world = World::new();
    let _agent = world.start();
    let (first, second) = (world.path("first.json"), world.path("second.json"));
    let out = run(world.curl(&[
        "-w",
        "%{http_code} %{num_connects}\\n",
        &world.url("/Patient/1"),
        "-o",
        first.to_str().expect("utf-8"),
        &world.url("/Patient/2"),
        "-o",
        second.to_str().expect("utf-8"),
    ]));
    // curl's own account: both 200, the second on the connection the first opened.
    assert_eq!(text(&out.stdout), "200 1\n200 0\n", "{}", text(&out.stderr));
    assert_eq!(read(&first), r#"{"resourceType":"Patient","id":"1"}"#);
    assert_eq!(read(&second), r#"{"resourceType":"Patient","id":"2"}"#);
    assert_eq!(world.attributed(), 1, "the agent accepted one connection");
    let seen = world.upstream.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        seen[0].connection, seen[1].connection,
        "one pooled upstream connection"
    );
    for request in &seen {
        assert!(
            request.header("x-request-id").is_some(),
            "correlation id: {request:?}"
        );
    }
}

/// A Patient of about `size` bytes (a long narrative), valid FHIR JSON.
fn big_patient(size: usize) -> String {
    let div = "x".repeat(size);
    format!(
        r#"{{"resourceType":"Patient","text":{{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">{div}</div>"}},"active":true}}"#
    )
}

#[test]
fn curl_chunked_upload_with_100_continue_and_a_chunked_response() {
    if !kernel_available("curl_chunked_upload_with_100_continue_and_a_chunked_response") {
        return;
    }
    let world = World::new();
    let _agent = world.start();
    let body = big_patient(2 << 20);
    let file = world.path("patient.json");
    fs::write(&file, &body).expect("write body");
    let out = run(world.curl(&[
        "-v",
        "-X",
        "POST",
        "-H",
        "Transfer-Encoding: chunked",
        "-H",
        "Expect: 100-continue",
        "-H",
        "Content-Type: application/fhir+json",
        "--data-binary",
        &format!("@{}", file.display()),
        "-w",
        "%{http_code}",
        &world.url("/Patient"),
    ]));
    let trace = text(&out.stderr);
    assert!(
        trace.contains("> Transfer-Encoding: chunked"),
        "curl sent chunked: {trace}"
    );
    assert!(
        trace.contains("< HTTP/1.1 100 Continue"),
        "the sidecar answered the expectation: {trace}"
    );
    assert!(
        text(&out.stdout).ends_with("201"),
        "created: {}",
        text(&out.stdout)
    );
    let seen = world.upstream.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let create = &seen[0];
    assert_eq!(
        (create.method.as_str(), create.target.as_str()),
        ("POST", "/Patient")
    );
    assert_eq!(create.body_len, body.len(), "the whole body arrived");
    assert_eq!(create.body_sha256, sha256_hex(body.as_bytes()), "intact");

    // A response without a length reaches the client chunked and whole.
    let out = run(world.curl(&["-v", &world.url("/Patient?name=smith")]));
    let trace = text(&out.stderr);
    assert!(
        trace.contains("< Transfer-Encoding: chunked"),
        "chunked to the client: {trace}"
    );
    assert_eq!(text(&out.stdout), search_bundle());
    assert_eq!(world.upstream.requests(), 2);
}

#[test]
fn curl_streams_50_mb_through_bounded_memory() {
    const SIZE: u64 = 50 << 20;
    if !kernel_available("curl_streams_50_mb_through_bounded_memory") {
        return;
    }
    let world = World::new();
    let agent = world.start();
    let pid = agent.pid().expect("running");
    // Warm up (leaf minted, upstream connection pooled), then restart the peak-RSS counter.
    run(world.curl(&["-o", "/dev/null", &world.url("/Patient/1")]));
    fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset VmHWM");
    let before = proc_status_kib(pid, "VmRSS").expect("VmRSS");
    let file = world.path("large.bin");
    let out = run(world.curl(&[
        "-w",
        "%{http_code} %{size_download}",
        "-o",
        file.to_str().expect("utf-8"),
        &world.url(&format!("/Binary/size-{SIZE}")),
    ]));
    assert_eq!(text(&out.stdout), format!("200 {SIZE}"));
    assert_eq!(
        file_sha256(&file).expect("read"),
        generated_sha256(SIZE),
        "intact"
    );
    let peak = proc_status_kib(pid, "VmHWM").expect("VmHWM");
    let growth = peak.saturating_sub(before);
    eprintln!("agent RSS {before} KiB before, peak {peak} KiB during the 50 MB response");
    assert!(
        growth < 20 * 1024,
        "the agent grew by {growth} KiB while streaming {SIZE} bytes"
    );
}

/// Two GETs on one `requests.Session` (one pooled connection); prints `[[status, id], ...]`.
/// `sys.argv[3]`, when given, is the address `ehr.test` resolves to.
const PYTHON_SESSION: &str = r#"
import json, socket, sys
import requests
ca, base = sys.argv[1], sys.argv[2]
if len(sys.argv) > 3:
    real = socket.getaddrinfo
    socket.getaddrinfo = lambda host, *a, **k: real(sys.argv[3] if host == "ehr.test" else host, *a, **k)
with requests.Session() as s:
    out = []
    for id in ("1", "2"):
        r = s.get(base + "/Patient/" + id, verify=ca, timeout=30)
        out.append([r.status_code, r.json().get("id")])
print(json.dumps(out))
"#;

#[test]
fn python_requests_session_keeps_alive() {
    if !kernel_available("python_requests_session_keeps_alive") {
        return;
    }
    let world = World::new();
    let _agent = world.start();
    let ca = world.files.node_ca();
    let by_name = world.url("");
    let by_address = format!("https://{}", world.upstream.addr);
    let ip = world.upstream.addr.ip().to_string();
    for (base, resolve) in [
        (by_name.as_str(), Some(ip.as_str())),
        (by_address.as_str(), None),
    ] {
        let before = world.attributed();
        let mut python = in_cgroup(&world.work, "python3");
        python
            .args(["-c", PYTHON_SESSION])
            .arg(&ca)
            .arg(base)
            .args(resolve);
        let out = run(python);
        let got: Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(got, serde_json::json!([[200, "1"], [200, "2"]]), "{base}");
        assert_eq!(world.attributed() - before, 1, "one connection for {base}");
    }
    assert_eq!(world.upstream.requests(), 4);
}

#[test]
fn a_denied_request_is_a_403_operation_outcome_and_is_not_forwarded() {
    if !kernel_available("a_denied_request_is_a_403_operation_outcome_and_is_not_forwarded") {
        return;
    }
    let world = World::new();
    let _agent = world.start();
    let out = run(world.curl(&["-i", &world.url("/Observation?patient=Patient/1")]));
    let reply = text(&out.stdout);
    let (head, body) = reply.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/fhir+json"),
        "{head}"
    );
    let outcome: Value = serde_json::from_str(body).expect("JSON body");
    assert_eq!(outcome["resourceType"], "OperationOutcome", "{outcome}");
    assert_eq!(outcome["issue"][0]["code"], "forbidden", "{outcome}");
    assert!(
        !body.contains("Patient/1"),
        "no request value echoed: {body}"
    );
    assert_eq!(world.upstream.requests(), 0, "nothing forwarded");
    let denied = world.files.audit(&["--decision", "deny"]).expect("audit");
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["integration"], "test-clients");
}

#[test]
fn the_explicit_listener_attributes_plain_http_clients_and_forwards_over_tls() {
    if !kernel_available(
        "the_explicit_listener_attributes_plain_http_clients_and_forwards_over_tls",
    ) {
        return;
    }
    let mut listen = None;
    let world = World::with(|addr| {
        listen = Some(addr);
        AgentOptions {
            explicit: Some((addr, "ehr".into())),
            ..AgentOptions::default()
        }
    });
    let listen = listen.expect("an explicit listener address");
    let agent = world.start();
    let out = in_cgroup(&world.work, "curl")
        .args(["-sS", "--max-time", "30", "-w", " %{http_code}"])
        .arg(format!("http://{listen}/Patient/7"))
        .output()
        .expect("curl");
    assert_eq!(
        text(&out.stdout),
        r#"{"resourceType":"Patient","id":"7"} 200"#,
        "{}\nagent log:\n{}",
        text(&out.stderr),
        agent.log_text()
    );
    let seen = world.upstream.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].target, "/Patient/7");
    let allowed = world.files.audit(&["--decision", "allow"]).expect("audit");
    assert_eq!(allowed.len(), 1, "{allowed:?}");
    let curl_exe = client_libs::which("curl").expect("curl on PATH");
    assert_eq!(
        allowed[0]["workload"]["exe"],
        curl_exe.to_str().expect("utf-8"),
        "{}",
        allowed[0]
    );
    assert_eq!(allowed[0]["integration"], "test-clients");
    assert_eq!(allowed[0]["upstream"], "ehr");
}

#[test]
fn sigterm_finishes_the_request_in_flight_refuses_new_ones_and_exits_0() {
    if !kernel_available("sigterm_finishes_the_request_in_flight_refuses_new_ones_and_exits_0") {
        return;
    }
    let world = World::new();
    let mut agent = world.start();
    let slow = world
        .curl(&["-w", " %{http_code}", &world.url("/Patient/slow")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl");
    let arrived = eventually(Duration::from_secs(10), || {
        (world.upstream.requests() == 1).then_some(())
    });
    assert!(arrived.is_some(), "the slow request reached the upstream");
    agent.terminate();
    // The listener closes at once; the agent keeps running while the request drains.
    let dst = world.upstream.addr.to_string();
    let refused = eventually(Duration::from_secs(10), || {
        let report = Probe::run(&["--cgroup", world.work.to_str()?, &dst]).ok()?;
        // The closed listener refuses; once the heartbeat stops counting (the control loop
        // has ended), the kernel refuses first (EPERM). Either way nothing gets through.
        [ECONNREFUSED, EPERM]
            .contains(&report["errno"].as_i64()?)
            .then_some(report)
    });
    assert!(
        refused.is_some(),
        "a new connection was refused after SIGTERM"
    );
    assert!(
        agent
            .pid()
            .is_some_and(|pid| proc_status_kib(pid, "VmRSS").is_some())
    );
    world.upstream.release();
    let out = slow.wait_with_output().expect("curl");
    assert_eq!(
        text(&out.stdout),
        r#"{"resourceType":"Patient","id":"slow"} 200"#,
        "{}",
        text(&out.stderr)
    );
    let status = agent.wait(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status {status:?}; log:\n{}",
        agent.log_text()
    );
    assert_eq!(world.upstream.requests(), 1);
}

/// 1 000 slowloris clients (TLS done, request head never finished, a header line every half
/// second) are all cut once the header timeout is up, not kept alive by their trickle, while
/// curl's requests go on being served; none of theirs reaches the upstream.
#[test]
fn a_thousand_slow_header_clients_are_cut_while_normal_requests_are_served() {
    const SLOW: usize = 1000;
    if !kernel_available("a_thousand_slow_header_clients_are_cut_while_normal_requests_are_served")
    {
        return;
    }
    let world = World::with(|_| AgentOptions {
        header_timeout_ms: Some(3_000),
        ..AgentOptions::default()
    });
    let _agent = world.start();
    let script = client_libs::script("slow_headers.py");
    let mut slow = in_cgroup(&world.work, "python3")
        .arg(script)
        .args([
            HOST,
            &world.upstream.addr.ip().to_string(),
            &world.upstream.addr.port().to_string(),
        ])
        .arg(world.files.node_ca())
        .args([&SLOW.to_string(), "30"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut lines = std::io::BufReader::new(slow.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut lines, &mut line).expect("opened line");
    assert_eq!(
        line.trim(),
        format!("opened {SLOW}"),
        "every slow client got in"
    );
    // The slow clients hold their connections: normal requests are served meanwhile.
    for i in 0..5 {
        let out = run(world.curl(&["-w", " %{http_code}", &world.url(&format!("/Patient/{i}"))]));
        assert!(
            text(&out.stdout).ends_with(" 200"),
            "request {i} during the slowloris: {}",
            text(&out.stdout)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    line.clear();
    std::io::BufRead::read_line(&mut lines, &mut line).expect("report line");
    assert!(slow.wait().expect("python3").success());
    let report: Value = serde_json::from_str(&line).expect("report json");
    eprintln!("slow clients: {report}");
    assert_eq!(report["opened"], SLOW, "{report}");
    assert!(
        report["how"].get("still open").is_none(),
        "the trickle kept connections alive past the header timeout: {report}"
    );
    assert_eq!(report["how"]["408"], SLOW, "each is told 408: {report}");
    let cut_after = report["min_cut_after"].as_f64().expect("cut times");
    assert!(
        cut_after >= 2.0,
        "cut by the header timeout, not before: {report}"
    );
    let seen = world.upstream.seen();
    assert!(
        seen.iter().all(|s| !s.target.contains("slowloris")),
        "an unfinished head reached the upstream"
    );
    assert_eq!(seen.len(), 5, "only curl's requests were forwarded");
    // 1 005 handshakes for one server name: one leaf, minted once, nothing refused.
    let mints = |result: &str| {
        world
            .files
            .metric(&format!("fhirwall_tls_leaf_mints{{result=\"{result}\"}}"))
    };
    assert_eq!(mints("minted"), Some(1.0));
    assert_eq!(mints("refused"), Some(0.0));
}

/// A process cycling random server names gets no leaf at all: none of them is a protected
/// upstream's, so every handshake fails at once without minting (the mint budget, unit-tested
/// in `proxy/tls/leaf.rs`, is left for the upstreams' own names), and the upstream's name,
/// already cached, is served as before.
#[test]
fn random_server_names_get_no_leaves_and_the_upstreams_name_is_still_served() {
    const FLOOD: u64 = 300;
    if !kernel_available("random_server_names_get_no_leaves_and_the_upstreams_name_is_still_served")
    {
        return;
    }
    let world = World::new();
    let _agent = world.start();
    let before = run(world.curl(&["-w", " %{http_code}", &world.url("/Patient/1")]));
    assert!(text(&before.stdout).ends_with(" 200"));
    let script = client_libs::script("sni_flood.py");
    let out = run({
        let mut python = in_cgroup(&world.work, "python3");
        python
            .arg(script)
            .args([
                world.upstream.addr.ip().to_string(),
                world.upstream.addr.port().to_string(),
            ])
            .arg(world.files.node_ca())
            .arg(FLOOD.to_string());
        python
    });
    let report: Value = serde_json::from_str(text(&out.stdout).trim()).expect("report");
    eprintln!("SNI flood: {report}");
    assert_eq!(
        report["done"].as_u64(),
        Some(0),
        "no random name is served: {report}"
    );
    assert_eq!(report["refused"].as_u64(), Some(FLOOD), "{report}");
    let mints = |result: &str| {
        world
            .files
            .metric(&format!("fhirwall_tls_leaf_mints{{result=\"{result}\"}}"))
    };
    #[expect(clippy::cast_precision_loss, reason = "300")]
    let flood = FLOOD as f64;
    assert_eq!(
        (mints("minted"), mints("unserved")),
        (Some(1.0), Some(flood)),
        "refused before minting, and counted"
    );
    let after = run(world.curl(&["-w", " %{http_code}", &world.url("/Patient/1")]));
    assert!(
        text(&after.stdout).ends_with(" 200"),
        "the cached name is still served: {}",
        text(&after.stdout)
    );
}
