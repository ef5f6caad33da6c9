//! Prometheus metrics (text format at `GET /metrics`): requests by operation and
//! status, latency histograms, per-vendor calls/latency/outcome/breaker state, cache
//! hits and misses, hot in-process cache hits and misses, coalesced lookups, credits
//! charged, group-commit batches. Labels never carry keys,
//! workspaces or inputs, so cardinality stays fixed.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The spec's operation id, or `other`.
    pub operation: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VendorLabels {
    pub vendor: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VendorOutcomeLabels {
    pub vendor: String,
    /// `match`, `no_match`, `timeout`, `connect`, `status`, `rate_limited`, `queued`,
    /// `malformed`, `refused`, `breaker_open`, `transport`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `hit`, `negative_hit` or `miss`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// `succeeded` or `failed`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HotCacheLabels {
    /// `known_keys`, `unknown_keys`, `empty_workspaces`, `replays` or `cache_rows`.
    pub cache: &'static str,
    /// `hit` or `miss`.
    pub outcome: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Histograms<OperationLabels>,
    pub vendor_calls: Family<VendorOutcomeLabels, Counter>,
    pub vendor_seconds: Histograms<VendorLabels>,
    /// 0 closed, 1 half-open, 2 open.
    pub breaker_state: Family<VendorLabels, Gauge>,
    pub cache_lookups: Family<CacheLabels, Counter>,
    pub coalesced_lookups: Counter,
    /// Lookups in the hot in-process caches (`crate::hot`), by cache and outcome.
    pub hot_cache_lookups: Family<HotCacheLabels, Counter>,
    pub credits_charged: Counter,
    /// Webhook delivery attempts made by this process, by outcome.
    pub webhook_attempts: Family<WebhookLabels, Counter>,
    /// Duration of webhook delivery attempts.
    pub webhook_attempt_seconds: Histogram,
    /// Settlements per group-commit transaction.
    pub settle_batch_size: Histogram,
    /// Duration of one group-commit transaction.
    pub settle_batch_seconds: Histogram,
    /// Requests this process is answering right now, and (not exported) the time all its
    /// requests have taken, summed, in microseconds: together what tells the job worker
    /// that interactive calls are waiting (`crate::jobs::Worker`).
    pub requests_in_flight: Gauge,
    pub request_micros: std::sync::atomic::AtomicU64,
    /// 1 while Redis is configured but does not answer, so this replica counts rate
    /// limits on its own (degraded, still serving).
    pub rate_limits_local: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("leadlex");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests by operation and status", requests.clone());
        let request_seconds: Histograms<OperationLabels> = Family::new_with_constructor(latency_histogram);
        registry.register("http_request_duration_seconds", "HTTP request latency by operation", request_seconds.clone());
        let vendor_calls = Family::<VendorOutcomeLabels, Counter>::default();
        registry.register("vendor_calls", "Upstream vendor calls by vendor and outcome", vendor_calls.clone());
        let vendor_seconds: Histograms<VendorLabels> = Family::new_with_constructor(latency_histogram);
        registry.register("vendor_call_duration_seconds", "Upstream vendor call latency", vendor_seconds.clone());
        let breaker_state = Family::<VendorLabels, Gauge>::default();
        registry.register("vendor_breaker_state", "Circuit breaker per vendor: 0 closed, 1 half-open, 2 open", breaker_state.clone());
        let cache_lookups = Family::<CacheLabels, Counter>::default();
        registry.register("cache_lookups", "Enrichment cache lookups by result", cache_lookups.clone());
        let coalesced_lookups = Counter::default();
        registry.register(
            "coalesced_lookups",
            "Lookups that joined an identical one already asking the vendors",
            coalesced_lookups.clone(),
        );
        let hot_cache_lookups = Family::<HotCacheLabels, Counter>::default();
        registry.register("hot_cache", "Lookups in the in-process hot caches by cache and outcome", hot_cache_lookups.clone());
        let credits_charged = Counter::default();
        registry.register("credits_charged", "Credits charged for successful lookups", credits_charged.clone());
        let webhook_attempts = Family::<WebhookLabels, Counter>::default();
        registry.register("webhook_attempts", "Webhook delivery attempts by outcome", webhook_attempts.clone());
        let webhook_attempt_seconds = latency_histogram();
        registry.register("webhook_attempt_duration_seconds", "Duration of webhook delivery attempts", webhook_attempt_seconds.clone());
        let settle_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 9));
        registry.register("settle_batch_size", "Settlements per group-commit transaction", settle_batch_size.clone());
        let settle_batch_seconds = latency_histogram();
        registry.register("settle_batch_duration_seconds", "Duration of one group-commit transaction", settle_batch_seconds.clone());
        let requests_in_flight = Gauge::default();
        registry.register("http_requests_in_flight", "Requests this process is answering", requests_in_flight.clone());
        let rate_limits_local = Gauge::default();
        registry.register(
            "rate_limits_local",
            "1 while Redis is configured but unreachable and this replica counts rate limits on its own",
            rate_limits_local.clone(),
        );
        Self {
            rate_limits_local,
            registry,
            settle_batch_size,
            settle_batch_seconds,
            requests,
            request_seconds,
            vendor_calls,
            vendor_seconds,
            breaker_state,
            cache_lookups,
            coalesced_lookups,
            hot_cache_lookups,
            credits_charged,
            webhook_attempts,
            webhook_attempt_seconds,
            requests_in_flight,
            request_micros: Default::default(),
        }
    }

    pub fn cache(&self, result: &str) {
        self.cache_lookups.get_or_create(&CacheLabels { result: result.into() }).inc();
    }

    /// The hit and miss counters of one hot cache, for its owner to keep (no label
    /// lookup per probe).
    pub fn hot_cache_counters(&self, cache: &'static str) -> (Counter, Counter) {
        let counter = |outcome| self.hot_cache_lookups.get_or_create(&HotCacheLabels { cache, outcome }).clone();
        (counter("hit"), counter("miss"))
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}
