//! Leaf certificates per server name, minted by the [`LocalCa`] on first use and kept in a bounded
//! LRU until shortly before they expire, so a handshake normally finds its certificate in the
//! cache. Concurrent first requests for one name wait for a single mint. Only the protected
//! upstreams' names and addresses get a leaf ([`LeafCache::serve`]): any other server name fails
//! its handshake at once, without minting, and is counted.

use std::{
    collections::HashSet,
    fmt,
    num::NonZeroUsize,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use lru::LruCache;
use rustls::{
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tracing::warn;

use super::{LeafName, LocalCa, TlsError};

/// How leaves are minted and kept.
#[derive(Clone, Copy, Debug)]
pub struct LeafPolicy {
    /// Validity of a new leaf (capped at the CA's expiry).
    pub validity: Duration,
    /// A cached leaf is replaced once it has less than this left.
    pub renew_before: Duration,
    /// Names kept; the least recently used go first. Bounds what a client sending random SNI
    /// values can make the sidecar hold.
    pub capacity: NonZeroUsize,
    /// Leaves minted at most in a burst, and per second after it (new names and renewals).
    /// Bounds the signing work a client sending random SNI values can make the data plane
    /// do; names already cached are served either way.
    pub mint_burst: u32,
    pub mints_per_second: u32,
}

impl Default for LeafPolicy {
    fn default() -> Self {
        Self {
            validity: Duration::from_hours(7 * 24),
            renew_before: Duration::from_hours(2 * 24),
            capacity: NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN),
            mint_burst: 64,
            mints_per_second: 16,
        }
    }
}

/// A token bucket for mints.
#[derive(Debug)]
struct MintBudget {
    tokens: f64,
    at: Instant,
}

impl MintBudget {
    fn take(&mut self, policy: &LeafPolicy, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * f64::from(policy.mints_per_second))
            .min(f64::from(policy.mint_burst));
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// The names served, addresses and DNS names apart.
#[derive(Default)]
struct Served {
    ips: HashSet<std::net::IpAddr>,
    dns: HashSet<String>,
}

/// A minted leaf ready for rustls, and when to replace it.
struct Minted {
    key: Arc<CertifiedKey>,
    renew_at: SystemTime,
}

/// One name's leaf. Its own lock makes concurrent first requests (and renewals) mint once: the
/// first holder mints, the others wait and take its result.
#[derive(Default)]
struct Slot(Mutex<Option<Minted>>);

/// Leaves per name, minted on demand.
pub struct LeafCache {
    /// Replaced whole when the CA is rotated.
    ca: RwLock<Arc<LocalCa>>,
    provider: Arc<CryptoProvider>,
    policy: LeafPolicy,
    slots: Mutex<LruCache<LeafName, Arc<Slot>>>,
    mints: AtomicU64,
    budget: Mutex<MintBudget>,
    refused: AtomicU64,
    /// The names asked to be served, kept to apply again to a rotated CA's constraints.
    wanted: Mutex<Vec<LeafName>>,
    /// The names a leaf may be minted for: the wanted ones the CA covers.
    served: RwLock<Served>,
    /// Handshakes refused because they asked for another name.
    unserved: AtomicU64,
}

impl fmt::Debug for LeafCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeafCache")
            .field("policy", &self.policy)
            .field("mints", &self.mints())
            .finish_non_exhaustive()
    }
}

impl LeafCache {
    /// A cache minting from `ca`; `provider` loads the leaf keys (the ring provider).
    #[must_use]
    pub fn new(ca: Arc<LocalCa>, provider: Arc<CryptoProvider>, policy: LeafPolicy) -> Self {
        Self {
            ca: RwLock::new(ca),
            provider,
            slots: Mutex::new(LruCache::new(policy.capacity)),
            budget: Mutex::new(MintBudget {
                tokens: f64::from(policy.mint_burst),
                at: Instant::now(),
            }),
            policy,
            mints: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            wanted: Mutex::new(Vec::new()),
            served: RwLock::new(Served::default()),
            unserved: AtomicU64::new(0),
        }
    }

    /// Mints from `ca` from now on (a rotated node CA), dropping every leaf of the old one, and
    /// serves the names it covers of those last asked for; returns the rest, as
    /// [`serve`](Self::serve) does.
    pub fn replace_ca(&self, ca: LocalCa) -> Vec<LeafName> {
        *self.ca.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(ca);
        lock(&self.slots).clear();
        let wanted = lock(&self.wanted).clone();
        self.serve(wanted)
    }

