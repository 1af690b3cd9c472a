use std::path::PathBuf;

use super::*;

/// A stat line as the kernel prints it, with `comm` spliced in raw.
fn stat_line(comm: &str, flags: u32, start: u64) -> Vec<u8> {
    format!(
        "4242 ({comm}) S 1 4242 4242 0 -1 {flags} 120 0 0 0 3 1 0 0 20 0 1 0 {start} 6012928 \
         512 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
    )
    .into_bytes()
}

#[test]
fn parses_stat_with_hostile_comm_values() {
    let cases: &[(&str, &str)] = &[
        ("plain", "fw-probe"),
        ("space", "my app"),
        ("paren close", "a) S 1 2 3"),
        ("paren both", "(x)(y)"),
        ("only parens", ")))"),
        ("newline", "evil\n1 (fake) R"),
        ("numbers like fields", "1 2 3 4 5 6 7"),
        ("empty", ""),
        ("unicode", "lab-ü"),
    ];
    for (name, comm) in cases {
        let parsed = parse_stat(&stat_line(comm, 0x40_0040, 987_654)).expect(name);
        assert_eq!(parsed.comm, *comm, "{name}");
        assert_eq!(parsed.state, 'S', "{name}");
        assert_eq!(parsed.flags, 0x40_0040, "{name}");
        assert_eq!(parsed.start_time, 987_654, "{name}");
        assert!(!parsed.is_kernel_thread(), "{name}");
    }
}

#[test]
fn recognises_kernel_threads() {
    let parsed = parse_stat(&stat_line("kworker/0:1", 0x0420_8040, 5)).expect("kthread line");
    assert!(parsed.is_kernel_thread());
}

#[test]
fn rejects_malformed_stat() {
    let cases: &[(&str, &[u8])] = &[
        ("empty", b""),
        ("no parens", b"42 comm S 1 2"),
        ("close before open", b"42 )x( S 1"),
        ("truncated", b"42 (x) S 1 42 42 0 -1 0"),
        (
            "long state",
            b"42 (x) SS 1 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 77 0",
        ),
        (
            "bad start",
            b"42 (x) S 1 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 7x 0",
        ),
        (
            "bad flags",
            b"42 (x) S 1 42 42 0 -1 -4 0 0 0 0 0 0 0 0 20 0 1 0 7 0",
        ),
    ];
    for (name, text) in cases {
        assert!(parse_stat(text).is_err(), "{name} should not parse");
    }
}

#[test]
fn parses_this_process_stat() {
    let tgid = std::process::id();
    let procfs = ProcFs::new(PathBuf::from("/proc"));
    let stat = procfs.stat(tgid).expect("own stat");
    let text = std::fs::read(format!("/proc/{tgid}/stat")).expect("own stat");
    let again = parse_stat(&text).expect("parses");
    // State and flags belong to this moment (the test harness's other threads run meanwhile);
    // the identity of the process does not change between two reads.
    assert_eq!((again.comm, again.start_time), (stat.comm, stat.start_time));
    assert!(stat.start_time > 0);
}

#[test]
fn splits_cmdline() {
    let cases: &[(&str, &[u8], &[&str])] = &[
        ("empty (kernel thread, zombie)", b"", &[]),
        ("one arg", b"/usr/bin/java\0", &["/usr/bin/java"]),
        (
            "several",
            b"java\0-jar\0mirth.jar\0",
            &["java", "-jar", "mirth.jar"],
        ),
        ("empty argument kept", b"a\0\0b\0", &["a", "", "b"]),
        (
            "no final NUL (setproctitle)",
            b"postgres: writer",
            &["postgres: writer"],
        ),
        ("not UTF-8", b"a\xff\0", &["a\u{fffd}"]),
        ("only NUL", b"\0", &[""]),
    ];
    for (name, bytes, want) in cases {
        assert_eq!(split_cmdline(bytes), *want, "{name}");
    }
}

#[test]
fn parses_status_ids_as_the_real_ones() {
    let text = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t50\t51\t52\t53\n";
    assert_eq!(parse_status_ids(text), Some((1000, 50)));
    assert_eq!(parse_status_ids("Name:\tx\nUid:\t1\n"), None);
    assert_eq!(parse_status_ids("Uid:\tx\nGid:\t1\n"), None);
}

