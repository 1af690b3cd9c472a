//! Central audit that a real collector accepts: the agent's trail streamed as IHE ATNA syslog
//! (RFC 5424 over TLS, RFC 5425 framing) by `fhirwall audit export --syslog --follow` to
//! Debian's rsyslog with its gnutls driver, restarted in the middle; the file rsyslog wrote is
//! then the anchor `fhirwall audit verify --against` checks the host against.
//!
//! Needs root, BTF and rsyslog with rsyslog-gnutls (`cargo xtask setup`); skipped with a reason
//! on a laptop that lacks one, failing in CI.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use fhirwall_tests::{
    TempDir, agent::AgentOptions, ehr::unique_loopback, eventually, kernel_available,
    rsyslog::Rsyslog, target_binary, world::World,
};

const READ: &str = "GET /Patient/1 HTTP/1.1\r\nHost: ehr.test\r\nConnection: close\r\n\r\n";

fn fhirwall() -> Command {
    Command::new(target_binary("fhirwall").expect("fhirwall"))
}

/// The number of entries in the store, as `audit verify` counts them (it must find it intact).
fn entries(db: &str) -> u64 {
    let out = fhirwall()
        .args(["audit", "verify", "--db", db])
        .output()
        .expect("verify");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    text.split("ok: ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {text}"))
}

/// The seq of each message rsyslog wrote.
fn seqs(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| l.split("seq=\"").nth(1)?.split('"').next()?.parse().ok())
        .collect()
}

struct Exporter(Child);

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_trail_reaches_rsyslog_once_in_order_across_a_restart_and_anchors_verify() {
    const TEST: &str =
        "the_trail_reaches_rsyslog_once_in_order_across_a_restart_and_anchors_verify";
    if !kernel_available(TEST) || !fhirwall_tests::rsyslog::available(TEST) {
        return;
    }
    let world = World::new("active");
    let mut agent = world.start();
    let mut repository =
        Rsyslog::start(&world.files.dir.join("rsyslog"), unique_loopback()).expect("rsyslog");
    let db = world.db().display().to_string();
    let requests = |n: usize| {
        for _ in 0..n {
            let report = world.probe(&["--send", READ]);
            assert!(report["reply"].as_str().is_some(), "{report}");
        }
    };
    requests(4);
    let target = format!("tls://{}", repository.addr);
    let exporter = Exporter(
        fhirwall()
            .args([
                "audit", "export", "--db", &db, "--syslog", &target, "--follow",
            ])
            .arg("--syslog-ca")
            .arg(&repository.ca_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("exporter"),
    );
    let caught_up = |repository: &Rsyslog, want: u64| {
        eventually(Duration::from_secs(30), || {
            (seqs(&repository.received()).len() as u64 >= want).then_some(())
        })
    };
    assert!(
        caught_up(&repository, entries(&db)).is_some(),
        "rsyslog received {:?}",
        seqs(&repository.received())
    );

    // The repository restarts; meanwhile more requests are audited.
    repository.stop();
    requests(3);
    repository.restart().expect("rsyslog again");
    requests(3);
    let total = entries(&db);
    assert!(
        caught_up(&repository, total).is_some(),
        "after the restart: {:?}",
        seqs(&repository.received())
    );
    drop(exporter);
    let received = seqs(&repository.received());
    assert_eq!(
        received,
        (1..=total).collect::<Vec<_>>(),
        "every entry once, in order"
    );

    // The file rsyslog wrote verifies the host as a chain of its own.
    let file = repository.file.display().to_string();
    let against = |db: &str| {
        fhirwall()
            .args(["audit", "verify", "--db", db, "--against", &file])
            .output()
            .expect("verify --against")
    };
    let out = against(&db);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("as the collector received its {total} entries")),
        "{text}"
    );

    // An entry removed from the host after export is named.
    assert!(agent.stop());
    rusqlite::Connection::open(world.db())
        .expect("store")
        .execute("DELETE FROM entry_rows WHERE seq = 3", [])
        .expect("delete");
    let out = against(&db);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("seq 3: removed from the host after the collector received it"),
        "{text}"
    );
}

/// `audit.syslog` in the agent's config: the agent streams its trail itself, also across a
/// restart of the repository.
#[test]
fn the_agent_streams_its_trail_itself_when_configured() {
    const TEST: &str = "the_agent_streams_its_trail_itself_when_configured";
    if !kernel_available(TEST) || !fhirwall_tests::rsyslog::available(TEST) {
        return;
    }
    let dir = TempDir::new("fhirwall-arr").expect("scratch dir");
    let mut repository = Rsyslog::start(dir.path(), unique_loopback()).expect("rsyslog");
    let world = World::with_options(
        "active",
        &AgentOptions {
            syslog: Some((
                format!("tls://{}", repository.addr),
                repository.ca_file.clone(),
            )),
            ..AgentOptions::default()
        },
    );
    let _agent = world.start();
    let requests = |n: usize| {
        for _ in 0..n {
            let report = world.probe(&["--send", READ]);
            assert!(report["reply"].as_str().is_some(), "{report}");
        }
    };
    let db = world.db().display().to_string();
    let all_arrived = |repository: &Rsyslog| {
        let total = entries(&db);
        eventually(Duration::from_secs(30), || {
            (seqs(&repository.received()) == (1..=total).collect::<Vec<_>>()).then_some(())
        })
        .is_some()
    };
    requests(3);
    assert!(
        all_arrived(&repository),
        "{:?}",
        seqs(&repository.received())
    );
    repository.stop();
    requests(2);
    repository.restart().expect("rsyslog again");
    requests(2);
    assert!(
        all_arrived(&repository),
        "once each, in order, across the restart: {:?}",
        seqs(&repository.received())
    );
    let file = repository.file.display().to_string();
    let out = fhirwall()
        .args(["audit", "verify", "--db", &db, "--against", &file])
        .output()
        .expect("verify --against");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
