//! The chunked transfer coding (RFC 9112 section 7.1): a strict incremental decoder over bytes
//! as they arrive, and the encoder helpers used when the proxy re-chunks a body.
//!
//! The decoder is sans-I/O: it is fed whatever bytes are buffered and says how many it consumed
//! and which of them are body data, so data is never copied by the decoder and a body of any size
//! goes through a buffer of fixed size.
//!
//! Strictness, each against a known desync trick:
//! - chunk-size is 1 to 16 hex digits (fits a `u64`): no sign, no `0x`, no leading whitespace;
//! - after the size only `BWS ; extension` or CRLF; extensions are tolerated but bounded by the
//!   chunk-line limit and may not hold control characters;
//! - every line ends in CRLF: a bare LF or bare CR is an error;
//! - chunk data must be followed by exactly CRLF;
//! - trailer fields are checked for `token ":" value` shape, bounded, then dropped.

use std::ops::Range;

use bytes::{BufMut, BytesMut};

/// The terminating zero-size chunk with an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid chunked body: {reason}")]
pub struct ChunkedError {
    /// A static, value-free description.
    pub reason: &'static str,
}

/// What one [`ChunkedDecoder::decode`] call found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes of the input consumed (framing and data).
    pub consumed: usize,
    /// Body data inside the consumed input (empty when none).
    pub data: Range<usize>,
    /// The last chunk and the trailer section are complete.
    pub done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size { size: u64, digits: u8 },
    SizeWs { size: u64 },
    Extension { size: u64 },
    SizeLf { size: u64 },
    Data { remaining: u64 },
    DataCr,
    DataLf,
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    EndLf,
    Done,
}

/// Incremental, strict decoder of one chunked body.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    line: usize,
    trailer: usize,
    max_line: usize,
    max_trailer: usize,
}

impl ChunkedDecoder {
    /// A decoder that refuses chunk-size lines over `max_line` bytes and trailer sections over
    /// `max_trailer` bytes.
    #[must_use]
    pub fn new(max_line: usize, max_trailer: usize) -> Self {
        Self {
            state: State::Size { size: 0, digits: 0 },
            line: 0,
            trailer: 0,
            max_line,
            max_trailer,
        }
    }

    /// Whether the whole body has been decoded.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from the front of `input`. Returns at the end of each data span, so the caller can
    /// forward it before calling again with the rest; `consumed == 0` without `done` means the
    /// input holds no complete element and more bytes are needed.
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, ChunkedError> {
        let mut pos = 0;
        while pos < input.len() {
            if let State::Data { remaining } = self.state {
                let take = usize::try_from(remaining)
                    .map_or(input.len() - pos, |r| r.min(input.len() - pos));
                let rest = remaining - take as u64;
                self.state = if rest == 0 {
                    State::DataCr
                } else {
                    State::Data { remaining: rest }
                };
                return Ok(Decoded {
                    consumed: pos + take,
                    data: pos..pos + take,
                    done: false,
                });
            }
            self.step(input[pos])?;
            pos += 1;
            if self.state == State::Done {
                return Ok(Decoded {
                    consumed: pos,
                    data: pos..pos,
                    done: true,
                });
            }
        }
        Ok(Decoded {
            consumed: pos,
            data: pos..pos,
            done: self.state == State::Done,
        })
    }

    /// One framing byte.
    fn step(&mut self, b: u8) -> Result<(), ChunkedError> {
        self.count()?;
        self.state = match self.state {
            State::Size { size, digits } => size_byte(size, digits, b)?,
            State::SizeWs { size } => match b {
                b' ' | b'\t' => State::SizeWs { size },
                b';' => State::Extension { size },
                _ => {
                    return Err(err(
                        "chunk size followed by whitespace without an extension",
                    ));
                }
            },
            State::Extension { size } => match b {
                b'\r' => State::SizeLf { size },
                b'\t' | b' '..=0x7e | 0x80..=0xff => State::Extension { size },
                _ => return Err(err("control character in chunk extension")),
            },
            State::SizeLf { size } => match (b, size) {
                (b'\n', 0) => State::TrailerStart,
                (b'\n', remaining) => State::Data { remaining },
                _ => return Err(err("bare CR in chunk-size line")),
            },
            State::DataCr => expect(b, b'\r', State::DataLf, "chunk data not followed by CRLF")?,
            State::DataLf => expect(
                b,
                b'\n',
                State::Size { size: 0, digits: 0 },
                "chunk data not followed by CRLF",
            )?,
            State::TrailerStart => match b {
                b'\r' => State::EndLf,
                b if is_tchar(b) => State::TrailerName,
                _ => return Err(err("invalid trailer field")),
            },
            State::TrailerName => match b {
                b':' => State::TrailerValue,
                b if is_tchar(b) => State::TrailerName,
                _ => return Err(err("invalid trailer field name")),
            },
            State::TrailerValue => match b {
                b'\r' => State::TrailerLf,
                b'\t' | b' '..=0x7e | 0x80..=0xff => State::TrailerValue,
                _ => return Err(err("control character in trailer field")),
            },
            State::TrailerLf => {
                expect(b, b'\n', State::TrailerStart, "bare CR in trailer section")?
            }
            State::EndLf => expect(b, b'\n', State::Done, "bare CR after the last chunk")?,
            // `decode` never steps in these states: data is taken in bulk, and it returns at Done.
            State::Data { .. } | State::Done => return Err(err("decoder misuse")),
        };
        if matches!(
            self.state,
            State::Data { .. } | State::Size { digits: 0, .. }
        ) {
            self.line = 0;
        }
        Ok(())
    }

    /// Bounds the chunk-size line and the trailer section.
    fn count(&mut self) -> Result<(), ChunkedError> {
        match self.state {
            State::Size { .. }
            | State::SizeWs { .. }
            | State::Extension { .. }
            | State::SizeLf { .. } => {
                self.line += 1;
                if self.line > self.max_line {
                    return Err(err("chunk-size line too long"));
                }
            }
            State::TrailerStart
            | State::TrailerName
            | State::TrailerValue
            | State::TrailerLf
            | State::EndLf => {
                self.trailer += 1;
                if self.trailer > self.max_trailer {
                    return Err(err("trailer section too large"));
                }
            }
            State::Data { .. } | State::DataCr | State::DataLf | State::Done => {}
        }
        Ok(())
    }
}

fn size_byte(size: u64, digits: u8, b: u8) -> Result<State, ChunkedError> {
    if let Some(d) = char::from(b).to_digit(16) {
        if digits == 16 {
            return Err(err("chunk size too large"));
        }
        return Ok(State::Size {
            size: (size << 4) | u64::from(d),
            digits: digits + 1,
        });
    }
    if digits == 0 {
        return Err(err("chunk size is not hexadecimal"));
    }
    match b {
        b'\r' => Ok(State::SizeLf { size }),
        b';' => Ok(State::Extension { size }),
        b' ' | b'\t' => Ok(State::SizeWs { size }),
        _ => Err(err("chunk size is not hexadecimal")),
    }
}

fn expect(b: u8, want: u8, next: State, reason: &'static str) -> Result<State, ChunkedError> {
    if b == want {
        Ok(next)
    } else {
        Err(err(reason))
    }
}

const fn err(reason: &'static str) -> ChunkedError {
    ChunkedError { reason }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Writes the size line of a chunk of `len` bytes.
pub fn put_chunk_header(out: &mut BytesMut, len: usize) {
    let mut digits = [0u8; 16];
    let mut n = len;
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[at..]);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests;
