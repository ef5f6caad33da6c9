//! Durable enrichment jobs: up to [`MAX_ITEMS`] inputs submitted at once and worked
//! through in the background by the workers every `serve` process runs ([`Worker`]),
//! each item with exactly the rules of a bulk call's item ([`crate::bulk`]). Knows
//! nothing of HTTP.
//!
//! Invariants:
//! - a job and its items are stored in one transaction (with its `Idempotency-Key`
//!   record, so a retried submission makes one job);
//! - a worker claims a chunk of a job's items with a lease (PostgreSQL: `FOR UPDATE SKIP
//!   LOCKED`, so replicas share the work and never claim the same item); an item's lookup
//!   outcome is stored as soon as it is known (a retry after a crash asks no vendor
//!   again); its result, its charge and the job's counters commit in one settler
//!   transaction, and only while the worker still holds the lease: an item is charged at
//!   most once, exactly once if it succeeded, and no result is lost;
//! - a worker that dies leaves its items leased until the lease runs out
//!   (`[jobs] lease_ms`); then any worker claims them again;
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
//!   a worker finding the key expired cancels them before claiming or settling);
//! - a worker runs one chunk at a time per workspace and mode with runnable jobs, each as
//!   a task of its own, for at most [`WORKSPACES_PER_ROUND`] tenants at once, going round
//!   them: no tenant's backlog, spent quota or slow lookups hold up another's (a tenant
//!   whose chunk ended gets its next one at once, whatever the others' are doing);
//! - a finished job and its items are deleted `[jobs] retention_days` after it finished.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::{
    sea_query::Expr, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement, TransactionTrait,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use entity::{enrichment_job as job, enrichment_job_item as item};

use crate::auth::{KeyMode, KeyStanding, Principal};
use crate::bulk::{Caller, Completion, Defaults, ItemInput, ItemResult, StoredLookup};
use crate::config::JobsSettings;
use crate::enrich::{EnrichError, EnrichService};
use crate::hex::hex;
use crate::idempotency::{self, Begun, IdempotencyError, Idempotent};
use crate::lookup::input::Quality;
use crate::ratelimit::{Decision, Limiter, Limits, Plan};
use crate::scope::Scope;

/// The most items one job takes.
pub const MAX_ITEMS: usize = 10_000;
/// Rows per insert statement when a job is stored.
const INSERT_CHUNK: usize = 500;
/// How many workspaces a worker serves in one round (the next round starts after the
/// last one served).
pub const WORKSPACES_PER_ROUND: usize = 32;
/// How often a worker waiting for a lull in a busy process looks again.
const LULL_CHECK: Duration = Duration::from_millis(5);
/// Over how long a worker averages its process's load.
const LOAD_WINDOW: Duration = Duration::from_millis(200);

#[cfg(test)]
mod load_tests {
    use super::*;

    /// Requests of `concurrency` at once for `ms` milliseconds, seen every 5 ms.
    fn run(load: &mut Load, concurrency: f64, ms: u64) -> f64 {
        let mut mean = load.mean;
        for _ in 0..ms / 5 {
            let at = load.at + Duration::from_millis(5);
            mean = load.observe(at, load.micros + (5_000.0 * concurrency) as u64);
        }
        mean
    }

    #[test]
    fn the_mean_follows_the_load_within_its_window() {
        let mut load = Load { at: std::time::Instant::now(), micros: 0, mean: 0.0 };
        assert!((run(&mut load, 8.0, 2_000) - 8.0).abs() < 0.01, "a steady load is its own mean");
        let after_lull = run(&mut load, 0.0, 100);
        assert!(after_lull > 2.0 && after_lull < 8.0, "half a window of quiet halves it roughly: {after_lull}");
        assert!(run(&mut load, 0.0, 1_000) < 0.05, "a quiet second forgets it");
        // One sample over a long round weighs its whole span.
        let at = load.at + Duration::from_secs(1);
        assert!((load.observe(at, load.micros + 3_000_000) - 3.0).abs() < 0.05);
    }
}

#[cfg(test)]
mod csv_tests {
    use super::*;

    #[test]
    fn what_the_pattern_takes_the_reader_takes_and_the_rest_is_refused() {
        for ok in [
            "email\njane@acme.com\n",
            "\u{feff}Name,\"E-mail\",Domain\r\nJane,,acme.com",
            "\"a,b\", email ,reference\n\"x\ny\",jane@acme.com,\"crm, 1\"\n",
            "DOMAIN\r acme.com",
        ] {
            let items = parse_csv(ok).unwrap_or_else(|p| panic!("{ok:?}: {p:?}"));
            assert!(!items.is_empty(), "{ok:?}");
        }
        for bad in ["", "email", "email\n\n  ,\n", "name\nJane\n", " \"email\"\nx\n", "e-mail\nx\n"] {
            assert!(parse_csv(bad).is_err(), "{bad:?}");
        }
        let items = parse_csv("\"a,b\", email ,reference\n\"x\ny\",jane@acme.com,\"crm, 1\"\n").unwrap();
        assert_eq!((items[0].email.as_deref(), items[0].reference.as_deref()), (Some("jane@acme.com"), Some("crm, 1")));
    }

