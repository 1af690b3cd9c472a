//! Smuggling and malformed-request table: each case goes through the real driver to a real
//! counting upstream, and must be refused with the right status while the upstream proves that
//! nothing reached it.

use std::sync::Arc;

use super::support::{
    ANSWER_TYPE, Client, TcpConnector, TcpUpstream, TestHandler, pool, spawn_driver, test_limits,
};

/// What must reach the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reached {
    /// Not even a connection: refused before any upstream contact.
    Nothing,
    /// A connection with a partial request that was then aborted: no complete request (bodies
    /// stream, so a body cut short by the client can only be detected after forwarding began).
    NoCompleteRequest,
}

struct Case {
    name: &'static str,
    raw: Vec<u8>,
    status: u16,
    reached: Reached,
}

fn case(name: &'static str, raw: impl AsRef<[u8]>, status: u16) -> Case {
    Case {
        name,
        raw: raw.as_ref().to_vec(),
        status,
        reached: Reached::Nothing,
    }
}

fn post(fields: &str, body: &str) -> Vec<u8> {
    format!("POST /Patient HTTP/1.1\r\nHost: fhir.local\r\n{fields}\r\n{body}").into_bytes()
}

fn chunked(body: &str) -> Vec<u8> {
    post("Transfer-Encoding: chunked\r\n", body)
}

