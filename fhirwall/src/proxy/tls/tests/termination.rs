//! TLS termination against real rustls clients that trust only the local CA.

use std::{net::IpAddr, sync::Arc, time::Duration};

use rustls::{
    ClientConfig, ProtocolVersion,
    pki_types::ServerName,
    version::{TLS12, TLS13},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, client::TlsStream};

use super::*;

const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

struct Fixture {
    _dir: tempfile::TempDir,
    terminator: Arc<TlsTerminator>,
    port: u16,
    seen: mpsc::UnboundedReceiver<Result<Seen, TlsError>>,
}

async fn fixture(fallback: LeafName, config: TerminatorConfig) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let terminator = terminator(dir.path(), config);
    let (port, seen) = termination_server(Arc::clone(&terminator), fallback).await;
    Fixture {
        _dir: dir,
        terminator,
        port,
        seen,
    }
}

impl Fixture {
    fn ca(&self) -> CertificateDer<'static> {
        self.terminator.leaves().ca().cert_der().clone()
    }

    async fn connect(
        &self,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect((LOCALHOST, self.port)).await?;
        TlsConnector::from(config).connect(name, tcp).await
    }

    async fn next(&mut self) -> Result<Seen, TlsError> {
        tokio::time::timeout(Duration::from_secs(30), self.seen.recv())
            .await
            .expect("server reported")
            .expect("server alive")
    }
}

/// Sends a request and returns the response text.
async fn get(stream: &mut TlsStream<TcpStream>) -> String {
    stream
        .write_all(b"GET /metadata HTTP/1.1\r\nHost: fhir.test\r\n\r\n")
        .await
        .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
}

fn dns(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_owned()).expect("server name")
}

#[tokio::test]
async fn sni_gets_a_leaf_for_its_name_over_tls13_and_tls12() {
    let mut f = fixture(LeafName::Ip(LOCALHOST), TerminatorConfig::default()).await;
    let alpn: &[&[u8]] = &[b"http/1.1"];
    for (versions, want) in [
        (&[&TLS13][..], ProtocolVersion::TLSv1_3),
        (&[&TLS12][..], ProtocolVersion::TLSv1_2),
    ] {
        let config = client_trusting(&f.ca(), versions, alpn);
        let mut stream = f
            .connect(config, dns("fhir.test"))
            .await
            .expect("handshake");
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        assert!(get(&mut stream).await.ends_with(BODY));
        let seen = f.next().await.expect("terminated");
        assert!(seen.tls);
        assert_eq!(seen.sni.as_deref(), Some("fhir.test"));
        assert_eq!(seen.version, Some(want));
        assert_eq!(seen.alpn.as_deref(), Some(&b"http/1.1"[..]));
    }
    // One leaf for the name, however many handshakes.
    assert_eq!(f.terminator.leaves().mints(), 1);
}

#[tokio::test]
async fn without_sni_the_fallback_name_is_certified() {
    // By IP: rustls sends no SNI for an address (RFC 6066 3), the leaf carries the IP SAN.
    let mut f = fixture(LeafName::Ip(LOCALHOST), TerminatorConfig::default()).await;
    let config = client_trusting(&f.ca(), &[&TLS13], &[]);
    let mut stream = f
        .connect(config, ServerName::IpAddress(LOCALHOST.into()))
        .await
        .expect("handshake by IP");
    assert!(get(&mut stream).await.ends_with(BODY));
    let seen = f.next().await.expect("terminated");
    assert_eq!((seen.sni, seen.alpn), (None, None));

    // A client that sends no SNI but checks a host name: the fallback is the upstream's name.
    let mut f = fixture(
        LeafName::parse("fhir.ehr.example").expect("name"),
        TerminatorConfig::default(),
    )
    .await;
    let mut config = (*client_trusting(&f.ca(), &[&TLS13, &TLS12], &[])).clone();
    config.enable_sni = false;
    let mut stream = f
        .connect(Arc::new(config.clone()), dns("fhir.ehr.example"))
        .await
        .expect("handshake without SNI");
    assert!(get(&mut stream).await.ends_with(BODY));
    assert_eq!(f.next().await.expect("terminated").sni, None);
    // The same client expecting another name is refused: the fallback is the only name.
    let err = f
        .connect(Arc::new(config), dns("other.example"))
        .await
        .expect_err("wrong name accepted");
    assert!(err.to_string().contains("not valid for name"), "{err}");
}

