//! Credit balances and the append-only ledger.
//!
//! Invariants: a balance never goes below zero (every debit is one conditional
//! `UPDATE … WHERE credit_balance >= k`, and the column has a CHECK); every change of a
//! balance appends a ledger row in the same transaction, so the sum of a workspace's
//! ledger always equals its balance. Grants are here; the debits of lookups are taken by
//! the [`crate::settler`], in batches, with the same rules.

use sea_orm::{
    sea_query::Expr, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter,
    QuerySelect, TransactionTrait,
};

use entity::{credit_ledger, workspace};

#[derive(Debug, thiserror::Error)]
pub enum CreditsError {
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
