use std::{fs, os::unix::fs::PermissionsExt as _, path::Path};

use super::*;

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).expect("stat").mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn a_missing_state_directory_is_created_owner_only() {
    let base = tempfile::tempdir().expect("tempdir");
    let dir = base.path().join("var/lib/fhirwall");
    assert_eq!(
        secure_state_dir(&dir).expect("created"),
        Vec::<PathBuf>::new()
    );
    assert_eq!(mode(&dir), 0o700);
}

#[test]
fn a_readable_state_directory_is_narrowed_to_its_owner_throughout() {
    let base = tempfile::tempdir().expect("tempdir");
    let dir = base.path().join("state");
    // Path under the state directory (directories have no dot, and come first), mode found,
    // mode left.
    let table = [
        ("", 0o755, 0o700),
        ("journal", 0o775, 0o700),
        ("ca", 0o711, 0o700),
        ("audit.db", 0o644, 0o600),
        ("journal/00000001.seg", 0o664, 0o600),
        ("ca/ca.pem", 0o604, 0o600),
        ("ca/ca.key", 0o600, 0o600),
        ("ca/old.pem", 0o444, 0o400),
        ("overrides.json", 0o4640, 0o600),
    ];
    for (name, before, _) in table {
        let path = dir.join(name);
        if name.contains('.') {
            fs::write(&path, "x").expect("write");
        } else {
            fs::create_dir_all(&path).expect("mkdir");
        }
        chmod(&path, before);
    }
    let mut narrowed = secure_state_dir(&dir).expect("secured");
    narrowed.sort();
    let mut expected: Vec<PathBuf> = table
        .iter()
        .filter(|(_, before, after)| before != after)
        .map(|(name, ..)| dir.join(name))
        .collect();
    expected.sort();
    assert_eq!(narrowed, expected);
    for (name, _, after) in table {
        assert_eq!(mode(&dir.join(name)), after, "{name}");
    }
    assert!(
        secure_state_dir(&dir).expect("again").is_empty(),
        "a private directory needs nothing"
    );
}

#[test]
fn symlinks_and_special_files_in_the_state_directory_are_refused() {
    let base = tempfile::tempdir().expect("tempdir");
    let dir = base.path().join("state");
    fs::create_dir(&dir).expect("mkdir");
    std::os::unix::fs::symlink("/etc/passwd", dir.join("audit.db")).expect("symlink");
    assert!(matches!(
        secure_state_dir(&dir),
        Err(PrivateFileError::Symlink { path }) if path == dir.join("audit.db")
    ));
    fs::remove_file(dir.join("audit.db")).expect("rm");
    nix::unistd::mkfifo(&dir.join("fifo"), stat::Mode::S_IRWXU).expect("mkfifo");
    assert!(matches!(
        secure_state_dir(&dir),
        Err(PrivateFileError::NotRegular { .. })
    ));

    let linked = base.path().join("linked");
    std::os::unix::fs::symlink(&dir, &linked).expect("symlink");
    assert!(matches!(
        secure_state_dir(&linked),
        Err(PrivateFileError::Symlink { .. })
    ));
    let file = base.path().join("file");
    fs::write(&file, "x").expect("write");
    assert!(matches!(
        secure_state_dir(&file),
        Err(PrivateFileError::NotDirectory { .. })
    ));
}

#[test]
fn a_private_file_is_a_regular_owner_only_file_not_reached_through_a_symlink() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("key");
    fs::write(&key, "secret").expect("write");
    for m in [0o600, 0o400] {
        chmod(&key, m);
        let (_, meta) = open_private(&key).expect("owner-only file");
        assert_eq!(meta.len(), 6);
    }
    for m in [0o644, 0o640, 0o604, 0o620, 0o602, 0o610] {
        chmod(&key, m);
        assert!(
            matches!(open_private(&key), Err(PrivateFileError::Mode { mode, .. }) if mode == m),
            "{m:o}"
        );
    }
    chmod(&key, 0o600);
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&key, &link).expect("symlink");
    assert!(matches!(
        open_private(&link),
        Err(PrivateFileError::Symlink { .. })
    ));
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, stat::Mode::S_IRUSR | stat::Mode::S_IWUSR).expect("mkfifo");
    assert!(matches!(
        open_private(&fifo),
        Err(PrivateFileError::NotRegular { .. })
    ));
    assert!(matches!(
        open_private(dir.path()),
        Err(PrivateFileError::NotRegular { .. })
    ));
    assert!(matches!(
        open_private(&dir.path().join("missing")),
        Err(PrivateFileError::Io { action: "open", .. })
    ));
}
