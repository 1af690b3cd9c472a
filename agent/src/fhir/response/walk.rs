//! Where each token sits: which JSON objects are resources, their type, id and Patient
//! references (and under which top-level element), Bundle entries and links, and the units a
//! filter keeps or drops (root Bundle entries, NDJSON lines).
//!
//! Resources are found by position, as the FHIR JSON format puts them
//! (<http://hl7.org/fhir/R4/json.html>): the document root, `Bundle.entry.resource`,
//! `Bundle.entry.response.outcome`, `contained`, and `Parameters.parameter(.part).resource`.
//! Each must carry one `resourceType` (anywhere in the object: servers that store JSON as they
//! received it write its keys in any order), and a `resourceType` anywhere else is refused: a
//! client could take that object for a resource this walker did not judge. Until a resource's
//! type is read, a member that only some types give a meaning (`entry`, `parameter`, `link`) is
//! walked as those types have it, and references are kept with the member they sit under, so
//! that their compartment meaning is settled once the type is known.

use super::{
    BodyFormat,
    judge::{Judge, Malformed, Violation},
    lexer::{Lexer, Span, Token},
};
use crate::fhir::{
    ResourceType, compartment::patient_compartment_elements, patient::patient_id_of_reference,
};

/// What a token means to the emitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Event {
    None,
    /// A member of the root object begins (its key was read).
    MemberStart,
    /// A member of the root object ends (its value was read).
    MemberEnd(Member),
    /// `"entry": [` of the root Bundle.
    EntriesStart,
    /// A root Bundle entry (or an NDJSON line) begins.
    UnitStart,
    /// It ends; `withheld` when something in it may not be seen.
    UnitEnd {
        withheld: bool,
    },
    /// The `]` of the root entries.
    EntriesEnd,
    /// The root object's `}`.
    DocumentEnd,
}

/// Root members the emitter treats apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Member {
    ResourceType,
    Type,
    Total,
    Entry,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Resource,
    Entries,
    Entry,
    EntryResponse,
    EntrySearch,
    Contained,
    Params,
    Param,
    Links,
    Link,
    /// An export manifest's root, its `output` / `error` arrays and their items.
    Manifest,
    Files,
    File,
    Plain,
}

/// The facts of one resource, judged when its object closes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Facts {
    pub resource_type: Option<ResourceType>,
    pub id: Option<String>,
    /// Patient ids referenced from the elements that put the type in a patient compartment
    /// (settled when the object closes, from `by_member`).
    pub compartment: Vec<String>,
    /// Patient ids referenced anywhere in it (contained resources included).
    pub referenced: Vec<String>,
    /// A `contained` resource: judged on type and references, tied through its container.
    pub contained: bool,
    /// The current top-level member.
    member: Option<String>,
    /// (top-level member, patient id) of every Patient reference of its own.
    by_member: Vec<(String, String)>,
    /// `resourceType` was read (a second one is refused).
    typed: bool,
}

/// Keys whose string values the walker reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    ResourceType,
    Id,
    Reference,
    Relation,
    Url,
    Mode,
    Type,
    Total,
    Other,
}

#[derive(Debug)]
pub(super) struct Walker {
    format: BodyFormat,
    frames: Vec<Role>,
    resources: Vec<Facts>,
    /// The key whose value comes next, and its text.
    key: Key,
    key_text: String,
    /// The key of the root member in progress.
    root_member: Member,
    /// The root resource's type, once read.
    root_type: Option<ResourceType>,
    /// `Bundle.type` of the root.
    bundle_type: Option<String>,
    /// The search mode of the entry in progress.
    search_mode: Option<String>,
    /// The type of the entry's resource.
    unit_type: Option<ResourceType>,
    unit_withheld: bool,
    /// The relation of the link in progress, and its URL.
    link: (Option<String>, Option<String>),
    pub(super) links: Vec<(String, String)>,
    pub(super) total: Option<String>,
    documents: u64,
}

