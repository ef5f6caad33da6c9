//! API keys: stored hashed, refused once revoked or expired.

use leadlex::auth::{hash_key, Permission};
use sea_orm::EntityTrait;
use serde_json::json;

use crate::helpers::{spawn_app, Backend};
use crate::on_both_backends;

on_both_backends!(
    keys_are_stored_hashed,
    revoked_keys_are_401,
    expired_keys_are_401,
    cached_keys_see_revocations_and_top_ups_within_the_ttl
);

async fn keys_are_stored_hashed(backend: Backend) {
    let app = spawn_app(backend).await;
    let ws = app.workspace(leadlex::ratelimit::Plan::Pro, 1).await;
    let created = app.key(&ws, &[Permission::WriteEnrich], None).await;
    assert!(created.key.starts_with("wbk_") && created.key.len() >= 44);
    let rows = entity::api_key::Entity::find().all(&app.db).await.unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.key_hash, hash_key(&created.key));
    assert!(created.key.starts_with(&row.prefix) && row.prefix.len() < 20);
    assert!(!format!("{row:?}").contains(&created.key), "the plaintext is not stored");
}

async fn revoked_keys_are_401(backend: Backend) {
    let app = spawn_app(backend).await;
    let ws = app.workspace(leadlex::ratelimit::Plan::Unmetered, 5).await;
    let key = app.key(&ws, &[Permission::WriteEnrich], None).await;
    assert_eq!(app.enrich(&key.key, json!({"email": "jane@acme.com"})).await.status, 200);
    leadlex::admin::revoke_key(&app.db, &key.id, std::time::Duration::from_secs(86_400)).await.unwrap();
    let r = app.enrich(&key.key, json!({"email": "jane@acme.com"})).await;
    assert_eq!((r.status, r.error_code().as_str()), (401, "invalid_key"));
    assert_eq!(app.assert_books_balance(&ws).await, 4);
}

async fn expired_keys_are_401(backend: Backend) {
    let app = spawn_app(backend).await;
    let ws = app.workspace(leadlex::ratelimit::Plan::Unmetered, 5).await;
    let now = leadlex::now_ms();
    let expired = app.key(&ws, &[Permission::WriteEnrich], Some(now - 1_000)).await;
    let valid = app.key(&ws, &[Permission::WriteEnrich], Some(now + 3_600_000)).await;
    let r = app.enrich(&expired.key, json!({"email": "jane@acme.com"})).await;
    assert_eq!((r.status, r.error_code().as_str()), (401, "invalid_key"));
    assert_eq!(app.enrich(&valid.key, json!({"email": "jane@acme.com"})).await.status, 200);
    let soon = app.key(&ws, &[Permission::WriteEnrich], Some(leadlex::now_ms() + 1_000)).await;
    assert_eq!(app.enrich(&soon.key, json!({"domain": "acme.com"})).await.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    assert_eq!(app.enrich(&soon.key, json!({"domain": "acme.com"})).await.status, 401);
}

async fn cached_keys_see_revocations_and_top_ups_within_the_ttl(backend: Backend) {
    let app = crate::helpers::spawn_app_with(backend, |s| {
        s.hot_caches.known_keys.ttl_ms = 500;
        s.hot_caches.empty_workspaces.ttl_ms = 500;
    })
    .await;
    let ws = app.workspace(leadlex::ratelimit::Plan::Unmetered, 1).await;
    let key = app.key(&ws, &[Permission::WriteEnrich], None).await;
    assert_eq!(app.enrich(&key.key, json!({"email": "jane@acme.com"})).await.status, 200);
    assert_eq!(app.enrich(&key.key, json!({"email": "jane@acme.com"})).await.status, 402);
    leadlex::credits::grant(&app.settler, &ws, 5).await.unwrap();
    leadlex::admin::revoke_key(&app.db, &key.id, std::time::Duration::from_secs(86_400)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let r = app.enrich(&key.key, json!({"email": "jane@acme.com"})).await;
    assert_eq!((r.status, r.error_code().as_str()), (401, "invalid_key"), "revoked within the TTL");
    let other = app.key(&ws, &[Permission::WriteEnrich], None).await;
    assert_eq!(app.enrich(&other.key, json!({"email": "jane@acme.com"})).await.status, 200, "topped up within the TTL");
    assert_eq!(app.assert_books_balance(&ws).await, 4);
}

/// A flood of distinct bad keys never pushes a good key out of the key cache: after
/// 200,000 unknown keys, the valid key is answered from memory (observed through the
/// hot-cache metric: a hit, and no miss that would have read the database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_keys_does_not_evict_a_valid_one() {
    use futures::StreamExt;
    use leadlex::{
        auth::{Authenticator, KeyCache},
        config::HotCachesSettings,
        metrics::Metrics,
    };
    use std::sync::Arc;

    let app = spawn_app(Backend::Sqlite).await;
    let ws = app.workspace(leadlex::ratelimit::Plan::Pro, 1).await;
    let key = app.key(&ws, &[Permission::WriteEnrich], None).await;
    let mut settings = HotCachesSettings::default();
    settings.known_keys.ttl_ms = 600_000;
    settings.unknown_keys.ttl_ms = 600_000;
    let metrics = Arc::new(Metrics::new());
    let auth = Authenticator::new(app.db.clone(), Arc::new(KeyCache::new(&settings, &metrics)), Default::default());
    let count = |outcome: &str| -> u64 {
        let wanted = format!("leadlex_hot_cache_total{{cache=\"known_keys\",outcome=\"{outcome}\"}} ");
        metrics.render().lines().find_map(|l| l.strip_prefix(&wanted).map(|n| n.parse().unwrap())).unwrap_or(0)
    };

    let now = leadlex::now_ms();
    assert!(auth.authenticate(&key.key, now).await.is_ok(), "the valid key is read once");
    let bad_keys = futures::stream::iter(0..200_000u32).map(|i| {
        let auth = &auth;
        async move {
            let bad = format!("wbk_{:0>43}", i);
            assert!(auth.authenticate(&bad, now).await.is_err());
        }
    });
    bad_keys.buffer_unordered(32).collect::<Vec<()>>().await;

    let (hits, misses) = (count("hit"), count("miss"));
    assert!(auth.authenticate(&key.key, now).await.is_ok());
    assert_eq!(count("hit"), hits + 1, "the valid key was answered from memory");
    assert_eq!(count("miss"), misses, "no database read for it");
}
