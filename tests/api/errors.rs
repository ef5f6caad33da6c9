//! Every row of the public error table, and the errors poem would raise by itself, in the
//! one JSON envelope; nothing charged for any of them.

use leadlex::auth::Permission;
use serde_json::json;

use crate::helpers::{domain_known_by, spawn_app, spawn_app_with, Backend};
use crate::on_both_backends;

/// The published request schema and the server agree, both ways: every body the schema
/// allows is answered (never 400), every body it refuses is a 400 naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_schema_accepts_exactly_what_the_server_does() {
    use crate::spec_check::request_is_valid;
    let app = spawn_app(Backend::Sqlite).await;
    let (_, key) = app.funded(1_000).await;
    let long_label = format!("{}.com", "a".repeat(64));
    let allowed = [
        json!({"email": "jane@acme.com"}),
        json!({"email": "  JANE@Acme.COM\t"}),
        json!({"email": "o'brien+tag@mail.acme.co.uk"}),
        json!({"email": "jane@bücher.de"}),
        json!({"domain": "https://www.ACME.com:8443/about?x=1#top"}),
        json!({"domain": "bücher.de"}),
        json!({"domain": "acme.com.", "include": ["company"]}),
        json!({"email": "jane@gmail.com", "domain": "acme.com", "include": ["person", "company"]}),
    ];
    for body in allowed {
        assert!(request_is_valid("POST", "/v1/email/enrich", &body), "the schema allows {body}");
        let r = app.enrich(&key, body.clone()).await;
        assert!(r.status == 200 || r.status == 404, "{body} is answered: {} {}", r.status, String::from_utf8_lossy(&r.bytes));
    }
    let refused = [
        json!({}),
        json!({"include": ["company"]}),
        json!({"email": null, "domain": "acme.com"}),
        json!({"domain": "acme.com", "email": 42}),
        json!({"domain": "acme.com", "email": "not-an-email"}),
        json!({"email": "jane@acme.com", "domain": "0".repeat(1000)}),
        json!({"domain": "127.0.0.1"}),
        json!({"domain": "ftp://acme.com"}),
        json!({"domain": long_label}),
        json!({"email": "ja..ne@acme.com"}),
        json!({"email": format!("{}@acme.com", "a".repeat(250))}),
        json!({"domain": "acme.com", "unknown": [1, 2]}),
    ];
    for body in refused {
        assert!(!request_is_valid("POST", "/v1/email/enrich", &body), "the schema refuses {body}");
        let r = app.enrich(&key, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", String::from_utf8_lossy(&r.bytes));
    }
}

on_both_backends!(
    validation_errors_are_400_with_details,
    missing_and_unknown_keys_are_401,
    exhausted_balance_is_402_before_any_vendor,
    missing_permission_is_403,
    no_match_is_404_and_free,
    poem_errors_use_the_envelope,
    all_vendors_failing_is_503_and_free,
    database_failure_is_500_without_details_and_free,
);

async fn validation_errors_are_400_with_details(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ws, key) = app.funded(10).await;
    for (body, field) in [
        (json!({}), "email"),
        (json!({"email": "not-an-email"}), "email"),
        (json!({"domain": "not a domain"}), "domain"),
        (json!({"domain": "nodot"}), "domain"),
        (json!({"email": "jane@acme"}), "email"),
        (json!({"email": null, "domain": "acme.com"}), "email"),
        (json!({"email": "jane@acme.com", "domain": "bad..domain"}), "domain"),
    ] {
        let r = app.enrich(&key, body.clone()).await;
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.error_code(), "validation_error");
        let details = r.json()["error"]["details"].clone();
        assert!(details.as_array().is_some_and(|d| d.iter().any(|p| p["field"] == field)), "details name `{field}` for {body}: {details}");
        r.assert_rate_limit_headers();
    }
    for body in
        [json!({"email": "jane@acme.com", "include": ["persons"]}), json!({"email": 42}), json!({"domain": "acme.com", "include": []})]
    {
        let r = app.enrich(&key, body.clone()).await;
        assert_eq!((r.status, r.error_code().as_str()), (400, "validation_error"), "{body}");
    }
    let r = app.request(app.post_enrich(&key).header("Idempotency-Key", "not-a-uuid").json(&json!({"email": "jane@acme.com"}))).await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "validation_error"));
    assert_eq!(r.json()["error"]["details"][0]["field"], "Idempotency-Key");
    let r = app.enrich(&key, json!({"email": "jane@acme.com", "include": ["persons"]})).await;
    let e = r.json()["error"].clone();
    assert_eq!(e["details"][0]["field"], "include", "{e}");
    assert!(e["message"].as_str().unwrap().contains("`person`, `company`, `social`"), "says what the field takes: {e}");
    assert!(!e.to_string().contains("IncludeSection"), "no internal type name: {e}");
    assert_eq!(app.assert_books_balance(&ws).await, 10, "nothing charged");
}