impl Walker {
    pub(super) fn new(format: BodyFormat) -> Self {
        Self {
            format,
            frames: Vec::with_capacity(32),
            resources: Vec::with_capacity(8),
            key: Key::Other,
            key_text: String::new(),
            root_member: Member::Other,
            root_type: None,
            bundle_type: None,
            search_mode: None,
            unit_type: None,
            unit_withheld: false,
            link: (None, None),
            links: Vec::new(),
            total: None,
            documents: 0,
        }
    }

    /// Whether the string value about to start is one the walker reads.
    pub(super) fn wants_value(&self) -> bool {
        self.key != Key::Other
    }

    pub(super) fn seen_document(&self) -> bool {
        self.documents > 0
    }

    /// Whether the root is a Bundle (known once its first member is read).
    pub(super) fn root_is_bundle(&self) -> bool {
        self.root_type == Some(ResourceType::Bundle)
    }

    /// The root Bundle's `type`, once read.
    pub(super) fn bundle_type(&self) -> Option<&str> {
        self.bundle_type.as_deref()
    }

    /// NDJSON: the next line is a new document.
    pub(super) fn next_document(&mut self) {
        self.frames.clear();
        self.resources.clear();
        self.root_type = None;
        self.key = Key::Other;
    }

    /// The search mode and resource type of the unit that just ended.
    pub(super) fn unit(&self) -> (Option<&str>, Option<ResourceType>) {
        (self.search_mode.as_deref(), self.unit_type)
    }

    pub(super) fn token(
        &mut self,
        token: Token,
        span: Span,
        lexer: &Lexer,
        judge: &mut Judge,
    ) -> Result<Event, Violation> {
        let _ = span;
        match token {
            Token::ObjectStart => self.open(true, judge),
            Token::ArrayStart => self.open(false, judge),
            Token::ObjectEnd | Token::ArrayEnd => self.close(judge),
            Token::Key => self.key(lexer.text()),
            Token::Str { captured } => {
                let event = self.member_end();
                if captured {
                    self.string(lexer.text(), judge)?;
                }
                self.key = Key::Other;
                Ok(event)
            }
            Token::Scalar => {
                if self.key == Key::Total && self.frames.len() == 1 {
                    self.total = Some(lexer.text().to_owned());
                }
                if self.key == Key::ResourceType && self.in_resource_root() {
                    return Err(Violation::Malformed(Malformed::Resource));
                }
                self.key = Key::Other;
                Ok(self.member_end())
            }
        }
    }

    /// The role of a container opened where the current key (or array) puts it.
    fn open(&mut self, object: bool, judge: &mut Judge) -> Result<Event, Violation> {
        let parent = self.frames.last().copied();
        let resource_type = self.resources.last().and_then(|r| r.resource_type);
        let role = match (parent, object, self.key) {
            (None, true, _) if self.format == BodyFormat::ExportManifest => Role::Manifest,
            (None | Some(Role::Contained), true, _) => Role::Resource,
            (None, false, _) => return Err(Violation::Malformed(Malformed::Resource)),
            (Some(Role::Resource), false, Key::Other) => {
                use ResourceType::{Bundle, Parameters};
                match (self.key_text.as_str(), resource_type) {
                    ("entry", Some(Bundle) | None) => Role::Entries,
                    ("contained", _) => Role::Contained,
                    ("parameter", Some(Parameters) | None) => Role::Params,
                    ("link", Some(Bundle) | None) if self.frames.len() == 1 => Role::Links,
                    _ => Role::Plain,
                }
            }
            (Some(Role::Entries), true, _) => Role::Entry,
            (Some(Role::Entry), true, _) => match self.key_text.as_str() {
                "resource" => Role::Resource,
                "response" => Role::EntryResponse,
                "search" => Role::EntrySearch,
                _ => Role::Plain,
            },
            (Some(Role::EntryResponse), true, _) if self.key_text == "outcome" => Role::Resource,
            (Some(Role::Params), true, _) => Role::Param,
            (Some(Role::Param), false, _) if self.key_text == "part" => Role::Params,
            (Some(Role::Param), true, _) if self.key_text == "resource" => Role::Resource,
            (Some(Role::Links), true, _) => Role::Link,
            (Some(Role::Manifest), false, _)
                if matches!(self.key_text.as_str(), "output" | "error" | "deleted") =>
            {
                Role::Files
            }
            (Some(Role::Files), true, _) => Role::File,
            _ => Role::Plain,
        };
        let at_root_member = self.frames.len() == 1;
        let unit_start = self.unit_starts(role);
        self.frames.push(role);
        self.key = Key::Other;
        if role == Role::Resource {
            let contained = parent == Some(Role::Contained);
            self.resources.push(Facts {
                contained,
                ..Facts::default()
            });
        }
        if unit_start {
            self.search_mode = None;
            self.unit_type = None;
            self.unit_withheld = false;
            judge.unit_start();
            return Ok(Event::UnitStart);
        }
        if role == Role::Entries && at_root_member {
            return Ok(Event::EntriesStart);
        }
        Ok(Event::None)
    }

