//! Test-mode keys: an API key gets a `mode`, `live` for every existing key (which keeps
//! today's meaning: real vendors, real credits) or `test` (answered by the sandbox,
//! never charged). Existing rows keep their meaning.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000006_key_mode"
    }
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Mode,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeys::Table)
                    .add_column(ColumnDef::new(ApiKeys::Mode).string().not_null().default("live").to_owned())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table(ApiKeys::Table).drop_column(ApiKeys::Mode).to_owned()).await
    }
}
