use super::*;

/// Decodes `input` fed in pieces of `piece` bytes (as a socket might deliver it); returns the
/// body and the bytes consumed, or the error.
fn decode_in_pieces(input: &[u8], piece: usize) -> Result<(Vec<u8>, usize), ChunkedError> {
    let mut decoder = ChunkedDecoder::new(32, 64);
    let mut body = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut consumed_total = 0;
    for piece in input.chunks(piece) {
        pending.extend_from_slice(piece);
        loop {
            let step = decoder.decode(&pending)?;
            body.extend_from_slice(&pending[step.data.clone()]);
            pending.drain(..step.consumed);
            consumed_total += step.consumed;
            if step.done {
                return Ok((body, consumed_total));
            }
            if step.consumed == 0 || pending.is_empty() {
                break;
            }
        }
    }
    Err(err("test: truncated"))
}

#[test]
fn valid_bodies() {
    let cases: &[(&[u8], &[u8])] = &[
        (b"0\r\n\r\n", b""),
        (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
        (
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nNEXT",
            b"hello world",
        ),
        (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
        (b"00005\r\nhello\r\n0\r\n\r\n", b"hello"),
        (b"5;name=value\r\nhello\r\n0;x\r\n\r\n", b"hello"),
        (b"5 ;a=\"q\"\r\nhello\r\n0\r\n\r\n", b"hello"),
        (
            b"5\r\nhello\r\n0\r\nChecksum: abc\r\nX-T:\r\n\r\n",
            b"hello",
        ),
    ];
    for (input, want) in cases {
        for piece in [1, 2, 3, 7, input.len()] {
            let (body, consumed) = decode_in_pieces(input, piece).unwrap_or_else(|e| {
                panic!(
                    "{} in pieces of {piece}: {e}",
                    String::from_utf8_lossy(input)
                )
            });
            assert_eq!(body, *want, "{}", String::from_utf8_lossy(input));
            let end = input.len() - if input.ends_with(b"NEXT") { 4 } else { 0 };
            assert_eq!(consumed, end, "consumed stops at the end of the body");
        }
    }
}

#[test]
fn invalid_bodies() {
    let cases: &[(&[u8], &str)] = &[
        (b"-5\r\nhello\r\n0\r\n\r\n", "chunk size is not hexadecimal"),
        (b"+5\r\nhello\r\n0\r\n\r\n", "chunk size is not hexadecimal"),
        (
            b"0x5\r\nhello\r\n0\r\n\r\n",
            "chunk size is not hexadecimal",
        ),
        (b" 5\r\nhello\r\n0\r\n\r\n", "chunk size is not hexadecimal"),
        (b"\r\nhello\r\n0\r\n\r\n", "chunk size is not hexadecimal"),
        (
            b"5 \r\nhello\r\n0\r\n\r\n",
            "chunk size followed by whitespace without an extension",
        ),
        (b"5\nhello\r\n0\r\n\r\n", "chunk size is not hexadecimal"),
        (b"5\r\rhello\r\n0\r\n\r\n", "bare CR in chunk-size line"),
        (b"10000000000000000\r\n", "chunk size too large"),
        (b"FFFFFFFFFFFFFFFFF\r\n", "chunk size too large"),
        (
            b"5\r\nhelloX\r\n0\r\n\r\n",
            "chunk data not followed by CRLF",
        ),
        (b"5\r\nhello\n0\r\n\r\n", "chunk data not followed by CRLF"),
        (b"5\r\nhello\r\n0\r\n\n", "invalid trailer field"),
        (b"5\r\nhello\r\n0\r\n\r\r", "bare CR after the last chunk"),
        (
            b"5;a\0b\r\nhello\r\n0\r\n\r\n",
            "control character in chunk extension",
        ),
        (
            b"5;aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\nhello\r\n0\r\n\r\n",
            "chunk-size line too long",
        ),
        (b"0\r\n folded: x\r\n\r\n", "invalid trailer field"),
        (b"0\r\nBad Name: x\r\n\r\n", "invalid trailer field name"),
        (
            b"0\r\nX: a\nY: b\r\n\r\n",
            "control character in trailer field",
        ),
        (
            b"0\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n",
            "trailer section too large",
        ),
    ];
    for (input, want) in cases {
        for piece in [1, input.len()] {
            let got = decode_in_pieces(input, piece);
            assert_eq!(
                got,
                Err(err(want)),
                "{} in pieces of {piece}",
                String::from_utf8_lossy(input)
            );
        }
    }
}

#[test]
fn truncated_body_is_never_done() {
    let full = b"5\r\nhello\r\n0\r\n\r\n";
    for end in 0..full.len() {
        assert_eq!(
            decode_in_pieces(&full[..end], 1),
            Err(err("test: truncated")),
            "prefix {end}"
        );
    }
}

#[test]
fn chunk_header_encoding_round_trips() {
    for len in [0usize, 1, 9, 10, 15, 16, 255, 4096, 65_535, usize::MAX] {
        let mut out = BytesMut::new();
        put_chunk_header(&mut out, len);
        assert_eq!(&out[..], format!("{len:x}\r\n").as_bytes());
    }
}
