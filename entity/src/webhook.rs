//! A workspace's webhook endpoint. The signing secret is stored sealed (it must be read
//! back to sign), never in the clear; `events` is a space-separated list of event names.
//! A webhook whose deliveries kept failing is inactive with a `disabled_reason`.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhooks")]
pub struct Model {
    /// `wh_` followed by a time-ordered UUID (v7): ids sort by creation.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub workspace_id: String,
    /// `live` or `test`: the mode of the key that created it; a test webhook gets the
    /// events of test mode only.
    pub mode: String,
    pub url: String,
    /// Space-separated event names, e.g. `enrichment.job.completed credits.low`.
    pub events: String,
    pub description: Option<String>,
    pub active: bool,
    /// `credits.low` fires when a debit takes the balance from at least this to below it.
    pub low_balance_threshold: i64,
    /// The `whsec_…` secret, sealed with the webhook's id as context.
    pub secret_sealed: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// Why the server turned the webhook off; `None` when it did not.
    pub disabled_reason: Option<String>,
    /// When the current run of failed attempts began; `None` after a success.
    pub failing_since: Option<i64>,
    /// `succeeded` or `failed`: the outcome of the last attempt.
    pub last_delivery_status: Option<String>,
    pub last_delivery_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