    /// Every string the published pattern allows is a submission the server takes (what
    /// Schemathesis sends as valid must be accepted).
    #[test]
    fn the_reader_takes_everything_the_pattern_generates() {
        use rand::{Rng, SeedableRng};
        let body = CSV_PATTERN.strip_prefix('^').and_then(|p| p.strip_suffix('$')).expect("anchored");
        let generator = rand_regex::Regex::compile(body, 8).expect("the pattern compiles for the generator");
        let mut rng = rand::rngs::StdRng::seed_from_u64(20261203);
        for _ in 0..5_000 {
            let text: String = rng.sample(&generator);
            parse_csv(&text).unwrap_or_else(|p| panic!("{text:?} matches CSV_PATTERN but was refused: {p:?}"));
        }
    }
}

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
            Status::Completed => "completed",
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

/// A job as its owner sees it. Times are epoch milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobView {
    pub id: String,
    pub status: String,
    /// Why it was cancelled (see [`CancelReason`]), when it was.
    pub cancel_reason: Option<String>,
    pub total: i64,
    pub done: i64,
    pub succeeded: i64,
    pub no_match: i64,
    pub failed: i64,
    pub credits_charged: i64,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

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

fn new_id() -> String {
    format!("job_{}", uuid::Uuid::now_v7().simple())
}

fn include_json(include: Option<&[String]>) -> Option<String> {
    include.map(|l| serde_json::to_string(l).expect("strings serialise"))
}

fn include_of(stored: Option<&str>) -> Option<Vec<String>> {
    stored.and_then(|s| serde_json::from_str(s).ok())
}

/// What a submission means, for idempotency.
pub fn fingerprint(items: &[ItemInput], defaults: Defaults<'_>) -> String {
    let mut hash = Sha256::new();
    hash.update(b"POST /v1/enrich/jobs\n");
    hash.update(crate::bulk::fingerprint(items, defaults).as_bytes());
    hex(&hash.finalize())
}

/// Stores a new job of `items` for `principal` (once per `Idempotency-Key`); `true` when
/// this is a replay of an earlier submission (the job as it is now).
pub async fn submit(
    db: &DatabaseConnection,
    principal: &Principal,
    items: &[ItemInput],
    defaults: Defaults<'_>,
    idem: Option<Idempotent<'_>>,
    now_ms: i64,
) -> Result<(JobView, bool), JobError> {
    let scope = &principal.scope;
    let ws = scope.workspace_id();
    let token = match idem {
        None => None,
        Some(idem) => match idempotency::begin(db, scope, idem, &fingerprint(items, defaults), None, now_ms).await? {
            Begun::Fresh(token) => Some(token),
            Begun::Replay { answer, .. } => {
                let id = String::from_utf8(answer).map_err(|e| JobError::Corrupt(e.to_string()))?;
                return Ok((get(db, scope, &id).await?, true));
            }
            Begun::Erased => return Err(JobError::Corrupt("a job submission's record says erased".into())),
        },
    };
    let id = new_id();
    let stored = async {
        let txn = db.begin().await?;
        job::Entity::insert(job::ActiveModel {
            id: Set(id.clone()),
            workspace_id: Set(ws.to_string()),
            api_key_id: Set(principal.key_id.clone()),
            mode: Set(scope.mode().as_str().to_string()),
            cancel_reason: Set(None),
            status: Set(Status::Queued.as_str().to_string()),
            include: Set(include_json(defaults.include)),
            quality: Set(
                (defaults.quality != Quality::default()).then(|| serde_json::to_string(&defaults.quality).expect("quality serialises"))
            ),
            total: Set(items.len() as i64),
            done: Set(0),
            succeeded: Set(0),
            no_match: Set(0),
            failed: Set(0),
            credits_charged: Set(0),
            created_at: Set(now_ms),
            started_at: Set(None),
            finished_at: Set(None),
            purge_after: Set(None),
        })
        .exec_without_returning(&txn)
        .await?;
        for (chunk_no, chunk) in items.chunks(INSERT_CHUNK).enumerate() {
            let rows = chunk.iter().map(ItemInput::storable).enumerate().map(|(n, it)| item::ActiveModel {
                job_id: Set(id.clone()),
                idx: Set((chunk_no * INSERT_CHUNK + n) as i32),
                email: Set(it.email.clone()),
                domain: Set(it.domain.clone()),
                include: Set(include_json(it.include.as_deref())),
                reference: Set(it.reference.clone()),
                state: Set(PENDING.to_string()),
                lease_owner: Set(None),
                lease_until: Set(None),
                lookup: Set(None),
                result: Set(None),
            });
            item::Entity::insert_many(rows).exec_without_returning(&txn).await?;
        }
        if let Some(token) = &token {
            if !idempotency::complete(&txn, token, 202, id.clone().into_bytes(), None).await? {
                txn.rollback().await?;
                return Err(IdempotencyError::lost().into());
            }
        }
        txn.commit().await?;
        Ok(())
    }
    .await;
    if let Err(err) = stored {
        if let Some(token) = &token {
            idempotency::release_quietly(db, token).await;
        }
        return Err(err);
    }
    Ok((get(db, scope, &id).await?, false))
}