async fn missing_and_unknown_keys_are_401(backend: Backend) {
    let app = spawn_app(backend).await;
    let url = format!("{}/v1/email/enrich", app.base);
    let body = json!({"email": "jane@acme.com"});
    let cases = [
        app.client.post(&url).json(&body),
        app.client.post(&url).bearer_auth("wbk_short").json(&body),
        app.client.post(&url).bearer_auth(format!("wbk_{}", "A".repeat(43))).json(&body),
        app.client.post(&url).header("Authorization", "Basic d2JrOng=").json(&body),
        app.client.post(&url).bearer_auth("").json(&body),
    ];
    for case in cases {
        let r = app.request(case).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.error_code(), "invalid_key");
        assert!(r.header("x-ratelimit-limit").is_none(), "no rate-limit headers before the key is known");
    }
}

async fn exhausted_balance_is_402_before_any_vendor(backend: Backend) {
    // Vendors at a dead address: a vendor call would turn into 503, so 402 proves none was made.
    let app = spawn_app_with(backend, |s| s.vendors = dead_vendors()).await;
    let (ws, key) = app.funded(0).await;
    let r = app.enrich(&key, json!({"email": "jane@acme.com"})).await;
    assert_eq!(r.status, 402);
    assert_eq!(r.error_code(), "insufficient_credits");
    r.assert_rate_limit_headers();
    assert_eq!(app.assert_books_balance(&ws).await, 0);
}

async fn missing_permission_is_403(backend: Backend) {
    let app = spawn_app(backend).await;
    let ws = app.workspace(leadlex::ratelimit::Plan::Unmetered, 5).await;
    let key = app.key(&ws, &[Permission::ReadUsage], None).await;
    let r = app.enrich(&key.key, json!({"email": "jane@acme.com"})).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code(), "insufficient_permissions");
    r.assert_rate_limit_headers();
    // Permission is checked before the body is validated.
    let r = app.request(app.post_enrich(&key.key).header("content-type", "application/json").body("{nope")).await;
    assert_eq!(r.status, 403);
    assert_eq!(app.assert_books_balance(&ws).await, 5);
}

async fn no_match_is_404_and_free(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ws, key) = app.funded(5).await;
    let nobody = domain_known_by(false, false);
    let r = app.enrich(&key, json!({"domain": nobody})).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "no_match");
    r.assert_rate_limit_headers();
    // Found, but not the section asked for: also a free 404.
    let r = app.enrich(&key, json!({"email": "jane@acme.com", "include": ["social"]})).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "no_match"));
    // A domain never identifies a person.
    let r = app.enrich(&key, json!({"domain": "acme.com", "include": ["person"]})).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "no_match"));
    assert_eq!(app.assert_books_balance(&ws).await, 5);
}

