//! Test-mode keys (`wbk_test_…`), as a customer's CI uses them: created over the API and
//! the CLI, answered by the built-in sandbox even when real vendors are configured (the
//! mock vendors here must see no request), never charged, with a cache, idempotency keys
//! and rate limits apart from live ones, and every documented trigger giving its outcome.

use leadlex::{auth::Permission, ratelimit::Plan};
use serde_json::{json, Value};

use crate::helpers::{person_vendor, spawn_app_with, spawn_app_with_vendor, Backend, Resp, TestApp};

/// A workspace with `credits`, a live `write:enrich` key and a test key created over the
/// API by a live admin key.
async fn workspace_with_keys(app: &TestApp, credits: i64) -> (String, String, String) {
    let ws = app.workspace(Plan::Pro, credits).await;
    let live = app.key(&ws, &Permission::ALL, None).await.key;
    let created = app
        .request(
            app.client
                .post(format!("{}/v1/api-keys", app.base))
                .bearer_auth(&live)
                .json(&json!({"name": "ci", "permissions": ["write:enrich"], "mode": "test"})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.bytes));
    let data = &created.json()["data"];
    assert_eq!(data["mode"], "test");
    let test = data["key"].as_str().unwrap().to_string();
    assert!(test.starts_with("wbk_test_"), "{test}");
    assert!(data["prefix"].as_str().unwrap().starts_with("wbk_test_"));
    (ws, live, test)
}

fn email(trigger: &str, tag: &str) -> Value {
    json!({"email": format!("{trigger}+{tag}@leadlex.test")})
}

async fn every_trigger_gives_its_outcome_for_free(backend: Backend) {
    let vendor = person_vendor("Live Person").await;
    let app = spawn_app_with_vendor(backend, &vendor).await;
    let (ws, _live, test) = workspace_with_keys(&app, 5).await;
    let tag = uuid::Uuid::new_v4().simple().to_string();

    let first = app.enrich(&test, email("vendor_a", &tag)).await;
    assert_eq!(first.status, 200, "{}", String::from_utf8_lossy(&first.bytes));
    assert_eq!((first.json()["data"]["source"].as_str(), first.json()["data"]["credits_remaining"].as_i64()), (Some("vendor_a"), Some(5)));
    assert!(first.json()["data"]["person"]["full_name"].is_string(), "sandbox data: {}", String::from_utf8_lossy(&first.bytes));
    first.assert_rate_limit_headers();
    let again = app.enrich(&test, email("vendor_a", &tag)).await;
    assert_eq!((again.status, again.json()["data"]["source"].as_str()), (200, Some("cached")));
    assert_eq!(again.json()["data"]["person"], first.json()["data"]["person"]);

    let b = app.enrich(&test, email("vendor_b", &tag)).await;
    assert_eq!((b.status, b.json()["data"]["source"].as_str()), (200, Some("vendor_b")), "{}", String::from_utf8_lossy(&b.bytes));
    let b_again = app.enrich(&test, email("vendor_b", &tag)).await;
    assert_eq!(b_again.json()["data"]["source"], "cached");

    let none = app.enrich(&test, email("no_match", &tag)).await;
    assert_eq!((none.status, none.error_code().as_str()), (404, "no_match"));
    let broke = app.enrich(&test, email("insufficient_credits", &tag)).await;
    assert_eq!((broke.status, broke.error_code().as_str()), (402, "insufficient_credits"));
    for _ in 0..2 {
        // The same outcome every time: no breaker opens, nothing is cached.
        let down = app.enrich(&test, email("upstream_unavailable", &tag)).await;
        assert_eq!((down.status, down.error_code().as_str()), (503, "upstream_unavailable"), "{}", String::from_utf8_lossy(&down.bytes));
        assert!(down.header("retry-after").is_some());
    }
    // The sandbox's other data answers too, and the first trigger still works after the
    // outages.
    let jane = app.enrich(&test, json!({"email": "jane@acme.com"})).await;
    assert_eq!((jane.status, jane.json()["data"]["source"].as_str()), (200, Some("vendor_a")));
    let other_tag = app.enrich(&test, email("vendor_a", "other")).await;
    assert_eq!(other_tag.json()["data"]["source"], "vendor_a");

    assert_eq!(app.assert_books_balance(&ws).await, 5, "nothing charged");
    assert_eq!(app.charges(&ws).await, 0);
    assert!(vendor.received_requests().await.unwrap().is_empty(), "the live vendor was never asked");
}

