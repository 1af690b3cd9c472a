//! Well-formed traffic through the driver: keep-alive, pipelining, bodies in both directions,
//! 100-continue, big responses with bounded buffers, special statuses, upstream failures.

use std::{sync::Arc, time::Duration};

use tokio::io::AsyncWriteExt;

use super::support::{
    ANSWER_TYPE, Client, DuplexConnector, HangingConnector, TcpConnector, TcpUpstream, TestHandler,
    big_byte, pool, spawn_driver, spawn_driver_with_shutdown, test_limits,
};
use crate::{ConnectionEnd, ErrorSource, Limits};

const GET: &[u8] =
    b"GET /Patient/1 HTTP/1.1\r\nHost: fhir.local\r\nAuthorization: Bearer shared\r\n\r\n";

async fn setup() -> (TcpUpstream, Arc<crate::Pool<TcpConnector>>, TestHandler) {
    let upstream = TcpUpstream::start().await;
    let handler = TestHandler::new(upstream.addr);
    (upstream, Arc::new(pool(TcpConnector)), handler)
}

#[tokio::test]
async fn keep_alive_reuses_both_connections_and_rewrites_credentials() {
    let (upstream, pool, handler) = setup().await;
    let finished = Arc::clone(&handler.finished);
    let (io, driver) = spawn_driver(pool, handler, test_limits());
    let mut client = Client::new(io);
    for _ in 0..3 {
        client.send(GET).await;
        let r = client.response(false).await.expect("response");
        assert_eq!(r.status, 200);
        assert_eq!(
            String::from_utf8_lossy(&r.body),
            "GET /Patient/1 body=0 auth=Bearer integration-credential"
        );
        assert_eq!(
            r.header("connection"),
            None,
            "upstream hop-by-hop fields never reach the client"
        );
        assert_eq!(r.header("keep-alive"), None);
    }
    client.io.shutdown().await.expect("close");
    let summary = driver.await.expect("driver");
    assert_eq!(summary.requests, 3);
    assert!(
        matches!(summary.end, ConnectionEnd::ClientClosed),
        "{:?}",
        summary.end
    );
    assert_eq!(
        upstream.stats.connections(),
        1,
        "the pooled upstream connection is reused"
    );
    let seen = upstream.stats.seen();
    assert_eq!(
        seen[2].header("x-correlation-id"),
        Some("0000000000000007-3")
    );
    let finished = finished.lock().expect("not poisoned");
    assert_eq!(finished.len(), 3);
    assert!(
        finished
            .iter()
            .all(|f| f.status == Some(200) && f.forwarded && f.error.is_none())
    );
}

#[tokio::test]
async fn hop_by_hop_fields_are_stripped_towards_the_upstream() {
    let (upstream, pool, handler) = setup().await;
    let (io, driver) = spawn_driver(pool, handler, test_limits());
    let mut client = Client::new(io);
    client
        .send(
            b"GET /x HTTP/1.1\r\nHost: fhir.local\r\nConnection: keep-alive, X-Private\r\nX-Private: 1\r\n\
              Keep-Alive: 300\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\
              Connection: HTTP2-Settings\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nAccept: application/fhir+json\r\n\r\n",
        )
        .await;
    assert_eq!(client.response(false).await.expect("response").status, 200);
    client.io.shutdown().await.expect("close");
    driver.await.expect("driver");
    let seen = &upstream.stats.seen()[0];
    let names: Vec<&str> = seen.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["Host", "Accept", "Authorization", "X-Correlation-Id"],
        "{names:?}"
    );
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (upstream, pool, handler) = setup().await;
    let (io, driver) = spawn_driver(pool, handler, test_limits());
    let mut client = Client::new(io);
    let mut batch = Vec::new();
    for i in 0..5 {
        batch.extend_from_slice(
            format!("GET /Observation/{i} HTTP/1.1\r\nHost: fhir.local\r\n\r\n").as_bytes(),
        );
    }
    batch.extend_from_slice(
        b"POST /Observation HTTP/1.1\r\nHost: fhir.local\r\nContent-Length: 4\r\n\r\nbody",
    );
    client.send(&batch).await;
    for i in 0..5 {
        let r = client.response(false).await.expect("response");
        assert!(String::from_utf8_lossy(&r.body).starts_with(&format!("GET /Observation/{i} ")));
    }
    let r = client.response(false).await.expect("post response");
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        "POST /Observation body=4 auth=Bearer integration-credential"
    );
    client.io.shutdown().await.expect("close");
    assert_eq!(driver.await.expect("driver").requests, 6);
    assert_eq!(upstream.stats.requests(), 6);
}

