//! `/v1/api-keys`: a workspace creates, lists and revokes its keys over the API, with
//! the rules a customer relies on: the secret shown once (and sealed at rest for an
//! idempotent retry), other workspaces' keys invisible, the last admin key kept, tiers
//! held to the plan, every error in the envelope and nothing created by a refusal.

use leadlex::auth::{hash_key, Permission};
use leadlex::ratelimit::Plan;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Backend, Resp, TestApp};
use crate::on_both_backends;

on_both_backends!(
    a_key_created_over_the_api_works_and_its_secret_is_shown_once,
    bad_input_is_refused_field_by_field_and_creates_nothing,
    every_key_operation_needs_the_admin_permission_and_a_valid_key,
    an_idempotent_creation_replays_the_same_secret_sealed_at_rest,
    a_creation_still_in_progress_is_409,
    listing_pages_filters_and_counts,
    revocation_is_final_and_never_crosses_workspaces,
    the_last_admin_key_cannot_be_revoked_even_concurrently,
    tiers_follow_the_plan,
    rate_limits_and_body_limits_apply_to_key_operations,
    a_database_failure_is_500_on_every_key_operation,
    last_used_at_is_kept_to_the_minute_without_a_write_per_request
);

fn keys_url(app: &TestApp) -> String {
    format!("{}/v1/api-keys", app.base)
}

async fn admin_on(app: &TestApp, plan: Plan) -> (String, leadlex::admin::KeyCreated) {
    let ws = app.workspace(plan, 100).await;
    // Every permission: a key gives a new key only permissions it holds.
    let admin = app.key(&ws, &Permission::ALL, None).await;
    (ws, admin)
}

async fn create(app: &TestApp, key: &str, body: Value) -> Resp {
    app.request(app.client.post(keys_url(app)).bearer_auth(key).json(&body)).await
}

async fn list(app: &TestApp, key: &str, query: &str) -> Resp {
    app.request(app.client.get(format!("{}{query}", keys_url(app))).bearer_auth(key)).await
}

async fn revoke(app: &TestApp, key: &str, id: &str) -> Resp {
    app.request(app.client.delete(format!("{}/{id}", keys_url(app))).bearer_auth(key)).await
}

async fn a_key_created_over_the_api_works_and_its_secret_is_shown_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ws, admin) = admin_on(&app, Plan::Unmetered).await;
    let r = create(&app, &admin.key, json!({"name": "crm sync", "permissions": ["write:enrich"]})).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.bytes));
    r.assert_rate_limit_headers();
    assert!(r.header("idempotent-replayed").is_none());
    let data = r.json()["data"].clone();
    let secret = data["key"].as_str().unwrap().to_string();
    assert!(secret.starts_with("wbk_") && secret.starts_with(data["prefix"].as_str().unwrap()));
    assert_eq!(data["name"], "crm sync");
    assert_eq!(data["permissions"], json!(["write:enrich"]));
    assert_eq!(data["rate_limit_tier"], "standard");
    assert_eq!((data["description"].clone(), data["expires_at"].clone()), (Value::Null, Value::Null));
    // The new key works at once and can do what it was given, and nothing more.
    assert_eq!(app.enrich(&secret, json!({"email": "jane@acme.com"})).await.status, 200);
    assert_eq!(list(&app, &secret, "").await.status, 403);
    // Listed without its secret, with who created it.
    let listed = list(&app, &admin.key, "").await;
    let keys = listed.json()["data"]["api_keys"].as_array().unwrap().clone();
    let mine = keys.iter().find(|k| k["id"] == data["id"]).expect("listed");
    assert!(mine.get("key").is_none() && !listed.bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
    assert_eq!(mine["created_by"], admin.id.as_str());
    let by_cli = keys.iter().find(|k| k["id"] == admin.id.as_str()).unwrap();
    assert_eq!(by_cli["created_by"], Value::Null, "an operator's key was created by nobody");
    // Stored hashed only.
    let row = entity::api_key::Entity::find_by_id(data["id"].as_str().unwrap()).one(&app.db).await.unwrap().unwrap();
    assert_eq!(row.key_hash, hash_key(&secret));
    assert!(!format!("{row:?}").contains(&secret));
    assert_eq!(row.workspace_id, ws);
}

