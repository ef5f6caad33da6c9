//! Typed configuration: defaults, then an optional TOML file (`--config` /
//! `LEADLEX_CONFIG`), then `LEADLEX_*` environment variables, then command-line flags.
//!
//! The JSON Schema of the file is published under `openapi/config.schema.json`.
//! Secrets (vendor API keys) live in [`Secret`], which never prints its value.

use std::path::Path;

use anyhow::Context;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::secret::Secret;
pub use crate::vendor_name::VendorName;

/// The whole configuration of a leadlex process.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub server: ServerSettings,
    /// Upstream vendors in waterfall order. Empty: `serve` starts the built-in sandbox
    /// vendors on a free loopback port and uses them.
    pub vendors: Vec<VendorSettings>,
    pub waterfall: WaterfallSettings,
    pub cache: CacheSettings,
    pub idempotency: IdempotencySettings,
    pub hot_caches: HotCachesSettings,
    pub sandbox: SandboxSettings,
    pub redis: RedisSettings,
    pub secrets: SecretsSettings,
    pub jobs: JobsSettings,
    pub privacy: PrivacySettings,
    pub webhooks: WebhooksSettings,
}

/// Webhook deliveries (see `docs/webhooks.md`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksSettings {
    /// Run a delivery worker in this process.
    pub workers: bool,
    /// Development and tests only: take `http://` URLs to loopback hosts and deliver to
    /// loopback addresses. Private, link-local (cloud metadata) and other internal
    /// addresses stay refused.
    pub allow_loopback: bool,
    /// The waits before each retry of a failed attempt, in milliseconds; once they are
    /// spent, the delivery is `failed`.
    pub retry_schedule_ms: Vec<u64>,
    /// Each wait is changed by up to this share of it, at random (0 to 1), so that the
    /// retries of many deliveries spread out.
    pub jitter: f64,
    /// How long an attempt may take, in milliseconds: a 2xx within it is success.
    pub timeout_ms: u64,
    /// How much of an endpoint's answer is read, in bytes.
    pub max_response_bytes: usize,
    /// A webhook whose attempts have all failed for this long (milliseconds) is turned
    /// off, with the reason.
    pub disable_after_ms: u64,
    /// How often an idle worker looks for due deliveries, in milliseconds.
    pub poll_ms: u64,
    /// How long a worker holds a delivery it claimed, in milliseconds (longer than
    /// `timeout_ms`): a worker that died mid-attempt leaves it to be attempted again after
    /// this.
    pub lease_ms: u64,
    /// Attempts a worker makes at once, across every workspace.
    pub batch: usize,
    /// Attempts a worker makes at once to one webhook: a slow endpoint holds no more of
    /// the worker than this.
    pub per_endpoint: usize,
    /// Attempts a worker makes at once for one workspace, all its webhooks together:
    /// one tenant's slow endpoints never hold up another tenant's deliveries.
    pub per_workspace: usize,
    /// How long finished deliveries are listed, in days.
    pub retention_days: u64,
}

impl Default for WebhooksSettings {
    fn default() -> Self {
        Self {
            workers: true,
            allow_loopback: false,
            retry_schedule_ms: vec![5_000, 30_000, 300_000, 3_600_000, 21_600_000],
            jitter: 0.1,
            timeout_ms: 10_000,
            max_response_bytes: 64 * 1024,
            disable_after_ms: 86_400_000,
            poll_ms: 1_000,
            lease_ms: 60_000,
            batch: 32,
            per_endpoint: 2,
            per_workspace: 4,
            retention_days: 30,
        }
    }
}

/// Suppression lists (see `docs/privacy.md`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacySettings {
    /// How often each process checks whether a suppression list changed (and reloads it),
    /// in milliseconds: a suppression or an erasure made anywhere is honoured everywhere
    /// within this time, and an erased subject's data leaves every process's memory.
    pub refresh_ms: u64,
}

impl Default for PrivacySettings {
    fn default() -> Self {
        Self { refresh_ms: 1_000 }
    }
}

