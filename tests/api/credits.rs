//! Money under concurrency: the balance never goes below zero, every 200 is exactly one
//! debit, and the ledger always sums to the balance.

use futures::future::join_all;
use serde_json::json;

use crate::helpers::{sandbox_input, spawn_app, spawn_app_with, Backend};
use crate::on_both_backends;

on_both_backends!(concurrent_requests_never_overspend, group_commit_batches_mixed_calls_exactly, a_debit_waits_for_a_lock_held_elsewhere,);

async fn concurrent_requests_never_overspend(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ws, key) = app.funded(5).await;
    // Distinct inputs that some vendor knows, so every request would succeed if paid for.
    let inputs: Vec<String> = (0..30).map(|n| sandbox_input(&format!("user{n}x{{i}}@acme.com"), |a, b| a || b)).collect();
    let results = join_all(inputs.iter().map(|email| app.enrich(&key, json!({"email": email})))).await;
    let ok = results.iter().filter(|r| r.status == 200).count();
    let broke = results.iter().filter(|r| r.status == 402).count();
    assert_eq!((ok, broke), (5, 25), "statuses: {:?}", results.iter().map(|r| r.status).collect::<Vec<_>>());
    for r in results.iter().filter(|r| r.status == 402) {
        assert_eq!(r.error_code(), "insufficient_credits");
    }
    let mut remaining: Vec<i64> =
        results.iter().filter(|r| r.status == 200).map(|r| r.json()["data"]["credits_remaining"].as_i64().unwrap()).collect();
    remaining.sort();
    assert_eq!(remaining, [0, 1, 2, 3, 4], "each success saw its own debit");
    assert_eq!(app.assert_books_balance(&ws).await, 0);
    assert_eq!(app.charges(&ws).await, 5);
}

/// A group commit window gathers concurrent calls into large batches: cached hits (one
/// statement per batch), misses whose cache rows ride the next batch, and calls with an
/// Idempotency-Key (a transaction) settle together, on fewer credits than calls.
async fn group_commit_batches_mixed_calls_exactly(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.database.group_commit_window_us = 5_000).await;
    let (ws, key) = app.funded(40).await;
    assert_eq!(app.enrich(&key, json!({"email": "jane@acme.com"})).await.status, 200);
    let misses: Vec<String> = (0..20).map(|n| sandbox_input(&format!("batch{n}x{{i}}@acme.com"), |a, _| a)).collect();
    let idem: Vec<String> = (0..20).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let hits = (0..20).map(|_| app.enrich(&key, json!({"email": "jane@acme.com"})));
    let fresh = misses.iter().map(|email| app.enrich(&key, json!({"email": email})));
    let keyed = idem.iter().map(|k| app.enrich_idem(&key, k, json!({"domain": "acme.com"})));
    let (hits, fresh, keyed) = futures::join!(join_all(hits), join_all(fresh), join_all(keyed));
    let all: Vec<_> = hits.iter().chain(&fresh).chain(&keyed).collect();
    let ok: Vec<_> = all.iter().filter(|r| r.status == 200).collect();
    assert_eq!(ok.len(), 39, "statuses: {:?}", all.iter().map(|r| r.status).collect::<Vec<_>>());
    assert!(all.iter().all(|r| r.status == 200 || r.error_code() == "insufficient_credits"));
    let mut remaining: Vec<i64> = ok.iter().map(|r| r.json()["data"]["credits_remaining"].as_i64().unwrap()).collect();
    remaining.sort();
    assert_eq!(remaining, (0..39).collect::<Vec<i64>>(), "each success saw its own debit");
    assert_eq!(app.assert_books_balance(&ws).await, 0);
    assert_eq!(app.charges(&ws).await, 40);
    for (k, first) in idem.iter().zip(&keyed).filter(|(_, r)| r.status == 200) {
        let again = app.enrich_idem(&key, k, json!({"domain": "acme.com"})).await;
        assert_eq!((again.status, &again.bytes), (200, &first.bytes), "a replay returns the stored bytes");
    }
    assert_eq!(app.charges(&ws).await, 40, "replays are free");
}

/// Another writer (a replica, an admin top-up) holds the lock the debit needs: the call
/// waits for it (on SQLite the request hands its settlement to the writer's thread rather
/// than wait on its own), answers only once the lock is gone, and is charged once.
async fn a_debit_waits_for_a_lock_held_elsewhere(backend: Backend) {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let app = spawn_app(backend).await;
    let (ws, key) = app.funded(3).await;
    assert_eq!(app.enrich(&key, json!({"email": "jane@acme.com"})).await.status, 200, "cached from now on");
    let txn = app.db.begin().await.unwrap();
    txn.execute_unprepared(&format!("UPDATE workspaces SET credit_balance = credit_balance WHERE id = '{ws}'")).await.unwrap();
    let call = {
        let (base, client, key) = (app.base.clone(), app.client.clone(), key.clone());
        tokio::spawn(async move {
            let req = client.post(format!("{base}/v1/email/enrich")).bearer_auth(key).json(&json!({"email": "jane@acme.com"}));
            crate::helpers::send(&client, req).await.unwrap()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(!call.is_finished(), "no answer while the debit cannot commit");
    txn.commit().await.unwrap();
    let r = call.await.unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));
    assert_eq!(r.json()["data"]["credits_remaining"], 1);
    assert_eq!(app.assert_books_balance(&ws).await, 1);
    assert_eq!(app.charges(&ws).await, 2);
}