async fn bad_input_is_refused_field_by_field_and_creates_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, admin) = admin_on(&app, Plan::Unmetered).await;
    let r = create(&app, &admin.key, json!({"name": "x", "permissions": ["write:enrich", "admin:everything"]})).await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "validation_error"));
    let body = r.json();
    assert_eq!(body["error"]["details"][0]["field"], "permissions");
    let message = body["error"]["message"].as_str().unwrap();
    for p in Permission::ALL {
        assert!(message.contains(p.as_str()), "the message names {p}: {message}");
    }
    let refused = [
        (json!({"name": "x", "permissions": []}), "permissions"),
        (json!({"name": "", "permissions": ["read:usage"]}), "name"),
        (json!({"name": "x".repeat(121), "permissions": ["read:usage"]}), "name"),
        (json!({"name": "x", "permissions": ["read:usage"], "description": "d".repeat(501)}), "description"),
        (json!({"name": "x", "permissions": ["read:usage", "read:usage"]}), "permissions"),
        (json!({"name": "x", "permissions": ["read:usage"], "rate_limit_tier": "turbo"}), ""),
        (json!({"name": "x", "permissions": ["read:usage"], "expires_at": "tomorrow"}), ""),
        (json!({"name": "x", "permissions": ["read:usage"], "expires_at": null}), "expires_at"),
        (json!({"permissions": ["read:usage"]}), ""),
        (json!({"name": "x", "permissions": ["read:usage"], "description": false}), ""),
        (json!({"name": 7, "permissions": ["read:usage"]}), ""),
        (json!({"name": "nul\u{0}", "permissions": ["read:usage"]}), ""),
    ];
    for (body, field) in refused {
        let r = create(&app, &admin.key, body.clone()).await;
        assert_eq!((r.status, r.error_code().as_str()), (400, "validation_error"), "{body}");
        if !field.is_empty() {
            assert_eq!(r.json()["error"]["details"][0]["field"], field, "{body}");
        }
    }
    let past = create(&app, &admin.key, json!({"name": "x", "permissions": ["read:usage"], "expires_at": "2020-01-01T00:00:00Z"})).await;
    assert_eq!((past.status, past.error_code().as_str()), (422, "invalid_request"));
    assert_eq!(past.json()["error"]["details"][0]["field"], "expires_at");
    assert_eq!(list(&app, &admin.key, "").await.json()["meta"]["total"], 1, "nothing was created");
}

async fn every_key_operation_needs_the_admin_permission_and_a_valid_key(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ws, admin) = admin_on(&app, Plan::Unmetered).await;
    let enricher = app.key(&ws, &[Permission::WriteEnrich, Permission::ReadUsage], None).await;
    let unknown = format!("wbk_{}", "x".repeat(43));
    for (key, status, code) in [(enricher.key.as_str(), 403, "insufficient_permissions"), (unknown.as_str(), 401, "invalid_key")] {
        let answers = [
            create(&app, key, json!({"name": "x", "permissions": ["admin:api_keys"]})).await,
            list(&app, key, "").await,
            revoke(&app, key, &admin.id).await,
        ];
        for r in answers {
            assert_eq!((r.status, r.error_code().as_str()), (status, code));
        }
    }
    // The permission is checked before the body.
    let r = app.request(app.client.post(keys_url(&app)).bearer_auth(&enricher.key).json(&json!({"nonsense": 1}))).await;
    assert_eq!(r.status, 403);
    assert_eq!(list(&app, &admin.key, "").await.json()["meta"]["total"], 2, "nothing created, nothing revoked");
}

async fn an_idempotent_creation_replays_the_same_secret_sealed_at_rest(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, admin) = admin_on(&app, Plan::Unmetered).await;
    let idem = uuid::Uuid::new_v4().to_string();
    let body = json!({"name": "ci", "permissions": ["write:enrich"], "description": "nightly"});
    let send =
        |body: Value| app.request(app.client.post(keys_url(&app)).bearer_auth(&admin.key).header("Idempotency-Key", &idem).json(&body));
    let first = send(body.clone()).await;
    assert_eq!(first.status, 201);
    let again = send(body.clone()).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json(), first.json(), "the same answer, secret included");
    let secret = first.json()["data"]["key"].as_str().unwrap().to_string();
    assert_eq!(list(&app, &admin.key, "").await.json()["meta"]["total"], 2, "one key created");
    // Whoever reads the database does not find the secret in the stored answer.
    let records = entity::idempotency_record::Entity::find().all(&app.db).await.unwrap();
    assert_eq!(records.len(), 1);
    let stored = records[0].response_body.clone().unwrap();
    assert!(!stored.windows(secret.len()).any(|w| w == secret.as_bytes()), "sealed at rest");
    assert!(!stored.windows(10).any(|w| w == &secret.as_bytes()[4..14]), "no fragment either");
    let other = send(json!({"name": "ci", "permissions": ["read:usage"]})).await;
    assert_eq!((other.status, other.error_code().as_str()), (422, "idempotency_key_reused"));
}