#[test]
fn strips_deleted_only_when_the_file_has_no_links() {
    let cases: &[(&str, Option<u64>, &str, bool)] = &[
        ("/usr/bin/lab (deleted)", Some(0), "/usr/bin/lab", true),
        ("/memfd:payload (deleted)", Some(0), "/memfd:payload", true),
        ("/opt/x (deleted)", Some(1), "/opt/x (deleted)", false),
        ("/opt/x (deleted)", None, "/opt/x (deleted)", false),
        ("/usr/bin/lab", Some(1), "/usr/bin/lab", false),
        ("/usr/bin/odd", Some(0), "/usr/bin/odd", true),
    ];
    for (link, nlink, path, deleted) in cases {
        let got = strip_deleted(PathBuf::from(link), *nlink);
        assert_eq!(got, (PathBuf::from(path), *deleted), "{link} {nlink:?}");
    }
}

#[test]
fn reads_the_cgroup_v2_line() {
    let text = "12:cpu,cpuacct:/x\n0::/system.slice/lab.service\n";
    assert_eq!(
        parse_cgroup_v2_line(text),
        Some("/system.slice/lab.service")
    );
    assert_eq!(parse_cgroup_v2_line("1:name=systemd:/\n"), None);
}

#[test]
fn snapshot_of_this_process() {
    let procfs = ProcFs::new(PathBuf::from("/proc"));
    let snapshot = procfs.snapshot(std::process::id(), 1 << 16);
    let (exe, deleted) = snapshot.exe.expect("own exe");
    assert_eq!(exe, std::env::current_exe().expect("current exe"));
    assert!(!deleted);
    assert!(snapshot.exe_file.is_some());
    let args: Vec<String> = std::env::args().collect();
    assert_eq!(snapshot.cmdline, args);
    assert!(snapshot.cgroup_path.is_some_and(|p| p.starts_with('/')));
}

#[test]
fn caps_the_command_line() {
    let procfs = ProcFs::new(PathBuf::from("/proc"));
    let snapshot = procfs.snapshot(std::process::id(), 4);
    let first: String = std::env::args().next().expect("argv[0]");
    assert!(first.len() > 4, "cargo runs tests by absolute path");
    assert_eq!(snapshot.cmdline, vec![first[..4].to_owned()]);
}

/// Needs root: files are checked for root's ownership.
#[test]
fn a_path_is_verified_only_as_the_same_root_installed_file_in_the_hosts_view() {
    use std::os::unix::fs::PermissionsExt as _;
    if !crate::test_support::root_or_skip(
        "a_path_is_verified_only_as_the_same_root_installed_file_in_the_hosts_view",
    ) {
        return;
    }
    let host = tempfile::tempdir().expect("tempdir");
    let proc = tempfile::tempdir().expect("tempdir");
    fs::create_dir(proc.path().join("1")).expect("mkdir");
    std::os::unix::fs::symlink(host.path(), proc.path().join("1/root")).expect("symlink");
    let procfs = ProcFs::new(proc.path().to_owned());
    let chmod = |path: &Path, mode: u32| {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    };
    let bin = host.path().join("opt/lab/bin");
    fs::create_dir_all(&bin).expect("mkdir");
    for dir in ["opt", "opt/lab", "opt/lab/bin"] {
        chmod(&host.path().join(dir), 0o755);
    }
    fs::write(bin.join("tool"), "registered").expect("write");
    fs::write(bin.join("copy"), "registered").expect("write");
    chmod(&bin.join("tool"), 0o755);
    let tool = Path::new("/opt/lab/bin/tool");
    let running = fs::metadata(bin.join("tool")).expect("stat");
    assert!(procfs.root_installed(tool, &running));

    let other = fs::metadata(bin.join("copy")).expect("stat");
    assert!(
        !procfs.root_installed(tool, &other),
        "another file (a bind mount over the path) is not the registered one"
    );
    let cases: [(&str, u32, bool); 4] = [
        ("opt/lab", 0o777, false),
        ("opt/lab", 0o1777, true),
        ("opt/lab/bin/tool", 0o775, false),
        ("opt", 0o757, false),
    ];
    for (path, mode, verified) in cases {
        let at = host.path().join(path);
        let before = fs::metadata(&at).expect("stat").permissions().mode() & 0o7777;
        chmod(&at, mode);
        assert_eq!(
            procfs.root_installed(tool, &running),
            verified,
            "{path} {mode:o}"
        );
        chmod(&at, before);
    }
    std::os::unix::fs::chown(bin.join("tool"), Some(65_534), None).expect("chown");
    assert!(
        !procfs.root_installed(tool, &fs::metadata(bin.join("tool")).expect("stat")),
        "a user's file"
    );
    std::os::unix::fs::chown(bin.join("tool"), Some(0), None).expect("chown");
    fs::rename(host.path().join("opt/lab"), host.path().join("opt/real")).expect("mv");
    std::os::unix::fs::symlink("real", host.path().join("opt/lab")).expect("symlink");
    assert!(
        !procfs.root_installed(tool, &running),
        "a path through a symlink is not the path that runs"
    );
}
