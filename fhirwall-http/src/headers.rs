//! Header fields of a message head, kept as slices of the received bytes (no copy), with the
//! hop-by-hop rules of RFC 9110 section 7.6.1.

use bytes::{BufMut, Bytes, BytesMut};

use super::HttpError;

/// Hop-by-hop fields that never cross the proxy (RFC 9110 section 7.6.1), plus
/// `Proxy-Connection`, which some clients still send, and the framing fields, which the proxy
/// regenerates itself from the framing it validated.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// One header field line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    name: Bytes,
    value: Bytes,
}

impl Header {
    /// The field name as received (compare with [`Header::is`], names are case-insensitive).
    #[must_use]
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// The field value, without surrounding whitespace.
    #[must_use]
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    /// Whether the field is named `name` (ASCII case-insensitive, RFC 9110 section 5.1).
    #[must_use]
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }
}

/// The header fields of a head, in received order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<Header>,
}

impl Headers {
    /// All fields in order.
    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.entries.iter()
    }

    /// Number of field lines.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no field.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value of the first field named `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.entries.iter().find(|h| h.is(name)).map(Header::value)
    }

    /// The values of all fields named `name`.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.entries
            .iter()
            .filter(move |h| h.is(name))
            .map(Header::value)
    }

    /// Number of fields named `name`.
    #[must_use]
    pub fn count(&self, name: &str) -> usize {
        self.entries.iter().filter(|h| h.is(name)).count()
    }

    /// Removes every field named `name`; returns whether one was there.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|h| !h.is(name));
        before != self.entries.len()
    }

    /// Replaces every field named `name` with one field `name: value`, e.g. to swap a client's
    /// `Authorization` for the integration's own credential.
    pub fn insert(
        &mut self,
        name: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<(), HttpError> {
        let header = checked(name.into(), value.into())?;
        self.entries
            .retain(|h| !h.name.eq_ignore_ascii_case(&header.name));
        self.entries.push(header);
        Ok(())
    }

    /// Sets `Host` (which [`Headers::insert`] refuses: it is the proxy's): the proxy names the
    /// upstream it forwards to, whatever the client wrote.
    pub fn set_host(&mut self, value: &str) -> Result<(), HttpError> {
        let value = Bytes::copy_from_slice(value.as_bytes());
        if value.is_empty() || !is_field_value(&value) {
            return Err(HttpError::InvalidHeader {
                reason: "upstream authority is not a valid Host value",
            });
        }
        self.entries.retain(|h| !h.is("host"));
        self.entries.insert(
            0,
            Header {
                name: Bytes::from_static(b"Host"),
                value,
            },
        );
        Ok(())
    }

    /// Adds a field line `name: value` after the existing ones.
    pub fn append(
        &mut self,
        name: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<(), HttpError> {
        let header = checked(name.into(), value.into())?;
        self.entries.push(header);
        Ok(())
    }

    /// Adds a field the parser already validated.
    pub(crate) fn push_parsed(&mut self, name: Bytes, value: Bytes) {
        self.entries.push(Header { name, value });
    }

    /// Replaces the fields with those httparse parsed out of `bytes` (sharing its buffer).
    pub(crate) fn fill_parsed(&mut self, fields: &[httparse::Header<'_>], bytes: &Bytes) {
        self.entries.clear();
        self.entries.extend(fields.iter().map(|field| Header {
            name: bytes.slice_ref(field.name.as_bytes()),
            value: bytes.slice_ref(field.value),
        }));
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    /// Removes hop-by-hop fields (RFC 9110 section 7.6.1): the fixed list, and every field named
    /// in a `Connection` field, except `Host`, which a client must not be able to strip this way.
    pub(crate) fn strip_hop_by_hop(&mut self) {
        // `Connection: keep-alive` / `close` (the usual values) name no field to remove.
        let names_fields = self
            .get_all("connection")
            .flat_map(list_elements)
            .any(|t| !t.eq_ignore_ascii_case(b"keep-alive") && !t.eq_ignore_ascii_case(b"close"));
        if !names_fields {
            self.entries.retain(|h| !is_hop_by_hop(&h.name));
            return;
        }
        // Stable in-place compaction: the `Connection` fields stay readable (they are never moved
        // into the kept prefix) until the final truncate.
        let mut kept = 0;
        for i in 0..self.entries.len() {
            let name = &self.entries[i].name;
            let drop = is_hop_by_hop(name)
                || (!name.eq_ignore_ascii_case(b"host") && self.listed_in_connection(name));
            if !drop {
                self.entries.swap(kept, i);
                kept += 1;
            }
        }
        self.entries.truncate(kept);
    }

    fn listed_in_connection(&self, name: &[u8]) -> bool {
        self.get_all("connection")
            .flat_map(list_elements)
            .any(|token| token.eq_ignore_ascii_case(name))
    }

    /// Serializes the fields as `name: value\r\n` lines.
    pub(crate) fn write_to(&self, out: &mut BytesMut) {
        for h in &self.entries {
            out.put_slice(&h.name);
            out.put_slice(b": ");
            out.put_slice(&h.value);
            out.put_slice(b"\r\n");
        }
    }
}

fn is_hop_by_hop(name: &[u8]) -> bool {
    // Most fields are not hop-by-hop: the length check rejects them without comparing bytes.
    HOP_BY_HOP
        .iter()
        .any(|h| h.len() == name.len() && name.eq_ignore_ascii_case(h.as_bytes()))
}

fn checked(name: Bytes, value: Bytes) -> Result<Header, HttpError> {
    if !is_token(&name) {
        return Err(HttpError::InvalidHeader {
            reason: "field name is not a token",
        });
    }
    if !is_field_value(&value) {
        return Err(HttpError::InvalidHeader {
            reason: "field value has a control character",
        });
    }
    if is_hop_by_hop(&name) || name.eq_ignore_ascii_case(b"host") {
        return Err(HttpError::InvalidHeader {
            reason: "framing and hop-by-hop fields are the proxy's",
        });
    }
    Ok(Header { name, value })
}

/// `token = 1*tchar` (RFC 9110 section 5.6.2).
#[must_use]
pub fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A field value without surrounding whitespace: VCHAR, obs-text, and inner SP / HTAB
/// (RFC 9110 section 5.5).
#[must_use]
pub fn is_field_value(bytes: &[u8]) -> bool {
    let inner_ok = bytes
        .iter()
        .all(|&b| b == b'\t' || b == b' ' || (b > 0x20 && b != 0x7f));
    let trimmed = bytes.first().is_none_or(|b| !b.is_ascii_whitespace())
        && bytes.last().is_none_or(|b| !b.is_ascii_whitespace());
    inner_ok && trimmed
}

/// The non-empty elements of a comma-separated list field (RFC 9110 section 5.6.1), trimmed.
pub fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|e| !e.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(fields: &[(&'static str, &'static str)]) -> Headers {
        let mut h = Headers::default();
        for (n, v) in fields {
            h.push_parsed(
                Bytes::from_static(n.as_bytes()),
                Bytes::from_static(v.as_bytes()),
            );
        }
        h
    }

    fn names(h: &Headers) -> Vec<String> {
        h.iter()
            .map(|h| String::from_utf8_lossy(h.name()).into_owned())
            .collect()
    }

    /// Fields in, names kept.
    type Case = (
        &'static [(&'static str, &'static str)],
        &'static [&'static str],
    );

    #[test]
    fn strips_fixed_and_connection_listed_fields_but_never_host() {
        let cases: &[Case] = &[
            (&[("Host", "a"), ("Accept", "x")], &["Host", "Accept"]),
            (
                &[
                    ("Host", "a"),
                    ("Keep-Alive", "5"),
                    ("TE", "trailers"),
                    ("Upgrade", "h2c"),
                ],
                &["Host"],
            ),
            (
                &[
                    ("Connection", "x-secret, HOST"),
                    ("X-Secret", "1"),
                    ("Host", "a"),
                    ("Accept", "b"),
                ],
                &["Host", "Accept"],
            ),
            (
                &[
                    ("A", "1"),
                    ("Connection", "a"),
                    ("B", "2"),
                    ("connection", " b ,"),
                ],
                &[],
            ),
            (
                &[
                    ("Proxy-Connection", "keep-alive"),
                    ("Trailer", "x"),
                    ("C", "3"),
                ],
                &["C"],
            ),
        ];
        for (input, want) in cases {
            let mut h = headers(input);
            h.strip_hop_by_hop();
            assert_eq!(names(&h), *want, "input {input:?}");
        }
    }

    #[test]
    fn insert_replaces_and_validates() {
        let mut h = headers(&[("Authorization", "Bearer client"), ("authorization", "dup")]);
        h.insert("Authorization", "Bearer integration")
            .expect("valid field");
        assert_eq!(h.count("authorization"), 1);
        assert_eq!(h.get("AUTHORIZATION"), Some(&b"Bearer integration"[..]));
        let bad: &[(&'static str, &'static str)] = &[
            ("X-Id", "a\r\nInjected: 1"),
            ("X-Id", "a\0"),
            ("X Id", "a"),
            ("", "a"),
            ("Transfer-Encoding", "chunked"),
            ("Content-Length", "1"),
            ("Host", "elsewhere"),
            ("X-Id", " padded"),
        ];
        for (n, v) in bad {
            assert!(h.insert(*n, *v).is_err(), "{n:?}: {v:?} accepted");
        }
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn list_elements_trim_and_skip_empty() {
        let got: Vec<&[u8]> = list_elements(b" close ,, Upgrade,").collect();
        assert_eq!(got, vec![&b"close"[..], &b"Upgrade"[..]]);
    }
}
