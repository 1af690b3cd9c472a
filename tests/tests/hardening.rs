//! Hardening against the host itself: what an unprivileged local user (uid 65534 here) can and
//! cannot do to a running agent. Needs root and BTF; skipped with a reason on a laptop, failing in
//! CI.
//!
//! - Identities a user cannot forge: an executable bind-mounted over a registered path in a
//!   private mount namespace, a registered path in a directory the user can write, a look-alike
//!   systemd unit in the user's own service manager and a look-alike pod cgroup in a subtree the
//!   user owns are all attributed as unregistered, while the same programs and names from where
//!   only root can put them are recognised.
//! - An upstream on this host listening on all addresses is protected at every address of the
//!   host, not only the one the policy names.
//! - The node CA signs only for the protected upstreams (name constraints, and no leaf for any
//!   other server name), and `fhirwall ca rotate` replaces it without breaking clients that
//!   installed the exported pair during the overlap.
//! - The state directory (audit journal and index, node CA, overrides) is readable by the agent's
//!   user only, also when it was left readable before the agent started, and the agent refuses
//!   one that another user owns or planted a file in.

use std::{
    fs,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use fhirwall_tests::{
    agent::{Agent, AgentOptions},
    destination::Destination,
    eventually, in_cgroup, kernel_available, target_binary,
    tinyproxy::TinyProxy,
    world::{World, status},
};
use serde_json::Value;

const READ: &str = "GET /Patient/1 HTTP/1.1\r\nHost: ehr.test\r\nConnection: close\r\n\r\n";
/// The unprivileged user the attacks run as.
const NOBODY: u32 = 65_534;

/// Whether uid 65534 (no groups) can read `path`: a real `open(2)` as that user.
fn nobody_reads(path: &Path) -> bool {
    Command::new("setpriv")
        .args([
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            "--clear-groups".to_owned(),
            "--".to_owned(),
            "cat".to_owned(),
        ])
        .arg(path)
        .output()
        .expect("setpriv")
        .status
        .success()
}

/// Every file and directory under `dir`, `dir` included (symlinks not followed).
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut all = vec![dir.to_owned()];
    let mut i = 0;
    while i < all.len() {
        if fs::symlink_metadata(&all[i]).expect("stat").is_dir() {
            for entry in fs::read_dir(&all[i]).expect("list") {
                all.push(entry.expect("entry").path());
            }
        }
        i += 1;
    }
    all
}

const POD: &str = "7c6b3f4e-2a1d-4b8e-9f0a-1234567890ab";
const CONTAINER: &str = "3f5e1b0c9a7d4e2f8b6a1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f";

/// An integration of the test policy, allowed to read Patients.
fn integration(name: &str, selector: &str) -> String {
    format!(
        "kind: Integration\nname: {name}\nowner: Test <test@example.test>\n\
         purpose: hardening tests\ndata_classes: [test]\nexpected_resources: [Patient]\n\
         status: active\nworkload:\n{selector}upstreams: [ehr]\nscopes: [system/Patient.rs]\n\
         purposes_of_use: [TREAT]\ndefault_purpose: TREAT\npatient:\n  mode: any\n"
    )
}

/// Runs `program ARGS --send READ <destination>` as `uid` (no groups) in `cgroup`, and returns
/// the HTTP status the probe got through the kernel redirect and the sidecar.
fn status_as(world: &World, uid: u32, cgroup: &Path, program: &[&str]) -> Option<u16> {
    status_at(world.destination.addr, uid, cgroup, program)
}

/// [`status_as`], connecting to `to`.
fn status_at(to: std::net::SocketAddr, uid: u32, cgroup: &Path, program: &[&str]) -> Option<u16> {
    let out = in_cgroup(cgroup, "setpriv")
        .args([
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            "--clear-groups".to_owned(),
            "--".to_owned(),
        ])
        .args(program)
        .args(["--send", READ, &to.to_string()])
        .output()
        .expect("setpriv");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "{program:?} as uid {uid}: no report\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    status(&report)
}

