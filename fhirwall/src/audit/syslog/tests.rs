//! The messages, and a delivery to a TLS repository written here (octet-counted frames over
//! rustls). The real repository (rsyslog with gnutls) is for the end-to-end tests.
#![expect(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::io::AsyncReadExt as _;

use super::{Link, SyslogExport, export_syslog, frame, message, parse_stored, sd_unescape};
use crate::audit::tests_support::{seed, temp_store};

#[test]
fn structured_data_carries_the_entry_exactly_and_reads_back() {
    let body = r#"{"kind":"completion","time":"2026-12-05T00:00:00.000000Z","requestSeq":1,"correlationId":"a]b\"c\\d","outcome":"completed","bytesIn":0,"bytesOut":0,"latencyUs":1}"#;
    let link = Link {
        seq: 2,
        prev_hash: "ab".repeat(32),
        hash: "cd".repeat(32),
        body: body.to_owned(),
    };
    let msg = message(&link, "ehr host 1");
    assert!(msg.starts_with("<85>1 2026-12-05T00:00:00.000000Z ehrhost1 fhirwall - completion [fhirwall@32473 seq=\"2\""), "{msg}");
    let (seq, prev, hash, entry) = parse_stored(&msg).unwrap();
    assert_eq!(
        (seq, prev.as_str(), hash.as_str()),
        (2, link.prev_hash.as_str(), link.hash.as_str())
    );
    assert_eq!(entry, body, "the entry exactly as hashed");
    assert_eq!(sd_unescape(r#"a\]b\"c\\d\x"#), r#"a]b"c\d\x"#);
    let damaged = message(
        &Link {
            body: "{not an entry".into(),
            ..link
        },
        "h",
    );
    assert!(
        damaged.contains(" unreadable [fhirwall@32473 "),
        "{damaged}"
    );
    assert_eq!(
        parse_stored(&damaged).unwrap().3,
        "{not an entry",
        "sent as it is"
    );
    let framed = frame("<85>1 x");
    assert_eq!(framed, b"7 <85>1 x");
}

/// A repository: accepts TLS connections, reads octet-counted frames, keeps the messages.
async fn repository() -> (
    u16,
    std::path::PathBuf,
    Arc<Mutex<Vec<String>>>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, kept) = (acceptor.clone(), Arc::clone(&kept));
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                loop {
                    // MSG-LEN SP SYSLOG-MSG
                    while let Some(space) = buf.iter().position(|b| *b == b' ') {
                        let len: usize =
                            std::str::from_utf8(&buf[..space]).unwrap().parse().unwrap();
                        if buf.len() < space + 1 + len {
                            break;
                        }
                        let msg =
                            String::from_utf8(buf[space + 1..space + 1 + len].to_vec()).unwrap();
                        kept.lock().unwrap().push(msg);
                        buf.drain(..space + 1 + len);
                    }
                    let mut chunk = [0u8; 8192];
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (port, ca_file, received, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_entry_arrives_once_in_order_and_the_received_copy_verifies() {
    let (port, ca_file, received, _pki) = repository().await;
    let (_dir, path) = temp_store();
    seed(&path, 12).await;
    let cfg = SyslogExport {
        db: path.clone(),
        cursor: "syslog".into(),
        target: format!("tls://localhost:{port}"),
        ca_file: Some(ca_file),
        client: None,
        hostname: "ehr-1".into(),
        follow: false,
        poll: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        max_attempts: Some(3),
    };
    assert_eq!(export_syslog(&cfg).await.unwrap(), 12);
    // The cursor holds: a second run sends nothing again.
    assert_eq!(export_syslog(&cfg).await.unwrap(), 0);
    let messages = received.lock().unwrap().clone();
    let seqs: Vec<u64> = messages
        .iter()
        .map(|m| parse_stored(m).unwrap().0)
        .collect();
    assert_eq!(seqs, (1..=12).collect::<Vec<_>>());
    assert!(
        messages[0].contains("] \u{feff}{")
            && messages[0].contains(r#""resourceType":"AuditEvent""#),
        "{}",
        messages[0]
    );
    // What the repository stored is the anchor `verify --against` takes.
    let copy = path.with_extension("repository.log");
    std::fs::write(&copy, messages.join("\n") + "\n").unwrap();
    let (v, n) =
        crate::audit::verify_against(&crate::audit::open_read_only(&path).unwrap(), &[], &copy)
            .unwrap();
    assert!(v.is_intact(), "{:?}", v.findings);
    assert_eq!(n, 12);
}

#[tokio::test]
async fn an_unverified_repository_is_refused() {
    let (port, _ca_file, received, _pki) = repository().await;
    let (_dir, path) = temp_store();
    seed(&path, 1).await;
    let cfg = SyslogExport {
        db: path,
        cursor: "syslog".into(),
        target: format!("tls://localhost:{port}"),
        // Its CA not given: the system roots do not know it.
        ca_file: None,
        client: None,
        hostname: "ehr-1".into(),
        follow: false,
        poll: Duration::from_millis(10),
        max_backoff: Duration::from_millis(10),
        max_attempts: Some(2),
    };
    let err = export_syslog(&cfg).await.unwrap_err();
    assert!(
        crate::error_chain(&err).contains("certificate"),
        "{}",
        crate::error_chain(&err)
    );
    assert!(received.lock().unwrap().is_empty());
    assert!(super::parse_target("udp://x:514").is_err());
}
