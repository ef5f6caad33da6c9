//! A durable enrichment job of a workspace: its items (`enrichment_job_item`), processed
//! by the workers of every `serve` process. Counters move only with the transaction that
//! settles the items they count; `done = succeeded + no_match + failed`.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "enrichment_jobs")]
pub struct Model {
    /// `job_` + a time-ordered UUID (v7), so that ids sort by creation.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub workspace_id: String,
    /// The key that submitted it (its ledger rows name it).
    pub api_key_id: String,
    /// `live` or `test` (the submitting key's mode).
    pub mode: String,
    /// `queued`, `running`, `completed` or `cancelled`.
    pub status: String,
    /// The default sections of items that name none (a JSON array), or none: all.
    pub include: Option<String>,
    pub total: i64,
    pub done: i64,
    pub succeeded: i64,
    pub no_match: i64,
    pub failed: i64,
    pub credits_charged: i64,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// When its results are deleted (set when it finishes).
    pub purge_after: Option<i64>,
    /// The quality controls of its items (JSON: `min_confidence`, `max_age_days`,
    /// `refresh`), or none.
    pub quality: Option<String>,
    /// Why it was cancelled: `requested`, `api_key_revoked` or `api_key_expired`; none
    /// when it was not (or was before reasons were kept).
    pub cancel_reason: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
