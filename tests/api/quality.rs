//! Quality controls as a customer uses them: `min_confidence` refuses weak answers without
//! charging, `max_age_days` and `refresh` buy fresh data (a normal paid lookup that
//! replaces the cached answer for everyone), and every answer says when its data was
//! obtained (`fetched_at`), cached or not. Single calls, bulk calls and jobs alike.

use serde_json::{json, Value};

use crate::helpers::{sandbox_input, spawn_app, spawn_app_with, Backend, TestApp};

/// The instant an RFC 3339 `fetched_at` names.
fn at(data: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    let text = data["fetched_at"].as_str().unwrap_or_else(|| panic!("an answer says when its data was fetched: {data}"));
    chrono::DateTime::parse_from_rfc3339(text).unwrap()
}

/// An email the first sandbox vendor knows, with a confidence below 1 (so that a floor
/// above it exists).
async fn weak_email(app: &TestApp, key: &str, template: &str) -> (String, f64) {
    for n in 0.. {
        let email = sandbox_input(&format!("{template}{n}.{{i}}@acme.com"), |a, _| a);
        let r = app.enrich(key, json!({"email": email, "min_confidence": 0.0})).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));
        let confidence = r.json()["data"]["confidence"].as_f64().unwrap();
        if confidence < 0.95 {
            return (email, confidence);
        }
    }
    unreachable!()
}

async fn min_confidence_refuses_weak_answers_free(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ws, key) = app.funded(100).await;
    let (email, confidence) = weak_email(&app, &key, "floor").await;
    let balance = app.balance(&ws).await;
    let charges = app.charges(&ws).await;

    // Above the answer's confidence: a free no-match that says why.
    let floor = confidence + 0.05;
    let r = app.enrich(&key, json!({"email": email, "min_confidence": floor})).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "no_match"), "{}", String::from_utf8_lossy(&r.bytes));
    let details = &r.json()["error"]["details"][0];
    assert_eq!((details["field"].as_str(), details["reason"].as_str()), (Some("min_confidence"), Some("below_min_confidence")));
    assert_eq!((app.balance(&ws).await, app.charges(&ws).await), (balance, charges), "nothing charged");

    // At the floor exactly: answered and charged.
    let r = app.enrich(&key, json!({"email": email, "min_confidence": confidence})).await;
    assert_eq!((r.status, r.json()["data"]["source"].as_str()), (200, Some("cached")));
    assert_eq!(app.balance(&ws).await, balance - 1);

    // A new input refused so is not lost: its vendor answer is kept, unpaid, for later.
    let mut n = 0;
    let fresh = loop {
        let email = sandbox_input(&format!("floor-new{n}.{{i}}@acme.com"), |a, _| a);
        let (balance, asked) = (app.balance(&ws).await, app.vendor_calls().await);
        let r = app.enrich(&key, json!({"email": email, "min_confidence": 1.0})).await;
        assert!(app.vendor_calls().await > asked, "a new input asks the vendors");
        if r.status == 404 {
            assert_eq!(r.error_code(), "no_match");
            assert_eq!(app.balance(&ws).await, balance, "refused: nothing charged");
            break email;
        }
        assert_eq!((r.status, r.json()["data"]["confidence"].as_f64()), (200, Some(1.0)), "only a sure answer passes 1.0");
        n += 1;
    };
    let asked = app.vendor_calls().await;
    let r = app.enrich(&key, json!({"email": fresh})).await;
    assert_eq!((r.status, r.json()["data"]["source"].as_str()), (200, Some("cached")));
    assert_eq!(app.vendor_calls().await, asked, "the refused answer was cached");

    // A bulk call: each weak item is its own free no-match.
    let r = app
        .request(
            app.client
                .post(format!("{}/v1/email/enrich/bulk", app.base))
                .bearer_auth(&key)
                .json(&json!({"items": [{"email": email}, {"domain": "acme.com"}], "min_confidence": floor})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));
    let body = r.json();
    let first = &body["data"]["results"][0];
    assert_eq!((first["status"].as_u64(), first["error"]["details"][0]["reason"].as_str()), (Some(404), Some("below_min_confidence")));
    let summary = &body["data"]["summary"];
    let succeeded = summary["succeeded"].as_i64().unwrap();
    assert_eq!(summary["credits_charged"].as_i64(), Some(succeeded), "only what met the floor is charged");
    assert!(summary["no_match"].as_i64().unwrap() >= 1);

    // Out of range, or null: the documented 400.
    for body in [json!({"email": email, "min_confidence": 1.5}), json!({"email": email, "min_confidence": null})] {
        let r = app.enrich(&key, body).await;
        assert_eq!((r.status, r.error_code().as_str()), (400, "validation_error"));
        assert_eq!(r.json()["error"]["details"][0]["field"], "min_confidence");
    }
    app.assert_books_balance(&ws).await;
}

