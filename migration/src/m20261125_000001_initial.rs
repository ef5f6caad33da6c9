//! The initial schema: workspaces, API keys, the credit ledger, idempotency records and
//! the enrichment cache. Instants are Unix epoch milliseconds (`BIGINT`).

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000001_initial"
    }
}

#[derive(DeriveIden)]
enum Workspaces {
    Table,
    Id,
    Name,
    Plan,
    RateLimitPerMinute,
    RateLimitPerDay,
    CreditBalance,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    WorkspaceId,
    Name,
    Prefix,
    KeyHash,
    Permissions,
    ExpiresAt,
    RevokedAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum CreditLedger {
    Table,
    Id,
    WorkspaceId,
    ApiKeyId,
    RequestId,
    Delta,
    BalanceAfter,
    Reason,
    CreatedAt,
}

#[derive(DeriveIden)]
enum IdempotencyRecords {
    Table,
    WorkspaceId,
    IdempotencyKey,
    Fingerprint,
    State,
    OwnerToken,
    LockedUntil,
    ResponseStatus,
    ResponseBody,
    CreatedAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum EnrichmentCache {
    Table,
    CacheKey,
    Record,
    Vendor,
    Confidence,
    FetchedAt,
    ExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Workspaces::Table)
                    .col(ColumnDef::new(Workspaces::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(Workspaces::Name).string().not_null())
                    .col(ColumnDef::new(Workspaces::Plan).string().not_null())
                    .col(ColumnDef::new(Workspaces::RateLimitPerMinute).big_integer().null())
                    .col(ColumnDef::new(Workspaces::RateLimitPerDay).big_integer().null())
                    .col(
                        ColumnDef::new(Workspaces::CreditBalance)
                            .big_integer()
                            .not_null()
                            .default(0)
                            .check(Expr::col(Workspaces::CreditBalance).gte(0)),
                    )
                    .col(ColumnDef::new(Workspaces::CreatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(ColumnDef::new(ApiKeys::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(ApiKeys::WorkspaceId).string().not_null())
                    .col(ColumnDef::new(ApiKeys::Name).string().not_null())
                    .col(ColumnDef::new(ApiKeys::Prefix).string().not_null())
                    .col(ColumnDef::new(ApiKeys::KeyHash).string().not_null().unique_key())
                    .col(ColumnDef::new(ApiKeys::Permissions).string().not_null())
                    .col(ColumnDef::new(ApiKeys::ExpiresAt).big_integer().null())
                    .col(ColumnDef::new(ApiKeys::RevokedAt).big_integer().null())
                    .col(ColumnDef::new(ApiKeys::CreatedAt).big_integer().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(ApiKeys::Table, ApiKeys::WorkspaceId)
                            .to(Workspaces::Table, Workspaces::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(Index::create().name("idx_api_keys_workspace").table(ApiKeys::Table).col(ApiKeys::WorkspaceId).to_owned())
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(CreditLedger::Table)
                    .col(ColumnDef::new(CreditLedger::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(CreditLedger::WorkspaceId).string().not_null())
                    .col(ColumnDef::new(CreditLedger::ApiKeyId).string().null())
                    .col(ColumnDef::new(CreditLedger::RequestId).string().null())
                    .col(ColumnDef::new(CreditLedger::Delta).big_integer().not_null())
                    .col(ColumnDef::new(CreditLedger::BalanceAfter).big_integer().not_null())
                    .col(ColumnDef::new(CreditLedger::Reason).string().not_null())
                    .col(ColumnDef::new(CreditLedger::CreatedAt).big_integer().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(CreditLedger::Table, CreditLedger::WorkspaceId)
                            .to(Workspaces::Table, Workspaces::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create().name("idx_credit_ledger_workspace").table(CreditLedger::Table).col(CreditLedger::WorkspaceId).to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(IdempotencyRecords::Table)
                    .col(ColumnDef::new(IdempotencyRecords::WorkspaceId).string().not_null())
                    .col(ColumnDef::new(IdempotencyRecords::IdempotencyKey).string().not_null())
                    .col(ColumnDef::new(IdempotencyRecords::Fingerprint).string().not_null())
                    .col(ColumnDef::new(IdempotencyRecords::State).string().not_null())
                    .col(ColumnDef::new(IdempotencyRecords::OwnerToken).string().not_null())
                    .col(ColumnDef::new(IdempotencyRecords::LockedUntil).big_integer().not_null())
                    .col(ColumnDef::new(IdempotencyRecords::ResponseStatus).integer().null())
                    .col(ColumnDef::new(IdempotencyRecords::ResponseBody).binary().null())
                    .col(ColumnDef::new(IdempotencyRecords::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(IdempotencyRecords::ExpiresAt).big_integer().not_null())
                    .primary_key(Index::create().col(IdempotencyRecords::WorkspaceId).col(IdempotencyRecords::IdempotencyKey))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_idempotency_expires")
                    .table(IdempotencyRecords::Table)
                    .col(IdempotencyRecords::ExpiresAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(EnrichmentCache::Table)
                    .col(ColumnDef::new(EnrichmentCache::CacheKey).string().not_null().primary_key())
                    .col(ColumnDef::new(EnrichmentCache::Record).text().not_null())
                    .col(ColumnDef::new(EnrichmentCache::Vendor).string().not_null())
                    .col(ColumnDef::new(EnrichmentCache::Confidence).double().not_null())
                    .col(ColumnDef::new(EnrichmentCache::FetchedAt).big_integer().not_null())
                    .col(ColumnDef::new(EnrichmentCache::ExpiresAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_enrichment_cache_expires")
                    .table(EnrichmentCache::Table)
                    .col(EnrichmentCache::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            EnrichmentCache::Table.into_iden(),
            IdempotencyRecords::Table.into_iden(),
            CreditLedger::Table.into_iden(),
            ApiKeys::Table.into_iden(),
            Workspaces::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