#[expect(clippy::too_many_lines, reason = "one table, one case per entry")]
fn cases() -> Vec<Case> {
    let long_target = format!(
        "GET /{} HTTP/1.1\r\nHost: fhir.local\r\n\r\n",
        "a".repeat(2000)
    );
    let huge_field = format!(
        "GET / HTTP/1.1\r\nHost: fhir.local\r\nX-Big: {}\r\n\r\n",
        "b".repeat(900).repeat(5)
    );
    let many_fields = format!(
        "GET / HTTP/1.1\r\nHost: fhir.local\r\n{}\r\n",
        (0..40).fold(String::new(), |mut fields, i| {
            use std::fmt::Write;
            let _ = write!(fields, "X-{i}: v\r\n");
            fields
        })
    );
    let endless_line = format!("GET /{}", "c".repeat(3000));
    let big_ext = format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(2000));
    vec![
        // CL.TE / TE.CL / TE.TE
        case(
            "CL.TE",
            post(
                "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\nX",
            ),
            400,
        ),
        case(
            "TE.CL",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
                "5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n",
            ),
            400,
        ),
        case(
            "TE.TE duplicate",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
            400,
        ),
        case(
            "TE.TE second junk",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-encoding: cow\r\n",
                "0\r\n\r\n",
            ),
            400,
        ),
        case(
            "TE xchunked",
            post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"),
            400,
        ),
        case(
            "TE chunked, identity",
            post("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n"),
            400,
        ),
        case(
            "TE identity, chunked",
            post("Transfer-Encoding: identity, chunked\r\n", "0\r\n\r\n"),
            400,
        ),
        case(
            "TE chunked with junk",
            post("Transfer-Encoding: chunked x\r\n", "0\r\n\r\n"),
            400,
        ),
        case(
            "TE chunked;param",
            post("Transfer-Encoding: chunked;q=1\r\n", "0\r\n\r\n"),
            400,
        ),
        case(
            "TE vertical tab",
            post("Transfer-Encoding: chunked\x0b\r\n", "0\r\n\r\n"),
            400,
        ),
        case(
            "TE space before colon",
            post("Transfer-Encoding : chunked\r\n", "0\r\n\r\n"),
            400,
        ),
        case(
            "TE tab before colon",
            post("Transfer-Encoding\t: chunked\r\n", "0\r\n\r\n"),
            400,
        ),
        case(
            "TE via obs-fold",
            post("X-Fold: a\r\n Transfer-Encoding: chunked\r\n", "0\r\n\r\n"),
            400,
        ),
        case(
            "TE in HTTP/1.0",
            "POST / HTTP/1.0\r\nHost: fhir.local\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        // Content-Length
        case(
            "CL duplicate equal",
            post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
            400,
        ),
        case(
            "CL duplicate different",
            post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
            400,
        ),
        case("CL list", post("Content-Length: 5, 5\r\n", "hello"), 400),
        case("CL negative", post("Content-Length: -1\r\n", ""), 400),
        case("CL plus sign", post("Content-Length: +5\r\n", "hello"), 400),
        case("CL hex", post("Content-Length: 0x5\r\n", "hello"), 400),
        case(
            "CL overflow",
            post("Content-Length: 99999999999999999999999\r\n", ""),
            400,
        ),
        case(
            "CL u64 max + 1",
            post("Content-Length: 18446744073709551616\r\n", ""),
            400,
        ),
        case(
            "CL inner space",
            post("Content-Length: 1 0\r\n", "0123456789"),
            400,
        ),
        case(
            "CL vertical tab",
            post("Content-Length: \x0b5\r\n", "hello"),
            400,
        ),
        case("CL empty", post("Content-Length: \r\n", ""), 400),
        case(
            "CL space before colon",
            post("Content-Length : 5\r\n", "hello"),
            400,
        ),
        // Line endings and bytes
        case(
            "bare CR in value",
            "GET / HTTP/1.1\r\nHost: fhir.local\r\nX: a\rb\r\n\r\n",
            400,
        ),
        case(
            "bare LF ends a field",
            "GET / HTTP/1.1\r\nHost: fhir.local\nX: b\r\n\r\n",
            400,
        ),
        case(
            "bare LF ends request line",
            "GET / HTTP/1.1\nHost: fhir.local\r\n\r\n",
            400,
        ),
        case("bare LF only", "GET / HTTP/1.1\nHost: fhir.local\n\n", 400),
        case(
            "NUL in value",
            "GET / HTTP/1.1\r\nHost: fhir.local\r\nX: a\0b\r\n\r\n",
            400,
        ),
        case(
            "NUL in target",
            "GET /a\0b HTTP/1.1\r\nHost: fhir.local\r\n\r\n",
            400,
        ),
        case(
            "obs-fold",
            "GET / HTTP/1.1\r\nHost: fhir.local\r\nX: a\r\n  b\r\n\r\n",
            400,
        ),
        case(
            "space before first field",
            "GET / HTTP/1.1\r\n Host: fhir.local\r\n\r\n",
            400,
        ),
        case(
            "double space in request line",
            "GET  / HTTP/1.1\r\nHost: fhir.local\r\n\r\n",
            400,
        ),
        case(
            "non-ASCII target",
            "GET /Patient/\u{e9} HTTP/1.1\r\nHost: fhir.local\r\n\r\n",
            400,
        ),
        // Sizes
        case("request line too long", long_target, 414),
        case("endless request line", endless_line, 414),
        case("header section too large", huge_field, 431),
        case("too many fields", many_fields, 431),
        // Chunked bodies
        case(
            "chunk size not hex",
            chunked("zz\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        case(
            "chunk size negative",
            chunked("-5\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        case("chunk size 0x", chunked("0x5\r\nhello\r\n0\r\n\r\n"), 400),
        case(
            "chunk size leading space",
            chunked(" 5\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        case(
            "chunk size overflow",
            chunked("1ffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        case(
            "chunk data longer than size",
            chunked("3\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        case("chunk size bare LF", chunked("5\nhello\r\n0\r\n\r\n"), 400),
        case("chunk data bare LF", chunked("5\r\nhello\n0\r\n\r\n"), 400),
        case(
            "chunk extension control char",
            chunked("5;a\x01\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        case("chunk extension too long", chunked(&big_ext), 400),
        case(
            "trailer bare LF",
            chunked("5\r\nhello\r\n0\r\nX: y\n\r\n"),
            400,
        ),
        case(
            "trailer obs-fold",
            chunked("5\r\nhello\r\n0\r\n x: y\r\n\r\n"),
            400,
        ),
        Case {
            name: "missing final chunk",
            raw: chunked("5\r\nhello\r\n"),
            status: 400,
            reached: Reached::NoCompleteRequest,
        },
        Case {
            name: "CL body cut short",
            raw: post("Content-Length: 10\r\n", "hello"),
            status: 400,
            reached: Reached::NoCompleteRequest,
        },
        case(
            "buffered chunked body over the cap",
            format!(
                "POST /Bundle HTTP/1.1\r\nHost: fhir.local\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n{}\r\n400\r\n{}\r\n0\r\n\r\n",
                "x".repeat(1024),
                "y".repeat(1024)
            ),
            413,
        ),
        case(
            "buffered CL body over the cap",
            format!(
                "POST /Bundle HTTP/1.1\r\nHost: fhir.local\r\nContent-Length: 2048\r\n\r\n{}",
                "z".repeat(2048)
            ),
            413,
        ),
        // Versions, targets, methods, Host
        case(
            "HTTP/1.2",
            "GET / HTTP/1.2\r\nHost: fhir.local\r\n\r\n",
            505,
        ),
        case(
            "HTTP/2.0",
            "GET / HTTP/2.0\r\nHost: fhir.local\r\n\r\n",
            505,
        ),
        case(
            "h2 prior-knowledge preface",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            505,
        ),
        case(
            "garbage version",
            "GET / HTTP/1.1x\r\nHost: fhir.local\r\n\r\n",
            400,
        ),
        case(
            "lowercase version",
            "GET / http/1.1\r\nHost: fhir.local\r\n\r\n",
            400,
        ),
        case("HTTP/0.9 request", "GET /\r\n\r\n", 400),
        case(
            "absolute-form other authority",
            "GET http://evil.example/Patient HTTP/1.1\r\nHost: fhir.local\r\n\r\n",
            400,
        ),
        case(
            "absolute-form userinfo",
            "GET http://user@fhir.local/ HTTP/1.1\r\nHost: fhir.local\r\n\r\n",
            400,
        ),
        case(
            "absolute-form other scheme",
            "GET ftp://fhir.local/ HTTP/1.1\r\nHost: fhir.local\r\n\r\n",
            400,
        ),
        case(
            "asterisk-form",
            "OPTIONS * HTTP/1.1\r\nHost: fhir.local\r\n\r\n",
            400,
        ),
        case(
            "authority-form CONNECT",
            "CONNECT fhir.local:443 HTTP/1.1\r\nHost: fhir.local:443\r\n\r\n",
            405,
        ),
        case("TRACE", "TRACE / HTTP/1.1\r\nHost: fhir.local\r\n\r\n", 405),
        case("missing Host", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400),
        case(
            "duplicate Host",
            "GET / HTTP/1.1\r\nHost: fhir.local\r\nHost: evil.example\r\n\r\n",
            400,
        ),
        case(
            "Host with space",
            "GET / HTTP/1.1\r\nHost: fhir.local evil\r\n\r\n",
            400,
        ),
        case(
            "Host with userinfo",
            "GET / HTTP/1.1\r\nHost: u@fhir.local\r\n\r\n",
            400,
        ),
        case(
            "unsupported expectation",
            "GET / HTTP/1.1\r\nHost: fhir.local\r\nExpect: 200-ok\r\n\r\n",
            417,
        ),
    ]
}

#[tokio::test]
async fn every_malformed_request_is_refused_and_nothing_is_forwarded() {
    let cases = cases();
    assert!(
        cases.len() >= 40,
        "the table must stay at least 40 cases, has {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let upstream = TcpUpstream::start().await;
        let pool = Arc::new(pool(TcpConnector));
        let handler = TestHandler::new(upstream.addr);
        let finished = Arc::clone(&handler.finished);
        let (client_io, driver) = spawn_driver(pool, handler, test_limits());
        let mut client = Client::new(client_io);
        client.send(&case.raw).await;
        // Half-close: a case that waits for more bytes sees the end of the request instead.
        tokio::io::AsyncWriteExt::shutdown(&mut client.io)
            .await
            .expect("half-close");
        let response = client.response(false).await;
        let rest = client.rest().await;
        let summary = driver.await.expect("driver task");
        let got = response.as_ref().map(|r| r.status);
        let stats = &upstream.stats;
        let reached_ok = match case.reached {
            Reached::Nothing => stats.connections() == 0 && stats.bytes() == 0,
            Reached::NoCompleteRequest => stats.requests() == 0,
        };
        let closes = response.as_ref().and_then(|r| r.header("connection")) == Some("close");
        // The error answer is the handler's (the engine knows no body format).
        // A 405 lists the methods that pass (RFC 9110 section 15.5.6), whatever the handler's
        // answer carries.
        let allow_ok = case.status != 405
            || response.as_ref().and_then(|r| r.header("allow"))
                == Some("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
        let is_outcome = response
            .as_ref()
            .is_some_and(|r| r.header("content-type") == Some(ANSWER_TYPE));
        let reported = finished
            .lock()
            .expect("not poisoned")
            .first()
            .and_then(|f| f.status);
        if got != Some(case.status)
            || !reached_ok
            || !closes
            || !rest.is_empty()
            || !is_outcome
            || !allow_ok
            || reported != got
        {
            failures.push(format!(
                "{}: status {got:?} (want {}), upstream connections {} bytes {} requests {}, closes {closes}, \
                 handler's answer {is_outcome}, Allow {allow_ok}, trailing {} bytes, reported {reported:?}, end {:?}",
                case.name,
                case.status,
                stats.connections(),
                stats.bytes(),
                stats.requests(),
                rest.len(),
                summary.end
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
