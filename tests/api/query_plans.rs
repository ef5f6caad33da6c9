//! The queries the API lists with are served by indexes on both backends, as each
//! database plans them: a page of the ledger is a seek on `(workspace_id, id)` (so a page
//! deep in a long ledger costs what the first does), a page of keys reads
//! `(workspace_id, created_at)`, and the usage figures read the day counters' primary
//! key `(workspace_id, day)`. PostgreSQL is asked with sequential scans discouraged,
//! since it rightly prefers them on a table this small; and the first page of a
//! workspace whose entries lie behind 20,000 of another's is checked as each planner
//! picks it by itself. (The
//! ledger query's shape, a range on the workspace and the order `(workspace_id, id)`,
//! answers a planner choice seen with a million rows: see `credits::ledger_page_query`.)

use leadlex::credits::{self, LedgerQuery};
use leadlex::keys::{self, ListQuery};
use leadlex::ratelimit::Plan;
use sea_orm::{ConnectionTrait, DbBackend, QueryTrait, Statement, TransactionTrait};

use crate::helpers::{spawn_app, Backend};
use crate::on_both_backends;

on_both_backends!(listing_queries_are_served_by_their_indexes);

/// The plan each backend picks by itself (no setting changed).
async fn plan_as_planned(db: &sea_orm::DatabaseConnection, stmt: Statement) -> String {
    let prefix = if db.get_database_backend() == DbBackend::Postgres { "EXPLAIN " } else { "EXPLAIN QUERY PLAN " };
    let column = if db.get_database_backend() == DbBackend::Postgres { "QUERY PLAN" } else { "detail" };
    let rows = db.query_all(Statement { sql: format!("{prefix}{}", stmt.sql), ..stmt }).await.unwrap();
    rows.iter().map(|r| r.try_get::<String>("", column).unwrap()).collect::<Vec<_>>().join("\n")
}

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
    // Another workspace's 20,000 newer entries: walking the primary key backwards from
    // the newest entry would filter through all of them to reach this workspace's page.
    let other = app.workspace(Plan::Pro, 0).await;
    let rows = match db_backend {
        DbBackend::Postgres => "SELECT g AS n FROM generate_series(1, 20000) g".to_string(),
        _ => "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 20000) SELECT n FROM g".to_string(),
    };
    app.db
        .execute_unprepared(&format!(
            "INSERT INTO credit_ledger (workspace_id, delta, balance_after, reason, created_at) \
             SELECT '{other}', 0, 0, 'grant', 0 FROM ({rows}) AS r"
        ))
        .await
        .unwrap();
    // And 20,000 days of its usage counters (on a table of a few rows SQLite rightly
    // scans).
    app.db
        .execute_unprepared(&format!(
            "INSERT INTO credit_usage_days (workspace_id, day, charged, granted) SELECT '{other}', r.n * CAST(86400000 AS BIGINT), 1, 0 FROM ({rows}) AS r"
        ))
        .await
        .unwrap();
    app.db.execute_unprepared("ANALYZE").await.unwrap();
    let first = LedgerQuery { limit: 25, ..Default::default() };
    let newest = plan_as_planned(&app.db, credits::ledger_page_query(&ws, &first, db_backend).build(db_backend)).await;
    // An index that leads with the workspace (PostgreSQL picks by its statistics: on a
    // one-row workspace any of them, then a sort of that row); never the primary key
    // walked backwards through the other workspace's rows, nor a scan.
    assert!(newest.contains("idx_credit_ledger_workspace"), "first page, as the planner would run it:\n{newest}");
    for walk in ["pkey", "Seq Scan", "SCAN credit_ledger"] {
        assert!(!newest.contains(walk), "first page, as the planner would run it:\n{newest}");
    }
    let page = LedgerQuery { limit: 25, starting_after: Some(1_000_000), ..Default::default() };
    let ledger = plan(&app.db, credits::ledger_page_query(&ws, &page, db_backend).build(db_backend)).await;
    assert!(ledger.contains("idx_credit_ledger_workspace") && !ledger.contains("pkey"), "ledger page:\n{ledger}");
    // On SQLite the cursor is part of the seek, not a filter applied while reading the
    // workspace down to it (a range on the workspace would force that). PostgreSQL picks
    // by its statistics, which on a one-row workspace rightly favour any of its indexes.
    if db_backend == DbBackend::Sqlite {
        assert!(ledger.contains("id<?"), "a deep page seeks its cursor:\n{ledger}");
    }
    let days = plan(&app.db, credits::usage_query(&ws, 0).build(db_backend)).await;
    // The day counters' primary key, `(workspace_id, day)`, sought on both columns.
    let by_key = if db_backend == DbBackend::Postgres {
        days.contains("credit_usage_days_pkey") && days.contains("day >=")
    } else {
        days.contains("sqlite_autoindex_credit_usage_days") && days.contains("day>?")
    };
    assert!(by_key, "usage counters:\n{days}");
    let list = ListQuery { page: 3, per_page: 25, include_revoked: false, search: None, mode: Some(leadlex::auth::KeyMode::Test) };
    let keys_plan = plan(&app.db, keys::list_query(&leadlex::scope::Scope::live(&ws), &list).build(db_backend)).await;
    assert!(keys_plan.contains("idx_api_keys_workspace_created"), "key list:\n{keys_plan}");
}
