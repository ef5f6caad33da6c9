//! Durable enrichment jobs: a job (`enrichment_jobs`) and its items
//! (`enrichment_job_items`, one row per input, in order). Workers claim items with a
//! lease (`lease_owner`, `lease_until`); an item's lookup outcome is kept (`lookup`) as
//! soon as it is known, and its result (`result`) is written with its charge, in one
//! transaction. Jobs are listed per workspace newest first (`(workspace_id, id)`: job ids
//! are time-ordered) and found by workers by status; items are claimed in order within
//! their job (`(job_id, state, idx)`). Deleting a job deletes its items. New tables only.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000007_enrichment_jobs"
    }
}

#[derive(DeriveIden)]
enum Workspaces {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum EnrichmentJobs {
    Table,
    Id,
    WorkspaceId,
    ApiKeyId,
    Mode,
    Status,
    Include,
    Total,
    Done,
    Succeeded,
    NoMatch,
    Failed,
    CreditsCharged,
    CreatedAt,
    StartedAt,
    FinishedAt,
    PurgeAfter,
}

#[derive(DeriveIden)]
enum EnrichmentJobItems {
    Table,
    JobId,
    Idx,
    Email,
    Domain,
    Include,
    Reference,
    State,
    LeaseOwner,
    LeaseUntil,
    Lookup,
    Result,
}

const JOBS_BY_WORKSPACE: &str = "idx_enrichment_jobs_workspace";
const JOBS_BY_STATUS: &str = "idx_enrichment_jobs_status";
const ITEMS_BY_STATE: &str = "idx_enrichment_job_items_state";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let counter = |c: EnrichmentJobs| ColumnDef::new(c).big_integer().not_null().default(0).to_owned();
        manager
            .create_table(
                Table::create()
                    .table(EnrichmentJobs::Table)
                    .col(ColumnDef::new(EnrichmentJobs::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(EnrichmentJobs::WorkspaceId).string().not_null())
                    .col(ColumnDef::new(EnrichmentJobs::ApiKeyId).string().not_null())
                    .col(ColumnDef::new(EnrichmentJobs::Mode).string().not_null())
                    .col(ColumnDef::new(EnrichmentJobs::Status).string().not_null())
                    .col(ColumnDef::new(EnrichmentJobs::Include).string().null())
                    .col(counter(EnrichmentJobs::Total))
                    .col(counter(EnrichmentJobs::Done))
                    .col(counter(EnrichmentJobs::Succeeded))
                    .col(counter(EnrichmentJobs::NoMatch))
                    .col(counter(EnrichmentJobs::Failed))
                    .col(counter(EnrichmentJobs::CreditsCharged))
                    .col(ColumnDef::new(EnrichmentJobs::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(EnrichmentJobs::StartedAt).big_integer().null())
                    .col(ColumnDef::new(EnrichmentJobs::FinishedAt).big_integer().null())
                    .col(ColumnDef::new(EnrichmentJobs::PurgeAfter).big_integer().null())
                    .foreign_key(
                        ForeignKey::create().from(EnrichmentJobs::Table, EnrichmentJobs::WorkspaceId).to(Workspaces::Table, Workspaces::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(JOBS_BY_WORKSPACE)
                    .table(EnrichmentJobs::Table)
                    .col(EnrichmentJobs::WorkspaceId)
                    .col(EnrichmentJobs::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(JOBS_BY_STATUS)
                    .table(EnrichmentJobs::Table)
                    .col(EnrichmentJobs::Status)
                    .col(EnrichmentJobs::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(EnrichmentJobItems::Table)
                    .col(ColumnDef::new(EnrichmentJobItems::JobId).string().not_null())
                    .col(ColumnDef::new(EnrichmentJobItems::Idx).integer().not_null())
                    .col(ColumnDef::new(EnrichmentJobItems::Email).text().null())
                    .col(ColumnDef::new(EnrichmentJobItems::Domain).text().null())
                    .col(ColumnDef::new(EnrichmentJobItems::Include).string().null())
                    .col(ColumnDef::new(EnrichmentJobItems::Reference).text().null())
                    .col(ColumnDef::new(EnrichmentJobItems::State).string().not_null())
                    .col(ColumnDef::new(EnrichmentJobItems::LeaseOwner).string().null())
                    .col(ColumnDef::new(EnrichmentJobItems::LeaseUntil).big_integer().null())
                    .col(ColumnDef::new(EnrichmentJobItems::Lookup).text().null())
                    .col(ColumnDef::new(EnrichmentJobItems::Result).text().null())
                    .primary_key(Index::create().col(EnrichmentJobItems::JobId).col(EnrichmentJobItems::Idx))
                    .foreign_key(
                        ForeignKey::create()
                            .from(EnrichmentJobItems::Table, EnrichmentJobItems::JobId)
                            .to(EnrichmentJobs::Table, EnrichmentJobs::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(ITEMS_BY_STATE)
                    .table(EnrichmentJobItems::Table)
                    .col(EnrichmentJobItems::JobId)
                    .col(EnrichmentJobItems::State)
                    .col(EnrichmentJobItems::Idx)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(EnrichmentJobItems::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(EnrichmentJobs::Table).to_owned()).await
    }
}