/// Enrichment jobs: the workers every `serve` process runs.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct JobsSettings {
    /// Run job workers in this process.
    pub workers: bool,
    /// How long a worker holds the items it claimed, in milliseconds: the items of a
    /// worker that died are claimed again after it. Longer than a chunk takes (the
    /// request deadline).
    pub lease_ms: u64,
    /// How often an idle worker looks for work, in milliseconds (a job submitted to this
    /// process wakes it at once).
    pub poll_ms: u64,
    /// How long a finished job and its results are kept, in days.
    pub retention_days: u64,
    /// While its process answers at least this many requests at once, it is busy and
    /// its worker leaves the CPU to them: it starts a round (one chunk per workspace with
    /// work) only in a lull, when fewer are in flight, or once `busy_interval_ms` passed
    /// since its last round. Unset: the number of CPUs the process may use.
    pub busy_requests: Option<usize>,
    /// While its process stays busy, how long a worker waits for a lull at most before
    /// its next round, in milliseconds: what a job still gets from a saturated process.
    pub busy_interval_ms: u64,
    /// How long a key's jobs wait, at most, once its daily quota is spent before the
    /// worker looks again, in milliseconds: a raised quota (or a cancelled job) is seen
    /// within it; otherwise they wait until the quota resets at 00:00 UTC.
    pub quota_recheck_ms: u64,
}

impl Default for JobsSettings {
    fn default() -> Self {
        Self {
            workers: true,
            lease_ms: 60_000,
            poll_ms: 500,
            retention_days: 30,
            busy_requests: None,
            busy_interval_ms: 1_000,
            quota_recheck_ms: 60_000,
        }
    }
}

impl JobsSettings {
    /// How many requests in flight make a process busy.
    pub fn busy_requests(&self) -> usize {
        self.busy_requests.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1)
    }
}

/// Server secrets.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SecretsSettings {
    /// The key that seals the secrets the server must keep readable (the answer of an
    /// idempotent `POST /v1/api-keys`, replayed to a retry): 32 random bytes as
    /// base64url, e.g. from `leadlex seal-key`; also `LEADLEX_SEAL_KEY`. Every replica
    /// needs the same one. Unset with SQLite: generated on first run into
    /// `<database file>.seal-key` (mode 0600). Unset with PostgreSQL: `serve` refuses to
    /// start.
    pub seal_key: Option<Secret>,
}

/// Redis, for rate limits shared by every replica.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://host:6379`. Unset: each replica limits in-process (exact for one node).
    pub url: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://path/to/file.db` or `postgres://user@host/db`.
    pub url: String,
    /// Largest number of pooled connections.
    pub max_connections: u32,
    /// Seconds to wait for a pooled connection before failing the request.
    pub acquire_timeout_secs: u64,
    /// SQLite only: `full` (default: a commit survives a power cut) or `normal` (a commit
    /// survives a process crash; the last commits may be lost on a power cut).
    pub sqlite_synchronous: SqliteSynchronous,
    /// Group commit: while lookups settle concurrently, the writer starts a commit at
    /// most once per this many microseconds, so that each commit (an fsync) carries more
    /// of them. A lone lookup never waits. 0 (the default) commits as soon as the previous
    /// commit ends: on the benchmark machine a window saved CPU but no throughput, and
    /// added its wait to every settlement; it pays where a commit is slow (network disks).
    pub group_commit_window_us: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SqliteSynchronous {
    #[default]
    Full,
    Normal,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: "sqlite://leadlex.db".into(),
            max_connections: 16,
            acquire_timeout_secs: 5,
            sqlite_synchronous: SqliteSynchronous::Full,
            group_commit_window_us: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on; port 0 picks a free port (the bound address is logged).
    pub bind: String,
    /// Largest accepted request body, in bytes (larger: 413 `payload_too_large`), but for
    /// the two below.
    pub max_body_bytes: usize,
    /// Largest body of a bulk call (100 items), in bytes.
    pub max_bulk_body_bytes: usize,
    /// Largest body of a job submission (10,000 items, JSON or CSV), in bytes.
    pub max_job_body_bytes: usize,
    /// Deadline for the whole vendor waterfall of one request, in milliseconds.
    pub request_deadline_ms: u64,
    /// Log lines as JSON instead of text.
    pub json_logs: bool,
    /// How often the keys' `last_used_at` noted in memory are written, in milliseconds
    /// (a key's use is noted at most once a minute per replica).
    pub last_used_flush_ms: u64,
    /// How long a request body may take to arrive whole, in milliseconds, counted from
    /// the end of its headers; past it the request is answered `400` and the connection
    /// closed (a client sending a body slowly, or stopping, holds nothing for long).
    pub body_timeout_ms: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            max_body_bytes: 16 * 1024,
            max_bulk_body_bytes: 512 * 1024,
            max_job_body_bytes: 10 * 1024 * 1024,
            request_deadline_ms: 10_000,
            json_logs: false,
            last_used_flush_ms: 10_000,
            body_timeout_ms: 10_000,
        }
    }
}

