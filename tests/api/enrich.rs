//! The success shape of the public docs, `include`, sources and the cache.

use serde_json::json;

use crate::helpers::{domain_known_by, spawn_app, spawn_app_with, Backend};
use crate::on_both_backends;

on_both_backends!(
    success_has_the_documented_shape_and_costs_one_credit,
    include_returns_only_the_sections_asked_for,
    domain_alone_never_returns_a_person,
    waterfall_falls_through_to_vendor_b,
    cached_answers_say_cached_and_still_cost_one_credit,
    a_cached_answer_asked_again_is_the_same_with_each_callers_balance,
    request_ids_are_echoed_or_generated,
    cache_entries_expire_after_their_ttl,
    a_vendor_answer_reaches_the_shared_cache_table,
    a_row_another_replica_wrote_answers_as_cached,
);

async fn success_has_the_documented_shape_and_costs_one_credit(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ws, key) = app.funded(10).await;
    let r = app.enrich(&key, json!({"email": "jane@acme.com"})).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));
    r.assert_rate_limit_headers();
    let body = r.json();
    let data = &body["data"];
    let keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["data"]);
    assert_eq!(data["person"]["full_name"], "Jane Doe");
    assert_eq!(data["person"]["first_name"], "Jane");
    assert_eq!(data["person"]["last_name"], "Doe");
    assert_eq!(data["person"]["job_title"], "General Counsel");
    assert_eq!(data["person"]["seniority"], "executive");
    assert_eq!(data["person"]["location"], "New York, NY, US");
    assert_eq!(data["person"]["linkedin_url"], "https://linkedin.com/in/janedoe");
    assert_eq!(data["company"]["name"], "Acme Corp");
    assert_eq!(data["company"]["domain"], "acme.com");
    assert_eq!(data["company"]["industry"], "Legal Services");
    assert_eq!(data["company"]["size"], "201-500");
    assert_eq!(data["company"]["founded_year"], 1998);
    assert_eq!(data["company"]["hq_location"], "New York, NY, US");
    assert!(data.get("social").is_none(), "a section with no data is left out: {data}");
    assert_eq!(data["source"], "vendor_a");
    let confidence = data["confidence"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&confidence));
    assert_eq!(data["credits_remaining"], 9);
    assert_eq!(app.assert_books_balance(&ws).await, 9);
    assert_eq!(app.charges(&ws).await, 1);
}

async fn include_returns_only_the_sections_asked_for(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ws, key) = app.funded(10).await;
    let r = app.enrich(&key, json!({"email": "jane@acme.com", "include": ["company"]})).await;
    assert_eq!(r.status, 200);
    let data = r.json()["data"].clone();
    assert!(data.get("person").is_none() && data.get("social").is_none(), "{data}");
    assert_eq!(data["company"]["name"], "Acme Corp");
    let r = app.enrich(&key, json!({"domain": "acme.com", "include": ["social", "company"]})).await;
    assert_eq!(r.status, 200);
    let data = r.json()["data"].clone();
    assert_eq!(data["social"]["twitter"], "https://twitter.com/acme");
    assert!(data["company"].is_object());
    assert_eq!(app.assert_books_balance(&ws).await, 8);
}

async fn domain_alone_never_returns_a_person(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, key) = app.funded(10).await;
    let r = app.enrich(&key, json!({"domain": "acme.com"})).await;
    assert_eq!(r.status, 200);
    let data = r.json()["data"].clone();
    assert!(data.get("person").is_none(), "{data}");
    assert_eq!(data["company"]["description"], "Acme Corp provides legal services from New York.");
}

async fn waterfall_falls_through_to_vendor_b(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, key) = app.funded(10).await;
    let only_b = domain_known_by(false, true);
    let r = app.enrich(&key, json!({"domain": only_b})).await;
    assert_eq!(r.status, 200);
    let data = r.json()["data"].clone();
    assert_eq!(data["source"], "vendor_b");
    assert_eq!(data["company"]["domain"], only_b.as_str());
    assert_eq!(data["confidence"], 0.9);
    let only_a = domain_known_by(true, false);
    let r = app.enrich(&key, json!({"domain": only_a})).await;
    assert_eq!(r.json()["data"]["source"], "vendor_a");
}

async fn cached_answers_say_cached_and_still_cost_one_credit(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ws, key) = app.funded(10).await;
    let first = app.enrich(&key, json!({"email": "jane@acme.com"})).await.json();
    let second = app.enrich(&key, json!({"email": "jane@acme.com"})).await.json();
    assert_eq!(first["data"]["source"], "vendor_a");
    assert_eq!(second["data"]["source"], "cached");
    assert_eq!(first["data"]["person"], second["data"]["person"]);
    assert_eq!(first["data"]["confidence"], second["data"]["confidence"]);
    assert_eq!(second["data"]["credits_remaining"], 8);
    assert_eq!(app.assert_books_balance(&ws).await, 8);
    assert_eq!(app.charges(&ws).await, 2);
}