    /// Root Bundle entries and NDJSON lines are the units a filter keeps or drops.
    fn unit_starts(&self, role: Role) -> bool {
        match role {
            Role::Entry => self.frames.len() == 2,
            Role::Resource => self.frames.is_empty() && self.format == BodyFormat::Ndjson,
            _ => false,
        }
    }

    fn close(&mut self, judge: &mut Judge) -> Result<Event, Violation> {
        let Some(role) = self.frames.pop() else {
            return Err(Violation::Malformed(Malformed::Resource));
        };
        let depth = self.frames.len();
        match role {
            Role::Resource => {
                let mut facts = self.resources.pop().unwrap_or_default();
                self.resource_end(&mut facts, judge)?;
            }
            Role::Link => {
                if let (Some(relation), Some(url)) = std::mem::take(&mut self.link) {
                    self.links.push((relation, url));
                }
            }
            Role::File => {
                let (kind, url) = std::mem::take(&mut self.link);
                let kind = kind.ok_or(Violation::Malformed(Malformed::Resource))?;
                let url = url.ok_or(Violation::Malformed(Malformed::Resource))?;
                judge.export_file(&kind)?;
                let relation = if kind == "OperationOutcome" {
                    "error"
                } else {
                    "output"
                };
                self.links.push((relation.to_owned(), url));
            }
            _ => {}
        }
        if depth == 0 {
            self.documents += 1;
            if self.format == BodyFormat::Ndjson {
                let withheld = self.unit_withheld;
                judge.unit_end(!withheld);
                return Ok(Event::UnitEnd { withheld });
            }
            return Ok(Event::DocumentEnd);
        }
        if role == Role::Entry && depth == 2 {
            let withheld = self.unit_withheld;
            judge.unit_end(!withheld);
            return Ok(Event::UnitEnd { withheld });
        }
        if role == Role::Entries && depth == 1 {
            return Ok(Event::EntriesEnd);
        }
        Ok(self.member_end())
    }

    /// A value at depth 1 closes a root member.
    fn member_end(&self) -> Event {
        if self.frames.len() != 1 || self.format == BodyFormat::Ndjson {
            return Event::None;
        }
        Event::MemberEnd(self.root_member)
    }

    fn in_resource_root(&self) -> bool {
        self.frames.last() == Some(&Role::Resource)
    }

    fn key(&mut self, text: &str) -> Result<Event, Violation> {
        let role = self.frames.last().copied();
        self.key_text.clear();
        self.key_text.push_str(text);
        self.key = match (role, text) {
            (_, "resourceType") => {
                if role != Some(Role::Resource) {
                    // A resource where the format puts none: refused, see the module docs.
                    return Err(Violation::Malformed(Malformed::Resource));
                }
                Key::ResourceType
            }
            (Some(Role::Resource), "id") => Key::Id,
            (Some(Role::Resource), "type") if self.frames.len() == 1 => Key::Type,
            (Some(Role::Resource), "total") if self.frames.len() == 1 => Key::Total,
            // Inside a resource, whatever the role: a reference counts for the innermost one.
            (Some(_), "reference") if !self.resources.is_empty() => Key::Reference,
            (Some(Role::Link), "relation") => Key::Relation,
            (Some(Role::Link | Role::File), "url") => Key::Url,
            (Some(Role::File), "type") => Key::Type,
            (Some(Role::EntrySearch), "mode") => Key::Mode,
            _ => Key::Other,
        };
        if role == Some(Role::Resource)
            && let Some(facts) = self.resources.last_mut()
        {
            if text == "resourceType" {
                if facts.typed {
                    // Twice: two readers could take it for two different types.
                    return Err(Violation::Malformed(Malformed::Identity));
                }
                facts.typed = true;
            }
            if text == "id" && facts.id.is_some() {
                return Err(Violation::Malformed(Malformed::Resource));
            }
            facts.member = Some(text.to_owned());
        }
        if self.frames.len() == 1 && self.format != BodyFormat::Ndjson {
            self.root_member = match text {
                "resourceType" => Member::ResourceType,
                "type" => Member::Type,
                "total" => Member::Total,
                "entry" => Member::Entry,
                _ => Member::Other,
            };
            return Ok(Event::MemberStart);
        }
        Ok(Event::None)
    }

