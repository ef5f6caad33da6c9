//! The queries the API lists with are served by indexes on both backends, as each
//! database plans them: a page of the ledger is a seek on `(workspace_id, id)` (so a page
//! deep in a long ledger costs what the first does), a page of keys reads
//! `(workspace_id, created_at)`, and the usage sums read `(workspace_id, reason,
//! created_at)`. PostgreSQL is asked with sequential scans discouraged, since it rightly
//! prefers them on a table this small.

use leadlex::credits::{self, LedgerQuery, Reason};
use leadlex::keys::{self, ListQuery};
use leadlex::ratelimit::Plan;
use sea_orm::{ConnectionTrait, DbBackend, QueryTrait, Statement, TransactionTrait};

use crate::helpers::{spawn_app, Backend};
use crate::on_both_backends;

on_both_backends!(listing_queries_are_served_by_their_indexes);

async fn plan(db: &sea_orm::DatabaseConnection, stmt: Statement) -> String {
    let backend = db.get_database_backend();
    let txn = db.begin().await.unwrap();
    let prefix = match backend {
        DbBackend::Postgres => {
            txn.execute_unprepared("SET LOCAL enable_seqscan = off").await.unwrap();
            "EXPLAIN "
        }
        _ => "EXPLAIN QUERY PLAN ",
    };
    let explain = Statement { sql: format!("{prefix}{}", stmt.sql), ..stmt };
    let rows = txn.query_all(explain).await.unwrap();
    let column = if backend == DbBackend::Postgres { "QUERY PLAN" } else { "detail" };
    let lines: Vec<String> = rows.iter().map(|r| r.try_get::<String>("", column).unwrap()).collect();
    txn.rollback().await.unwrap();
    lines.join("\n")
}

async fn listing_queries_are_served_by_their_indexes(backend: Backend) {
    let app = spawn_app(backend).await;
    let ws = app.workspace(Plan::Pro, 10).await;
    let db_backend = app.db.get_database_backend();
    let page = LedgerQuery { limit: 25, starting_after: Some(1_000_000), ..Default::default() };
    let ledger = plan(&app.db, credits::ledger_page_query(&ws, &page).build(db_backend)).await;
    assert!(ledger.contains("idx_credit_ledger_workspace_id"), "ledger page:\n{ledger}");
    assert!(!ledger.to_lowercase().contains("temp b-tree") && !ledger.contains("Sort"), "no sort: the index is the order\n{ledger}");
    let sums = plan(&app.db, credits::sum_query(&ws, Reason::Enrich, 0).build(db_backend)).await;
    assert!(sums.contains("idx_credit_ledger_workspace_reason"), "usage sums:\n{sums}");
    let list = ListQuery { page: 3, per_page: 25, include_revoked: false, search: None };
    let keys_plan = plan(&app.db, keys::list_query(&ws, &list).build(db_backend)).await;
    assert!(keys_plan.contains("idx_api_keys_workspace_created"), "key list:\n{keys_plan}");
}
