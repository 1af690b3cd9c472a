//! URLs the server handed to one integration, and only to it: paging links (`next`,
//! `previous`, `self`, ...) of the Bundles it returned, and a bulk export's status and file
//! URLs. A continuation names no search the policy could decide on (HAPI's
//! `?_getpages=<id>` returns whatever that stored search holds), so it may be followed only
//! by the integration whose request the server answered with it, and what it returns is
//! checked as that first page was. Any other integration, or an unregistered workload, that
//! presents the URL is refused.
//!
//! Bounded and expiring: at most `capacity` URLs, the least recently issued forgotten first;
//! paging links live an hour, export URLs a day (servers keep results about that long).
//! A forgotten link is refused like a foreign one: the integration searches again.

use std::{
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use fhirwall_fhir::response::PatientRule;
use lru::LruCache;

/// What a bound URL is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoundKind {
    /// A paging link: its answer is a Bundle page.
    Page,
    /// A bulk export's status URL (`Content-Location` of the kick-off): its answer is the
    /// manifest.
    ExportStatus,
    /// A bulk export output or error file: NDJSON.
    ExportFile,
}

/// The integration a URL was issued to, and what its answer may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    pub integration: String,
    pub kind: BoundKind,
    /// Whose data the first answer was held to: the continuation is held to the same.
    pub patients: PatientRule,
}

#[derive(Debug)]
struct Entry {
    bound: Bound,
    expires: Instant,
}

/// Upstream and normalized URL -> what it was issued for.
#[derive(Debug)]
pub struct Bindings {
    urls: Mutex<LruCache<(String, String), Entry>>,
}

const PAGE_LIFE: Duration = Duration::from_hours(1);
const EXPORT_LIFE: Duration = Duration::from_hours(24);

impl Default for Bindings {
    fn default() -> Self {
        Self::with_capacity(65_536)
    }
}

impl Bindings {
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = std::num::NonZeroUsize::new(capacity).unwrap_or(std::num::NonZeroUsize::MIN);
        Self {
            urls: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// Remembers that `url` (absolute, or origin-form) was issued on `upstream`.
    pub fn issue(&self, upstream: &str, url: &str, bound: Bound, now: Instant) {
        let Some(key) = key(url) else {
            return;
        };
        let life = match bound.kind {
            BoundKind::Page => PAGE_LIFE,
            BoundKind::ExportStatus | BoundKind::ExportFile => EXPORT_LIFE,
        };
        let entry = Entry {
            bound,
            expires: now + life,
        };
        self.lock().put((upstream.to_owned(), key), entry);
    }

    /// What `target` (a request's origin-form target) was issued for on `upstream`, if it was
    /// and has not expired.
    pub fn find(&self, upstream: &str, target: &str, now: Instant) -> Option<Bound> {
        let key = (upstream.to_owned(), key(target)?);
        let mut urls = self.lock();
        let live = urls
            .get(&key)
            .filter(|e| e.expires > now)
            .map(|e| e.bound.clone());
        if live.is_none() {
            urls.pop(&key);
        }
        live
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<(String, String), Entry>> {
        self.urls.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The URL as the server will read it: path segments and query pairs percent-decoded (one
/// client writes `|` where another sends `%7C`), scheme and authority left out (the upstream
/// is part of the key). `None` for what is not a URL.
fn key(url: &str) -> Option<String> {
    let rest = if url.starts_with('/') {
        url
    } else {
        let (_, after) = url.split_once("://")?;
        &after[after.find('/')?..]
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut out = decode(path.as_bytes(), false)?;
    let mut pairs: Vec<String> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(name.as_bytes(), true)?;
        let value = decode(value.as_bytes(), true)?;
        pairs.push(format!("{}={}", escape(&name), escape(&value)));
    }
    if !pairs.is_empty() {
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    Some(out)
}

/// Percent-decoding (and `+` as a space in query pairs); malformed escapes make no key.
fn decode(raw: &[u8], form: bool) -> Option<String> {
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match b {
            b'%' => {
                let hex = std::str::from_utf8(raw.get(i + 1..i + 3)?).ok()?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if form => {
                bytes.push(b' ');
                i += 1;
            }
            _ => {
                bytes.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(bytes).ok()
}

/// Keeps decoded `&` and `=` from merging pairs in the key.
fn escape(s: &str) -> String {
    s.replace('%', "%25")
        .replace('&', "%26")
        .replace('=', "%3D")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(integration: &str) -> Bound {
        Bound {
            integration: integration.into(),
            kind: BoundKind::Page,
            patients: PatientRule::Any,
        }
    }

    #[test]
    fn a_link_is_found_however_the_client_encodes_it() {
        let b = Bindings::default();
        let now = Instant::now();
        b.issue(
            "ehr",
            "https://ehr.example:8443/Observation?code=http://loinc.org|2345-7&_cursor=abc",
            page("lab"),
            now,
        );
        for target in [
            "/Observation?code=http://loinc.org|2345-7&_cursor=abc",
            "/Observation?code=http%3A%2F%2Floinc.org%7C2345-7&_cursor=abc",
        ] {
            assert_eq!(b.find("ehr", target, now), Some(page("lab")), "{target}");
        }
        for other in [
            "/Observation?code=http://loinc.org|2345-7&_cursor=abd",
            "/Observation?_cursor=abc&code=http://loinc.org|2345-7",
            "/Condition?code=http://loinc.org|2345-7&_cursor=abc",
        ] {
            assert_eq!(b.find("ehr", other, now), None, "{other}");
        }
        assert_eq!(
            b.find(
                "other-upstream",
                "/Observation?code=http://loinc.org|2345-7&_cursor=abc",
                now
            ),
            None
        );
    }

    #[test]
    fn links_expire_and_the_table_is_bounded() {
        let b = Bindings::with_capacity(2);
        let now = Instant::now();
        b.issue("ehr", "/A?_cursor=1", page("x"), now);
        assert!(b.find("ehr", "/A?_cursor=1", now + PAGE_LIFE).is_none());
        b.issue("ehr", "/A?_cursor=1", page("x"), now);
        b.issue("ehr", "/A?_cursor=2", page("x"), now);
        b.issue("ehr", "/A?_cursor=3", page("x"), now);
        assert!(
            b.find("ehr", "/A?_cursor=1", now).is_none(),
            "the oldest went"
        );
        assert!(b.find("ehr", "/A?_cursor=3", now).is_some());
        assert!(key("not a url").is_none());
        assert!(key("/x?a=%zz").is_none());
    }
}
