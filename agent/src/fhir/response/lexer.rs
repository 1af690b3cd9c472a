//! A resumable, strict JSON tokenizer (RFC 8259) for response bodies that arrive in pieces.
//!
//! Strict because the proxy and the client must read the same document: a body a lenient client
//! parser would accept differently (comments, trailing commas, bad escapes, control characters
//! in strings, a second top-level value) is an error here, and the checker refuses it.
//!
//! Fast because it runs over every byte of checked responses: string bodies, most of a FHIR
//! document, are skipped with `memchr` and copied only when the caller asks for their value
//! (keys, and the values of the few keys the checker reads).

use memchr::memchr2;

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
    /// An object key; its decoded text is [`Lexer::text`].
    Key,
    /// A string value; decoded in [`Lexer::text`] when it was captured.
    Str {
        captured: bool,
    },
    /// A number, `true`, `false` or `null`; its text is [`Lexer::text`].
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
    /// The document is complete: only whitespace may follow.
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

/// The tokenizer. Feed chunks through [`Lexer::next`] until it returns `Ok(None)`.
#[derive(Debug)]
pub(super) struct Lexer {
    state: State,
    expect: Expect,
    /// One bit per open container: `true` for an object.
    stack: Vec<bool>,
    /// Where the current token began, when in this chunk.
    start: Option<usize>,
    text: Vec<u8>,
    /// `text` decoded, when it held escapes.
    unescaped: String,
}

impl Default for Lexer {
    fn default() -> Self {
        Self {
            state: State::Between,
            expect: Expect::Value,
            stack: Vec::with_capacity(16),
            start: None,
            text: Vec::with_capacity(64),
            unescaped: String::new(),
        }
    }
}

impl Lexer {
    /// Whether the whole document has been read.
    pub(super) fn is_done(&self) -> bool {
        self.expect == Expect::Done
    }

    /// A new chunk begins: a token in progress began in an earlier one.
    pub(super) fn new_chunk(&mut self) {
        self.start = None;
    }

    /// Starts over for a new document (NDJSON lines).
    pub(super) fn reset(&mut self) {
        *self = Self::default();
    }

    /// The decoded text of the last key, captured string or scalar. Valid UTF-8 is checked when
    /// the token ends, so this never fails afterwards.
    pub(super) fn text(&self) -> &str {
        if self.unescaped.is_empty() {
            std::str::from_utf8(&self.text).unwrap_or_default()
        } else {
            &self.unescaped
        }
    }

