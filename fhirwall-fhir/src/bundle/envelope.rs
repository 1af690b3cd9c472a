//! One streaming pass over a Bundle: `resourceType`, `type`, and `entry` (as JSON values, at
//! most `max_entries` of them). A hand-written visitor rather than `#[derive(Deserialize)]`
//! because the entry limit is runtime configuration, and because derive would also accept a JSON
//! array in place of the object.

use std::{cell::Cell, fmt};

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::{ClassifyError, body};

/// The parts of a Bundle the classifier reads.
#[derive(Debug, Default)]
pub(super) struct Envelope {
    pub resource_type: Option<String>,
    pub kind: Option<String>,
    pub entries: Vec<Value>,
}

/// Parses `bytes` (depth-checked first). More than `max_entries` entries is
/// [`ClassifyError::TooManyEntries`]; anything that is not a JSON object is
/// [`ClassifyError::NotBatchOrTransaction`].
pub(super) fn parse(
    bytes: &[u8],
    max_depth: usize,
    max_entries: usize,
) -> Result<Envelope, ClassifyError> {
    body::check_depth(bytes, max_depth)?;
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(ClassifyError::NotBatchOrTransaction {});
    }
    let over_limit = Cell::new(false);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = EnvelopeSeed {
        max_entries,
        over_limit: &over_limit,
    }
    .deserialize(&mut deserializer)
    .and_then(|envelope| deserializer.end().map(|()| envelope));
    match parsed {
        Ok(envelope) => Ok(envelope),
        // The visitor's own error, not a JSON problem.
        Err(_) if over_limit.get() => Err(ClassifyError::TooManyEntries { max: max_entries }),
        Err(e) => Err(body::json_error(&e)),
    }
}

struct EnvelopeSeed<'a> {
    max_entries: usize,
    over_limit: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for EnvelopeSeed<'_> {
    type Value = Envelope;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Envelope, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EnvelopeSeed<'_> {
    type Value = Envelope;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Bundle object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope, A::Error> {
        let mut out = Envelope::default();
        let mut seen_entry = false;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "resourceType" => {
                    set_once(&mut out.resource_type, map.next_value()?, "resourceType")?;
                }
                "type" => set_once(&mut out.kind, map.next_value()?, "type")?,
                "entry" => {
                    if seen_entry {
                        return Err(de::Error::duplicate_field("entry"));
                    }
                    seen_entry = true;
                    let seed = EntriesSeed {
                        max_entries: self.max_entries,
                        over_limit: self.over_limit,
                    };
                    out.entries = map.next_value_seed(seed)?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

/// A repeated key is ambiguous (servers differ on which one wins), so it is an error.
fn set_once<E: de::Error>(
    slot: &mut Option<String>,
    value: String,
    field: &'static str,
) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(field));
    }
    *slot = Some(value);
    Ok(())
}

struct EntriesSeed<'a> {
    max_entries: usize,
    over_limit: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for EntriesSeed<'_> {
    type Value = Vec<Value>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<Value>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EntriesSeed<'_> {
    type Value = Vec<Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of Bundle entries")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Value>, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = seq.next_element::<Value>()? {
            if entries.len() == self.max_entries {
                self.over_limit.set(true);
                return Err(de::Error::custom("too many entries"));
            }
            entries.push(entry);
        }
        Ok(entries)
    }
}
