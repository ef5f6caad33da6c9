//! `GET /v1/usage` and `GET /v1/credits/ledger`: a customer reconciles what it was
//! charged. The ledger sums to the balance after concurrent traffic, pages by cursor
//! without losing or repeating an entry, filters, and shows nothing of another
//! workspace; usage adds up the same entries.

use futures::future::join_all;
use leadlex::auth::Permission;
use leadlex::ratelimit::Plan;
use sea_orm::ConnectionTrait;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Backend, Resp, TestApp};
use crate::on_both_backends;

on_both_backends!(
    the_ledger_pages_to_exactly_the_balance_after_concurrent_traffic,
    the_ledger_filters_and_refuses_bad_cursors,
    usage_adds_up_what_the_ledger_says,
    reading_usage_needs_the_permission_and_costs_nothing,
    the_usage_counters_start_from_the_ledger_of_the_previous_release,
    a_database_failure_is_500_on_usage_and_the_ledger
);

async fn get(app: &TestApp, key: &str, path: &str) -> Resp {
    app.request(app.client.get(format!("{}{path}", app.base)).bearer_auth(key)).await
}

async fn reader(app: &TestApp, ws: &str) -> String {
    app.key(ws, &[Permission::ReadUsage], None).await.key
}

/// Every entry of the ledger, following `next_cursor` page by page.
async fn all_entries(app: &TestApp, key: &str, query: &str, limit: u32) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let after = cursor.as_ref().map(|c| format!("&starting_after={c}")).unwrap_or_default();
        let r = get(app, key, &format!("/v1/credits/ledger?limit={limit}{query}{after}")).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));
        let body = r.json();
        let page = body["data"]["entries"].as_array().unwrap().clone();
        assert!(page.len() <= limit as usize);
        out.extend(page);
        match body["meta"]["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return out,
        }
    }
}

async fn the_ledger_pages_to_exactly_the_balance_after_concurrent_traffic(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ws, key) = app.funded(40).await;
    let read = reader(&app, &ws).await;
    let calls = (0..60).map(|i| app.enrich(&key, json!({"domain": format!("acme{}.com", i % 7)})));
    let answers = join_all(calls).await;
    let charged = answers.iter().filter(|r| r.status == 200).count();
    assert_eq!(charged, 40, "every credit spent, none more");
    leadlex::credits::grant(&app.settler, &ws, 5).await.unwrap();
    let entries = all_entries(&app, &read, "", 7).await;
    let balance = app.assert_books_balance(&ws).await;
    assert_eq!(balance, 5);
    let sum: i64 = entries.iter().map(|e| e["delta"].as_i64().unwrap()).sum();
    assert_eq!(sum, balance, "the ledger sums to the balance");
    assert_eq!(entries.len(), 42, "one grant at creation, 40 charges, one grant");
    let ids: Vec<i64> = entries.iter().map(|e| e["id"].as_str().unwrap()[4..].parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first, no entry twice: {ids:?}");
    assert_eq!(entries[0]["balance_after"], 5);
    let charges: Vec<&Value> = entries.iter().filter(|e| e["reason"] == "enrich").collect();
    assert_eq!(charges.len(), 40);
    assert!(charges.iter().all(|e| e["delta"] == -1 && e["api_key_id"].is_string() && e["request_id"].is_string()));
    let request_ids: std::collections::BTreeSet<&str> = charges.iter().map(|e| e["request_id"].as_str().unwrap()).collect();
    let answered: std::collections::BTreeSet<&str> =
        answers.iter().filter(|r| r.status == 200).map(|r| r.header("x-request-id").unwrap()).collect();
    assert_eq!(request_ids, answered, "each charge names the request that was charged");
}

