//! The whole agent, as an operator runs it: `fhirwall run` with a config and a policy directory,
//! attached to a dedicated test cgroup; real workload processes (`fw-probe`) connect to a
//! protected destination and are relayed, refused or closed; `fhirwall workloads` lists them.
//! Needs root and BTF; skipped with a reason on a laptop, failing in CI.

use std::{path::Path, time::Duration};

use fhirwall_tests::{
    Probe, eventually, kernel_available,
    world::{World, probe_exe, status},
};

const EPERM: i64 = 1;

const READ: &str = "GET /Patient/1 HTTP/1.1\r\nHost: ehr.test\r\nConnection: close\r\n\r\n";
const OUT_OF_SCOPE: &str =
    "GET /Observation?patient=Patient/1 HTTP/1.1\r\nHost: ehr.test\r\nConnection: close\r\n\r\n";

#[test]
fn forwards_allowed_requests_audits_them_and_lists_the_workload() {
    if !kernel_available("forwards_allowed_requests_audits_them_and_lists_the_workload") {
        return;
    }
    let world = World::new("active");
    let _agent = world.start();
    let report = world.probe(&["--send", READ]);
    assert_eq!(status(&report), Some(200), "{report}");
    assert!(
        report["reply"]
            .as_str()
            .is_some_and(|r| r.contains(r#""resourceType":"Patient""#))
    );
    assert_eq!(
        report["peer"],
        world.destination.addr.to_string(),
        "getpeername shows the original destination"
    );
    assert_eq!(world.destination.accepted(), 1);

    let dst = world.destination.addr.to_string();
    let mut held = Probe::spawn(&[
        "--cgroup",
        world.work.to_str().expect("utf-8"),
        "--hold",
        &dst,
    ])
    .expect("probe");
    assert_eq!(held.report().expect("connected")["ok"], true);
    let listed = eventually(Duration::from_secs(5), || {
        world
            .workloads()
            .as_array()
            .filter(|a| !a.is_empty())
            .cloned()
    })
    .expect("the held connection is listed");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["workload"]["tgid"], held.pid);
    assert_eq!(listed[0]["workload"]["exe"], probe_exe());
    assert_eq!(listed[0]["integration"], "probe-integration");
    assert_eq!(listed[0]["destination"], dst);
    drop(held);

    let audit = world.audit(&["--decision", "allow"]);
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["integration"], "probe-integration");
    assert_eq!(audit[0]["workload"]["exe"], probe_exe());
    assert_eq!(audit[0]["interaction"], "read");
    assert_eq!(audit[0]["resourceType"], "Patient");
    assert_eq!(audit[0]["rule"], "integration/probe-integration/scope[0]");
}