/// One upstream vendor. `vendor_a` speaks the People Data Labs v5 format, `vendor_b`
/// Clearbit's legacy format.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VendorSettings {
    pub name: VendorName,
    /// Base URL, e.g. `https://api.peopledatalabs.com` (paths such as `/v5/person/enrich`
    /// are appended).
    pub base_url: String,
    pub api_key: Secret,
    /// Timeout of one call to this vendor, in milliseconds.
    #[serde(default = "default_vendor_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_vendor_timeout_ms() -> u64 {
    3_000
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    /// How long a vendor's answer is served from the cache, in seconds.
    pub ttl_secs: u64,
    /// Overrides `ttl_secs` for the `person` section (people change jobs more often than
    /// companies change names).
    pub person_ttl_secs: Option<u64>,
    /// Overrides `ttl_secs` for the `company` section.
    pub company_ttl_secs: Option<u64>,
    /// Overrides `ttl_secs` for the `social` section.
    pub social_ttl_secs: Option<u64>,
    /// How long "no vendor knows this input" is remembered, in seconds (0: never), so
    /// that repeated misses do not call the vendors again.
    pub negative_ttl_secs: u64,
    /// How long any cached vendor answer is kept at all, in days, whatever the TTLs say:
    /// the background purge deletes rows fetched longer ago (see `docs/privacy.md`).
    pub retention_days: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            ttl_secs: 30 * 24 * 3600,
            person_ttl_secs: None,
            company_ttl_secs: None,
            social_ttl_secs: None,
            negative_ttl_secs: 600,
            retention_days: 90,
        }
    }
}

/// How the vendor waterfall behaves.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct WaterfallSettings {
    /// When the first vendor matched but left fields empty, ask the next vendors to fill
    /// them (costs extra vendor calls, never extra credits).
    pub fill_gaps: bool,
    /// Extra attempts per vendor for failures that are safe to repeat (connection
    /// refused, 5xx, 429 with a short `Retry-After`); never after a timeout.
    pub max_retries: u32,
    /// Base of the jittered backoff between attempts, in milliseconds.
    pub retry_backoff_ms: u64,
    /// Consecutive failures that open a vendor's circuit breaker.
    pub breaker_failure_threshold: u32,
    /// How long an open breaker skips the vendor before one probe, in seconds.
    pub breaker_open_secs: u64,
}

