//! Files only the agent's own user may read or replace: the state directory (audit journal and
//! index, node CA, operator overrides) and the secret and key files the configuration names.
//!
//! The threat is an unprivileged user on the EHR host. A group- or world-readable audit trail
//! hands them patient references; a secret file they own, or a symlink they can point elsewhere,
//! lets them choose what the agent injects or reads as its key.

use std::{
    fs::{self, File, Metadata, OpenOptions, Permissions},
    io,
    os::unix::fs::{
        DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
    },
    path::{Path, PathBuf},
};

use nix::{sys::stat, unistd::geteuid};

#[derive(Debug, thiserror::Error)]
pub enum PrivateFileError {
    #[error("{path}: {action} failed")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} is a symbolic link: secrets, keys and agent state must not be reached through one"
    )]
    Symlink { path: PathBuf },
    #[error("{path} is not a regular file")]
    NotRegular { path: PathBuf },
    #[error("{path} is not a directory")]
    NotDirectory { path: PathBuf },
    #[error("{path} is owned by uid {owner}; only the agent's user (uid {expected}) may own it")]
    Owner {
        path: PathBuf,
        owner: u32,
        expected: u32,
    },
    #[error("{path} has mode {mode:04o}; it must be readable by its owner only (0600)")]
    Mode { path: PathBuf, mode: u32 },
}

/// Creates `dir` (and parents) if missing, private to the agent's user like the rest of its state.
pub fn create_dir(dir: &Path) -> Result<(), PrivateFileError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| PrivateFileError::Io {
            path: dir.to_owned(),
            action: "create directory",
            source,
        })
}

/// Writes `dir/name` atomically with `mode` (keys, certificates). The temporary file is created
/// with `O_EXCL` and `mode` in the same `open(2)`, so the umask can only narrow it and no
/// wider-mode file ever exists; it is then set to exactly `mode` (fchmod), synced, and renamed
/// over the target, and the directory is synced so the rename survives a crash.
pub fn write_atomic(
    dir: &Path,
    name: &str,
    contents: &[u8],
    mode: u32,
) -> Result<(), PrivateFileError> {
    use std::io::Write as _;
    let target = dir.join(name);
    let temp = dir.join(format!(".{name}.{}.tmp", random_suffix()?));
    let err = |action, source| PrivateFileError::Io {
        path: temp.clone(),
        action,
        source,
    };
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)
            .map_err(|e| err("create", e))?;
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(|e| err("chmod", e))?;
        file.write_all(contents).map_err(|e| err("write", e))?;
        file.sync_all().map_err(|e| err("sync", e))?;
        fs::rename(&temp, &target).map_err(|e| err("rename", e))
    })();
    if written.is_err() {
        // Best effort: a leftover temporary file holds nothing the target would not.
        let _ = fs::remove_file(&temp);
    }
    written?;
    sync_dir(dir)
}

/// Syncs `dir`, so renames and new entries in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<(), PrivateFileError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| PrivateFileError::Io {
            path: dir.to_owned(),
            action: "sync directory",
            source,
        })
}

fn random_suffix() -> Result<String, PrivateFileError> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PrivateFileError::Io {
            path: "/dev/urandom".into(),
            action: "read random bytes",
            source: io::Error::other("system random generator failed"),
        })?;
    Ok(format!("{:016x}", u64::from_ne_bytes(bytes)))
}

/// Makes everything the process creates from now on private to its user (umask 077), whatever
/// the service manager or shell set: the audit index's SQLite files, journal segments and export
/// files are then created 0600 (directories 0700) without a window in which they were wider.
pub fn restrict_umask() {
    stat::umask(stat::Mode::from_bits_truncate(0o077));
}

/// Opens `path`, a file that holds a secret or a private key: a regular file, not reached through
/// a symlink, owned by the agent's user, with no group or other permission. Checked on the opened
/// descriptor, so a file swapped between the check and the read cannot slip past.
pub fn open_private(path: &Path) -> Result<(File, Metadata), PrivateFileError> {
    // O_NONBLOCK: a FIFO put in a secret's place must not hang the open.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| match source.raw_os_error() {
            Some(libc::ELOOP) => PrivateFileError::Symlink {
                path: path.to_owned(),
            },
            _ => io_error(path, "open", source),
        })?;
    let meta = file
        .metadata()
        .map_err(|source| io_error(path, "stat", source))?;
    if !meta.file_type().is_file() {
        return Err(PrivateFileError::NotRegular {
            path: path.to_owned(),
        });
    }
    owned(path, &meta)?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(PrivateFileError::Mode {
            path: path.to_owned(),
            mode,
        });
    }
    Ok((file, meta))
}

/// Makes `dir` the agent's private state directory and returns what had to be narrowed.
///
/// Created 0700 when missing. When it exists (left by an older version, made by a DaemonSet's
/// `hostPath`, made by hand) it must be a real directory owned by the agent's user, and every
/// mode wider than owner-only is narrowed in place: directories to 0700, files to their owner
/// bits. A symlink, a special file or an entry of another owner anywhere inside is refused, not
/// fixed: someone else put it there, and the agent will not keep its audit trail beside it.
pub fn secure_state_dir(dir: &Path) -> Result<Vec<PathBuf>, PrivateFileError> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| io_error(dir, "create", source))?,
        Err(source) => return Err(io_error(dir, "stat", source)),
        // A symlink is refused below, with its own error.
        Ok(meta) if !meta.is_dir() && !meta.is_symlink() => {
            return Err(PrivateFileError::NotDirectory {
                path: dir.to_owned(),
            });
        }
        Ok(_) => {}
    }
    let mut narrowed = Vec::new();
    secure_entry(dir, &mut narrowed)?;
    Ok(narrowed)
}

fn secure_entry(path: &Path, narrowed: &mut Vec<PathBuf>) -> Result<(), PrivateFileError> {
    let meta = fs::symlink_metadata(path).map_err(|source| io_error(path, "stat", source))?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        return Err(PrivateFileError::Symlink {
            path: path.to_owned(),
        });
    }
    if !kind.is_dir() && !kind.is_file() {
        return Err(PrivateFileError::NotRegular {
            path: path.to_owned(),
        });
    }
    owned(path, &meta)?;
    let mode = meta.mode() & 0o7777;
    let private = if kind.is_dir() { 0o700 } else { mode & 0o700 };
    if mode != private {
        fs::set_permissions(path, Permissions::from_mode(private))
            .map_err(|source| io_error(path, "chmod", source))?;
        narrowed.push(path.to_owned());
    }
    // Entries are checked before their contents: nothing another user owns is descended into.
    if kind.is_dir() {
        let entries = fs::read_dir(path).map_err(|source| io_error(path, "list", source))?;
        for entry in entries {
            let entry = entry.map_err(|source| io_error(path, "list", source))?;
            secure_entry(&entry.path(), narrowed)?;
        }
    }
    Ok(())
}

fn owned(path: &Path, meta: &Metadata) -> Result<(), PrivateFileError> {
    let expected = geteuid().as_raw();
    if meta.uid() == expected {
        Ok(())
    } else {
        Err(PrivateFileError::Owner {
            path: path.to_owned(),
            owner: meta.uid(),
            expected,
        })
    }
}

fn io_error(path: &Path, action: &'static str, source: io::Error) -> PrivateFileError {
    PrivateFileError::Io {
        path: path.to_owned(),
        action,
        source,
    }
}

#[cfg(test)]
mod tests;