    /// Serves exactly `names` from now on (the protected upstreams' DNS names and addresses);
    /// until the first call, none. Returns those the CA's name constraints do not cover: they
    /// are left out (a client checking the constraints would refuse their leaf anyway) until
    /// the CA is rotated.
    pub fn serve(&self, names: impl IntoIterator<Item = LeafName>) -> Vec<LeafName> {
        let names: Vec<LeafName> = names.into_iter().collect();
        lock(&self.wanted).clone_from(&names);
        let ca = self.ca();
        let (covered, uncovered): (Vec<_>, Vec<_>) =
            names.into_iter().partition(|name| ca.scope().covers(name));
        let mut served = Served::default();
        for name in covered {
            match name {
                LeafName::Dns(dns) => served.dns.insert(dns),
                LeafName::Ip(ip) => served.ips.insert(ip),
                LeafName::IpWithHost(ip, dns) => served.ips.insert(ip) | served.dns.insert(dns),
            };
        }
        *self.served.write().unwrap_or_else(PoisonError::into_inner) = served;
        uncovered
    }

    /// Handshakes refused for a server name no protected upstream has.
    #[must_use]
    pub fn unserved_names(&self) -> u64 {
        self.unserved.load(Ordering::Relaxed)
    }

    /// Checked at every handshake: lookups only, nothing allocated.
    fn serves(&self, name: &LeafName) -> bool {
        let served = self.served.read().unwrap_or_else(PoisonError::into_inner);
        match name {
            LeafName::Dns(dns) => served.dns.contains(dns.as_str()),
            LeafName::Ip(ip) => served.ips.contains(ip),
            LeafName::IpWithHost(ip, dns) => {
                served.ips.contains(ip) && served.dns.contains(dns.as_str())
            }
        }
    }

    /// The leaf for `name`: cached, or minted now.
    pub fn get(&self, name: &LeafName) -> Result<Arc<CertifiedKey>, TlsError> {
        self.get_at(name, SystemTime::now())
    }

    /// Leaves minted so far (a cache miss or a renewal each).
    #[must_use]
    pub fn mints(&self) -> u64 {
        self.mints.load(Ordering::Relaxed)
    }