async fn live_and_test_data_never_meet(backend: Backend) {
    let vendor = person_vendor("Live Person").await;
    let app = spawn_app_with_vendor(backend, &vendor).await;
    let (ws, live, test) = workspace_with_keys(&app, 5).await;
    let body = json!({"email": "jane@acme.com"});

    let tested = app.enrich(&test, body.clone()).await;
    assert_eq!((tested.status, tested.json()["data"]["source"].as_str()), (200, Some("vendor_a")));
    // The test call cached nothing the live call can see: it asks the live vendor and pays.
    let paid = app.enrich(&live, body.clone()).await;
    assert_eq!((paid.status, paid.json()["data"]["source"].as_str()), (200, Some("vendor_a")), "{}", String::from_utf8_lossy(&paid.bytes));
    assert_eq!(paid.json()["data"]["person"]["full_name"], "Live Person");
    assert_eq!(paid.json()["data"]["credits_remaining"], 4);
    assert_eq!(vendor.received_requests().await.unwrap().len(), 1);
    // And the live answer is not served to the test key: its own cached sandbox answer is.
    let tested_again = app.enrich(&test, body.clone()).await;
    assert_eq!(tested_again.json()["data"]["source"], "cached");
    assert_eq!(tested_again.json()["data"]["person"], tested.json()["data"]["person"]);
    assert_eq!(tested_again.json()["data"]["credits_remaining"], 4, "the live balance, read now");

    // Another workspace's test key starts from an empty test cache.
    let (_, _, other_test) = workspace_with_keys(&app, 0).await;
    let elsewhere = app.enrich(&other_test, body).await;
    assert_eq!((elsewhere.status, elsewhere.json()["data"]["source"].as_str()), (200, Some("vendor_a")));
    assert_eq!(elsewhere.json()["data"]["credits_remaining"], 0, "a test key works on an empty balance");

    assert_eq!(app.assert_books_balance(&ws).await, 4);
    assert_eq!(app.charges(&ws).await, 1);
}

async fn idempotency_keys_are_apart_from_live_ones(backend: Backend) {
    let vendor = person_vendor("Live Person").await;
    let app = spawn_app_with_vendor(backend, &vendor).await;
    let (ws, live, test) = workspace_with_keys(&app, 5).await;
    let idem = uuid::Uuid::new_v4().to_string();
    let body = json!({"email": "jane@acme.com"});

    let paid = app.enrich_idem(&live, &idem, body.clone()).await;
    assert_eq!(paid.status, 200);
    let tested = app.enrich_idem(&test, &idem, body.clone()).await;
    assert_eq!(tested.status, 200);
    assert!(tested.header("idempotent-replayed").is_none(), "not the live call's replay");
    assert_eq!(tested.json()["data"]["source"], "vendor_a");
    assert_ne!(tested.json()["data"]["person"], paid.json()["data"]["person"]);

    let replayed = app.enrich_idem(&test, &idem, body.clone()).await;
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    assert_eq!(replayed.bytes, tested.bytes, "byte for byte");
    let reused = app.enrich_idem(&test, &idem, json!({"email": "other@acme.com"})).await;
    assert_eq!((reused.status, reused.error_code().as_str()), (422, "idempotency_key_reused"));
    assert_eq!(app.charges(&ws).await, 1);
}

async fn the_slow_trigger_shows_a_retry_in_flight(backend: Backend) {
    let vendor = person_vendor("Live Person").await;
    let app = spawn_app_with_vendor(backend, &vendor).await;
    let (_ws, _live, test) = workspace_with_keys(&app, 5).await;
    let idem = uuid::Uuid::new_v4().to_string();
    let body = email("slow", &uuid::Uuid::new_v4().simple().to_string());
    let (first, retry) = tokio::join!(app.enrich_idem(&test, &idem, body.clone()), async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        app.enrich_idem(&test, &idem, body.clone()).await
    });
    assert_eq!((first.status, first.json()["data"]["source"].as_str()), (200, Some("vendor_a")));
    assert_eq!((retry.status, retry.error_code().as_str()), (409, "idempotency_key_in_use"));
    assert!(retry.header("retry-after").is_some());
    let later = app.enrich_idem(&test, &idem, body).await;
    assert_eq!((later.status, later.header("idempotent-replayed")), (200, Some("true")));
}