#[tokio::test]
async fn a_bad_request_in_a_pipeline_stops_the_rest_without_desync() {
    let (upstream, pool, handler) = setup().await;
    let (io, driver) = spawn_driver(pool, handler, test_limits());
    let mut client = Client::new(io);
    // The second request smuggles a third one in its body if a hop trusted the wrong length.
    client
        .send(
            b"GET /first HTTP/1.1\r\nHost: fhir.local\r\n\r\n\
              POST /second HTTP/1.1\r\nHost: fhir.local\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n\
              0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: fhir.local\r\n\r\n\
              GET /fourth HTTP/1.1\r\nHost: fhir.local\r\n\r\n",
        )
        .await;
    assert_eq!(client.response(false).await.expect("first").status, 200);
    let second = client.response(false).await.expect("second");
    assert_eq!(second.status, 400);
    assert_eq!(second.header("connection"), Some("close"));
    assert!(
        client.response(false).await.is_none(),
        "nothing after the bad request"
    );
    let summary = driver.await.expect("driver");
    assert!(matches!(summary.end, ConnectionEnd::Failed(_)));
    let targets: Vec<String> = upstream
        .stats
        .seen()
        .into_iter()
        .map(|s| s.target)
        .collect();
    assert_eq!(targets, ["/first"]);
}

#[tokio::test]
async fn chunked_request_is_rechunked_when_streamed_and_sized_when_buffered() {
    let (upstream, pool, handler) = setup().await;
    let bodies = Arc::clone(&handler.bodies);
    let (io, driver) = spawn_driver(pool, handler, test_limits());
    let mut client = Client::new(io);
    let chunked = "Transfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Trailer: dropped\r\n\r\n";
    client
        .send(format!("POST /Observation HTTP/1.1\r\nHost: fhir.local\r\n{chunked}").as_bytes())
        .await;
    assert_eq!(client.response(false).await.expect("streamed").status, 200);
    client
        .send(format!("POST /Bundle HTTP/1.1\r\nHost: fhir.local\r\n{chunked}").as_bytes())
        .await;
    assert_eq!(client.response(false).await.expect("buffered").status, 200);
    client.io.shutdown().await.expect("close");
    driver.await.expect("driver");
    let seen = upstream.stats.seen();
    assert!(seen[0].chunked && seen[0].header("content-length").is_none());
    assert_eq!(seen[0].body, b"Wikipedia");
    assert!(!seen[1].chunked);
    assert_eq!(seen[1].header("content-length"), Some("9"));
    assert_eq!(seen[1].body, b"Wikipedia");
    assert_eq!(
        bodies.lock().expect("not poisoned").clone(),
        [None, Some(b"Wikipedia".to_vec())]
    );
}

#[tokio::test]
async fn chunked_and_close_delimited_responses_reach_the_client_chunked() {
    let (upstream, pool, handler) = setup().await;
    let (io, driver) = spawn_driver(pool, handler, test_limits());
    let mut client = Client::new(io);
    client
        .send(b"GET /chunked HTTP/1.1\r\nHost: fhir.local\r\n\r\n")
        .await;
    let r = client.response(false).await.expect("chunked");
    assert!(r.chunked);
    assert_eq!(r.body, b"hello world");
    assert_eq!(
        r.header("x-up"),
        None,
        "fields named by the upstream's Connection are dropped"
    );
    client
        .send(b"GET /close-delimited HTTP/1.1\r\nHost: fhir.local\r\n\r\n")
        .await;
    let r = client.response(false).await.expect("close-delimited");
    assert!(r.chunked, "re-framed so the client connection survives");
    assert_eq!(r.body, b"until the end");
    client.send(GET).await;
    assert_eq!(client.response(false).await.expect("after").status, 200);
    client.io.shutdown().await.expect("close");
    assert_eq!(driver.await.expect("driver").requests, 3);
    assert_eq!(
        upstream.stats.connections(),
        2,
        "a close-delimited upstream connection is not reused"
    );
}

