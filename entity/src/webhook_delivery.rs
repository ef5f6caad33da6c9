//! One event for one webhook (the outbox): written in the same transaction as what caused
//! the event, then attempted by the delivery workers until it succeeds or its retries run
//! out. `id` is the `X-LeadLex-Delivery-ID`, the same on every attempt.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_deliveries")]
pub struct Model {
    /// A UUID (v4).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub webhook_id: String,
    pub workspace_id: String,
    /// `evt_…`: the payload's `id`, the same for every webhook the event went to.
    pub event_id: String,
    /// e.g. `enrichment.job.completed`.
    pub event: String,
    /// The payload's `data`, as JSON.
    pub data: String,
    /// When the event happened.
    pub created_at: i64,
    /// `pending`, `succeeded` or `failed`.
    pub state: String,
    /// Attempts made so far.
    pub attempts: i32,
    /// Attempts made since it was last queued (a redelivery starts a new round).
    pub round_attempts: i32,
    /// When a pending delivery is next attempted.
    pub next_attempt_at: Option<i64>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
    /// The last attempt's HTTP status; `None` when no answer came.
    pub status_code: Option<i32>,
    pub latency_ms: Option<i64>,
    /// Why the last attempt failed.
    pub error: Option<String>,
    pub last_attempt_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