/// `dir` and its parents below `base`, created and handed to `uid`, as systemd delegates a
/// subtree to a user.
fn give_away(base: &Path, rel: &str, uid: u32) -> PathBuf {
    let dir = base.join(rel);
    fs::create_dir_all(&dir).expect("mkdir");
    let mut at = base.to_owned();
    for part in Path::new(rel) {
        at.push(part);
        std::os::unix::fs::chown(&at, Some(uid), Some(uid)).expect("chown");
    }
    dir
}

/// Copies of `fw-probe`: the registered one root installed, the attacker's own (another file
/// that runs the same), and one root put in a directory a user can write.
fn install_programs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let probe = target_binary("fw-probe").expect("fw-probe");
    // The registered program, installed by root.
    let registered = dir.join("registered/fw-probe");
    fs::create_dir_all(registered.parent().expect("parent")).expect("mkdir");
    fs::copy(&probe, &registered).expect("copy");
    // The attacker's own program (the same code, so it runs, but another file).
    let evil = give_away(dir, "evil", NOBODY).join("fw-probe");
    fs::copy(&probe, &evil).expect("copy");
    fs::OpenOptions::new()
        .append(true)
        .open(&evil)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"evil"))
        .expect("append");
    std::os::unix::fs::chown(&evil, Some(NOBODY), Some(NOBODY)).expect("chown");
    // A registered path in a directory a user can write: root's file, but the user's to swap.
    let swappable = give_away(dir, "user-writable", 65_531).join("fw-probe");
    fs::copy(&probe, &swappable).expect("copy");
    for path in [&registered, &swappable] {
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    (registered, evil, swappable)
}

#[test]
fn identities_a_local_user_could_forge_are_unregistered() {
    if !kernel_available("identities_a_local_user_could_forge_are_unregistered") {
        return;
    }
    let world = World::new("active");
    let (registered, evil, swappable) = install_programs(&world.files.dir);

    let unit = "/system.slice/lab.service";
    let user_unit = "/user.slice/user-65533.slice/user@65533.service/app.slice/lab.service";
    let pod = format!("/kubepods/burstable/pod{POD}/{CONTAINER}");
    let policy = format!(
        "kind: Upstream\nname: ehr\naddresses: [\"{dst}\"]\nbase_path: /\ntls:\n  mode: plain\n---\n{}---\n{}---\n{}---\n{}",
        integration(
            "registered-exe",
            &format!("  exe: {}\n  uid: {NOBODY}\n", registered.display())
        ),
        integration(
            "swappable-exe",
            &format!("  exe: {}\n  uid: 65531\n", swappable.display())
        ),
        integration("unit", "  systemd_unit: lab.service\n  uid: 65533\n"),
        integration("pod", &format!("  pod_uid: {POD}\n  uid: 65532\n")),
        dst = world.destination.addr,
    );
    world
        .files
        .write_policy("policy.yaml", &policy)
        .expect("policy");
    let agent = world.start();
    let work = &world.work;
    let registered_text = registered.display().to_string();
    let evil_text = evil.display().to_string();

    // Recognised: root's program run by its user; root's cgroups named like the selectors.
    assert_eq!(
        status_as(&world, NOBODY, work, &[&registered_text]),
        Some(200),
        "the registered program itself; agent log:\n{}",
        agent.log_text()
    );
    let root_unit = world.cgroup.dir.join(format!("work{unit}"));
    fs::create_dir_all(&root_unit).expect("mkdir");
    assert_eq!(
        status_as(&world, 65_533, &root_unit, &[&evil_text]),
        Some(200),
        "a system unit's cgroup"
    );
    let root_pod = world.cgroup.dir.join(format!("work{pod}"));
    fs::create_dir_all(&root_pod).expect("mkdir");
    assert_eq!(
        status_as(&world, 65_532, &root_pod, &[&evil_text]),
        Some(200),
        "a pod cgroup the runtime made"
    );

    // Forged: each is unregistered (403), and nothing reaches the EHR.
    let before = world.destination.accepted();
    let bind_mount =
        format!("mount --bind {evil_text} {registered_text} && exec {registered_text} \"$@\"");
    assert_eq!(
        status_as(
            &world,
            NOBODY,
            work,
            &["unshare", "-rm", "sh", "-c", &bind_mount, "sh"]
        ),
        Some(403),
        "another program bind-mounted over the registered path in a private mount namespace"
    );
    assert_eq!(
        status_as(&world, 65_531, work, &[&swappable.display().to_string()]),
        Some(403),
        "a registered path its user could replace"
    );
    let user_unit = give_away(&world.work, user_unit.trim_start_matches('/'), 65_533);
    assert_eq!(
        status_as(&world, 65_533, &user_unit, &[&evil_text]),
        Some(403),
        "`systemd-run --user --unit=lab.service`: a unit in the user's own manager"
    );
    let user_pod = give_away(&world.work, &format!("delegated{pod}"), 65_532);
    assert_eq!(
        status_as(&world, 65_532, &user_pod, &[&evil_text]),
        Some(403),
        "a pod cgroup in a subtree the user owns"
    );
    assert_eq!(
        world.destination.accepted(),
        before,
        "no forged identity reached the EHR"
    );
}

