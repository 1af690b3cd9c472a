//! The node-local CA: `ca.pem` (the certificate EHR hosts trust) and `ca.key` (its private key)
//! in one directory, both 0600 in the agent's private state directory, and the short-lived leaf
//! certificates it signs for the names the sidecar answers as.
//!
//! The CA is ECDSA P-256, `basicConstraints CA:TRUE, pathlen:0` (it signs leaves only, never
//! another CA: RFC 5280 4.2.1.9), `keyUsage keyCertSign, cRLSign`, valid for months, not years.
//! Its name constraints (RFC 5280 4.2.1.10, [`Scope`]) permit the protected upstreams' names and
//! addresses as the policy had them when it was created, so a stolen CA key cannot impersonate
//! anything else to a client that checks them. An upstream added later that the constraints do
//! not cover gets no leaf until the CA is rotated (`fhirwall ca rotate`).

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, pem::PemObject};
use time::OffsetDateTime;

pub use self::scope::Scope;
pub mod rotation;
use super::{
    LeafName, TlsError,
    files::{self, CERT_MODE, KEY_MODE},
};

mod scope;

/// File name of the CA certificate inside the CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key inside the CA directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// Default CA directory.
pub const DEFAULT_CA_DIR: &str = "/var/lib/fhirwall/ca";

/// Leaves are valid from a little before they are minted, for hosts whose clock lags the agent's.
const BACKDATE: Duration = Duration::from_hours(1);
/// RFC 5280 `ub-common-name`.
const MAX_COMMON_NAME: usize = 64;

/// What a new CA looks like.
#[derive(Clone, Debug)]
pub struct CaSpec {
    /// Node name, part of the CA's common name so each node's CA is told apart in trust stores.
    pub node: String,
    /// How long the CA certificate is valid.
    pub validity: Duration,
    /// Names and addresses the CA may sign for (name constraints, see [`Scope`]); empty for
    /// none.
    pub permitted: Vec<LeafName>,
}

impl CaSpec {
    /// About six months: short enough that a copied key soon stops working, long enough that
    /// rotating (`fhirwall ca rotate`, with an overlap in which hosts trust both) is a
    /// twice-yearly task.
    pub const DEFAULT_VALIDITY: Duration = Duration::from_hours(182 * 24);

    /// A spec for `node` with the default validity and no name constraints.
    #[must_use]
    pub fn new(node: &str) -> Self {
        Self {
            node: node.to_owned(),
            validity: Self::DEFAULT_VALIDITY,
            permitted: Vec::new(),
        }
    }
}

/// What [`LocalCa::init`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitOutcome {
    /// No CA was there; one was created.
    Created,
    /// A valid CA was there and is kept as it is.
    Kept,
}

/// A leaf certificate and its private key, fresh from [`LocalCa::mint`].
pub struct Leaf {
    pub cert: CertificateDer<'static>,
    pub key: PrivatePkcs8KeyDer<'static>,
    pub not_after: SystemTime,
}

/// The CA certificate alone, as `ca export` reads it: no key needed, so any user who can read
/// `ca.pem` can export it.
#[derive(Clone, Debug)]
pub struct CaCertificate {
    pub der: CertificateDer<'static>,
    /// The certificate block only, newline-terminated.
    pub pem: String,
    pub not_after: SystemTime,
    pub scope: Scope,
}

impl CaCertificate {
    /// Reads and checks `dir/ca.pem` (it must parse and be a CA certificate).
    pub fn read(dir: &Path) -> Result<Self, TlsError> {
        let path = dir.join(CA_CERT_FILE);
        let text = files::read_public(&path)?;
        let der =
            CertificateDer::from_pem_slice(text.as_bytes()).map_err(|_| TlsError::BadPem {
                path: path.clone(),
                reason: "no PEM CERTIFICATE block",
            })?;
        let (not_after, scope) =
            check_ca(&der, None).map_err(|reason| TlsError::CaMismatch { path, reason })?;
        Ok(Self {
            pem: first_certificate_block(&text),
            der,
            not_after,
            scope,
        })
    }

    /// SHA-256 fingerprint, colon-separated upper-case hex (as `openssl x509 -fingerprint
    /// -sha256` and `keytool -list` print it), for checking a copy on an EHR host.
    #[must_use]
    pub fn sha256_fingerprint(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, self.der.as_ref());
        let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
        hex.join(":")
    }
}

