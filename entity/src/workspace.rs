//! A customer workspace: the owner of API keys, of a credit balance and of a plan.
//!
//! `credit_balance` is only changed by conditional updates that also append a ledger row.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "workspaces")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    /// `starter`, `pro`, `org` or `unmetered`.
    pub plan: String,
    /// Per-workspace override of the plan's per-minute limit.
    pub rate_limit_per_minute: Option<i64>,
    /// Per-workspace override of the plan's daily limit.
    pub rate_limit_per_day: Option<i64>,
    pub credit_balance: i64,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::api_key::Entity")]
    ApiKey,
}

impl Related<super::api_key::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::ApiKey.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