    /// Mints refused because the rate was exceeded.
    #[must_use]
    pub fn refused_mints(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The CA the leaves come from now.
    #[must_use]
    pub fn ca(&self) -> Arc<LocalCa> {
        Arc::clone(&self.ca.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// [`get`](Self::get) as of `now`: tests move the clock to see renewal.
    pub(super) fn get_at(
        &self,
        name: &LeafName,
        now: SystemTime,
    ) -> Result<Arc<CertifiedKey>, TlsError> {
        if !self.serves(name) {
            self.unserved.fetch_add(1, Ordering::Relaxed);
            return Err(TlsError::NotServed { name: name.clone() });
        }
        let slot = self.slot(name);
        let mut minted = lock(&slot.0);
        if let Some(m) = minted.as_ref().filter(|m| now < m.renew_at) {
            return Ok(Arc::clone(&m.key));
        }
        if !lock(&self.budget).take(&self.policy, Instant::now()) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            // A leaf due for renewal but still valid keeps serving until a token is free.
            if let Some(m) = minted.as_ref() {
                return Ok(Arc::clone(&m.key));
            }
            return Err(TlsError::MintRateExceeded);
        }
        let fresh = self.mint(name, now)?;
        let key = Arc::clone(&fresh.key);
        *minted = Some(fresh);
        Ok(key)
    }

    fn slot(&self, name: &LeafName) -> Arc<Slot> {
        let mut slots = lock(&self.slots);
        if let Some(slot) = slots.get(name) {
            return Arc::clone(slot);
        }
        let slot = Arc::new(Slot::default());
        slots.put(name.clone(), Arc::clone(&slot));
        slot
    }

    fn mint(&self, name: &LeafName, now: SystemTime) -> Result<Minted, TlsError> {
        let leaf = self.ca().mint(name, self.policy.validity, now)?;
        self.mints.fetch_add(1, Ordering::Relaxed);
        let signing_key = self
            .provider
            .key_provider
            .load_private_key(leaf.key.into())
            .map_err(|source| TlsError::Rustls {
                what: "a leaf key",
                source,
            })?;
        let renew_at = leaf
            .not_after
            .checked_sub(self.policy.renew_before)
            .unwrap_or(now);
        Ok(Minted {
            key: Arc::new(CertifiedKey::new(vec![leaf.cert], signing_key)),
            // A leaf capped by a CA close to expiry is re-minted at most once a minute rather
            // than on every handshake.
            renew_at: renew_at.max(now + Duration::from_mins(1)),
        })
    }
}

/// Both locks guard plain values replaced whole; a panic elsewhere cannot leave them half
/// written, so a poisoned lock is used as is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Picks the leaf for the client's SNI, or for `fallback` when the client sent none.
#[derive(Debug)]
pub struct SniResolver {
    leaves: Arc<LeafCache>,
    fallback: Option<LeafName>,
}

impl SniResolver {
    /// A resolver over `leaves`; without `fallback`, a client without SNI is refused.
    #[must_use]
    pub fn new(leaves: Arc<LeafCache>, fallback: Option<LeafName>) -> Self {
        Self { leaves, fallback }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = match hello.server_name() {
            // rustls has already checked the SNI is a DNS name; parse only normalises it.
            Some(sni) => LeafName::parse(sni).ok()?,
            None => self.fallback.clone()?,
        };
        match self.leaves.get(&name) {
            Ok(key) => Some(key),
            // Counted by the cache; a flood of these must not flood the log too.
            Err(TlsError::MintRateExceeded | TlsError::NotServed { .. }) => None,
            Err(e) => {
                // No certificate: rustls aborts the handshake with an alert.
                warn!(error = %e, %name, "no leaf certificate for the client");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Barrier, thread};

    use super::*;
    use crate::proxy::tls::CaSpec;

    /// A cache serving the names these tests ask for.
    fn cache(dir: &std::path::Path, policy: LeafPolicy) -> LeafCache {
        let (ca, _) = LocalCa::init(dir, &CaSpec::new("test")).expect("init");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let leaves = LeafCache::new(Arc::new(ca), provider, policy);
        let names = ["fhir.ehr.example", "10.0.0.1", "flood.example", "a.example"]
            .into_iter()
            .map(str::to_owned)
            .chain(["b", "c", "n0", "n1", "n2", "n3", "n4"].map(|n| format!("{n}.example")));
        leaves.serve(names.map(|n| LeafName::parse(&n).expect("name")));
        leaves
    }

    #[test]
    fn only_served_names_get_a_leaf_and_others_are_refused_without_minting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let leaves = cache(dir.path(), LeafPolicy::default());
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
        for unserved in [
            LeafName::parse("evil.example").expect("name"),
            LeafName::parse("sub.fhir.ehr.example").expect("name"),
            LeafName::Ip(ip("10.0.0.2")),
            LeafName::IpWithHost(ip("10.0.0.1"), "evil.example".into()),
            LeafName::IpWithHost(ip("10.0.0.2"), "fhir.ehr.example".into()),
        ] {
            assert!(
                matches!(leaves.get(&unserved), Err(TlsError::NotServed { .. })),
                "{unserved}"
            );
        }
        assert_eq!((leaves.mints(), leaves.unserved_names()), (0, 5));
        leaves
            .get(&LeafName::IpWithHost(
                ip("10.0.0.1"),
                "fhir.ehr.example".into(),
            ))
            .expect("an address and name of a protected upstream");
        assert_eq!(leaves.mints(), 1);
        // A reload that drops a name stops serving it.
        leaves.serve([LeafName::Ip(ip("10.0.0.1"))]);
        assert!(matches!(
            leaves.get(&LeafName::parse("fhir.ehr.example").expect("name")),
            Err(TlsError::NotServed { .. })
        ));
    }

    #[test]
    fn names_the_ca_does_not_cover_are_not_served_and_said() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = CaSpec {
            permitted: vec![LeafName::parse("ehr.example").expect("name")],
            ..CaSpec::new("test")
        };
        let (ca, _) = LocalCa::init(dir.path(), &spec).expect("init");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let leaves = LeafCache::new(Arc::new(ca), provider, LeafPolicy::default());
        let names = ["fhir.ehr.example", "other.example"].map(|n| LeafName::parse(n).expect("n"));
        assert_eq!(leaves.serve(names.clone()), vec![names[1].clone()]);
        leaves.get(&names[0]).expect("covered");
        assert!(matches!(
            leaves.get(&names[1]),
            Err(TlsError::NotServed { .. })
        ));
    }

    #[test]
    fn the_same_name_is_minted_once_and_other_names_apart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let leaves = cache(dir.path(), LeafPolicy::default());
        let name = LeafName::parse("fhir.ehr.example").expect("name");
        let first = leaves.get(&name).expect("mint");
        let second = leaves.get(&name).expect("cached");
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(leaves.mints(), 1);
        let other = leaves
            .get(&LeafName::parse("10.0.0.1").expect("ip"))
            .expect("mint");
        assert_ne!(other.cert, first.cert);
        assert_eq!(leaves.mints(), 2);
    }

    #[test]
    fn concurrent_first_requests_mint_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let leaves = cache(dir.path(), LeafPolicy::default());
        let name = LeafName::parse("fhir.ehr.example").expect("name");
        let threads = 8;
        let barrier = Barrier::new(threads);
        let certs: Vec<_> = thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        leaves.get(&name).expect("leaf")
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        assert_eq!(leaves.mints(), 1);
        assert!(certs.iter().all(|c| Arc::ptr_eq(c, &certs[0])));
    }

