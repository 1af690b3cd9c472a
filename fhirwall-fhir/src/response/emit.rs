//! What goes out, and when: bodies held until judged, or a Bundle re-emitted member by member
//! and entry by entry so that withheld entries simply are not written.
//!
//! In the Bundle plan the root object and its `entry` array are written by this module (keys,
//! commas, brackets), while every member and entry in them is copied byte for byte from the
//! upstream: nothing inside a resource is ever rewritten. `total` is written last, lowered by
//! the matches withheld (JSON objects are unordered, RFC 8259 section 4).

use bytes::{BufMut, Bytes, BytesMut};

use super::{
    BodyFormat, CheckMode, Progress,
    judge::{Judge, Violation},
    lexer::{Partial, Span},
    walk::{Event, Member, Walker},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// `Record`: the caller relays the body; nothing is held or written here.
    Observe,
    /// Everything held until the end (`Deny`, and `Filter` on anything but a Bundle or NDJSON).
    Hold,
    /// `Filter` on JSON before the root's type is known: held like `Hold`.
    Undecided,
    /// `Filter` on a root Bundle: members and entries written one by one.
    Bundle,
    /// `Filter` on NDJSON: lines written one by one.
    Lines,
    /// Past the cap without a patient rule: released, and checked as it streams on.
    Stream,
}

/// What the emitter holds between chunks.
#[derive(Debug)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent facts about the output so far, not a state machine"
)]
pub(super) struct Emitter {
    plan: Plan,
    max_held: usize,
    /// Over the cap, refuse (a patient rule) rather than stream on.
    bounded: bool,
    staged: Vec<u8>,
    /// The member or entry in progress (Bundle and Lines plans).
    item: Vec<u8>,
    in_item: bool,
    /// The item outgrew the cap: its bytes are no longer kept, and it will be withheld.
    oversize: bool,
    /// Bytes of the current chunk before this index are accounted for.
    mark: usize,
    released: bool,
    announced: bool,
    entries_written: u32,
    /// An entry was withheld before `Bundle.type` was read.
    withheld_untyped: bool,
    /// Inside the root Bundle's `entry` array.
    entries_open: bool,
    /// The start of a root key that began in an earlier chunk (Bundle plan, between items).
    carry: Vec<u8>,
}

impl Emitter {
    pub(super) fn new(mode: CheckMode, format: BodyFormat, max_held: usize, bounded: bool) -> Self {
        let plan = match (mode, format) {
            (CheckMode::Record, _) => Plan::Observe,
            (CheckMode::Filter, BodyFormat::Json) => Plan::Undecided,
            (CheckMode::Filter, BodyFormat::Ndjson) => Plan::Lines,
            _ => Plan::Hold,
        };
        Self {
            plan,
            max_held,
            bounded,
            staged: Vec::new(),
            item: Vec::new(),
            in_item: false,
            oversize: false,
            mark: 0,
            released: matches!(plan, Plan::Observe | Plan::Lines),
            announced: false,
            entries_written: 0,
            withheld_untyped: false,
            entries_open: false,
            carry: Vec::new(),
        }
    }

    pub(super) fn released(&self) -> bool {
        self.released
    }

    /// `Streaming` once, when output may start.
    pub(super) fn progress(&mut self, _out: &mut BytesMut) -> Progress {
        if self.released && !self.announced {
            self.announced = true;
            Progress::Streaming
        } else {
            Progress::Holding
        }
    }

    /// Whether events change anything (not in `Record` mode, where the caller relays the
    /// body); [`Event::None`] never does.
    #[inline]
    pub(super) fn acts(&self) -> bool {
        self.plan != Plan::Observe
    }

    pub(super) fn begin_chunk(&mut self) {
        self.mark = 0;
    }

    pub(super) fn event(
        &mut self,
        event: Event,
        span: Span,
        chunk: &[u8],
        walker: &Walker,
        judge: &mut Judge,
        out: &mut BytesMut,
    ) -> Result<(), Violation> {
        match self.plan {
            Plan::Observe => Ok(()),
            Plan::Hold | Plan::Stream => match event {
                Event::UnitEnd { withheld: true } => Err(first_violation(judge)),
                _ => Ok(()),
            },
            Plan::Undecided => match event {
                // The first member: a Bundle whose type comes first can be filtered entry by
                // entry. Any other first member: everything is held and judged whole.
                Event::MemberEnd(Member::ResourceType) => {
                    self.decide(span, chunk, walker, out);
                    Ok(())
                }
                Event::MemberEnd(_) => {
                    self.plan = Plan::Hold;
                    Ok(())
                }
                Event::UnitEnd { withheld: true } => Err(first_violation(judge)),
                _ => Ok(()),
            },
            Plan::Bundle => self.bundle(event, span, chunk, walker, judge, out),
            Plan::Lines => {
                self.line(event, span, chunk, walker, judge, out);
                Ok(())
            }
        }
    }

