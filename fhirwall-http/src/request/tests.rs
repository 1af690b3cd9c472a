use bytes::BytesMut;

use super::*;

fn parse(input: &[u8]) -> Result<(RequestHead, BytesMut), HttpError> {
    let mut buf = BytesMut::from(input);
    let mut head = RequestHead::default();
    let limits = Limits {
        max_request_line: 64,
        max_head: 256,
        max_headers: 8,
        ..Limits::default()
    };
    if RequestParser::default().parse(&mut buf, &limits, &mut head)? {
        Ok((head, buf))
    } else {
        Err(bad("test: incomplete"))
    }
}

fn status(input: &[u8]) -> u16 {
    match parse(input) {
        Ok(_) => 200,
        Err(err) => err.status().unwrap_or(0),
    }
}

#[test]
fn accepts_origin_and_absolute_form() {
    let (head, rest) =
        parse(b"GET /Patient/1?_elements=id HTTP/1.1\r\nHost: fhir.local\r\nAccept: x\r\n\r\nNEXT")
            .expect("valid request");
    assert_eq!(head.method(), &Method::Get);
    assert_eq!(head.target(), b"/Patient/1?_elements=id");
    assert_eq!(head.path(), b"/Patient/1");
    assert_eq!(head.query(), Some(&b"_elements=id"[..]));
    assert_eq!(head.version(), Version::Http11);
    assert_eq!(head.framing(), BodyFraming::None);
    assert!(head.keep_alive());
    assert_eq!(head.host(), Some(&b"fhir.local"[..]));
    assert_eq!(&rest[..], b"NEXT");

    let (head, _) =
        parse(b"GET HTTPS://FHIR.local:443/Patient?x=1 HTTP/1.1\r\nHost: fhir.LOCAL:443\r\n\r\n")
            .expect("absolute-form");
    assert_eq!(head.target(), b"/Patient?x=1");
    let (head, _) = parse(b"GET http://h?x=1 HTTP/1.1\r\nHost: h\r\n\r\n").expect("empty path");
    assert_eq!(head.target(), b"/?x=1");
}

#[test]
fn strips_hop_by_hop_and_reads_connection_semantics() {
    let (head, _) = parse(
        b"POST /x HTTP/1.1\r\nHost: h\r\nConnection: close, X-Drop\r\nX-Drop: 1\r\nUpgrade: h2c\r\n\
          Expect: 100-continue\r\nContent-Length: 3\r\nKeep-Alive: 5\r\n\r\nabc",
    )
    .expect("valid request");
    assert!(!head.keep_alive());
    assert!(head.expects_continue());
    assert_eq!(head.framing(), BodyFraming::Length(3));
    let names: Vec<&[u8]> = head
        .headers
        .iter()
        .map(super::super::Header::name)
        .collect();
    assert_eq!(names, vec![&b"Host"[..]]);

    let (head, _) =
        parse(b"GET / HTTP/1.0\r\nHost: h\r\nExpect: 100-continue\r\n\r\n").expect("1.0");
    assert!(!head.keep_alive(), "HTTP/1.0 closes");
    assert!(!head.expects_continue(), "1.0 expectations are ignored");
}

#[test]
fn refusals() {
    let cases: &[(&[u8], u16)] = &[
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.0\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
        (b"GET http://evil/ HTTP/1.1\r\nHost: good\r\n\r\n", 400),
        (b"GET http://u@good/ HTTP/1.1\r\nHost: good\r\n\r\n", 400),
        (b"GET ftp://good/ HTTP/1.1\r\nHost: good\r\n\r\n", 400),
        (b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 405),
        (b"TRACE / HTTP/1.1\r\nHost: a\r\n\r\n", 405),
        (b"GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET /#frag HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
        (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
        (b"GET / HTTP/1.1x\r\nHost: a\r\n\r\n", 400),
        (b"GET / http/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400),
        (b"GET /\0 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", 417),
        (b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\nG: 7\r\nH: 8\r\n\r\n", 431),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    ];
    for (input, want) in cases {
        assert_eq!(status(input), *want, "{}", String::from_utf8_lossy(input));
    }
}

#[test]
fn skips_leading_empty_lines_and_partial_heads_wait() {
    let (head, _) = parse(b"\r\n\r\nDELETE /x HTTP/1.1\r\nHost: a\r\n\r\n").expect("leading CRLF");
    assert_eq!(head.method(), &Method::Delete);
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost"[..]);
    let mut parser = RequestParser::default();
    let mut head = RequestHead::default();
    assert!(
        !parser
            .parse(&mut buf, &Limits::default(), &mut head)
            .expect("partial is fine")
    );
    assert!(parser.has_partial(&buf));
    buf.extend_from_slice(b": a\r\n\r\n");
    assert!(
        parser
            .parse(&mut buf, &Limits::default(), &mut head)
            .expect("now complete")
    );
    assert!(buf.is_empty());
}

#[test]
fn handler_rewrites_of_host_and_target_are_validated() {
    let (mut head, _) =
        parse(b"GET /fhir/Patient/1 HTTP/1.1\r\nHost: localhost:8080\r\n\r\n").expect("valid");
    head.set_host("fhir.ehr.example:443")
        .expect("valid authority");
    head.set_target("/R4/Patient/1").expect("origin-form");
    assert_eq!(head.host(), Some(&b"fhir.ehr.example:443"[..]));
    assert_eq!(head.headers.count("host"), 1);
    assert_eq!(head.target(), b"/R4/Patient/1");
    for bad in ["", "a b", "u@h", "h\r\nX: 1"] {
        assert!(head.set_host(bad).is_err(), "host {bad:?}");
    }
    for bad in ["", "R4/x", "/a b", "/a\r\nX: 1", "/a#f", "/\u{e9}"] {
        assert!(head.set_target(bad).is_err(), "target {bad:?}");
    }
    assert_eq!(
        head.target(),
        b"/R4/Patient/1",
        "a refused rewrite changes nothing"
    );
}
