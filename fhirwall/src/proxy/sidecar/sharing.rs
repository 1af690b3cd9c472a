//! Credentials presented by more than one identity.
//!
//! The problem fhirwall exists for is one credential shared by many processes: a credential
//! issued for one integration and quietly reused by another, or by a workload nobody
//! registered. The sidecar sees each request's credential fingerprint (never the credential)
//! and which integration the caller is; this remembers, per fingerprint, the identity that
//! first presented it, and marks it shared when another does. Ops are alerted through
//! `fhirwall_shared_credential_requests_total`; the agent's log names the identities.
//!
//! Memory is bounded: at `capacity` fingerprints, the ones not (yet) shared are forgotten so
//! that new ones can be tracked. A process flooding the sidecar with made-up credentials can
//! thus delay detection for a credential first seen just before the flood, never hide a
//! credential already known to be shared.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use fhirwall_policy::Fingerprint;

/// What one presentation of a credential tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sighting {
    /// Only this identity has presented it so far.
    Own,
    /// This presentation revealed that another identity presents it too: the one that
    /// presented it first (`None`: an unregistered workload).
    NewlyShared { first: Option<String> },
    /// Known to be presented by more than one identity.
    Shared,
}

/// The identity a credential was first seen with: an integration name, or `None` for a
/// workload no integration registers.
#[derive(Debug)]
struct First {
    identity: Option<Box<str>>,
    shared: bool,
}

#[derive(Debug, Default)]
struct Seen {
    by_fingerprint: HashMap<Fingerprint, First>,
    shared: usize,
}

/// Fingerprint -> the identity that first presented it.
#[derive(Debug)]
pub struct CredentialSharing {
    seen: Mutex<Seen>,
    capacity: usize,
}

impl Default for CredentialSharing {
    fn default() -> Self {
        Self::with_capacity(16_384)
    }
}

impl CredentialSharing {
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            seen: Mutex::new(Seen::default()),
            capacity: capacity.max(1),
        }
    }

    /// Records that `identity` presented `credential`.
    pub fn observe(&self, credential: Fingerprint, identity: Option<&str>) -> Sighting {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let seen = &mut *seen;
        if let Some(first) = seen.by_fingerprint.get_mut(&credential) {
            if first.shared {
                return Sighting::Shared;
            }
            if first.identity.as_deref() == identity {
                return Sighting::Own;
            }
            first.shared = true;
            seen.shared += 1;
            return Sighting::NewlyShared {
                first: first.identity.as_deref().map(str::to_owned),
            };
        }
        if seen.by_fingerprint.len() >= self.capacity {
            seen.by_fingerprint.retain(|_, first| first.shared);
        }
        if seen.by_fingerprint.len() < self.capacity {
            seen.by_fingerprint.insert(
                credential,
                First {
                    identity: identity.map(Into::into),
                    shared: false,
                },
            );
        }
        Sighting::Own
    }

    /// How many credentials were seen from more than one identity.
    #[must_use]
    pub fn shared(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(n: u8) -> Fingerprint {
        Fingerprint::of_authorization(format!("Bearer token-{n}").as_bytes())
    }

    fn newly(first: Option<&str>) -> Sighting {
        Sighting::NewlyShared {
            first: first.map(str::to_owned),
        }
    }

    #[test]
    fn a_credential_is_shared_once_a_second_identity_presents_it() {
        let s = CredentialSharing::default();
        let cases: [(u8, Option<&str>, Sighting); 9] = [
            (1, Some("lab"), Sighting::Own),
            (1, Some("lab"), Sighting::Own),
            (2, Some("billing"), Sighting::Own),
            (1, Some("billing"), newly(Some("lab"))),
            // From then on, every presentation is of a shared credential, the first one's too.
            (1, Some("lab"), Sighting::Shared),
            (1, Some("billing"), Sighting::Shared),
            // An unregistered workload is an identity of its own.
            (2, None, newly(Some("billing"))),
            (3, None, Sighting::Own),
            (3, Some("portal"), newly(None)),
        ];
        for (i, (n, identity, want)) in cases.into_iter().enumerate() {
            assert_eq!(s.observe(fp(n), identity), want, "case {i}");
        }
        assert_eq!(s.shared(), 3);
    }

    #[test]
    fn when_full_it_forgets_unshared_credentials_and_keeps_shared_ones() {
        let s = CredentialSharing::with_capacity(3);
        s.observe(fp(1), Some("lab"));
        s.observe(fp(1), Some("billing"));
        s.observe(fp(2), Some("lab"));
        s.observe(fp(3), Some("lab"));
        // Full: the fourth makes room by forgetting 2 and 3, never the shared 1.
        assert_eq!(s.observe(fp(4), Some("lab")), Sighting::Own);
        assert_eq!(s.observe(fp(1), Some("portal")), Sighting::Shared);
        // 2 was forgotten: its next presenter counts as the first again.
        assert_eq!(s.observe(fp(2), Some("billing")), Sighting::Own);
        assert_eq!(s.observe(fp(4), Some("billing")), newly(Some("lab")));
        assert_eq!(s.shared(), 2);
    }

    #[test]
    fn a_table_of_shared_credentials_only_stops_tracking_new_ones() {
        let s = CredentialSharing::with_capacity(1);
        s.observe(fp(1), Some("lab"));
        s.observe(fp(1), None);
        // No room: 2 is not tracked, so a second identity cannot be noticed.
        assert_eq!(s.observe(fp(2), Some("lab")), Sighting::Own);
        assert_eq!(s.observe(fp(2), Some("billing")), Sighting::Own);
        assert_eq!(s.observe(fp(1), Some("lab")), Sighting::Shared);
    }
}
