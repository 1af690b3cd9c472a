//! Response-side verification: what the server actually sent, checked resource by resource
//! against what the integration may see, as the body streams.
//!
//! The request side decides on its reading of a request; a server may read it differently
//! (ignore `_type`, follow an `_include` further, resolve an id to another patient's record).
//! This module is the defence that does not depend on guessing the server: every resource in a
//! response (the root, each Bundle entry's `resource`, `contained` resources, `Parameters`
//! resources, nested Bundles of a batch response) must be of a type the integration may read
//! and, under a patient constraint, belong to an allowed patient's compartment.
//!
//! ```text
//! bytes -> lexer.rs (strict JSON tokens, resumable) -> walk.rs (where each resource is, its
//!          type, id and Patient references by element) -> judge.rs (ResponseRules) ->
//!          emit.rs (hold, release, drop withheld entries, or refuse)
//! ```
//!
//! Three modes ([`CheckMode`]):
//! - `Record`: nothing is held or changed; the pass only notes whose data the response carried,
//!   for the audit store (a search that never names a patient still moves patients' records).
//! - `Deny`: the body is held (up to [`ResponseRules::max_held`]) and released only if every
//!   resource passes; otherwise the caller replaces the whole response with a 403.
//! - `Filter`: a searchset, history or batch-response Bundle streams entry by entry; entries
//!   that fail are left out (or, in a batch response, replaced by a 403 entry so positions still
//!   match the request's), `total` is lowered by the matches withheld, and an OperationOutcome
//!   entry says how many were withheld. Any other body is held and judged whole, as in `Deny`.
//!
//! Memory is bounded by the cap, not the body: `Filter` holds one entry at a time; `Deny` over
//! the cap refuses under a patient constraint and otherwise releases what it holds and checks
//! the rest as it streams, cutting the response off at the first violation.
//!
//! Pure: no I/O, no logging, no clock. The report names types and counts; patient ids go only
//! to the audit store.

mod emit;
mod ids;
mod judge;
mod lexer;
mod walk;

use std::collections::BTreeMap;

use bytes::BytesMut;

pub use self::judge::{PatientRule, ResponseRules, Violation};
use self::{
    emit::Emitter,
    judge::Judge,
    lexer::{LexError, Lexer, Span, Token, Visit},
    walk::{Event, Walker},
};
use super::ResourceType;

/// How a response is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckMode {
    /// Only note whose data the response carries.
    Record,
    /// Replace the whole response with a 403 if anything in it may not be seen.
    Deny,
    /// Leave out the Bundle entries that may not be seen.
    Filter,
}

impl CheckMode {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            CheckMode::Record => "record",
            CheckMode::Deny => "deny",
            CheckMode::Filter => "filter",
        }
    }
}

/// What the body is, from the response's Content-Type and what the request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// One FHIR resource as JSON (a Bundle included).
    Json,
    /// Newline-delimited resources (bulk data output files).
    Ndjson,
    /// The JSON manifest of a finished bulk export (not a FHIR resource).
    ExportManifest,
}

/// The proxy's next step after a piece of body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Keep going; nothing may be sent to the client yet (the response head included).
    Holding,
    /// The head may go out now (with a framing that allows a changed length); what was
    /// appended to `out` follows it. Returned once, after which output streams.
    Streaming,
}

/// The response may not reach the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub violation: Violation,
    /// Some of the body already went out: the caller can only cut the response off.
    pub released: bool,
}

/// What one response carried and what was held back, for the audit record and metrics. Types
/// and counts only, except `patients` (audit store only, never logs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Ids of the patients whose data the released response carried (Patient resources, and
    /// `Patient/[id]` references of released resources), sorted, at most [`MAX_PATIENTS`].
    pub patients: Vec<String>,
    /// More patients than [`MAX_PATIENTS`] were seen.
    pub patients_truncated: bool,
    /// Resources checked.
    pub resources: u64,
    /// Entries withheld, by the type of their resource (`None`: an entry without one, or too
    /// large to read).
    pub withheld: BTreeMap<Option<ResourceType>, u32>,
    /// Withheld entries whose search mode was `match` (what `total` counts).
    pub withheld_matches: u32,
    /// The root Bundle's `link`s (relation, url), and a bulk export manifest's file URLs
    /// (relation `output` or `error`): what a continuation or download may later ask for.
    pub links: Vec<(String, String)>,
    /// The first violation found, also when it only withheld an entry.
    pub violation: Option<Violation>,
    /// The body could not be read in `Record` mode (not JSON, malformed): nothing was noted.
    pub unread: bool,
    /// Under [`PatientRule::One`]: the patient the response was bound to (a continuation of
    /// it is held to that patient).
    pub bound: Option<String>,
}

