//! HTTP engine benchmarks: head parsing, chunked decoding, and one keep-alive request through the
//! whole driver over in-memory streams (compared with the same exchange without the proxy).

use std::{hint::black_box, io, sync::Arc};

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fhirwall_http::{
    BodyMode, ChunkedDecoder, Connector, Dispatch, ExchangeId, Finished, Handler, HttpError,
    Limits, LocalResponse, NoInspection, Pool, PoolConfig, RequestHead, RequestParser,
    ResponseHead, serve_connection,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, duplex},
    runtime::Runtime,
};

/// A typical FHIR read as an EHR integration sends it.
const REQUEST: &[u8] = b"GET /fhir/R4/Patient/8f2c1a7e-5d4b-4c7a-9e21-3b6f0d9a4c11?_elements=id,name,birthDate HTTP/1.1\r\n\
Host: fhir.ehr.example.org\r\n\
User-Agent: interface-engine/5.2\r\n\
Accept: application/fhir+json\r\n\
Accept-Encoding: gzip\r\n\
Authorization: Bearer eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJzaGFyZWQifQ.c2lnbmF0dXJl\r\n\
X-Request-Id: 4b9e0c2a-77f1-4e0b-9a43-2d1c5e6f7a80\r\n\
Connection: keep-alive\r\n\r\n";

const RESPONSE_BODY: &[u8] = br#"{"resourceType":"Patient","id":"8f2c1a7e-5d4b-4c7a-9e21-3b6f0d9a4c11","name":[{"family":"Doe","given":["Jane"]}],"birthDate":"1970-01-01"}"#;

fn response() -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nETag: W/\"3\"\r\nContent-Length: {}\r\n\r\n",
        RESPONSE_BODY.len()
    )
    .into_bytes();
    r.extend_from_slice(RESPONSE_BODY);
    r
}

fn parse_head(c: &mut Criterion) {
    let limits = Limits::default();
    let mut parser = RequestParser::default();
    let mut head = RequestHead::default();
    let mut buf = BytesMut::with_capacity(4096);
    let mut group = c.benchmark_group("http");
    group.throughput(Throughput::Bytes(REQUEST.len() as u64));
    group.bench_function("parse_head", |b| {
        b.iter(|| {
            buf.clear();
            buf.extend_from_slice(REQUEST);
            let done = parser.parse(&mut buf, &limits, &mut head);
            black_box((done, head.target().len()))
        });
    });
    let mut body = Vec::new();
    for _ in 0..16 {
        body.extend_from_slice(b"1000\r\n");
        body.extend(std::iter::repeat_n(b'x', 4096));
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("chunked_decode_64k", |b| {
        b.iter(|| {
            let mut decoder = ChunkedDecoder::new(1024, 8192);
            let mut at = 0;
            let mut data = 0;
            while let Ok(step) = decoder.decode(&body[at..]) {
                data += step.data.len();
                at += step.consumed;
                if step.done || step.consumed == 0 {
                    break;
                }
            }
            black_box(data)
        });
    });
    group.finish();
}

/// A canned upstream on one in-memory stream: answers every request head with `response`.
async fn canned_upstream<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, response: Arc<Vec<u8>>) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let _ = buf.split_to(end + 4);
            if io.write_all(&response).await.is_err() {
                return;
            }
        }
        match io.read_buf(&mut buf).await {
            Ok(n) if n > 0 => {}
            _ => return,
        }
    }
}

struct CannedConnector(Arc<Vec<u8>>);

impl Connector for CannedConnector {
    type Key = u8;
    type Stream = DuplexStream;

    async fn connect(&self, _key: &u8) -> io::Result<DuplexStream> {
        let (near, far) = duplex(64 * 1024);
        tokio::spawn(canned_upstream(far, Arc::clone(&self.0)));
        Ok(near)
    }
}

/// Forwards everything, rewriting the credential as the real handler does.
struct Forward;

impl Handler for Forward {
    type Upstream = u8;
    type Inspector = NoInspection;

    fn inspect(
        &mut self,
        _id: ExchangeId,
        _head: &ResponseHead,
        _has_body: bool,
    ) -> Option<NoInspection> {
        None
    }

    fn inspected(&mut self, _id: ExchangeId, _inspector: NoInspection) {}

    fn body_mode(&mut self, _id: ExchangeId, _head: &RequestHead) -> BodyMode {
        BodyMode::Stream
    }

    async fn decide(
        &mut self,
        _id: ExchangeId,
        head: &mut RequestHead,
        _body: Option<&[u8]>,
    ) -> Dispatch<u8> {
        let _ = head
            .headers
            .insert("Authorization", "Bearer integration-credential");
        Dispatch::Forward { upstream: 0 }
    }

    fn finish(&mut self, outcome: &Finished<'_>) {
        black_box(outcome.status);
    }

    fn error_response(&self, _err: &HttpError, _id: ExchangeId) -> Option<LocalResponse> {
        None
    }
}

async fn round_trip(client: &mut DuplexStream, buf: &mut BytesMut, response_len: usize) {
    client.write_all(REQUEST).await.expect("write request");
    buf.clear();
    while buf.len() < response_len {
        let n = client.read_buf(buf).await.expect("read response");
        assert!(n > 0, "connection closed");
    }
}

fn keep_alive_request(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let canned = Arc::new(response());
    let mut group = c.benchmark_group("http");
    group.bench_function("request_direct_to_upstream", |b| {
        let (mut client, server) = duplex(64 * 1024);
        rt.spawn(canned_upstream(server, Arc::clone(&canned)));
        let mut buf = BytesMut::with_capacity(16 * 1024);
        b.iter(|| rt.block_on(round_trip(&mut client, &mut buf, canned.len())));
    });
    group.bench_function("request_through_driver", |b| {
        let (mut client, _driver) = spawn_proxy(&rt, &canned);
        // The proxy adds nothing to this response; its length is the upstream's.
        let mut buf = BytesMut::with_capacity(16 * 1024);
        b.iter(|| rt.block_on(round_trip(&mut client, &mut buf, canned.len())));
    });
    group.finish();
}

fn spawn_proxy(rt: &Runtime, canned: &Arc<Vec<u8>>) -> (DuplexStream, tokio::task::JoinHandle<()>) {
    let pool = Arc::new(Pool::new(
        CannedConnector(Arc::clone(canned)),
        PoolConfig::default(),
    ));
    let (client, server) = duplex(64 * 1024);
    let driver = rt.spawn(async move {
        let limits = Limits::default();
        serve_connection(
            server,
            &mut Forward,
            &*pool,
            &limits,
            1,
            std::future::pending(),
        )
        .await;
    });
    (client, driver)
}

criterion_group!(benches, parse_head, keep_alive_request);
criterion_main!(benches);
