//! A throwaway certificate authority for the TLS peers of a test or benchmark: the upstream FHIR
//! server, and the TLS listeners of the proxies the sidecar is compared with. (The sidecar's own
//! node CA is the agent's: created at its start under `<state_dir>/ca`.)

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A test CA, its certificate written to `ca_file`.
pub struct TestPki {
    issuer: Issuer<'static, KeyPair>,
    dir: PathBuf,
    pub ca_file: PathBuf,
}

/// A server certificate and its key, as files and as rustls values.
pub struct ServerCert {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl TestPki {
    /// A new CA whose files live in `dir` (created if missing).
    pub fn new(dir: &Path, name: &str) -> anyhow::Result<Self> {
        fs::create_dir_all(dir)?;
        let key = KeyPair::generate().context("CA key")?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).context("CA certificate")?;
        let ca_file = dir.join(format!("{name}-ca.pem"));
        fs::write(&ca_file, cert.pem())?;
        Ok(Self {
            issuer: Issuer::new(params, key),
            dir: dir.to_owned(),
            ca_file,
        })
    }

    /// A server certificate for `names` (DNS names or IP addresses), files named after the first.
    pub fn server(&self, names: &[&str]) -> anyhow::Result<ServerCert> {
        let first = names.first().context("a server certificate needs a name")?;
        let key = KeyPair::generate().context("server key")?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, *first);
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName((*n).try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .context("server certificate")?;
        let cert_file = self.dir.join(format!("{first}.pem"));
        let key_file = self.dir.join(format!("{first}.key"));
        fs::write(&cert_file, cert.pem())?;
        fs::write(&key_file, key.serialize_pem())?;
        fs::set_permissions(&key_file, fs::Permissions::from_mode(0o600))?;
        Ok(ServerCert {
            cert_file,
            key_file,
            chain: vec![cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        })
    }
}

impl ServerCert {
    /// A rustls server config presenting this certificate, speaking `http/1.1`.
    pub fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}