/// The jobs of `scope`: its workspace's, of its mode.
fn in_scope(scope: &Scope) -> sea_orm::Condition {
    sea_orm::Condition::all().add(job::Column::WorkspaceId.eq(scope.workspace_id())).add(job::Column::Mode.eq(scope.mode().as_str()))
}

/// The job `id` of `scope` (one of another workspace or mode is `NotFound`).
pub async fn get(db: &impl ConnectionTrait, scope: &Scope, id: &str) -> Result<JobView, JobError> {
    job::Entity::find_by_id(id).filter(in_scope(scope)).one(db).await?.map(JobView::from).ok_or(JobError::NotFound)
}

/// A page of the jobs of `scope`, newest first, after the job `starting_after`; the
/// cursor of the next page when there is one.
pub async fn list(
    db: &DatabaseConnection,
    scope: &Scope,
    limit: u64,
    starting_after: Option<&str>,
) -> Result<(Vec<JobView>, Option<String>), JobError> {
    let mut q = job::Entity::find().filter(in_scope(scope));
    if let Some(after) = starting_after {
        q = q.filter(job::Column::Id.lt(after));
    }
    let rows = q.order_by_desc(job::Column::Id).limit(limit + 1).all(db).await?;
    let (rows, next) = crate::page::split(rows, limit, |j| j.id.clone());
    Ok((rows.into_iter().map(JobView::from).collect(), next))
}

/// Cancels the job `id` of `scope` (with its `enrichment.job.cancelled` event): its
/// items not started are cancelled (never charged); a chunk in flight finishes.
/// Cancelling a finished job changes nothing.
pub async fn cancel(db: &DatabaseConnection, scope: &Scope, id: &str, retention: Duration, now_ms: i64) -> Result<JobView, JobError> {
    let current = get(db, scope, id).await?;
    if current.status == Status::Completed.as_str() || current.status == Status::Cancelled.as_str() {
        return Ok(current);
    }
    let txn = db.begin().await?;
    // The items first (thousands of rows, no lock anyone else waits for: leased items are
    // left alone), the job's row last: the settler updates that row with every chunk it
    // settles, and must not wait for this transaction longer than its last statements.
    // Unleased pending items left means the job cannot complete meanwhile.
    item::Entity::update_many()
        .col_expr(item::Column::State, Expr::value(CANCELLED))
        .filter(item::Column::JobId.eq(id))
        .filter(item::Column::State.eq(PENDING))
        .filter(item::Column::LeaseUntil.is_null().or(item::Column::LeaseUntil.lt(now_ms)))
        .exec(&txn)
        .await?;
    mark_cancelled(&txn, scope, id, CancelReason::Requested, now_ms + retention.as_millis() as i64, now_ms).await?;
    txn.commit().await?;
    get(db, scope, id).await
}

/// Marks the unfinished job `id` cancelled for `reason` and records its event, in the
/// caller's transaction `txn`; whether it was unfinished.
async fn mark_cancelled(
    txn: &impl ConnectionTrait,
    scope: &Scope,
    id: &str,
    reason: CancelReason,
    purge_after_ms: i64,
    now_ms: i64,
) -> Result<bool, JobError> {
    let cancelled = job::Entity::update_many()
        .col_expr(job::Column::Status, Expr::value(Status::Cancelled.as_str()))
        .col_expr(job::Column::CancelReason, Expr::value(reason.as_str()))
        .col_expr(job::Column::FinishedAt, Expr::value(now_ms))
        .col_expr(job::Column::PurgeAfter, Expr::value(purge_after_ms))
        .filter(job::Column::Id.eq(id))
        .filter(in_scope(scope))
        .filter(job::Column::Status.is_in([Status::Queued.as_str(), Status::Running.as_str()]))
        .exec(txn)
        .await?
        .rows_affected;
    if cancelled > 0 {
        let data = crate::webhooks::outbox::job_data(&get(txn, scope, id).await?);
        crate::webhooks::outbox::record(txn, scope.workspace_id(), scope.mode(), crate::webhooks::Event::JobCancelled, &data, now_ms)
            .await?;
    }
    Ok(cancelled > 0)
}