#[tokio::test]
async fn http10_client_gets_close_semantics_and_no_chunking() {
    let (_upstream, pool, handler) = setup().await;
    let (io, driver) = spawn_driver(pool, handler, test_limits());
    let mut client = Client::new(io);
    client
        .send(b"GET /chunked HTTP/1.0\r\nHost: fhir.local\r\n\r\nGET /ignored HTTP/1.0\r\n\r\n")
        .await;
    let r = client.response(false).await.expect("response");
    assert!(!r.chunked);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.body, b"hello world", "body delimited by close");
    let summary = driver.await.expect("driver");
    assert_eq!(summary.requests, 1);
    assert!(matches!(summary.end, ConnectionEnd::Closed));
}

#[tokio::test]
async fn continue_is_sent_only_when_the_handler_allows() {
    let (upstream, pool, handler) = setup().await;
    let (io, driver) = spawn_driver(pool, handler, test_limits());
    let mut client = Client::new(io);
    client.send(b"PUT /Patient/1 HTTP/1.1\r\nHost: fhir.local\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n").await;
    assert_eq!(client.response(false).await.expect("interim").status, 100);
    client.send(b"hello").await;
    let r = client.response(false).await.expect("final");
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        "PUT /Patient/1 body=5 auth=Bearer integration-credential"
    );
    assert!(
        upstream.stats.seen()[0].header("expect").is_none(),
        "the proxy answered the expectation"
    );

    client.send(b"PUT /deny/1 HTTP/1.1\r\nHost: fhir.local\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n").await;
    let r = client.response(false).await.expect("denied");
    assert_eq!(r.status, 403, "no 100 Continue before a denial");
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.header("content-type"), Some(ANSWER_TYPE));
    assert_eq!(&r.body[..], b"policy denies this request");
    assert!(client.response(false).await.is_none());
    let summary = driver.await.expect("driver");
    assert!(matches!(summary.end, ConnectionEnd::Closed));
    assert_eq!(upstream.stats.requests(), 1);
}

#[tokio::test]
async fn a_denied_small_body_is_drained_and_the_connection_kept() {
    let (upstream, pool, handler) = setup().await;
    let finished = Arc::clone(&handler.finished);
    let (io, driver) = spawn_driver(pool, handler, test_limits());
    let mut client = Client::new(io);
    client
        .send(b"POST /deny HTTP/1.1\r\nHost: fhir.local\r\nContent-Length: 11\r\n\r\nGET / HTTP/")
        .await;
    let r = client.response(false).await.expect("denied");
    assert_eq!(r.status, 403);
    assert_eq!(r.header("connection"), None);
    client.send(GET).await;
    assert_eq!(client.response(false).await.expect("next").status, 200);
    client.io.shutdown().await.expect("close");
    driver.await.expect("driver");
    assert_eq!(
        upstream.stats.requests(),
        1,
        "the denied body was never parsed as a request"
    );
    let finished = finished.lock().expect("not poisoned");
    assert_eq!(
        (finished[0].status, finished[0].forwarded),
        (Some(403), false)
    );
}

