//! The integrations' signing keys: one directory per integration under the key store
//! (`<state_dir>/keys/<integration>/`), one PEM file per key, named
//! `<not-before, unix seconds>-<kid>.pem`, owner-only.
//!
//! The key in use is the newest whose not-before has passed. A rotation adds a key whose
//! not-before lies an overlap ahead: both are published in the JWKS while the authorization
//! server learns the new one, then the new one signs and the old one leaves the JWKS. The key
//! id is the key's RFC 7638 thumbprint, so the same key always has the same id.

use std::{
    fs,
    io::{self, Read as _},
    path::{Path, PathBuf},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jiff::Timestamp;
use ring::signature::{self, KeyPair as _};
use rustls::pki_types::{PrivateKeyDer, pem::PemObject as _};
use serde_json::{Value, json};

use crate::private_files::{self, PrivateFileError};

/// The algorithms SMART Backend Services asks servers to accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// ECDSA P-384 with SHA-384 (what `keygen` creates).
    Es384,
    /// RSASSA-PKCS1-v1_5 with SHA-384 (imported keys).
    Rs384,
}

impl Algorithm {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Es384 => "ES384",
            Self::Rs384 => "RS384",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Not the agent's own owner-only file, or writing one failed.
    #[error(transparent)]
    File(#[from] PrivateFileError),
    #[error(
        "{path}: not a usable signing key ({reason}); use a P-384 EC key (PKCS#8) or an RSA key \
         of 2048 bits or more (PKCS#1, `openssl rsa -traditional`)"
    )]
    Unusable { path: PathBuf, reason: &'static str },
    #[error("creating a key failed")]
    Generate(#[source] rcgen::Error),
    #[error(
        "integration `{integration}` has no signing key in {dir} (`fhirwall credentials keygen`)"
    )]
    NoKey { integration: String, dir: PathBuf },
    #[error("`{0}` is not an integration name")]
    BadName(String),
}

/// One key of an integration, as stored.
#[derive(Clone, Debug)]
pub struct StoredKey {
    pub kid: String,
    pub algorithm: Algorithm,
    pub not_before: Timestamp,
    pub path: PathBuf,
    /// The public JWK (with `kid`, `alg` and `use`).
    pub public: Value,
}

/// The key an assertion is signed with.
pub struct SigningKey {
    pub kid: String,
    pub algorithm: Algorithm,
    pub key: jsonwebtoken::EncodingKey,
}

/// The key store's root directory.
#[derive(Clone, Debug)]
pub struct KeyStore {
    dir: PathBuf,
}

