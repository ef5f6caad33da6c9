//! An API key of a workspace. The plaintext key is never stored: only `key_hash`
//! (hex SHA-256 of the whole key, unique) and `prefix` (the first characters, for display).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub prefix: String,
    #[sea_orm(unique)]
    pub key_hash: String,
    /// Space-separated permission names, e.g. `write:enrich`.
    pub permissions: String,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub created_at: i64,
    pub description: Option<String>,
    /// `standard`, `high` or `unmetered` (see `auth::RateLimitTier`).
    pub rate_limit_tier: String,
    /// The key that created this one over the API; `None` when an operator did (CLI).
    pub created_by: Option<String>,
    /// When the key was last used, kept to the minute (written at most once a minute).
    pub last_used_at: Option<i64>,
    /// `live` (real vendors, real credits) or `test` (the sandbox, never charged; the key
    /// reads `wbk_test_…`).
    pub mode: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(belongs_to = "super::workspace::Entity", from = "Column::WorkspaceId", to = "super::workspace::Column::Id")]
    Workspace,
}

impl Related<super::workspace::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Workspace.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
