//! A suppressed subject: an email address or a whole domain that is never looked up,
//! for everyone (`scope` `*`, an operator's erasure) or for one workspace (`scope` its
//! id). The subject is stored only as a keyed hash; `hint` is a masked form shown to the
//! workspace (`j***@acme.com`, `acme.com`), never set for the global list.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "suppressions")]
pub struct Model {
    /// `sup_` followed by a time-ordered UUID (v7): ids sort by creation.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// `*` (global) or a workspace id.
    pub scope: String,
    /// `email` or `domain`.
    pub kind: String,
    /// Hex HMAC-SHA256 of `email:{address}` or `domain:{name}` under a server key.
    pub subject_hash: String,
    pub hint: Option<String>,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
