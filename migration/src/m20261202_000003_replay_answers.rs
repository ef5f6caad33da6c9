//! A completed idempotency record keeps the call's answer (what the domain decided, as
//! JSON) and, in its own column, the balance the settling transaction left, instead of
//! a rendered HTTP body: the writer stores what it decided and knows no HTTP, and a
//! replay renders the answer again.
//!
//! Records written before (the whole 200 body, `{"data": {…, "credits_remaining": N}}`)
//! are converted in place: the answer is `data` without `credits_remaining`, which moves
//! to `balance_after`. `down` converts back.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, TransactionTrait};
use serde_json::{Map, Value};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000003_replay_answers"
    }
}

#[derive(DeriveIden)]
enum IdempotencyRecords {
    Table,
    WorkspaceId,
    IdempotencyKey,
    State,
    ResponseBody,
    BalanceAfter,
}

/// Rows converted per statement batch (what a migration holds in memory at once).
const PAGE: u64 = 500;

/// Rewrites the body of every completed record for which `pending` holds, page by page,
/// with `convert`. A record `convert` cannot read stops the migration, naming it: a
/// completed record without its answer would make every retry of its key a 500.
async fn convert_bodies(
    manager: &SchemaManager<'_>,
    pending: SimpleExpr,
    convert: impl Fn(Value, Option<i64>) -> Option<(Value, Option<i64>)>,
) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let txn = db.begin().await?;
    let backend = txn.get_database_backend();
    loop {
        let select = Query::select()
            .columns([
                IdempotencyRecords::WorkspaceId,
                IdempotencyRecords::IdempotencyKey,
                IdempotencyRecords::ResponseBody,
                IdempotencyRecords::BalanceAfter,
            ])
            .from(IdempotencyRecords::Table)
            .and_where(Expr::col(IdempotencyRecords::State).eq("completed"))
            .and_where(pending.clone())
            .limit(PAGE)
            .to_owned();
        let rows = txn.query_all(backend.build(&select)).await?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let workspace_id: String = row.try_get("", "workspace_id")?;
            let key: String = row.try_get("", "idempotency_key")?;
            let body: Option<Vec<u8>> = row.try_get("", "response_body")?;
            let balance: Option<i64> = row.try_get("", "balance_after")?;
            let converted = body.and_then(|b| serde_json::from_slice::<Value>(&b).ok()).and_then(|value| convert(value, balance));
            let Some((value, balance)) = converted else {
                return Err(DbErr::Migration(format!(
                    "idempotency record ({workspace_id}, {key}) is completed but its body is not in the expected form"
                )));
            };
            let update = Query::update()
                .table(IdempotencyRecords::Table)
                .value(IdempotencyRecords::ResponseBody, serde_json::to_vec(&value).expect("JSON serialises"))
                .value(IdempotencyRecords::BalanceAfter, balance)
                .and_where(Expr::col(IdempotencyRecords::WorkspaceId).eq(workspace_id))
                .and_where(Expr::col(IdempotencyRecords::IdempotencyKey).eq(key))
                .to_owned();
            txn.execute(backend.build(&update)).await?;
        }
    }
    txn.commit().await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Where migrations are not transactional (SQLite), a conversion that failed after
        // the column was added is simply run again.
        if !manager.has_column("idempotency_records", "balance_after").await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(IdempotencyRecords::Table)
                        .add_column(ColumnDef::new(IdempotencyRecords::BalanceAfter).big_integer().null())
                        .to_owned(),
                )
                .await?;
        }
        convert_bodies(manager, Expr::col(IdempotencyRecords::BalanceAfter).is_null(), |value, _| {
            let Value::Object(mut body) = value else { return None };
            let Some(Value::Object(mut data)) = body.remove("data") else { return None };
            let balance = data.remove("credits_remaining")?.as_i64()?;
            Some((Value::Object(data), Some(balance)))
        })
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        convert_bodies(manager, Expr::col(IdempotencyRecords::BalanceAfter).is_not_null(), |value, balance| {
            let (Value::Object(mut data), Some(balance)) = (value, balance) else { return None };
            data.insert("credits_remaining".into(), balance.into());
            let mut body = Map::new();
            body.insert("data".into(), Value::Object(data));
            Some((Value::Object(body), None))
        })
        .await?;
        manager.alter_table(Table::alter().table(IdempotencyRecords::Table).drop_column(IdempotencyRecords::BalanceAfter).to_owned()).await
    }
}
