//! Responses a handler holds until something outside is ready ([`Handler::release`]): nothing
//! reaches the client before the release, then the response as it would have gone out at once;
//! a handler's answer instead replaces the whole response.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::{Notify, Semaphore},
    time::timeout,
};

use super::support::{
    ANSWER_TYPE, Client, DuplexConnector, Inspect, TcpConnector, TcpUpstream, TestHandler,
    TestInspector, answer, pool, spawn_driver, test_limits,
};
use crate::{
    BodyMode, ConnectionEnd, Dispatch, ErrorSource, ExchangeId, Finished, Handler, HttpError,
    LocalResponse, RequestHead, ResponseHead,
};

/// The body of the handler's answer when it does not release a response.
const NOT_DURABLE: &str = "the audit record is not durable";

/// The test handler, with a [`Handler::release`] of its own.
struct Releasing {
    inner: TestHandler,
    mode: Release,
    /// The path of the request being handled.
    path: Vec<u8>,
}

enum Release {
    /// Holds every response until the test adds a permit to `open`; `holding` is notified as
    /// each hold begins.
    Gate {
        holding: Arc<Notify>,
        open: Arc<Semaphore>,
    },
    /// Replaces the responses to `/unreleased*` with an answer of this status.
    Refuse { status: u16 },
}

impl Releasing {
    fn new(inner: TestHandler, mode: Release) -> Self {
        Self {
            inner,
            mode,
            path: Vec::new(),
        }
    }
}

impl Handler for Releasing {
    type Upstream = SocketAddr;
    type Inspector = TestInspector;

    fn body_mode(&mut self, id: ExchangeId, head: &RequestHead) -> BodyMode {
        self.inner.body_mode(id, head)
    }

    async fn decide(
        &mut self,
        id: ExchangeId,
        head: &mut RequestHead,
        body: Option<&[u8]>,
    ) -> Dispatch<SocketAddr> {
        self.path = head.path().to_vec();
        self.inner.decide(id, head, body).await
    }

    async fn release(&mut self, _id: ExchangeId) -> Result<(), LocalResponse> {
        match &self.mode {
            Release::Gate { holding, open } => {
                holding.notify_one();
                open.acquire().await.expect("semaphore open").forget();
                Ok(())
            }
            Release::Refuse { status } if self.path.starts_with(b"/unreleased") => {
                Err(answer(*status, NOT_DURABLE))
            }
            Release::Refuse { .. } => Ok(()),
        }
    }

    fn inspect(
        &mut self,
        id: ExchangeId,
        head: &ResponseHead,
        has_body: bool,
    ) -> Option<TestInspector> {
        self.inner.inspect(id, head, has_body)
    }

    fn inspected(&mut self, id: ExchangeId, inspector: TestInspector) {
        self.inner.inspected(id, inspector);
    }

    fn finish(&mut self, outcome: &Finished<'_>) {
        self.inner.finish(outcome);
    }

    fn error_response(&self, err: &HttpError, id: ExchangeId) -> Option<LocalResponse> {
        self.inner.error_response(err, id)
    }
}

/// Any address: the in-memory connector ignores it.
const NOWHERE: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    9,
));

/// Everything the client receives for `request` through a handler that releases at once.
async fn at_once(request: &[u8]) -> Vec<u8> {
    let (io, driver) = spawn_driver(
        Arc::new(pool(DuplexConnector::default())),
        TestHandler::new(NOWHERE),
        test_limits(),
    );
    let mut client = Client::new(io);
    client.send(request).await;
    client.io.shutdown().await.expect("close");
    let raw = client.rest().await;
    driver.await.expect("driver");
    raw
}

#[tokio::test(start_paused = true)]
async fn a_held_response_goes_out_unchanged_once_released_and_not_before() {
    for target in ["/Patient/1", "/big/300000"] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: fhir.local\r\n\r\n");
        let reference = at_once(request.as_bytes()).await;
        let connector = DuplexConnector::default();
        let stats = Arc::clone(&connector.stats);
        let holding = Arc::new(Notify::new());
        let open = Arc::new(Semaphore::new(0));
        let handler = Releasing::new(
            TestHandler::new(NOWHERE),
            Release::Gate {
                holding: Arc::clone(&holding),
                open: Arc::clone(&open),
            },
        );
        let finished = Arc::clone(&handler.inner.finished);
        let (io, driver) = spawn_driver(Arc::new(pool(connector)), handler, test_limits());
        let mut client = Client::new(io);
        client.send(request.as_bytes()).await;
        timeout(Duration::from_secs(1), holding.notified())
            .await
            .expect("the handler holds the response");
        assert_eq!(stats.requests(), 1, "{target}: forwarded at once");
        // Longer than every timeout of the engine: the hold is the handler's to bound.
        let mut byte = [0u8; 1];
        assert!(
            timeout(Duration::from_mins(1), client.io.read(&mut byte))
                .await
                .is_err(),
            "{target}: nothing of the response before its release"
        );
        open.add_permits(1);
        client.io.shutdown().await.expect("close");
        let raw = client.rest().await;
        assert!(reference.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(
            raw == reference,
            "{target}: the released response is the one sent at once"
        );
        driver.await.expect("driver");
        let finished = finished.lock().expect("lock");
        assert_eq!(finished.len(), 1);
        assert_eq!(finished[0].status, Some(200));
        assert!(finished[0].forwarded && finished[0].error.is_none());
    }
}

