//! Finds where a message head ends, before anything parses it, and enforces the rules `httparse`
//! leaves to us: CRLF line endings only (a bare LF is accepted by `httparse`, RFC 9112 section 2.2
//! only allows it, and smuggling needs exactly that disagreement between hops), and the size
//! limits, checked as bytes arrive so an endless head is cut early.
//!
//! The scanner resumes where it stopped, so a head trickling in byte by byte costs O(n) overall.

/// The limits one head is scanned against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadLimits {
    pub(crate) first_line: usize,
    pub(crate) head: usize,
    pub(crate) fields: usize,
}

/// Why a head was refused before parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScanError {
    BareLf,
    FirstLineTooLong,
    HeadTooLarge,
    TooManyFields,
}

/// A complete head: `buf[start..end]`, from the first line to the empty line included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadSpan {
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// Scan state across reads.
#[derive(Debug, Default, Clone)]
pub(crate) struct HeadScanner {
    /// Bytes of the buffer already looked at.
    scanned: usize,
    /// Start of the head, after leading empty lines (RFC 9112 section 2.2 lets a server skip them).
    start: usize,
    /// Start of the line being scanned.
    line_start: usize,
    /// Complete non-empty lines seen so far.
    lines: usize,
}

impl HeadScanner {
    /// Forgets everything, for the next head.
    pub(crate) fn reset(&mut self) {
        *self = Self::default();
    }

    /// Scans new bytes of `buf` (which only grows between calls). `Ok(None)` asks for more bytes.
    pub(crate) fn scan(
        &mut self,
        buf: &[u8],
        limits: HeadLimits,
    ) -> Result<Option<HeadSpan>, ScanError> {
        while let Some(offset) = buf[self.scanned..].iter().position(|&b| b == b'\n') {
            let lf = self.scanned + offset;
            self.scanned = lf + 1;
            if lf == 0 || buf[lf - 1] != b'\r' {
                return Err(ScanError::BareLf);
            }
            let line_len = lf - 1 - self.line_start;
            if line_len == 0 && self.lines == 0 {
                // An empty line before the request line: skipped, but still counted in the limit.
                self.start = self.scanned;
            } else if line_len == 0 {
                return Ok(Some(HeadSpan {
                    start: self.start,
                    end: self.scanned,
                }));
            } else {
                self.lines += 1;
                self.check_line(line_len, limits)?;
            }
            self.line_start = self.scanned;
            if self.scanned > limits.head {
                return Err(ScanError::HeadTooLarge);
            }
        }
        self.scanned = buf.len();
        // An unfinished line counts against the limits too, so nobody can stream an endless one.
        let pending = self.scanned - self.line_start;
        if self.lines == 0 && pending > limits.first_line + 1 {
            return Err(ScanError::FirstLineTooLong);
        }
        if self.scanned > limits.head {
            return Err(ScanError::HeadTooLarge);
        }
        Ok(None)
    }

    fn check_line(&self, line_len: usize, limits: HeadLimits) -> Result<(), ScanError> {
        if self.lines == 1 && line_len > limits.first_line {
            return Err(ScanError::FirstLineTooLong);
        }
        if self.lines > limits.fields + 1 {
            return Err(ScanError::TooManyFields);
        }
        Ok(())
    }

    /// Whether any byte of a head (beyond skipped empty lines) has been seen.
    pub(crate) fn started(&self, buf: &[u8]) -> bool {
        buf.len() > self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        first_line: 20,
        head: 80,
        fields: 2,
    };

    fn scan_all(input: &[u8]) -> Result<Option<HeadSpan>, ScanError> {
        HeadScanner::default().scan(input, LIMITS)
    }

    fn scan_bytewise(input: &[u8]) -> Result<Option<HeadSpan>, ScanError> {
        let mut scanner = HeadScanner::default();
        for end in 1..=input.len() {
            if let Some(span) = scanner.scan(&input[..end], LIMITS)? {
                return Ok(Some(span));
            }
        }
        Ok(None)
    }

    type Case = (&'static [u8], Result<Option<HeadSpan>, ScanError>);

    #[test]
    fn table() {
        let done = |start, end| Ok(Some(HeadSpan { start, end }));
        let cases: &[Case] = &[
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY", done(0, 27)),
            (b"\r\n\r\nGET / HTTP/1.1\r\n\r\n", done(4, 22)),
            (b"GET / HTTP/1.1\r\nHost: a\r\n", Ok(None)),
            (b"GET / HTTP/1.1\nHost: a\r\n\r\n", Err(ScanError::BareLf)),
            (b"GET / HTTP/1.1\r\nHost: a\n\r\n", Err(ScanError::BareLf)),
            (b"\n", Err(ScanError::BareLf)),
            (b"GET /aaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n", Err(ScanError::FirstLineTooLong)),
            (b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", Err(ScanError::FirstLineTooLong)),
            (b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", Err(ScanError::TooManyFields)),
            (b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n", done(0, 30)),
            (
                b"GET / HTTP/1.1\r\nA: 11111111111111111111111111111111111111111111111111111111111111111111\r\n",
                Err(ScanError::HeadTooLarge),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(scan_all(input), *want, "{}", String::from_utf8_lossy(input));
            assert_eq!(
                scan_bytewise(input),
                *want,
                "bytewise {}",
                String::from_utf8_lossy(input)
            );
        }
    }
}