/// The most patient ids one report keeps; beyond it the report says it was truncated.
pub const MAX_PATIENTS: usize = 10_000;

impl Report {
    /// Entries withheld in all.
    #[must_use]
    pub fn withheld_total(&self) -> u32 {
        self.withheld.values().sum()
    }
}

/// One response body being checked. Feed it with [`ResponseCheck::feed`], end it with
/// [`ResponseCheck::finish`], then read [`ResponseCheck::report`].
#[derive(Debug)]
pub struct ResponseCheck {
    lexer: Lexer,
    walker: Walker,
    judge: Judge,
    emit: Emitter,
    failed: bool,
}

impl ResponseCheck {
    #[must_use]
    pub fn new(rules: ResponseRules, format: BodyFormat) -> Self {
        let mode = rules.mode;
        let max_held = rules.max_held;
        let bounded = !matches!(rules.patients, PatientRule::Any);
        Self {
            lexer: Lexer::new(format == BodyFormat::Ndjson),
            walker: Walker::new(format),
            judge: Judge::new(rules),
            emit: Emitter::new(mode, format, max_held, bounded),
            failed: false,
        }
    }

    /// The mode this check runs in.
    #[must_use]
    pub fn mode(&self) -> CheckMode {
        self.judge.rules().mode
    }

    /// Checks the next piece of the body, appending what may be sent to `out`. In `Record`
    /// mode nothing is appended: the caller relays the body itself.
    pub fn feed(&mut self, input: &[u8], out: &mut BytesMut) -> Result<Progress, Refusal> {
        if self.failed {
            return Ok(Progress::Holding);
        }
        let result = self.scan(input, out);
        self.settle(result, out)
    }

    /// The end of the body: releases what is held, or refuses.
    pub fn finish(&mut self, out: &mut BytesMut) -> Result<Progress, Refusal> {
        if self.failed {
            return Ok(Progress::Holding);
        }
        let result = self.end(out).map(|()| self.emit.finish(out));
        self.settle(result, out)
    }

    /// What the response carried (complete after `finish`). Patients count only when some of
    /// the body was released.
    #[must_use]
    pub fn report(&self) -> Report {
        self.judge.report(&self.walker, self.emit.released())
    }

    fn scan(&mut self, input: &[u8], out: &mut BytesMut) -> Result<(), Violation> {
        self.emit.begin_chunk();
        let mut pass = Pass {
            walker: &mut self.walker,
            judge: &mut self.judge,
            emit: &mut self.emit,
            input,
            out,
        };
        self.lexer.feed(input, &mut pass)?;
        self.emit.end_chunk(input, self.lexer.partial(), out)
    }

    fn end(&mut self, out: &mut BytesMut) -> Result<(), Violation> {
        let mut pass = Pass {
            walker: &mut self.walker,
            judge: &mut self.judge,
            emit: &mut self.emit,
            input: &[],
            out,
        };
        self.lexer.finish(&mut pass)
    }

    /// Turns a violation into the caller's next step: in `Record` mode nothing is refused
    /// (the pass only notes patients), otherwise the response is refused.
    fn settle(
        &mut self,
        result: Result<(), Violation>,
        out: &mut BytesMut,
    ) -> Result<Progress, Refusal> {
        match result {
            Ok(()) => Ok(self.emit.progress(out)),
            Err(v) if self.mode() == CheckMode::Record => {
                self.failed = true;
                self.judge.unread(v);
                Ok(Progress::Holding)
            }
            Err(v) => Err(self.refuse(v)),
        }
    }

    fn refuse(&mut self, violation: Violation) -> Refusal {
        self.failed = true;
        self.judge.note(violation);
        Refusal {
            violation,
            released: self.emit.released(),
        }
    }
}

/// One piece of body on its way through: each token the lexer reads is placed by the walker
/// (and judged when a resource closes), then written, held or dropped by the emitter.
struct Pass<'a> {
    walker: &'a mut Walker,
    judge: &'a mut Judge,
    emit: &'a mut Emitter,
    input: &'a [u8],
    out: &'a mut BytesMut,
}

impl Visit for Pass<'_> {
    type Error = Violation;

    fn wants_value(&self) -> bool {
        self.walker.wants_value()
    }

    #[inline]
    fn token(&mut self, token: Token, span: Span, text: &[u8]) -> Result<(), Violation> {
        let event = self.walker.token(token, text, self.judge)?;
        if event == Event::None || !self.emit.acts() {
            return Ok(());
        }
        self.emit
            .event(event, span, self.input, self.walker, self.judge, self.out)
    }

    fn next_document(&mut self) {
        self.walker.next_document();
    }
}

impl From<LexError> for Violation {
    fn from(e: LexError) -> Self {
        Violation::Malformed(e.into())
    }
}

#[cfg(test)]
mod tests;
