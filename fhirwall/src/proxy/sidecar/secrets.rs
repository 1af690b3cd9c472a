//! Credentials the sidecar injects upstream, read from the files the policy names. Cached and
//! re-read when the file changes, so a rotated secret takes effect without a reload. A file that
//! cannot be read fails the request closed: nothing goes upstream with the wrong credential.

use std::{
    collections::HashMap,
    fs, io,
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;

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
    #[error("the secret file {path} is empty, too large or has group/other permissions")]
    Unusable { path: PathBuf },
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
        let meta = fs::metadata(path).map_err(err)?;
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
        if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o077 != 0
            || meta.len() > MAX_SECRET
        {
            return Err(unusable());
        }
        let text = fs::read(path).map_err(err)?;
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
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn reads_trims_and_refuses_readable_by_others() {
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
            Err(SecretError::Unusable { .. })
        ));
        assert!(matches!(
            secrets.read(&dir.path().join("missing")),
            Err(SecretError::Read { .. })
        ));
    }
}