/// Cancels every unfinished job the key `key_id` submitted (its mode's `scope`), items in
/// flight included (a worker's settlement of them then writes and charges nothing), in
/// the caller's transaction `txn`, each with its `enrichment.job.cancelled` event. How
/// many were cancelled. Their results are kept for `retention`.
pub async fn cancel_for_key(
    txn: &impl ConnectionTrait,
    scope: &Scope,
    key_id: &str,
    reason: CancelReason,
    retention: Duration,
    now_ms: i64,
) -> Result<u64, JobError> {
    let ids: Vec<String> = job::Entity::find()
        .select_only()
        .column(job::Column::Id)
        .filter(in_scope(scope))
        .filter(job::Column::ApiKeyId.eq(key_id))
        .filter(job::Column::Status.is_in([Status::Queued.as_str(), Status::Running.as_str()]))
        .into_tuple()
        .all(txn)
        .await?;
    let mut cancelled = 0;
    for id in &ids {
        item::Entity::update_many()
            .col_expr(item::Column::State, Expr::value(CANCELLED))
            .col_expr(item::Column::LeaseOwner, Expr::value(Option::<String>::None))
            .col_expr(item::Column::LeaseUntil, Expr::value(Option::<i64>::None))
            .filter(item::Column::JobId.eq(id.as_str()))
            .filter(item::Column::State.is_in([PENDING, LOOKED_UP]))
            .exec(txn)
            .await?;
        let purge_after = now_ms + retention.as_millis() as i64;
        cancelled += u64::from(mark_cancelled(txn, scope, id, reason, purge_after, now_ms).await?);
    }
    Ok(cancelled)
}

/// Deletes the jobs (and their items) whose retention ran out; returns how many.
pub async fn purge_expired(db: &DatabaseConnection, now_ms: i64) -> Result<u64, DbErr> {
    let expired: Vec<String> =
        job::Entity::find().select_only().column(job::Column::Id).filter(job::Column::PurgeAfter.lte(now_ms)).into_tuple().all(db).await?;
    for id in &expired {
        let txn = db.begin().await?;
        item::Entity::delete_many().filter(item::Column::JobId.eq(id.as_str())).exec(&txn).await?;
        job::Entity::delete_by_id(id.as_str()).exec(&txn).await?;
        txn.commit().await?;
    }
    Ok(expired.len() as u64)
}

/// An item a worker holds.
#[derive(Debug, Clone)]
struct Claimed {
    idx: i32,
    input: ItemInput,
    lookup: Option<StoredLookup>,
}

/// Claims up to `n` of the job's items that are not done and not held by a live lease,
/// in item order, for `owner` until `lease_until`.
async fn claim_items(
    db: &DatabaseConnection,
    job_id: &str,
    owner: &str,
    n: usize,
    now_ms: i64,
    lease_until: i64,
) -> Result<Vec<Claimed>, DbErr> {
    let backend = db.get_database_backend();
    let (sql, values): (&str, Vec<sea_orm::Value>) = match backend {
        DatabaseBackend::Postgres => (
            "UPDATE enrichment_job_items SET lease_owner = $1, lease_until = $2 \
             WHERE (job_id, idx) IN (SELECT job_id, idx FROM enrichment_job_items \
               WHERE job_id = $3 AND state IN ('pending', 'looked_up') AND (lease_until IS NULL OR lease_until < $4) \
               ORDER BY idx LIMIT $5 FOR UPDATE SKIP LOCKED) \
             RETURNING idx, email, domain, include, reference, lookup",
            vec![owner.into(), lease_until.into(), job_id.into(), now_ms.into(), (n as i64).into()],
        ),
        _ => (
            "UPDATE enrichment_job_items SET lease_owner = ?1, lease_until = ?2 \
             WHERE (job_id, idx) IN (SELECT job_id, idx FROM enrichment_job_items \
               WHERE job_id = ?3 AND state IN ('pending', 'looked_up') AND (lease_until IS NULL OR lease_until < ?4) \
               ORDER BY idx LIMIT ?5) \
             RETURNING idx, email, domain, include, reference, lookup",
            vec![owner.into(), lease_until.into(), job_id.into(), now_ms.into(), (n as i64).into()],
        ),
    };
    let rows = db.query_all(Statement::from_sql_and_values(backend, sql, values)).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let include: Option<String> = row.try_get("", "include")?;
        let lookup: Option<String> = row.try_get("", "lookup")?;
        out.push(Claimed {
            idx: row.try_get("", "idx")?,
            input: ItemInput {
                email: row.try_get("", "email")?,
                domain: row.try_get("", "domain")?,
                include: include_of(include.as_deref()),
                reference: row.try_get("", "reference")?,
            },
            lookup: lookup.and_then(|l| serde_json::from_str(&l).ok()),
        });
    }
    out.sort_by_key(|c| c.idx);
    Ok(out)
}

