//! Credentials the sidecar injects upstream, read from the files the policy names. Cached and
//! re-read when the file changes, so a rotated secret takes effect without a reload. A file that
//! cannot be read fails the request closed: nothing goes upstream with the wrong credential.

use std::{
    collections::HashMap,
    io::{self, Read as _},
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;

use crate::private_files::{self, PrivateFileError};

/// How long a cached value is used before the file's modification time is checked again.
const RECHECK: Duration = Duration::from_secs(5);
/// Larger files are not credentials.
const MAX_SECRET: u64 = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the secret file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the secret file {path} is empty or too large")]
    Unusable { path: PathBuf },
    /// Another user could read it, owns it, or could swap it (a symlink).
    #[error(transparent)]
    Unsafe(#[from] PrivateFileError),
}

struct Cached {
    value: Bytes,
    modified: SystemTime,
    checked: Instant,
}

#[derive(Default)]
pub struct Secrets {
    cache: Mutex<HashMap<PathBuf, Cached>>,
}

impl Secrets {
    /// The file's content without its trailing newline.
    pub fn read(&self, path: &Path) -> Result<Bytes, SecretError> {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = cache.get(path)
            && c.checked.elapsed() < RECHECK
        {
            return Ok(c.value.clone());
        }
        let err = |source| SecretError::Read {
            path: path.to_owned(),
            source,
        };
        // Checked on every re-read, cached or not: a secret whose file turned readable by others
        // or was replaced by another user's is refused at once.
        let (file, meta) = private_files::open_private(path)?;
        let modified = meta.modified().map_err(err)?;
        if let Some(c) = cache.get_mut(path)
            && c.modified == modified
        {
            c.checked = Instant::now();
            return Ok(c.value.clone());
        }
        let unusable = || SecretError::Unusable {
            path: path.to_owned(),
        };
        if meta.len() > MAX_SECRET {
            return Err(unusable());
        }
        let mut text = Vec::new();
        file.take(MAX_SECRET + 1)
            .read_to_end(&mut text)
            .map_err(err)?;
        let value = Bytes::from(text.trim_ascii_end().to_vec());
        if value.is_empty() {
            return Err(unusable());
        }
        cache.insert(
            path.to_owned(),
            Cached {
                value: value.clone(),
                modified,
                checked: Instant::now(),
            },
        );
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::PermissionsExt as _};

    use super::*;

    #[test]
    fn reads_trims_and_refuses_readable_by_others_symlinks_and_missing_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        fs::write(&path, "Bearer abc\n").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        let secrets = Secrets::default();
        assert_eq!(
            secrets.read(&path).expect("readable").as_ref(),
            b"Bearer abc"
        );
        let other = dir.path().join("open");
        fs::write(&other, "x").expect("write");
        fs::set_permissions(&other, fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            secrets.read(&other),
            Err(SecretError::Unsafe(PrivateFileError::Mode {
                mode: 0o644,
                ..
            }))
        ));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).expect("symlink");
        assert!(matches!(
            secrets.read(&link),
            Err(SecretError::Unsafe(PrivateFileError::Symlink { .. }))
        ));
        assert!(matches!(
            secrets.read(&dir.path().join("missing")),
            Err(SecretError::Unsafe(PrivateFileError::Io { .. }))
        ));
        let large = dir.path().join("large");
        fs::write(&large, vec![b'a'; 16 * 1024 + 1]).expect("write");
        fs::set_permissions(&large, fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(matches!(
            secrets.read(&large),
            Err(SecretError::Unusable { .. })
        ));
    }

    #[test]
    fn a_cached_secret_whose_file_turns_readable_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        fs::write(&path, "abc").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        let secrets = Secrets::default();
        secrets.read(&path).expect("readable");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        // Past the recheck interval, as a request a few seconds later would be.
        if let Some(c) = secrets.cache.lock().expect("lock").get_mut(path.as_path()) {
            c.checked = Instant::now().checked_sub(RECHECK).expect("uptime");
        }
        assert!(matches!(
            secrets.read(&path),
            Err(SecretError::Unsafe(PrivateFileError::Mode { .. }))
        ));
    }
}
