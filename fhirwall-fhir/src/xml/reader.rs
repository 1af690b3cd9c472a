//! The event loop: quick-xml events in, finished elements out, with the document-level rules
//! (prolog, one root, epilog), the limits, and the narrative `div` skipped.

use quick_xml::{
    NsReader,
    events::{BytesDecl, BytesRef, BytesStart, Event, attributes::AttrError},
    name::{Namespace, ResolveResult},
};
use serde_json::{Map, Value};

use super::{
    XmlError, XmlLimits, attribute_error, attribute_value,
    element::{Child, Frame, Node},
    is_xml_char,
};

/// The namespace every FHIR element is in (<http://hl7.org/fhir/R4/xml.html>).
const FHIR_NS: &str = "http://hl7.org/fhir";
/// The namespace of the narrative `div`, the only non-FHIR element a resource may hold.
const XHTML_NS: &str = "http://www.w3.org/1999/xhtml";

/// Where an element's name resolved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ns {
    Fhir,
    Xhtml,
    /// Bound to another namespace, or to none.
    Other,
    /// A prefix with no declaration in scope.
    Unknown,
}

impl Ns {
    fn of(resolved: &ResolveResult<'_>) -> Ns {
        match resolved {
            ResolveResult::Bound(Namespace(FHIR_NS)) => Ns::Fhir,
            ResolveResult::Bound(Namespace(XHTML_NS)) => Ns::Xhtml,
            ResolveResult::Bound(_) | ResolveResult::Unbound => Ns::Other,
            ResolveResult::Unknown(_) => Ns::Unknown,
        }
    }
}

/// Where in the document the reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the root element.
    Prolog,
    /// Inside FHIR elements.
    Tree,
    /// Inside the narrative `div`, this many elements deep (the `div` itself is 1).
    Narrative(usize),
    /// After the root element closed.
    Epilog,
}

/// Turns reader events into frames and frames into JSON, with an explicit stack: the depth limit
/// bounds the stack, and nothing here recurses.
pub(super) struct Converter<'a> {
    reader: NsReader<&'a [u8]>,
    /// Bytes stripped before the reader's input (the BOM), added back to every position.
    offset: usize,
    limits: &'a XmlLimits,
    elements: usize,
    phase: Phase,
    stack: Vec<Frame>,
    root: Option<Map<String, Value>>,
}

impl<'a> Converter<'a> {
    pub(super) fn new(text: &'a str, offset: usize, limits: &'a XmlLimits) -> Self {
        let mut reader = NsReader::from_str(text);
        let config = reader.config_mut();
        // `--` inside a comment makes the document ill-formed for every conformant parser.
        config.check_comments = true;
        config.check_end_names = true;
        Converter {
            reader,
            offset,
            limits,
            elements: 0,
            phase: Phase::Prolog,
            stack: Vec::new(),
            root: None,
        }
    }

    pub(super) fn run(mut self) -> Result<Value, XmlError> {
        loop {
            let position = self.position(self.reader.buffer_position());
            let (ns, event) = match self.reader.read_resolved_event() {
                Ok((resolved, event)) => (Ns::of(&resolved), event),
                Err(e) => return Err(self.reader_error(&e, position)),
            };
            if let Event::Eof = event {
                return self.finish(position);
            }
            match self.phase {
                Phase::Narrative(depth) => self.narrative_event(ns, event, position, depth)?,
                _ => self.event(ns, event, position)?,
            }
        }
    }

    fn position(&self, reader_position: u64) -> usize {
        usize::try_from(reader_position)
            .unwrap_or(usize::MAX)
            .saturating_add(self.offset)
    }

    fn reader_error(&self, error: &quick_xml::Error, event_start: usize) -> XmlError {
        match error {
            // The resolver fails on a bad declaration (rebinding `xml`, too many bindings) of
            // the element that starts at `event_start`.
            quick_xml::Error::Namespace(_) => XmlError::Namespace {
                position: event_start,
            },
            quick_xml::Error::InvalidAttr(AttrError::Duplicated(..)) => {
                XmlError::RepeatedAttribute {
                    position: event_start,
                }
            }
            quick_xml::Error::Escape(_) => XmlError::Entity {
                position: self.position(self.reader.error_position()),
            },
            _ => XmlError::Syntax {
                position: self.position(self.reader.error_position()),
            },
        }
    }

