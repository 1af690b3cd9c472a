//! One FHIR element and its JSON form: which attributes it may carry, and how its children
//! become keys (primitives and their `_name`, repeats as arrays, resources unwrapped from their
//! containers).

use std::collections::BTreeMap;

use quick_xml::events::{BytesStart, attributes::Attribute};
use serde_json::{Map, Value};

use super::{
    XmlError, attribute_error, attribute_value,
    names::{ALWAYS_ARRAY, CONTAINERS, is_element_name, is_prefix, is_resource_type},
};

/// One FHIR element being read.
#[derive(Debug)]
pub(super) struct Frame {
    name: String,
    resource: bool,
    position: usize,
    attributes: Attributes,
    pub(super) children: Vec<Child>,
}

/// The attributes FHIR defines (<http://hl7.org/fhir/R4/xml.html>): the primitive `value`,
/// `Element.id`, and `Extension.url`.
#[derive(Debug, Default)]
struct Attributes {
    value: Option<String>,
    id: Option<String>,
    url: Option<String>,
}

/// A finished element, named as its parent holds it.
#[derive(Debug)]
pub(super) struct Child {
    name: String,
    pub(super) node: Node,
    pub(super) position: usize,
}

impl Child {
    pub(super) fn div(position: usize) -> Child {
        Child {
            name: "div".to_owned(),
            node: Node::Div,
            position,
        }
    }
}

#[derive(Debug)]
pub(super) enum Node {
    /// An element with a `value` attribute, and what goes to `"_name"` (`id`, `extension`).
    Primitive {
        value: String,
        meta: Option<Map<String, Value>>,
    },
    /// An element without `value`. `meta_only` when it has nothing but `id` and `extension`:
    /// then it may also be a primitive without a value, which only its siblings can tell.
    Object {
        map: Map<String, Value>,
        meta_only: bool,
    },
    /// A resource element, until its container unwraps it.
    Resource(Map<String, Value>),
    /// The narrative `div`, skipped by the reader and mapped to `""`: its XHTML is for people,
    /// and no policy or audit fact is read from it.
    Div,
}

impl Frame {
    pub(super) fn open(
        start: &BytesStart<'_>,
        position: usize,
        root: bool,
    ) -> Result<Frame, XmlError> {
        let name = start.name();
        let (local, prefix) = name.decompose();
        if prefix.is_some_and(|p| !is_prefix(p.into_inner())) {
            return Err(XmlError::Name { position });
        }
        let local = local.into_inner();
        let resource = local.starts_with(|c: char| c.is_ascii_uppercase());
        if (resource && !is_resource_type(local)) || (root && !resource) {
            return Err(XmlError::ResourceType { position });
        }
        if !is_element_name(local) {
            return Err(XmlError::Name { position });
        }
        // Narrative.div is XHTML; R4 has no FHIR element of that name.
        if local == "div" {
            return Err(XmlError::Namespace { position });
        }
        let attributes = read_attributes(start, position)?;
        check_attributes(&attributes, local, resource, position)?;
        Ok(Frame {
            name: local.to_owned(),
            resource,
            position,
            attributes,
            children: Vec::new(),
        })
    }

    pub(super) fn close(self) -> Result<Child, XmlError> {
        let name = self.name.clone();
        let position = self.position;
        let node = if self.resource {
            Node::Resource(self.into_resource()?)
        } else if self.attributes.value.is_some() {
            self.into_primitive()?
        } else if let Some(resource) = self.children.iter().find(|c| is_resource(&c.node)) {
            let position = resource.position;
            self.into_container(position)?
        } else {
            self.into_object()?
        };
        Ok(Child {
            name,
            node,
            position,
        })
    }

    fn into_resource(self) -> Result<Map<String, Value>, XmlError> {
        let mut map = Map::new();
        map.insert("resourceType".to_owned(), Value::String(self.name.clone()));
        insert_children(&mut map, &self.name, true, self.children)?;
        Ok(map)
    }

