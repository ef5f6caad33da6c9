//! The credit ledger, read by the API: pages newest first by cursor within a workspace
//! (`(workspace_id, id)`: a page deep in the ledger is a seek, not a scan), and sums by
//! reason since a date for the usage figures (`(workspace_id, reason, created_at)`).
//! Indexes only: no row changes.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000005_ledger_indexes"
    }
}

#[derive(DeriveIden)]
enum CreditLedger {
    Table,
    Id,
    WorkspaceId,
    Reason,
    CreatedAt,
}

const BY_ID: &str = "idx_credit_ledger_workspace_id";
const BY_REASON: &str = "idx_credit_ledger_workspace_reason";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create().name(BY_ID).table(CreditLedger::Table).col(CreditLedger::WorkspaceId).col(CreditLedger::Id).to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(BY_REASON)
                    .table(CreditLedger::Table)
                    .col(CreditLedger::WorkspaceId)
                    .col(CreditLedger::Reason)
                    .col(CreditLedger::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name(BY_REASON).table(CreditLedger::Table).to_owned()).await?;
        manager.drop_index(Index::drop().name(BY_ID).table(CreditLedger::Table).to_owned()).await
    }
}