impl Default for WaterfallSettings {
    fn default() -> Self {
        Self { fill_gaps: false, max_retries: 1, retry_backoff_ms: 100, breaker_failure_threshold: 5, breaker_open_secs: 30 }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct IdempotencySettings {
    /// How long a completed response is replayed, in seconds (the contract says 24 h).
    pub ttl_secs: u64,
    /// Lease of an in-progress claim beyond the request deadline, in milliseconds: a
    /// claim whose process died may be taken over after it.
    pub lease_margin_ms: u64,
    /// How often expired records and cache entries are purged, in seconds.
    pub purge_interval_secs: u64,
}

impl Default for IdempotencySettings {
    fn default() -> Self {
        Self { ttl_secs: 24 * 3600, lease_margin_ms: 5_000, purge_interval_secs: 300 }
    }
}

/// The hot in-process caches (see `docs/design.md`): each spares a database round trip
/// per request at the cost of a bounded staleness. Every cache is bounded by its
/// `capacity` (entries; evicted one at a time) and serves an entry for at most `ttl_ms`
/// milliseconds (0 turns the cache off).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HotCachesSettings {
    /// Usable API keys with their workspace's plan and a balance hint. A revocation,
    /// expiry change or plan change takes effect on every replica within `ttl_ms`.
    pub known_keys: HotCacheSettings,
    /// Well-formed keys found unknown or revoked, so that a flood of bad keys costs one
    /// database read per key and TTL. Kept apart from the known keys.
    pub unknown_keys: HotCacheSettings,
    /// Workspaces just seen at balance 0, so that a flood of 402s costs one read per
    /// `ttl_ms`; a top-up is honoured within it.
    pub empty_workspaces: HotCacheSettings,
    /// Completed idempotent calls, replayed from memory (immutable until they expire).
    pub replays: HotCacheSettings,
    /// Answers made of cache entries, with their rendering, shared by the calls that ask
    /// the same of the same entry (immutable: a changed entry is another answer; inputs
    /// of at most 256 bytes, so an answer is a few KB at most).
    pub answers: HotCacheSettings,
    /// Parsed enrichment cache rows. An entry replaced by another replica is seen within
    /// `ttl_ms`.
    pub cache_rows: HotCacheSettings,
}

impl Default for HotCachesSettings {
    fn default() -> Self {
        // Sized so that all of them together stay within tens of MB.
        Self {
            known_keys: HotCacheSettings { capacity: 100_000, ttl_ms: 1_000 },
            unknown_keys: HotCacheSettings { capacity: 100_000, ttl_ms: 10_000 },
            empty_workspaces: HotCacheSettings { capacity: 10_000, ttl_ms: 1_000 },
            replays: HotCacheSettings { capacity: 20_000, ttl_ms: 60_000 },
            answers: HotCacheSettings { capacity: 5_000, ttl_ms: 30_000 },
            cache_rows: HotCacheSettings { capacity: 10_000, ttl_ms: 30_000 },
        }
    }
}

/// One hot cache's bounds.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HotCacheSettings {
    /// Largest number of entries.
    pub capacity: usize,
    /// Longest time an entry is served, in milliseconds (0: the cache is off).
    pub ttl_ms: u64,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxSettings {
    /// Artificial latency of every sandbox vendor answer, in milliseconds.
    pub latency_ms: u64,
}

impl Settings {
    /// Defaults, then the TOML file if given, then `LEADLEX_*` environment variables.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut settings = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading configuration file {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing configuration file {}", path.display()))?
            }
            None => Settings::default(),
        };
        if let Ok(url) = std::env::var("LEADLEX_DATABASE_URL") {
            settings.database.url = url;
        }
        if let Ok(url) = std::env::var("LEADLEX_REDIS_URL") {
            settings.redis.url = Some(url).filter(|u| !u.is_empty());
        }
        if let Ok(bind) = std::env::var("LEADLEX_BIND") {
            settings.server.bind = bind;
        }
        if let Ok(key) = std::env::var("LEADLEX_SEAL_KEY") {
            settings.secrets.seal_key = Some(Secret::new(key)).filter(|k| !k.expose().is_empty());
        }
        if let Ok(json) = std::env::var("LEADLEX_JSON_LOGS") {
            settings.server.json_logs = matches!(json.as_str(), "1" | "true" | "yes");
        }
        Ok(settings)
    }

    /// The JSON Schema of the configuration file, as published in `openapi/`.
    pub fn json_schema() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(Settings)).expect("schema serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_file_overrides_defaults_and_rejects_unknown_keys() {
        let s: Settings = toml::from_str(
            "[database]\nurl = \"postgres://x/y\"\n[[vendors]]\nname = \"vendor_b\"\nbase_url = \"http://127.0.0.1:1\"\napi_key = \"k\"\n",
        )
        .unwrap();
        assert_eq!(s.database.url, "postgres://x/y");
        assert_eq!(s.vendors[0].name, VendorName::VendorB);
        assert_eq!(s.vendors[0].timeout_ms, 3_000);
        assert!(toml::from_str::<Settings>("[database]\nurll = \"x\"\n").is_err());
    }
}
