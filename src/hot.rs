//! The hot in-process caches: the one owner of everything a request may answer from
//! memory instead of the database. Built from the `[hot_caches]` configuration section;
//! each cache has its own capacity and TTL, and a staleness bound documented here and in
//! `docs/design.md`:
//!
//! | cache | key → value | bound (default) |
//! |---|---|---|
//! | known keys | SHA-256 of an API key → its principal (plan, balance hint) | a revocation, expiry or plan change is seen within the TTL (1 s); a key's own `expires_at` is checked on every request |
//! | unknown keys | SHA-256 of a well-formed but unknown (or revoked) key | 10 s; kept apart from known keys, so a flood of bad keys never evicts a good one |
//! | empty workspaces | workspace id seen at balance 0 | a top-up is honoured within the TTL (1 s) |
//! | replays | (workspace, `Idempotency-Key`) → the completed call | immutable until the record expires; 60 s, never past the record's expiry |
//! | cache rows | cache key → the parsed cache entry | an entry replaced on another replica is seen within the TTL (30 s), never past the entry's expiry |
//!
//! Every cache is bounded and evicts one entry at a time (S3-FIFO: a one-off key passes
//! through a small probation queue without pushing out entries that are used again). A
//! zero TTL turns a cache off. Hits and misses are counted in
//! `leadlex_hot_cache_total{cache, outcome}`.

use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use quick_cache::{sync::Cache, Equivalent};
use tokio::time::Instant;

use crate::auth::Principal;
use crate::config::{HotCacheSettings, HotCachesSettings};
use crate::enrich::Completed;
use crate::lookup::cache::Entry;
use crate::metrics::Metrics;

/// The SHA-256 digest of an API key's plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest(pub [u8; 32]);

/// A workspace's id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkspaceKey(pub String);

/// An idempotent call: the workspace and its `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReplayKey {
    pub workspace_id: String,
    pub idempotency_key: String,
}

/// A normalised lookup input's cache key (`email:…`, `domain:…`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey(pub String);

/// A cache key is looked up by its text (a `String` hashes as its `str`).
impl Equivalent<CacheKey> for str {
    fn equivalent(&self, key: &CacheKey) -> bool {
        self == key.0
    }
}

/// What the key caches know about a key digest.
#[derive(Debug, Clone)]
pub enum KnownKey {
    Valid(Arc<Principal>),
    /// Unknown or revoked.
    Invalid,
}

/// One bounded cache whose entries expire: a value is served until its own deadline.
struct Bounded<K, V> {
    entries: Option<Cache<K, (Instant, V)>>,
    ttl: Duration,
    hits: Counter,
    misses: Counter,
}

impl<K: Eq + Hash + Clone, V: Clone> Bounded<K, V> {
    fn new(name: &'static str, settings: &HotCacheSettings, metrics: &Metrics) -> Self {
        let ttl = Duration::from_millis(settings.ttl_ms);
        let entries = (!ttl.is_zero() && settings.capacity > 0).then(|| Cache::new(settings.capacity));
        let (hits, misses) = metrics.hot_cache_counters(name);
        Self { entries, ttl, hits, misses }
    }

    /// The live value for `key` (anything that hashes and compares like a `K`, so that a
    /// lookup needs no owned key).
    fn get<Q: Hash + Equivalent<K> + ?Sized>(&self, key: &Q) -> Option<V> {
        let entries = self.entries.as_ref()?;
        let found = match entries.get(key) {
            Some((until, value)) if Instant::now() < until => Some(value),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        };
        if found.is_some() { &self.hits } else { &self.misses }.inc();
        found
    }

    fn remove(&self, key: &K) {
        if let Some(entries) = &self.entries {
            entries.remove(key);
        }
    }

    fn clear(&self) {
        if let Some(entries) = &self.entries {
            entries.clear();
        }
    }

    /// Remembers `value` for the cache's TTL, or less when `at_most` is shorter.
    fn insert(&self, key: K, value: V, at_most: Option<Duration>) {
        let Some(entries) = &self.entries else { return };
        let ttl = at_most.map_or(self.ttl, |limit| limit.min(self.ttl));
        if !ttl.is_zero() {
            entries.insert(key, (Instant::now() + ttl, value));
        }
    }
}

/// The owner of every hot cache (see the module docs).
pub struct HotCaches {
    known_keys: Bounded<KeyDigest, Arc<Principal>>,
    unknown_keys: Bounded<KeyDigest, ()>,
    empty_workspaces: Bounded<WorkspaceKey, ()>,
    replays: Bounded<ReplayKey, Arc<Completed>>,
    cache_rows: Bounded<CacheKey, Arc<Entry>>,
}

