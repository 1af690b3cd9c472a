//! Certificate and key files: written so that a private key is never readable by anyone but its
//! owner, not even for the instant between creating a file and restricting it; keys read only
//! from owner-only regular files of the agent's user (never through a symlink), certificates with
//! PEM parsing (rustls-pki-types).

use std::{fs::File, io::Read, path::Path};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use super::TlsError;
use crate::private_files;

/// Mode of the private key: owner read/write only.
pub(super) const KEY_MODE: u32 = 0o600;
/// Mode of the node CA's certificate. It is public (`fhirwall ca export` prints it), but it lives
/// in the state directory, where every file is the agent's user's alone.
pub(super) const CERT_MODE: u32 = 0o600;
/// Certificates and keys are small; anything bigger is not one of ours.
const MAX_FILE: u64 = 1 << 20;

/// Creates `dir` (and parents) if missing (see [`private_files::create_dir`]).
pub(super) fn create_dir(dir: &Path) -> Result<(), TlsError> {
    private_files::create_dir(dir).map_err(file_error)
}

/// Writes `dir/name` atomically with `mode` (see [`private_files::write_atomic`]).
pub(super) fn write_atomic(
    dir: &Path,
    name: &str,
    contents: &[u8],
    mode: u32,
) -> Result<(), TlsError> {
    private_files::write_atomic(dir, name, contents, mode).map_err(file_error)
}

/// Syncs `dir`, so renames and new entries in it survive a crash.
pub(super) fn sync_dir(dir: &Path) -> Result<(), TlsError> {
    private_files::sync_dir(dir).map_err(file_error)
}

/// A write's failure, said as the CA store's other file errors are.
fn file_error(e: private_files::PrivateFileError) -> TlsError {
    match e {
        private_files::PrivateFileError::Io {
            path,
            action,
            source,
        } => TlsError::File {
            path,
            action,
            source,
        },
        other => TlsError::KeyFile(other),
    }
}

/// Reads a private key file: a regular file of the agent's user that group and others cannot
/// access, not reached through a symlink (see [`private_files::open_private`]).
pub(super) fn read_private(path: &Path) -> Result<String, TlsError> {
    let (file, _) = private_files::open_private(path)?;
    read_text(path, file)
}

/// Reads a certificate (public) file.
pub(super) fn read_public(path: &Path) -> Result<String, TlsError> {
    read_text(path, open(path)?)
}

/// A PEM file of one or more certificates (a chain leaf first, or a CA bundle).
pub(super) fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text = read_public(path)?;
    let bad = |reason| TlsError::BadPem {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad("malformed PEM"))?;
    if certs.is_empty() {
        return Err(bad("no PEM CERTIFICATE block"));
    }
    Ok(certs)
}

/// A PEM private key (PKCS#8, SEC1 or PKCS#1), with the permission check of [`read_private`].
pub(super) fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = read_private(path)?;
    PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|_| TlsError::BadPem {
        path: path.to_owned(),
        reason: "no PEM private key",
    })
}

fn open(path: &Path) -> Result<File, TlsError> {
    File::open(path).map_err(|source| TlsError::File {
        path: path.to_owned(),
        action: "open",
        source,
    })
}

fn read_text(path: &Path, file: File) -> Result<String, TlsError> {
    let mut text = String::new();
    file.take(MAX_FILE)
        .read_to_string(&mut text)
        .map_err(|source| TlsError::File {
            path: path.to_owned(),
            action: "read",
            source,
        })?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use std::{
        fs::{self, Permissions},
        os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    };

    use super::*;

    #[test]
    fn writes_with_exact_mode_whatever_the_umask() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_atomic(dir.path(), "k", b"secret", KEY_MODE).expect("write");
        write_atomic(dir.path(), "c", b"public", CERT_MODE).expect("write");
        let mode = |n| fs::metadata(dir.path().join(n)).expect("stat").mode() & 0o7777;
        assert_eq!(mode("k"), 0o600);
        assert_eq!(mode("c"), 0o600);
        assert_eq!(read_private(&dir.path().join("k")).expect("read"), "secret");
        // Rewriting replaces the content; no temporary file is left behind.
        write_atomic(dir.path(), "k", b"other", KEY_MODE).expect("rewrite");
        assert_eq!(read_private(&dir.path().join("k")).expect("read"), "other");
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn refuses_keys_others_can_access() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k");
        for mode in [0o644, 0o640, 0o604, 0o660, 0o606, 0o700 | 0o004] {
            fs::write(&path, "key").expect("write");
            fs::set_permissions(&path, Permissions::from_mode(mode)).expect("chmod");
            match read_private(&path) {
                Err(TlsError::KeyFile(private_files::PrivateFileError::Mode {
                    mode: got, ..
                })) => {
                    assert_eq!(got, mode);
                }
                other => panic!("mode {mode:o}: expected a mode refusal, got {other:?}"),
            }
        }
        for mode in [0o600, 0o400] {
            fs::set_permissions(&path, Permissions::from_mode(mode)).expect("chmod");
            assert_eq!(read_private(&path).expect("owner-only key"), "key");
        }
    }
}