async fn a_creation_still_in_progress_is_409(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ws, admin) = admin_on(&app, Plan::Unmetered).await;
    let idem = uuid::Uuid::new_v4().to_string();
    let spec = leadlex::keys::NewKeySpec {
        name: "ci".into(),
        description: None,
        permissions: [Permission::WriteEnrich].into(),
        tier: leadlex::auth::RateLimitTier::Standard,
        expires_at: None,
        mode: leadlex::auth::KeyMode::Live,
    };
    // Another request with this key holds the claim (as a call still running would).
    app.hold_claim(&ws, &idem, &leadlex::keys::fingerprint(&spec)).await;
    let r = app
        .request(
            app.client
                .post(keys_url(&app))
                .bearer_auth(&admin.key)
                .header("Idempotency-Key", &idem)
                .json(&json!({"name": "ci", "permissions": ["write:enrich"]})),
        )
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (409, "idempotency_key_in_use"));
    assert!(r.header("retry-after").is_some_and(|v| v.parse::<u64>().is_ok_and(|s| (1..=60).contains(&s))));
    assert_eq!(list(&app, &admin.key, "").await.json()["meta"]["total"], 1);
}

async fn listing_pages_filters_and_counts(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, admin) = admin_on(&app, Plan::Unmetered).await;
    let mut ids = Vec::new();
    for i in 0..30 {
        // Newest first is by creation time: one key per millisecond at most.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        let r = create(&app, &admin.key, json!({"name": format!("Batch {i:02}"), "permissions": ["read:usage"]})).await;
        ids.push(r.json()["data"]["id"].as_str().unwrap().to_string());
    }
    let first = list(&app, &admin.key, "").await.json();
    assert_eq!(first["meta"], json!({"page": 1, "per_page": 25, "total": 31}));
    let names: Vec<&str> = first["data"]["api_keys"].as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 25);
    assert_eq!(names[0], "Batch 29", "newest first");
    let second = list(&app, &admin.key, "?page=2").await.json();
    assert_eq!(second["data"]["api_keys"].as_array().unwrap().len(), 6);
    assert_eq!(second["data"]["api_keys"][5]["id"], admin.id.as_str(), "the oldest last");
    let beyond = list(&app, &admin.key, "?page=9&per_page=100").await.json();
    assert_eq!((beyond["data"]["api_keys"].as_array().unwrap().len(), beyond["meta"]["total"].clone()), (0, json!(31)));
    let found = list(&app, &admin.key, "?search=batch%201").await.json();
    assert_eq!(found["meta"]["total"], 10, "case-insensitive name match: {found}");
    let prefix = &app.key(&app.workspace(Plan::Pro, 0).await, &[Permission::ReadUsage], None).await.prefix;
    assert_eq!(list(&app, &admin.key, &format!("?search={prefix}")).await.json()["meta"]["total"], 0, "another workspace's key");
    let literal = list(&app, &admin.key, "?search=%25").await.json();
    assert_eq!(literal["meta"]["total"], 0, "`%` is a character, not a wildcard");
    assert_eq!(revoke(&app, &admin.key, &ids[0]).await.status, 204);
    assert_eq!(list(&app, &admin.key, "").await.json()["meta"]["total"], 30);
    let all = list(&app, &admin.key, "?include_revoked=true&per_page=100").await.json();
    assert_eq!(all["meta"]["total"], 31);
    let gone = all["data"]["api_keys"].as_array().unwrap().iter().find(|k| k["id"] == ids[0].as_str()).unwrap().clone();
    assert!(gone["revoked_at"].is_string());
    for bad in ["?per_page=0", "?per_page=101", "?page=0", "?page=x", "?include_revoked=maybe", "?search=a%00b"] {
        let r = list(&app, &admin.key, bad).await;
        assert_eq!((r.status, r.error_code().as_str()), (400, "validation_error"), "{bad}");
    }
    let r = list(&app, &admin.key, "?per_page=0").await;
    assert_eq!(r.json()["error"]["details"][0]["field"], "per_page");
}

