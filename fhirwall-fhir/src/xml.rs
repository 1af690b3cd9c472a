//! FHIR R4 XML request bodies, read into the shape the FHIR JSON format gives them, so the JSON
//! readers (resource type and id check, patient-reference scan, Bundle entries, operation
//! Parameters) work on XML bodies too.
//!
//! This is a security boundary: the proxy decides on what this module returns and then forwards
//! the original bytes, so anything a FHIR server could read differently from us is an error,
//! never a guess. The document must be UTF-8 XML 1.0 without a DOCTYPE (so no custom entities and
//! no XXE) or processing instructions; every element is in the FHIR namespace except the narrative
//! `div`; attributes are `value`, `id`, `url` and namespace declarations only; FHIR elements hold
//! no text. The mapping follows <http://hl7.org/fhir/R4/xml.html> and
//! <http://hl7.org/fhir/R4/json.html>:
//! - the root, and the only child of `resource`, `outcome` and `contained`, is a resource:
//!   `{"resourceType": "<Name>", ...children}`;
//! - `<x value="v"/>` is `"x": "v"`; its `id` and `extension` children go to `"_x"`;
//! - other elements are objects of their children, plus `id` and (on extensions) `url`;
//! - a name that occurs more than once among siblings, and the list names the proxy's readers
//!   index (`entry`, `parameter`, `extension`, ...: `names::ALWAYS_ARRAY`), are arrays in
//!   document order.
//!
//! Errors give byte offsets and categories only: bodies are patient records and errors reach logs
//! and audit records, so no message quotes the input.

mod element;
mod names;
mod reader;

use quick_xml::{
    XmlVersion,
    events::attributes::{AttrError, Attribute},
};
use serde_json::Value;
use thiserror::Error;

use self::reader::Converter;

/// The largest `max_depth` honoured (the configuration's own maximum): `serde_json` drops a
/// `Value` recursively, so the tree we build must stay shallow whatever the caller passes.
pub const DEPTH_CAP: usize = 100;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// What the caller allows: the proxy's JSON depth limit (so the value handed to the JSON readers
/// is no deeper than a JSON body may be) and an element budget. A `max_depth` above
/// [`DEPTH_CAP`] counts as the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XmlLimits {
    /// Deepest JSON nesting of the result, counted like the JSON body check counts it.
    pub max_depth: usize,
    /// Most elements in the document, the narrative's included.
    pub max_elements: usize,
}

/// Why an XML body was refused. `position` is a byte offset into the body as received.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum XmlError {
    #[error("XML body is not valid UTF-8 (byte {position})")]
    Utf8 { position: usize },

    #[error("XML declaration names an encoding other than UTF-8")]
    Encoding {},

    #[error("XML declaration at byte {position} is malformed, misplaced or not version 1.0")]
    Declaration { position: usize },

    #[error("XML is not well-formed at byte {position}")]
    Syntax { position: usize },

    #[error("byte {position} holds a character XML 1.0 does not allow")]
    Character { position: usize },

    #[error("XML has a DOCTYPE at byte {position} (DTDs and custom entities are refused)")]
    Doctype { position: usize },

    #[error("processing instruction at byte {position} (only the XML declaration is allowed)")]
    ProcessingInstruction { position: usize },

    #[error("CDATA section at byte {position} (FHIR elements hold no character data)")]
    Cdata { position: usize },

    #[error("character data at byte {position} (FHIR puts values in attributes, not text)")]
    Text { position: usize },

    #[error("unknown or malformed entity or character reference at byte {position}")]
    Entity { position: usize },

    #[error("element at byte {position} is not in the FHIR namespace (nor a narrative div)")]
    Namespace { position: usize },

    #[error("element at byte {position} does not have a FHIR element name")]
    Name { position: usize },

    #[error("element at byte {position} has an attribute FHIR does not define there")]
    Attribute { position: usize },

    #[error("element at byte {position} repeats an attribute")]
    RepeatedAttribute { position: usize },

    #[error("XML nests deeper than {max} levels")]
    TooDeep { max: usize },

    #[error("XML has more than {max} elements")]
    TooManyElements { max: usize },

    #[error("XML body has no root element")]
    NoRoot {},

    #[error("content after the root element at byte {position}")]
    AfterRoot { position: usize },

    #[error(
        "element at byte {position} must be an R4 resource type (type names are case-sensitive)"
    )]
    ResourceType { position: usize },

    #[error("element at byte {position} is empty (FHIR forbids empty elements)")]
    EmptyElement { position: usize },

    #[error("element at byte {position} has an empty attribute value")]
    EmptyValue { position: usize },

    #[error("element at byte {position} has an attribute value with leading or trailing space")]
    PaddedValue { position: usize },

    #[error(
        "element at byte {position} breaks the rule that a resource stands alone in resource, outcome or contained, and contained holds one"
    )]
    Container { position: usize },

    #[error("element at byte {position} mixes a primitive value with other content")]
    Primitive { position: usize },

    #[error("element at byte {position} has a name the JSON form reserves at that place")]
    ReservedName { position: usize },
}

