//! Request head parsing and body framing on arbitrary bytes, as a client could send them.
//!
//! Properties: no panic; an accepted head is well-formed (origin-form target, one Host, no
//! framing or hop-by-hop field left, field values without control characters); serializing an
//! accepted head the way the proxy forwards it and parsing that again gives the same head
//! (what the upstream reads is what the proxy validated); the body framing consumes exactly the
//! declared body.

#![no_main]

use bytes::BytesMut;
use fhirwall_http::{BodyFraming, ChunkedDecoder, Limits, RequestHead, RequestParser, Version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_request_line: 512,
        max_head: 2048,
        max_headers: 16,
        ..Limits::default()
    };
    let mut buf = BytesMut::from(data);
    let mut parser = RequestParser::default();
    // Pipelined requests: parse one after the other until an error or the end of the input.
    for _ in 0..8 {
        let mut head = RequestHead::default();
        match parser.parse(&mut buf, &limits, &mut head) {
            Ok(true) => {}
            Ok(false) | Err(_) => return,
        }
        check_head(&head);
        round_trip(&head, &limits);
        if !skip_body(&mut buf, head.framing(), &limits) {
            return;
        }
    }
});

fn check_head(head: &RequestHead) {
    assert_eq!(head.target().first(), Some(&b'/'));
    assert!(head.target().is_ascii());
    assert_eq!(head.headers.count("host"), 1);
    for banned in [
        "content-length",
        "transfer-encoding",
        "connection",
        "upgrade",
        "te",
        "keep-alive",
        "expect",
    ] {
        assert_eq!(head.headers.count(banned), 0, "{banned} left in the head");
    }
    for field in head.headers.iter() {
        assert!(fhirwall_http::is_token(field.name()));
        assert!(fhirwall_http::is_field_value(field.value()));
    }
    if head.version() == Version::Http10 {
        assert!(!head.keep_alive());
        assert_ne!(head.framing(), BodyFraming::Chunked);
    }
}

/// The head as the proxy forwards it, parsed again.
fn round_trip(head: &RequestHead, limits: &Limits) {
    let mut wire = Vec::new();
    wire.extend_from_slice(head.method().as_bytes());
    wire.push(b' ');
    wire.extend_from_slice(head.target());
    wire.extend_from_slice(b" HTTP/1.1\r\n");
    for field in head.headers.iter() {
        wire.extend_from_slice(field.name());
        wire.extend_from_slice(b": ");
        wire.extend_from_slice(field.value());
        wire.extend_from_slice(b"\r\n");
    }
    match head.framing() {
        BodyFraming::None => {}
        BodyFraming::Length(n) => {
            wire.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes())
        }
        BodyFraming::Chunked => wire.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
    }
    wire.extend_from_slice(b"\r\n");
    let generous = Limits {
        max_request_line: 64 * 1024,
        max_head: 64 * 1024,
        ..limits.clone()
    };
    let mut buf = BytesMut::from(&wire[..]);
    let mut again = RequestHead::default();
    let parsed = RequestParser::default().parse(&mut buf, &generous, &mut again);
    assert!(
        matches!(parsed, Ok(true)),
        "forwarded head refused: {parsed:?}"
    );
    assert!(buf.is_empty());
    assert_eq!(again.method(), head.method());
    assert_eq!(again.target(), head.target());
    assert_eq!(again.framing(), head.framing());
    assert_eq!(again.headers, head.headers);
}

/// Consumes the body; false when it is incomplete or invalid.
fn skip_body(buf: &mut BytesMut, framing: BodyFraming, limits: &Limits) -> bool {
    match framing {
        BodyFraming::None => true,
        BodyFraming::Length(n) => {
            let Ok(n) = usize::try_from(n) else {
                return false;
            };
            if buf.len() < n {
                return false;
            }
            let _ = buf.split_to(n);
            true
        }
        BodyFraming::Chunked => {
            let mut decoder = ChunkedDecoder::new(limits.max_chunk_line, limits.max_trailer);
            loop {
                let Ok(step) = decoder.decode(buf) else {
                    return false;
                };
                assert!(step.data.end <= step.consumed);
                let _ = buf.split_to(step.consumed);
                if step.done {
                    return true;
                }
                if step.consumed == 0 {
                    return false;
                }
            }
        }
    }
}