impl KeyStore {
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn integration_dir(&self, integration: &str) -> Result<PathBuf, KeyError> {
        let valid = !integration.is_empty()
            && integration
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(KeyError::BadName(integration.to_owned()));
        }
        Ok(self.dir.join(integration))
    }

    /// Creates a P-384 key that signs from `not_before` on.
    pub fn generate(
        &self,
        integration: &str,
        not_before: Timestamp,
    ) -> Result<StoredKey, KeyError> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
            .map_err(KeyError::Generate)?;
        self.store(integration, pair.serialize_pem().as_bytes(), not_before)
    }

    /// Stores an existing key (PEM) that signs from `not_before` on.
    pub fn store(
        &self,
        integration: &str,
        pem: &[u8],
        not_before: Timestamp,
    ) -> Result<StoredKey, KeyError> {
        let dir = self.integration_dir(integration)?;
        // Whole seconds, as the file name keeps it.
        let not_before = Timestamp::from_second(not_before.as_second()).unwrap_or(not_before);
        let (algorithm, public) = public_jwk(pem, &dir)?;
        let kid = thumbprint(&public);
        let name = format!("{}-{kid}.pem", not_before.as_second());
        private_files::create_dir(&dir)?;
        private_files::write_atomic(&dir, &name, pem, 0o600)?;
        let path = dir.join(name);
        Ok(stored(kid, algorithm, not_before, path, public))
    }

    /// The integrations that have a key directory, by name.
    pub fn integrations(&self) -> Result<Vec<String>, KeyError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(KeyError::Io {
                    what: "reading",
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// The integration's keys, oldest first.
    pub fn keys(&self, integration: &str) -> Result<Vec<StoredKey>, KeyError> {
        let dir = self.integration_dir(integration)?;
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(KeyError::Io {
                    what: "reading",
                    path: dir,
                    source,
                });
            }
        };
        let mut keys = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(not_before) = file_not_before(&path) else {
                continue;
            };
            let pem = read_private(&path)?;
            let (algorithm, public) = public_jwk(&pem, &path)?;
            keys.push(stored(
                thumbprint(&public),
                algorithm,
                not_before,
                path,
                public,
            ));
        }
        keys.sort_by_key(|k| k.not_before);
        Ok(keys)
    }

    /// The keys to publish at `now`: the one in use and those waiting for their not-before.
    pub fn published(&self, integration: &str, now: Timestamp) -> Result<Vec<StoredKey>, KeyError> {
        let keys = self.keys(integration)?;
        let in_use = keys.iter().rposition(|k| k.not_before <= now).unwrap_or(0);
        Ok(keys.into_iter().skip(in_use).collect())
    }

    /// Deletes the keys a newer key has replaced at `now`; returns their ids.
    pub fn prune(&self, integration: &str, now: Timestamp) -> Result<Vec<String>, KeyError> {
        let keys = self.keys(integration)?;
        let in_use = keys.iter().rposition(|k| k.not_before <= now).unwrap_or(0);
        let mut removed = Vec::new();
        for key in &keys[..in_use] {
            fs::remove_file(&key.path).map_err(|source| KeyError::Io {
                what: "removing",
                path: key.path.clone(),
                source,
            })?;
            removed.push(key.kid.clone());
        }
        Ok(removed)
    }

    /// The key that signs at `now`.
    pub fn signing_key(&self, integration: &str, now: Timestamp) -> Result<SigningKey, KeyError> {
        let key = self
            .keys(integration)?
            .into_iter()
            .rev()
            .find(|k| k.not_before <= now)
            .ok_or_else(|| KeyError::NoKey {
                integration: integration.to_owned(),
                dir: self.dir.join(integration),
            })?;
        let pem = read_private(&key.path)?;
        let der =
            PrivateKeyDer::from_pem_slice(&pem).map_err(|_| unusable(&key.path, "not PEM"))?;
        let encoding = match (&der, key.algorithm) {
            (PrivateKeyDer::Pkcs8(k), Algorithm::Es384) => {
                jsonwebtoken::EncodingKey::from_ec_der(k.secret_pkcs8_der())
            }
            (PrivateKeyDer::Pkcs1(k), Algorithm::Rs384) => {
                jsonwebtoken::EncodingKey::from_rsa_der(k.secret_pkcs1_der())
            }
            _ => return Err(unusable(&key.path, "unexpected key encoding")),
        };
        Ok(SigningKey {
            kid: key.kid,
            algorithm: key.algorithm,
            key: encoding,
        })
    }
}

/// The JWKS document of `keys`.
#[must_use]
pub fn jwks<'a>(keys: impl IntoIterator<Item = &'a StoredKey>) -> Value {
    json!({ "keys": keys.into_iter().map(|k| k.public.clone()).collect::<Vec<_>>() })
}

fn stored(
    kid: String,
    algorithm: Algorithm,
    not_before: Timestamp,
    path: PathBuf,
    mut public: Value,
) -> StoredKey {
    public["kid"] = json!(kid);
    public["alg"] = json!(algorithm.as_str());
    public["use"] = json!("sig");
    StoredKey {
        kid,
        algorithm,
        not_before,
        path,
        public,
    }
}

/// `<unix seconds>-<kid>.pem` -> the not-before; `None` for other files.
fn file_not_before(path: &Path) -> Option<Timestamp> {
    let name = path.file_name()?.to_str()?.strip_suffix(".pem")?;
    let (seconds, _) = name.split_once('-')?;
    Timestamp::from_second(seconds.parse().ok()?).ok()
}

fn unusable(path: &Path, reason: &'static str) -> KeyError {
    KeyError::Unusable {
        path: path.to_owned(),
        reason,
    }
}

