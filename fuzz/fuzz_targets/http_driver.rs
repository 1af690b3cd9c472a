//! The whole connection driver on arbitrary client bytes, with an in-memory upstream.
//!
//! Properties: no panic and no hang; every byte the upstream receives is a sequence of requests
//! that a strict parser accepts, each framed exactly as declared (the proxy never emits a request
//! it did not validate, and never lets client bytes desync the upstream connection).

#![no_main]

use std::{
    io,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use bytes::BytesMut;
use fhirwall_http::{
    BodyFraming, BodyMode, ChunkedDecoder, Connector, Dispatch, ExchangeId, Finished, Handler,
    Headers, HttpError, Limits, LocalResponse, NoInspection, Pool, PoolConfig, RequestHead,
    RequestParser, ResponseHead, serve_connection,
};
use libfuzzer_sys::fuzz_target;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex},
    runtime::Runtime,
};

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// What the upstream answers: chosen by the first input byte.
const ANSWERS: [&[u8]; 4] = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n",
];

struct Upstream {
    answer: &'static [u8],
    /// Upstream tasks, awaited at the end of each input so none outlives it.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Connector for Upstream {
    type Key = u8;
    type Stream = DuplexStream;

    async fn connect(&self, _key: &u8) -> io::Result<DuplexStream> {
        let (near, far) = duplex(1 << 20);
        let task = tokio::spawn(strict_upstream(far, self.answer));
        self.tasks.lock().expect("not poisoned").push(task);
        Ok(near)
    }
}

/// Parses what the proxy sends as strictly as the proxy parses clients, answering each request.
async fn strict_upstream(mut io: DuplexStream, answer: &'static [u8]) {
    // Generous limits: the proxy may add fields (credential, framing) to what it accepted.
    let limits = Limits {
        max_head: 1 << 20,
        max_request_line: 1 << 20,
        max_headers: fhirwall_http::MAX_HEADERS,
        max_buffered_body: 1 << 20,
        ..Limits::default()
    };
    let mut buf = BytesMut::new();
    let mut parser = RequestParser::default();
    let mut head = RequestHead::default();
    loop {
        let complete = parser.parse(&mut buf, &limits, &mut head);
        match complete {
            Ok(true) => {
                if !read_body(&mut io, &mut buf, head.framing(), &limits).await {
                    return;
                }
                if io.write_all(answer).await.is_err() {
                    return;
                }
                continue;
            }
            Ok(false) => {}
            Err(err) => panic!("the proxy sent a request a strict parser refuses: {err}"),
        }
        match io.read_buf(&mut buf).await {
            Ok(n) if n > 0 => {}
            // The proxy may abort a request whose body the client broke; it never completes it.
            _ => return,
        }
    }
}

async fn read_body(
    io: &mut DuplexStream,
    buf: &mut BytesMut,
    framing: BodyFraming,
    limits: &Limits,
) -> bool {
    let mut decoder = match framing {
        BodyFraming::None => return true,
        BodyFraming::Length(n) => {
            while (buf.len() as u64) < n {
                if !matches!(io.read_buf(buf).await, Ok(m) if m > 0) {
                    return false;
                }
            }
            let _ = buf.split_to(usize::try_from(n).expect("small"));
            return true;
        }
        BodyFraming::Chunked => ChunkedDecoder::new(limits.max_chunk_line, limits.max_trailer),
    };
    loop {
        let step = decoder
            .decode(buf)
            .expect("the proxy sent an invalid chunked body");
        let _ = buf.split_to(step.consumed);
        if step.done {
            assert!(buf.is_empty() || buf.len() < 1 << 20);
            return true;
        }
        if step.consumed == 0 && !matches!(io.read_buf(buf).await, Ok(m) if m > 0) {
            return false;
        }
    }
}

/// Forwards everything except `/deny*`; buffers `/b*` bodies.
struct Fuzz;

impl Handler for Fuzz {
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

    fn body_mode(&mut self, _id: ExchangeId, head: &RequestHead) -> BodyMode {
        if head.path().starts_with(b"/b") {
            BodyMode::Buffer
        } else {
            BodyMode::Stream
        }
    }

    async fn decide(
        &mut self,
        _id: ExchangeId,
        head: &mut RequestHead,
        _body: Option<&[u8]>,
    ) -> Dispatch<u8> {
        if head.path().starts_with(b"/deny") {
            return Dispatch::Respond(answer(403, "denied"));
        }
        let _ = head.headers.insert("Authorization", "Bearer x");
        Dispatch::Forward { upstream: 0 }
    }

    fn finish(&mut self, _outcome: &Finished<'_>) {}

    fn error_response(&self, err: &HttpError, _id: ExchangeId) -> Option<LocalResponse> {
        Some(answer(err.status()?, err.reason()))
    }
}

/// The handler's own answers: the reason as a plain-text body.
fn answer(status: u16, reason: &str) -> LocalResponse {
    let mut headers = Headers::default();
    let _ = headers.insert("Content-Type", "text/plain");
    LocalResponse {
        status,
        headers,
        body: bytes::Bytes::copy_from_slice(reason.as_bytes()),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let answer = ANSWERS[usize::from(selector) % ANSWERS.len()];
    let limits = Limits {
        max_head: 2048,
        max_request_line: 512,
        max_buffered_body: 4096,
        header_timeout: Duration::from_millis(200),
        idle_timeout: Duration::from_millis(200),
        body_timeout: Duration::from_millis(200),
        response_timeout: Duration::from_millis(200),
        linger_timeout: Duration::from_millis(50),
        ..Limits::default()
    };
    let client_bytes = input.to_vec();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen_by_client = Arc::clone(&seen);
    runtime().block_on(async move {
        let pool = Pool::new(
            Upstream {
                answer,
                tasks: Mutex::default(),
            },
            PoolConfig::default(),
        );
        let (mut client, server) = duplex(1 << 20);
        let client_task = tokio::spawn(async move {
            let _ = client.write_all(&client_bytes).await;
            let _ = client.shutdown().await;
            let mut out = Vec::new();
            let _ = client.read_to_end(&mut out).await;
            seen_by_client
                .lock()
                .expect("not poisoned")
                .extend_from_slice(&out);
        });
        let mut handler = Fuzz;
        let serve = serve_connection(
            server,
            &mut handler,
            &pool,
            &limits,
            1,
            std::future::pending(),
        );
        let summary = tokio::time::timeout(Duration::from_secs(10), serve)
            .await
            .expect("driver hangs");
        assert!(summary.forwarded <= summary.requests);
        tokio::time::timeout(Duration::from_secs(10), client_task)
            .await
            .expect("client hangs")
            .expect("client task");
        let tasks = std::mem::take(&mut *pool.connector().tasks.lock().expect("not poisoned"));
        drop(pool);
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("upstream hangs")
                .expect("upstream task");
        }
    });
    let out = seen.lock().expect("not poisoned");
    // Everything the client got is a sequence of well-formed response heads (bodies skipped by
    // only checking the first head: its status line must be well-formed when anything came).
    if !out.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        assert!(
            response.parse(&out).is_ok(),
            "malformed response to the client"
        );
    }
});