/// The value of `key=` in the shipped systemd unit.
fn unit_setting(key: &str) -> Option<String> {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/fhirwall.service");
    fs::read_to_string(unit)
        .expect("the shipped unit")
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('=').map(str::to_owned))
}

#[test]
fn no_file_in_the_state_directory_is_readable_by_another_user() {
    if !kernel_available("no_file_in_the_state_directory_is_readable_by_another_user") {
        return;
    }
    // What systemd gives the agent, by the shipped unit: a private directory and umask.
    assert_eq!(unit_setting("StateDirectoryMode").as_deref(), Some("0700"));
    assert_eq!(unit_setting("UMask").as_deref(), Some("0077"));

    // Worse than the unit: a directory left readable (a DaemonSet's hostPath, an older version)
    // holding a readable file, and the shell's usual umask.
    let world = World::new("active");
    let state = world.state_dir();
    let leftover = state.join("journal-old/notes");
    fs::create_dir_all(leftover.parent().expect("parent")).expect("mkdir");
    fs::write(&leftover, "patient references").expect("write");
    for (path, mode) in [
        (&state, 0o755),
        (&state.join("journal-old"), 0o755),
        (&leftover, 0o644),
    ] {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }
    // SAFETY: umask(2) cannot fail; the agent inherits it through `sh -c`.
    unsafe { libc::umask(0o022) };
    assert!(
        nobody_reads(&leftover),
        "the check must be able to see a readable file, or it proves nothing"
    );

    let agent = world.start();
    let report = world.probe(&["--send", READ]);
    assert_eq!(status(&report), Some(200), "{report}");
    assert_eq!(
        world.audit(&[]).len(),
        1,
        "the request is in the audit trail"
    );

    let mut open = Vec::new();
    let mut readable = Vec::new();
    let entries = tree(&state);
    for path in &entries {
        let meta = fs::symlink_metadata(path).expect("stat");
        if meta.mode() & 0o077 != 0 || meta.uid() != 0 {
            open.push(format!(
                "{} {:o} uid {}",
                path.display(),
                meta.mode() & 0o7777,
                meta.uid()
            ));
        }
        if meta.is_file() && nobody_reads(path) {
            readable.push(path.display().to_string());
        }
    }
    for needed in ["audit.db", "audit-patients.db", "audit.journal", "ca"] {
        assert!(
            entries.iter().any(|p| p.starts_with(state.join(needed))),
            "{needed} exists to be checked: {entries:?}"
        );
    }
    assert!(
        open.is_empty(),
        "entries others may access: {open:#?}\nagent log:\n{}",
        agent.log_text()
    );
    assert!(readable.is_empty(), "uid {NOBODY} read {readable:#?}");
    assert!(
        agent.log_text().contains("narrowed to the agent's user"),
        "the narrowing is logged:\n{}",
        agent.log_text()
    );
}