    /// The next token in `chunk` from `*pos`, advancing `*pos` past it. `Ok(None)`: the chunk is
    /// used up (the token in progress, if any, continues in the next one). `capture` is asked at
    /// the start of each string value whether its text is wanted.
    pub(super) fn next(
        &mut self,
        chunk: &[u8],
        pos: &mut usize,
        capture: impl FnOnce() -> bool,
    ) -> Result<Option<(Token, Span)>, LexError> {
        let mut capture = Some(capture);
        loop {
            match self.state {
                State::InString { .. } => {
                    if let Some(token) = self.string(chunk, pos)? {
                        return Ok(Some(token));
                    }
                    return Ok(None);
                }
                State::InScalar => {
                    if let Some(token) = self.scalar(chunk, pos)? {
                        return Ok(Some(token));
                    }
                    return Ok(None);
                }
                State::Between => {}
            }
            let Some(&b) = chunk.get(*pos) else {
                return Ok(None);
            };
            let at = *pos;
            *pos += 1;
            let span = Span {
                start: Some(at),
                end: at + 1,
            };
            match b {
                b' ' | b'\t' | b'\n' | b'\r' => {}
                b'{' | b'[' => {
                    self.value()?;
                    if self.stack.len() >= MAX_DEPTH {
                        return Err(LexError::TooDeep);
                    }
                    let object = b == b'{';
                    self.stack.push(object);
                    self.expect = if object {
                        Expect::KeyOrClose
                    } else {
                        Expect::ValueOrClose
                    };
                    let token = if object {
                        Token::ObjectStart
                    } else {
                        Token::ArrayStart
                    };
                    return Ok(Some((token, span)));
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
                        return Err(LexError::Syntax);
                    }
                    self.after_value();
                    let token = if object {
                        Token::ObjectEnd
                    } else {
                        Token::ArrayEnd
                    };
                    return Ok(Some((token, span)));
                }
                b':' if self.expect == Expect::Colon => self.expect = Expect::Value,
                b',' if self.expect == Expect::CommaOrClose => {
                    self.expect = if self.stack.last() == Some(&true) {
                        Expect::Key
                    } else {
                        Expect::Value
                    };
                }
                b'"' => {
                    let key = matches!(self.expect, Expect::Key | Expect::KeyOrClose);
                    if !key {
                        self.value()?;
                    }
                    let capture = key || capture.take().is_some_and(|f| f());
                    self.begin(at);
                    self.state = State::InString {
                        key,
                        capture,
                        escape: 0,
                        escaped: false,
                    };
                }
                b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                    self.value()?;
                    self.begin(at);
                    self.text.push(b);
                    self.state = State::InScalar;
                }
                _ if self.expect == Expect::Done => return Err(LexError::Trailing),
                _ => return Err(LexError::Syntax),
            }
        }
    }

    /// At the end of the body: whether the document is complete. A top-level scalar ends
    /// here; FHIR bodies are objects, so the caller refuses it anyway, but the grammar is whole.
    pub(super) fn finish(&mut self) -> Result<Option<(Token, Span)>, LexError> {
        let mut token = None;
        if self.state == State::InScalar {
            self.end_scalar()?;
            token = Some((
                Token::Scalar,
                Span {
                    start: None,
                    end: 0,
                },
            ));
        }
        if self.expect == Expect::Done && self.state == State::Between {
            Ok(token)
        } else {
            Err(LexError::Truncated)
        }
    }

    /// Where the lexer stands at the end of a chunk.
    pub(super) fn partial(&self) -> Partial {
        match (self.state, self.start) {
            (State::Between, _) => Partial::Between,
            (_, Some(start)) => Partial::From(start),
            (_, None) => Partial::Earlier,
        }
    }

    /// Checks that a value may start here.
    fn value(&mut self) -> Result<(), LexError> {
        match self.expect {
            Expect::Value | Expect::ValueOrClose => Ok(()),
            Expect::Done => Err(LexError::Trailing),
            _ => Err(LexError::Syntax),
        }
    }

    fn after_value(&mut self) {
        self.expect = if self.stack.is_empty() {
            Expect::Done
        } else {
            Expect::CommaOrClose
        };
    }

    fn begin(&mut self, at: usize) {
        self.start = Some(at);
        self.text.clear();
        self.unescaped.clear();
    }

    /// Continues a string; returns its token once the closing quote is read.
    fn string(&mut self, chunk: &[u8], pos: &mut usize) -> Result<Option<(Token, Span)>, LexError> {
        let State::InString {
            key,
            capture,
            mut escape,
            mut escaped,
        } = self.state
        else {
            return Ok(None);
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
                    return Ok(None);
                };
                *pos += 1;
                escape = match (escape, b) {
                    (5, b'u') => 4,
                    (5, b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => 0,
                    (1..=4, h) if h.is_ascii_hexdigit() => escape - 1,
                    _ => return Err(LexError::Syntax),
                };
                if capture {
                    self.push(&[b])?;
                }
                continue;
            }
            let rest = &chunk[(*pos).min(chunk.len())..];
            let Some(i) = memchr2(b'"', b'\\', rest) else {
                self.plain(rest, capture)?;
                *pos = chunk.len();
                self.state = State::InString {
                    key,
                    capture,
                    escape,
                    escaped,
                };
                return Ok(None);
            };
            self.plain(&rest[..i], capture)?;
            *pos += i + 1;
            if rest[i] == b'\\' {
                if capture {
                    self.push(b"\\")?;
                }
                escape = 5;
                escaped = true;
                continue;
            }
            let span = Span {
                start: self.start.take(),
                end: *pos,
            };
            self.state = State::Between;
            if capture {
                self.decode(escaped)?;
            }
            if key {
                self.expect = Expect::Colon;
                return Ok(Some((Token::Key, span)));
            }
            self.after_value();
            return Ok(Some((Token::Str { captured: capture }, span)));
        }
    }

    /// Unescaped string bytes: no control characters (RFC 8259 section 7).
    fn plain(&mut self, bytes: &[u8], capture: bool) -> Result<(), LexError> {
        if bytes.iter().any(|&b| b < 0x20) {
            return Err(LexError::Syntax);
        }
        if capture {
            self.push(bytes)?;
        }
        Ok(())
    }

    fn push(&mut self, bytes: &[u8]) -> Result<(), LexError> {
        if self.text.len() + bytes.len() > MAX_CAPTURE {
            return Err(LexError::TooLong);
        }
        self.text.extend_from_slice(bytes);
        Ok(())
    }

    /// Checks the captured text is UTF-8 and, when it held escapes, decodes them (serde_json
    /// does surrogate pairs right; this is the rare path).
    fn decode(&mut self, escaped: bool) -> Result<(), LexError> {
        if !escaped {
            return std::str::from_utf8(&self.text)
                .map(|_| ())
                .map_err(|_| LexError::Syntax);
        }
        let mut quoted = Vec::with_capacity(self.text.len() + 2);
        quoted.push(b'"');
        quoted.extend_from_slice(&self.text);
        quoted.push(b'"');
        self.unescaped = serde_json::from_slice(&quoted).map_err(|_| LexError::Syntax)?;
        Ok(())
    }

    /// Continues a number or literal; it ends at the first byte that cannot belong to it.
    fn scalar(&mut self, chunk: &[u8], pos: &mut usize) -> Result<Option<(Token, Span)>, LexError> {
        let rest = &chunk[(*pos).min(chunk.len())..];
        let len = rest
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.')))
            .unwrap_or(rest.len());
        self.push(&rest[..len]).map_err(|_| LexError::Syntax)?;
        *pos += len;
        if len == rest.len() {
            return Ok(None);
        }
        let span = Span {
            start: self.start.take(),
            end: *pos,
        };
        self.end_scalar()?;
        Ok(Some((Token::Scalar, span)))
    }

    fn end_scalar(&mut self) -> Result<(), LexError> {
        self.state = State::Between;
        let ok = matches!(&self.text[..], b"true" | b"false" | b"null") || is_number(&self.text);
        if !ok {
            return Err(LexError::Syntax);
        }
        self.after_value();
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every token of `input` fed in chunks of `size`, keys and captured values as text.
    fn tokens(input: &[u8], size: usize) -> Result<Vec<String>, LexError> {
        let mut lexer = Lexer::default();
        let mut out = Vec::new();
        for chunk in input.chunks(size.max(1)) {
            let mut pos = 0;
            lexer.new_chunk();
            while let Some((token, _)) = lexer.next(chunk, &mut pos, || true)? {
                out.push(describe(token, &lexer));
            }
        }
        if let Some((token, _)) = lexer.finish()? {
            out.push(describe(token, &lexer));
        }
        Ok(out)
    }

    fn describe(token: Token, lexer: &Lexer) -> String {
        match token {
            Token::ObjectStart => "{".into(),
            Token::ObjectEnd => "}".into(),
            Token::ArrayStart => "[".into(),
            Token::ArrayEnd => "]".into(),
            Token::Key => format!("k:{}", lexer.text()),
            Token::Str { .. } => format!("s:{}", lexer.text()),
            Token::Scalar => format!("n:{}", lexer.text()),
        }
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
            (b"{\"a\":\"\xff\"}", LexError::Syntax),
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
}
