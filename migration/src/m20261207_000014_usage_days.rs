//! The usage figures from a counter per workspace and UTC day instead of an index row
//! per charge: `credit_usage_days (workspace_id, day, charged, granted)`, which the
//! settler adds each balance change to in the transaction that writes its ledger rows
//! (one row per workspace and batch, where the index `(workspace_id, reason,
//! created_at)` took one entry per charge). Filled from the ledger as it stands; the
//! index is dropped. Invariant: for every workspace and day, `charged` is minus the sum
//! of that day's `enrich` ledger deltas and `granted` the sum of its `grant` deltas
//! (`day` is the epoch millisecond of the day's UTC midnight).

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000014_usage_days"
    }
}

#[derive(DeriveIden)]
enum CreditUsageDays {
    Table,
    WorkspaceId,
    Day,
    Charged,
    Granted,
}

#[derive(DeriveIden)]
enum CreditLedger {
    Table,
    WorkspaceId,
    Reason,
    CreatedAt,
}

const BY_REASON: &str = "idx_credit_ledger_workspace_reason";

/// Each ledger row counted in its UTC day, in both dialects: the day floored as the
/// settler floors it (`time::utc_day_start`; `%` truncates toward zero, hence the
/// double remainder, which only an instant before 1970 would need).
const BACKFILL: &str = "INSERT INTO credit_usage_days (workspace_id, day, charged, granted) \
     SELECT workspace_id, created_at - ((created_at % 86400000) + 86400000) % 86400000, \
     COALESCE(SUM(CASE WHEN reason = 'enrich' THEN -delta ELSE 0 END), 0), \
     COALESCE(SUM(CASE WHEN reason = 'grant' THEN delta ELSE 0 END), 0) \
     FROM credit_ledger GROUP BY workspace_id, created_at - ((created_at % 86400000) + 86400000) % 86400000";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(CreditUsageDays::Table)
                    .col(ColumnDef::new(CreditUsageDays::WorkspaceId).string().not_null())
                    .col(ColumnDef::new(CreditUsageDays::Day).big_integer().not_null())
                    .col(ColumnDef::new(CreditUsageDays::Charged).big_integer().not_null().default(0))
                    .col(ColumnDef::new(CreditUsageDays::Granted).big_integer().not_null().default(0))
                    .primary_key(Index::create().col(CreditUsageDays::WorkspaceId).col(CreditUsageDays::Day))
                    .to_owned(),
            )
            .await?;
        manager.get_connection().execute_unprepared(BACKFILL).await?;
        manager.drop_index(Index::drop().name(BY_REASON).table(CreditLedger::Table).to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
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
            .await?;
        manager.drop_table(Table::drop().table(CreditUsageDays::Table).to_owned()).await
    }
}
