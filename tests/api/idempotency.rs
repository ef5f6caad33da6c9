//! `Idempotency-Key`: replays are byte-for-byte and free, conflicts are 409/422, and only
//! successes are stored.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{domain_known_by, spawn_app, spawn_app_with, Backend};
use crate::on_both_backends;

on_both_backends!(
    replay_returns_the_first_response_and_charges_once,
    same_key_with_another_body_is_422,
    retry_while_in_progress_is_409,
    failures_are_not_stored,
    keys_are_scoped_to_the_workspace,
    expired_records_are_purged_and_the_key_is_free_again,
    records_of_the_previous_release_replay_the_same_bytes_after_the_upgrade,
);

fn new_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn replay_returns_the_first_response_and_charges_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ws, key) = app.funded(10).await;
    let idem = new_key();
    let first = app.enrich_idem(&key, &idem, json!({"email": "jane@acme.com"})).await;
    assert_eq!(first.status, 200);
    assert!(first.header("idempotent-replayed").is_none());
    // Same request, spelt differently, and the key in upper case: still the same request.
    let again = app.enrich_idem(&key, &idem.to_uppercase(), json!({"email": " Jane@ACME.com "})).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.bytes, first.bytes, "byte for byte");
    again.assert_rate_limit_headers();
    assert_eq!(app.charges(&ws).await, 1);
    assert_eq!(app.assert_books_balance(&ws).await, 9);
}

async fn same_key_with_another_body_is_422(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ws, key) = app.funded(10).await;
    let idem = new_key();
    assert_eq!(app.enrich_idem(&key, &idem, json!({"email": "jane@acme.com"})).await.status, 200);
    let r = app.enrich_idem(&key, &idem, json!({"domain": "acme.com"})).await;
    assert_eq!(r.status, 422);
    assert_eq!(r.error_code(), "idempotency_key_reused");
    let r = app.enrich_idem(&key, &idem, json!({"email": "jane@acme.com", "include": ["company"]})).await;
    assert_eq!(r.status, 422, "include is part of the request");
    assert_eq!(app.assert_books_balance(&ws).await, 9);
}

async fn retry_while_in_progress_is_409(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.sandbox.latency_ms = 1_500).await;
    let (ws, key) = app.funded(10).await;
    let idem = new_key();
    let body = json!({"domain": domain_known_by(true, true)});
    let first = app.enrich_idem(&key, &idem, body.clone());
    let second = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.enrich_idem(&key, &idem, body.clone()).await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.status, 200);
    assert_eq!(second.status, 409);
    assert_eq!(second.error_code(), "idempotency_key_in_use");
    assert!(second.header("retry-after").is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s >= 1)));
    let third = app.enrich_idem(&key, &idem, body).await;
    assert_eq!(third.header("idempotent-replayed"), Some("true"));
    assert_eq!(third.bytes, first.bytes);
    assert_eq!(app.charges(&ws).await, 1);
    assert_eq!(app.assert_books_balance(&ws).await, 9);
}

async fn failures_are_not_stored(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ws, key) = app.funded(10).await;
    let idem = new_key();
    let body = json!({"domain": domain_known_by(false, false)});
    for _ in 0..2 {
        let r = app.enrich_idem(&key, &idem, body.clone()).await;
        assert_eq!((r.status, r.error_code().as_str()), (404, "no_match"), "runs again, no 409 and no replay");
    }
    // After a 402, adding credits and retrying with the same key succeeds.
    let (ws0, key0) = app.funded(0).await;
    let idem = new_key();
    assert_eq!(app.enrich_idem(&key0, &idem, json!({"email": "jane@acme.com"})).await.status, 402);
    leadlex::credits::grant(&app.settler, &ws0, 1).await.unwrap();
    let r = app.enrich_idem(&key0, &idem, json!({"email": "jane@acme.com"})).await;
    assert_eq!(r.status, 200);
    assert!(r.header("idempotent-replayed").is_none());
    assert_eq!(app.assert_books_balance(&ws0).await, 0);
    assert_eq!(app.assert_books_balance(&ws).await, 10);
}

async fn keys_are_scoped_to_the_workspace(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ws1, key1) = app.funded(10).await;
    let (ws2, key2) = app.funded(10).await;
    let idem = new_key();
    let a = app.enrich_idem(&key1, &idem, json!({"email": "jane@acme.com"})).await;
    let b = app.enrich_idem(&key2, &idem, json!({"domain": "acme.com"})).await;
    assert_eq!((a.status, b.status), (200, 200));
    assert!(b.header("idempotent-replayed").is_none());
    assert_eq!(app.assert_books_balance(&ws1).await, 9);
    assert_eq!(app.assert_books_balance(&ws2).await, 9);
}