async fn revocation_is_final_and_never_crosses_workspaces(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ws, admin) = admin_on(&app, Plan::Unmetered).await;
    let enricher = app.key(&ws, &[Permission::WriteEnrich], None).await;
    assert_eq!(app.enrich(&enricher.key, json!({"domain": "acme.com"})).await.status, 200);
    let r = revoke(&app, &admin.key, &enricher.id).await;
    assert_eq!(r.status, 204);
    assert!(r.bytes.is_empty());
    r.assert_rate_limit_headers();
    let refused = app.enrich(&enricher.key, json!({"domain": "acme.com"})).await;
    assert_eq!((refused.status, refused.error_code().as_str()), (401, "invalid_key"));
    assert_eq!(revoke(&app, &admin.key, &enricher.id).await.status, 204, "revoking again changes nothing");
    // Another workspace's key is not found, exactly like a key that does not exist.
    let (_, stranger) = admin_on(&app, Plan::Unmetered).await;
    let theirs = revoke(&app, &admin.key, &stranger.id).await;
    let nobody = revoke(&app, &admin.key, "key_doesnotexist").await;
    for r in [&theirs, &nobody] {
        assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
    }
    let (a, b) = (theirs.json(), nobody.json());
    assert_eq!(a["error"]["message"], b["error"]["message"]);
    let trace = app.request(app.client.request(reqwest::Method::TRACE, format!("{}/{}", keys_url(&app), stranger.id))).await;
    assert_eq!((trace.status, trace.header("allow")), (405, Some("DELETE")), "a key's path answers DELETE only");
    assert_eq!(list(&app, &stranger.key, "").await.json()["meta"]["total"], 1, "still active");
}

async fn the_last_admin_key_cannot_be_revoked_even_concurrently(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ws, admin) = admin_on(&app, Plan::Unmetered).await;
    let r = revoke(&app, &admin.key, &admin.id).await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "last_admin_key"));
    // An expired admin key does not count as another admin.
    app.key(&ws, &[Permission::AdminApiKeys], Some(leadlex::now_ms() - 1)).await;
    assert_eq!(revoke(&app, &admin.key, &admin.id).await.status, 403);
    for _ in 0..5 {
        let first = app.key(&ws, &[Permission::AdminApiKeys], None).await;
        let second = app.key(&ws, &[Permission::AdminApiKeys, Permission::WriteEnrich], None).await;
        // Keep exactly these two as the workspace's admins.
        entity::api_key::Entity::update_many()
            .col_expr(entity::api_key::Column::RevokedAt, sea_orm::sea_query::Expr::value(leadlex::now_ms()))
            .filter(entity::api_key::Column::WorkspaceId.eq(ws.as_str()))
            .filter(entity::api_key::Column::Id.is_not_in([first.id.clone(), second.id.clone()]))
            .exec(&app.db)
            .await
            .unwrap();
        let (a, b) = tokio::join!(revoke(&app, &first.key, &second.id), revoke(&app, &second.key, &first.id));
        let statuses = [a.status, b.status];
        assert!(statuses.contains(&204), "one of them goes: {statuses:?}");
        let active = entity::api_key::Entity::find()
            .filter(entity::api_key::Column::WorkspaceId.eq(ws.as_str()))
            .filter(entity::api_key::Column::RevokedAt.is_null())
            .all(&app.db)
            .await
            .unwrap();
        assert_eq!(active.len(), 1, "exactly one admin key is left: {statuses:?}");
    }
}

async fn tiers_follow_the_plan(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, starter) = admin_on(&app, Plan::Starter).await;
    let r = create(&app, &starter.key, json!({"name": "x", "permissions": ["write:enrich"], "rate_limit_tier": "high"})).await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "tier_not_allowed"));
    let (pro_ws, pro) = admin_on(&app, Plan::Pro).await;
    let r = create(&app, &pro.key, json!({"name": "x", "permissions": ["write:enrich"], "rate_limit_tier": "unmetered"})).await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "tier_not_allowed"));
    assert_eq!(r.json()["error"]["message"], "the workspace's pro plan does not allow `unmetered` keys");
    let high = create(&app, &pro.key, json!({"name": "batch", "permissions": ["write:enrich"], "rate_limit_tier": "high"})).await;
    assert_eq!(high.status, 201);
    let high = high.json()["data"]["key"].as_str().unwrap().to_string();
    let standard = app.key(&pro_ws, &[Permission::WriteEnrich], None).await.key;
    // A high key counts against its own quota, not the workspace's standard keys'.
    let remaining = |r: &Resp| r.header("x-ratelimit-remaining").unwrap().parse::<u64>().unwrap();
    let before = remaining(&app.enrich(&standard, json!({"domain": "acme.com"})).await);
    for _ in 0..3 {
        assert_eq!(app.enrich(&high, json!({"domain": "acme.com"})).await.status, 200);
    }
    let after = app.enrich(&standard, json!({"domain": "acme.com"})).await;
    assert_eq!(remaining(&after), before - 1, "the high key's calls did not count against the standard keys");
    assert_eq!(after.header("x-ratelimit-limit"), Some("1000"));
    let (_, org) = admin_on(&app, Plan::Org).await;
    let r = create(&app, &org.key, json!({"name": "x", "permissions": ["write:enrich"], "rate_limit_tier": "unmetered"})).await;
    assert_eq!(r.status, 201);
    let unmetered = r.json()["data"]["key"].as_str().unwrap().to_string();
    let before = remaining(&list(&app, &org.key, "").await);
    for _ in 0..3 {
        let r = app.enrich(&unmetered, json!({"domain": "acme.com"})).await;
        assert_eq!(r.header("x-ratelimit-limit"), Some("2147483647"));
    }
    assert_eq!(remaining(&list(&app, &org.key, "").await), before - 1, "unmetered calls count against nothing of the workspace's");
}

