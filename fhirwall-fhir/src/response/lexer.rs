//! A resumable, strict JSON tokenizer (RFC 8259) for response bodies that arrive in pieces.
//!
//! Strict because the proxy and the client must read the same document: a body a lenient client
//! parser would accept differently (comments, trailing commas, bad escapes, control characters
//! in strings, a second top-level value) is an error here, and the checker refuses it.
//!
//! Fast because it runs over every byte of checked responses. A chunk is read in one call that
//! hands each token to a [`Visit`]or; the common case, a string or number that starts and ends
//! in the chunk without escapes, is passed as a slice of the chunk with no copy. String bodies,
//! most of a FHIR document, are scanned eight bytes at a time for the closing quote, an escape
//! or a forbidden control character. Tokens that span chunks or hold escapes take a slower path
//! that copies them.
//!
//! Text is handed over as bytes, not checked as UTF-8: the visitor checks the values it reads,
//! and compares keys with ASCII names byte for byte. A key that is not UTF-8 can never equal
//! one of those names, for us or for a client that decodes it leniently (an invalid sequence
//! becomes U+FFFD, never ASCII).

/// The longest key or captured value, in bytes. FHIR keys are short; captured values are
/// resource types, ids, references and URLs. Longer ones are refused rather than truncated,
/// since a truncated reference would be read differently from the client.
pub(super) const MAX_CAPTURE: usize = 8 * 1024;

/// The deepest nesting accepted; FHIR documents stay far below it.
pub(super) const MAX_DEPTH: usize = 128;

/// One token, reported when its last byte has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Token {
    ObjectStart,
    ObjectEnd,
    ArrayStart,
    ArrayEnd,
    /// An object key.
    Key,
    /// A string value; its text is passed only when it was captured.
    Str {
        captured: bool,
    },
    /// A number, `true`, `false` or `null`.
    Scalar,
}

/// Where a token sits in the chunk it ended in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Span {
    /// Index of the token's first byte in this chunk, or `None` when it began in an earlier one.
    pub start: Option<usize>,
    /// Index after its last byte.
    pub end: usize,
}

/// Whether a token is in progress at the end of a chunk, and where it began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Partial {
    Between,
    /// It began at this index of the chunk.
    From(usize),
    /// It began in an earlier chunk.
    Earlier,
}

/// Why a body is not acceptable JSON. Positions only: bodies are patient records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LexError {
    Syntax,
    TooDeep,
    TooLong,
    /// Input after the end of the document (other than whitespace).
    Trailing,
    /// The body ended inside the document.
    Truncated,
}

/// What the lexer hands its tokens to.
pub(super) trait Visit {
    type Error: From<LexError>;

    /// Asked at the start of each string value: whether its text is wanted.
    fn wants_value(&self) -> bool;

    /// One token; `text` is the key, captured string (escapes decoded) or scalar, empty
    /// otherwise, and valid only during the call.
    fn token(&mut self, token: Token, span: Span, text: &[u8]) -> Result<(), Self::Error>;

    /// A document after the first begins (newline-delimited input only).
    fn next_document(&mut self);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A value (document start, after `:` or `,` in an array, after `[`).
    Value,
    /// A value or `]` (right after `[`).
    ValueOrClose,
    /// A key or `}` (right after `{`).
    KeyOrClose,
    /// A key (after `,` in an object).
    Key,
    Colon,
    /// `,` or the container's close.
    CommaOrClose,
    /// The document is complete: only whitespace may follow (or, in newline-delimited input,
    /// the next document).
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Between,
    InString {
        key: bool,
        capture: bool,
        /// Inside an escape: bytes of it still to come (1 after `\`, 4 after `\u`).
        escape: u8,
        /// A backslash was seen: the captured text must be unescaped.
        escaped: bool,
    },
    InScalar,
}

