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
    ids::{Budget, IdSet},
    judge::{Judge, Malformed, Violation},
    lexer::Token,
};
use crate::{
    ResourceType, compartment::patient_compartment_elements, patient::patient_id_of_reference,
};

/// The most bytes of links (relation and URL) one response keeps for binding: a page has a
/// handful and an export manifest a few thousand files, while a hostile answer could name
/// millions, each of which would otherwise be held here and then bound.
pub(super) const MAX_LINK_BYTES: usize = 1 << 20;

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
#[derive(Debug, Default)]
pub(super) struct Facts {
    pub resource_type: Option<ResourceType>,
    pub id: Option<String>,
    /// A Patient reference of its own sits under an element that puts its type in the Patient
    /// compartment (settled when the object closes, from `pending`, if the type came late).
    pub in_compartment: bool,
    /// Patient ids referenced anywhere in it (contained resources included).
    pub referenced: IdSet,
    /// A `contained` resource: judged on type and references, tied through its container.
    pub contained: bool,
    /// The current top-level member's key (empty before the first).
    member: Vec<u8>,
    /// Top-level members that held a Patient reference before the type was known.
    pending: IdSet,
    /// `resourceType` was read (a second one is refused).
    typed: bool,
}

impl Facts {
    /// Ready for a new resource; the sets were cleared when the last one was released.
    fn reset(&mut self, contained: bool) {
        self.resource_type = None;
        self.id = None;
        self.in_compartment = false;
        self.contained = contained;
        self.member.clear();
        self.typed = false;
    }
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

/// Keys that give the container they open a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    Entry,
    Contained,
    Parameter,
    Link,
    Resource,
    Response,
    Search,
    Outcome,
    Part,
    /// An export manifest's `output`, `error` or `deleted`.
    Files,
    Other,
}

impl Name {
    fn of(key: &[u8]) -> Self {
        match key {
            b"entry" => Name::Entry,
            b"contained" => Name::Contained,
            b"parameter" => Name::Parameter,
            b"link" => Name::Link,
            b"resource" => Name::Resource,
            b"response" => Name::Response,
            b"search" => Name::Search,
            b"outcome" => Name::Outcome,
            b"part" => Name::Part,
            b"output" | b"error" | b"deleted" => Name::Files,
            _ => Name::Other,
        }
    }
}

#[derive(Debug)]
pub(super) struct Walker {
    format: BodyFormat,
    frames: Vec<Role>,
    resources: Vec<Facts>,
    /// Facts of closed resources, kept for their buffers.
    spare: Vec<Facts>,
    /// The ids all open resources hold together.
    budget: Budget,
    /// The key whose value comes next, as the walker reads a string value of it, and as it
    /// gives a container value its role.
    key: Key,
    name: Name,
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
    /// Their bytes (see [`MAX_LINK_BYTES`]).
    link_bytes: usize,
    pub(super) total: Option<String>,
}

impl Walker {
    pub(super) fn new(format: BodyFormat) -> Self {
        Self {
            format,
            frames: Vec::with_capacity(32),
            resources: Vec::with_capacity(8),
            spare: Vec::new(),
            budget: Budget::default(),
            key: Key::Other,
            name: Name::Other,
            root_member: Member::Other,
            root_type: None,
            bundle_type: None,
            search_mode: None,
            unit_type: None,
            unit_withheld: false,
            link: (None, None),
            links: Vec::new(),
            link_bytes: 0,
            total: None,
        }
    }

    /// Whether the string value about to start is one the walker reads.
    pub(super) fn wants_value(&self) -> bool {
        self.key != Key::Other
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
        while let Some(facts) = self.resources.pop() {
            self.release(facts);
        }
        self.root_type = None;
        self.key = Key::Other;
    }

    /// The search mode and resource type of the unit that just ended.
    pub(super) fn unit(&self) -> (Option<&str>, Option<ResourceType>) {
        (self.search_mode.as_deref(), self.unit_type)
    }