async fn test_keys_have_small_limits_of_their_own(backend: Backend) {
    let vendor = person_vendor("Live Person").await;
    let app = spawn_app_with_vendor(backend, &vendor).await;
    let (_ws, live, test) = workspace_with_keys(&app, 100).await;
    let body = json!({"email": "jane@acme.com"});
    let live_before = app.enrich(&live, body.clone()).await;
    let live_left: u64 = live_before.header("x-ratelimit-remaining").unwrap().parse().unwrap();

    let first = app.enrich(&test, body.clone()).await;
    assert_eq!(first.header("x-ratelimit-limit"), Some("1000"), "the test-mode daily quota");
    for _ in 1..10 {
        assert_eq!(app.enrich(&test, body.clone()).await.status, 200);
    }
    let limited: Resp = app.enrich(&test, body.clone()).await;
    assert_eq!((limited.status, limited.error_code().as_str()), (429, "rate_limited"));
    assert!(limited.header("retry-after").is_some());

    // The live key's limits did not move.
    let live_after = app.enrich(&live, body).await;
    assert_eq!(live_after.status, 200);
    assert_eq!(live_after.header("x-ratelimit-remaining").unwrap().parse::<u64>().unwrap(), live_left - 1);
}

async fn a_test_key_manages_test_keys_only(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let ws = app.workspace(Plan::Pro, 10).await;
    let live_admin = app.key(&ws, &Permission::ALL, None).await;
    let url = format!("{}/v1/api-keys", app.base);
    let created = app
        .request(
            app.client
                .post(&url)
                .bearer_auth(&live_admin.key)
                .json(&json!({"name": "ci admin", "permissions": ["admin:api_keys", "write:enrich"], "mode": "test"})),
        )
        .await;
    let test_admin = created.json()["data"]["key"].as_str().unwrap().to_string();

    // Its default is test mode; a live key is refused.
    let made =
        app.request(app.client.post(&url).bearer_auth(&test_admin).json(&json!({"name": "x", "permissions": ["write:enrich"]}))).await;
    assert_eq!((made.status, made.json()["data"]["mode"].as_str()), (201, Some("test")));
    let live_asked = app
        .request(
            app.client.post(&url).bearer_auth(&test_admin).json(&json!({"name": "x", "permissions": ["write:enrich"], "mode": "live"})),
        )
        .await;
    assert_eq!((live_asked.status, live_asked.error_code().as_str()), (403, "insufficient_permissions"));

    // It sees test keys only; a live key's id is unknown to it.
    let listed = app.request(app.client.get(&url).bearer_auth(&test_admin)).await;
    let listed = listed.json();
    let modes: Vec<&str> = listed["data"]["api_keys"].as_array().unwrap().iter().map(|k| k["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["test", "test"]);
    let all = app.request(app.client.get(&url).bearer_auth(&live_admin.key)).await;
    assert_eq!(all.json()["meta"]["total"], 3);
    let gone = app.request(app.client.delete(format!("{url}/{}", live_admin.id)).bearer_auth(&test_admin)).await;
    assert_eq!((gone.status, gone.error_code().as_str()), (404, "not_found"));

    // Test admin keys do not count as the workspace's admin keys: the last live one
    // cannot be revoked while they exist, and a test admin key may revoke itself.
    let last_live = app.request(app.client.delete(format!("{url}/{}", live_admin.id)).bearer_auth(&live_admin.key)).await;
    assert_eq!((last_live.status, last_live.error_code().as_str()), (403, "last_admin_key"));
    let test_admin_id = created.json()["data"]["id"].as_str().unwrap().to_string();
    let itself = app.request(app.client.delete(format!("{url}/{test_admin_id}")).bearer_auth(&test_admin)).await;
    assert_eq!(itself.status, 204, "{}", String::from_utf8_lossy(&itself.bytes));
    let refused = app.request(app.client.get(&url).bearer_auth(&test_admin)).await;
    assert_eq!(refused.status, 401, "revoked");
}

crate::on_both_backends!(
    every_trigger_gives_its_outcome_for_free,
    live_and_test_data_never_meet,
    idempotency_keys_are_apart_from_live_ones,
    the_slow_trigger_shows_a_retry_in_flight,
    test_keys_have_small_limits_of_their_own,
    a_test_key_manages_test_keys_only,
);

/// The trigger table is the same in the spec's description of the operation and in
/// `docs/testing.md`, and names every trigger the server knows.
#[test]
fn the_trigger_table_is_published_once_in_two_places() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let spec: Value = serde_json::from_str(&std::fs::read_to_string(root.join("openapi/leadlex.json")).unwrap()).unwrap();
    let description = spec["paths"]["/v1/email/enrich"]["post"]["description"].as_str().unwrap();
    let rows = |text: &str| text.lines().map(str::trim).filter(|l| l.starts_with("| `")).map(str::to_string).collect::<Vec<_>>();
    let in_spec = rows(description);
    let docs = std::fs::read_to_string(root.join("docs/testing.md")).unwrap();
    assert_eq!(in_spec, rows(&docs));
    for (_, name) in leadlex::test_mode::Trigger::ALL {
        assert!(in_spec.iter().any(|row| row.starts_with(&format!("| `{name}+tag@leadlex.test`"))), "{name} is documented");
    }
}
