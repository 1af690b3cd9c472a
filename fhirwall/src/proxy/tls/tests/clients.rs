//! Real clients through TLS termination: curl (OpenSSL or whichever TLS library it was built
//! with) and Python's `ssl` module, each trusting only the exported CA.

use std::net::{IpAddr, Ipv4Addr};

use super::*;

struct Server {
    dir: tempfile::TempDir,
    port: u16,
    seen: mpsc::UnboundedReceiver<Result<Seen, TlsError>>,
}

async fn server() -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let terminator = terminator(&dir.path().join("ca"), TerminatorConfig::default());
    let fallback = LeafName::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let (port, seen) = termination_server(terminator, fallback).await;
    Server { dir, port, seen }
}

impl Server {
    fn ca_pem(&self) -> String {
        self.dir
            .path()
            .join("ca")
            .join(CA_CERT_FILE)
            .to_string_lossy()
            .into_owned()
    }

    fn curl_args(&self, extra: &[&str], scheme: &str) -> Vec<String> {
        let mut args: Vec<String> = [
            "--silent",
            "--show-error",
            "--max-time",
            "20",
            "--resolve",
            &format!("fhir.test:{}:127.0.0.1", self.port),
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        args.extend(extra.iter().map(ToString::to_string));
        args.push(format!("{scheme}://fhir.test:{}/metadata", self.port));
        args
    }

    async fn next(&mut self) -> Result<Seen, TlsError> {
        tokio::time::timeout(Duration::from_secs(30), self.seen.recv())
            .await
            .expect("server reported")
            .expect("server alive")
    }
}

#[tokio::test]
async fn curl_trusting_the_exported_ca_gets_the_answer() {
    let mut s = server().await;
    let cacert = s.ca_pem();
    let out = run_command("curl", s.curl_args(&["--cacert", &cacert], "https")).await;
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), BODY);
    let seen = s.next().await.expect("terminated");
    assert_eq!(seen.sni.as_deref(), Some("fhir.test"));
    // curl offers http/1.1 (and h2 when built with it); the sidecar picks http/1.1.
    assert_eq!(seen.alpn.as_deref(), Some(&b"http/1.1"[..]));

    // TLS 1.2 only, as old EHR clients may be.
    let out = run_command(
        "curl",
        s.curl_args(&["--cacert", &cacert, "--tls-max", "1.2"], "https"),
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        s.next().await.expect("terminated").version,
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
}

#[tokio::test]
async fn curl_without_the_ca_refuses_and_plain_http_still_works() {
    let mut s = server().await;
    // The system store does not hold the node CA: curl exits 60 (peer certificate not trusted).
    let out = run_command("curl", s.curl_args(&[], "https")).await;
    assert_eq!(
        out.status.code(),
        Some(60),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(s.next().await.is_err(), "server saw the handshake fail");

    let out = run_command("curl", s.curl_args(&[], "http")).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), BODY);
    assert!(!s.next().await.expect("accepted").tls);
}

#[tokio::test]
async fn python_ssl_by_ip_address_verifies_the_fallback_leaf() {
    let mut s = server().await;
    // By address: no SNI, the leaf for the fallback IP must carry an IP SAN Python checks.
    let script = "import ssl, sys, urllib.request\n\
        ctx = ssl.create_default_context(cafile=sys.argv[1])\n\
        body = urllib.request.urlopen(sys.argv[2], context=ctx, timeout=20).read()\n\
        sys.stdout.write(body.decode())\n";
    let url = format!("https://127.0.0.1:{}/metadata", s.port);
    let out = run_command("python3", vec!["-c".into(), script.into(), s.ca_pem(), url]).await;
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), BODY);
    let seen = s.next().await.expect("terminated");
    assert!(seen.tls);
    assert_eq!(seen.sni, None);
}
