//! The job worker and its scheduler: every serving process leases chunks of items
//! (`lease_items`: a lease per item, so replicas share the work and a crashed worker's
//! items are leased again once the lease ends), looks them up with the rules of a bulk
//! call, and settles each chunk in one transaction. Each tenant (workspace and mode)
//! runs as its own task, round-robin across up to [`WORKSPACES_PER_ROUND`] tenants, so
//! neither a backlog nor a slow tenant paces another; the worker yields to interactive
//! load (its process's in-flight requests, averaged over `LOAD_WINDOW`).

use std::sync::Arc;
use std::time::Duration;

use sea_orm::{
    sea_query::Expr, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QuerySelect, Statement,
    TransactionTrait,
};

use entity::{enrichment_job as job, enrichment_job_item as item};

use crate::auth::{KeyMode, KeyStanding, Principal};
use crate::bulk::{Caller, Defaults, Finish, ItemInput, StoredLookup};
use crate::config::JobsSettings;
use crate::enrich::{EnrichError, EnrichService};
use crate::ratelimit::{Decision, Limiter};
use crate::scope::Scope;

use super::store::{cancel_for_key, include_of};
use super::{chunk_size, CancelReason, JobError, Status, LOOKED_UP, PENDING};

/// How many workspaces a worker serves in one round (the next round starts after the
/// last one served).
pub const WORKSPACES_PER_ROUND: usize = 32;
/// How often a worker waiting for a lull in a busy process looks again.
const LULL_CHECK: Duration = Duration::from_millis(5);
/// Over how long a worker averages its process's load.
const LOAD_WINDOW: Duration = Duration::from_millis(200);

/// An item a worker holds.
#[derive(Debug, Clone)]
struct Leased {
    idx: i32,
    input: ItemInput,
    lookup: Option<StoredLookup>,
}