#[test]
fn denies_out_of_scope_and_unregistered_requests_with_an_operation_outcome() {
    if !kernel_available("denies_out_of_scope_and_unregistered_requests_with_an_operation_outcome")
    {
        return;
    }
    let world = World::new("active");
    let mut agent = world.start();
    let report = world.probe(&["--send", OUT_OF_SCOPE]);
    assert_eq!(status(&report), Some(403), "{report}");
    let reply = report["reply"].as_str().unwrap_or_default();
    assert!(
        reply.contains(r#""resourceType":"OperationOutcome""#),
        "{reply}"
    );
    assert!(reply.contains("forbidden"), "{reply}");
    assert!(
        !reply.contains("Patient/1"),
        "no request value echoed: {reply}"
    );
    assert_eq!(
        world.destination.accepted(),
        0,
        "nothing reached the destination"
    );
    assert!(agent.stop());

    world.write_policy("active", "/opt/someone-else/bin/app");
    let _agent = world.start();
    let report = world.probe(&["--send", READ]);
    assert_eq!(status(&report), Some(403), "unregistered: {report}");
    assert_eq!(world.destination.accepted(), 0);
    let denied = world.audit(&["--decision", "deny"]);
    assert_eq!(denied.len(), 2, "{denied:?}");
    assert!(
        denied.iter().any(|r| r["rule"] == "default/unregistered"),
        "{denied:?}"
    );
}

#[test]
fn revoked_workloads_are_refused_in_the_kernel_and_audited() {
    if !kernel_available("revoked_workloads_are_refused_in_the_kernel_and_audited") {
        return;
    }
    let world = World::new("revoked");
    let _agent = world.start();
    let dst = world.destination.addr.to_string();
    let mut probe = Probe::spawn(&[
        "--cgroup",
        world.work.to_str().expect("utf-8"),
        "--wait",
        &dst,
    ])
    .expect("probe");
    // The exec event made the agent classify the probe: wait for its deny entry in the kernel.
    let denied = eventually(Duration::from_secs(5), || {
        world
            .metric("fhirwall_kernel_workloads{verdict=\"deny\"}")
            .filter(|n| *n >= 1.0)
    });
    assert!(denied.is_some(), "no deny entry appeared");
    probe.go().expect("go");
    let report = probe.report().expect("report");
    assert_eq!(report["errno"], EPERM, "{report}");
    assert_eq!(world.destination.accepted(), 0);
    let refused = eventually(Duration::from_secs(5), || {
        let rows = world.audit(&["--decision", "kernel-refused"]);
        (!rows.is_empty()).then_some(rows)
    })
    .expect("the kernel refusal is in the audit trail");
    assert_eq!(refused[0]["workload"]["tgid"], probe.pid);
    assert_eq!(refused[0]["upstream"], "ehr");
    // Charged to the revoked integration, for incident responders and for the alert on
    // revoked identities still trying.
    assert_eq!(
        refused[0]["integration"], "probe-integration",
        "{refused:?}"
    );
    assert_eq!(
        world.metric(
            "fhirwall_policy_denials_total{decision=\"kernel-refused\",integration=\"probe-integration\",reason=\"revoked\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        world.metric("fhirwall_integrations{status=\"revoked\"}"),
        Some(1.0)
    );
}

#[test]
fn ops_see_refusals_by_reason_and_credentials_shared_between_identities() {
    if !kernel_available("ops_see_refusals_by_reason_and_credentials_shared_between_identities") {
        return;
    }
    let world = World::new("active");
    let agent = world.start();
    let token = "Bearer copied-from-the-lab-interface";
    let with_token = |request: &str| {
        request.replace(
            "Host: ehr.test\r\n",
            &format!("Host: ehr.test\r\nAuthorization: {token}\r\n"),
        )
    };
    let shared = "fhirwall_shared_credential_requests_total";
    assert_eq!(
        status(&world.probe(&["--send", &with_token(READ)])),
        Some(200)
    );
    assert_eq!(
        status(&world.probe(&["--send", &with_token(OUT_OF_SCOPE)])),
        Some(403)
    );
    assert_eq!(
        world.metric(&format!("{shared}{{")),
        None,
        "one identity: not shared"
    );
    // An unregistered program (curl, not the integration's executable) in the same cgroup,
    // presenting the same credential.
    let url = format!("http://{}/Patient/1", world.destination.addr);
    let out = fhirwall_tests::in_cgroup(&world.work, "curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("Authorization: {token}"))
        .arg(&url)
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403");
    assert_eq!(
        status(&world.probe(&["--send", &with_token(READ)])),
        Some(200)
    );
    for (line, want) in [
        (
            "fhirwall_policy_denials_total{decision=\"deny\",integration=\"probe-integration\",reason=\"scope\"}",
            1.0,
        ),
        (
            "fhirwall_policy_denials_total{decision=\"deny\",integration=\"\",reason=\"unregistered\"}",
            1.0,
        ),
        (&format!("{shared}{{integration=\"\"}}"), 1.0),
        (
            &format!("{shared}{{integration=\"probe-integration\"}}"),
            1.0,
        ),
        ("fhirwall_shared_credentials", 1.0),
    ] {
        assert_eq!(world.metric(line), Some(want), "{line}");
    }
    let log = agent.log_text();
    assert!(
        log.contains("a credential is presented by more than one identity"),
        "{log}"
    );
    assert!(
        !log.contains("copied-from-the-lab"),
        "the credential is never logged: {log}"
    );
}

#[test]
fn refuses_while_down_recovers_on_restart_and_uninstalls() {
    if !kernel_available("refuses_while_down_recovers_on_restart_and_uninstalls") {
        return;
    }
    let world = World::new("active");
    let mut agent = world.start();
    assert_eq!(status(&world.probe(&["--send", READ])), Some(200));
    assert!(
        agent.stop(),
        "clean exit on SIGTERM; log:\n{}",
        agent.log_text()
    );
    let down = world.probe(&["--send", READ]);
    assert_eq!(down["errno"], EPERM, "while the agent is down: {down}");
    let again = world.start();
    assert_eq!(status(&world.probe(&["--send", READ])), Some(200));
    drop(again);
    let uninstall = world.fhirwall(&[
        "uninstall",
        "--pin-dir",
        world.pins.path.to_str().expect("utf-8"),
    ]);
    assert!(
        uninstall.status.success(),
        "{}",
        String::from_utf8_lossy(&uninstall.stderr)
    );
    assert!(!Path::new(&world.pins.path).exists());
    let direct = world.probe(&["--send", READ]);
    assert_eq!(
        status(&direct),
        Some(200),
        "uninstalled: straight to the destination: {direct}"
    );
    assert_eq!(
        world.destination.accepted(),
        3,
        "the request while down never arrived"
    );
    let _ = &world.cgroup;
}

#[test]
fn resets_connections_that_predate_the_agent() {
    if !kernel_available("resets_connections_that_predate_the_agent") {
        return;
    }
    let world = World::new("active");
    let dst = world.destination.addr.to_string();
    let mut early = Probe::spawn(&[
        "--cgroup",
        world.work.to_str().expect("utf-8"),
        "--hold",
        &dst,
    ])
    .expect("probe");
    assert_eq!(early.report().expect("connected")["ok"], true);
    let _agent = world.start();
    early.go().expect("go");
    let after = early.report().expect("after");
    assert!(
        after["after"]
            .as_str()
            .is_some_and(|a| a.starts_with("error:")),
        "{after}"
    );
}

/// Waits for the agent's second successful policy load (the first is at start).
fn assert_reloaded(world: &World) {
    let reloaded = eventually(Duration::from_secs(10), || {
        world
            .metric("fhirwall_policy_reloads_total{result=\"ok\"}")
            .filter(|n| *n >= 2.0)
    });
    assert!(reloaded.is_some(), "policy not reloaded");
}

#[test]
fn a_policy_edit_is_applied_without_restart() {
    if !kernel_available("a_policy_edit_is_applied_without_restart") {
        return;
    }
    let world = World::new("active");
    let _agent = world.start();
    assert_eq!(status(&world.probe(&["--send", READ])), Some(200));
    world.write_policy("revoked", &probe_exe());
    assert_reloaded(&world);
    let report = world.probe(&["--send", READ]);
    assert_ne!(status(&report), Some(200), "revoked after reload: {report}");
    // An invalid edit keeps the last good policy.
    world
        .files
        .write_policy("policy.yaml", "kind: Integration\nname: broken\n")
        .expect("write");
    let stale = eventually(Duration::from_secs(10), || {
        world.metric("fhirwall_policy_stale").filter(|n| *n >= 1.0)
    });
    assert!(stale.is_some(), "invalid policy not reported");
    assert_ne!(status(&world.probe(&["--send", READ])), Some(200));
    assert_eq!(world.destination.accepted(), 1);
}

#[test]
fn operators_revoke_reinstate_and_break_glass() {
    if !kernel_available("operators_revoke_reinstate_and_break_glass") {
        return;
    }
    let world = World::new("active");
    world
        .files
        .write_policy(
            "break-glass.yaml",
            "kind: BreakGlass\nname: ed\nowner: Safety <safety@example.test>\n\
             description: emergency reads\ninvokers:\n  integrations: [probe-integration]\n\
             max_duration: 1h\nmin_justification: 10\nscopes:\n  - system/*.rs\n",
        )
        .expect("break-glass policy");
    let mut agent = world.start();
    let socket = world.files.socket.to_str().expect("utf-8");
    let fhirwall = |args: &[&str]| {
        let out = world.fhirwall(&[args, &["--socket", socket]].concat());
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };

    // Break-glass lifts a scope denial while the session lasts, and every use is marked.
    assert_eq!(status(&world.probe(&["--send", OUT_OF_SCOPE])), Some(403));
    let (ok, out) = fhirwall(&[
        "break-glass",
        "start",
        "--policy",
        "ed",
        "--integration",
        "probe-integration",
        "--justification",
        "INC-4711 mass casualty event",
        "--duration",
        "30m",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = fhirwall(&[
        "break-glass",
        "start",
        "--policy",
        "ed",
        "--integration",
        "probe-integration",
        "--justification",
        "short",
        "--duration",
        "30m",
    ]);
    assert!(
        !ok && out.contains("justification"),
        "too short a justification is refused: {out}"
    );
    assert_eq!(status(&world.probe(&["--send", OUT_OF_SCOPE])), Some(200));
    let marked = world.audit(&["--decision", "allow"]);
    assert!(
        marked
            .iter()
            .any(|r| r["breakGlass"]["justificationId"] == "INC-4711 mass casualty event"),
        "{marked:?}"
    );
    let (ok, out) = fhirwall(&["break-glass", "stop", "--integration", "probe-integration"]);
    assert!(ok && out.contains("closed 1"), "{out}");
    assert_eq!(status(&world.probe(&["--send", OUT_OF_SCOPE])), Some(403));

    // Revocation: immediate, kept across a restart, undone by reinstate.
    assert_eq!(status(&world.probe(&["--send", READ])), Some(200));
    assert_eq!(
        world.metric("fhirwall_integrations{status=\"revoked\"}"),
        Some(0.0)
    );
    let (ok, out) = fhirwall(&["revoke", "probe-integration", "--reason", "token leaked"]);
    assert!(ok, "{out}");
    assert_eq!(
        world.metric("fhirwall_integrations{status=\"revoked\"}"),
        Some(1.0)
    );
    let (ok, out) = fhirwall(&["revoke", "no-such-integration"]);
    assert!(!ok && out.contains("no integration named"), "{out}");
    let before = world.destination.accepted();
    assert_ne!(status(&world.probe(&["--send", READ])), Some(200));
    // A reload of the (unchanged, active) policy files keeps the operator's revocation.
    world.write_policy("active", &probe_exe());
    assert_reloaded(&world);
    assert_ne!(
        status(&world.probe(&["--send", READ])),
        Some(200),
        "still revoked after a reload"
    );
    assert!(agent.stop(), "clean exit; log:\n{}", agent.log_text());
    let again = world.start();
    assert_ne!(
        status(&world.probe(&["--send", READ])),
        Some(200),
        "still revoked after a restart"
    );
    assert_eq!(
        world.destination.accepted(),
        before,
        "nothing reached the destination while revoked"
    );
    let (ok, out) = fhirwall(&["reinstate", "probe-integration"]);
    assert!(ok, "{out}");
    assert_eq!(status(&world.probe(&["--send", READ])), Some(200));
    drop(again);
}