async fn poem_errors_use_the_envelope(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.server.max_body_bytes = 1024).await;
    let (ws, key) = app.funded(5).await;
    let url = format!("{}/v1/email/enrich", app.base);
    let r = app.request(app.post_enrich(&key).header("content-type", "application/json").body("{\"email\": ")).await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "validation_error"), "malformed JSON");
    r.assert_rate_limit_headers();
    // Every validation error names its field in `details`, in the contract's words (no
    // internal type name).
    let body = |text: &str| app.post_enrich(&key).header("content-type", "application/json").body(text.to_string());
    for (text, field, says) in [
        ("{\"email\": ", "body", "not valid JSON"),
        ("[1, 2]", "body", "JSON object"),
        ("null", "body", "JSON object"),
        ("{\"email\": \"jane@acme.com\", \"include\": [\"persons\"]}", "include", "`person`, `company`, `social`"),
    ] {
        let r = app.request(body(text)).await;
        assert_eq!((r.status, r.error_code().as_str()), (400, "validation_error"), "{text}");
        let e = r.json()["error"].clone();
        assert_eq!(e["details"][0]["field"], field, "{text}: {e}");
        assert!(e["details"][0]["message"].as_str().unwrap().contains(says), "{text}: {e}");
        for internal in ["EnrichFields", "IncludeSection", "EnrichRequest"] {
            assert!(!e.to_string().contains(internal), "{text}: {e}");
        }
    }
    let r = app.request(app.post_enrich(&key).header("content-type", "text/plain").body("{\"email\":\"jane@acme.com\"}")).await;
    assert_eq!((r.status, r.error_code().as_str()), (415, "unsupported_media_type"));
    let r = app.request(app.post_enrich(&key).json(&json!({"email": format!("{}@acme.com", "a".repeat(2000))}))).await;
    assert_eq!((r.status, r.error_code().as_str()), (413, "payload_too_large"));
    r.assert_rate_limit_headers();
    let r = app.request(app.client.get(&url).bearer_auth(&key)).await;
    assert_eq!((r.status, r.error_code().as_str()), (405, "method_not_allowed"));
    r.assert_rate_limit_headers();
    // Without a valid key, neither has the headers (nor is the 413's body read).
    let r = app.request(app.client.get(&url)).await;
    assert_eq!((r.status, r.header("x-ratelimit-limit")), (405, None));
    let r = app.request(app.client.get(format!("{}/v1/nothing/here", app.base))).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
    assert_eq!(r.header("content-type"), Some("application/json; charset=utf-8"));
    assert_eq!(app.assert_books_balance(&ws).await, 5);
}

fn dead_vendors() -> Vec<leadlex::config::VendorSettings> {
    let url = crate::helpers::dead_url();
    ["vendor_a", "vendor_b"]
        .into_iter()
        .map(|name| leadlex::config::VendorSettings {
            name: leadlex::lookup::vendors::VendorName::parse(name).unwrap(),
            base_url: url.clone(),
            api_key: leadlex::config::Secret::new("k"),
            timeout_ms: 500,
        })
        .collect()
}

async fn all_vendors_failing_is_503_and_free(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.vendors = dead_vendors()).await;
    let (ws, key) = app.funded(5).await;
    let r = app.enrich(&key, json!({"email": "jane@acme.com"})).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.error_code(), "upstream_unavailable");
    assert!(r.header("retry-after").is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s >= 1)));
    assert_eq!(app.assert_books_balance(&ws).await, 5);
}

async fn database_failure_is_500_without_details_and_free(backend: Backend) {
    use sea_orm::ConnectionTrait;
    let app = spawn_app(backend).await;
    let (ws, key) = app.funded(5).await;
    app.db.execute_unprepared("DROP TABLE enrichment_cache").await.unwrap();
    let r = app.enrich(&key, json!({"email": "jane@acme.com"})).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.error_code(), "internal_error");
    let message = r.json()["error"]["message"].as_str().unwrap().to_lowercase();
    assert!(!message.contains("enrichment_cache") && !message.contains("sql"), "the cause stays in the logs: {message}");
    r.assert_rate_limit_headers();
    assert_eq!(app.assert_books_balance(&ws).await, 5);
}
