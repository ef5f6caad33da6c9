//! Finding out who is behind an input: the cache first, then the vendors in waterfall
//! order until one matches. Knows nothing of HTTP callers, keys or credits.
//!
//! Outcomes: a match (from the cache or the vendors), no match (every vendor answered
//! and none matched, or some failed and the rest said no), or unavailable (every vendor
//! failed: the data may exist, so the caller should retry).
//!
//! Resilience: each vendor has its own timeout and circuit breaker, the whole waterfall
//! one deadline; failures that are safe to repeat are retried with jittered backoff.
//! Concurrent lookups of the same input share one waterfall (coalescing). No-matches are
//! remembered for a short TTL. With `fill_gaps`, later vendors fill what the first match
//! left empty, and the confidence reflects whether they agree.

pub mod breaker;
pub mod cache;
pub mod input;
pub mod record;
pub mod vendors;

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use rand::Rng;
use sea_orm::{DatabaseConnection, DbErr};
use tokio::{sync::OnceCell, time::Instant};

use breaker::{CircuitBreaker, Permit};
use cache::{CachePolicy, Cached};
use input::{LookupInput, Section};
use record::{merged_confidence, Matched};
use vendors::{Vendor, VendorAnswer, VendorError};

use crate::config::WaterfallSettings;
use crate::hot::{self, TtlCache};
use crate::metrics::{Metrics, VendorLabels, VendorOutcomeLabels};
use crate::settler::Settler;

/// The result of a lookup.
#[derive(Debug, Clone)]
pub enum LookupOutcome {
    /// `cached_at`: when the answer came from the cache, the `fetched_at` of its entry
    /// (entries change only by being replaced, so cache key and `cached_at` identify it).
    Found {
        /// Shared with the cache entry it came from (no copy per cached hit).
        matched: Arc<Matched>,
        cached_at: Option<i64>,
    },
    NoMatch,
    /// Every vendor failed; `retry_after` is the soonest a retry makes sense.
    Unavailable {
        retry_after: Duration,
    },
}

struct Slot {
    vendor: Vendor,
    breaker: CircuitBreaker,
}

/// An input, and where its answers live in the cache: the shared live space, or a
/// workspace's own test space (see [`crate::test_mode`]). Coalescing and the in-process
/// memo go by the same key, so the spaces never meet.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    pub input: &'a LookupInput,
    pub cache_key: String,
}

impl<'a> Subject<'a> {
    /// A live call's subject: the input's own cache key.
    pub fn live(input: &'a LookupInput) -> Self {
        Self { input, cache_key: input.cache_key() }
    }

    /// A subject in a space of its own: `{space}:{the input's cache key}`.
    pub fn in_space(input: &'a LookupInput, space: &str) -> Self {
        Self { input, cache_key: format!("{space}:{}", input.cache_key()) }
    }
}

/// The cache, then the waterfall of configured vendors.
pub struct Lookup {
    slots: Vec<Slot>,
    deadline: Duration,
    policy: WaterfallSettings,
    cache: CachePolicy,
    inflight: Mutex<HashMap<String, Arc<OnceCell<LookupOutcome>>>>,
    /// The in-process memo of recently read cache rows (shared by the live and the test
    /// lookup, whose keys differ).
    cache_rows: Arc<CacheRows>,
    /// The one writer of the cache (remembered no-matches go through it).
    settler: Settler,
    /// On SQLite, cache rows are read on the request's own thread.
    sqlite_reads: Option<Arc<crate::db::SqliteReads>>,
    metrics: Arc<Metrics>,
}

/// The hot cache of cache rows: cache key → the parsed entry. Staleness: an entry
/// replaced on another replica is seen within the TTL (30 s by default), and never
/// served past the entry's own expiry; erasure empties it (`privacy::Suppressions`).
pub type CacheRows = TtlCache<String, Arc<cache::Entry>>;

