//! Quality controls and data retention: a job keeps the quality controls it was submitted
//! with (`min_confidence`, `max_age_days`, `refresh`, as JSON; none for existing jobs,
//! which keeps their meaning), and cache rows are found by age for the retention purge.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000008_quality"
    }
}

#[derive(DeriveIden)]
enum EnrichmentJobs {
    Table,
    Quality,
}

#[derive(DeriveIden)]
enum EnrichmentCache {
    Table,
    FetchedAt,
}

const CACHE_BY_AGE: &str = "idx_enrichment_cache_fetched_at";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter().table(EnrichmentJobs::Table).add_column(ColumnDef::new(EnrichmentJobs::Quality).text().null()).to_owned(),
            )
            .await?;
        manager
            .create_index(Index::create().name(CACHE_BY_AGE).table(EnrichmentCache::Table).col(EnrichmentCache::FetchedAt).to_owned())
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name(CACHE_BY_AGE).table(EnrichmentCache::Table).to_owned()).await?;
        manager.alter_table(Table::alter().table(EnrichmentJobs::Table).drop_column(EnrichmentJobs::Quality).to_owned()).await
    }
}
