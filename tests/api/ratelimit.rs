//! Per-plan limits, the headers on every authenticated response, and 429 with
//! `Retry-After`.

use leadlex::{admin, auth::Permission, ratelimit::Plan};
use serde_json::json;

use crate::helpers::{spawn_app, Backend};
use crate::on_both_backends;

on_both_backends!(starter_plan_allows_ten_per_minute, daily_quota_counts_errors_too, unmetered_reports_documented_values);

async fn starter_plan_allows_ten_per_minute(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ws, key) = app.funded_on(Plan::Starter, 100).await;
    let mut remaining = Vec::new();
    for _ in 0..10 {
        let r = app.enrich(&key, json!({"domain": "acme.com"})).await;
        assert_eq!(r.status, 200);
        r.assert_rate_limit_headers();
        assert_eq!(r.header("x-ratelimit-limit"), Some("100"));
        remaining.push(r.header("x-ratelimit-remaining").unwrap().parse::<u64>().unwrap());
    }
    assert_eq!(remaining, (90..100).rev().collect::<Vec<_>>());
    let r = app.enrich(&key, json!({"domain": "acme.com"})).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.error_code(), "rate_limited");
    r.assert_rate_limit_headers();
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=6).contains(&retry), "GCRA: one request frees up every 6 s, got {retry}");
    let reset: i64 = r.header("x-ratelimit-reset").unwrap().parse().unwrap();
    let now = leadlex::now_ms() / 1000;
    assert!(reset > now && reset <= now + 86_400 && reset % 86_400 == 0, "next 00:00 UTC");
    assert_eq!(app.assert_books_balance(&ws).await, 90, "the 429 cost nothing");
}

async fn daily_quota_counts_errors_too(backend: Backend) {
    let app = spawn_app(backend).await;
    let ws = admin::create_workspace(&app.db, &app.settler, "t", Plan::Starter, 5, Some(1_000), Some(3)).await.unwrap().id;
    let key = app.key(&ws, &[Permission::WriteEnrich], None).await.key;
    assert_eq!(app.enrich(&key, json!({})).await.status, 400);
    assert_eq!(app.enrich(&key, json!({"domain": "acme.com"})).await.status, 200);
    let r = app.enrich(&key, json!({"domain": "acme.com"})).await;
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    let r = app.enrich(&key, json!({"domain": "acme.com"})).await;
    assert_eq!(r.status, 429);
    let retry: i64 = r.header("retry-after").unwrap().parse().unwrap();
    let reset: i64 = r.header("x-ratelimit-reset").unwrap().parse().unwrap();
    let now = leadlex::now_ms() / 1000;
    assert!((reset - now - retry).abs() <= 2, "Retry-After points at the daily reset");
    assert_eq!(app.assert_books_balance(&ws).await, 3);
}

async fn unmetered_reports_documented_values(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, key) = app.funded(50).await;
    for _ in 0..30 {
        assert_eq!(app.enrich(&key, json!({"domain": "acme.com"})).await.status, 200);
    }
    let r = app.enrich(&key, json!({"domain": "acme.com"})).await;
    assert_eq!(r.header("x-ratelimit-limit"), Some("2147483647"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("2147483647"));
}
