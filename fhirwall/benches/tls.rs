//! TLS benchmarks: leaf minting, the leaf-cache hit on every handshake, full and resumed
//! handshakes through the terminator (in-memory streams), and the heap an idle terminated
//! connection keeps (counted by a wrapping allocator, printed, not timed).

use std::{
    hint::black_box,
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use criterion::{Criterion, criterion_group, criterion_main};
use fhirwall::proxy::tls::{
    CaSpec, LeafCache, LeafName, LeafPolicy, LocalCa, TerminatorConfig, TlsTerminator, provider,
};
use rustls::{ClientConfig, RootCertStore, client::Resumption, pki_types::ServerName};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, duplex},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::TlsConnector;

/// Counts live heap bytes so the idle-connection footprint can be measured.
#[global_allocator]
static GLOBAL: bench_alloc::Counting = bench_alloc::Counting;

const NAME: &str = "fhir.ehr.example";
const REQUEST: &[u8] = b"GET /fhir/R4/Patient/123 HTTP/1.1\r\nHost: fhir.ehr.example\r\nAccept: application/fhir+json\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: 40\r\n\r\n{\"resourceType\":\"Patient\",\"id\":\"123\"}   ";

struct Setup {
    _dir: tempfile::TempDir,
    terminator: Arc<TlsTerminator>,
    ca: Arc<LocalCa>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, _) = LocalCa::init(dir.path(), &CaSpec::new("bench")).expect("CA");
    let ca = Arc::new(ca);
    let leaves = Arc::new(LeafCache::new(
        Arc::clone(&ca),
        provider(),
        LeafPolicy::default(),
    ));
    let terminator =
        TlsTerminator::new(leaves, provider(), TerminatorConfig::default()).expect("terminator");
    Setup {
        _dir: dir,
        terminator: Arc::new(terminator),
        ca,
    }
}

fn client(ca: &LocalCa, resume: bool, tls12: bool) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der().clone()).expect("root");
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if !resume {
        config.resumption = Resumption::disabled();
    }
    TlsConnector::from(Arc::new(config))
}

fn leaves(c: &mut Criterion) {
    let s = setup();
    let name = LeafName::parse(NAME).expect("name");
    let week = Duration::from_hours(7 * 24);
    let mut group = c.benchmark_group("tls");
    group.bench_function("leaf_mint", |b| {
        b.iter(|| black_box(s.ca.mint(&name, week, SystemTime::now()).expect("mint")));
    });
    let cache = s.terminator.leaves();
    cache.get(&name).expect("warm");
    group.bench_function("leaf_cache_hit", |b| {
        b.iter(|| black_box(cache.get(&name).expect("hit")));
    });
    group.finish();
}

/// One handshake over an in-memory pipe, then one byte each way (so TLS 1.3 tickets reach the
/// client before the next iteration).
async fn handshake(terminator: &TlsTerminator, connector: &TlsConnector, fallback: &LeafName) {
    let (near, far) = duplex(64 * 1024);
    let server = async {
        let mut tls = terminator.accept(far, fallback).await.expect("accept");
        tls.write_all(b"x").await.expect("write");
        tls.flush().await.expect("flush");
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.expect("read");
    };
    let client = async {
        let name = ServerName::try_from(NAME).expect("name");
        let mut tls = connector.connect(name, near).await.expect("connect");
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.expect("read");
        tls.write_all(b"y").await.expect("write");
        tls.flush().await.expect("flush");
    };
    tokio::join!(server, client);
}

fn handshakes(c: &mut Criterion) {
    let s = setup();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let fallback = LeafName::Ip(Ipv4Addr::LOCALHOST.into());
    let mut group = c.benchmark_group("tls");
    group.sample_size(30);
    for (label, resume, tls12) in [
        ("handshake_full_tls13", false, false),
        ("handshake_resumed_tls13", true, false),
        ("handshake_full_tls12", false, true),
        ("handshake_resumed_tls12", true, true),
    ] {
        let connector = client(&s.ca, resume, tls12);
        rt.block_on(handshake(&s.terminator, &connector, &fallback));
        group.bench_function(label, |b| {
            b.iter(|| rt.block_on(handshake(&s.terminator, &connector, &fallback)));
        });
    }
    group.finish();
}

/// Heap kept per idle connection on the sidecar's side: after the handshake and after one
/// request/response, client halves dropped. Plain TCP is measured the same way for reference.
fn idle_memory(_: &mut Criterion) {
    const N: usize = 200;
    let s = setup();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let fallback = LeafName::Ip(Ipv4Addr::LOCALHOST.into());
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connector = client(&s.ca, true, false);
        // Warm up: the leaf, the configs, the runtime's I/O slabs.
        let warm = open(&s.terminator, &listener, &connector, &fallback, addr, N).await;
        drop(warm);

        let plain_before = bench_alloc::live();
        let mut plain = Vec::with_capacity(N);
        for _ in 0..N {
            let client = TcpStream::connect(addr).await.expect("connect");
            let (server, _) = listener.accept().await.expect("accept");
            plain.push((server, client));
        }
        let plain_bytes = bench_alloc::live() - plain_before;
        drop(plain);

        // Handshake only: the sidecar's halves, once the clients are gone.
        let before = bench_alloc::live();
        let pairs = open(&s.terminator, &listener, &connector, &fallback, addr, N).await;
        let (servers, clients): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
        drop(clients);
        let handshaken = bench_alloc::live() - before;
        drop(servers);

        // After one request and response.
        let before = bench_alloc::live();
        let mut pairs = open(&s.terminator, &listener, &connector, &fallback, addr, N).await;
        for (server, client) in &mut pairs {
            exchange(server, client).await;
        }
        let (servers, clients): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
        drop(clients);
        let exchanged = bench_alloc::live() - before;
        drop(servers);

        let per = |bytes: isize| bytes / isize::try_from(N).expect("small");
        println!(
            "tls/idle_memory (heap per idle connection, sidecar side, {N} connections): \
             plain TCP {} B; TLS after handshake {} B; TLS after one request/response {} B",
            per(plain_bytes),
            per(handshaken),
            per(exchanged),
        );
    });
}

async fn exchange(
    server: &mut tokio_rustls::server::TlsStream<TcpStream>,
    client: &mut tokio_rustls::client::TlsStream<TcpStream>,
) {
    let mut buf = [0u8; 512];
    client.write_all(REQUEST).await.expect("request");
    let n = server.read(&mut buf).await.expect("read");
    assert!(n > 0, "request arrived");
    server.write_all(RESPONSE).await.expect("response");
    server.flush().await.expect("flush");
    let n = client.read(&mut buf).await.expect("read");
    assert!(n > 0, "response arrived");
}

type Pair = (
    tokio_rustls::server::TlsStream<TcpStream>,
    tokio_rustls::client::TlsStream<TcpStream>,
);

async fn open(
    terminator: &TlsTerminator,
    listener: &TcpListener,
    connector: &TlsConnector,
    fallback: &LeafName,
    addr: std::net::SocketAddr,
    n: usize,
) -> Vec<Pair> {
    let mut pairs = Vec::with_capacity(n);
    for _ in 0..n {
        let name = ServerName::try_from(NAME).expect("name");
        let client = async {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            connector.connect(name, tcp).await.expect("handshake")
        };
        let server = async {
            let (tcp, _) = listener.accept().await.expect("accept");
            terminator.accept(tcp, fallback).await.expect("terminate")
        };
        let (client, server) = tokio::join!(client, server);
        pairs.push((server, client));
    }
    pairs
}

criterion_group!(benches, leaves, handshakes, idle_memory);
criterion_main!(benches);