    /// `"name": "value"`, with `id` and `extension` children kept for `"_name"`. Element
    /// (the base of every primitive type) has no other children.
    fn into_primitive(self) -> Result<Node, XmlError> {
        let mut extensions = Vec::new();
        for child in self.children {
            match child.node {
                Node::Object { map, .. } if child.name == "extension" => {
                    extensions.push(Value::Object(map));
                }
                _ => {
                    return Err(XmlError::Primitive {
                        position: child.position,
                    });
                }
            }
        }
        let mut meta = Map::new();
        if let Some(id) = self.attributes.id {
            meta.insert("id".to_owned(), Value::String(id));
        }
        if !extensions.is_empty() {
            meta.insert("extension".to_owned(), Value::Array(extensions));
        }
        Ok(Node::Primitive {
            // `close` only calls this when there is a value.
            value: self.attributes.value.unwrap_or_default(),
            meta: (!meta.is_empty()).then_some(meta),
        })
    }

    /// An element holding a resource is that resource in JSON (`"resource": {"resourceType":
    /// ...}`), so it must hold nothing else and carry no attributes.
    fn into_container(mut self, position: usize) -> Result<Node, XmlError> {
        let attributes = &self.attributes;
        let plain = attributes.id.is_none() && attributes.url.is_none();
        if !CONTAINERS.contains(&self.name.as_str()) || !plain || self.children.len() != 1 {
            return Err(XmlError::Container { position });
        }
        match self.children.pop().map(|child| child.node) {
            Some(Node::Resource(map)) => Ok(Node::Object {
                map,
                meta_only: false,
            }),
            _ => Err(XmlError::Container { position }),
        }
    }

    fn into_object(self) -> Result<Node, XmlError> {
        let position = self.position;
        // R4 `contained` is always a resource.
        if self.name == "contained" {
            return Err(XmlError::Container { position });
        }
        let Attributes { id, url, .. } = self.attributes;
        if self.children.is_empty() && id.is_none() && url.is_none() {
            return Err(XmlError::EmptyElement { position });
        }
        let mut map = Map::new();
        if let Some(id) = id {
            map.insert("id".to_owned(), Value::String(id));
        }
        if let Some(url) = url {
            map.insert("url".to_owned(), Value::String(url));
        }
        insert_children(&mut map, &self.name, false, self.children)?;
        let meta_only = map.keys().all(|k| k == "id" || k == "extension");
        Ok(Node::Object { map, meta_only })
    }
}

fn is_resource(node: &Node) -> bool {
    matches!(node, Node::Resource(_))
}

/// A FHIR attribute value: not empty (<http://hl7.org/fhir/R4/xml.html>: no empty values), and
/// without leading or trailing whitespace. R4 says such whitespace "SHOULD be removed when using
/// the XML format" (<http://hl7.org/fhir/R4/datatypes.html#string>), so a server may trim
/// `" Patient/1"` while our readers would compare it as it stands.
fn fhir_value(attribute: &Attribute<'_>, position: usize) -> Result<String, XmlError> {
    let value = attribute_value(attribute, position)?;
    if value.is_empty() {
        return Err(XmlError::EmptyValue { position });
    }
    let padding = |c: char| c.is_whitespace() || c == '\u{FEFF}';
    if value.starts_with(padding) || value.ends_with(padding) {
        return Err(XmlError::PaddedValue { position });
    }
    Ok(value)
}

fn read_attributes(start: &BytesStart<'_>, position: usize) -> Result<Attributes, XmlError> {
    let mut attributes = Attributes::default();
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|e| attribute_error(&e, position))?;
        let key = attribute.key.into_inner();
        let slot = match key {
            "value" => &mut attributes.value,
            "id" => &mut attributes.id,
            "url" => &mut attributes.url,
            _ if is_declaration(key) => {
                // The reader resolved names with the raw value; a raw value equal to a namespace
                // we accept has nothing to expand, so a conformant parser reads the same one.
                // Checked only for well-formedness.
                attribute_value(&attribute, position)?;
                continue;
            }
            _ => return Err(XmlError::Attribute { position }),
        };
        *slot = Some(fhir_value(&attribute, position)?);
    }
    Ok(attributes)
}

/// `xmlns` or `xmlns:prefix`, with an ASCII prefix.
fn is_declaration(key: &str) -> bool {
    key == "xmlns" || key.strip_prefix("xmlns:").is_some_and(is_prefix)
}

/// Where each attribute may stand: resources carry none (`Resource.id` is an element), `url`
/// only on extensions, `value` never on the complex [`ALWAYS_ARRAY`] elements.
fn check_attributes(
    attributes: &Attributes,
    name: &str,
    resource: bool,
    position: usize,
) -> Result<(), XmlError> {
    let extension = matches!(name, "extension" | "modifierExtension");
    let misplaced = if resource {
        attributes.value.is_some() || attributes.id.is_some() || attributes.url.is_some()
    } else {
        (attributes.url.is_some() && !extension)
            || (attributes.value.is_some() && ALWAYS_ARRAY.contains(&name))
    };
    if misplaced {
        return Err(XmlError::Attribute { position });
    }
    Ok(())
}

