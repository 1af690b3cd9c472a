//! The hash chain: `hash(n) = SHA-256(DOMAIN || hash(n-1) || seq(n) as u64 big-endian || body(n))`.
//!
//! `body` is the JSON of the [`Entry`](super::Entry) exactly as stored; verification hashes the
//! stored bytes and never re-serializes, so the "canonical serialization" is simply the bytes
//! written once by the writer. The sequence number is inside the hash, so moving a row to another
//! seq (reordering) breaks it even when its neighbours' links are rewritten.

use ring::digest::{Context, SHA256};

/// A chain hash.
pub type Hash = [u8; 32];

/// The predecessor of seq 1.
pub const GENESIS: Hash = [0; 32];

/// Separates this chain's hashes from any other SHA-256 use of the same bytes; bump the version
/// if the hashed layout ever changes.
const DOMAIN: &[u8] = b"fhirwall-audit-chain-v1\0";

/// The chain hash of entry `seq` with `body`, following `prev`.
pub fn link(prev: &Hash, seq: u64, body: &[u8]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(DOMAIN);
    ctx.update(prev);
    ctx.update(&seq.to_be_bytes());
    ctx.update(body);
    let digest = ctx.finish();
    let mut out = GENESIS;
    // Invariant: a SHA-256 digest is 32 bytes.
    out.copy_from_slice(digest.as_ref());
    out
}

/// Lowercase hex.
pub fn to_hex(hash: &[u8]) -> String {
    use std::fmt::Write as _;
    hash.iter()
        .fold(String::with_capacity(hash.len() * 2), |mut s, b| {
            // Writing to a String cannot fail.
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Parses 64 hex digits.
pub fn from_hex(s: &str) -> Option<Hash> {
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = GENESIS;
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// Converts a stored BLOB to a hash; `None` when it has the wrong length (a tampered row).
pub fn from_blob(blob: &[u8]) -> Option<Hash> {
    blob.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_depends_on_every_input() {
        let base = link(&GENESIS, 1, b"{}");
        let cases: [(&str, Hash); 3] = [
            ("prev", link(&[1; 32], 1, b"{}")),
            ("seq", link(&GENESIS, 2, b"{}")),
            ("body", link(&GENESIS, 1, b"{ }")),
        ];
        for (what, other) in cases {
            assert_ne!(base, other, "changing {what} must change the hash");
        }
        assert_eq!(base, link(&GENESIS, 1, b"{}"), "deterministic");
    }

    #[test]
    fn hex_round_trips_and_rejects_bad_input() {
        let h = link(&GENESIS, 7, b"x");
        assert_eq!(from_hex(&to_hex(&h)), Some(h));
        for bad in ["", "00", &"g".repeat(64), &"0".repeat(63), &"0".repeat(65)] {
            assert_eq!(from_hex(bad), None, "{bad:?}");
        }
        assert_eq!(to_hex(&[0, 0xab, 0x0f]), "00ab0f");
    }
}