#[tokio::test]
async fn head_204_and_304_carry_no_body_and_keep_the_stream_in_sync() {
    let (_upstream, pool, handler) = setup().await;
    let (io, driver) = spawn_driver(pool, handler, test_limits());
    let mut client = Client::new(io);
    client
        .send(b"HEAD /Patient/1 HTTP/1.1\r\nHost: fhir.local\r\n\r\n")
        .await;
    let r = client.response(true).await.expect("head");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-length"),
        Some("57"),
        "HEAD keeps the representation length"
    );
    client
        .send(b"DELETE /no-content HTTP/1.1\r\nHost: fhir.local\r\n\r\n")
        .await;
    let r = client.response(false).await.expect("204");
    assert_eq!(
        (
            r.status,
            r.header("content-length"),
            r.header("transfer-encoding")
        ),
        (204, None, None)
    );
    client
        .send(b"GET /not-modified HTTP/1.1\r\nHost: fhir.local\r\n\r\n")
        .await;
    let r = client.response(false).await.expect("304");
    assert_eq!((r.status, r.header("etag")), (304, Some("\"v1\"")));
    client
        .send(b"GET /interim HTTP/1.1\r\nHost: fhir.local\r\n\r\n")
        .await;
    let r = client.response(false).await.expect("after interim");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"ok"[..]),
        "upstream 1xx are dropped"
    );
    client.send(GET).await;
    assert_eq!(
        client.response(false).await.expect("still in sync").status,
        200
    );
    client.io.shutdown().await.expect("close");
    assert_eq!(driver.await.expect("driver").requests, 5);
}

async fn stream_big(path: &str) {
    const SIZE: usize = 50 * 1024 * 1024;
    let (_upstream, pool, handler) = setup().await;
    let limits = test_limits();
    let io_buffer = limits.io_buffer;
    let (io, driver) = spawn_driver(pool, handler, limits);
    let mut client = Client::new(io);
    client
        .send(format!("GET {path}/{SIZE} HTTP/1.1\r\nHost: fhir.local\r\n\r\n").as_bytes())
        .await;
    let r = client.response(false).await.expect("big response");
    assert_eq!(r.body.len(), SIZE);
    assert!(
        r.body
            .iter()
            .enumerate()
            .step_by(4099)
            .all(|(i, b)| *b == big_byte(i)),
        "content intact"
    );
    client.io.shutdown().await.expect("close");
    let summary = driver.await.expect("driver");
    // Read buffers of both sides, the write buffer and slack: a few io_buffers, never the body.
    assert!(
        summary.peak_buffered <= 6 * io_buffer,
        "peak {} bytes for a {SIZE} byte body",
        summary.peak_buffered
    );
}

#[tokio::test]
async fn fifty_megabytes_stream_through_bounded_buffers() {
    stream_big("/big").await;
}

#[tokio::test]
async fn fifty_megabytes_chunked_stream_through_bounded_buffers() {
    stream_big("/bigchunked").await;
}

#[tokio::test]
async fn malformed_upstream_responses_become_502() {
    for path in ["/malformed", "/garbage", "/switch"] {
        let (_upstream, pool, handler) = setup().await;
        let finished = Arc::clone(&handler.finished);
        let (io, driver) = spawn_driver(pool, handler, test_limits());
        let mut client = Client::new(io);
        client
            .send(format!("GET {path} HTTP/1.1\r\nHost: fhir.local\r\n\r\n").as_bytes())
            .await;
        let r = client.response(false).await.expect("answer");
        assert_eq!(r.status, 502, "{path}");
        // The handler's answer to the engine error.
        assert_eq!(r.header("content-type"), Some(ANSWER_TYPE), "{path}");
        assert!(
            !String::from_utf8_lossy(&r.body).contains("hello"),
            "{path}: upstream bytes leaked"
        );
        driver.await.expect("driver");
        assert_eq!(
            finished.lock().expect("not poisoned")[0].error,
            Some(ErrorSource::Upstream),
            "{path}"
        );
    }
}