async fn expired_records_are_purged_and_the_key_is_free_again(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.idempotency.ttl_secs = 1).await;
    let (ws, key) = app.funded(10).await;
    let idem = new_key();
    assert_eq!(app.enrich_idem(&key, &idem, json!({"email": "jane@acme.com"})).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    // Past its 24 h (here: 1 s), the key no longer binds: another request runs and is charged.
    let r = app.enrich_idem(&key, &idem, json!({"domain": "acme.com"})).await;
    assert_eq!(r.status, 200);
    assert!(r.header("idempotent-replayed").is_none());
    assert_eq!(app.charges(&ws).await, 2);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let purged = leadlex::idempotency::purge_expired(&app.db, leadlex::now_ms()).await.unwrap();
    assert_eq!(purged, 1);
    use sea_orm::{EntityTrait, PaginatorTrait};
    assert_eq!(entity::idempotency_record::Entity::find().count(&app.db).await.unwrap(), 0);
}

/// A record completed by the release before `m20261202_000003` (the whole 200 body) still
/// replays byte for byte after the upgrade, free; `down` restores the body it had.
async fn records_of_the_previous_release_replay_the_same_bytes_after_the_upgrade(backend: Backend) {
    use leadlex::lookup::input::EnrichQuery;
    use migration::MigratorTrait;
    use sea_orm::{ConnectionTrait, Statement};

    let (url, dir, db) = crate::helpers::previous_release_database(backend, 2).await;
    let ws = "ws_old".to_string();
    crate::helpers::previous_release_workspace(&db, &ws, 1_000, &[(1_000, "grant", leadlex::now_ms())]).await;
    // What the previous release stored: the rendered 200 body (the README's example).
    let old_body = r#"{"data":{"person":{"full_name":"Jane Doe","first_name":"Jane","last_name":"Doe","job_title":"General Counsel","seniority":"executive","location":"New York, NY, US","linkedin_url":"https://linkedin.com/in/janedoe"},"company":{"name":"Acme Corp","domain":"acme.com","industry":"Legal Services","size":"201-500","founded_year":1998,"linkedin_url":"https://linkedin.com/company/acme","hq_location":"New York, NY, US"},"source":"vendor_a","confidence":0.9,"credits_remaining":999}}"#;
    let idem = new_key();
    let fingerprint = EnrichQuery::parse(Some("jane@acme.com"), None, None).unwrap().fingerprint("POST", "/v1/email/enrich");
    let now = leadlex::now_ms();
    let insert = "INSERT INTO idempotency_records (workspace_id, idempotency_key, fingerprint, state, owner_token, locked_until, \
                  response_status, response_body, created_at, expires_at) VALUES ($1, $2, $3, 'completed', 'old', $4, 200, $5, $4, $6)";
    let insert = if backend == Backend::Sqlite { insert.replace('$', "?") } else { insert.to_string() };
    let values: Vec<sea_orm::Value> = vec![
        ws.clone().into(),
        idem.clone().into(),
        fingerprint.into(),
        now.into(),
        old_body.as_bytes().to_vec().into(),
        (now + 3_600_000).into(),
    ];
    db.execute(Statement::from_sql_and_values(db.get_database_backend(), insert, values)).await.unwrap();

    let app = spawn_app_with(backend, |s| s.database.url = url.clone()).await;
    let key = app.key(&ws, &[leadlex::auth::Permission::WriteEnrich], None).await.key;
    let replay = app.enrich_idem(&key, &idem, json!({"email": "jane@acme.com"})).await;
    assert_eq!(replay.status, 200, "{}", String::from_utf8_lossy(&replay.bytes));
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(String::from_utf8_lossy(&replay.bytes), old_body, "the same bytes as the previous release sent");
    assert_eq!(app.balance(&ws).await, 1_000, "a replay is free");
    drop(app);

    // Back to before m20261202_000003 (and every migration after it).
    let after_the_second = migration::Migrator::migrations().len() as u32 - 2;
    migration::Migrator::down(&db, Some(after_the_second)).await.unwrap();
    let row = db
        .query_one(Statement::from_string(db.get_database_backend(), "SELECT response_body FROM idempotency_records"))
        .await
        .unwrap()
        .unwrap();
    let body: Vec<u8> = row.try_get("", "response_body").unwrap();
    assert_eq!(String::from_utf8_lossy(&body), old_body, "down restores the previous release's body");
    db.close().await.ok();
    if backend == Backend::Postgres {
        crate::helpers::drop_database_blocking(url.rsplit('/').next().unwrap().to_string());
    }
    drop(dir);
}