/// The tokenizer: [`Lexer::feed`] each chunk, then [`Lexer::finish`].
#[derive(Debug)]
pub(super) struct Lexer {
    /// Newline-delimited documents (NDJSON) rather than one.
    lines: bool,
    documents: u64,
    state: State,
    expect: Expect,
    /// One bit per open container: `true` for an object.
    stack: Vec<bool>,
    /// Where the token in progress began, when in this chunk.
    start: Option<usize>,
    /// The bytes of a token read on the slow path.
    raw: Vec<u8>,
    /// That token's text, decoded.
    text: Vec<u8>,
}

impl Lexer {
    pub(super) fn new(lines: bool) -> Self {
        Self {
            lines,
            documents: 0,
            state: State::Between,
            expect: Expect::Value,
            stack: Vec::with_capacity(16),
            start: None,
            raw: Vec::with_capacity(64),
            text: Vec::with_capacity(64),
        }
    }

    /// Where the lexer stands at the end of the chunk last fed.
    pub(super) fn partial(&self) -> Partial {
        match (self.state, self.start) {
            (State::Between, _) => Partial::Between,
            (_, Some(start)) => Partial::From(start),
            (_, None) => Partial::Earlier,
        }
    }

    /// Reads one chunk, handing every token that ends in it to `v`; a token still in progress
    /// at its end continues in the next chunk.
    pub(super) fn feed<V: Visit>(&mut self, chunk: &[u8], v: &mut V) -> Result<(), V::Error> {
        let mut pos = 0;
        self.start = None;
        let finished = match self.state {
            State::Between => true,
            State::InString { .. } => self.string_slow(chunk, &mut pos, v)?,
            State::InScalar => self.scalar_slow(chunk, &mut pos, v)?,
        };
        if !finished {
            return Ok(());
        }
        // The common bytes first, as branches the CPU predicts well; the rest through a table.
        while let Some(&b) = chunk.get(pos) {
            let at = pos;
            pos += 1;
            if b == b'"' {
                if !self.string(chunk, at, &mut pos, v)? {
                    return Ok(());
                }
                continue;
            }
            if b == b':' {
                if self.expect != Expect::Colon {
                    return Err(self.unexpected().into());
                }
                self.expect = Expect::Value;
                continue;
            }
            if b == b',' {
                if self.expect != Expect::CommaOrClose {
                    return Err(self.unexpected().into());
                }
                self.expect = if self.stack.last() == Some(&true) {
                    Expect::Key
                } else {
                    Expect::Value
                };
                continue;
            }
            let span = Span {
                start: Some(at),
                end: pos,
            };
            match b {
                b'{' | b'[' => {
                    self.value(v)?;
                    if self.stack.len() >= MAX_DEPTH {
                        return Err(LexError::TooDeep.into());
                    }
                    let object = b == b'{';
                    self.stack.push(object);
                    let token = if object {
                        self.expect = Expect::KeyOrClose;
                        Token::ObjectStart
                    } else {
                        self.expect = Expect::ValueOrClose;
                        Token::ArrayStart
                    };
                    v.token(token, span, b"")?;
                }
                b'}' | b']' => {
                    let object = b == b'}';
                    let closable = match self.expect {
                        Expect::CommaOrClose => true,
                        Expect::KeyOrClose => object,
                        Expect::ValueOrClose => !object,
                        _ => false,
                    };
                    if !closable || self.stack.pop() != Some(object) {
                        return Err(LexError::Syntax.into());
                    }
                    self.after_value();
                    let token = if object {
                        Token::ObjectEnd
                    } else {
                        Token::ArrayEnd
                    };
                    v.token(token, span, b"")?;
                }
                b' ' | b'\t' | b'\n' | b'\r' => {}
                b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                    pos = at;
                    if !self.scalar(chunk, &mut pos, v)? {
                        return Ok(());
                    }
                }
                _ => return Err(self.unexpected().into()),
            }
        }
        Ok(())
    }

    /// At the end of the body: whether the document (or, newline-delimited, every document) is
    /// complete. A top-level scalar ends here; FHIR bodies are objects, so the caller refuses
    /// it anyway, but the grammar is whole.
    pub(super) fn finish<V: Visit>(&mut self, v: &mut V) -> Result<(), V::Error> {
        if self.state == State::InScalar {
            self.state = State::Between;
            self.end_scalar()?;
            let span = Span {
                start: None,
                end: 0,
            };
            v.token(Token::Scalar, span, &self.text)?;
        }
        if self.lines && self.documents == 0 {
            return Ok(());
        }
        if self.expect == Expect::Done && self.state == State::Between {
            Ok(())
        } else {
            Err(LexError::Truncated.into())
        }
    }

    fn unexpected(&self) -> LexError {
        if self.expect == Expect::Done {
            LexError::Trailing
        } else {
            LexError::Syntax
        }
    }

    /// Checks that a value may start here; in newline-delimited input a value after a complete
    /// document begins the next one.
    fn value<V: Visit>(&mut self, v: &mut V) -> Result<(), V::Error> {
        match self.expect {
            Expect::Value | Expect::ValueOrClose => {}
            Expect::Done if self.lines => {
                self.expect = Expect::Value;
                v.next_document();
            }
            Expect::Done => return Err(LexError::Trailing.into()),
            _ => return Err(LexError::Syntax.into()),
        }
        if self.stack.is_empty() {
            self.documents += 1;
        }
        Ok(())
    }

    fn after_value(&mut self) {
        self.expect = if self.stack.is_empty() {
            Expect::Done
        } else {
            Expect::CommaOrClose
        };
    }

    /// A string from its opening quote at `at`: whole when it ends in this chunk without
    /// escapes, otherwise on the slow path. `true` once it ended.
    fn string<V: Visit>(
        &mut self,
        chunk: &[u8],
        at: usize,
        pos: &mut usize,
        v: &mut V,
    ) -> Result<bool, V::Error> {
        let key = matches!(self.expect, Expect::Key | Expect::KeyOrClose);
        if !key {
            self.value(v)?;
        }
        let capture = key || v.wants_value();
        let rest = &chunk[*pos..];
        if let Some(i) = string_stop(rest)
            && rest[i] == b'"'
        {
            *pos += i + 1;
            let span = Span {
                start: Some(at),
                end: *pos,
            };
            let text = if capture {
                if i > MAX_CAPTURE {
                    return Err(LexError::TooLong.into());
                }
                &rest[..i]
            } else {
                b""
            };
            self.string_end(key, capture, span, text, v)?;
            return Ok(true);
        }
        self.start = Some(at);
        self.raw.clear();
        self.state = State::InString {
            key,
            capture,
            escape: 0,
            escaped: false,
        };
        self.string_slow(chunk, pos, v)
    }

    fn string_end<V: Visit>(
        &mut self,
        key: bool,
        capture: bool,
        span: Span,
        text: &[u8],
        v: &mut V,
    ) -> Result<(), V::Error> {
        if key {
            self.expect = Expect::Colon;
            v.token(Token::Key, span, text)
        } else {
            self.after_value();
            v.token(Token::Str { captured: capture }, span, text)
        }
    }

    /// Continues a string that spans chunks or holds escapes, copying it when it is captured.
    /// `true` once it ended.
    fn string_slow<V: Visit>(
        &mut self,
        chunk: &[u8],
        pos: &mut usize,
        v: &mut V,
    ) -> Result<bool, V::Error> {
        let State::InString {
            key,
            capture,
            mut escape,
            mut escaped,
        } = self.state
        else {
            return Ok(true);
        };
        loop {
            if escape > 0 {
                let Some(&b) = chunk.get(*pos) else {
                    self.state = State::InString {
                        key,
                        capture,
                        escape,
                        escaped,
                    };
                    return Ok(false);
                };
                *pos += 1;
                escape = match (escape, b) {
                    (5, b'u') => 4,
                    (5, b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => 0,
                    (1..=4, h) if h.is_ascii_hexdigit() => escape - 1,
                    _ => return Err(LexError::Syntax.into()),
                };
                if capture {
                    self.push(&[b])?;
                }
                continue;
            }
            let rest = &chunk[(*pos).min(chunk.len())..];
            let Some(i) = string_stop(rest) else {
                if capture {
                    self.push(rest)?;
                }
                *pos = chunk.len();
                self.state = State::InString {
                    key,
                    capture,
                    escape,
                    escaped,
                };
                return Ok(false);
            };
            if capture {
                self.push(&rest[..i])?;
            }
            *pos += i + 1;
            match rest[i] {
                b'\\' => {
                    if capture {
                        self.push(b"\\")?;
                    }
                    escape = 5;
                    escaped = true;
                    continue;
                }
                b'"' => {}
                // A control character (RFC 8259 section 7).
                _ => return Err(LexError::Syntax.into()),
            }
            let span = Span {
                start: self.start.take(),
                end: *pos,
            };
            self.state = State::Between;
            if capture {
                self.decode(escaped)?;
            } else {
                self.text.clear();
            }
            let text = std::mem::take(&mut self.text);
            let result = self.string_end(key, capture, span, &text, v);
            self.text = text;
            result?;
            return Ok(true);
        }
    }

    /// A number or literal from its first byte at `*pos`: whole when it ends in this chunk,
    /// otherwise on the slow path. `true` once it ended.
    fn scalar<V: Visit>(
        &mut self,
        chunk: &[u8],
        pos: &mut usize,
        v: &mut V,
    ) -> Result<bool, V::Error> {
        self.value(v)?;
        let at = *pos;
        let rest = &chunk[at..];
        if let Some(len) = rest.iter().position(|&b| !scalar_byte(b)) {
            *pos = at + len;
            let text = &rest[..len];
            check_scalar(text)?;
            self.after_value();
            let span = Span {
                start: Some(at),
                end: *pos,
            };
            v.token(Token::Scalar, span, text)?;
            return Ok(true);
        }
        self.start = Some(at);
        self.raw.clear();
        self.state = State::InScalar;
        self.scalar_slow(chunk, pos, v)
    }

    /// Continues a number or literal that spans chunks. `true` once it ended.
    fn scalar_slow<V: Visit>(
        &mut self,
        chunk: &[u8],
        pos: &mut usize,
        v: &mut V,
    ) -> Result<bool, V::Error> {
        let rest = &chunk[(*pos).min(chunk.len())..];
        let len = rest
            .iter()
            .position(|&b| !scalar_byte(b))
            .unwrap_or(rest.len());
        self.push(&rest[..len]).map_err(|_| LexError::Syntax)?;
        *pos += len;
        if len == rest.len() {
            return Ok(false);
        }
        let span = Span {
            start: self.start.take(),
            end: *pos,
        };
        self.state = State::Between;
        self.end_scalar()?;
        v.token(Token::Scalar, span, &self.text)?;
        Ok(true)
    }

    fn end_scalar(&mut self) -> Result<(), LexError> {
        check_scalar(&self.raw)?;
        self.after_value();
        std::mem::swap(&mut self.raw, &mut self.text);
        Ok(())
    }

    fn push(&mut self, bytes: &[u8]) -> Result<(), LexError> {
        if self.raw.len() + bytes.len() > MAX_CAPTURE {
            return Err(LexError::TooLong);
        }
        self.raw.extend_from_slice(bytes);
        Ok(())
    }

    /// The copied text, its escapes decoded (serde_json does surrogate pairs right; this is
    /// the rare path, and it also checks that the decoded text is UTF-8).
    fn decode(&mut self, escaped: bool) -> Result<(), LexError> {
        if !escaped {
            std::mem::swap(&mut self.raw, &mut self.text);
            return Ok(());
        }
        let mut quoted = Vec::with_capacity(self.raw.len() + 2);
        quoted.push(b'"');
        quoted.extend_from_slice(&self.raw);
        quoted.push(b'"');
        let text: String = serde_json::from_slice(&quoted).map_err(|_| LexError::Syntax)?;
        self.text = text.into_bytes();
        Ok(())
    }
}