#[test]
fn the_agent_refuses_a_state_directory_another_user_owns_or_planted_a_file_in() {
    if !kernel_available(
        "the_agent_refuses_a_state_directory_another_user_owns_or_planted_a_file_in",
    ) {
        return;
    }
    let world = World::new("active");
    let state = world.state_dir();
    fs::create_dir_all(&state).expect("mkdir");
    std::os::unix::fs::chown(&state, Some(NOBODY), Some(NOBODY)).expect("chown");
    let refused = |what: &str| {
        let Err(err) = Agent::start(&world.files, &world.agent_cgroup) else {
            panic!("the agent started with {what}");
        };
        let text = format!("{err:#}");
        assert!(
            text.contains(&format!("is owned by uid {NOBODY}")),
            "{what}: the refusal names the owner:\n{text}"
        );
    };
    refused("a state directory uid 65534 owns");

    std::os::unix::fs::chown(&state, Some(0), Some(0)).expect("chown");
    let planted = state.join("audit.db");
    fs::write(&planted, "").expect("write");
    std::os::unix::fs::chown(&planted, Some(NOBODY), Some(NOBODY)).expect("chown");
    refused("an audit index uid 65534 owns");

    fs::remove_file(&planted).expect("rm");
    let _agent = world.start();
}

/// `openssl s_client` through the kernel redirect from the `work` cgroup: whether the handshake
/// with the sidecar completed and verified against `ca_file`.
fn handshake(world: &World, server_name: Option<&str>, ca_file: &Path) -> bool {
    let mut command = in_cgroup(&world.work, "openssl");
    command
        .args(["s_client", "-connect", &world.destination.addr.to_string()])
        .args(["-verify_return_error", "-CAfile"])
        .arg(ca_file);
    match server_name {
        Some(name) => command.args(["-servername", name]),
        None => command.arg("-noservername"),
    };
    let out = command
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl s_client");
    out.status.success()
}

#[test]
fn the_node_ca_signs_only_for_protected_upstreams() {
    if !kernel_available("the_node_ca_signs_only_for_protected_upstreams") {
        return;
    }
    let world = World::new("active");
    let agent = world.start();
    let ca = world.files.node_ca();
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&ca)
        .output()
        .expect("openssl x509");
    let text = String::from_utf8_lossy(&text.stdout);
    let ip = world.destination.addr.ip();
    assert!(
        text.contains("X509v3 Name Constraints: critical")
            && text.contains(&format!("IP:{ip}/255.255.255.255")),
        "the CA permits the protected address only:\n{text}"
    );
    let minted = |result: &str| {
        world
            .metric(&format!("fhirwall_tls_leaf_mints{{result=\"{result}\"}}"))
            .unwrap_or(-1.0)
    };
    assert!(
        !handshake(&world, Some("evil.example"), &ca),
        "a server name no upstream has"
    );
    assert_eq!(
        (minted("minted"), minted("unserved")),
        (0.0, 1.0),
        "refused at once, counted, nothing minted; agent log:\n{}",
        agent.log_text()
    );
    assert!(
        handshake(&world, None, &ca),
        "the protected address itself verifies against the constrained CA"
    );
    assert!((minted("minted") - 1.0).abs() < f64::EPSILON, "one leaf");
}

#[test]
fn ca_rotate_keeps_clients_working_across_the_switch() {
    if !kernel_available("ca_rotate_keeps_clients_working_across_the_switch") {
        return;
    }
    let world = World::new("active");
    let agent = world.start();
    let old_only = world.files.dir.join("old-ca.pem");
    fs::copy(world.files.node_ca(), &old_only).expect("copy");
    let rotated = world.fhirwall(&[
        "ca",
        "rotate",
        "--config",
        world.files.config.to_str().expect("utf-8"),
        "--overlap",
        "4s",
    ]);
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    // What a host is given during the overlap: both certificates.
    let ca_dir = world.state_dir().join("ca");
    let exported = world.fhirwall(&["ca", "export", "--dir", ca_dir.to_str().expect("utf-8")]);
    assert!(exported.status.success());
    let bundle = world.files.dir.join("bundle.pem");
    fs::write(&bundle, &exported.stdout).expect("write");
    let pem = String::from_utf8_lossy(&exported.stdout);
    assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 2, "{pem}");

    assert!(handshake(&world, None, &bundle), "before the switch");
    assert!(handshake(&world, None, &old_only), "the old CA still signs");
    let switched = eventually(Duration::from_secs(20), || {
        (!handshake(&world, None, &old_only)).then_some(())
    });
    assert!(
        switched.is_some(),
        "the agent switched to the next CA; log:\n{}",
        agent.log_text()
    );
    assert!(
        handshake(&world, None, &bundle),
        "a host that installed the export during the overlap keeps working"
    );
    assert!(world.state_dir().join("ca.previous/ca.pem").exists());
    assert!(agent.log_text().contains("switched to the rotated node CA"));
}

