//! The enrichment cache: the merged record a vendor returned for a normalised input
//! (`email:jane@acme.com`, `domain:acme.com`), served as `source: cached` until its
//! sections' TTLs run out, or a remembered no-match (`outcome = no_match`).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "enrichment_cache")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub cache_key: String,
    /// The record as JSON text (`null` for a no-match).
    pub record: String,
    /// `vendor_a` or `vendor_b`: who answered first.
    pub vendor: String,
    pub confidence: f64,
    pub fetched_at: i64,
    pub expires_at: i64,
    /// `match` or `no_match`.
    pub outcome: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
