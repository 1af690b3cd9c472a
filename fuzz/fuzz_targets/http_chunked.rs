//! The chunked decoder on arbitrary bytes, fed in arbitrary pieces.
//!
//! Properties: no panic; the outcome (body, bytes consumed, error) does not depend on how the
//! input is split, as bytes arrive in any split from a socket; data spans lie inside the
//! consumed input; a decoded body re-encoded the way the proxy forwards it decodes to the same
//! body.

#![no_main]

use bytes::BytesMut;
use fhirwall_http::{ChunkedDecoder, ChunkedError, chunked::put_chunk_header};
use libfuzzer_sys::fuzz_target;

const MAX_LINE: usize = 64;
const MAX_TRAILER: usize = 256;

fuzz_target!(|data: &[u8]| {
    let Some((&split_seed, input)) = data.split_first() else {
        return;
    };
    let whole = decode(input, input.len().max(1));
    let piece = usize::from(split_seed % 17) + 1;
    assert_eq!(
        decode(input, piece),
        whole,
        "outcome depends on the split ({piece})"
    );
    if let Outcome::Done { body, .. } = &whole {
        let mut wire = BytesMut::new();
        for chunk in body.chunks(7) {
            put_chunk_header(&mut wire, chunk.len());
            wire.extend_from_slice(chunk);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\n\r\n");
        match decode(&wire, wire.len()) {
            Outcome::Done {
                body: again,
                consumed,
            } => {
                assert_eq!(&again, body);
                assert_eq!(consumed, wire.len());
            }
            other => panic!("re-encoded body refused: {other:?}"),
        }
    }
});

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Done { body: Vec<u8>, consumed: usize },
    Incomplete { body: Vec<u8> },
    Refused(ChunkedError),
}

fn decode(input: &[u8], piece: usize) -> Outcome {
    let mut decoder = ChunkedDecoder::new(MAX_LINE, MAX_TRAILER);
    let mut body = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut consumed_total = 0;
    for piece in input.chunks(piece) {
        pending.extend_from_slice(piece);
        loop {
            let step = match decoder.decode(&pending) {
                Ok(step) => step,
                Err(err) => return Outcome::Refused(err),
            };
            assert!(step.data.start <= step.data.end && step.data.end <= step.consumed);
            assert!(step.consumed <= pending.len());
            body.extend_from_slice(&pending[step.data.clone()]);
            pending.drain(..step.consumed);
            consumed_total += step.consumed;
            if step.done {
                assert!(decoder.is_done());
                return Outcome::Done {
                    body,
                    consumed: consumed_total,
                };
            }
            if step.consumed == 0 || pending.is_empty() {
                break;
            }
        }
    }
    Outcome::Incomplete { body }
}
