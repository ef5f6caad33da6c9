//! Signed webhooks. `webhooks`: a workspace's endpoints (the signing secret sealed, never
//! in the clear), the events each one takes, and its delivery health (`failing_since`,
//! `disabled_reason`, the last delivery's outcome). `webhook_deliveries`: the outbox, one
//! row per event per subscribed endpoint, written in the same transaction as what caused
//! the event; the delivery workers claim due rows with a lease (`lease_owner`,
//! `lease_until`) and record each attempt's outcome on the row. New tables only.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000010_webhooks"
    }
}

#[derive(DeriveIden)]
enum Webhooks {
    Table,
    Id,
    WorkspaceId,
    Url,
    Events,
    Description,
    Active,
    LowBalanceThreshold,
    SecretSealed,
    CreatedAt,
    UpdatedAt,
    DisabledReason,
    FailingSince,
    LastDeliveryStatus,
    LastDeliveryAt,
}

#[derive(DeriveIden)]
enum WebhookDeliveries {
    Table,
    Id,
    WebhookId,
    WorkspaceId,
    EventId,
    Event,
    Data,
    CreatedAt,
    State,
    Attempts,
    RoundAttempts,
    NextAttemptAt,
    LeaseOwner,
    LeaseUntil,
    StatusCode,
    LatencyMs,
    Error,
    LastAttemptAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Webhooks::Table)
                    .col(ColumnDef::new(Webhooks::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(Webhooks::WorkspaceId).string().not_null())
                    .col(ColumnDef::new(Webhooks::Url).text().not_null())
                    .col(ColumnDef::new(Webhooks::Events).text().not_null())
                    .col(ColumnDef::new(Webhooks::Description).text().null())
                    .col(ColumnDef::new(Webhooks::Active).boolean().not_null())
                    .col(ColumnDef::new(Webhooks::LowBalanceThreshold).big_integer().not_null())
                    .col(ColumnDef::new(Webhooks::SecretSealed).text().not_null())
                    .col(ColumnDef::new(Webhooks::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Webhooks::UpdatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Webhooks::DisabledReason).text().null())
                    .col(ColumnDef::new(Webhooks::FailingSince).big_integer().null())
                    .col(ColumnDef::new(Webhooks::LastDeliveryStatus).string().null())
                    .col(ColumnDef::new(Webhooks::LastDeliveryAt).big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_webhooks_workspace")
                    .table(Webhooks::Table)
                    .col(Webhooks::WorkspaceId)
                    .col(Webhooks::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookDeliveries::Table)
                    .col(ColumnDef::new(WebhookDeliveries::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(WebhookDeliveries::WebhookId).string().not_null())
                    .col(ColumnDef::new(WebhookDeliveries::WorkspaceId).string().not_null())
                    .col(ColumnDef::new(WebhookDeliveries::EventId).string().not_null())
                    .col(ColumnDef::new(WebhookDeliveries::Event).string().not_null())
                    .col(ColumnDef::new(WebhookDeliveries::Data).text().not_null())
                    .col(ColumnDef::new(WebhookDeliveries::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(WebhookDeliveries::State).string().not_null())
                    .col(ColumnDef::new(WebhookDeliveries::Attempts).integer().not_null())
                    .col(ColumnDef::new(WebhookDeliveries::RoundAttempts).integer().not_null())
                    .col(ColumnDef::new(WebhookDeliveries::NextAttemptAt).big_integer().null())
                    .col(ColumnDef::new(WebhookDeliveries::LeaseOwner).string().null())
                    .col(ColumnDef::new(WebhookDeliveries::LeaseUntil).big_integer().null())
                    .col(ColumnDef::new(WebhookDeliveries::StatusCode).integer().null())
                    .col(ColumnDef::new(WebhookDeliveries::LatencyMs).big_integer().null())
                    .col(ColumnDef::new(WebhookDeliveries::Error).text().null())
                    .col(ColumnDef::new(WebhookDeliveries::LastAttemptAt).big_integer().null())
                    .to_owned(),
            )
            .await?;
        // The workers' claim: due pending rows, oldest due first.
        manager
            .create_index(
                Index::create()
                    .name("idx_webhook_deliveries_due")
                    .table(WebhookDeliveries::Table)
                    .col(WebhookDeliveries::State)
                    .col(WebhookDeliveries::NextAttemptAt)
                    .to_owned(),
            )
            .await?;
        // A webhook's deliveries, newest first, a page at a time.
        manager
            .create_index(
                Index::create()
                    .name("idx_webhook_deliveries_webhook")
                    .table(WebhookDeliveries::Table)
                    .col(WebhookDeliveries::WebhookId)
                    .col(WebhookDeliveries::CreatedAt)
                    .col(WebhookDeliveries::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(WebhookDeliveries::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Webhooks::Table).to_owned()).await
    }
}