fn scalar_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.')
}

fn check_scalar(text: &[u8]) -> Result<(), LexError> {
    if matches!(text, b"true" | b"false" | b"null") || is_number(text) {
        Ok(())
    } else {
        Err(LexError::Syntax)
    }
}

/// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?` (RFC 8259 section 6).
fn is_number(text: &[u8]) -> bool {
    let mut i = usize::from(text.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let from = *i;
        while text.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > from
    };
    match text.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if text.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if matches!(text.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(text.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == text.len()
}

/// Where a string's plain run ends in `bytes`: the first `"`, `\` or control character. Eight
/// bytes at a time, as one word: a byte of a mask has its high bit set where the word's byte
/// matches, and the lowest marked byte is exact (a borrow can only mark bytes above a match).
/// Bytes of 0x80 and above (UTF-8 sequences) never match.
fn string_stop(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Bytes of `w` below `n` (n <= 0x80).
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH;
    let equal = |w: u64, b: u8| below(w ^ (ONES * u64::from(b)), 1);
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for word in &mut words {
        let mut le = [0; 8];
        le.copy_from_slice(word);
        let w = u64::from_le_bytes(le);
        let hits = equal(w, b'"') | equal(w, b'\\') | below(w, 0x20);
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|i| at + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records tokens as text: keys and captured values with theirs, documents as `doc`.
    #[derive(Default)]
    struct Record(Vec<String>);

    impl Visit for Record {
        type Error = LexError;

        fn wants_value(&self) -> bool {
            true
        }

        fn token(&mut self, token: Token, _: Span, text: &[u8]) -> Result<(), LexError> {
            let text = String::from_utf8_lossy(text);
            self.0.push(match token {
                Token::ObjectStart => "{".into(),
                Token::ObjectEnd => "}".into(),
                Token::ArrayStart => "[".into(),
                Token::ArrayEnd => "]".into(),
                Token::Key => format!("k:{text}"),
                Token::Str { .. } => format!("s:{text}"),
                Token::Scalar => format!("n:{text}"),
            });
            Ok(())
        }

        fn next_document(&mut self) {
            self.0.push("doc".into());
        }
    }

    /// Every token of `input` fed in chunks of `size`.
    fn tokens(input: &[u8], size: usize) -> Result<Vec<String>, LexError> {
        lex(input, size, false)
    }

    fn lex(input: &[u8], size: usize, lines: bool) -> Result<Vec<String>, LexError> {
        let mut lexer = Lexer::new(lines);
        let mut out = Record::default();
        for chunk in input.chunks(size.max(1)) {
            lexer.feed(chunk, &mut out)?;
        }
        lexer.finish(&mut out)?;
        Ok(out.0)
    }

    #[test]
    fn tokens_are_the_same_whatever_the_chunking() {
        let doc = br#" {"resourceType":"Bundle","total":12,"entry":[{"a":[true,false,null,-1.5e3]},
            {"reference":"Patient\/A\u00e9"}],"x":{}} "#;
        let whole = tokens(doc, doc.len()).expect("valid");
        assert_eq!(
            whole,
            [
                "{",
                "k:resourceType",
                "s:Bundle",
                "k:total",
                "n:12",
                "k:entry",
                "[",
                "{",
                "k:a",
                "[",
                "n:true",
                "n:false",
                "n:null",
                "n:-1.5e3",
                "]",
                "}",
                "{",
                "k:reference",
                "s:Patient/Aé",
                "}",
                "]",
                "k:x",
                "{",
                "}",
                "}"
            ]
        );
        for size in 1..12 {
            assert_eq!(tokens(doc, size).expect("valid"), whole, "chunks of {size}");
        }
    }

    #[test]
    fn what_a_lenient_parser_might_accept_is_refused() {
        let cases: &[(&[u8], LexError)] = &[
            (br#"{"a":1,}"#, LexError::Syntax),
            (br#"{"a":1}{"b":2}"#, LexError::Trailing),
            (br#"{"a":1} x"#, LexError::Trailing),
            (b"{\"a\":\"tab\there\"}", LexError::Syntax),
            (br#"{"a":"\x"}"#, LexError::Syntax),
            (br#"{"a":"\u12g4"}"#, LexError::Syntax),
            (br#"{"a":01}"#, LexError::Syntax),
            (br#"{"a":NaN}"#, LexError::Syntax),
            (br#"{"a":tru}"#, LexError::Syntax),
            (br"{'a':1}", LexError::Syntax),
            (br#"{"a" 1}"#, LexError::Syntax),
            (br#"{"a":1]"#, LexError::Syntax),
            (br"[1,2", LexError::Truncated),
            (br#"{"a":"open"#, LexError::Truncated),
            (br"/* c */{}", LexError::Syntax),
        ];
        for (input, want) in cases {
            assert_eq!(
                tokens(input, 3),
                Err(*want),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(tokens(deep.as_bytes(), 7), Err(LexError::TooDeep));
        let long = format!("{{\"{}\":1}}", "k".repeat(MAX_CAPTURE + 1));
        assert_eq!(tokens(long.as_bytes(), 100), Err(LexError::TooLong));
    }

    #[test]
    fn numbers_follow_the_grammar() {
        for good in ["0", "-0", "12", "1.5", "-1.25e-3", "2E+9"] {
            assert!(is_number(good.as_bytes()), "{good}");
        }
        for bad in [
            "", "-", "01", "1.", ".5", "1e", "1e+", "+1", "1.2.3", "0x10",
        ] {
            assert!(!is_number(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn newline_delimited_documents_follow_each_other() {
        let input = b"{\"a\":1}\n{\"b\":\"x\"}\r\n\n[2]\n";
        let whole = lex(input, input.len(), true).expect("valid");
        assert_eq!(
            whole,
            [
                "{", "k:a", "n:1", "}", "doc", "{", "k:b", "s:x", "}", "doc", "[", "n:2", "]"
            ]
        );
        for size in 1..8 {
            assert_eq!(
                lex(input, size, true).expect("valid"),
                whole,
                "chunks of {size}"
            );
        }
        assert_eq!(lex(b"", 4, true), Ok(vec![]));
        assert_eq!(lex(b"{}\n{", 4, true), Err(LexError::Truncated));
        assert_eq!(lex(b"{}\n{}", 4, false), Err(LexError::Trailing));
    }

    /// The word-at-a-time scan finds what a byte-at-a-time one finds, wherever it sits.
    #[test]
    fn the_string_scan_finds_the_first_stop() {
        let naive = |b: &[u8]| b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
        let fillers: [u8; 6] = [b'a', 0x7f, 0x80, 0xff, b' ', 0x21];
        let stops: [u8; 6] = [b'"', b'\\', 0x00, 0x1f, b'\n', 0x01];
        for len in 0..20 {
            for &fill in &fillers {
                let plain = vec![fill; len];
                assert_eq!(string_stop(&plain), naive(&plain));
                for at in 0..len {
                    for &stop in &stops {
                        let mut bytes = plain.clone();
                        bytes[at] = stop;
                        // A second stop after the first must not be reported instead.
                        if at + 2 < len {
                            bytes[at + 2] = b'"';
                        }
                        assert_eq!(string_stop(&bytes), naive(&bytes), "{bytes:?}");
                    }
                }
            }
        }
    }
}
