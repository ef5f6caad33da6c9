//! `Idempotency-Key` claims, scoped to a workspace and a mode: the one protocol every
//! operation that takes the header goes through.
//!
//! [`begin`] → [`Begun::Fresh`] (the caller holds the claim, runs, then [`complete`]s it
//! in the transaction that stores its outcome, or [`release`]s it) or [`Begun::Replay`]
//! (the stored answer); a key still running or used with another request is an
//! [`IdempotencyError`], which every domain error wraps. The caller checks everything
//! that decides whether it may make the request *now* (permissions, mode) before
//! [`begin`], so that a replay is never answered to a caller who could not make it.
//!
//! A record is `in_progress` while its first call runs (leased until `locked_until`, a
//! little longer than the request deadline), then `completed` with the call's answer and
//! the balance its debit left, which are replayed until `expires_at` (created + 24 h). Only the claim's owner
//! (by `owner_token`) may complete (the [`crate::settler`] does, in the debit's
//! transaction) or release it; a claim whose lease ran out (its
//! process died) may be taken over. Non-200 outcomes release the claim, so a retry runs
//! again.

use std::time::Duration;

use sea_orm::{
    sea_query::{Expr, OnConflict},
    ActiveValue::Set,
    ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter,
};

use entity::idempotency_record as rec;

use crate::scope::Scope;

/// The `Retry-After` of a key still in use: the first call is polled for, not waited out
/// (its lease, the request deadline plus a margin, bounds only a dead process's hold).
pub const IN_USE_RETRY: Duration = Duration::from_secs(1);

/// Why an idempotent operation cannot run now; mapped to HTTP (409, 422) in `api::error`.
#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    #[error("a request with this Idempotency-Key is still in progress")]
    InUse { retry_after: Duration },
    #[error("this Idempotency-Key was used with a different request")]
    Reused,
    #[error(transparent)]
    Db(#[from] DbErr),
}

impl IdempotencyError {
    /// The claim was lost while the call ran (its lease ran out and a retry took it
    /// over): the retry does the work; this caller must roll back.
    pub fn lost() -> Self {
        IdempotencyError::InUse { retry_after: IN_USE_RETRY }
    }
}

/// What [`begin`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begun {
    /// The caller holds the claim now and must [`complete`] or [`release`] it.
    Fresh(ClaimToken),
    /// A completed call with the same request: its answer (as the domain stored it) and,
    /// for a call that was charged, the balance its debit left; replayable until
    /// `expires_at`.
    Replay { answer: Vec<u8>, balance_after: Option<i64>, expires_at: i64 },
    /// A completed call whose subject was erased since: nothing to replay.
    Erased,
}

/// Begins an idempotent operation in `scope` with the caller's `Idempotency-Key`, for
/// a request with `fingerprint`, about `subjects` (see `idempotency_records.subjects`).
pub async fn begin(
    db: &impl ConnectionTrait,
    scope: &Scope,
    idem: Idempotent<'_>,
    fingerprint: &str,
    subjects: Option<String>,
    now_ms: i64,
) -> Result<Begun, IdempotencyError> {
    let key = scope.idempotency_key(idem.key);
    match claim(db, scope.workspace_id(), &key, fingerprint, subjects, now_ms, idem.lease, idem.ttl).await? {
        Claim::Acquired(token) => Ok(Begun::Fresh(token)),
        Claim::Replay { answer, balance_after, expires_at } => Ok(Begun::Replay { answer, balance_after, expires_at }),
        Claim::Erased => Ok(Begun::Erased),
        Claim::InUse { retry_after } => Err(IdempotencyError::InUse { retry_after }),
        Claim::Reused => Err(IdempotencyError::Reused),
    }
}

/// Releases `claim` (see [`release`]) after a call that failed; a failed release is
/// logged (the lease runs out by itself, and a retry then takes the claim over).
pub async fn release_quietly(db: &impl ConnectionTrait, claim: &ClaimToken) {
    if let Err(err) = release(db, claim).await {
        tracing::error!(error = %err, "releasing an idempotency claim failed");
    }
}

/// An idempotent call's parameters: its `Idempotency-Key`, how long a claim is held and
/// how long the answer is replayed.
#[derive(Debug, Clone, Copy)]
pub struct Idempotent<'a> {
    pub key: &'a str,
    pub lease: Duration,
    pub ttl: Duration,
}

/// The record's states and the proof of owning a claim are the store's (the settler
/// completes a claim in the debit's transaction); this module decides when.
pub use crate::settler::claim::{ClaimToken, State};

/// What a claim attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Claim {
    /// The caller owns the key now and must complete or release it.
    Acquired(ClaimToken),
    /// A completed call with the same request: its answer (as the domain stored it) and,
    /// for a call that was charged, the balance its debit left; replayable until
    /// `expires_at`.
    Replay { answer: Vec<u8>, balance_after: Option<i64>, expires_at: i64 },
    /// A completed call whose subject was erased since: nothing to replay.
    Erased,
    /// The first call with this key is still running.
    InUse { retry_after: Duration },
    /// The key was used with a different request.
    Reused,
}