/// Gives items back (a chunk that could not run now).
async fn release_items(db: &DatabaseConnection, job_id: &str, owner: &str, idxs: &[i32]) -> Result<(), DbErr> {
    item::Entity::update_many()
        .col_expr(item::Column::LeaseOwner, Expr::value(Option::<String>::None))
        .col_expr(item::Column::LeaseUntil, Expr::value(Option::<i64>::None))
        .filter(item::Column::JobId.eq(job_id))
        .filter(item::Column::LeaseOwner.eq(owner))
        .filter(item::Column::Idx.is_in(idxs.iter().copied()))
        .exec(db)
        .await?;
    Ok(())
}

/// Keeps the lookup outcomes of held items, so that a retry asks no vendor again.
async fn keep_lookups(db: &DatabaseConnection, job_id: &str, owner: &str, looked: &[(i32, &StoredLookup)]) -> Result<(), DbErr> {
    if looked.is_empty() {
        return Ok(());
    }
    let txn = db.begin().await?;
    for (idx, lookup) in looked {
        item::Entity::update_many()
            .col_expr(item::Column::State, Expr::value(LOOKED_UP))
            .col_expr(item::Column::Lookup, Expr::value(serde_json::to_string(lookup).expect("a lookup serialises")))
            .filter(item::Column::JobId.eq(job_id))
            .filter(item::Column::Idx.eq(*idx))
            .filter(item::Column::LeaseOwner.eq(owner))
            .filter(item::Column::State.eq(PENDING))
            .exec(&txn)
            .await?;
    }
    txn.commit().await
}

/// The background worker of one serving process.
pub struct Worker {
    pub db: DatabaseConnection,
    pub enrich: Arc<EnrichService>,
    pub limiter: Arc<Limiter>,
    pub settings: JobsSettings,
    /// This process's lease owner name.
    pub owner: String,
    /// Woken when this process stores a job.
    pub wake: Arc<tokio::sync::Notify>,
    /// This process's metrics: its request count tells interactive traffic.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Worker {
    /// Works until `stop` is notified: a chunk per workspace with work at a time, then
    /// again at once while there was work, else after `poll_ms` (or a wake-up). While
    /// its process is busy with requests, each round waits for a lull first (see
    /// [`Worker::lull`]).
    pub async fn run(self, stop: Arc<tokio::sync::Notify>) {
        let this = Arc::new(self);
        let poll = Duration::from_millis(this.settings.poll_ms.max(10));
        let mut rounds = Rounds::default();
        let mut chunks: tokio::task::JoinSet<(Tenant, String, Result<Chunk, EnrichError>)> = tokio::task::JoinSet::new();
        let mut backoff = crate::backoff::Backoff::default();
        let mut last_round = tokio::time::Instant::now();
        let mut load = Load::new(&this.metrics);
        // Read once: the number of CPUs comes from the cgroup's files on Linux.
        let busy = this.settings.busy_requests() as i64;
        loop {
            while let Some(done) = chunks.try_join_next() {
                rounds.ended(done);
            }
            tokio::select! {
                _ = stop.notified() => break,
                _ = this.lull(&mut load, busy, last_round) => {}
            }
            last_round = tokio::time::Instant::now();
            let (started, wait) = match this.clone().start_chunks(&mut rounds, &mut chunks).await {
                Ok(started) => {
                    if backoff.succeeded() {
                        tracing::info!("the job worker works again");
                    }
                    (started, poll)
                }
                Err(err) => {
                    // The database is down, most likely: wait longer each time, say so
                    // now and then, go on by itself when it answers again.
                    let (wait, log) = backoff.failed(poll);
                    if log {
                        tracing::warn!(error = %err, retry_in_ms = wait.as_millis() as u64, "a job worker round failed");
                    }
                    (0, wait)
                }
            };
            if started > 0 {
                continue;
            }
            tokio::select! {
                _ = stop.notified() => break,
                _ = this.wake.notified() => {}
                // A tenant's chunk ended: it may go on at once, whatever the others do.
                Some(done) = chunks.join_next(), if !chunks.is_empty() => rounds.ended(done),
                _ = tokio::time::sleep(wait) => {}
            }
        }
        // The chunks in flight finish (their items are settled or left to their lease).
        while let Some(done) = chunks.join_next().await {
            rounds.ended(done);
        }
    }

    /// Interactive calls first: returns at once unless this process is busy, that is
    /// answering at least `busy` (`[jobs] busy_requests`) requests right now, or as many
    /// at once on average lately ([`Load`]); while it is, as soon as a lull comes (looked
    /// for every [`LULL_CHECK`]), at the latest `[jobs] busy_interval_ms` after the last
    /// round began. A job thus takes the capacity requests leave, and still moves on a
    /// saturated process.
    async fn lull(&self, load: &mut Load, busy: i64, last_round: tokio::time::Instant) {
        let latest = last_round + Duration::from_millis(self.settings.busy_interval_ms);
        loop {
            let mean = load.sample(&self.metrics);
            let now = tokio::time::Instant::now();
            if (self.metrics.requests_in_flight.get() < busy && mean < busy as f64) || now >= latest {
                return;
            }
            tokio::time::sleep(LULL_CHECK.min(latest.saturating_duration_since(now))).await;
        }
    }

