//! Self-service key management: an API key gets an optional `description`, a
//! `rate_limit_tier` (`standard` for every existing key, which keeps today's meaning:
//! the workspace's plan limits, shared), `created_by` (the key that created it over the
//! API; `NULL` for the CLI and for every existing key) and `last_used_at` (written at
//! most once a minute per key). Listing a workspace's keys, newest first, reads the new
//! `(workspace_id, created_at)` index. Existing rows keep their meaning.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000004_key_management"
    }
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    WorkspaceId,
    CreatedAt,
    Description,
    RateLimitTier,
    CreatedBy,
    LastUsedAt,
}

const LIST_INDEX: &str = "idx_api_keys_workspace_created";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        for column in [
            ColumnDef::new(ApiKeys::Description).string().null().to_owned(),
            ColumnDef::new(ApiKeys::RateLimitTier).string().not_null().default("standard").to_owned(),
            ColumnDef::new(ApiKeys::CreatedBy).string().null().to_owned(),
            ColumnDef::new(ApiKeys::LastUsedAt).big_integer().null().to_owned(),
        ] {
            manager.alter_table(Table::alter().table(ApiKeys::Table).add_column(column).to_owned()).await?;
        }
        manager
            .create_index(
                Index::create().name(LIST_INDEX).table(ApiKeys::Table).col(ApiKeys::WorkspaceId).col(ApiKeys::CreatedAt).to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name(LIST_INDEX).table(ApiKeys::Table).to_owned()).await?;
        for column in [ApiKeys::LastUsedAt, ApiKeys::CreatedBy, ApiKeys::RateLimitTier, ApiKeys::Description] {
            manager.alter_table(Table::alter().table(ApiKeys::Table).drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}