#[test]
fn an_upstream_on_this_host_is_protected_at_every_address_of_the_host() {
    if !kernel_available("an_upstream_on_this_host_is_protected_at_every_address_of_the_host") {
        return;
    }
    let world = World::new("active");
    // A local EHR listening on all addresses, registered by its loopback address.
    let ehr = Destination::start([0, 0, 0, 0]);
    let port = ehr.addr.port();
    let policy = format!(
        "kind: Upstream\nname: ehr\naddresses: [\"127.0.0.1:{port}\"]\nbase_path: /\ntls:\n  mode: plain\n---\n{}",
        integration(
            "registered-exe",
            &format!("  exe: {}\n", fhirwall_tests::world::probe_exe())
        ),
    );
    world
        .files
        .write_policy("policy.yaml", &policy)
        .expect("policy");
    let agent = world.start();
    let lan = fhirwall::enforce::local_addresses()
        .into_iter()
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        .expect("a host with a network interface besides loopback");
    let evil = install_programs(&world.files.dir).1;
    let evil = evil.display().to_string();
    for to in [
        std::net::SocketAddr::new(lan, port),
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
    ] {
        assert_eq!(
            status_at(to, NOBODY, &world.work, &[&evil]),
            Some(403),
            "{to}: an unregistered process is stopped by the sidecar; agent log:\n{}",
            agent.log_text()
        );
    }
    // Any other loopback address leads to the sidecar too, which has no route for it.
    let other_loopback = std::net::SocketAddr::from(([127, 0, 0, 7], port));
    let answer = status_at(other_loopback, NOBODY, &world.work, &[&evil]);
    assert_ne!(
        answer,
        Some(200),
        "{other_loopback}: not answered by the EHR"
    );
    assert_eq!(
        ehr.accepted(),
        0,
        "nothing reached the EHR around the sidecar"
    );
    let probe = fhirwall_tests::world::probe_exe();
    assert_eq!(
        status_at(
            std::net::SocketAddr::new(lan, port),
            0,
            &world.work,
            &[&probe]
        ),
        Some(200),
        "the registered program reaches it, through the sidecar"
    );
    assert_eq!(ehr.accepted(), 1);
}

/// The `layers` of the agent's health, from the metrics listener (the one `Agent::start` waits
/// for; the admin socket may come a moment later).
fn layers(world: &World) -> Value {
    let body = fhirwall_tests::agent::http_get(world.files.metrics, "/healthz").expect("health");
    let health: Value = serde_json::from_str(&body).expect("health json");
    health["layers"].clone()
}

#[test]
fn the_agent_reports_its_layers_and_attaches_a_detached_redirect_again() {
    if !kernel_available("the_agent_reports_its_layers_and_attaches_a_detached_redirect_again") {
        return;
    }
    let world = World::new("active");
    let agent = world.start();
    let before = layers(&world);
    assert_eq!(before["redirect"]["state"], "active", "{before}");
    assert_eq!(before["lsm"]["state"], "missing", "{before}");
    assert_eq!(
        world
            .files
            .metric("fhirwall_kernel_layer_active{layer=\"redirect\"}"),
        Some(1.0)
    );
    // Someone with root detaches the connect programs behind the agent's back.
    let links = world
        .pins
        .path
        .join(format!("v{}/links", fhirwall_common::LAYOUT_VERSION));
    let mut detached = 0;
    for entry in fs::read_dir(&links).expect("links").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("fw_connect4-") || name.starts_with("fw_connect6-") {
            fhirwall_tests::detach_link(&entry.path()).expect("detach");
            detached += 1;
        }
    }
    assert_eq!(detached, 2);
    // The agent notices within a heartbeat or two and attaches them again.
    let repaired = eventually(Duration::from_secs(10), || {
        world
            .files
            .metric("fhirwall_kernel_redirect_repairs_total")
            .filter(|n| *n >= 1.0)
    });
    assert!(repaired.is_some(), "agent log:\n{}", agent.log_text());
    assert!(
        agent
            .log_text()
            .contains("the redirect into the sidecar is not in place"),
        "{}",
        agent.log_text()
    );
    let after = layers(&world);
    assert_eq!(after["redirect"]["state"], "active", "{after}");
    let probe = fhirwall_tests::world::probe_exe();
    assert_eq!(
        status_as(&world, 0, &world.work, &[&probe]),
        Some(200),
        "the registered program goes through the sidecar again"
    );
    assert_eq!(
        world.destination.accepted(),
        1,
        "only the sidecar's forward reached the destination"
    );
}

