//! The upstream connector against real rustls servers with a test PKI made by rcgen.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
};

use fhirwall_http::{Connector, Pool, PoolConfig, Upstreams};
use fhirwall_policy::TlsMode;
use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
use rustls::{ServerConfig, server::WebPkiClientVerifier};
use socket2::SockRef;
use tokio::io::AsyncRead;
use tokio_rustls::TlsAcceptor;

use super::*;

const UPSTREAM: &str = "ehr";
const TEST_MARK: u32 = 0x00c0_ffee;

/// The mark to test with, or `None` (with the reason printed) where this process may not set
/// `SO_MARK` (it needs CAP_NET_ADMIN). In CI that is a failure, never a skip.
fn mark() -> Option<u32> {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    match socket.set_mark(TEST_MARK) {
        Ok(()) => Some(TEST_MARK),
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!(
                "skipped: SO_MARK cannot be set here ({e}); run as root or with CAP_NET_ADMIN"
            );
            None
        }
        Err(e) => panic!("SO_MARK cannot be set in CI: {e}"),
    }
}

/// What the upstream saw of one connection.
#[derive(Debug)]
struct UpSeen {
    client_cert: bool,
    resumed: bool,
    alpn: Option<Vec<u8>>,
}

/// A TLS upstream for `name` signed by `pki`, requiring client certificates from `pki` if
/// `mtls`. Serves keep-alive requests until the client closes.
async fn tls_upstream(
    pki: &TestPki,
    name: &str,
    mtls: bool,
) -> (SocketAddr, mpsc::UnboundedReceiver<Result<UpSeen, String>>) {
    let leaf = pki.leaf(name, ServerAuth);
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = if mtls {
        let mut roots = RootCertStore::empty();
        roots.add(pki.ca_der.clone()).expect("CA");
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .expect("client verifier");
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(vec![leaf.cert], leaf.key)
        .expect("server config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(tls) => {
                        let conn = tls.get_ref().1;
                        let _ = tx.send(Ok(UpSeen {
                            client_cert: conn.peer_certificates().is_some(),
                            resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
                            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
                        }));
                        keep_alive(tls).await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// A plain HTTP upstream (keep-alive).
async fn plain_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(keep_alive(tcp));
        }
    });
    addr
}

/// Answers each request head with [`BODY`], keeping the connection open.
async fn keep_alive<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            head.drain(..end + 4);
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{BODY}",
                BODY.len()
            );
            if stream.write_all(response.as_bytes()).await.is_err() {
                return;
            }
        }
    }
}

/// One request over `stream`; the response text (one read is enough on loopback for this size,
/// so loop until the body is in).
async fn roundtrip<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> std::io::Result<String> {
    stream
        .write_all(b"GET /fhir/metadata HTTP/1.1\r\nHost: upstream.test\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    let mut buf = [0u8; 1024];
    while !response.ends_with(BODY.as_bytes()) {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        response.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&response).into_owned())
}

fn spec(addresses: Vec<SocketAddr>, server_name: &str, ca_file: Option<&Path>) -> UpstreamSpec {
    UpstreamSpec {
        name: UPSTREAM.into(),
        addresses,
        mode: TlsMode::Tls,
        server_name: server_name.into(),
        ca_file: ca_file.map(Path::to_owned),
    }
}

fn connector(
    mark: u32,
    upstream: UpstreamSpec,
    identities: HashMap<String, ClientIdentity>,
) -> UpstreamConnector {
    let config = ConnectorConfig {
        mark,
        connect_timeout: Duration::from_secs(5),
        handshake_timeout: Duration::from_secs(5),
    };
    let table = UpstreamTable {
        upstreams: HashMap::from([(upstream.name.clone(), upstream)]),
        identities,
    };
    UpstreamConnector::new(config, provider(), table)
}

fn key(integration: Option<&str>) -> UpstreamKey {
    UpstreamKey::new(UPSTREAM, integration)
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("upstream reported")
        .expect("upstream alive")
}