/// Tries to claim the stored `key` for a request with `fingerprint`, about `subjects`.
#[allow(clippy::too_many_arguments)]
async fn claim(
    db: &impl ConnectionTrait,
    workspace_id: &str,
    key: &str,
    fingerprint: &str,
    subjects: Option<String>,
    now_ms: i64,
    lease: Duration,
    ttl: Duration,
) -> Result<Claim, DbErr> {
    let lease_ms = lease.as_millis() as i64;
    let acquired = |token| ClaimToken::new(workspace_id, key, token);
    for _ in 0..4 {
        // Read first: a replay, a conflict or a reuse then costs no write (no write lock).
        let existing = rec::Entity::find_by_id((workspace_id.to_string(), key.to_string())).one(db).await?;
        let Some(existing) = existing else {
            let token = uuid::Uuid::new_v4().simple().to_string();
            let inserted = rec::Entity::insert(rec::ActiveModel {
                workspace_id: Set(workspace_id.to_string()),
                idempotency_key: Set(key.to_string()),
                fingerprint: Set(fingerprint.to_string()),
                state: Set(State::InProgress.as_str().to_string()),
                owner_token: Set(token.clone()),
                locked_until: Set(now_ms + lease_ms),
                response_status: Set(None),
                response_body: Set(None),
                balance_after: Set(None),
                created_at: Set(now_ms),
                expires_at: Set(now_ms + ttl.as_millis() as i64),
                subjects: Set(subjects.clone()),
            })
            .on_conflict(OnConflict::columns([rec::Column::WorkspaceId, rec::Column::IdempotencyKey]).do_nothing().to_owned())
            .exec_without_returning(db)
            .await?;
            if inserted == 1 {
                return Ok(Claim::Acquired(acquired(token)));
            }
            continue; // someone else inserted it meanwhile: read it
        };
        if existing.expires_at <= now_ms {
            delete_where(db, workspace_id, key, rec::Column::ExpiresAt.lte(now_ms)).await?;
            continue;
        }
        if existing.fingerprint != fingerprint {
            return Ok(Claim::Reused);
        }
        if existing.state == State::Erased.as_str() {
            return Ok(Claim::Erased);
        }
        if existing.state == State::Completed.as_str() {
            let Some(answer) = existing.response_body else {
                return Err(DbErr::Custom(format!("completed idempotency record {key} has no answer")));
            };
            return Ok(Claim::Replay { answer, balance_after: existing.balance_after, expires_at: existing.expires_at });
        }
        if existing.locked_until > now_ms {
            // The first call may end any moment (most take milliseconds; its lease only
            // bounds how long a dead process holds the key): ask again in a second.
            return Ok(Claim::InUse { retry_after: IN_USE_RETRY });
        }
        // The owner's lease ran out: take the claim over, unless someone else just did.
        let token = uuid::Uuid::new_v4().simple().to_string();
        let taken = rec::Entity::update_many()
            .col_expr(rec::Column::OwnerToken, Expr::value(token.clone()))
            .col_expr(rec::Column::LockedUntil, Expr::value(now_ms + lease_ms))
            .filter(own(workspace_id, key, &existing.owner_token))
            .exec(db)
            .await?;
        if taken.rows_affected == 1 {
            return Ok(Claim::Acquired(acquired(token)));
        }
    }
    // Lost every race: as if the key were in use.
    Ok(Claim::InUse { retry_after: Duration::from_secs(1) })
}

fn own(workspace_id: &str, key: &str, token: &str) -> Condition {
    Condition::all()
        .add(rec::Column::WorkspaceId.eq(workspace_id))
        .add(rec::Column::IdempotencyKey.eq(key))
        .add(rec::Column::State.eq(State::InProgress.as_str()))
        .add(rec::Column::OwnerToken.eq(token))
}

async fn delete_where(
    db: &impl ConnectionTrait,
    workspace_id: &str,
    key: &str,
    extra: impl sea_orm::sea_query::IntoCondition,
) -> Result<u64, DbErr> {
    let res = rec::Entity::delete_many()
        .filter(rec::Column::WorkspaceId.eq(workspace_id))
        .filter(rec::Column::IdempotencyKey.eq(key))
        .filter(extra)
        .exec(db)
        .await?;
    Ok(res.rows_affected)
}

/// Completes a claim with the answer of a call that charged nothing (creating an API
/// key, a test-mode lookup with the balance it reported), in the caller's transaction,
/// so that the answer is stored exactly when what it reports is. Charged calls are
/// completed by the settler, in their debit's transaction. `false` when the claim is no
/// longer this caller's (its lease ran out and a retry took it over): the caller must
/// then roll back.
pub async fn complete(
    db: &impl ConnectionTrait,
    claim: &ClaimToken,
    status: u16,
    answer: Vec<u8>,
    balance: Option<i64>,
) -> Result<bool, DbErr> {
    let res = rec::Entity::update_many()
        .col_expr(rec::Column::State, Expr::value(State::Completed.as_str()))
        .col_expr(rec::Column::ResponseStatus, Expr::value(i32::from(status)))
        .col_expr(rec::Column::ResponseBody, Expr::value(answer))
        .col_expr(rec::Column::BalanceAfter, Expr::value(balance))
        .filter({
            let (workspace_id, key, token) = claim.parts();
            own(workspace_id, key, token)
        })
        .exec(db)
        .await?;
    Ok(res.rows_affected == 1)
}

/// Gives the claim up (the call ended without a 200), so that a retry runs again.
pub async fn release(db: &impl ConnectionTrait, claim: &ClaimToken) -> Result<(), DbErr> {
    rec::Entity::delete_many()
        .filter({
            let (workspace_id, key, token) = claim.parts();
            own(workspace_id, key, token)
        })
        .exec(db)
        .await?;
    Ok(())
}

/// Deletes expired records and in-progress claims whose lease ran out; returns how many.
pub async fn purge_expired(db: &impl ConnectionTrait, now_ms: i64) -> Result<u64, DbErr> {
    let res = rec::Entity::delete_many()
        .filter(
            Condition::any()
                .add(rec::Column::ExpiresAt.lte(now_ms))
                .add(Condition::all().add(rec::Column::State.eq(State::InProgress.as_str())).add(rec::Column::LockedUntil.lte(now_ms))),
        )
        .exec(db)
        .await?;
    Ok(res.rows_affected)
}
