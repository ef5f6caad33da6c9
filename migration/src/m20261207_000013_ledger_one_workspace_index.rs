//! The credit ledger loses its index on `workspace_id` alone: `(workspace_id, id)`
//! (`m20261202_000005`) serves every query it served (its leading column is the same),
//! and each index costs every charge a write. A settling batch writes one ledger row
//! per charge, so one index fewer is one page fewer in every commit. Index only: no row
//! changes.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000013_ledger_one_workspace_index"
    }
}

#[derive(DeriveIden)]
enum CreditLedger {
    Table,
    WorkspaceId,
}

const BY_WORKSPACE: &str = "idx_credit_ledger_workspace";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name(BY_WORKSPACE).table(CreditLedger::Table).to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.create_index(Index::create().name(BY_WORKSPACE).table(CreditLedger::Table).col(CreditLedger::WorkspaceId).to_owned()).await
    }
}
