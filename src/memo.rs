//! A small bounded in-process map whose entries expire: the hot-path caches (known and
//! unknown API keys, cache rows, completed idempotency records) that spare a database
//! round trip per request. Only data that is immutable until its expiry, or whose
//! staleness is bounded and documented, goes in here.
//!
//! When full, expired entries are dropped first, then everything: a flood of distinct
//! keys costs memory bounded by `capacity`, never more.

use std::{collections::HashMap, hash::Hash, sync::Mutex, time::Duration};

use tokio::time::Instant;

pub struct Memo<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
    capacity: usize,
}

impl<K: Eq + Hash, V: Clone> Memo<K, V> {
    pub fn new(capacity: usize) -> Self {
        Self { entries: Mutex::new(HashMap::new()), capacity: capacity.max(1) }
    }

    pub fn get(&self, key: &K) -> Option<V> {
        let mut entries = self.entries.lock().expect("not poisoned");
        match entries.get(key) {
            Some((until, value)) if Instant::now() < *until => Some(value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Remembers `value` for `ttl` (nothing for a zero TTL).
    pub fn insert(&self, key: K, value: V, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut entries = self.entries.lock().expect("not poisoned");
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, (until, _)| now < *until);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (now + ttl, value));
    }

    pub fn remove(&self, key: &K) {
        self.entries.lock().expect("not poisoned").remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn entries_expire_and_capacity_is_bounded() {
        let m = Memo::new(2);
        m.insert("a", 1, Duration::from_secs(1));
        m.insert("b", 2, Duration::from_secs(5));
        assert_eq!(m.get(&"a"), Some(1));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(m.get(&"a"), None);
        m.insert("c", 3, Duration::from_secs(5));
        m.insert("d", 4, Duration::from_secs(5));
        assert!(m.entries.lock().unwrap().len() <= 2);
        m.insert("z", 9, Duration::ZERO);
        assert_eq!(m.get(&"z"), None);
    }
}
