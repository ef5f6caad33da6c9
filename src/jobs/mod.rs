//! Durable enrichment jobs: up to [`MAX_ITEMS`] inputs submitted at once and worked
//! through in the background by the workers every `serve` process runs ([`Worker`]),
//! each item with exactly the rules of a bulk call's item ([`crate::bulk`]). Knows
//! nothing of HTTP.
//!
//! Invariants:
//! - a job and its items are stored in one transaction (with its `Idempotency-Key`
//!   record, so a retried submission makes one job);
//! - a worker leases a chunk of a job's items (PostgreSQL: `FOR UPDATE SKIP
//!   LOCKED`, so replicas share the work and never lease the same item); an item's lookup
//!   outcome is stored as soon as it is known (a retry after a crash asks no vendor
//!   again); its result, its charge and the job's counters commit in one settler
//!   transaction, and only while the worker still holds the lease: an item is charged at
//!   most once, exactly once if it succeeded, and no result is lost;
//! - a worker that dies leaves its items leased until the lease runs out
//!   (`[jobs] lease_ms`); then any worker leases them again;
//! - a workspace has at most one chunk in flight per serving process, of its plan's
//!   [`chunk_size`] (its concurrency); job items count against the daily quota of the key
//!   that submitted the job, never against the per-minute limit of interactive calls;
//!   interactive calls come first: while its process answers `[jobs] busy_requests`
//!   requests at once, a worker starts a round only in a lull, or `[jobs]
//!   busy_interval_ms` after its last one (a job's floor on a saturated process);
//! - every read and change of a job takes the caller's [`Scope`]: a job of another
//!   workspace or of the other mode (live, test) is `NotFound`;
//! - cancelling stops the items not started (never charged); the chunk in flight
//!   finishes. When the submitting key is revoked or expires, its jobs are cancelled
//!   (`api_key_revoked`, `api_key_expired`) with their items in flight too: nothing is
//!   charged in its name after that (a revocation cancels them in its own transaction;
//!   a worker finding the key expired cancels them before leasing or settling);
//! - a worker runs one chunk at a time per workspace and mode with runnable jobs, each as
//!   a task of its own, for at most [`WORKSPACES_PER_ROUND`] tenants at once, going round
//!   them: no tenant's backlog, spent quota or slow lookups hold up another's (a tenant
//!   whose chunk ended gets its next one at once, whatever the others' are doing);
//! - a finished job and its items are deleted `[jobs] retention_days` after it finished.
//!
//! Files: this one the types every part shares; `store` (submit, read, list, cancel,
//! purge), `worker` (leases, the worker and its scheduler), `csv` (the CSV grammar),
//! `results` (paging a job's results).

mod csv;
mod results;
mod store;
mod worker;

pub use csv::{parse_csv, CsvProblem, CSV_PATTERN};
pub use results::{result_rows, ResultRow};
pub use store::{cancel, cancel_for_key, fingerprint, get, list, purge_expired, submit};
pub use worker::{Worker, WORKSPACES_PER_ROUND};

use sea_orm::DbErr;

use entity::enrichment_job as job;

use crate::auth::KeyMode;
use crate::idempotency::IdempotencyError;
use crate::ratelimit::Plan;

/// The most items one job takes.
pub const MAX_ITEMS: usize = 10_000;
/// Rows per insert statement when a job is stored.
const INSERT_CHUNK: usize = 500;

/// A job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Queued,
    Running,
    Completed,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Completed => crate::outbox::JOB_COMPLETED,
            Status::Cancelled => "cancelled",
        }
    }
}

const PENDING: &str = "pending";
const LOOKED_UP: &str = "looked_up";
const DONE: &str = "done";
const CANCELLED: &str = "cancelled";

/// How many of a workspace's items are in flight at once on one serving process.
pub fn chunk_size(plan: Plan, mode: KeyMode) -> usize {
    if mode == KeyMode::Test {
        return 5;
    }
    match plan {
        Plan::Starter => 2,
        Plan::Pro => 5,
        Plan::Org => 10,
        Plan::Unmetered => 20,
    }
}

/// Why a job was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// Its owner asked (`DELETE /v1/enrich/jobs/{id}`).
    Requested,
    /// The key that submitted it was revoked.
    ApiKeyRevoked,
    /// The key that submitted it expired.
    ApiKeyExpired,
}

impl CancelReason {
    pub const ALL: [CancelReason; 3] = [CancelReason::Requested, CancelReason::ApiKeyRevoked, CancelReason::ApiKeyExpired];

    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::Requested => "requested",
            CancelReason::ApiKeyRevoked => "api_key_revoked",
            CancelReason::ApiKeyExpired => "api_key_expired",
        }
    }
}

pub use crate::outbox::JobView;

impl From<job::Model> for JobView {
    fn from(j: job::Model) -> Self {
        Self {
            id: j.id,
            status: j.status,
            cancel_reason: j.cancel_reason,
            total: j.total,
            done: j.done,
            succeeded: j.succeeded,
            no_match: j.no_match,
            failed: j.failed,
            credits_charged: j.credits_charged,
            created_at: j.created_at,
            started_at: j.started_at,
            finished_at: j.finished_at,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("no such job")]
    NotFound,
    #[error(transparent)]
    Idempotency(IdempotencyError),
    #[error("a stored answer could not be read: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Db(#[from] DbErr),
}

impl From<IdempotencyError> for JobError {
    fn from(err: IdempotencyError) -> Self {
        match err {
            IdempotencyError::Db(db) => Self::Db(db),
            other => Self::Idempotency(other),
        }
    }
}
