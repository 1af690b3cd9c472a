//! Many slow-header clients at once over loopback TCP: each is cut at the header timeout while
//! normal requests keep being served.

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::support::{Client, TcpConnector, TcpUpstream, TestHandler, pool, test_limits};
use crate::{Limits, serve_connection};

const SLOW_CLIENTS: usize = 1000;
const NORMAL_REQUESTS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slow_header_clients_are_cut_while_normal_requests_are_served() {
    let upstream = TcpUpstream::start().await;
    let pool = Arc::new(pool(TcpConnector));
    let limits = Limits {
        header_timeout: Duration::from_secs(2),
        ..test_limits()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let proxy = listener.local_addr().expect("proxy address");
    let upstream_addr = upstream.addr;
    let accept = tokio::spawn(async move {
        let mut id = 0;
        while let Ok((stream, _)) = listener.accept().await {
            id += 1;
            let (pool, limits) = (Arc::clone(&pool), limits.clone());
            tokio::spawn(async move {
                let mut handler = TestHandler::new(upstream_addr);
                serve_connection(
                    stream,
                    &mut handler,
                    &*pool,
                    &limits,
                    id,
                    std::future::pending(),
                )
                .await
            });
        }
    });

    let mut slow = Vec::with_capacity(SLOW_CLIENTS);
    for _ in 0..SLOW_CLIENTS {
        let mut stream = TcpStream::connect(proxy)
            .await
            .expect("connect slow client");
        stream
            .write_all(b"GET /Patient/1 HTTP/1.1\r\nHost: fhir.local\r\n")
            .await
            .expect("partial head");
        slow.push(stream);
    }

    // Normal clients, each on its own connection, while the slow ones hold theirs.
    for i in 0..NORMAL_REQUESTS {
        let stream = TcpStream::connect(proxy)
            .await
            .expect("connect normal client");
        let mut client = Client::new(stream);
        client
            .send(
                format!(
                    "GET /Observation/{i} HTTP/1.1\r\nHost: fhir.local\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            )
            .await;
        let r = client.response(false).await.expect("normal response");
        assert_eq!(r.status, 200, "normal request {i}");
    }

    let cut = slow.into_iter().map(|mut stream| {
        tokio::spawn(async move {
            let mut answer = Vec::new();
            let read =
                tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
                    .await;
            read.is_ok() && answer.starts_with(b"HTTP/1.1 408 ")
        })
    });
    let mut answered_408 = 0;
    for task in cut.collect::<Vec<_>>() {
        if task.await.expect("slow client task") {
            answered_408 += 1;
        }
    }
    accept.abort();
    assert_eq!(
        answered_408, SLOW_CLIENTS,
        "every slow client gets 408 and a close"
    );
    assert_eq!(
        upstream.stats.requests(),
        NORMAL_REQUESTS,
        "slow heads never reach the upstream"
    );
}