    /// Starts a chunk of the oldest runnable job of each workspace and mode that has none
    /// in flight, each as a task of its own (a slow tenant's chunk paces nobody else's),
    /// for up to [`WORKSPACES_PER_ROUND`] tenants in flight at once, going round them
    /// from the last one started; how many it started.
    async fn start_chunks(
        self: Arc<Self>,
        rounds: &mut Rounds,
        chunks: &mut tokio::task::JoinSet<(Tenant, String, Result<Chunk, EnrichError>)>,
    ) -> Result<usize, EnrichError> {
        let now = crate::now_ms();
        rounds.paused.retain(|_, until| *until > now);
        let room = WORKSPACES_PER_ROUND.saturating_sub(rounds.tasks.len());
        if room == 0 {
            return Ok(0);
        }
        // The oldest runnable job of each workspace and mode: one row per tenant, however
        // many jobs each has waiting.
        let oldest: Vec<(String, String, String)> = job::Entity::find()
            .select_only()
            .column(job::Column::WorkspaceId)
            .column(job::Column::Mode)
            .column_as(job::Column::Id.min(), "id")
            .filter(job::Column::Status.is_in([Status::Queued.as_str(), Status::Running.as_str()]))
            .group_by(job::Column::WorkspaceId)
            .group_by(job::Column::Mode)
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut tenants: Vec<(Tenant, String)> = oldest
            .into_iter()
            .map(|(ws, mode, id)| ((ws, mode), id))
            .filter(|(t, _)| !rounds.paused.contains_key(t) && !rounds.tasks.values().any(|running| running == t))
            .collect();
        tenants.sort();
        // Round-robin: start after the last tenant started.
        let start = rounds.cursor.as_ref().map_or(0, |c| tenants.partition_point(|(t, _)| t <= c));
        let start = start.min(tenants.len());
        tenants.rotate_left(start);
        tenants.truncate(room);
        if let Some((last, _)) = tenants.last() {
            rounds.cursor = Some(last.clone());
        }
        let ids: Vec<String> = tenants.iter().map(|(_, id)| id.clone()).collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let firsts = job::Entity::find().filter(job::Column::Id.is_in(ids)).all(&self.db).await?;
        for j in firsts {
            let tenant = (j.workspace_id.clone(), j.mode.clone());
            let this = self.clone();
            let task = tenant.clone();
            let handle = chunks.spawn(async move {
                let outcome = this.chunk(&j).await;
                (task, j.id, outcome)
            });
            rounds.tasks.insert(handle.id(), tenant);
        }
        Ok(tenants.len())
    }

    /// The principal of `j`'s key while it can act; else `j` and the key's other jobs
    /// are cancelled (`None`).
    async fn active_principal(&self, j: &job::Model) -> Result<Option<Principal>, EnrichError> {
        let now = crate::now_ms();
        let reason = match crate::auth::key_standing(&self.db, &j.api_key_id, now).await? {
            KeyStanding::Active(principal) => return Ok(Some(principal)),
            KeyStanding::Revoked | KeyStanding::Unknown => CancelReason::ApiKeyRevoked,
            KeyStanding::Expired => CancelReason::ApiKeyExpired,
        };
        let scope = Scope::new(j.workspace_id.clone(), KeyMode::parse(&j.mode).unwrap_or(KeyMode::Test));
        let retention = Duration::from_secs(self.settings.retention_days * 86_400);
        let txn = self.db.begin().await?;
        cancel_for_key(&txn, &scope, &j.api_key_id, reason, retention, now).await.map_err(|e| match e {
            JobError::Db(db) => EnrichError::from(db),
            other => anyhow::Error::new(other).into(),
        })?;
        txn.commit().await?;
        Ok(None)
    }

