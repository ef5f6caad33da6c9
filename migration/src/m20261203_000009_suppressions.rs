//! Suppression lists: subjects (an email address or a whole domain) that are never looked
//! up. `scope` is `*` for the global list (operator erasure) or a workspace id (its own
//! do-not-enrich list); a subject is stored only as a keyed hash (`subject_hash`, HMAC of
//! `email:…` or `domain:…`), with a masked `hint` for a workspace's own list. One row
//! per (scope, subject). `privacy_version` is one row whose `version` goes up with every
//! change of any list, in the same transaction, so that every replica can tell cheaply
//! when to reload. `idempotency_records.subjects` keeps the keyed hashes of the subjects
//! a stored call was about (none for existing records), so that an erasure finds the
//! replays to redact. New tables, and one new nullable column.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000009_suppressions"
    }
}

#[derive(DeriveIden)]
enum Suppressions {
    Table,
    Id,
    Scope,
    Kind,
    SubjectHash,
    Hint,
    CreatedAt,
}

#[derive(DeriveIden)]
enum IdempotencyRecords {
    Table,
    Subjects,
}

#[derive(DeriveIden)]
enum PrivacyVersion {
    Table,
    Id,
    Version,
}

const BY_SUBJECT: &str = "idx_suppressions_scope_subject";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Suppressions::Table)
                    .col(ColumnDef::new(Suppressions::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(Suppressions::Scope).string().not_null())
                    .col(ColumnDef::new(Suppressions::Kind).string().not_null())
                    .col(ColumnDef::new(Suppressions::SubjectHash).string().not_null())
                    .col(ColumnDef::new(Suppressions::Hint).string().null())
                    .col(ColumnDef::new(Suppressions::CreatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(BY_SUBJECT)
                    .table(Suppressions::Table)
                    .col(Suppressions::Scope)
                    .col(Suppressions::SubjectHash)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(PrivacyVersion::Table)
                    .col(ColumnDef::new(PrivacyVersion::Id).integer().not_null().primary_key())
                    .col(ColumnDef::new(PrivacyVersion::Version).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(IdempotencyRecords::Table)
                    .add_column(ColumnDef::new(IdempotencyRecords::Subjects).text().null())
                    .to_owned(),
            )
            .await?;
        let insert = Query::insert()
            .into_table(PrivacyVersion::Table)
            .columns([PrivacyVersion::Id, PrivacyVersion::Version])
            .values_panic([1.into(), 0.into()])
            .to_owned();
        manager.exec_stmt(insert).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table(IdempotencyRecords::Table).drop_column(IdempotencyRecords::Subjects).to_owned()).await?;
        manager.drop_table(Table::drop().table(PrivacyVersion::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Suppressions::Table).to_owned()).await
    }
}