    /// Places one token; `text` is the key, captured string or scalar. Inlined so that each of
    /// the lexer's call sites, which knows its token, keeps only its own arm.
    #[inline]
    pub(super) fn token(
        &mut self,
        token: Token,
        text: &[u8],
        judge: &mut Judge,
    ) -> Result<Event, Violation> {
        match token {
            Token::ObjectStart => self.open(true, judge),
            Token::ArrayStart => self.open(false, judge),
            Token::ObjectEnd | Token::ArrayEnd => self.close(judge),
            Token::Key => self.key(text),
            Token::Str { captured } => {
                let event = self.member_end();
                if captured {
                    let value = std::str::from_utf8(text)
                        .map_err(|_| Violation::Malformed(Malformed::Json))?;
                    self.string(value)?;
                }
                self.key = Key::Other;
                Ok(event)
            }
            Token::Scalar => {
                if self.key == Key::Total && self.frames.len() == 1 {
                    // ASCII by the JSON number grammar.
                    self.total = Some(String::from_utf8_lossy(text).into_owned());
                }
                if self.key == Key::ResourceType && self.in_resource_root() {
                    return Err(Violation::Malformed(Malformed::Resource));
                }
                self.key = Key::Other;
                Ok(self.member_end())
            }
        }
    }

    /// The role of a container opened where the current key (named when the parent is an
    /// object) or array puts it.
    fn open(&mut self, object: bool, judge: &mut Judge) -> Result<Event, Violation> {
        use ResourceType::{Bundle, Parameters};
        let parent = self.frames.last().copied();
        let resource_type = self.resources.last().and_then(|r| r.resource_type);
        let name = self.name;
        let role = match (parent, object, name) {
            (None, true, _) if self.format == BodyFormat::ExportManifest => Role::Manifest,
            // Where the JSON format puts resources (see the module docs).
            (None | Some(Role::Contained), true, _)
            | (Some(Role::Entry | Role::Param), true, Name::Resource)
            | (Some(Role::EntryResponse), true, Name::Outcome) => Role::Resource,
            (None, false, _) => return Err(Violation::Malformed(Malformed::Resource)),
            (Some(Role::Resource), false, Name::Entry)
                if matches!(resource_type, Some(Bundle) | None) =>
            {
                Role::Entries
            }
            (Some(Role::Resource), false, Name::Contained) => Role::Contained,
            (Some(Role::Resource), false, Name::Parameter)
                if matches!(resource_type, Some(Parameters) | None) =>
            {
                Role::Params
            }
            (Some(Role::Resource), false, Name::Link)
                if matches!(resource_type, Some(Bundle) | None) && self.frames.len() == 1 =>
            {
                Role::Links
            }
            (Some(Role::Entries), true, _) => Role::Entry,
            (Some(Role::Entry), true, Name::Response) => Role::EntryResponse,
            (Some(Role::Entry), true, Name::Search) => Role::EntrySearch,
            (Some(Role::Params), true, _) => Role::Param,
            (Some(Role::Param), false, Name::Part) => Role::Params,
            (Some(Role::Links), true, _) => Role::Link,
            (Some(Role::Manifest), false, Name::Files) => Role::Files,
            (Some(Role::Files), true, _) => Role::File,
            _ => Role::Plain,
        };
        self.name = Name::Other;
        let at_root_member = self.frames.len() == 1;
        let unit_start = self.unit_starts(role);
        self.frames.push(role);
        self.key = Key::Other;
        if role == Role::Resource {
            let mut facts = self.spare.pop().unwrap_or_default();
            facts.reset(parent == Some(Role::Contained));
            self.resources.push(facts);
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
                let judged = self.resource_end(&mut facts, judge);
                self.release(facts);
                judged?;
            }
            Role::Link => {
                if let (Some(relation), Some(url)) = std::mem::take(&mut self.link) {
                    self.keep_link(relation, url);
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
                self.keep_link(relation.to_owned(), url);
            }
            _ => {}
        }
        if depth == 0 {
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

    /// Keeps a link for binding while the links stay within [`MAX_LINK_BYTES`]; one past it is
    /// not kept, so that following it is refused as a link this agent never issued.
    fn keep_link(&mut self, relation: String, url: String) {
        let size = relation.len() + url.len();
        if self.link_bytes + size <= MAX_LINK_BYTES {
            self.link_bytes += size;
            self.links.push((relation, url));
        }
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

    /// A key, compared byte for byte (see the lexer on why keys need no UTF-8 check).
    fn key(&mut self, text: &[u8]) -> Result<Event, Violation> {
        let role = self.frames.last().copied();
        self.key = match (role, text) {
            (_, b"resourceType") => {
                if role != Some(Role::Resource) {
                    // A resource where the format puts none: refused, see the module docs.
                    return Err(Violation::Malformed(Malformed::Resource));
                }
                Key::ResourceType
            }
            (Some(Role::Resource), b"id") => Key::Id,
            (Some(Role::Resource), b"type") if self.frames.len() == 1 => Key::Type,
            (Some(Role::Resource), b"total") if self.frames.len() == 1 => Key::Total,
            // Inside a resource, whatever the role: a reference counts for the innermost one.
            (Some(_), b"reference") if !self.resources.is_empty() => Key::Reference,
            (Some(Role::Link), b"relation") => Key::Relation,
            (Some(Role::Link | Role::File), b"url") => Key::Url,
            (Some(Role::File), b"type") => Key::Type,
            (Some(Role::EntrySearch), b"mode") => Key::Mode,
            _ => Key::Other,
        };
        if role == Some(Role::Resource)
            && let Some(facts) = self.resources.last_mut()
        {
            if text == b"resourceType" {
                if facts.typed {
                    // Twice: two readers could take it for two different types.
                    return Err(Violation::Malformed(Malformed::Identity));
                }
                facts.typed = true;
            }
            if text == b"id" && facts.id.is_some() {
                return Err(Violation::Malformed(Malformed::Resource));
            }
            facts.member.clear();
            facts.member.extend_from_slice(text);
        }
        self.name = Name::of(text);
        if self.frames.len() == 1 && self.format != BodyFormat::Ndjson {
            self.root_member = match text {
                b"resourceType" => Member::ResourceType,
                b"type" => Member::Type,
                b"total" => Member::Total,
                b"entry" => Member::Entry,
                _ => Member::Other,
            };
            return Ok(Event::MemberStart);
        }
        Ok(Event::None)
    }

    fn string(&mut self, value: &str) -> Result<(), Violation> {
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
        facts.referenced.insert(id, &mut self.budget);
        match facts.resource_type {
            Some(t) => facts.in_compartment |= compartment_element(t, &facts.member),
            None if !facts.member.is_empty() => facts
                .pending
                .insert(&String::from_utf8_lossy(&facts.member), &mut self.budget),
            None => {}
        }
    }

    /// Gives a closed resource's share of the budget back and keeps its buffers.
    fn release(&mut self, mut facts: Facts) {
        facts.referenced.clear(&mut self.budget);
        facts.pending.clear(&mut self.budget);
        self.spare.push(facts);
    }

    /// Judges a resource whose object just closed; what it references counts for its container.
    fn resource_end(&mut self, facts: &mut Facts, judge: &mut Judge) -> Result<(), Violation> {
        let Some(t) = facts.resource_type else {
            return Err(Violation::Malformed(Malformed::Identity));
        };
        if !facts.in_compartment {
            facts.in_compartment = facts
                .pending
                .iter()
                .any(|member| compartment_element(t, member.as_bytes()));
        }
        if facts.contained
            && let Some(parent) = self.resources.last_mut()
        {
            for id in facts.referenced.iter() {
                parent.referenced.insert(id, &mut self.budget);
            }
            if facts.referenced.overflowed() {
                parent.referenced.mark_overflowed();
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

/// Whether a reference under top-level `member` puts a resource of type `t` in the Patient
/// compartment.
fn compartment_element(t: ResourceType, member: &[u8]) -> bool {
    patient_compartment_elements(t)
        .is_some_and(|elements| elements.iter().any(|e| e.as_bytes() == member))
}
