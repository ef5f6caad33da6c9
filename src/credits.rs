//! Credit balances and the append-only ledger.
//!
//! Invariants: a balance never goes below zero (every debit is one conditional
//! `UPDATE … WHERE credit_balance >= k`, and the column has a CHECK); every change of a
//! balance appends a ledger row in the same transaction, so the sum of a workspace's
//! ledger always equals its balance, and adds to its UTC day's usage counter
//! (`credit_usage_days`), so the counters sum what the ledger says per day and reason.
//! Every change of a balance, the debits of lookups and operators' grants alike, is made
//! by the [`crate::settler`], the one writer; this module reads.

use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect};

use entity::{credit_ledger, credit_usage_day, workspace};

use crate::scope::Scope;
use crate::settler::{SettleError, Settler};

#[derive(Debug, thiserror::Error)]
pub enum CreditsError {
    #[error("no such workspace")]
    UnknownWorkspace,
    #[error("amount must be positive")]
    InvalidAmount,
    #[error("credits database operation")]
    Database(#[from] DbErr),
    #[error("changing the balance")]
    Settle(#[source] SettleError),
}

/// Why a ledger row exists (written by the settler, which owns the ledger's rows).
pub use crate::settler::Reason;

/// The current balance, or `None` for an unknown workspace.
pub async fn balance(db: &impl ConnectionTrait, workspace_id: &str) -> Result<Option<i64>, DbErr> {
    let row: Option<i64> =
        workspace::Entity::find_by_id(workspace_id).select_only().column(workspace::Column::CreditBalance).into_tuple().one(db).await?;
    Ok(row)
}

/// Adds `amount` credits through the settler (the one writer of balances and the
/// ledger); returns the new balance.
pub async fn grant(settler: &Settler, workspace_id: &str, amount: i64) -> Result<i64, CreditsError> {
    if amount <= 0 {
        return Err(CreditsError::InvalidAmount);
    }
    match settler.grant(workspace_id, amount).await {
        Ok(balance) => Ok(balance),
        Err(SettleError::UnknownWorkspace) => Err(CreditsError::UnknownWorkspace),
        Err(err) => Err(CreditsError::Settle(err)),
    }
}

/// The ledger of a workspace, oldest first (for operators and invariant checks).
pub async fn ledger(db: &impl ConnectionTrait, workspace_id: &str) -> Result<Vec<credit_ledger::Model>, DbErr> {
    use sea_orm::QueryOrder;
    credit_ledger::Entity::find()
        .filter(credit_ledger::Column::WorkspaceId.eq(workspace_id))
        .order_by_asc(credit_ledger::Column::Id)
        .all(db)
        .await
}

/// Which ledger entries to list: newest first, `limit` of them, older than the entry
/// `starting_after` (a cursor: the last id of the previous page).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerQuery {
    pub limit: u64,
    pub starting_after: Option<i64>,
    pub api_key_id: Option<String>,
    pub reason: Option<String>,
    /// Epoch ms, inclusive.
    pub from_ms: Option<i64>,
    /// Epoch ms, exclusive.
    pub to_ms: Option<i64>,
}

/// A page of the ledger of `scope`, newest first, and whether older entries follow: the
/// workspace's in live mode; nothing in test mode, which is never charged (and sees no
/// live data). Reads `idx_credit_ledger_workspace_id (workspace_id, id)`: a page deep in
/// the ledger costs what the first one does (a seek, not an offset).
pub async fn ledger_page(db: &impl ConnectionTrait, scope: &Scope, q: &LedgerQuery) -> Result<(Vec<credit_ledger::Model>, bool), DbErr> {
    if scope.is_test() {
        return Ok((Vec::new(), false));
    }
    let rows = ledger_page_query(scope.workspace_id(), q, db.get_database_backend()).all(db).await?;
    let (rows, more) = crate::page::split(rows, q.limit, |_| ());
    Ok((rows, more.is_some()))
}

/// The query of [`ledger_page`] (one row more than the page, to tell whether more
/// follow); public so that a test can ask each backend for its plan.
///
/// On PostgreSQL the workspace is matched as a range (`>= w AND <= w`) and the order is
/// `(workspace_id, id)`, not `id` alone: with `= w`, PostgreSQL drops the constant column
/// from the order and may walk the primary key backwards, filtering out every newer row
/// of other workspaces (measured: 96 ms for a page behind a million such rows, against
/// 0.1 ms through `(workspace_id, id)`); only that index gives this order, and a
/// backward scan starts at `(w, cursor)`. SQLite keeps `= w`: with a range on the first
/// column it cannot seek on `id` too, and would read the workspace from its newest entry
/// down to the cursor (measured: the oldest page 60× slower than the first).
pub fn ledger_page_query(workspace_id: &str, q: &LedgerQuery, backend: sea_orm::DatabaseBackend) -> sea_orm::Select<credit_ledger::Entity> {
    use sea_orm::QueryOrder;
    let find = credit_ledger::Entity::find();
    let mut find = if backend == sea_orm::DatabaseBackend::Postgres {
        find.filter(credit_ledger::Column::WorkspaceId.gte(workspace_id))
            .filter(credit_ledger::Column::WorkspaceId.lte(workspace_id))
            .order_by_desc(credit_ledger::Column::WorkspaceId)
    } else {
        find.filter(credit_ledger::Column::WorkspaceId.eq(workspace_id))
    };
    if let Some(id) = q.starting_after {
        find = find.filter(credit_ledger::Column::Id.lt(id));
    }
    if let Some(key) = &q.api_key_id {
        find = find.filter(credit_ledger::Column::ApiKeyId.eq(key.as_str()));
    }
    if let Some(reason) = &q.reason {
        find = find.filter(credit_ledger::Column::Reason.eq(reason.as_str()));
    }
    if let Some(from) = q.from_ms {
        find = find.filter(credit_ledger::Column::CreatedAt.gte(from));
    }
    if let Some(to) = q.to_ms {
        find = find.filter(credit_ledger::Column::CreatedAt.lt(to));
    }
    find.order_by_desc(credit_ledger::Column::Id).limit(q.limit + 1)
}

/// What a workspace's credits did: its balance, what lookups were charged today and this
/// month (UTC), what was granted this month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditUsage {
    pub balance: i64,
    pub charged_today: i64,
    pub charged_this_month: i64,
    pub granted_this_month: i64,
}