async fn rate_limits_and_body_limits_apply_to_key_operations(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, admin) = admin_on(&app, Plan::Unmetered).await;
    let r = app.request(app.client.post(keys_url(&app)).bearer_auth(&admin.key).header("content-type", "text/plain").body("{}")).await;
    assert_eq!((r.status, r.error_code().as_str()), (415, "unsupported_media_type"));
    let huge = json!({"name": "x", "permissions": ["read:usage"], "description": "d".repeat(20_000)});
    let r = create(&app, &admin.key, huge).await;
    assert_eq!((r.status, r.error_code().as_str()), (413, "payload_too_large"));
    // The starter plan allows 10 requests a minute, whatever the operation.
    let (_, limited) = admin_on(&app, Plan::Starter).await;
    for _ in 0..10 {
        assert_eq!(list(&app, &limited.key, "").await.status, 200);
    }
    let answers = [
        create(&app, &limited.key, json!({"name": "x", "permissions": ["read:usage"]})).await,
        list(&app, &limited.key, "").await,
        revoke(&app, &limited.key, &limited.id).await,
    ];
    for r in answers {
        assert_eq!((r.status, r.error_code().as_str()), (429, "rate_limited"));
        assert!(r.header("retry-after").is_some());
    }
}

async fn a_database_failure_is_500_on_every_key_operation(backend: Backend) {
    // The caller's key stays cached, so that the failure is the operation's own, not the
    // authentication's.
    let app = crate::helpers::spawn_app_with(backend, |s| s.hot_caches.known_keys.ttl_ms = 600_000).await;
    let (_, admin) = admin_on(&app, Plan::Unmetered).await;
    assert_eq!(list(&app, &admin.key, "").await.status, 200);
    app.db.execute_unprepared("DROP TABLE idempotency_records").await.unwrap();
    let r = app
        .request(
            app.client
                .post(keys_url(&app))
                .bearer_auth(&admin.key)
                .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
                .json(&json!({"name": "x", "permissions": ["read:usage"]})),
        )
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (500, "internal_error"));
    app.db.execute_unprepared("ALTER TABLE api_keys RENAME COLUMN description TO gone").await.unwrap();
    for r in [list(&app, &admin.key, "").await, revoke(&app, &admin.key, &admin.id).await] {
        assert_eq!((r.status, r.error_code().as_str()), (500, "internal_error"));
        let message = r.json()["error"]["message"].as_str().unwrap().to_lowercase();
        assert!(!message.contains("description") && !message.contains("sql"), "the cause stays in the logs: {message}");
    }
}

async fn last_used_at_is_kept_to_the_minute_without_a_write_per_request(backend: Backend) {
    let app = crate::helpers::spawn_app_with(backend, |s| s.server.last_used_flush_ms = 100).await;
    let (ws, admin) = admin_on(&app, Plan::Unmetered).await;
    let user = app.key(&ws, &[Permission::WriteEnrich], None).await;
    let url = format!("{}?search={}", keys_url(&app), user.prefix);
    let last_used = || async { list_first(&app, &admin.key, &url).await };
    assert_eq!(last_used().await, Value::Null, "never used");
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    for _ in 0..5 {
        assert_eq!(app.enrich(&user.key, json!({"domain": "acme.com"})).await.status, 200);
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let first = last_used().await;
    let at: chrono::DateTime<chrono::Utc> = first.as_str().expect("set once used").parse().unwrap();
    assert!(at >= before && at <= chrono::Utc::now(), "{at}");
    // Used again within the minute: nothing more is written.
    assert_eq!(app.enrich(&user.key, json!({"domain": "acme.com"})).await.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(last_used().await, first, "a key's use is written at most once a minute");
}

/// `last_used_at` of the first key a list URL answers.
async fn list_first(app: &TestApp, key: &str, url: &str) -> Value {
    let listed = app.request(app.client.get(url).bearer_auth(key)).await.json();
    listed["data"]["api_keys"][0]["last_used_at"].clone()
}