    fn finish(self, end: usize) -> Result<Value, XmlError> {
        match (self.phase, self.root) {
            (Phase::Epilog, Some(root)) => Ok(Value::Object(root)),
            (Phase::Prolog, _) => Err(XmlError::NoRoot {}),
            // The input ended inside an element.
            _ => Err(XmlError::Syntax { position: end }),
        }
    }

    /// One event outside the narrative.
    fn event(&mut self, ns: Ns, event: Event<'_>, position: usize) -> Result<(), XmlError> {
        match event {
            Event::Start(start) => self.open(ns, &start, position, false),
            Event::Empty(start) => self.open(ns, &start, position, true),
            Event::End(_) => self.close(position),
            Event::Text(text) if is_xml_whitespace(&text) => Ok(()),
            Event::Text(_) | Event::GeneralRef(_) | Event::CData(_)
                if self.phase == Phase::Epilog =>
            {
                Err(XmlError::AfterRoot { position })
            }
            Event::Text(_) | Event::GeneralRef(_) => Err(XmlError::Text { position }),
            Event::CData(_) => Err(XmlError::Cdata { position }),
            Event::Comment(_) | Event::Eof => Ok(()),
            Event::Decl(decl) if position == self.offset => check_declaration(&decl, position),
            Event::Decl(_) => Err(XmlError::Declaration { position }),
            Event::PI(_) => Err(XmlError::ProcessingInstruction { position }),
            Event::DocType(_) => Err(XmlError::Doctype { position }),
        }
    }

    /// One event inside the narrative `div`: its content never matters to the proxy (it is
    /// human-readable XHTML, and no policy or audit fact is read from it), so it is skipped, but
    /// still checked enough that no conformant parser could end the `div` elsewhere.
    fn narrative_event(
        &mut self,
        ns: Ns,
        event: Event<'_>,
        position: usize,
        depth: usize,
    ) -> Result<(), XmlError> {
        match event {
            Event::Start(start) => {
                self.count_element(depth + 1)?;
                self.check_foreign_element(ns, &start, position)?;
                self.phase = Phase::Narrative(depth + 1);
            }
            Event::Empty(start) => {
                self.count_element(depth + 1)?;
                self.check_foreign_element(ns, &start, position)?;
            }
            Event::End(_) if depth > 1 => self.phase = Phase::Narrative(depth - 1),
            Event::End(_) => {
                self.phase = Phase::Tree;
                self.attach(Child::div(position))?;
            }
            Event::GeneralRef(reference) => check_reference(&reference, position)?,
            // Conformant parsers refuse `]]>` in text; quick-xml does not.
            Event::Text(text) if text.contains("]]>") => {
                return Err(XmlError::Syntax { position });
            }
            Event::Text(_) | Event::CData(_) | Event::Comment(_) | Event::Eof => {}
            Event::Decl(_) => return Err(XmlError::Declaration { position }),
            Event::PI(_) => return Err(XmlError::ProcessingInstruction { position }),
            Event::DocType(_) => return Err(XmlError::Doctype { position }),
        }
        Ok(())
    }

    /// Counts one more element at `narrative_depth` below the top frame (0 outside the
    /// narrative) against both limits. The XML depth may exceed `max_depth` by one, because a
    /// primitive leaf is an element but no JSON level; the exact JSON depth is checked on the
    /// result.
    fn count_element(&mut self, narrative_depth: usize) -> Result<(), XmlError> {
        self.elements += 1;
        if self.elements > self.limits.max_elements {
            return Err(XmlError::TooManyElements {
                max: self.limits.max_elements,
            });
        }
        let depth = self.stack.len() + narrative_depth.max(1);
        if depth > self.limits.max_depth.saturating_add(1) {
            return Err(XmlError::TooDeep {
                max: self.limits.max_depth,
            });
        }
        Ok(())
    }

    fn open(
        &mut self,
        ns: Ns,
        start: &BytesStart<'_>,
        position: usize,
        empty: bool,
    ) -> Result<(), XmlError> {
        if self.phase == Phase::Epilog {
            return Err(XmlError::AfterRoot { position });
        }
        self.count_element(0)?;
        self.phase = Phase::Tree;
        match ns {
            Ns::Xhtml if start.local_name().into_inner() == "div" && !self.stack.is_empty() => {
                self.check_foreign_element(ns, start, position)?;
                if empty {
                    self.attach(Child::div(position))
                } else {
                    self.phase = Phase::Narrative(1);
                    Ok(())
                }
            }
            Ns::Fhir => {
                let frame = Frame::open(start, position, self.stack.is_empty())?;
                if empty {
                    self.attach(frame.close()?)
                } else {
                    self.stack.push(frame);
                    Ok(())
                }
            }
            _ => Err(XmlError::Namespace { position }),
        }
    }

