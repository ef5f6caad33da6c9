//! Credit balances and the append-only ledger.
//!
//! Invariants: a balance never goes below zero (every debit is one conditional
//! `UPDATE … WHERE credit_balance >= 1`, and the column has a CHECK); every change of a
//! balance appends a ledger row in the same transaction, so the sum of a workspace's
//! ledger always equals its balance.

use sea_orm::{
    sea_query::Expr, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter,
    QuerySelect, TransactionTrait,
};

use entity::{credit_ledger, workspace};

#[derive(Debug, thiserror::Error)]
pub enum CreditsError {
    #[error("insufficient credits")]
    Insufficient,
    #[error("no such workspace")]
    UnknownWorkspace,
    #[error("amount must be positive")]
    InvalidAmount,
    #[error("credits database operation")]
    Database(#[from] DbErr),
}

/// Why a ledger row exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Grant,
    Enrich,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Grant => "grant",
            Reason::Enrich => "enrich",
        }
    }
}

/// The current balance, or `None` for an unknown workspace.
pub async fn balance(db: &impl ConnectionTrait, workspace_id: &str) -> Result<Option<i64>, DbErr> {
    let row: Option<i64> = workspace::Entity::find_by_id(workspace_id)
        .select_only()
        .column(workspace::Column::CreditBalance)
        .into_tuple()
        .one(db)
        .await?;
    Ok(row)
}

/// Adds `amount` credits; returns the new balance.
pub async fn grant(db: &impl TransactionTrait, workspace_id: &str, amount: i64) -> Result<i64, CreditsError> {
    if amount <= 0 {
        return Err(CreditsError::InvalidAmount);
    }
    let txn = db.begin().await?;
    let updated = workspace::Entity::update_many()
        .col_expr(workspace::Column::CreditBalance, Expr::col(workspace::Column::CreditBalance).add(amount))
        .filter(workspace::Column::Id.eq(workspace_id))
        .exec_with_returning(&txn)
        .await?;
    let Some(ws) = updated.into_iter().next() else {
        return Err(CreditsError::UnknownWorkspace);
    };
    append(&txn, workspace_id, None, None, amount, ws.credit_balance, Reason::Grant).await?;
    txn.commit().await?;
    Ok(ws.credit_balance)
}

/// Takes one credit inside the caller's transaction; returns the balance after it.
/// `Insufficient` when the balance is already zero (the caller must roll back).
pub async fn debit_one(
    txn: &impl ConnectionTrait,
    workspace_id: &str,
    api_key_id: &str,
    request_id: &str,
) -> Result<i64, CreditsError> {
    let updated = workspace::Entity::update_many()
        // i64, like `debit`: the two share one SQL text, and PostgreSQL's prepared
        // statement must see one parameter type.
        .col_expr(workspace::Column::CreditBalance, Expr::col(workspace::Column::CreditBalance).sub(1i64))
        .filter(workspace::Column::Id.eq(workspace_id))
        .filter(workspace::Column::CreditBalance.gte(1i64))
        .exec_with_returning(txn)
        .await?;
    let Some(ws) = updated.into_iter().next() else {
        return Err(CreditsError::Insufficient);
    };
    append(txn, workspace_id, Some(api_key_id), Some(request_id), -1, ws.credit_balance, Reason::Enrich).await?;
    Ok(ws.credit_balance)
}

/// Takes `k` credits at once if the balance covers them all; returns the balance after,
/// or `None` (nothing taken) when it does not.
pub async fn debit(txn: &impl ConnectionTrait, workspace_id: &str, k: i64) -> Result<Option<i64>, DbErr> {
    let updated = workspace::Entity::update_many()
        .col_expr(workspace::Column::CreditBalance, Expr::col(workspace::Column::CreditBalance).sub(k))
        .filter(workspace::Column::Id.eq(workspace_id))
        .filter(workspace::Column::CreditBalance.gte(k))
        .exec_with_returning(txn)
        .await?;
    Ok(updated.into_iter().next().map(|ws| ws.credit_balance))
}

/// One `enrich` ledger row per (api key id, request id, balance after), in one insert.
pub async fn append_debits(
    txn: &impl ConnectionTrait,
    workspace_id: &str,
    rows: &[(String, String, i64)],
) -> Result<(), DbErr> {
    if rows.is_empty() {
        return Ok(());
    }
    let now = crate::now_ms();
    credit_ledger::Entity::insert_many(rows.iter().map(|(key, request, after)| credit_ledger::ActiveModel {
        workspace_id: Set(workspace_id.to_string()),
        api_key_id: Set(Some(key.clone())),
        request_id: Set(Some(request.clone())),
        delta: Set(-1),
        balance_after: Set(*after),
        reason: Set(Reason::Enrich.as_str().to_string()),
        created_at: Set(now),
        ..Default::default()
    }))
    .exec_without_returning(txn)
    .await?;
    Ok(())
}

async fn append(
    db: &impl ConnectionTrait,
    workspace_id: &str,
    api_key_id: Option<&str>,
    request_id: Option<&str>,
    delta: i64,
    balance_after: i64,
    reason: Reason,
) -> Result<(), DbErr> {
    credit_ledger::Entity::insert(credit_ledger::ActiveModel {
        workspace_id: Set(workspace_id.to_string()),
        api_key_id: Set(api_key_id.map(str::to_string)),
        request_id: Set(request_id.map(str::to_string)),
        delta: Set(delta),
        balance_after: Set(balance_after),
        reason: Set(reason.as_str().to_string()),
        created_at: Set(crate::now_ms()),
        ..Default::default()
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
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
