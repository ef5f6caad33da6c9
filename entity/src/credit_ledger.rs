//! The append-only credit ledger: one row per balance change (grants and debits).
//! For every workspace, `SUM(delta)` equals `workspaces.credit_balance`.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "credit_ledger")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub workspace_id: String,
    pub api_key_id: Option<String>,
    pub request_id: Option<String>,
    pub delta: i64,
    pub balance_after: i64,
    /// `grant` or `enrich`.
    pub reason: String,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
