//! SHA-256 of the executable a process runs, cached per file version, computed once however many
//! connections ask for it at the same time.
//!
//! The file is read through `/proc/<tgid>/exe`, not through its path: that link opens the very
//! inode the process executes, even when the path has since been replaced, unlinked, or never
//! existed (memfd). The cache key comes from `fstat` of that open file: device, inode, size,
//! mtime and ctime. ctime is there because mtime can be set back with `utimensat` after an
//! in-place rewrite; ctime cannot be set by anyone, and any write or `utimensat` moves it.

use std::{
    fmt::Write as _,
    fs::{File, Metadata},
    io::{self, Read as _},
    num::NonZeroUsize,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use lru::LruCache;
use ring::digest::{Context, SHA256};
use tokio::sync::OnceCell;

use super::AttributionError;

/// What hashing an executable gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExeDigest {
    /// Lowercase hex SHA-256.
    Sha256(String),
    /// Larger than the configured cap: not hashed, so no sha256 selector can match it.
    TooLarge { size: u64 },
}

/// One version of one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileKey {
    fn of(meta: &Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

type Slot = Arc<OnceCell<ExeDigest>>;

/// Hashes executables, caching results (LRU, bounded) by file version.
pub struct ExeHasher {
    max_bytes: u64,
    cache: Mutex<LruCache<FileKey, Slot>>,
    computed: AtomicU64,
}

impl ExeHasher {
    #[must_use]
    pub fn new(max_bytes: u64, capacity: NonZeroUsize) -> Self {
        Self {
            max_bytes,
            cache: Mutex::new(LruCache::new(capacity)),
            computed: AtomicU64::new(0),
        }
    }

    /// The digest of `file`, opened by the caller (through `/proc/<tgid>/exe`); `path` only names
    /// it in errors. Hashing runs on the blocking pool; concurrent first requests for the same
    /// file version wait for one computation. Failures are not cached: the next request retries.
    pub async fn digest(&self, file: File, path: &Path) -> Result<ExeDigest, AttributionError> {
        let meta = file.metadata().map_err(|source| AttributionError::Hash {
            path: path.to_owned(),
            source,
        })?;
        let key = FileKey::of(&meta);
        let slot = self.slot(key);
        let max = self.max_bytes;
        let path = path.to_owned();
        let digest = slot
            .get_or_try_init(|| async move {
                self.computed.fetch_add(1, Ordering::Relaxed);
                tokio::task::spawn_blocking(move || hash_file(&file, key, max, path))
                    .await
                    .map_err(|source| AttributionError::Blocking { source })?
            })
            .await?;
        Ok(digest.clone())
    }

    /// How many hash computations started (for tests and metrics).
    #[must_use]
    pub fn computed(&self) -> u64 {
        self.computed.load(Ordering::Relaxed)
    }

    fn slot(&self, key: FileKey) -> Slot {
        Arc::clone(super::lock(&self.cache).get_or_insert(key, Slot::default))
    }
}

/// Reads the whole file (at most `max` bytes) and checks it did not change meanwhile.
fn hash_file(
    mut file: &File,
    key: FileKey,
    max: u64,
    path: PathBuf,
) -> Result<ExeDigest, AttributionError> {
    if key.size > max {
        return Ok(ExeDigest::TooLarge { size: key.size });
    }
    let io_err = |source: io::Error| AttributionError::Hash {
        path: path.clone(),
        source,
    };
    let mut context = Context::new(&SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(e)),
        };
        total += n as u64;
        if total > max {
            return Err(AttributionError::ExeChanged { path });
        }
        context.update(&buf[..n]);
    }
    let after = FileKey::of(&file.metadata().map_err(io_err)?);
    if after != key || total != key.size {
        return Err(AttributionError::ExeChanged { path });
    }
    Ok(ExeDigest::Sha256(hex(context.finish().as_ref())))
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests;
