//! An `Idempotency-Key` claim of a workspace: `in_progress` while the first call runs
//! (leased until `locked_until`), then `completed` with the call's answer (JSON written
//! by the domain) and the balance its settlement left, which a replay renders again.
//! Only successful (200) outcomes are ever stored as `completed`. A single call whose
//! subject was erased becomes `erased` (no answer kept): its replay is a `no_match`.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "idempotency_records")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub workspace_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub idempotency_key: String,
    /// Hex SHA-256 of method, path and normalised body.
    pub fingerprint: String,
    /// `in_progress` or `completed`.
    pub state: String,
    /// Random token of the claim's owner; only the owner may complete or release it.
    pub owner_token: String,
    pub locked_until: i64,
    pub response_status: Option<i32>,
    /// The completed call's answer, as the domain serialised it.
    pub response_body: Option<Vec<u8>>,
    /// The workspace's balance right after the completed call's debit.
    pub balance_after: Option<i64>,
    pub created_at: i64,
    pub expires_at: i64,
    /// The keyed hashes of the subjects the call was about (`crate::privacy` in the
    /// server), so that an erasure finds its replays: `one:h h…` for a single call,
    /// `bulk:` and each item's hashes, items separated by `;`. None for calls about no
    /// subject (key creation, job submission).
    pub subjects: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
