//! leadlex: an enrichment API gateway. `POST /v1/email/enrich` answers "who is behind this
//! email or domain?" from upstream data vendors, charging one credit per successful lookup.
//!
//! # Layout
//! - [`api`]: the HTTP contract (poem-openapi types, the error envelope, request-scope
//!   middleware, the published spec and Swagger UI). No SQL, no business rule.
//! - [`enrich`]: the money path of one enrich call (idempotency, balance, lookup, settle),
//!   in the order `shared/DESIGN.md` fixes.
//! - [`auth`]: API keys (generation, hashing, lookup) and permissions.
//! - [`credits`]: balances and the append-only ledger.
//! - [`settler`]: group commit of successful lookups (debit, ledger, idempotency record,
//!   then the cache row), on a writer thread with its own connection per backend.
//! - [`idempotency`]: `Idempotency-Key` claims, replays and purging.
//! - [`ratelimit`]: per-workspace plans and their per-minute and daily limits.
//! - [`enrichment`]: input normalisation, the record model, the cache and the vendor
//!   waterfall; [`enrichment::vendors`] holds one adapter per upstream wire format.
//! - [`sandbox`]: built-in deterministic vendors speaking both wire formats over HTTP.
//! - [`admin`]: operator actions behind the CLI (workspaces, keys, grants).
//! - [`metrics`]: Prometheus metrics; [`memo`]: bounded expiring in-process caches.
//! - [`config`], [`db`], [`startup`], [`cli`], [`telemetry`]: plumbing.
//!
//! Persistence lives in the `entity` and `migration` crates of the workspace.

pub mod admin;
pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod credits;
pub mod db;
pub mod enrich;
pub mod enrichment;
pub mod idempotency;
pub mod memo;
pub mod metrics;
pub mod ratelimit;
pub mod sandbox;
pub mod settler;
pub mod startup;
pub mod telemetry;

/// The current instant as Unix epoch milliseconds, the unit of every stored timestamp.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
