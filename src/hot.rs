//! The hot in-process caches' one mechanism: [`TtlCache`], a bounded cache whose entries
//! expire, counted in `leadlex_hot_cache_total{cache, outcome}`. It knows nothing of what
//! it holds; each instance is owned by the module whose data it holds, which documents
//! its staleness bound (`docs/design.md` section 6 has the table):
//!
//! | instance | owner | key → value |
//! |---|---|---|
//! | known keys, unknown keys | `auth::KeyCache` | SHA-256 of an API key → its principal / nothing |
//! | empty workspaces | `enrich` | workspace id seen at balance 0 |
//! | replays | `enrich::Replays` | (workspace, `Idempotency-Key`) → the completed call |
//! | answers | `enrich::Answers` | (a cache entry by identity, sections) → the shared answer |
//! | cache rows | `lookup::CacheRows` | cache key → the parsed cache entry |
//!
//! Every cache is bounded and evicts one entry at a time (S3-FIFO: a one-off key passes
//! through a small probation queue without pushing out entries that are used again). A
//! zero TTL or capacity turns a cache off. An entry is served until its own deadline:
//! the cache's TTL, or less when its owner caps it ([`until`]).

use std::hash::Hash;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use quick_cache::{sync::Cache, Equivalent};
use tokio::time::Instant;

use crate::config::HotCacheSettings;
use crate::metrics::Metrics;

/// One bounded cache whose entries expire: a value is served until its own deadline.
pub struct TtlCache<K, V> {
    entries: Option<Cache<K, (Instant, V)>>,
    ttl: Duration,
    hits: Counter,
    misses: Counter,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(name: &'static str, settings: &HotCacheSettings, metrics: &Metrics) -> Self {
        let ttl = Duration::from_millis(settings.ttl_ms);
        let entries = (!ttl.is_zero() && settings.capacity > 0).then(|| Cache::new(settings.capacity));
        let (hits, misses) = metrics.hot_cache_counters(name);
        Self { entries, ttl, hits, misses }
    }

    /// The live value for `key` (anything that hashes and compares like a `K`, so that a
    /// lookup needs no owned key).
    pub fn get<Q: Hash + Equivalent<K> + ?Sized>(&self, key: &Q) -> Option<V> {
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

    pub fn remove<Q: Hash + Equivalent<K> + ?Sized>(&self, key: &Q) {
        if let Some(entries) = &self.entries {
            entries.remove(key);
        }
    }

    pub fn clear(&self) {
        if let Some(entries) = &self.entries {
            entries.clear();
        }
    }

    /// Remembers `value` for the cache's TTL, or less when `at_most` is shorter.
    pub fn insert(&self, key: K, value: V, at_most: Option<Duration>) {
        let Some(entries) = &self.entries else { return };
        let ttl = at_most.map_or(self.ttl, |limit| limit.min(self.ttl));
        if !ttl.is_zero() {
            entries.insert(key, (Instant::now() + ttl, value));
        }
    }
}

/// Milliseconds from `now_ms` until `until_ms`, as a cap on a TTL (an entry that expires
/// on its own, such as a cache row or a replay, is never served past its expiry).
pub fn until(until_ms: i64, now_ms: i64) -> Option<Duration> {
    Some(Duration::from_millis(until_ms.saturating_sub(now_ms).max(0) as u64))
}

/// A cache that can be emptied without knowing its types: erasure empties every cache
/// that may hold a subject's data (`privacy::Suppressions` holds them as `dyn Forget`).
pub trait Forget: Send + Sync {
    fn forget_all(&self);
}

impl<K: Eq + Hash + Clone + Send + Sync, V: Clone + Send + Sync> Forget for TtlCache<K, V> {
    fn forget_all(&self) {
        self.clear();
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
        let c: TtlCache<u32, u32> = TtlCache::new("t", &settings(10, 5_000), &metrics);
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
        let c: TtlCache<u32, u32> = TtlCache::new("t", &settings(1_000, 60_000), &metrics);
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
        let c: TtlCache<u32, u32> = TtlCache::new("t", &settings(10, 0), &metrics);
        c.insert(1, 1, None);
        assert_eq!(c.get(&1), None);
    }
}
