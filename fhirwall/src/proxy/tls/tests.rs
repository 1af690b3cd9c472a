//! Tests with real components on loopback: rustls clients and servers, curl and Python.
//! Shared helpers here; the cases in `tests/`.

mod clients;
mod termination;
mod upstream;

use std::{path::Path, sync::Arc, time::Duration};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
};
use tokio::{
    io::{AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
    sync::mpsc,
};

use super::*;

/// The body every test server answers with.
const BODY: &str = r#"{"resourceType":"CapabilityStatement"}"#;

/// A terminator over a fresh local CA in `dir`.
fn terminator(dir: &Path, config: TerminatorConfig) -> Arc<TlsTerminator> {
    let (ca, _) = LocalCa::init(dir, &CaSpec::new("test-node")).expect("init CA");
    let leaves = Arc::new(LeafCache::new(
        Arc::new(ca),
        provider(),
        LeafPolicy::default(),
    ));
    // The upstreams the tests pretend to protect, by name and by address.
    let uncovered = leaves.serve(
        ["fhir.test", "fhir.ehr.example", "127.0.0.1", "::1"]
            .map(|n| LeafName::parse(n).expect("name")),
    );
    assert!(
        uncovered.is_empty(),
        "an unconstrained CA covers every name"
    );
    Arc::new(TlsTerminator::new(leaves, provider(), config).expect("terminator"))
}

/// What the termination server saw of each connection.
#[derive(Debug)]
struct Seen {
    tls: bool,
    sni: Option<String>,
    alpn: Option<Vec<u8>>,
    version: Option<rustls::ProtocolVersion>,
    resumed: bool,
}

/// A listener that detects, terminates (fallback: `fallback`), reads one request head and
/// answers `200` with [`BODY`]. Reports each connection's outcome on the channel.
async fn termination_server(
    terminator: Arc<TlsTerminator>,
    fallback: LeafName,
) -> (u16, mpsc::UnboundedReceiver<Result<Seen, TlsError>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (terminator, fallback, tx) =
                (Arc::clone(&terminator), fallback.clone(), tx.clone());
            tokio::spawn(async move {
                match terminator.accept_detect(tcp, &fallback).await {
                    Ok(downstream) => {
                        let _ = tx.send(Ok(seen(&downstream)));
                        answer(downstream).await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        }
    });
    (port, rx)
}

fn seen(downstream: &Downstream) -> Seen {
    match downstream {
        MaybeTls::Tls(tls) => {
            let conn = tls.get_ref().1;
            Seen {
                tls: true,
                sni: conn.server_name().map(str::to_owned),
                alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
                version: conn.protocol_version(),
                resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
            }
        }
        MaybeTls::Plain(_) => Seen {
            tls: false,
            sni: None,
            alpn: None,
            version: None,
            resumed: false,
        },
    }
}

/// Reads up to the end of a request head, answers, closes.
async fn answer<S: tokio::io::AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A rustls client config trusting only `ca` (DER), with the given versions and ALPN offer.
fn client_trusting(
    ca: &CertificateDer<'_>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone().into_owned()).expect("CA certificate");
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A test PKI for upstream servers: a CA, and leaves it signs, written as PEM files.
struct TestPki {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    ca_der: CertificateDer<'static>,
}

impl TestPki {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA");
        Self {
            ca_pem: cert.pem(),
            ca_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `name` (server or client use), as rustls types and as PEM text.
    fn leaf(&self, name: &str, usage: ExtendedKeyUsagePurpose) -> TestLeaf {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec![name.to_owned()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        TestLeaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert: cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        }
    }
}

struct TestLeaf {
    cert_pem: String,
    key_pem: String,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

/// Writes `contents` to `dir/name` with `mode`; returns the path.
fn write_file(dir: &Path, name: &str, contents: &str, mode: u32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

/// Runs a blocking command (curl, python) off the runtime, with a generous limit so a hung
/// client fails the test rather than the run.
async fn run_command(program: &str, args: Vec<String>) -> std::process::Output {
    let program = program.to_owned();
    let child = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&program)
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("{program} could not run: {e}"))
    });
    tokio::time::timeout(Duration::from_mins(1), child)
        .await
        .expect("client finished")
        .expect("client task")
}