/// Milliseconds from `now_ms` until `until_ms`, as a cap on a TTL.
fn until(until_ms: i64, now_ms: i64) -> Option<Duration> {
    Some(Duration::from_millis(until_ms.saturating_sub(now_ms).max(0) as u64))
}

impl HotCaches {
    pub fn new(settings: &HotCachesSettings, metrics: &Metrics) -> Self {
        Self {
            known_keys: Bounded::new("known_keys", &settings.known_keys, metrics),
            unknown_keys: Bounded::new("unknown_keys", &settings.unknown_keys, metrics),
            empty_workspaces: Bounded::new("empty_workspaces", &settings.empty_workspaces, metrics),
            replays: Bounded::new("replays", &settings.replays, metrics),
            cache_rows: Bounded::new("cache_rows", &settings.cache_rows, metrics),
        }
    }

    /// What is remembered about a key, if anything.
    pub fn key(&self, digest: &KeyDigest) -> Option<KnownKey> {
        if let Some(principal) = self.known_keys.get(digest) {
            return Some(KnownKey::Valid(principal));
        }
        self.unknown_keys.get(digest).map(|()| KnownKey::Invalid)
    }

    pub fn remember_key(&self, digest: KeyDigest, known: KnownKey) {
        match known {
            KnownKey::Valid(principal) => self.known_keys.insert(digest, principal, None),
            KnownKey::Invalid => self.unknown_keys.insert(digest, (), None),
        }
    }

    /// Forgets a key this replica just revoked (other replicas see it within the TTL).
    pub fn forget_key(&self, digest: &KeyDigest) {
        self.known_keys.remove(digest);
    }

    /// Whether the workspace was seen at balance 0 within the TTL.
    pub fn is_empty_workspace(&self, workspace_id: &str) -> bool {
        self.empty_workspaces.get(&WorkspaceKey(workspace_id.to_string())).is_some()
    }

    pub fn remember_empty_workspace(&self, workspace_id: &str) {
        self.empty_workspaces.insert(WorkspaceKey(workspace_id.to_string()), (), None);
    }

    pub fn replay(&self, key: &ReplayKey, now_ms: i64) -> Option<Arc<Completed>> {
        self.replays.get(key).filter(|done| done.expires_at > now_ms)
    }

    pub fn remember_replay(&self, key: ReplayKey, done: Arc<Completed>, now_ms: i64) {
        let cap = until(done.expires_at, now_ms);
        self.replays.insert(key, done, cap);
    }

    pub fn cache_row(&self, key: &str) -> Option<Arc<Entry>> {
        self.cache_rows.get(key)
    }

    pub fn remember_cache_row(&self, key: CacheKey, entry: Arc<Entry>, now_ms: i64) {
        let cap = until(entry.expires_at, now_ms);
        self.cache_rows.insert(key, entry, cap);
    }

    /// Forgets every remembered cache row and replayed answer (a subject was erased:
    /// this process holds none of its data in memory any more; see `crate::privacy`).
    pub fn forget_enrichment_data(&self) {
        self.cache_rows.clear();
        self.replays.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(capacity: usize, ttl_ms: u64) -> HotCacheSettings {
        HotCacheSettings { capacity, ttl_ms }
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_at_their_own_deadline() {
        let metrics = Metrics::new();
        let c: Bounded<u32, u32> = Bounded::new("t", &settings(10, 5_000), &metrics);
        c.insert(1, 10, None);
        c.insert(2, 20, Some(Duration::from_secs(1)));
        assert_eq!(c.get(&1), Some(10));
        assert_eq!(c.get(&2), Some(20));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(c.get(&2), None, "capped by its own deadline");
        assert_eq!(c.get(&1), Some(10));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(c.get(&1), None);
    }

    #[test]
    fn a_full_cache_evicts_one_entry_at_a_time() {
        let metrics = Metrics::new();
        let c: Bounded<u32, u32> = Bounded::new("t", &settings(1_000, 60_000), &metrics);
        // Entries used again are kept while a stream of one-off keys passes through.
        for i in 0..100 {
            c.insert(i, i, None);
        }
        for _ in 0..3 {
            for i in 0..100 {
                assert!(c.get(&i).is_some(), "{i} is within capacity");
            }
        }
        for i in 1_000..200_000 {
            c.insert(i, i, None);
        }
        let kept = (0..100).filter(|i| c.get(i).is_some()).count();
        assert!(kept >= 90, "hot entries survive a flood of one-off keys: {kept} of 100 kept");
        assert!(c.entries.as_ref().unwrap().len() <= 1_000);
    }

    #[test]
    fn a_zero_ttl_turns_a_cache_off() {
        let metrics = Metrics::new();
        let c: Bounded<u32, u32> = Bounded::new("t", &settings(10, 0), &metrics);
        c.insert(1, 1, None);
        assert_eq!(c.get(&1), None);
    }
}
