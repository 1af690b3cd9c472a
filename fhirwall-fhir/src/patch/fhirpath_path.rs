//! The subset of FHIRPath (<http://hl7.org/fhirpath/>) a patch path may use here:
//!
//! ```text
//! path  = Type *( "." step *index )
//! step  = element / function "(" arguments ")"      ; the first step must be an element
//! index = "[" 1*DIGIT "]"
//! ```
//!
//! Only the first step decides the element, and only the last element step decides whether a
//! text value is a reference, so function arguments are skipped rather than parsed. Skipping must
//! still find the same closing parenthesis as the server's parser, so quotes (`'` and `` ` ``,
//! with backslash escapes) are honoured, and comments and double quotes, which could hide a
//! parenthesis from one reader but not another, are refused. Whitespace outside arguments,
//! unions, operators and other functions are refused: we could not tell what they reach.

use super::{FhirPathProblem, OperationProblem};

/// What a path reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PathReach<'a> {
    /// The first element step; `None` when the path is just the type.
    pub first: Option<&'a str>,
    /// Whether the last element step is `reference`.
    pub at_reference: bool,
}

/// Functions that keep a subset of their input, so the reach stays that of the steps before.
/// These are also the only ones helios-hfs accepts in a patch path; `resolve()` would leave the
/// resource, and `descendants()` or `select()` could reach anything.
const FUNCTIONS: [(&str, Arity); 5] = [
    ("where", Arity::One),
    ("first", Arity::None),
    ("last", Arity::None),
    ("single", Arity::None),
    ("ofType", Arity::One),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arity {
    None,
    One,
}

pub(super) fn read<'a>(
    path: &'a str,
    resource_type: &str,
) -> Result<PathReach<'a>, OperationProblem> {
    let unreadable = |problem| OperationProblem::UnreadablePath { problem };
    let mut scanner = Scanner { text: path, pos: 0 };
    if resource_type.is_empty() || scanner.identifier() != Some(resource_type) {
        return Err(OperationProblem::PathNotOfType);
    }
    let mut reach = PathReach {
        first: None,
        at_reference: false,
    };
    while let Some(byte) = scanner.peek() {
        if byte != b'.' {
            return Err(unreadable(FhirPathProblem::Character));
        }
        scanner.pos += 1;
        let name = scanner
            .identifier()
            .ok_or(unreadable(FhirPathProblem::EmptyStep))?;
        if scanner.peek() == Some(b'(') {
            if reach.first.is_none() {
                return Err(unreadable(FhirPathProblem::FirstStepFunction));
            }
            scanner.function(name).map_err(unreadable)?;
        } else {
            reach.first.get_or_insert(name);
            reach.at_reference = name == "reference";
        }
        while scanner.peek() == Some(b'[') {
            scanner.index().map_err(unreadable)?;
        }
    }
    Ok(reach)
}

/// A byte cursor. Every delimiter is ASCII, and UTF-8 continuation bytes are never ASCII, so
/// byte positions always fall on character boundaries where `text` is sliced.
struct Scanner<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    /// `[A-Za-z_][A-Za-z0-9_]*`, FHIRPath's plain identifier.
    fn identifier(&mut self) -> Option<&'a str> {
        let start = self.pos;
        let first = self.peek()?;
        if !(first.is_ascii_alphabetic() || first == b'_') {
            return None;
        }
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            self.pos += 1;
        }
        self.text.get(start..self.pos)
    }

    /// A call of one of [`FUNCTIONS`], the cursor on its `(`.
    fn function(&mut self, name: &str) -> Result<(), FhirPathProblem> {
        let arity = FUNCTIONS
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, arity)| *arity)
            .ok_or(FhirPathProblem::UnknownFunction)?;
        let empty = self.arguments()?;
        match (arity, empty) {
            (Arity::None, true) | (Arity::One, false) => Ok(()),
            _ => Err(FhirPathProblem::Arguments),
        }
    }

    /// Skips from `(` (the cursor on it) past its matching `)`; returns whether only whitespace
    /// was between.
    fn arguments(&mut self) -> Result<bool, FhirPathProblem> {
        self.pos += 1;
        let mut depth = 1_usize;
        let mut empty = true;
        while let Some(byte) = self.peek() {
            self.pos += 1;
            match byte {
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(empty);
                    }
                }
                b'\'' | b'`' => self.quoted(byte)?,
                b'"' => return Err(FhirPathProblem::Comment),
                b'/' if matches!(self.peek(), Some(b'/' | b'*')) => {
                    return Err(FhirPathProblem::Comment);
                }
                b' ' | b'\t' | b'\r' | b'\n' => continue,
                b if b.is_ascii_graphic() => {}
                _ => return Err(FhirPathProblem::Character),
            }
            empty = false;
        }
        Err(FhirPathProblem::Unbalanced)
    }

    /// Skips a quoted string or delimited identifier, the cursor just past its opening quote.
    fn quoted(&mut self, quote: u8) -> Result<(), FhirPathProblem> {
        while let Some(byte) = self.peek() {
            self.pos += 1;
            if byte == b'\\' {
                // Any escaped character is one more byte to skip; a multi-byte character's
                // continuation bytes are skipped by the loop, as they are never quotes.
                self.peek().ok_or(FhirPathProblem::Unbalanced)?;
                self.pos += 1;
            } else if byte == quote {
                return Ok(());
            }
        }
        Err(FhirPathProblem::Unbalanced)
    }

    /// `[digits]`, the cursor on `[`; FHIRPath indexes are integer literals.
    fn index(&mut self) -> Result<(), FhirPathProblem> {
        self.pos += 1;
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        if self.pos == start || self.peek() != Some(b']') {
            return Err(FhirPathProblem::BadIndex);
        }
        self.pos += 1;
        Ok(())
    }
}