/// Calls asking the same of the same cache entry share one answer (`enrich::Answers`):
/// each still gets its own balance, and asking other sections is another answer.
async fn a_cached_answer_asked_again_is_the_same_with_each_callers_balance(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ws, key) = app.funded(10).await;
    let (other_ws, other_key) = app.funded(100).await;
    let without_balance = |mut v: serde_json::Value| {
        v["data"].as_object_mut().unwrap().remove("credits_remaining");
        v
    };
    assert_eq!(app.enrich(&key, json!({"email": "jane@acme.com"})).await.json()["data"]["source"], "vendor_a");
    let all = app.enrich(&key, json!({"email": "jane@acme.com"})).await.json();
    assert_eq!((all["data"]["source"].as_str(), all["data"]["credits_remaining"].as_i64()), (Some("cached"), Some(8)));
    let company = app.enrich(&key, json!({"email": "jane@acme.com", "include": ["company"]})).await.json();
    assert!(company["data"].get("person").is_none(), "{company}");
    assert_eq!(company["data"]["company"], all["data"]["company"]);
    assert_eq!(company["data"]["credits_remaining"], 7);
    let again = app.enrich(&key, json!({"email": "jane@acme.com"})).await.json();
    assert_eq!(again["data"]["credits_remaining"], 6);
    assert_eq!(without_balance(again.clone()), without_balance(all.clone()));
    let elsewhere = app.enrich(&other_key, json!({"email": "jane@acme.com"})).await.json();
    assert_eq!(elsewhere["data"]["credits_remaining"], 99);
    assert_eq!(without_balance(elsewhere), without_balance(all));
    assert_eq!(app.assert_books_balance(&ws).await, 6);
    assert_eq!(app.assert_books_balance(&other_ws).await, 99);
    // Shared indeed (the operator's figure): the company-only call and the first full
    // one built their answers, the two full ones after were served the first's.
    let text = reqwest::get(format!("{}/metrics", app.base)).await.unwrap().text().await.unwrap();
    let count = |outcome: &str| -> u64 {
        let wanted = format!("leadlex_hot_cache_total{{cache=\"answers\",outcome=\"{outcome}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&wanted).map(|n| n.parse().unwrap())).unwrap_or(0)
    };
    assert_eq!((count("hit"), count("miss")), (2, 2), "{text}");
}

async fn request_ids_are_echoed_or_generated(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, key) = app.funded(10).await;
    let mine = "client-trace.0123456789_abc";
    let r = app.request(app.post_enrich(&key).header("X-Request-ID", mine).json(&json!({"email": "jane@acme.com"}))).await;
    assert_eq!(r.header("x-request-id"), Some(mine));
    for bad in ["short", "has spaces in it but is long enough", &"x".repeat(201)] {
        let r = app.request(app.post_enrich(&key).header("X-Request-ID", bad).json(&json!({}))).await;
        let id = r.header("x-request-id").unwrap().to_string();
        assert_ne!(id, bad);
        assert_eq!(r.json()["error"]["request_id"], id.as_str());
    }
    let health = app.request(app.client.get(format!("{}/healthz", app.base))).await;
    assert_eq!(health.status, 200);
    assert!(health.header("x-request-id").is_some_and(|id| id.len() >= 20));
}

async fn cache_entries_expire_after_their_ttl(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.cache.ttl_secs = 1).await;
    let (_, key) = app.funded(10).await;
    let source = |r: crate::helpers::Resp| r.json()["data"]["source"].as_str().unwrap().to_string();
    assert_eq!(source(app.enrich(&key, json!({"domain": "acme.com"})).await), "vendor_a");
    assert_eq!(source(app.enrich(&key, json!({"domain": "acme.com"})).await), "cached");
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    assert_eq!(source(app.enrich(&key, json!({"domain": "acme.com"})).await), "vendor_a");
}

/// The vendor of the cache row for `cache_key`, waiting up to 2 s for it to land.
async fn cached_vendor(app: &crate::helpers::TestApp, cache_key: &str) -> Option<String> {
    use sea_orm::{ConnectionTrait, Statement};
    let sql = format!("SELECT vendor FROM enrichment_cache WHERE cache_key = '{cache_key}'");
    for _ in 0..100 {
        let row = app.db.query_one(Statement::from_string(app.db.get_database_backend(), sql.clone())).await.unwrap();
        if let Some(row) = row {
            return Some(row.try_get::<String>("", "vendor").unwrap());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    None
}

/// The settler writes a vendor answer's cache row just after the debit's commit (off the
/// commit the response waits for): it must still land, for the other replicas.
async fn a_vendor_answer_reaches_the_shared_cache_table(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ws, key) = app.funded(10).await;
    let r = app.enrich(&key, json!({"email": "jane@acme.com"})).await;
    assert_eq!(r.json()["data"]["source"], "vendor_a");
    assert_eq!(cached_vendor(&app, "email:jane@acme.com").await.as_deref(), Some("vendor_a"), "the cache row was written within 2 s");
    assert_eq!(app.assert_books_balance(&ws).await, 9);
}

/// A row this process never saw (as another replica would have written it) is read from
/// the shared table and served as cached: the vendors would have answered otherwise.
async fn a_row_another_replica_wrote_answers_as_cached(backend: Backend) {
    use sea_orm::ConnectionTrait;
    let app = spawn_app(backend).await;
    let (ws, key) = app.funded(10).await;
    assert_eq!(app.enrich(&key, json!({"email": "jane@acme.com"})).await.status, 200);
    assert!(cached_vendor(&app, "email:jane@acme.com").await.is_some());
    app.db
        .execute_unprepared(
            "INSERT INTO enrichment_cache (cache_key, record, vendor, confidence, fetched_at, expires_at, outcome) \
             SELECT 'email:someone.else@acme.com', record, vendor, confidence, fetched_at, expires_at, outcome \
             FROM enrichment_cache WHERE cache_key = 'email:jane@acme.com'",
        )
        .await
        .unwrap();
    let r = app.enrich(&key, json!({"email": "Someone.Else@acme.com"})).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));
    assert_eq!(r.json()["data"]["source"], "cached");
    assert_eq!(r.json()["data"]["person"]["full_name"], "Jane Doe", "the stored record, not a vendor's answer");
    assert_eq!(app.assert_books_balance(&ws).await, 8);
}