    /// Accounts for the rest of the chunk, and applies the cap. `partial`: the lexer's token in
    /// progress ([`Lexer::partial`](super::lexer::Lexer::partial)).
    pub(super) fn end_chunk(
        &mut self,
        chunk: &[u8],
        partial: Partial,
        out: &mut BytesMut,
    ) -> Result<(), Violation> {
        if self.plan == Plan::Bundle && !self.in_item {
            // Between items only root keys span chunks; keep the start of one for its item.
            match partial {
                Partial::From(start) => {
                    self.carry = chunk.get(start..).unwrap_or_default().to_vec();
                }
                Partial::Earlier => self.carry.extend_from_slice(chunk),
                Partial::Between => self.carry.clear(),
            }
            if self.carry.len() > self.max_held {
                return Err(Violation::TooLarge);
            }
        }
        let rest = chunk.get(self.mark..).unwrap_or_default();
        self.mark = chunk.len();
        match self.plan {
            Plan::Observe => Ok(()),
            Plan::Stream => {
                out.put_slice(rest);
                Ok(())
            }
            Plan::Hold | Plan::Undecided => {
                if self.hold(rest) {
                    return Ok(());
                }
                if self.bounded || self.plan == Plan::Undecided {
                    return Err(Violation::TooLarge);
                }
                // Nothing seen so far fails; what follows is checked as it passes, and a
                // violation then cuts the response off.
                let mut held = std::mem::take(&mut self.staged);
                held.reserve_exact(rest.len());
                held.extend_from_slice(rest);
                put_held(out, held);
                self.plan = Plan::Stream;
                self.released = true;
                Ok(())
            }
            Plan::Bundle | Plan::Lines => {
                if self.in_item {
                    self.keep(rest);
                    if self.oversize && !self.in_unit_item() {
                        return Err(Violation::TooLarge);
                    }
                }
                Ok(())
            }
        }
    }

    /// The end of the body: what is held goes out.
    pub(super) fn finish(&mut self, out: &mut BytesMut) {
        if matches!(self.plan, Plan::Hold | Plan::Undecided) {
            put_held(out, std::mem::take(&mut self.staged));
            self.released = true;
        }
    }

    /// Holds `bytes` if the held body stays within the cap.
    fn hold(&mut self, bytes: &[u8]) -> bool {
        append_within(&mut self.staged, bytes, self.max_held)
    }

    /// Filter on JSON: the root's first member (its `resourceType`) just ended.
    fn decide(&mut self, span: Span, chunk: &[u8], walker: &Walker, out: &mut BytesMut) {
        if walker.root_is_bundle() {
            self.staged
                .extend_from_slice(chunk.get(self.mark..span.end).unwrap_or_default());
            self.mark = span.end;
            put_held(out, std::mem::take(&mut self.staged));
            self.released = true;
            self.plan = Plan::Bundle;
        } else {
            self.plan = Plan::Hold;
        }
    }

    fn bundle(
        &mut self,
        event: Event,
        span: Span,
        chunk: &[u8],
        walker: &Walker,
        judge: &mut Judge,
        out: &mut BytesMut,
    ) -> Result<(), Violation> {
        match event {
            Event::MemberStart | Event::UnitStart => self.start_item(span),
            Event::MemberEnd(member) => {
                self.end_item(span, chunk);
                if self.oversize {
                    return Err(Violation::TooLarge);
                }
                match member {
                    // Written last, lowered by what was withheld.
                    Member::Total => {}
                    Member::Type if self.withheld_untyped => {
                        return Err(Violation::Malformed(super::judge::Malformed::Resource));
                    }
                    _ => {
                        out.put_u8(b',');
                        out.put_slice(&self.item);
                    }
                }
            }
            Event::EntriesStart => {
                self.in_item = false;
                self.entries_open = true;
                self.mark = span.end;
                out.put_slice(b",\"entry\":[");
            }
            Event::UnitEnd { withheld } => {
                self.end_item(span, chunk);
                self.entry(withheld || self.oversize, walker, judge, out);
            }
            Event::EntriesEnd => {
                self.mark = span.end;
                self.entries_open = false;
                let withheld = judge.withheld.values().sum::<u32>();
                if withheld > 0 && walker.bundle_type() == Some("searchset") {
                    self.separator(out);
                    put_outcome_entry(out, withheld);
                }
                out.put_u8(b']');
            }
            Event::DocumentEnd => {
                self.mark = span.end;
                if let Some(total) = &walker.total {
                    out.put_slice(b",\"total\":");
                    match total.parse::<u64>() {
                        Ok(n) => out.put_slice(
                            n.saturating_sub(u64::from(judge.withheld_matches))
                                .to_string()
                                .as_bytes(),
                        ),
                        Err(_) => out.put_slice(total.as_bytes()),
                    }
                }
                out.put_u8(b'}');
            }
            Event::None => {}
        }
        Ok(())
    }

