//! The job store: submitting a job (idempotently, its items inserted in chunks), reading
//! and listing jobs, cancelling them (by their owner, or when their key is revoked) and
//! purging expired ones. Every function takes the caller's [`Scope`]: another
//! workspace's or mode's job is `NotFound`.

use std::time::Duration;

use sea_orm::{
    sea_query::Expr, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
};
use sha2::{Digest, Sha256};

use entity::{enrichment_job as job, enrichment_job_item as item};

use crate::auth::Principal;
use crate::bulk::{Defaults, ItemInput};
use crate::hex::hex;
use crate::idempotency::{self, Begun, IdempotencyError, Idempotent};
use crate::lookup::input::Quality;
use crate::scope::Scope;

use super::{CancelReason, JobError, JobView, Status, CANCELLED, INSERT_CHUNK, LOOKED_UP, PENDING};

fn new_id() -> String {
    format!("job_{}", uuid::Uuid::now_v7().simple())
}

fn include_json(include: Option<&[String]>) -> Option<String> {
    include.map(|l| serde_json::to_string(l).expect("strings serialise"))
}

pub(super) fn include_of(stored: Option<&str>) -> Option<Vec<String>> {
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
pub(super) fn in_scope(scope: &Scope) -> sea_orm::Condition {
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
pub(super) async fn mark_cancelled(
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
        let data = crate::outbox::job_data(&get(txn, scope, id).await?);
        crate::outbox::record(txn, scope.workspace_id(), scope.mode(), crate::outbox::Event::JobCancelled, &data, now_ms).await?;
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