    fn close(&mut self, position: usize) -> Result<(), XmlError> {
        // quick-xml pairs every end tag with its start tag, so the stack is never empty here;
        // if it were, the document would be ill-formed.
        let frame = self.stack.pop().ok_or(XmlError::Syntax { position })?;
        self.attach(frame.close()?)
    }

    /// Hands a finished element to its parent, or makes it the document's result.
    fn attach(&mut self, child: Child) -> Result<(), XmlError> {
        if let Some(parent) = self.stack.last_mut() {
            parent.children.push(child);
            return Ok(());
        }
        match child.node {
            Node::Resource(root) => {
                self.root = Some(root);
                self.phase = Phase::Epilog;
                Ok(())
            }
            // `Frame::open` makes the root a resource, so this cannot happen.
            _ => Err(XmlError::ResourceType {
                position: child.position,
            }),
        }
    }

    /// Checks an element inside (or being) the narrative for well-formedness only: a resolvable
    /// prefix, unique attributes with resolvable prefixes, and attribute values a conformant
    /// parser would accept.
    fn check_foreign_element(
        &self,
        ns: Ns,
        start: &BytesStart<'_>,
        position: usize,
    ) -> Result<(), XmlError> {
        if ns == Ns::Unknown {
            return Err(XmlError::Namespace { position });
        }
        for attribute in start.attributes() {
            let attribute = attribute.map_err(|e| attribute_error(&e, position))?;
            let (resolved, _) = self.reader.resolver().resolve_attribute(attribute.key);
            if let ResolveResult::Unknown(_) = resolved {
                return Err(XmlError::Namespace { position });
            }
            attribute_value(&attribute, position)?;
        }
        Ok(())
    }
}

/// Only whitespace as XML defines it (space, tab, CR, LF) may stand between FHIR elements.
fn is_xml_whitespace(text: &str) -> bool {
    text.bytes()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

/// The XML declaration: `version="1.0"`, then optionally `encoding` (UTF-8 only: the bytes are
/// read as UTF-8, and a server honouring another encoding would read other characters) and
/// `standalone`, in that order (<https://www.w3.org/TR/xml/#NT-XMLDecl>). XML 1.1 is refused:
/// it changes which characters and line ends are allowed.
fn check_declaration(decl: &BytesDecl<'_>, position: usize) -> Result<(), XmlError> {
    const ORDER: [&str; 3] = ["version", "encoding", "standalone"];
    let malformed = XmlError::Declaration { position };
    // The event's content is `xml` followed by pseudo-attributes.
    let content = BytesStart::from_content(&**decl, "xml".len());
    // Index in ORDER of the first key still allowed; 0 until `version` was seen.
    let mut allowed = 0;
    for attribute in content.attributes() {
        let attribute = attribute.map_err(|_| malformed.clone())?;
        let key = attribute.key.into_inner();
        let index = ORDER.iter().position(|k| *k == key);
        match index {
            Some(index) if index >= allowed && (allowed > 0 || index == 0) => allowed = index + 1,
            _ => return Err(malformed),
        }
        let value = attribute.value.as_ref();
        let valid = match key {
            "version" => value == "1.0",
            "encoding" if value.eq_ignore_ascii_case("UTF-8") => true,
            "encoding" => return Err(XmlError::Encoding {}),
            _ => matches!(value, "yes" | "no"),
        };
        if !valid {
            return Err(malformed);
        }
    }
    if allowed == 0 {
        return Err(malformed);
    }
    Ok(())
}

/// A reference in narrative text: one of the five predefined entities or a character reference
/// to an XML character. Anything else would need a DTD, which we refuse.
fn check_reference(reference: &BytesRef<'_>, position: usize) -> Result<(), XmlError> {
    let valid = match reference.resolve_char_ref() {
        Ok(Some(c)) => is_xml_char(c),
        Ok(None) => matches!(&**reference, "lt" | "gt" | "amp" | "apos" | "quot"),
        Err(_) => false,
    };
    if valid {
        Ok(())
    } else {
        Err(XmlError::Entity { position })
    }
}