#[tokio::test]
async fn upstream_failures_mid_body_cut_the_client_connection() {
    for path in ["/truncated", "/bad-chunk"] {
        let (_upstream, pool, handler) = setup().await;
        let finished = Arc::clone(&handler.finished);
        let (io, driver) = spawn_driver(pool, handler, test_limits());
        let mut client = Client::new(io);
        client
            .send(format!("GET {path} HTTP/1.1\r\nHost: fhir.local\r\n\r\n").as_bytes())
            .await;
        assert!(
            client.response(false).await.is_none(),
            "{path}: a truncated response must not look complete"
        );
        let summary = driver.await.expect("driver");
        assert!(matches!(summary.end, ConnectionEnd::Failed(_)), "{path}");
        let f = finished.lock().expect("not poisoned")[0].clone();
        assert_eq!(
            (f.status, f.error),
            (Some(200), Some(ErrorSource::Upstream)),
            "{path}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn upstream_timeouts_become_504() {
    let connector = DuplexConnector::default();
    let limits = Limits {
        response_timeout: Duration::from_secs(30),
        ..test_limits()
    };
    let handler = TestHandler::new("127.0.0.1:9".parse().expect("addr"));
    let (io, driver) = spawn_driver(Arc::new(pool(connector)), handler, limits.clone());
    let mut client = Client::new(io);
    client
        .send(b"GET /slow HTTP/1.1\r\nHost: fhir.local\r\n\r\n")
        .await;
    let r = client.response(false).await.expect("answer");
    assert_eq!(r.status, 504);
    assert_eq!(r.header("content-type"), Some(ANSWER_TYPE));
    assert_eq!(&r.body[..], b"upstream did not answer in time");
    driver.await.expect("driver");

    let handler = TestHandler::new("127.0.0.1:9".parse().expect("addr"));
    let (io, driver) = spawn_driver(Arc::new(pool(HangingConnector)), handler, limits);
    let mut client = Client::new(io);
    client.send(GET).await;
    assert_eq!(client.response(false).await.expect("answer").status, 504);
    driver.await.expect("driver");
}

#[tokio::test]
async fn refused_upstream_connection_becomes_502() {
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        listener.local_addr().expect("addr")
    };
    let (io, driver) = spawn_driver(
        Arc::new(pool(TcpConnector)),
        TestHandler::new(closed),
        test_limits(),
    );
    let mut client = Client::new(io);
    client.send(GET).await;
    assert_eq!(client.response(false).await.expect("answer").status, 502);
    driver.await.expect("driver");
}

#[tokio::test(start_paused = true)]
async fn slow_header_client_is_cut_while_a_normal_client_is_served() {
    let connector = DuplexConnector::default();
    let stats = Arc::clone(&connector.stats);
    let pool = Arc::new(pool(connector));
    let limits = Limits {
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_mins(1),
        ..test_limits()
    };
    let addr = "127.0.0.1:9".parse().expect("addr");
    let (slow_io, slow_driver) =
        spawn_driver(Arc::clone(&pool), TestHandler::new(addr), limits.clone());
    let (fast_io, fast_driver) = spawn_driver(pool, TestHandler::new(addr), limits);
    let mut slow = Client::new(slow_io);
    let mut fast = Client::new(fast_io);
    slow.send(b"GET /Patient/1 HTTP/1.1\r\nHost: fh").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    fast.send(GET).await;
    assert_eq!(fast.response(false).await.expect("fast").status, 200);
    slow.send(b"ir.local\r\nX-Slow: 1\r\n").await;
    let r = slow.response(false).await.expect("408");
    assert_eq!(r.status, 408);
    let summary = slow_driver.await.expect("driver");
    assert!(matches!(
        summary.end,
        ConnectionEnd::Failed(crate::HttpError::HeaderTimeout { .. })
    ));
    assert!(
        !fast_driver.is_finished(),
        "the normal client's keep-alive connection is untouched"
    );
    fast.send(GET).await;
    assert_eq!(fast.response(false).await.expect("fast again").status, 200);
    fast.io.shutdown().await.expect("close");
    fast_driver.await.expect("driver");
    assert_eq!(stats.requests(), 2);
}

#[tokio::test(start_paused = true)]
async fn idle_keep_alive_connection_times_out_silently() {
    let connector = DuplexConnector::default();
    let limits = Limits {
        idle_timeout: Duration::from_mins(1),
        ..test_limits()
    };
    let addr = "127.0.0.1:9".parse().expect("addr");
    let (io, driver) = spawn_driver(Arc::new(pool(connector)), TestHandler::new(addr), limits);
    let mut client = Client::new(io);
    client.send(GET).await;
    assert_eq!(client.response(false).await.expect("response").status, 200);
    assert!(client.rest().await.is_empty(), "idle close sends nothing");
    assert!(matches!(
        driver.await.expect("driver").end,
        ConnectionEnd::IdleTimeout
    ));
}

#[tokio::test]
async fn shutdown_finishes_in_flight_request_then_closes() {
    let (upstream, pool, handler) = setup().await;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = rx.await;
    };
    let (io, driver) = spawn_driver_with_shutdown(pool, handler, test_limits(), shutdown);
    let mut client = Client::new(io);
    client.send(GET).await;
    assert_eq!(client.response(false).await.expect("before").status, 200);
    // A request is in flight (its head is half sent) when the stop comes.
    client.send(b"GET /Patient/2 HTTP/1.1\r\n").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    tx.send(()).expect("signal");
    tokio::time::sleep(Duration::from_millis(20)).await;
    client.send(b"Host: fhir.local\r\n\r\n").await;
    let r = client.response(false).await.expect("in-flight finishes");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(client.response(false).await.is_none());
    assert!(matches!(
        driver.await.expect("driver").end,
        ConnectionEnd::Closed
    ));
    assert_eq!(upstream.stats.requests(), 2);

    // An idle connection closes as soon as the stop comes.
    let (_upstream, pool, handler) = setup().await;
    let (io, driver) =
        spawn_driver_with_shutdown(pool, handler, test_limits(), std::future::ready(()));
    let mut client = Client::new(io);
    assert!(client.rest().await.is_empty());
    assert!(matches!(
        driver.await.expect("driver").end,
        ConnectionEnd::Shutdown
    ));
}