async fn max_age_days_and_refresh_buy_fresh_data_for_everyone(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ws, key) = app.funded(100).await;
    let (_, other) = app.funded(100).await;
    let email = sandbox_input("fresh.{i}@acme.com", |a, _| a);

    let first = app.enrich(&key, json!({"email": email})).await.json()["data"].clone();
    assert_eq!(first["source"], "vendor_a");
    let cached = app.enrich(&key, json!({"email": email})).await.json()["data"].clone();
    assert_eq!(cached["source"], "cached");
    assert_eq!(at(&cached), at(&first), "a cached answer shows when its data was fetched");
    let asked = app.vendor_calls().await;
    let r = app.enrich(&key, json!({"email": email, "max_age_days": 30})).await;
    assert_eq!(r.json()["data"]["source"], "cached", "young enough");
    assert_eq!(app.vendor_calls().await, asked);

    let mut last = at(&first);
    for (n, quality) in [json!({"max_age_days": 0}), json!({"refresh": true})].into_iter().enumerate() {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let balance = app.balance(&ws).await;
        let asked = app.vendor_calls().await;
        let mut body = quality.clone();
        body["email"] = json!(email);
        let r = app.enrich(&key, body).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));
        let data = r.json()["data"].clone();
        assert_eq!(data["source"], "vendor_a", "{quality}: the vendors were asked");
        assert!(app.vendor_calls().await > asked, "{quality}: a vendor call");
        assert_eq!(app.balance(&ws).await, balance - 1, "{quality}: a normal paid lookup");
        let fetched = at(&data);
        assert!(fetched > last, "{quality}: fetched_at moves forward ({fetched} after {last})");
        last = fetched;
        // The refreshed answer replaced the cached one for everyone.
        let seen = app.enrich(&other, json!({"email": email})).await.json()["data"].clone();
        assert_eq!((seen["source"].as_str(), at(&seen)), (Some("cached"), fetched), "round {n}");
    }

    for body in [json!({"email": email, "max_age_days": -1}), json!({"email": email, "refresh": null})] {
        let r = app.enrich(&key, body).await;
        assert_eq!((r.status, r.error_code().as_str()), (400, "validation_error"));
    }
    app.assert_books_balance(&ws).await;
}

/// Cached data older than `max_age_days` is fetched again; younger data is served.
async fn data_past_max_age_is_fetched_again(backend: Backend) {
    // No in-process memo of cache rows: the aged row is read from the database.
    let app = spawn_app_with(backend, |s| s.hot_caches.cache_rows.ttl_ms = 0).await;
    let (ws, key) = app.funded(100).await;
    let email = sandbox_input("aged.{i}@acme.com", |a, _| a);
    assert_eq!(app.enrich(&key, json!({"email": email})).await.status, 200);
    // Two days pass for the cached row (written just after the call's commit: wait for it).
    use sea_orm::ConnectionTrait;
    let two_days = 2 * 86_400_000i64;
    let age = format!("UPDATE enrichment_cache SET fetched_at = fetched_at - {two_days} WHERE cache_key = 'email:{email}'");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while app.db.execute_unprepared(&age).await.unwrap().rows_affected() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the cache row was never written");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let r = app.enrich(&key, json!({"email": email, "max_age_days": 3})).await;
    assert_eq!(r.json()["data"]["source"], "cached", "two days old is within three");
    let balance = app.balance(&ws).await;
    let r = app.enrich(&key, json!({"email": email, "max_age_days": 1})).await;
    assert_eq!(r.json()["data"]["source"], "vendor_a", "two days old is past one");
    assert_eq!(app.balance(&ws).await, balance - 1);
    // Once its row is written (just after the commit), the fresh answer is what is cached.
    let fresh = format!("SELECT 1 FROM enrichment_cache WHERE cache_key = 'email:{email}' AND fetched_at > {}", leadlex::now_ms() - 60_000);
    while app.db.query_one(sea_orm::Statement::from_string(app.db.get_database_backend(), fresh.clone())).await.unwrap().is_none() {
        assert!(tokio::time::Instant::now() < deadline, "the fresh row was never written");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let r = app.enrich(&key, json!({"email": email, "max_age_days": 1})).await;
    assert_eq!(r.json()["data"]["source"], "cached", "the fresh answer replaced the old row");
}

/// Cached answers are kept `[cache] retention_days` at most, whatever their TTL: the
/// background purge removes the rows past it, and only those.
async fn cache_rows_past_their_retention_are_purged(backend: Backend) {
    use sea_orm::ConnectionTrait;
    let app = spawn_app_with(backend, |s| {
        s.cache.ttl_secs = 365 * 86_400;
        s.cache.retention_days = 90;
        s.idempotency.purge_interval_secs = 1;
    })
    .await;
    let (_, key) = app.funded(10).await;
    let day = 86_400_000i64;
    let now = leadlex::now_ms();
    let mut keys = Vec::new();
    for (template, age_days) in [("kept.{i}@acme.com", 89), ("old.{i}@acme.com", 91)] {
        let email = sandbox_input(template, |a, _| a);
        assert_eq!(app.enrich(&key, json!({"email": email})).await.status, 200);
        let age = format!("UPDATE enrichment_cache SET fetched_at = {} WHERE cache_key = 'email:{email}'", now - age_days * day);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while app.db.execute_unprepared(&age).await.unwrap().rows_affected() == 0 {
            assert!(tokio::time::Instant::now() < deadline, "the cache row was never written");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        keys.push(format!("email:{email}"));
    }
    let count = |key: String| {
        let db = app.db.clone();
        async move {
            let sql = format!("SELECT 1 FROM enrichment_cache WHERE cache_key = '{key}' AND expires_at > {now}");
            db.query_one(sea_orm::Statement::from_string(db.get_database_backend(), sql)).await.unwrap().is_some()
        }
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while count(keys[1].clone()).await {
        assert!(tokio::time::Instant::now() < deadline, "the 91-day-old row (not expired) was purged within the interval");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(count(keys[0].clone()).await, "the 89-day-old row stays");
}

crate::on_both_backends!(
    cache_rows_past_their_retention_are_purged,
    min_confidence_refuses_weak_answers_free,
    max_age_days_and_refresh_buy_fresh_data_for_everyone,
    data_past_max_age_is_fetched_again,
);
