//! One input of an enrichment job, in order (`idx` from 0).
//!
//! `state`: `pending` (not looked up yet), `looked_up` (its lookup outcome is in
//! `lookup`: a retry after a crash settles it without asking a vendor again), `done`
//! (its `result` written with its charge, in one transaction) or `cancelled` (never
//! started, never charged). A worker holds items it works on by a lease (`lease_owner`,
//! `lease_until`); an item whose lease ran out (its worker died) is claimed again.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "enrichment_job_items")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub job_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub idx: i32,
    pub email: Option<String>,
    pub domain: Option<String>,
    /// Section names as sent, a JSON array (checked when the item is processed).
    pub include: Option<String>,
    pub reference: Option<String>,
    pub state: String,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
    /// The lookup's outcome (JSON), once known.
    pub lookup: Option<String>,
    /// The item's result (JSON, the bulk result shape), once done.
    pub result: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