#[tokio::test]
async fn verified_tls_from_a_marked_socket() {
    let Some(mark) = mark() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::new("upstream CA");
    let ca_file = write_file(dir.path(), "ca.pem", &pki.ca_pem, 0o644);
    let (addr, mut seen) = tls_upstream(&pki, "upstream.test", false).await;
    let c = connector(
        mark,
        spec(vec![addr], "upstream.test", Some(&ca_file)),
        HashMap::new(),
    );

    let mut stream = c.connect_upstream(&key(None)).await.expect("connect");
    assert!(stream.is_tls());
    assert_eq!(
        SockRef::from(stream.tcp()).mark().expect("getsockopt"),
        mark
    );
    assert!(
        roundtrip(&mut stream)
            .await
            .expect("roundtrip")
            .ends_with(BODY)
    );
    let up = next(&mut seen).await.expect("handshake");
    assert_eq!(up.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert!(!up.client_cert);
}

#[tokio::test]
async fn wrong_ca_wrong_name_and_system_roots_are_refused() {
    let Some(mark) = mark() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::new("upstream CA");
    let other = TestPki::new("other CA");
    let good = write_file(dir.path(), "ca.pem", &pki.ca_pem, 0o644);
    let wrong = write_file(dir.path(), "other.pem", &other.ca_pem, 0o644);
    let (addr, _seen) = tls_upstream(&pki, "upstream.test", false).await;

    let cases = [
        (
            spec(vec![addr], "upstream.test", Some(&wrong)),
            "UnknownIssuer",
        ),
        (
            spec(vec![addr], "other.test", Some(&good)),
            "NotValidForName",
        ),
        // The system roots do not hold the test CA.
        (spec(vec![addr], "upstream.test", None), "UnknownIssuer"),
    ];
    for (upstream, want) in cases {
        let c = connector(mark, upstream, HashMap::new());
        let err = c.connect_upstream(&key(None)).await.expect_err(want);
        assert_eq!(err.error_source(), TlsErrorSource::UpstreamHandshake);
        match err {
            TlsError::UpstreamCertificate {
                source: rustls::Error::InvalidCertificate(cert),
                ..
            } => assert!(format!("{cert:?}").starts_with(want), "{want}: {cert:?}"),
            other => panic!("{want}: expected UpstreamCertificate, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn mtls_presents_the_integration_certificate_and_fails_without() {
    let Some(mark) = mark() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::new("upstream CA");
    let ca_file = write_file(dir.path(), "ca.pem", &pki.ca_pem, 0o644);
    let client = pki.leaf("lab-results", ClientAuth);
    let identity = ClientIdentity {
        cert_file: write_file(dir.path(), "lab.pem", &client.cert_pem, 0o644),
        key_file: write_file(dir.path(), "lab.key", &client.key_pem, 0o600),
    };
    let (addr, mut seen) = tls_upstream(&pki, "upstream.test", true).await;
    let c = connector(
        mark,
        spec(vec![addr], "upstream.test", Some(&ca_file)),
        HashMap::from([("lab".to_owned(), identity.clone())]),
    );

    let mut stream = c
        .connect_upstream(&key(Some("lab")))
        .await
        .expect("connect");
    assert!(
        roundtrip(&mut stream)
            .await
            .expect("roundtrip")
            .ends_with(BODY)
    );
    assert!(next(&mut seen).await.expect("handshake").client_cert);

    // No identity: the server refuses. Under TLS 1.3 the client's handshake ends before the
    // server has checked it, so the refusal may arrive on the first read instead.
    let refused = match c.connect_upstream(&key(None)).await {
        Err(_) => true,
        Ok(mut stream) => roundtrip(&mut stream).await.is_err(),
    };
    assert!(refused, "upstream accepted a client without certificate");
    assert!(
        next(&mut seen).await.is_err(),
        "upstream saw no failed handshake"
    );

    // A client key others can read is not used.
    std::fs::set_permissions(
        &identity.key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .expect("chmod");
    let c = connector(
        mark,
        spec(vec![addr], "upstream.test", Some(&ca_file)),
        HashMap::from([("lab".to_owned(), identity)]),
    );
    match c.connect_upstream(&key(Some("lab"))).await {
        Err(e @ TlsError::KeyFile(crate::private_files::PrivateFileError::Mode { .. })) => {
            assert_eq!(e.error_source(), TlsErrorSource::CaStore);
        }
        other => panic!("expected a mode refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn plain_mode_is_plain_tcp_with_the_mark() {
    let Some(mark) = mark() else { return };
    let addr = plain_upstream().await;
    let upstream = UpstreamSpec {
        mode: TlsMode::Plain,
        ..spec(vec![addr], "ignored", None)
    };
    let c = connector(mark, upstream, HashMap::new());
    let mut stream = c.connect_upstream(&key(None)).await.expect("connect");
    assert!(!stream.is_tls());
    assert_eq!(
        SockRef::from(stream.tcp()).mark().expect("getsockopt"),
        mark
    );
    assert!(
        roundtrip(&mut stream)
            .await
            .expect("roundtrip")
            .ends_with(BODY)
    );
}

#[tokio::test]
async fn sessions_resume_per_integration_only() {
    let Some(mark) = mark() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::new("upstream CA");
    let ca_file = write_file(dir.path(), "ca.pem", &pki.ca_pem, 0o644);
    let (addr, mut seen) = tls_upstream(&pki, "upstream.test", false).await;
    let c = connector(
        mark,
        spec(vec![addr], "upstream.test", Some(&ca_file)),
        HashMap::new(),
    );

    for (integration, want_resumed) in [(Some("a"), false), (Some("a"), true), (Some("b"), false)] {
        let mut stream = c
            .connect_upstream(&key(integration))
            .await
            .expect("connect");
        // Reading a response takes in the TLS 1.3 session tickets.
        roundtrip(&mut stream).await.expect("roundtrip");
        let up = next(&mut seen).await.expect("handshake");
        assert_eq!(up.resumed, want_resumed, "{integration:?}");
    }
}

#[tokio::test]
async fn pools_are_per_upstream_and_integration() {
    let Some(mark) = mark() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::new("upstream CA");
    let ca_file = write_file(dir.path(), "ca.pem", &pki.ca_pem, 0o644);
    let (addr, mut seen) = tls_upstream(&pki, "upstream.test", false).await;
    let c = connector(
        mark,
        spec(vec![addr], "upstream.test", Some(&ca_file)),
        HashMap::new(),
    );
    let pool = Pool::new(c, PoolConfig::default());

    let mut first = pool.checkout(&key(Some("a"))).await.expect("connect");
    assert!(!first.reused);
    roundtrip(&mut first.stream).await.expect("roundtrip");
    pool.checkin(&key(Some("a")), first.stream);
    let mut again = pool.checkout(&key(Some("a"))).await.expect("reuse");
    assert!(again.reused, "idle TLS connection not reused");
    roundtrip(&mut again.stream)
        .await
        .expect("roundtrip on reused");
    let other = pool.checkout(&key(Some("b"))).await.expect("connect");
    assert!(!other.reused, "another integration got a's connection");
    next(&mut seen).await.expect("a");
    next(&mut seen).await.expect("b");
}

#[tokio::test]
async fn addresses_are_tried_in_order_and_errors_carry_their_source() {
    let Some(mark) = mark() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::new("upstream CA");
    let ca_file = write_file(dir.path(), "ca.pem", &pki.ca_pem, 0o644);
    let (addr, _seen) = tls_upstream(&pki, "upstream.test", false).await;
    // A port nothing listens on: bind one, note it, close it.
    let dead = {
        let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        l.local_addr().expect("addr")
    };
    let c = connector(
        mark,
        spec(vec![dead, addr], "upstream.test", Some(&ca_file)),
        HashMap::new(),
    );
    let mut stream = c
        .connect_upstream(&key(None))
        .await
        .expect("second address");
    roundtrip(&mut stream).await.expect("roundtrip");

    match c.connect_to(&key(None), dead).await {
        Err(TlsError::UpstreamConnect {
            address, source, ..
        }) => {
            assert_eq!(address, dead);
            assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);
        }
        other => panic!("expected UpstreamConnect, got {other:?}"),
    }
    // Through the engine's trait, the TlsError is still there for labels.
    let io = Connector::connect(&c, &UpstreamKey::new("nope", None))
        .await
        .expect_err("unknown upstream");
    let inner = io
        .get_ref()
        .and_then(|e| e.downcast_ref::<TlsError>())
        .expect("TlsError inside");
    assert!(matches!(inner, TlsError::UnknownUpstream { .. }));
}
