//! Credentials: which Authorization values an integration may present (by fingerprint, so the
//! policy never holds a secret) and what the sidecar sends upstream in its place.

use std::{fmt, path::PathBuf};

use serde::{Deserialize, Serialize};

/// SHA-256 of an Authorization header value (the bytes as sent, without surrounding
/// whitespace). Written `sha256:` + 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of an Authorization header value.
    #[must_use]
    pub fn of_authorization(value: &[u8]) -> Fingerprint {
        let trimmed = value.trim_ascii();
        let digest = ring::digest::digest(&ring::digest::SHA256, trimmed);
        let mut out = [0u8; 32];
        // SHA-256 digests are 32 bytes by definition.
        out.copy_from_slice(digest.as_ref());
        Fingerprint(out)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Only the prefix: a fingerprint is not secret, but it need not fill logs either.
impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sha256:{:02x}{:02x}{:02x}{:02x}…",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

impl TryFrom<String> for Fingerprint {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let bad = || {
            "a credential fingerprint is sha256: followed by 64 lowercase hex digits (e.g. \
             `printf %s \"$AUTH\" | sha256sum`)"
                .to_owned()
        };
        let hex = text.strip_prefix("sha256:").ok_or_else(bad)?;
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            let digit = |c: u8| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            };
            let (Some(hi), Some(lo)) = (digit(pair[0]), digit(pair[1])) else {
                return Err(bad());
            };
            *byte = hi << 4 | lo;
        }
        Ok(Fingerprint(out))
    }
}

impl From<Fingerprint> for String {
    fn from(f: Fingerprint) -> Self {
        f.to_string()
    }
}

/// An HTTP header name (RFC 9110 section 5.1: a token), matched case-insensitively.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HeaderName(String);

impl HeaderName {
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `name` is this header (case-insensitive).
    #[must_use]
    pub fn is(&self, name: &str) -> bool {
        self.0.eq_ignore_ascii_case(name)
    }
}

impl TryFrom<String> for HeaderName {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        // tchar of RFC 9110 section 5.6.2.
        let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || name.len() > 64 || !name.bytes().all(tchar) {
            return Err(format!("`{name}` is not an HTTP header name"));
        }
        Ok(HeaderName(name))
    }
}

impl From<HeaderName> for String {
    fn from(h: HeaderName) -> Self {
        h.0
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An absolute file path (secrets and keys are read by the sidecar when it connects upstream,
/// so a missing file fails that connection closed rather than the policy load: secrets are
/// often mounted after the policy is written).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PathBuf", into = "PathBuf")]
pub struct SecretPath(PathBuf);

impl SecretPath {
    #[must_use]
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl TryFrom<PathBuf> for SecretPath {
    type Error = String;

    fn try_from(path: PathBuf) -> Result<Self, Self::Error> {
        let dotted = path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir));
        if !path.is_absolute() || dotted {
            return Err(format!(
                "`{}` must be an absolute path without ..",
                path.display()
            ));
        }
        Ok(SecretPath(path))
    }
}

impl From<SecretPath> for PathBuf {
    fn from(p: SecretPath) -> Self {
        p.0
    }
}

/// A credential the sidecar puts on every forwarded request instead of the one the workload
/// sent. The value lives in a file; the policy only names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectCredential {
    pub header: HeaderName,
    pub value_file: SecretPath,
}

/// A TLS client certificate for the upstream connection (mTLS).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertificate {
    pub cert_file: SecretPath,
    pub key_file: SecretPath,
}

/// What an integration presents and what the sidecar presents for it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// Fingerprints of the Authorization values the workload may send. Empty: not checked.
    #[serde(default)]
    pub accepted: Vec<Fingerprint>,
    #[serde(default)]
    pub inject: Option<InjectCredential>,
    /// A short-lived token the agent obtains for the integration (SMART Backend Services) and
    /// sends as `Authorization: Bearer` in place of whatever the workload sent.
    #[serde(default)]
    pub broker: Option<super::broker::TokenBroker>,
    #[serde(default)]
    pub client_certificate: Option<ClientCertificate>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_round_trip_and_ignore_surrounding_space() {
        let f = Fingerprint::of_authorization(b" Bearer abc \t");
        let g = Fingerprint::of_authorization(b"Bearer abc");
        assert_eq!(f, g);
        assert_ne!(f, Fingerprint::of_authorization(b"Bearer abd"));
        let text = f.to_string();
        assert_eq!(text.len(), 7 + 64);
        assert_eq!(Fingerprint::try_from(text), Ok(f));
        // printf %s 'Bearer abc' | sha256sum
        assert_eq!(
            g.to_string(),
            "sha256:c355dce96c1612880d11940ffdd9014d386c253e0c3652a6cd06a7226f7bd2b6"
        );
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            "ab",
            "sha256:AB",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("sha1:{}", "a".repeat(64)),
            &format!("sha256:{}", "g".repeat(64)),
        ] {
            assert!(Fingerprint::try_from(bad.to_owned()).is_err(), "{bad}");
        }
        assert!(HeaderName::try_from("X-Purpose-Of-Use".to_owned()).is_ok());
        assert!(HeaderName::try_from("X Purpose".to_owned()).is_err());
        assert!(HeaderName::try_from(String::new()).is_err());
        assert!(SecretPath::try_from(PathBuf::from("secrets/x")).is_err());
        assert!(SecretPath::try_from(PathBuf::from("/etc/../x")).is_err());
        assert!(SecretPath::try_from(PathBuf::from("/etc/fhirwall/secrets/x")).is_ok());
    }
}
