//! Credit balances and the append-only ledger.
//!
//! Invariants: a balance never goes below zero (every debit is one conditional
//! `UPDATE … WHERE credit_balance >= k`, and the column has a CHECK); every change of a
//! balance appends a ledger row in the same transaction, so the sum of a workspace's
//! ledger always equals its balance. Every change of a balance, the debits of lookups and
//! operators' grants alike, is made by the [`crate::settler`], the one writer; this module
//! reads.

use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect};

use entity::{credit_ledger, workspace};

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