    /// One root Bundle entry, judged: written, left out, or (in a batch or transaction
    /// response, whose entries answer the request's by position) replaced by a 403 entry.
    fn entry(&mut self, withheld: bool, walker: &Walker, judge: &mut Judge, out: &mut BytesMut) {
        if !withheld {
            self.separator(out);
            out.put_slice(&self.item);
            return;
        }
        let (mode, resource_type) = walker.unit();
        let bundle_type = walker.bundle_type();
        let is_match = mode == Some("match")
            || (mode.is_none() && matches!(bundle_type, Some("searchset" | "history")));
        judge.withhold(resource_type, is_match);
        if self.oversize {
            judge.note(Violation::TooLarge);
        }
        match bundle_type {
            Some("batch-response" | "transaction-response") => {
                self.separator(out);
                put_forbidden_entry(out);
            }
            Some(_) => {}
            None => self.withheld_untyped = true,
        }
    }

    fn line(
        &mut self,
        event: Event,
        span: Span,
        chunk: &[u8],
        walker: &Walker,
        judge: &mut Judge,
        out: &mut BytesMut,
    ) {
        match event {
            Event::UnitStart => self.start_item(span),
            Event::UnitEnd { withheld } => {
                self.end_item(span, chunk);
                if withheld || self.oversize {
                    judge.withhold(walker.unit().1, false);
                } else {
                    out.put_slice(&self.item);
                    out.put_u8(b'\n');
                }
            }
            _ => {}
        }
    }

    fn separator(&mut self, out: &mut BytesMut) {
        if self.entries_written > 0 {
            out.put_u8(b',');
        }
        self.entries_written += 1;
    }

    fn start_item(&mut self, span: Span) {
        self.in_item = true;
        self.oversize = false;
        self.item.clear();
        if let Some(start) = span.start {
            self.mark = start;
        } else {
            // The key began in an earlier chunk: its start was carried over.
            self.item = std::mem::take(&mut self.carry);
            self.mark = 0;
        }
        self.carry.clear();
    }

    fn end_item(&mut self, span: Span, chunk: &[u8]) {
        let bytes = chunk.get(self.mark..span.end).unwrap_or_default();
        self.keep(bytes);
        self.mark = span.end;
        self.in_item = false;
    }

    fn keep(&mut self, bytes: &[u8]) {
        if self.oversize {
            return;
        }
        if !append_within(&mut self.item, bytes, self.max_held) {
            self.oversize = true;
            self.item = Vec::new();
        }
    }

    /// Whether the item in progress is an entry or a line (dropped when too large) rather than
    /// a root member (which cannot be dropped).
    fn in_unit_item(&self) -> bool {
        self.plan == Plan::Lines || self.entries_open
    }
}

/// Appends `bytes` to `buf` if it stays within `cap` bytes, growing its allocation no further
/// than `cap` (a plain doubling could hold twice the cap).
fn append_within(buf: &mut Vec<u8>, bytes: &[u8], cap: usize) -> bool {
    let needed = buf.len() + bytes.len();
    if needed > cap {
        return false;
    }
    if needed > buf.capacity() {
        let target = (buf.capacity() * 2).clamp(needed, cap);
        buf.reserve_exact(target - buf.len());
    }
    buf.extend_from_slice(bytes);
    true
}

/// Hands a held body to the caller's output, without a copy when the output is empty (the
/// usual case: the caller drains it after every piece).
fn put_held(out: &mut BytesMut, held: Vec<u8>) {
    if out.is_empty() {
        *out = BytesMut::from(Bytes::from(held));
    } else {
        out.put_slice(&held);
    }
}

fn first_violation(judge: &Judge) -> Violation {
    judge
        .violation()
        .unwrap_or(Violation::Malformed(super::judge::Malformed::Resource))
}

/// The searchset entry that says how many entries were withheld (issue type `suppressed`:
/// <http://hl7.org/fhir/R4/codesystem-issue-type.html#issue-type-suppressed>).
fn put_outcome_entry(out: &mut BytesMut, withheld: u32) {
    out.put_slice(
        b"{\"resource\":{\"resourceType\":\"OperationOutcome\",\"issue\":[{\"severity\":\"warning\",\
          \"code\":\"suppressed\",\"diagnostics\":\"fhirwall withheld ",
    );
    out.put_slice(withheld.to_string().as_bytes());
    out.put_slice(b" entries this integration may not see\"}]},\"search\":{\"mode\":\"outcome\"}}");
}

/// A batch or transaction response entry in place of one that was withheld.
fn put_forbidden_entry(out: &mut BytesMut) {
    out.put_slice(
        b"{\"response\":{\"status\":\"403 Forbidden\",\"outcome\":{\"resourceType\":\"OperationOutcome\",\
          \"issue\":[{\"severity\":\"error\",\"code\":\"forbidden\",\"diagnostics\":\"fhirwall \
          withheld this entry: it carries data this integration may not see\"}]}}}",
    );
}
