//! Test mode owns its webhooks, and a job says why it was cancelled.
//!
//! - `webhooks.mode`: `live` or `test`, the mode of the key that created it; a test
//!   webhook gets test events only (existing webhooks were created by live keys or test
//!   keys alike; they become live ones, which is what their events were).
//! - `enrichment_jobs.cancel_reason`: `requested` (cancelled over the API),
//!   `api_key_revoked` or `api_key_expired` (the submitting key can no longer act);
//!   none for jobs that were not cancelled, and for jobs cancelled before this.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000012_scopes"
    }
}

#[derive(DeriveIden)]
enum Webhooks {
    Table,
    Mode,
}

#[derive(DeriveIden)]
enum EnrichmentJobs {
    Table,
    CancelReason,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Webhooks::Table)
                    .add_column(ColumnDef::new(Webhooks::Mode).text().not_null().default("live"))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(EnrichmentJobs::Table)
                    .add_column(ColumnDef::new(EnrichmentJobs::CancelReason).text().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table(EnrichmentJobs::Table).drop_column(EnrichmentJobs::CancelReason).to_owned()).await?;
        manager.alter_table(Table::alter().table(Webhooks::Table).drop_column(Webhooks::Mode).to_owned()).await
    }
}