/// The algorithm and the members of the public JWK that its thumbprint covers.
fn public_jwk(pem: &[u8], path: &Path) -> Result<(Algorithm, Value), KeyError> {
    let der = PrivateKeyDer::from_pem_slice(pem).map_err(|_| unusable(path, "not PEM"))?;
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    match der {
        PrivateKeyDer::Pkcs8(k) => {
            let pair = signature::EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                k.secret_pkcs8_der(),
                &ring::rand::SystemRandom::new(),
            )
            .map_err(|_| unusable(path, "not a P-384 EC key"))?;
            // An uncompressed point: 0x04, then x and y of 48 bytes each (SEC 1, 2.3.3).
            let point = pair.public_key().as_ref();
            let (x, y) = point[1..].split_at(48);
            Ok((
                Algorithm::Es384,
                json!({ "crv": "P-384", "kty": "EC", "x": b64(x), "y": b64(y) }),
            ))
        }
        PrivateKeyDer::Pkcs1(k) => {
            let pair = signature::RsaKeyPair::from_der(k.secret_pkcs1_der())
                .map_err(|_| unusable(path, "not a valid RSA key"))?;
            if pair.public().modulus_len() < 256 {
                return Err(unusable(
                    path,
                    "RSA keys shorter than 2048 bits are refused",
                ));
            }
            let public = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public());
            Ok((
                Algorithm::Rs384,
                json!({ "e": b64(&public.e), "kty": "RSA", "n": b64(&public.n) }),
            ))
        }
        _ => Err(unusable(path, "unsupported key encoding")),
    }
}

/// RFC 7638: SHA-256 over the required members in lexicographic order, no whitespace.
/// serde_json's maps are ordered by key (no `preserve_order` feature), which is that order.
fn thumbprint(public: &Value) -> String {
    let canonical = public.to_string();
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        canonical.as_bytes(),
    ))
}

fn read_private(path: &Path) -> Result<Vec<u8>, KeyError> {
    let (file, _) = private_files::open_private(path)?;
    let mut pem = Vec::new();
    file.take(64 * 1024)
        .read_to_end(&mut pem)
        .map_err(|source| KeyError::Io {
            what: "reading",
            path: path.to_owned(),
            source,
        })?;
    Ok(pem)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn a_rotation_publishes_both_keys_until_the_new_one_signs() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path().join("keys"));
        let first = store.generate("lab", at(1_000)).unwrap();
        assert_eq!(first.algorithm, Algorithm::Es384);
        assert_eq!(store.signing_key("lab", at(1_000)).unwrap().kid, first.kid);
        let next = store.generate("lab", at(2_000)).unwrap();
        assert_ne!(next.kid, first.kid);
        // During the overlap both are published and the first one still signs.
        let kids = |t| -> Vec<String> {
            store
                .published("lab", at(t))
                .unwrap()
                .into_iter()
                .map(|k| k.kid)
                .collect()
        };
        assert_eq!(kids(1_500), [first.kid.clone(), next.kid.clone()]);
        assert_eq!(store.signing_key("lab", at(1_999)).unwrap().kid, first.kid);
        // Then the next one signs and the first leaves the JWKS; pruning deletes it.
        assert_eq!(store.signing_key("lab", at(2_000)).unwrap().kid, next.kid);
        assert_eq!(kids(2_000), std::slice::from_ref(&next.kid));
        assert_eq!(
            store.prune("lab", at(2_000)).unwrap(),
            std::slice::from_ref(&first.kid)
        );
        assert!(!first.path.exists());
        assert!(matches!(
            store.signing_key("other", at(2_000)),
            Err(KeyError::NoKey { .. })
        ));
    }

    #[test]
    fn jwks_carry_the_public_half_with_its_thumbprint() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path());
        let key = store.generate("lab", at(0)).unwrap();
        let jwks = jwks([&key]);
        let jwk = &jwks["keys"][0];
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-384");
        assert_eq!(jwk["alg"], "ES384");
        assert_eq!(jwk["kid"], key.kid.as_str());
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(jwk["x"].as_str().unwrap())
                .unwrap()
                .len(),
            48
        );
        assert!(jwk.get("d").is_none(), "no private member");
        let text = fs::read_to_string(&key.path).unwrap();
        assert!(!jwks.to_string().contains(text.lines().nth(1).unwrap()));
        assert_eq!(
            fs::metadata(&key.path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn rfc7638_thumbprint_of_its_example_key() {
        // RFC 7638 section 3.1.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let public = json!({ "e": "AQAB", "kty": "RSA", "n": n });
        assert_eq!(
            thumbprint(&public),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn unusable_files_and_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path());
        assert!(matches!(
            store.store("lab", b"not a key", at(0)),
            Err(KeyError::Unusable { .. })
        ));
        let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        assert!(matches!(
            store.store("lab", p256.serialize_pem().as_bytes(), at(0)),
            Err(KeyError::Unusable { .. })
        ));
        assert!(matches!(
            store.generate("../x", at(0)),
            Err(KeyError::BadName(_))
        ));
    }
}