/// Connections whose upstream answers one request, then closes when the next one arrives (the
/// race of an upstream closing an idle keep-alive connection as the proxy reuses it).
#[derive(Default)]
struct ClosesAfterOne {
    made: std::sync::atomic::AtomicUsize,
}

impl crate::Connector for ClosesAfterOne {
    type Key = std::net::SocketAddr;
    type Stream = tokio::io::DuplexStream;

    async fn connect(
        &self,
        _key: &std::net::SocketAddr,
    ) -> std::io::Result<tokio::io::DuplexStream> {
        self.made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = Vec::new();
            for answered in 0.. {
                while super::support::find(&buf, b"\r\n\r\n").is_none() {
                    if !matches!(far.read_buf(&mut buf).await, Ok(n) if n > 0) {
                        return;
                    }
                }
                if answered == 1 {
                    return; // drops the connection without answering
                }
                let end = super::support::find(&buf, b"\r\n\r\n").unwrap_or_default() + 4;
                buf.drain(..end);
                let _ = far
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            }
        });
        Ok(near)
    }
}

#[tokio::test]
async fn idempotent_requests_are_retried_once_when_a_pooled_connection_went_stale() {
    let addr = "127.0.0.1:9".parse().expect("addr");
    let pool = Arc::new(pool(ClosesAfterOne::default()));
    let (io, driver) = spawn_driver(Arc::clone(&pool), TestHandler::new(addr), test_limits());
    let mut client = Client::new(io);
    for _ in 0..2 {
        client.send(GET).await;
        assert_eq!(client.response(false).await.expect("response").status, 200);
    }
    // A POST is not idempotent: on a stale connection it fails rather than being sent twice.
    client
        .send(b"POST /Observation HTTP/1.1\r\nHost: fhir.local\r\nContent-Length: 2\r\n\r\n{}")
        .await;
    assert_eq!(client.response(false).await.expect("response").status, 502);
    driver.await.expect("driver");
    // GET (new), GET (stale reused, then new), POST (stale reused, not retried).
    assert_eq!(
        pool.connector()
            .made
            .load(std::sync::atomic::Ordering::SeqCst),
        2
    );
}