/// Leases up to `n` of the job's items that are not done and not held by a live lease,
/// in item order, for `owner` until `lease_until`.
async fn lease_items(
    db: &DatabaseConnection,
    job_id: &str,
    owner: &str,
    n: usize,
    now_ms: i64,
    lease_until: i64,
) -> Result<Vec<Leased>, DbErr> {
    let backend = db.get_database_backend();
    let sql = crate::lease::Lease {
        table: "enrichment_job_items",
        key: "(job_id, idx)",
        candidates: "SELECT job_id, idx FROM enrichment_job_items \
            WHERE job_id = $3 AND state IN ('pending', 'looked_up') AND (lease_until IS NULL OR lease_until < $4) \
            ORDER BY idx LIMIT $5",
        lock: "FOR UPDATE SKIP LOCKED",
        returning: "idx, email, domain, include, reference, lookup",
    }
    .sql(backend);
    let values: Vec<sea_orm::Value> = vec![owner.into(), lease_until.into(), job_id.into(), now_ms.into(), (n as i64).into()];
    let rows = db.query_all(Statement::from_sql_and_values(backend, sql, values)).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let include: Option<String> = row.try_get("", "include")?;
        let lookup: Option<String> = row.try_get("", "lookup")?;
        out.push(Leased {
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
        let mut rounds = Rounds { quota_recheck: Duration::from_millis(this.settings.quota_recheck_ms), ..Default::default() };
        let mut chunks: tokio::task::JoinSet<ChunkEnd> = tokio::task::JoinSet::new();
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
    async fn start_chunks(self: Arc<Self>, rounds: &mut Rounds, chunks: &mut tokio::task::JoinSet<ChunkEnd>) -> Result<usize, EnrichError> {
        let now = crate::now_ms();
        rounds.paused.retain(|_, until| *until > now);
        let room = WORKSPACES_PER_ROUND.saturating_sub(rounds.tasks.len());
        if room == 0 {
            return Ok(0);
        }
        // The oldest runnable job of each workspace and mode: one row per tenant, however
        // many jobs each has waiting.
        // The oldest runnable job of each workspace and mode whose key is not waiting for
        // its quota: one row per tenant, however many jobs each has waiting (a key whose
        // daily quota is spent holds up its own jobs only, not its workspace's others).
        let waiting: Vec<String> = rounds.paused.keys().cloned().collect();
        let oldest: Vec<(String, String, String)> = job::Entity::find()
            .select_only()
            .column(job::Column::WorkspaceId)
            .column(job::Column::Mode)
            .column_as(job::Column::Id.min(), "id")
            .filter(job::Column::Status.is_in([Status::Queued.as_str(), Status::Running.as_str()]))
            .filter(job::Column::ApiKeyId.is_not_in(waiting))
            .group_by(job::Column::WorkspaceId)
            .group_by(job::Column::Mode)
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut tenants: Vec<(Tenant, String)> = oldest
            .into_iter()
            .map(|(ws, mode, id)| ((ws, mode), id))
            .filter(|(t, _)| !rounds.tasks.values().any(|running| running == t))
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
                (task, j.id, j.api_key_id, outcome)
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

    /// Leases, looks up and settles one chunk of `j`.
    async fn chunk(&self, j: &job::Model) -> Result<Chunk, EnrichError> {
        let Some(principal) = self.active_principal(j).await? else {
            return Ok(Chunk::Idle);
        };
        let now = crate::now_ms();
        let size = chunk_size(principal.plan, principal.mode());
        let mut leased = lease_items(&self.db, &j.id, &self.owner, size, now, now + self.settings.lease_ms as i64).await?;
        if leased.is_empty() {
            return Ok(Chunk::Idle);
        }
        let (limit_scope, limits) = principal.limits_for(crate::auth::Work::JobItems);
        if let Decision::Limited { retry_after, fits, .. } = self.limiter.check_n(&limit_scope, limits, leased.len() as u64, now).await {
            // What is left of the quota is used (a chunk smaller than the plan's), the rest
            // of the chunk given back; nothing left: the job waits for the quota.
            let fits = usize::try_from(fits).unwrap_or(usize::MAX).min(leased.len());
            let take = match fits {
                0 => 0,
                n => match self.limiter.check_n(&limit_scope, limits, n as u64, now).await {
                    Decision::Allowed(_) => n,
                    Decision::Limited { .. } => 0,
                },
            };
            let rest: Vec<i32> = leased.split_off(take).iter().map(|c| c.idx).collect();
            release_items(&self.db, &j.id, &self.owner, &rest).await?;
            if leased.is_empty() {
                return Ok(Chunk::Paused { until: now + retry_after.as_millis() as i64 });
            }
        }
        let idxs: Vec<i32> = leased.iter().map(|c| c.idx).collect();
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
        let inputs: Vec<ItemInput> = leased.iter().map(|c| c.input.clone()).collect();
        let known: Vec<Option<StoredLookup>> = leased.iter().map(|c| c.lookup.clone()).collect();
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
            leased.iter().zip(&resolved.fresh_lookups).filter_map(|(c, l)| l.as_ref().map(|l| (c.idx, l))).collect();
        keep_lookups(&self.db, &j.id, &self.owner, &fresh).await?;
        let purge_after_ms = crate::now_ms() + Duration::from_secs(self.settings.retention_days * 86_400).as_millis() as i64;
        let completion = Finish::JobItems { job_id: j.id.clone(), owner: self.owner.clone(), idxs, purge_after_ms };
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

/// How a chunk's task ends: its tenant, its job's id, the id of the key the job's items
/// count against, and what came of it.
type ChunkEnd = (Tenant, String, String, Result<Chunk, EnrichError>);

/// What a worker remembers between rounds.
#[derive(Default)]
struct Rounds {
    /// Keys whose daily quota is spent: their jobs wait until then (epoch ms), at most
    /// `quota_recheck` (a raised quota or a cancelled job is seen within it).
    paused: std::collections::HashMap<String, i64>,
    /// `[jobs] quota_recheck_ms`.
    quota_recheck: Duration,
    /// The chunks in flight: each task's tenant (one chunk per tenant at a time).
    tasks: std::collections::HashMap<tokio::task::Id, Tenant>,
    /// The last tenant a chunk was started for.
    cursor: Option<Tenant>,
}

impl Rounds {
    /// A tenant's chunk ended (or its task died): it may have another.
    fn ended(&mut self, done: Result<ChunkEnd, tokio::task::JoinError>) {
        let (tenant, job, key, outcome) = match done {
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
                self.paused.insert(key, until.min(crate::now_ms() + self.quota_recheck.as_millis() as i64));
            }
            Ok(Chunk::Worked | Chunk::Idle) => {}
            Err(err) => tracing::warn!(job = %job, error = %err, "a job chunk failed; its items will be leased again"),
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

#[cfg(test)]
mod tests {
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