/// Reads one FHIR R4 XML resource into its FHIR JSON shape.
///
/// Every primitive becomes a JSON string, whatever its FHIR type: telling `valueInteger` from
/// `valueString` needs the schema, and no reader in the proxy needs a number or a boolean.
///
/// # Errors
///
/// Any [`XmlError`]: the body is refused whole, never read in part.
pub fn to_json(bytes: &[u8], limits: &XmlLimits) -> Result<Value, XmlError> {
    let limits = XmlLimits {
        max_depth: limits.max_depth.min(DEPTH_CAP),
        ..*limits
    };
    let (offset, text) = decode(bytes)?;
    let value = Converter::new(text, offset, &limits).run()?;
    if json_depth(&value) > limits.max_depth {
        return Err(XmlError::TooDeep {
            max: limits.max_depth,
        });
    }
    Ok(value)
}

/// Strips a UTF-8 BOM and checks the rest is UTF-8 made only of XML 1.0 characters
/// (<https://www.w3.org/TR/xml/#charsets>). Returns the BOM's length and the text.
fn decode(bytes: &[u8]) -> Result<(usize, &str), XmlError> {
    let (offset, body) = match bytes.strip_prefix(UTF8_BOM) {
        Some(rest) => (UTF8_BOM.len(), rest),
        None => (0, bytes),
    };
    let text = std::str::from_utf8(body).map_err(|e| XmlError::Utf8 {
        position: offset + e.valid_up_to(),
    })?;
    if let Some((at, _)) = text.char_indices().find(|&(_, c)| !is_xml_char(c)) {
        return Err(XmlError::Character {
            position: offset + at,
        });
    }
    Ok((offset, text))
}

/// XML 1.0 `Char`: conformant parsers reject the C0 controls and U+FFFE/U+FFFF, quick-xml does
/// not, so we check ourselves (in the text and in expanded character references).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}')
        || c >= '\u{10000}'
}

/// JSON nesting depth as `body::check_depth` counts it (each object or array is a level),
/// computed without recursion.
fn json_depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(value, 1usize)];
    while let Some((value, depth)) = pending.pop() {
        match value {
            Value::Object(map) => pending.extend(map.values().map(|child| (child, depth + 1))),
            Value::Array(items) => pending.extend(items.iter().map(|child| (child, depth + 1))),
            _ => continue,
        }
        deepest = deepest.max(depth);
    }
    deepest
}

fn attribute_error(error: &AttrError, position: usize) -> XmlError {
    match error {
        AttrError::Duplicated(..) => XmlError::RepeatedAttribute { position },
        _ => XmlError::Syntax { position },
    }
}

/// An attribute value as a conformant parser reports it: references expanded, whitespace
/// normalized (<https://www.w3.org/TR/xml/#AVNormalize>), every character an XML character.
fn attribute_value(attribute: &Attribute<'_>, position: usize) -> Result<String, XmlError> {
    // quick-xml accepts `<` in attribute values; XML does not.
    if attribute.value.contains('<') {
        return Err(XmlError::Syntax { position });
    }
    let value = attribute
        .normalized_value(XmlVersion::Explicit1_0)
        .map_err(|_| XmlError::Entity { position })?;
    if !value.chars().all(is_xml_char) {
        return Err(XmlError::Character { position });
    }
    Ok(value.into_owned())
}

#[cfg(test)]
mod tests;