    /// Claims, looks up and settles one chunk of `j`.
    async fn chunk(&self, j: &job::Model) -> Result<Chunk, EnrichError> {
        let Some(principal) = self.active_principal(j).await? else {
            return Ok(Chunk::Idle);
        };
        let now = crate::now_ms();
        let size = chunk_size(principal.plan, principal.mode());
        let claimed = claim_items(&self.db, &j.id, &self.owner, size, now, now + self.settings.lease_ms as i64).await?;
        if claimed.is_empty() {
            return Ok(Chunk::Idle);
        }
        let idxs: Vec<i32> = claimed.iter().map(|c| c.idx).collect();
        // Items count against the key's daily quota only, never its per-minute limit.
        let daily = Limits { per_minute: None, per_day: principal.limits.per_day };
        if let Decision::Limited { retry_after, .. } = self.limiter.check_n(&principal.limit_scope, daily, idxs.len() as u64, now).await {
            release_items(&self.db, &j.id, &self.owner, &idxs).await?;
            return Ok(Chunk::Paused { until: now + retry_after.as_millis() as i64 });
        }
        if j.status == Status::Queued.as_str() {
            job::Entity::update_many()
                .col_expr(job::Column::Status, Expr::value(Status::Running.as_str()))
                .col_expr(job::Column::StartedAt, Expr::value(now))
                .filter(job::Column::Id.eq(j.id.as_str()))
                .filter(job::Column::Status.eq(Status::Queued.as_str()))
                .exec(&self.db)
                .await?;
        }
        let caller = Caller { scope: principal.scope.clone(), api_key_id: j.api_key_id.clone(), request_id: j.id.clone() };
        let inputs: Vec<ItemInput> = claimed.iter().map(|c| c.input.clone()).collect();
        let known: Vec<Option<StoredLookup>> = claimed.iter().map(|c| c.lookup.clone()).collect();
        let include = include_of(j.include.as_deref());
        let quality = j
            .quality
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| anyhow::Error::new(e).context("reading a job's quality"))?;
        let defaults = Defaults { include: include.as_deref(), quality: quality.unwrap_or_default() };
        let resolved = self.enrich.resolve(&caller, &inputs, defaults, &known).await?;
        let fresh: Vec<(i32, &StoredLookup)> =
            claimed.iter().zip(&resolved.fresh_lookups).filter_map(|(c, l)| l.as_ref().map(|l| (c.idx, l))).collect();
        keep_lookups(&self.db, &j.id, &self.owner, &fresh).await?;
        let purge_after_ms = crate::now_ms() + Duration::from_secs(self.settings.retention_days * 86_400).as_millis() as i64;
        let completion = Completion::JobItems { job_id: j.id.clone(), owner: self.owner.clone(), idxs, purge_after_ms };
        // The key may have expired while the chunk was looked up: nothing is charged in
        // its name after that.
        if !principal.is_current(crate::now_ms()) {
            self.active_principal(j).await?;
            return Ok(Chunk::Idle);
        }
        match self.enrich.settle_resolved(&caller, Arc::new(resolved), completion).await {
            Ok(_) => Ok(Chunk::Worked),
            // Our lease ran out and another worker took the items: it settles them.
            Err(EnrichError::LeaseLost) => Ok(Chunk::Worked),
            Err(err) => Err(err),
        }
    }
}

/// A workspace and a mode (`live`, `test`): what the workers share their rounds by.
type Tenant = (String, String);

/// What a worker remembers between rounds.
#[derive(Default)]
struct Rounds {
    /// Tenants whose daily quota is spent: not before (epoch ms).
    paused: std::collections::HashMap<Tenant, i64>,
    /// The chunks in flight: each task's tenant (one chunk per tenant at a time).
    tasks: std::collections::HashMap<tokio::task::Id, Tenant>,
    /// The last tenant a chunk was started for.
    cursor: Option<Tenant>,
}

impl Rounds {
    /// A tenant's chunk ended (or its task died): it may have another.
    fn ended(&mut self, done: Result<(Tenant, String, Result<Chunk, EnrichError>), tokio::task::JoinError>) {
        let (tenant, job, outcome) = match done {
            Ok(done) => done,
            Err(died) => {
                // A chunk that panicked: its items stay leased until the lease runs out.
                tracing::error!(error = %died, "a job chunk task died");
                self.tasks.remove(&died.id());
                return;
            }
        };
        self.tasks.retain(|_, t| *t != tenant);
        match outcome {
            Ok(Chunk::Paused { until }) => {
                self.paused.insert(tenant, until);
            }
            Ok(Chunk::Worked | Chunk::Idle) => {}
            Err(err) => tracing::warn!(job = %job, error = %err, "a job chunk failed; its items will be claimed again"),
        }
    }
}

/// The mean number of requests its process answered at once lately: by Little's law, the
/// request time that ended between two samples over the time between them, smoothed
/// exponentially over [`LOAD_WINDOW`]. (A moment's count can be low while a process is
/// saturated: when the clients themselves wait for the CPU.)
struct Load {
    at: std::time::Instant,
    micros: u64,
    mean: f64,
}

impl Load {
    fn new(metrics: &crate::metrics::Metrics) -> Self {
        Self { at: std::time::Instant::now(), micros: metrics.request_micros.load(std::sync::atomic::Ordering::Relaxed), mean: 0.0 }
    }