/// The cache-rows instance, as configured.
pub fn cache_rows(settings: &crate::config::HotCachesSettings, metrics: &Metrics) -> CacheRows {
    TtlCache::new("cache_rows", &settings.cache_rows, metrics)
}

/// What a [`Lookup`] is built from.
pub struct LookupParts {
    pub vendors: Vec<Vendor>,
    /// For the whole waterfall of one request.
    pub deadline: Duration,
    pub policy: WaterfallSettings,
    pub cache: CachePolicy,
    pub cache_rows: Arc<CacheRows>,
    pub settler: Settler,
    pub metrics: Arc<Metrics>,
}

impl Lookup {
    pub fn new(parts: LookupParts) -> Self {
        let LookupParts { vendors, deadline, policy, cache, cache_rows, settler, metrics } = parts;
        let open_for = Duration::from_secs(policy.breaker_open_secs);
        let slots = vendors
            .into_iter()
            .map(|vendor| Slot { vendor, breaker: CircuitBreaker::new(policy.breaker_failure_threshold, open_for) })
            .collect();
        Self { slots, deadline, policy, cache, inflight: Mutex::new(HashMap::new()), cache_rows, settler, sqlite_reads: None, metrics }
    }

    /// How long each kind of cache entry is served.
    pub fn cache_policy(&self) -> &CachePolicy {
        &self.cache
    }

    /// Reads cache rows through `reads` (SQLite) instead of the pool.
    pub fn with_sqlite_reads(mut self, reads: Arc<crate::db::SqliteReads>) -> Self {
        self.sqlite_reads = Some(reads);
        self
    }

