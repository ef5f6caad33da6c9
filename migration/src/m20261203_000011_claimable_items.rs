//! The items a worker can still claim, indexed apart: `(job_id, idx)` of the items in
//! state `pending` or `looked_up` only (a partial index, on SQLite and PostgreSQL alike).
//! A claim reads the first few of these in item order; without this index it walked past
//! every item the job had already done (and their dead versions), so a chunk cost more
//! the further its job had got. Index only: no row changes.
//!
//! The predicate must stay the very text of the claim's own condition
//! (`state IN ('pending', 'looked_up')`), or the planners cannot use the index.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000011_claimable_items"
    }
}

#[derive(DeriveIden)]
enum EnrichmentJobItems {
    Table,
    JobId,
    Idx,
    State,
}

const CLAIMABLE: &str = "idx_enrichment_job_items_claimable";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(CLAIMABLE)
                    .table(EnrichmentJobItems::Table)
                    .col(EnrichmentJobItems::JobId)
                    .col(EnrichmentJobItems::Idx)
                    .and_where(Expr::col(EnrichmentJobItems::State).is_in(["pending", "looked_up"]))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name(CLAIMABLE).table(EnrichmentJobItems::Table).to_owned()).await
    }
}
