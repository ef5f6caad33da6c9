//! Negative caching: a cache entry is either a match (`outcome = 'match'`, the record)
//! or a remembered no-match (`outcome = 'no_match'`, record `null`).

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000002_cache_outcome"
    }
}

#[derive(DeriveIden)]
enum EnrichmentCache {
    Table,
    Outcome,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(EnrichmentCache::Table)
                    .add_column(ColumnDef::new(EnrichmentCache::Outcome).string().not_null().default("match"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table(EnrichmentCache::Table).drop_column(EnrichmentCache::Outcome).to_owned()).await
    }
}