/// Midnight UTC of `now_ms`'s day, and the first of its month, in epoch ms.
pub fn day_and_month_start(now_ms: i64) -> (i64, i64) {
    use chrono::Datelike;
    let now = crate::time::at(now_ms);
    let month = now.date_naive().with_day(1).expect("the first").and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    (crate::time::utc_day_start(now_ms), month.timestamp_millis())
}

/// The credit usage of `scope` at `now_ms` (`None`: no such workspace): in test mode the
/// workspace's balance (as a test call's `credits_remaining` shows it) and nothing
/// charged or granted. Reads the workspace's day counters of this month
/// (`credit_usage_days`, which the settler adds each balance change to with its ledger
/// rows): at most 31 rows of its primary key.
pub async fn usage(db: &impl ConnectionTrait, scope: &Scope, now_ms: i64) -> Result<Option<CreditUsage>, DbErr> {
    let workspace_id = scope.workspace_id();
    let Some(balance) = balance(db, workspace_id).await? else { return Ok(None) };
    let mut usage = CreditUsage { balance, charged_today: 0, charged_this_month: 0, granted_this_month: 0 };
    if scope.is_test() {
        return Ok(Some(usage));
    }
    let (day, month) = day_and_month_start(now_ms);
    for d in usage_query(workspace_id, month).all(db).await? {
        if d.day >= day {
            usage.charged_today += d.charged;
        }
        usage.charged_this_month += d.charged;
        usage.granted_this_month += d.granted;
    }
    Ok(Some(usage))
}

/// A workspace's day counters since `since_ms` (a UTC midnight); public so that a test
/// can ask each backend for its plan.
pub fn usage_query(workspace_id: &str, since_ms: i64) -> sea_orm::Select<credit_usage_day::Entity> {
    credit_usage_day::Entity::find()
        .filter(credit_usage_day::Column::WorkspaceId.eq(workspace_id))
        .filter(credit_usage_day::Column::Day.gte(since_ms))
}