/// The node-local CA, loaded and ready to mint.
pub struct LocalCa {
    dir: PathBuf,
    cert: CertificateDer<'static>,
    cert_pem: String,
    not_after: SystemTime,
    scope: Scope,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for LocalCa {
    // The issuer holds the private key: it is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa")
            .field("dir", &self.dir)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl LocalCa {
    /// Loads the CA in `dir`, or creates one from `spec` when the directory holds none. Idempotent:
    /// an existing CA is kept (after checking it loads), so EHR hosts keep trusting it.
    pub fn init(dir: &Path, spec: &CaSpec) -> Result<(Self, InitOutcome), TlsError> {
        let (cert, key) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
        match (cert.exists(), key.exists()) {
            (true, true) => Ok((Self::load(dir)?, InitOutcome::Kept)),
            (false, false) => Ok((Self::create(dir, spec)?, InitOutcome::Created)),
            (true, false) => Err(TlsError::CaIncomplete {
                dir: dir.to_owned(),
                missing: CA_KEY_FILE,
            }),
            (false, true) => Err(TlsError::CaIncomplete {
                dir: dir.to_owned(),
                missing: CA_CERT_FILE,
            }),
        }
    }

    /// Creates a new CA in `dir`, replacing any there (`ca init --force`). Hosts that trusted the
    /// old one must be given the new certificate.
    pub fn create(dir: &Path, spec: &CaSpec) -> Result<Self, TlsError> {
        let now = SystemTime::now();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| {
            TlsError::Generate {
                what: "CA key",
                source,
            }
        })?;
        let params = ca_params(spec, now);
        let cert = params
            .self_signed(&key)
            .map_err(|source| TlsError::Generate {
                what: "CA certificate",
                source,
            })?;
        files::create_dir(dir)?;
        // Key first: a crash between the two leaves "key without certificate", which `init`
        // reports as incomplete instead of trusting a certificate whose key is gone.
        files::write_atomic(dir, CA_KEY_FILE, key.serialize_pem().as_bytes(), KEY_MODE)?;
        files::write_atomic(dir, CA_CERT_FILE, cert.pem().as_bytes(), CERT_MODE)?;
        Self::load(dir)
    }

    /// Loads the CA in `dir`. The key must be readable by its owner only, and the certificate must
    /// be a CA certificate for that key.
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        let (cert_path, key_path) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
        let key_pem = files::read_private(&key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|source| TlsError::BadCa {
            path: key_path.clone(),
            source,
        })?;
        let cert_pem = files::read_public(&cert_path)?;
        let cert =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|_| TlsError::BadPem {
                path: cert_path.clone(),
                reason: "no PEM CERTIFICATE block",
            })?;
        let (not_after, scope) =
            check_ca(&cert, Some(&key)).map_err(|reason| TlsError::CaMismatch {
                path: cert_path.clone(),
                reason,
            })?;
        let issuer = Issuer::from_ca_cert_der(&cert, key).map_err(|source| TlsError::BadCa {
            path: cert_path,
            source,
        })?;
        Ok(Self {
            dir: dir.to_owned(),
            cert_pem: first_certificate_block(&cert_pem),
            cert,
            not_after,
            scope,
            issuer,
        })
    }

    /// What the CA may sign for.
    #[must_use]
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The CA certificate (DER), as hosts must trust it.
    #[must_use]
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The CA certificate (PEM), as hosts must trust it.
    #[must_use]
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// When the CA certificate expires; leaves never outlive it.
    #[must_use]
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The directory the CA was loaded from.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Mints a leaf for `name`, valid from a little before `now` for `validity` (capped at the
    /// CA's own expiry), with a fresh ECDSA P-256 key.
    pub fn mint(
        &self,
        name: &LeafName,
        validity: Duration,
        now: SystemTime,
    ) -> Result<Leaf, TlsError> {
        let generate = |what| {
            move |source| TlsError::Generate {
                what: if what { "leaf certificate" } else { "leaf key" },
                source,
            }
        };
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate(false))?;
        let not_after = (now + validity).min(self.not_after);
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let common_name = name.to_string();
        if common_name.len() <= MAX_COMMON_NAME {
            // Clients match the subject alternative name (RFC 6125 6.4.4); the common name is
            // only for people reading the certificate.
            params
                .distinguished_name
                .push(DnType::CommonName, common_name);
        }
        params.subject_alt_names = name.sans()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = OffsetDateTime::from(now - BACKDATE);
        params.not_after = OffsetDateTime::from(not_after);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(generate(true))?;
        Ok(Leaf {
            cert: cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
            not_after,
        })
    }
}

fn ca_params(spec: &CaSpec, now: SystemTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name(&spec.node));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "fhirwall");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = OffsetDateTime::from(now - BACKDATE);
    params.not_after = OffsetDateTime::from(now + spec.validity);
    params.name_constraints = Scope::constraints(&spec.permitted);
    params
}

/// `fhirwall node CA <node>`, cut to the 64 characters X.509 allows, printable ASCII only.
fn common_name(node: &str) -> String {
    let mut name = String::from("fhirwall node CA ");
    let room = MAX_COMMON_NAME - name.len();
    name.extend(
        node.chars()
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .take(room),
    );
    name.trim_end().to_owned()
}

/// Checks the stored certificate is a CA certificate (for `key`, if given); returns its expiry
/// and what it may sign for.
fn check_ca(
    cert: &CertificateDer<'_>,
    key: Option<&KeyPair>,
) -> Result<(SystemTime, Scope), &'static str> {
    use rcgen::PublicKeyData;

    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|_| "certificate does not parse as X.509")?;
    let is_ca = parsed
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca);
    if !is_ca {
        return Err("certificate is not a CA certificate (basicConstraints CA:TRUE missing)");
    }
    if key.is_some_and(|k| parsed.public_key().subject_public_key.data.as_ref() != k.der_bytes()) {
        return Err("certificate does not belong to the key in ca.key");
    }
    let secs = u64::try_from(parsed.validity().not_after.timestamp())
        .map_err(|_| "certificate expires before 1970")?;
    let scope = Scope::of(&parsed)?;
    Ok((SystemTime::UNIX_EPOCH + Duration::from_secs(secs), scope))
}

/// The first `CERTIFICATE` block of a PEM file that already parsed, without any text around it
/// (what `ca export` prints and trust stores import).
fn first_certificate_block(text: &str) -> String {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let block = text.find(BEGIN).and_then(|start| {
        let end = start + text[start..].find(END)? + END.len();
        Some(&text[start..end])
    });
    // The file parsed as PEM, so the block is there; the whole text is a safe fallback.
    format!("{}\n", block.unwrap_or(text).trim_end())
}

#[cfg(test)]
mod tests;