async fn the_ledger_filters_and_refuses_bad_cursors(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ws, key) = app.funded(10).await;
    let other = app.key(&ws, &[Permission::WriteEnrich], None).await;
    let read = reader(&app, &ws).await;
    for _ in 0..3 {
        assert_eq!(app.enrich(&key, json!({"domain": "acme.com"})).await.status, 200);
    }
    assert_eq!(app.enrich(&other.key, json!({"domain": "acme.com"})).await.status, 200);
    let grants = all_entries(&app, &read, "&reason=grant", 25).await;
    assert_eq!(grants.len(), 1);
    assert_eq!((grants[0]["delta"].clone(), grants[0]["api_key_id"].clone()), (json!(10), Value::Null));
    let theirs = all_entries(&app, &read, &format!("&api_key_id={}", other.id), 25).await;
    assert_eq!(theirs.len(), 1);
    let future = all_entries(&app, &read, "&from=2099-01-01T00:00:00Z", 25).await;
    assert!(future.is_empty());
    let past = all_entries(&app, &read, "&to=2000-01-01T00:00:00Z", 25).await;
    assert!(past.is_empty());
    let window = all_entries(&app, &read, "&from=2000-01-01T00:00:00Z&to=2099-01-01T00:00:00Z", 2).await;
    assert_eq!(window.len(), 5);
    // Another workspace sees none of it.
    let (stranger_ws, _) = app.funded(1).await;
    let stranger = reader(&app, &stranger_ws).await;
    assert_eq!(all_entries(&app, &stranger, "", 25).await.len(), 1);
    let inverted = all_entries(&app, &read, "&from=2030-01-01T00:00:00Z&to=2020-01-01T00:00:00Z", 25).await;
    assert!(inverted.is_empty(), "`from` after `to` is an empty window");
    for bad in
        ["?limit=0", "?limit=101", "?starting_after=42", "?starting_after=led_x", "?reason=refund", "?from=yesterday", "?api_key_id=key%00"]
    {
        let r = get(&app, &read, &format!("/v1/credits/ledger{bad}")).await;
        assert_eq!((r.status, r.error_code().as_str()), (400, "validation_error"), "{bad}");
    }
}

async fn usage_adds_up_what_the_ledger_says(backend: Backend) {
    let app = spawn_app(backend).await;
    let ws = app.workspace(Plan::Pro, 1_000).await;
    let key = app.key(&ws, &[Permission::WriteEnrich, Permission::ReadUsage], None).await.key;
    assert_eq!(app.enrich(&key, json!({"email": "jane@acme.com"})).await.status, 200);
    let r = get(&app, &key, "/v1/usage").await;
    assert_eq!(r.status, 200);
    r.assert_rate_limit_headers();
    let data = r.json()["data"].clone();
    assert_eq!(data["plan"], "pro");
    assert_eq!(data["limits"], json!({"per_minute": 50, "per_day": 1000}));
    assert_eq!(data["remaining_today"], 998, "the lookup and this call counted");
    assert_eq!(data["remaining_today"].as_u64().unwrap().to_string(), r.header("x-ratelimit-remaining").unwrap());
    assert_eq!(data["resets_at"].as_i64().unwrap().to_string(), r.header("x-ratelimit-reset").unwrap());
    assert_eq!(data["credits"], json!({"balance": 999, "charged_today": 1, "charged_this_month": 1, "granted_this_month": 1000}));
    let ledger = get(&app, &key, "/v1/credits/ledger").await.json();
    let reasons: Vec<&str> = ledger["data"]["entries"].as_array().unwrap().iter().map(|e| e["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["enrich", "grant"]);
    app.assert_books_balance(&ws).await;
    // Last month's counts count for nothing; earlier this month's for the month only.
    let (today, month) = leadlex::credits::day_and_month_start(leadlex::now_ms());
    let day = leadlex::time::DAY_MS;
    let mut insert = vec![format!("('{ws}', {}, 50, 70)", month - day)];
    let (mut charged_month, mut granted_month) = (1, 1000);
    if month < today {
        insert.push(format!("('{ws}', {month}, 3, 4)"));
        (charged_month, granted_month) = (4, 1004);
    }
    app.db
        .execute_unprepared(&format!("INSERT INTO credit_usage_days (workspace_id, day, charged, granted) VALUES {}", insert.join(", ")))
        .await
        .unwrap();
    let credits = get(&app, &key, "/v1/usage").await.json()["data"]["credits"].clone();
    let expected = json!({"balance": 999, "charged_today": 1, "charged_this_month": charged_month, "granted_this_month": granted_month});
    assert_eq!(credits, expected);
    // Another workspace's counts are its own.
    let (other, other_key) = app.funded(5).await;
    assert_eq!(app.enrich(&other_key, json!({"email": "jane@acme.com"})).await.status, 200);
    let theirs = get(&app, &reader(&app, &other).await, "/v1/usage").await.json()["data"]["credits"].clone();
    assert_eq!(theirs, json!({"balance": 4, "charged_today": 1, "charged_this_month": 1, "granted_this_month": 5}));
    assert_eq!(get(&app, &key, "/v1/usage").await.json()["data"]["credits"], expected);
    let (unmetered_ws, _) = app.funded(3).await;
    let unmetered = reader(&app, &unmetered_ws).await;
    let data = get(&app, &unmetered, "/v1/usage").await.json()["data"].clone();
    assert_eq!((data["limits"].clone(), data["remaining_today"].clone()), (json!({"per_minute": null, "per_day": null}), Value::Null));
}

async fn reading_usage_needs_the_permission_and_costs_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ws, key) = app.funded(5).await;
    for path in ["/v1/usage", "/v1/credits/ledger"] {
        let r = get(&app, &key, path).await;
        assert_eq!((r.status, r.error_code().as_str()), (403, "insufficient_permissions"), "{path}");
        let r = get(&app, &format!("wbk_{}", "x".repeat(43)), path).await;
        assert_eq!((r.status, r.error_code().as_str()), (401, "invalid_key"), "{path}");
    }
    let read = reader(&app, &ws).await;
    for _ in 0..3 {
        assert_eq!(get(&app, &read, "/v1/usage").await.status, 200);
        assert_eq!(get(&app, &read, "/v1/credits/ledger").await.status, 200);
    }
    assert_eq!(app.assert_books_balance(&ws).await, 5, "free");
    let ws = app.workspace(Plan::Starter, 5).await;
    let limited = reader(&app, &ws).await;
    for _ in 0..10 {
        assert_eq!(get(&app, &limited, "/v1/usage").await.status, 200);
    }
    for path in ["/v1/usage", "/v1/credits/ledger"] {
        let r = get(&app, &limited, path).await;
        assert_eq!((r.status, r.error_code().as_str()), (429, "rate_limited"), "{path}");
    }
}

