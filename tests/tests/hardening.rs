//! Hardening against the host itself: what an unprivileged local user (uid 65534 here) can and
//! cannot do to a running agent. Needs root and BTF; skipped with a reason on a laptop, failing in
//! CI.
//!
//! - The state directory (audit journal and index, node CA, overrides) is readable by the agent's
//!   user only, also when it was left readable before the agent started, and the agent refuses
//!   one that another user owns or planted a file in.

use std::{
    fs,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
};

use fhirwall_tests::{
    agent::Agent,
    kernel_available,
    world::{World, status},
};

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
