//! Operator overrides on top of the policy files: revocations made with `fhirwall revoke`. They
//! outlive reloads and restarts (a file in the state directory), because a revocation that a
//! restart silently undid would be worse than none. `fhirwall reinstate` removes one.

use std::{
    collections::BTreeMap,
    fs, io,
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use fhirwall_policy::{IntegrationStatus, Policy};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub reason: String,
    pub by: String,
    pub at: jiff::Timestamp,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    pub revoked: BTreeMap<String, Revocation>,
}

#[derive(Debug, thiserror::Error)]
pub enum OverrideError {
    #[error("cannot read or write the operator overrides {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An unreadable revocation list must not quietly reinstate anyone: the agent refuses to
    /// start until an operator fixes or removes the file.
    #[error("the operator overrides {path} are not valid JSON")]
    Invalid {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl Overrides {
    /// The overrides in `path`; none when the file does not exist.
    pub fn load(path: &Path) -> Result<Self, OverrideError> {
        match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| OverrideError::Invalid {
                path: path.to_owned(),
                source,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(OverrideError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Writes atomically (temporary file, fsync, rename), mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), OverrideError> {
        let err = |source| OverrideError::Io {
            path: path.to_owned(),
            source,
        };
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_vec_pretty(self).map_err(|e| err(io::Error::other(e)))?;
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?;
        file.write_all(&text)
            .and_then(|()| file.sync_all())
            .map_err(err)?;
        fs::rename(&tmp, path).map_err(err)
    }

    /// The policy as enforced: revoked integrations get `status: revoked`.
    pub fn apply(&self, policy: &mut Policy) {
        for integration in &mut policy.integrations {
            if self.revoked.contains_key(&integration.name) {
                integration.status = IntegrationStatus::Revoked;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("overrides.json");
        assert_eq!(
            Overrides::load(&path).expect("missing is empty"),
            Overrides::default()
        );
        let mut o = Overrides::default();
        let at = "2026-11-28T12:00:00Z".parse().expect("ts");
        o.revoked.insert(
            "lab".into(),
            Revocation {
                reason: "leaked token".into(),
                by: "root".into(),
                at,
            },
        );
        o.save(&path).expect("save");
        assert_eq!(Overrides::load(&path).expect("load"), o);
        fs::write(&path, "{ not json").expect("write");
        assert!(matches!(
            Overrides::load(&path),
            Err(OverrideError::Invalid { .. })
        ));
    }
}