    fn string(&mut self, value: &str, judge: &mut Judge) -> Result<(), Violation> {
        let role = self.frames.last().copied();
        match self.key {
            Key::ResourceType => self.resource_type(value)?,
            Key::Id => {
                if let Some(facts) = self.resources.last_mut()
                    && self.frames.last() == Some(&Role::Resource)
                {
                    facts.id = Some(value.to_owned());
                }
            }
            Key::Reference => self.reference(value),
            Key::Relation => self.link.0 = Some(value.to_owned()),
            Key::Url => self.link.1 = Some(value.to_owned()),
            Key::Mode => self.search_mode = Some(value.to_owned()),
            Key::Type if role == Some(Role::File) => self.link.0 = Some(value.to_owned()),
            Key::Type => self.bundle_type = Some(value.to_owned()),
            Key::Total | Key::Other => {}
        }
        let _ = judge;
        Ok(())
    }

    fn resource_type(&mut self, value: &str) -> Result<(), Violation> {
        let t = ResourceType::parse(value).ok_or(Violation::Malformed(Malformed::UnknownType))?;
        if self.resources.len() == 1 && self.frames.len() == 1 {
            self.root_type = Some(t);
        }
        if let Some(facts) = self.resources.last_mut() {
            facts.resource_type = Some(t);
        }
        Ok(())
    }

    fn reference(&mut self, value: &str) {
        let Some(id) = patient_id_of_reference(value) else {
            return;
        };
        let Some(facts) = self.resources.last_mut() else {
            return;
        };
        if let Some(member) = &facts.member
            && !facts.by_member.iter().any(|(m, i)| m == member && i == id)
        {
            facts.by_member.push((member.clone(), id.to_owned()));
        }
        push_unique(&mut facts.referenced, id);
    }

    /// Judges a resource whose object just closed; what it references counts for its container.
    fn resource_end(&mut self, facts: &mut Facts, judge: &mut Judge) -> Result<(), Violation> {
        let Some(t) = facts.resource_type else {
            return Err(Violation::Malformed(Malformed::Identity));
        };
        if let Some(elements) = patient_compartment_elements(t) {
            for (member, id) in &facts.by_member {
                if elements.contains(&member.as_str()) {
                    push_unique(&mut facts.compartment, id);
                }
            }
        }
        if facts.contained
            && let Some(parent) = self.resources.last_mut()
        {
            for id in &facts.referenced {
                push_unique(&mut parent.referenced, id);
            }
        }
        let in_unit = self.in_unit();
        if in_unit && self.unit_type.is_none() {
            self.unit_type = facts.resource_type;
        }
        if let Err(violation) = judge.resource(facts) {
            if !in_unit {
                return Err(violation);
            }
            self.unit_withheld = true;
        }
        Ok(())
    }

    /// Whether the resource just closed lies inside a unit a filter can drop.
    fn in_unit(&self) -> bool {
        match self.format {
            BodyFormat::Ndjson => true,
            BodyFormat::Json => {
                self.frames.len() >= 2 && self.frames.get(1) == Some(&Role::Entries)
            }
            BodyFormat::ExportManifest => false,
        }
    }
}

fn push_unique(list: &mut Vec<String>, id: &str) {
    if !list.iter().any(|known| known == id) {
        list.push(id.to_owned());
    }
}
