//! leadlex: an enrichment API gateway. `POST /v1/email/enrich` answers "who is behind this
//! email or domain?" from upstream data vendors, charging one credit per successful lookup.
//!
//! # Layout
//! In layers, each using only those below it (`docs/design.md` section 19, checked by
//! `scripts/layers`): programs (`api`, `cli`, `startup`, `admin`, `sandbox`, `client`) →
//! capabilities (`webhooks`, `privacy`, `enrich`, `bulk`, `jobs`, `keys`, `erasure`) →
//! core (`idempotency`, `credits`, `auth`) → lookup (`lookup`, `test_mode`) → store
//! (`hot`, `outbox`, `settler`) → leaves.
//! - [`api`]: the HTTP contract (poem-openapi types, the error envelope, request-scope
//!   middleware, the published spec and Swagger UI). No SQL, no business rule.
//! - [`enrich`]: the money path of one enrich call (idempotency, balance, lookup, settle),
//!   in the order `docs/design.md` fixes; [`bulk`]: up to 100 of them in one call,
//!   settled in one transaction; [`jobs`]: up to 10,000 of them, stored and worked
//!   through in the background by every serving process.
//! - [`scope`]: who a request acts for (a workspace in one mode), which every query of a
//!   workspace's data takes.
//! - [`auth`]: API keys (generation, hashing, lookup) and permissions.
//! - [`credits`]: balances and the append-only ledger.
//! - [`settler`]: the one writer of balances, the ledger, completed idempotency records
//!   and the cache: group commit of successful lookups, grants, cache rows; on a writer
//!   thread with its own connection per backend. Knows no HTTP.
//! - [`idempotency`]: `Idempotency-Key` claims, replays and purging.
//! - [`keys`]: API keys as a workspace manages them (create, list, revoke), for the API
//!   and the CLI alike; [`key_activity`]: keys' `last_used_at`, noted in memory and
//!   written in the background; [`seal`]: authenticated encryption of the secrets the
//!   server must keep readable (a key-creation answer replayed to a retry).
//! - [`ratelimit`]: per-workspace plans and their per-minute and daily limits.
//! - [`lookup`]: finding out who is behind an input: normalisation, the record model,
//!   the cache and the vendor waterfall; [`lookup::vendors`] holds one adapter per
//!   upstream wire format.
//! - [`sandbox`]: built-in deterministic vendors speaking both wire formats over HTTP;
//!   [`test_mode`]: what a `wbk_test_…` key gets (the sandbox, free, its trigger inputs).
//! - [`admin`]: operator actions behind the CLI (workspaces, keys, grants).
//! - [`hot`]: the hot in-process caches' one mechanism (a bounded TTL cache with
//!   metrics); each instance is owned by the module whose data it holds.
//! - [`outbox`]: recording webhook events in their causes' transactions (part of the
//!   store: the settler records two of them).
//! - [`privacy`]: the suppression lists every lookup asks; [`erasure`]: forgetting a
//!   subject everywhere (an operator's act).
//! - [`webhooks`]: signed webhooks: endpoints and the delivery workers; [`outbound`]: the one guarded way
//!   to send HTTP to a customer's URL.
//! - [`metrics`]: Prometheus metrics.
//! - [`client`]: the command line's client of a running server (`leadlex enrich FILE.csv`,
//!   `leadlex job …`), over the public API.
//! - [`config`], [`db`], [`startup`], [`cli`], [`telemetry`]: plumbing; [`secret`],
//!   [`vendor_name`], [`hex`], [`page`], [`backoff`]: leaves that import nothing of the crate.
//!
//! Persistence lives in the `entity` and `migration` crates of the workspace.

pub mod admin;
pub mod api;
pub mod auth;
pub mod backoff;
pub mod bulk;
pub mod cli;
pub mod client;
pub mod config;
pub mod credits;
pub mod db;
pub mod enrich;
pub mod erasure;
pub mod hex;
pub mod hot;
pub mod idempotency;
pub mod jobs;
pub mod key_activity;
pub mod keys;
pub mod lease;
pub mod lookup;
pub mod metrics;
pub mod outbound;
pub mod outbox;
pub mod page;
pub mod privacy;
pub mod ratelimit;
pub mod sandbox;
pub mod scope;
pub mod seal;
pub mod secret;
pub mod settler;
pub mod startup;
pub mod telemetry;
pub mod test_mode;
pub mod time;
pub mod validation;
pub mod vendor_name;
pub mod webhooks;

/// The current instant as Unix epoch milliseconds, the unit of every stored timestamp.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