    #[test]
    fn new_names_beyond_the_mint_budget_are_refused_and_cached_ones_still_served() {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = LeafPolicy {
            mint_burst: 3,
            // No refill within the test, however slow the machine (refill: the test below).
            mints_per_second: 0,
            ..LeafPolicy::default()
        };
        let leaves = cache(dir.path(), policy);
        let names: Vec<LeafName> = (0..5)
            .map(|i| LeafName::parse(&format!("n{i}.example")).expect("name"))
            .collect();
        let results: Vec<bool> = names.iter().map(|n| leaves.get(n).is_ok()).collect();
        assert_eq!(results, [true, true, true, false, false]);
        assert!(matches!(
            leaves.get(&LeafName::parse("flood.example").expect("name")),
            Err(TlsError::MintRateExceeded)
        ));
        assert_eq!(leaves.refused_mints(), 3);
        assert!(leaves.get(&names[0]).is_ok(), "a cached name is served");
        assert_eq!(leaves.mints(), 3);
    }

    #[test]
    fn the_mint_budget_refills_at_its_rate_up_to_its_burst() {
        let policy = LeafPolicy {
            mint_burst: 2,
            mints_per_second: 4,
            ..LeafPolicy::default()
        };
        let start = Instant::now();
        let mut budget = MintBudget {
            tokens: 2.0,
            at: start,
        };
        assert!(budget.take(&policy, start));
        assert!(budget.take(&policy, start));
        assert!(!budget.take(&policy, start), "burst spent");
        assert!(!budget.take(&policy, start + Duration::from_millis(200)));
        assert!(
            budget.take(&policy, start + Duration::from_millis(260)),
            "a quarter second"
        );
        // A long quiet spell refills to the burst, not beyond.
        let later = start + Duration::from_mins(1);
        assert!(budget.take(&policy, later));
        assert!(budget.take(&policy, later));
        assert!(!budget.take(&policy, later));
    }

    #[test]
    fn leaves_are_renewed_before_expiry_and_evicted_by_lru() {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = LeafPolicy {
            capacity: NonZeroUsize::new(2).expect("non-zero"),
            ..LeafPolicy::default()
        };
        let leaves = cache(dir.path(), policy);
        let a = LeafName::parse("a.example").expect("name");
        let now = SystemTime::now();
        let first = leaves.get_at(&a, now).expect("mint");
        let day = Duration::from_hours(24);
        assert!(Arc::ptr_eq(
            &first,
            &leaves.get_at(&a, now + 4 * day).expect("hit")
        ));
        // Two days before the week is up, the leaf is replaced.
        let renewed = leaves
            .get_at(&a, now + 5 * day + Duration::from_secs(1))
            .expect("renew");
        assert!(!Arc::ptr_eq(&first, &renewed));
        assert_eq!(leaves.mints(), 2);

        for name in ["b.example", "c.example"] {
            leaves
                .get_at(&LeafName::parse(name).expect("name"), now)
                .expect("mint");
        }
        // `a` was least recently used and is gone.
        leaves.get_at(&a, now).expect("mint");
        assert_eq!(leaves.mints(), 5);
    }
}