/// `curl` in `cgroup`, through the HTTP proxy `proxy` with a CONNECT tunnel, fetching a Patient
/// from `target`: the CONNECT's status, the request's status (`000` when none), and curl's errors.
fn curl_through(
    cgroup: &Path,
    proxy: std::net::SocketAddr,
    target: std::net::SocketAddr,
) -> String {
    let out = in_cgroup(cgroup, "curl")
        .args(["-sS", "-o", "/dev/null", "--max-time", "10", "-p", "-x"])
        .arg(format!("http://{proxy}"))
        .args(["-w", "%{http_connect} %{http_code}"])
        .arg(format!("http://{target}/Patient/1"))
        .output()
        .expect("curl");
    format!(
        "{} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

#[test]
fn a_tunnel_through_an_egress_proxy_reaches_anything_but_the_ehr() {
    if !kernel_available("a_tunnel_through_an_egress_proxy_reaches_anything_but_the_ehr") {
        return;
    }
    let proxy = TinyProxy::start([127, 0, 0, 9]).expect("tinyproxy");
    let elsewhere = Destination::start([127, 0, 0, 10]);
    let world = World::with_options(
        "active",
        &AgentOptions {
            egress_proxies: vec![proxy.addr],
            ..AgentOptions::default()
        },
    );
    // Unredirected (this test process is outside the test cgroup), the proxy is a way to the EHR.
    let (status, reply) = proxy
        .connect_through(
            &world.destination.addr.to_string(),
            b"GET /Patient/1 HTTP/1.1\r\nHost: ehr\r\nConnection: close\r\n\r\n",
        )
        .expect("connect through tinyproxy");
    assert!(status.contains(" 200 "), "{status}");
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
    let before = world.destination.accepted();
    let agent = world.start();

    // A workload tunnelling to the EHR through the proxy: refused by the sidecar, audited.
    let refused = curl_through(&world.work, proxy.addr, world.destination.addr);
    assert!(
        refused.starts_with("403 000"),
        "{refused}\n{}",
        agent.log_text()
    );
    assert_eq!(
        world.destination.accepted(),
        before,
        "nothing reached the EHR through the proxy"
    );
    // Anywhere else, the tunnel goes through the real proxy.
    let relayed = curl_through(&world.work, proxy.addr, elsewhere.addr);
    assert!(
        relayed.starts_with("200 200"),
        "{relayed}\n{}",
        agent.log_text()
    );
    assert_eq!(elsewhere.accepted(), 1);

    let metric = |result: &str| {
        world.files.metric(&format!(
            "fhirwall_egress_proxy_tunnels_total{{result=\"{result}\"}}"
        ))
    };
    assert_eq!(
        (metric("refused"), metric("relayed")),
        (Some(1.0), Some(1.0))
    );
    let records = world.files.audit(&[]).expect("audit");
    let refusal = records
        .iter()
        .find(|r| r["rule"] == "egress-proxy/connect")
        .unwrap_or_else(|| panic!("no refusal record in {records:#?}"));
    assert_eq!(refusal["decision"], "deny", "{refusal}");
    assert_eq!(refusal["method"], "CONNECT", "{refusal}");
    assert_eq!(refusal["upstream"], "ehr", "{refusal}");
}