/// Adds the children of `parent` to its JSON object, one key per element name.
fn insert_children(
    map: &mut Map<String, Value>,
    parent: &str,
    parent_is_resource: bool,
    children: Vec<Child>,
) -> Result<(), XmlError> {
    let mut groups: BTreeMap<String, Vec<Child>> = BTreeMap::new();
    for child in children {
        groups.entry(child.name.clone()).or_default().push(child);
    }
    for (name, members) in groups {
        let position = members.first().map_or(0, |c| c.position);
        if is_reserved(&name, parent, parent_is_resource) || map.contains_key(&name) {
            return Err(XmlError::ReservedName { position });
        }
        if members
            .iter()
            .any(|c| matches!(c.node, Node::Primitive { .. }))
        {
            insert_primitives(map, name, members)?;
        } else {
            insert_objects(map, name, members)?;
        }
    }
    Ok(())
}

/// Child names whose JSON key means something else at that place: `resourceType` names the type
/// of a resource object (R4's only element of that name is `ExampleScenario.instance
/// .resourceType`), `id` is `Element.id` (an attribute in XML) except directly in a resource, and
/// `url` is the extension's own attribute.
fn is_reserved(name: &str, parent: &str, parent_is_resource: bool) -> bool {
    match name {
        "resourceType" => parent_is_resource || parent != "instance",
        "id" => !parent_is_resource,
        "url" => matches!(parent, "extension" | "modifierExtension"),
        _ => false,
    }
}

/// Siblings of one name where at least one has a value, as the JSON format writes primitives:
/// `"name": value` and `"_name": {id, extension}`, or for several, parallel arrays with `null`
/// where a member has no value or no metadata (<http://hl7.org/fhir/R4/json.html#primitive>).
fn insert_primitives(
    map: &mut Map<String, Value>,
    name: String,
    members: Vec<Child>,
) -> Result<(), XmlError> {
    let mut values = Vec::with_capacity(members.len());
    let mut metas = Vec::with_capacity(members.len());
    for child in members {
        match child.node {
            Node::Primitive { value, meta } => {
                values.push(Value::String(value));
                metas.push(meta.map_or(Value::Null, Value::Object));
            }
            Node::Object {
                map,
                meta_only: true,
            } => {
                values.push(Value::Null);
                metas.push(Value::Object(map));
            }
            _ => {
                return Err(XmlError::Primitive {
                    position: child.position,
                });
            }
        }
    }
    let has_meta = metas.iter().any(|m| !m.is_null());
    let (value, meta) = match (values.pop(), metas.pop()) {
        (Some(value), Some(meta)) if values.is_empty() => (value, meta),
        (value, meta) => {
            values.extend(value);
            metas.extend(meta);
            (Value::Array(values), Value::Array(metas))
        }
    };
    if has_meta {
        map.insert(format!("_{name}"), meta);
    }
    map.insert(name, value);
    Ok(())
}

/// Siblings of one name without values: one object, or an array when the name repeats (wherever
/// the repeats stand) or is in [`ALWAYS_ARRAY`].
fn insert_objects(
    map: &mut Map<String, Value>,
    name: String,
    members: Vec<Child>,
) -> Result<(), XmlError> {
    let mut values = Vec::with_capacity(members.len());
    for child in members {
        values.push(match child.node {
            Node::Object { map, .. } => Value::Object(map),
            Node::Div => Value::String(String::new()),
            // A resource outside a container (a container unwraps its resource).
            Node::Resource(_) => {
                return Err(XmlError::Container {
                    position: child.position,
                });
            }
            // `insert_children` sends groups with a primitive to `insert_primitives`.
            Node::Primitive { .. } => {
                return Err(XmlError::Primitive {
                    position: child.position,
                });
            }
        });
    }
    let value = match values.pop() {
        Some(value) if values.is_empty() && !ALWAYS_ARRAY.contains(&name.as_str()) => value,
        last => {
            values.extend(last);
            Value::Array(values)
        }
    };
    map.insert(name, value);
    Ok(())
}