/// A database of the release before `m20261207_000014` (usage summed from the ledger)
/// shows the same figures after the upgrade: the day counters are filled from the
/// ledger, day by day.
async fn the_usage_counters_start_from_the_ledger_of_the_previous_release(backend: Backend) {
    use migration::MigratorTrait;

    let before = migration::Migrator::migrations().len() as u32 - 1;
    let (url, _dir, db) = crate::helpers::previous_release_database(backend, before).await;
    let now = leadlex::now_ms();
    let long_ago = now - 40 * leadlex::time::DAY_MS;
    let ws = "ws_previous_release";
    let ledger = [(1_000, "grant", long_ago), (-5, "enrich", long_ago + 1), (-1, "enrich", now), (-1, "enrich", now), (50, "grant", now)];
    crate::helpers::previous_release_workspace(&db, ws, 1_043, &ledger).await;
    drop(db);

    let app = crate::helpers::spawn_app_with(backend, |s| s.database.url = url.clone()).await;
    assert_eq!(app.assert_books_balance(ws).await, 1_043);
    let credits = get(&app, &reader(&app, ws).await, "/v1/usage").await.json()["data"]["credits"].clone();
    assert_eq!(credits, json!({"balance": 1_043, "charged_today": 2, "charged_this_month": 2, "granted_this_month": 50}));
    // And the counters go on from there.
    let key = app.key(ws, &[Permission::WriteEnrich], None).await.key;
    assert_eq!(app.enrich(&key, json!({"email": "jane@acme.com"})).await.status, 200);
    assert_eq!(app.assert_books_balance(ws).await, 1_042);
}

async fn a_database_failure_is_500_on_usage_and_the_ledger(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ws, _) = app.funded(5).await;
    let read = reader(&app, &ws).await;
    for (table, path) in [("credit_usage_days", "/v1/usage"), ("credit_ledger", "/v1/credits/ledger")] {
        app.db.execute_unprepared(&format!("DROP TABLE {table}")).await.unwrap();
        let r = get(&app, &read, path).await;
        assert_eq!((r.status, r.error_code().as_str()), (500, "internal_error"), "{path}");
    }
}