    fn sample(&mut self, metrics: &crate::metrics::Metrics) -> f64 {
        self.observe(std::time::Instant::now(), metrics.request_micros.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The mean after request time reached `micros` at `now`.
    fn observe(&mut self, now: std::time::Instant, micros: u64) -> f64 {
        let elapsed = now.duration_since(self.at);
        if elapsed.is_zero() {
            return self.mean;
        }
        let recent = micros.saturating_sub(self.micros) as f64 / elapsed.as_micros().max(1) as f64;
        let weight = 1.0 - (-elapsed.as_secs_f64() / LOAD_WINDOW.as_secs_f64()).exp();
        self.mean += weight * (recent - self.mean);
        (self.at, self.micros) = (now, micros);
        self.mean
    }
}

enum Chunk {
    Worked,
    Idle,
    /// The workspace's daily quota is spent: not before `until` (epoch ms).
    Paused {
        until: i64,
    },
}

/// What a CSV submission must look like, published as the `pattern` of its schema and
/// enforced by [`parse_csv`] with the very same text (ECMA, Python and Rust regex alike):
/// a header row of cells (quoted without line breaks, or unquoted), one of them `email`
/// or `domain` (any case, spaces around), then rows with at least one character that is
/// not white space, a comma or a quote (so at least one item). The rows themselves are
/// read by the `csv` crate, which reads anything (quotes, line breaks in quotes).
pub const CSV_PATTERN: &str = concat!(
    r#"^\uFEFF?(?:(?:"(?:[^"\r\n]|"")*"|[^\r\n",]*),)*"#,
    r#"(?:"[ \t]*(?:[Ee][Mm][Aa][Ii][Ll]|[Dd][Oo][Mm][Aa][Ii][Nn])[ \t]*"|[ \t]*(?:[Ee][Mm][Aa][Ii][Ll]|[Dd][Oo][Mm][Aa][Ii][Nn])[ \t]*)"#,
    r#"(?:,(?:"(?:[^"\r\n]|"")*"|[^\r\n",]*))*(?:\r\n|\n|\r)[\s\S]*[^\s,"][\s\S]*$"#
);

static CSV_SHAPE: std::sync::LazyLock<regex::Regex> =
    std::sync::LazyLock::new(|| regex::Regex::new(CSV_PATTERN).expect("CSV_PATTERN compiles"));

/// A CSV submission's problem, where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvProblem {
    pub message: String,
}

/// The items of a CSV document: a header row naming `email` and/or `domain` (and
/// optionally `reference`; other columns are ignored, names are case-insensitive), then
/// one row per item (an empty cell is a field left out). At most [`MAX_ITEMS`] rows.
pub fn parse_csv(text: &str) -> Result<Vec<ItemInput>, CsvProblem> {
    let problem = |message: String| CsvProblem { message };
    if !CSV_SHAPE.is_match(text) {
        return Err(problem("must be CSV: a header row naming an `email` or a `domain` column, then at least one row".into()));
    }
    let mut reader = csv::ReaderBuilder::new().flexible(true).trim(csv::Trim::All).from_reader(text.as_bytes());
    let headers = reader.headers().map_err(|e| problem(format!("the header row cannot be read: {e}")))?.clone();
    let column = |name: &str| headers.iter().position(|h| h.trim_start_matches('\u{feff}').eq_ignore_ascii_case(name));
    let (email, domain, reference) = (column("email"), column("domain"), column("reference"));
    if email.is_none() && domain.is_none() {
        return Err(problem("the header row must name an `email` or a `domain` column".into()));
    }
    let mut items = Vec::new();
    for (n, record) in reader.records().enumerate() {
        let record = record.map_err(|e| problem(format!("row {} cannot be read: {e}", n + 2)))?;
        if record.iter().all(str::is_empty) {
            continue; // a blank line
        }
        if items.len() == MAX_ITEMS {
            return Err(problem(format!("at most {MAX_ITEMS} rows")));
        }
        let cell = |at: Option<usize>| at.and_then(|i| record.get(i)).filter(|v| !v.is_empty()).map(str::to_string);
        items.push(ItemInput { email: cell(email), domain: cell(domain), include: None, reference: cell(reference) });
    }
    if items.is_empty() {
        return Err(problem("no row after the header".into()));
    }
    Ok(items)
}

/// A done item of a job: its input and its result.
#[derive(Debug, Clone)]
pub struct ResultRow {
    pub idx: i32,
    pub email: Option<String>,
    pub domain: Option<String>,
    pub result: ItemResult,
}

/// Up to `limit` done items of the job `id` of `scope` after item `starting_after`, in
/// item order; the cursor of the next page when there is one.
pub async fn result_rows(
    db: &DatabaseConnection,
    scope: &Scope,
    id: &str,
    limit: u64,
    starting_after: Option<i32>,
) -> Result<(Vec<ResultRow>, Option<i32>), JobError> {
    get(db, scope, id).await?;
    let mut q = item::Entity::find().filter(item::Column::JobId.eq(id)).filter(item::Column::State.eq(DONE));
    if let Some(after) = starting_after {
        q = q.filter(item::Column::Idx.gt(after));
    }
    let rows = q.order_by_asc(item::Column::Idx).limit(limit + 1).all(db).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let result: ItemResult =
            serde_json::from_str(row.result.as_deref().unwrap_or("null")).map_err(|e| JobError::Corrupt(e.to_string()))?;
        out.push(ResultRow { idx: row.idx, email: row.email, domain: row.domain, result });
    }
    Ok(crate::page::split(out, limit, |r| r.idx))
}
