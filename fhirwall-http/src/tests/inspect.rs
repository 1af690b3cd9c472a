//! Responses through a handler's inspector: held whole and released with their length, held
//! and replaced, re-framed as they stream, cut off once begun, or only observed.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;

use super::support::{
    Client, Inspect, TcpConnector, TcpUpstream, TestHandler, big_byte, pool, spawn_driver,
    test_limits,
};
use crate::{ConnectionEnd, ErrorSource};

const GET: &[u8] = b"GET /Patient/1 HTTP/1.1\r\nHost: fhir.local\r\n\r\n";

async fn setup(inspect: Inspect) -> (TcpUpstream, TestHandler) {
    let upstream = TcpUpstream::start().await;
    let mut handler = TestHandler::new(upstream.addr);
    handler.inspect = inspect;
    (upstream, handler)
}

#[tokio::test]
async fn a_held_response_goes_out_whole_with_its_length_or_is_replaced() {
    let (upstream, handler) = setup(Inspect::Hold {
        refuse_if: b"/Patient/2",
    })
    .await;
    let finished = Arc::clone(&handler.finished);
    let seen = Arc::clone(&handler.seen_by_inspector);
    let (io, driver) = spawn_driver(Arc::new(pool(TcpConnector)), handler, test_limits());
    let mut client = Client::new(io);
    client.send(GET).await;
    let r = client.response(false).await.expect("response");
    assert_eq!(r.status, 200);
    assert!(!r.chunked, "released whole, with its length");
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        "GET /Patient/1 body=0 auth=Bearer integration-credential"
    );
    client
        .send(b"GET /Patient/2 HTTP/1.1\r\nHost: fhir.local\r\n\r\n")
        .await;
    let refused = client.response(false).await.expect("the replacement");
    assert_eq!(refused.status, 403);
    assert!(String::from_utf8_lossy(&refused.body).contains("the inspector refused the response"));
    assert!(
        !String::from_utf8_lossy(&refused.body).contains("/Patient/2 body"),
        "nothing of the refused response reached the client"
    );
    client.send(GET).await;
    assert_eq!(
        client.response(false).await.expect("still usable").status,
        200,
        "a replaced response leaves the client connection clean"
    );
    client.io.shutdown().await.expect("close");
    let summary = driver.await.expect("driver");
    assert_eq!(summary.requests, 3);
    assert_eq!(
        upstream.stats.connections(),
        2,
        "the upstream connection whose response was refused is not reused"
    );
    let statuses: Vec<Option<u16>> = finished
        .lock()
        .expect("lock")
        .iter()
        .map(|f| f.status)
        .collect();
    assert_eq!(statuses, [Some(200), Some(403), Some(200)]);
    assert!(seen.lock().expect("lock").iter().all(|(_, ended)| *ended));
}

#[tokio::test]
async fn a_streamed_response_is_reframed_and_a_late_refusal_cuts_it_off() {
    let (_upstream, handler) = setup(Inspect::Stream {
        cut_after: Some(100_000),
    })
    .await;
    let finished = Arc::clone(&handler.finished);
    let (io, driver) = spawn_driver(Arc::new(pool(TcpConnector)), handler, test_limits());
    let mut client = Client::new(io);
    client.send(GET).await;
    let r = client.response(false).await.expect("response");
    assert!(r.chunked, "the inspector may change the length: chunked");
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        "GET /PATIENT/1 BODY=0 AUTH=BEARER INTEGRATION-CREDENTIAL"
    );
    client
        .send(b"GET /big/300000 HTTP/1.1\r\nHost: fhir.local\r\n\r\n")
        .await;
    assert!(
        client.response(false).await.is_none(),
        "cut off: the chunked body never ends"
    );
    let summary = driver.await.expect("driver");
    assert!(
        matches!(summary.end, ConnectionEnd::Failed(_)),
        "{:?}",
        summary.end
    );
    let finished = finished.lock().expect("lock");
    assert_eq!(finished[1].status, Some(200), "the head had gone out");
    assert_eq!(finished[1].error, Some(ErrorSource::Internal));
}

#[tokio::test]
async fn an_observer_sees_every_byte_of_an_unchanged_response() {
    let (_upstream, handler) = setup(Inspect::Observe).await;
    let seen = Arc::clone(&handler.seen_by_inspector);
    let (io, driver) = spawn_driver(Arc::new(pool(TcpConnector)), handler, test_limits());
    let mut client = Client::new(io);
    client
        .send(b"GET /bigchunked/200000 HTTP/1.1\r\nHost: fhir.local\r\n\r\n")
        .await;
    let r = client.response(false).await.expect("response");
    assert_eq!(r.body.len(), 200_000);
    assert!(r.body.iter().enumerate().all(|(i, b)| *b == big_byte(i)));
    client.io.shutdown().await.expect("close");
    driver.await.expect("driver");
    let seen = seen.lock().expect("lock");
    assert_eq!(seen[0].0, r.body, "the observer saw the decoded body");
    assert!(seen[0].1, "and its end");
}
