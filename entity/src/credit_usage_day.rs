//! What a workspace's credits did in one UTC day: `charged` (credits its lookups took)
//! and `granted` (credits operators added). Written only by the settler, in the
//! transaction of the ledger rows it counts: for every workspace and day, `charged` is
//! minus the sum of that day's `enrich` ledger deltas and `granted` the sum of its
//! `grant` deltas. `day` is the epoch millisecond of the day's UTC midnight.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "credit_usage_days")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub workspace_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub day: i64,
    pub charged: i64,
    pub granted: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