#[tokio::test]
async fn a_response_not_released_is_replaced_by_the_handlers_answer() {
    let upstream = TcpUpstream::start().await;
    let mut inner = TestHandler::new(upstream.addr);
    inner.inspect = Inspect::Observe;
    let finished = Arc::clone(&inner.finished);
    let inspected = Arc::clone(&inner.seen_by_inspector);
    let handler = Releasing::new(inner, Release::Refuse { status: 503 });
    let (io, driver) = spawn_driver(Arc::new(pool(TcpConnector)), handler, test_limits());
    let mut client = Client::new(io);
    client
        .send(b"GET /Patient/1 HTTP/1.1\r\nHost: fhir.local\r\n\r\n")
        .await;
    assert_eq!(client.response(false).await.expect("released").status, 200);
    client
        .send(b"GET /unreleased/1 HTTP/1.1\r\nHost: fhir.local\r\n\r\n")
        .await;
    let replaced = client.response(false).await.expect("the answer");
    assert_eq!(replaced.status, 503);
    assert_eq!(replaced.header("content-type"), Some(ANSWER_TYPE));
    assert_eq!(replaced.body, NOT_DURABLE.as_bytes());
    assert_eq!(
        replaced.header("connection"),
        None,
        "the client keeps its connection"
    );
    client
        .send(b"HEAD /unreleased/2 HTTP/1.1\r\nHost: fhir.local\r\n\r\n")
        .await;
    let head = client.response(true).await.expect("the answer to HEAD");
    assert_eq!(head.status, 503);
    assert_eq!(
        head.header("content-length"),
        Some(NOT_DURABLE.len().to_string().as_str())
    );
    client
        .send(b"GET /Patient/2 HTTP/1.1\r\nHost: fhir.local\r\n\r\n")
        .await;
    let after = client.response(false).await.expect("still usable");
    assert_eq!(after.status, 200);
    assert_eq!(
        String::from_utf8_lossy(&after.body),
        "GET /Patient/2 body=0 auth=Bearer integration-credential",
        "nothing of the replaced responses was left behind"
    );
    client.io.shutdown().await.expect("close");
    let summary = driver.await.expect("driver");
    assert_eq!(summary.requests, 4);
    assert_eq!(summary.forwarded, 4);
    assert_eq!(upstream.stats.requests(), 4, "every request went upstream");
    assert_eq!(
        upstream.stats.connections(),
        3,
        "an upstream connection whose response was replaced is not reused"
    );
    let finished = finished.lock().expect("lock");
    let statuses: Vec<Option<u16>> = finished.iter().map(|f| f.status).collect();
    assert_eq!(statuses, [Some(200), Some(503), Some(503), Some(200)]);
    let bytes: Vec<u64> = finished.iter().map(|f| f.response_body_bytes).collect();
    assert_eq!(bytes[1..3], [NOT_DURABLE.len() as u64, 0]);
    assert!(finished.iter().all(|f| f.forwarded && f.error.is_none()));
    assert_eq!(
        inspected.lock().expect("lock").len(),
        2,
        "replaced responses are not inspected"
    );
}

#[tokio::test]
async fn an_answer_with_an_invalid_status_ends_the_connection_with_500() {
    let upstream = TcpUpstream::start().await;
    let inner = TestHandler::new(upstream.addr);
    let finished = Arc::clone(&inner.finished);
    let handler = Releasing::new(inner, Release::Refuse { status: 101 });
    let (io, driver) = spawn_driver(Arc::new(pool(TcpConnector)), handler, test_limits());
    let mut client = Client::new(io);
    client
        .send(b"GET /unreleased/1 HTTP/1.1\r\nHost: fhir.local\r\n\r\n")
        .await;
    let r = client.response(false).await.expect("the error answer");
    assert_eq!(r.status, 500);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(client.response(false).await.is_none());
    let summary = driver.await.expect("driver");
    assert!(
        matches!(
            summary.end,
            ConnectionEnd::Failed(HttpError::InvalidStatus { status: 101 })
        ),
        "{:?}",
        summary.end
    );
    let finished = finished.lock().expect("lock");
    assert_eq!(finished[0].status, Some(500));
    assert_eq!(finished[0].error, Some(ErrorSource::Internal));
}