    pub fn vendor_names(&self) -> Vec<&'static str> {
        self.slots.iter().map(|s| s.vendor.name().as_str()).collect()
    }

    /// What is known about `input`: from the cache when it has a fresh answer (younger
    /// than `max_age_ms` too, when given: `Some(0)` never reads the cache), else from the
    /// vendors.
    pub async fn find(
        &self,
        db: &DatabaseConnection,
        subject: &Subject<'_>,
        include: &BTreeSet<Section>,
        max_age_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<LookupOutcome, DbErr> {
        let cached = match max_age_ms {
            Some(0) => Cached::Miss,
            _ => self.cached(db, subject, include, max_age_ms, now_ms).await?,
        };
        match cached {
            Cached::Match(matched, fetched_at) => {
                self.metrics.cache("hit");
                return Ok(LookupOutcome::Found { matched, cached_at: Some(fetched_at) });
            }
            Cached::NoMatch(_) => {
                self.metrics.cache("negative_hit");
                return Ok(LookupOutcome::NoMatch);
            }
            Cached::Miss => self.metrics.cache("miss"),
        }
        // Boxed: the waterfall's state (HTTP client futures) is large, and every caller's
        // future would otherwise carry it, copied each time poem moves a request's future.
        Ok(Box::pin(self.coalesced(subject)).await)
    }

    /// The cache's answer, from the in-process memo of recent rows when it has a usable
    /// one (rows change only by being replaced, so a memo hit that is fresh is right),
    /// otherwise from the database; an entry `max_age_ms` old or older is a miss.
    async fn cached(
        &self,
        db: &DatabaseConnection,
        subject: &Subject<'_>,
        include: &BTreeSet<Section>,
        max_age_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<Cached, DbErr> {
        let key = &subject.cache_key;
        if let Some(entry) = self.cache_rows.get(key.as_str()) {
            let cached = entry.interpret(include, &self.cache, now_ms).younger_than(max_age_ms, now_ms);
            if !matches!(cached, Cached::Miss) {
                return Ok(cached);
            }
        }
        // The pool's query is boxed: a cold await (docs/design.md §19, a request's future).
        let row = match self.sqlite_reads.as_ref().map(|reads| reads.with(|conn| cache::row_sqlite(conn, key))) {
            Some(Ok(row)) => row,
            Some(Err(err)) => {
                // Through the pool instead, which reports an outage as such.
                tracing::debug!(error = %err, "reading a cache row on this thread failed");
                Box::pin(cache::row(db, key)).await?
            }
            None => Box::pin(cache::row(db, key)).await?,
        };
        let Some(row) = row else { return Ok(Cached::Miss) };
        let entry = cache::Entry::new(row);
        let cached = entry.interpret(include, &self.cache, now_ms).younger_than(max_age_ms, now_ms);
        self.remember(subject, entry, now_ms);
        Ok(cached)
    }

    /// Remembers a cache entry: one just read from the database, or one this process just
    /// handed to the settler, before its row commits (the settler writes cache rows just
    /// after the debits; see `docs/design.md`).
    pub fn remember(&self, subject: &Subject<'_>, entry: cache::Entry, now_ms: i64) {
        self.remember_row(subject.cache_key.clone(), entry, now_ms);
    }

    /// [`Lookup::remember`] by cache key (a row just handed to the settler).
    pub fn remember_row(&self, cache_key: String, entry: cache::Entry, now_ms: i64) {
        let cap = hot::until(entry.expires_at, now_ms);
        self.cache_rows.insert(cache_key, Arc::new(entry), cap);
    }

    /// Caches a vendor answer nobody pays for (it had none of the sections asked for, or
    /// it answered a test-mode call).
    pub fn keep_unpaid(&self, subject: &Subject<'_>, matched: &Matched, now_ms: i64) {
        self.keep(cache::match_row(subject, matched, &self.cache, now_ms), now_ms);
    }

    /// Remembers `row` in-process at once and hands it to the settler, the one writer of
    /// the cache (it commits with the next transaction).
    fn keep(&self, row: entity::cache_entry::Model, now_ms: i64) {
        self.remember_row(row.cache_key.clone(), cache::Entry::new(row.clone()), now_ms);
        self.settler.cache(row);
    }

    /// One waterfall per input at a time: concurrent callers share its outcome.
    /// The one waterfall also remembers a no-match (once, not once per waiting caller;
    /// losing it costs a later vendor call, not this answer).
    async fn coalesced(&self, subject: &Subject<'_>) -> LookupOutcome {
        let key = subject.cache_key.clone();
        let (cell, leader) = {
            let mut inflight = self.inflight.lock().expect("not poisoned");
            match inflight.get(&key) {
                Some(cell) => (cell.clone(), false),
                None => {
                    let cell = Arc::new(OnceCell::new());
                    inflight.insert(key.clone(), cell.clone());
                    (cell, true)
                }
            }
        };
        // The leader clears the entry when it is done, or dropped (its caller went away).
        let _guard = leader.then(|| InflightGuard { map: &self.inflight, key, cell: cell.clone() });
        if !leader {
            self.metrics.coalesced_lookups.inc();
        }
        cell.get_or_init(|| async {
            let outcome = self.ask_vendors(subject.input).await;
            if matches!(outcome, LookupOutcome::NoMatch) {
                let now = crate::now_ms();
                if let Some(row) = cache::no_match_row(subject, &self.cache, now) {
                    self.keep(row, now);
                }
            }
            outcome
        })
        .await
        .clone()
    }

    /// Asks each vendor in order, within one overall deadline.
    async fn ask_vendors(&self, input: &LookupInput) -> LookupOutcome {
        let started = Instant::now();
        let (mut failures, mut asked) = (0usize, 0usize);
        let mut retry_after = Duration::from_secs(1);
        let mut found: Option<Matched> = None;
        for slot in &self.slots {
            if let Some(m) = &found {
                if !self.policy.fill_gaps || !m.record.has_gaps(input.has_email()) {
                    break;
                }
            }
            asked += 1;
            match self.call(slot, input, started).await {
                Ok(VendorAnswer::Match { record, confidence }) => match &mut found {
                    None => found = Some(Matched { record: *record, vendor: slot.vendor.name(), confidence: confidence.clamp(0.0, 1.0) }),
                    Some(m) => {
                        let agreement = m.record.fill_from(&record);
                        m.confidence = merged_confidence(m.confidence, confidence, agreement);
                    }
                },
                Ok(VendorAnswer::NoMatch) => {}
                Err(err) => {
                    failures += 1;
                    if let Some(after) = err.retry_after() {
                        retry_after = retry_after.max(after);
                    }
                }
            }
        }
        match found {
            Some(matched) => LookupOutcome::Found { matched: Arc::new(matched), cached_at: None },
            None if failures > 0 && failures == asked => {
                LookupOutcome::Unavailable { retry_after: retry_after.min(Duration::from_secs(60)) }
            }
            None => LookupOutcome::NoMatch,
        }
    }

    /// One vendor, through its breaker, with bounded retries inside the deadline.
    async fn call(&self, slot: &Slot, input: &LookupInput, started: Instant) -> Result<VendorAnswer, VendorError> {
        let name = slot.vendor.name().as_str();
        let labels = VendorLabels { vendor: name.to_string() };
        let permit = slot.breaker.acquire();
        self.metrics.breaker_state.get_or_create(&labels).set(slot.breaker.state_code());
        if permit == Permit::Rejected {
            self.count(name, "breaker_open");
            return Err(VendorError::BreakerOpen);
        }
        let mut attempt = 0;
        let result = loop {
            let left = self.deadline.saturating_sub(started.elapsed());
            let t0 = Instant::now();
            let result = match tokio::time::timeout(left, slot.vendor.lookup(input)).await {
                Ok(result) => result,
                Err(_) => Err(VendorError::Timeout),
            };
            self.metrics.vendor_seconds.get_or_create(&labels).observe(t0.elapsed().as_secs_f64());
            self.count(name, outcome_label(&result));
            let Err(err) = &result else { break result };
            tracing::warn!(vendor = name, attempt, error = %err, "vendor failed");
            let backoff = self.backoff(attempt, err);
            match backoff {
                Some(wait) if attempt < self.policy.max_retries && started.elapsed() + wait < self.deadline => {
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                _ => break result,
            }
        };
        // An answer about the input (a 4xx) shows the vendor up: only vendor faults count.
        slot.breaker.record(result.as_ref().map_or_else(|e| !e.is_vendor_fault(), |_| true));
        self.metrics.breaker_state.get_or_create(&labels).set(slot.breaker.state_code());
        result
    }

    /// How long to wait before repeating a failed call, or `None` when repeating is not
    /// safe (a timeout may have been served and billed) or not useful.
    fn backoff(&self, attempt: u32, err: &VendorError) -> Option<Duration> {
        if !err.is_safe_to_retry() {
            return None;
        }
        let base = self.policy.retry_backoff_ms.max(1) << attempt.min(6);
        let jittered = rand::thread_rng().gen_range(base / 2..=base + base / 2);
        let wait = Duration::from_millis(jittered);
        match err.retry_after() {
            Some(after) if after > Duration::from_secs(2) => None,
            Some(after) => Some(after.max(wait)),
            None => Some(wait),
        }
    }

    fn count(&self, vendor: &str, outcome: &str) {
        self.metrics.vendor_calls.get_or_create(&VendorOutcomeLabels { vendor: vendor.to_string(), outcome: outcome.to_string() }).inc();
    }
}

struct InflightGuard<'a> {
    map: &'a Mutex<HashMap<String, Arc<OnceCell<LookupOutcome>>>>,
    key: String,
    cell: Arc<OnceCell<LookupOutcome>>,
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.map.lock().expect("not poisoned");
        if map.get(&self.key).is_some_and(|c| Arc::ptr_eq(c, &self.cell)) {
            map.remove(&self.key);
        }
    }
}

fn outcome_label(result: &Result<VendorAnswer, VendorError>) -> &'static str {
    match result {
        Ok(VendorAnswer::Match { .. }) => "match",
        Ok(VendorAnswer::NoMatch) => "no_match",
        Err(e) => e.kind(),
    }
}
