//! The EHR server's own PKI: a private CA, the server certificate nginx presents, and client
//! certificates for integrations that authenticate to the upstream with mTLS. Separate from the
//! agent's node CA on purpose: the sidecar must verify the upstream against the upstream's CA
//! (the policy's `tls.ca_file`), as it would a hospital's internal CA.

use std::{
    fs,
    net::IpAddr,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A certificate and its key, as PEM files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The CA that signs the server and client certificates.
pub struct EhrCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM): what the sidecar trusts for this upstream.
    pub cert: PathBuf,
}

impl EhrCa {
    /// A new CA, its certificate written to `dir/ca.pem`.
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let key = KeyPair::generate().context("generating the EHR CA key")?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "fhirwall demo EHR CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).context("signing the EHR CA")?;
        let path = dir.join("ca.pem");
        fs::write(&path, cert.pem()).with_context(|| format!("writing {}", path.display()))?;
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert: path,
        })
    }

    /// The certificate nginx presents for `ip` (an IP subject alternative name: the FHIR base
    /// URL is addressed by IP in the demo).
    pub fn server(&self, dir: &Path, name: &str, ip: IpAddr) -> anyhow::Result<CertFiles> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.subject_alt_names = vec![SanType::IpAddress(ip)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(dir, name, params)
    }

    /// A client certificate whose common name names the integration, for mTLS upstream.
    pub fn client(&self, dir: &Path, name: &str) -> anyhow::Result<CertFiles> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(dir, name, params)
    }

    fn sign(
        &self,
        dir: &Path,
        name: &str,
        mut params: CertificateParams,
    ) -> anyhow::Result<CertFiles> {
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().context("generating a key")?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .with_context(|| format!("signing the certificate of {name}"))?;
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let files = CertFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        fs::write(&files.cert, cert.pem())?;
        fs::write(&files.key, key.serialize_pem())?;
        // The agent refuses private keys others can read.
        fs::set_permissions(&files.key, fs::Permissions::from_mode(0o600))?;
        Ok(files)
    }
}
