//! FHIR names: element and prefix syntax, the R4 resource types, and the element names the
//! mapping treats specially.

/// Names that are JSON arrays even when they occur once: the proxy's readers index them as lists
/// (Bundle entries, operation parameters, extensions, codings), and all are 0..* in R4.
pub(super) const ALWAYS_ARRAY: &[&str] = &[
    "coding",
    "contained",
    "entry",
    "extension",
    "link",
    "modifierExtension",
    "parameter",
    "part",
];

/// The R4 elements of type `Resource`: `Bundle.entry.resource`, `Bundle.entry.response.outcome`,
/// `Parameters.parameter(.part).resource` and `DomainResource.contained`. Only these may hold a
/// resource element.
pub(super) const CONTAINERS: &[&str] = &["contained", "outcome", "resource"];

/// FHIR element names are ASCII letters and digits starting with a letter (datatype and backbone
/// children `lowerCamel`, resources `UpperCamel`: which is why an `UpperCamel` child can only be
/// a resource). Anything else is no FHIR element, whatever an XML parser allows.
pub(super) fn is_element_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A namespace prefix limited to ASCII `NCName` characters
/// (<https://www.w3.org/TR/xml-names/#NT-Prefix>).
pub(super) fn is_prefix(prefix: &str) -> bool {
    prefix.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

pub(super) fn is_resource_type(name: &str) -> bool {
    crate::ResourceType::parse(name).is_some()
}