#[tokio::test]
async fn alpn_offers_only_http11_and_h2_only_clients_fail_clearly() {
    let mut f = fixture(LeafName::Ip(LOCALHOST), TerminatorConfig::default()).await;
    let both = client_trusting(&f.ca(), &[&TLS13], &[b"h2", b"http/1.1"]);
    let stream = f.connect(both, dns("fhir.test")).await.expect("handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    f.next().await.expect("terminated");

    let h2_only = client_trusting(&f.ca(), &[&TLS13], &[b"h2"]);
    let err = f
        .connect(h2_only, dns("fhir.test"))
        .await
        .expect_err("h2-only client accepted");
    assert!(err.to_string().contains("NoApplicationProtocol"), "{err}");
    match f.next().await {
        Err(e @ TlsError::NoCommonProtocol) => {
            assert_eq!(e.error_source(), TlsErrorSource::DownstreamHandshake);
        }
        other => panic!("expected NoCommonProtocol, got {other:?}"),
    }
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_fails() {
    let mut f = fixture(LeafName::Ip(LOCALHOST), TerminatorConfig::default()).await;
    let other = tempfile::tempdir().expect("tempdir");
    let (other_ca, _) = LocalCa::init(other.path(), &CaSpec::new("other")).expect("CA");
    let config = client_trusting(other_ca.cert_der(), &[&TLS13], &[]);
    let err = f
        .connect(config, dns("fhir.test"))
        .await
        .expect_err("untrusted leaf accepted");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    assert!(matches!(
        f.next().await,
        Err(TlsError::DownstreamHandshake { .. })
    ));
}

#[tokio::test]
async fn second_connection_resumes() {
    let mut f = fixture(LeafName::Ip(LOCALHOST), TerminatorConfig::default()).await;
    for versions in [&[&TLS13][..], &[&TLS12][..]] {
        let config = client_trusting(&f.ca(), versions, &[]);
        for want_resumed in [false, true] {
            let mut stream = f
                .connect(Arc::clone(&config), dns("fhir.test"))
                .await
                .expect("handshake");
            // Reading the response also takes in the TLS 1.3 tickets sent after the handshake.
            assert!(get(&mut stream).await.ends_with(BODY));
            let seen = f.next().await.expect("terminated");
            assert_eq!(seen.resumed, want_resumed, "{versions:?}");
        }
    }
}

#[tokio::test]
async fn tls_and_plain_http_share_the_listener() {
    let mut f = fixture(LeafName::Ip(LOCALHOST), TerminatorConfig::default()).await;
    let mut plain = TcpStream::connect((LOCALHOST, f.port))
        .await
        .expect("connect");
    plain
        .write_all(b"GET /metadata HTTP/1.1\r\nHost: fhir.test\r\n\r\n")
        .await
        .expect("write");
    let mut response = String::new();
    plain.read_to_string(&mut response).await.expect("read");
    // The answer shows the request head reached the server whole: peeking consumed nothing.
    assert!(response.starts_with("HTTP/1.1 200 OK") && response.ends_with(BODY));
    assert!(!f.next().await.expect("accepted").tls);

    let config = client_trusting(&f.ca(), &[&TLS13], &[]);
    let mut tls = f
        .connect(config, dns("fhir.test"))
        .await
        .expect("handshake");
    assert!(get(&mut tls).await.ends_with(BODY));
    assert!(f.next().await.expect("terminated").tls);
}

#[tokio::test]
async fn silent_and_stalled_clients_are_cut_at_the_handshake_timeout() {
    let config = TerminatorConfig {
        handshake_timeout: Duration::from_millis(300),
        ..TerminatorConfig::default()
    };
    let mut f = fixture(LeafName::Ip(LOCALHOST), config).await;

    let mut silent = TcpStream::connect((LOCALHOST, f.port))
        .await
        .expect("connect");
    assert!(matches!(
        f.next().await,
        Err(TlsError::HandshakeTimeout { .. })
    ));
    let mut byte = [0u8; 1];
    assert_eq!(
        silent.read(&mut byte).await.expect("closed"),
        0,
        "server closed"
    );

    // The first byte of a ClientHello, then nothing: detection passes, the handshake times out.
    let mut stalled = TcpStream::connect((LOCALHOST, f.port))
        .await
        .expect("connect");
    stalled.write_all(&[0x16, 0x03, 0x01]).await.expect("write");
    assert!(matches!(
        f.next().await,
        Err(TlsError::HandshakeTimeout { .. })
    ));

    let closed = TcpStream::connect((LOCALHOST, f.port))
        .await
        .expect("connect");
    drop(closed);
    assert!(matches!(f.next().await, Err(TlsError::ClosedBeforeData)));
}

#[tokio::test]
async fn garbage_after_a_handshake_byte_is_a_handshake_error() {
    let mut f = fixture(LeafName::Ip(LOCALHOST), TerminatorConfig::default()).await;
    let mut junk = TcpStream::connect((LOCALHOST, f.port))
        .await
        .expect("connect");
    junk.write_all(&[0x16, 0xff, 0xff, 0x00, 0x05, 1, 2, 3, 4, 5])
        .await
        .expect("write");
    match f.next().await {
        Err(e @ TlsError::DownstreamHandshake { .. }) => {
            assert_eq!(e.error_source().as_str(), "downstream_handshake");
        }
        other => panic!("expected DownstreamHandshake, got {other:?}"),
    }
}
