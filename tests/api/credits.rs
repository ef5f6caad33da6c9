//! Money under concurrency: the balance never goes below zero, every 200 is exactly one
//! debit, and the ledger always sums to the balance.

use futures::future::join_all;
use serde_json::json;

use crate::helpers::{sandbox_input, spawn_app, Backend};
use crate::on_both_backends;

on_both_backends!(concurrent_requests_never_overspend);

async fn concurrent_requests_never_overspend(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ws, key) = app.funded(5).await;
    // Distinct inputs that some vendor knows, so every request would succeed if paid for.
    let inputs: Vec<String> = (0..30)
        .map(|n| sandbox_input(&format!("user{n}x{{i}}@acme.com"), |a, b| a || b))
        .collect();
    let results = join_all(inputs.iter().map(|email| app.enrich(&key, json!({"email": email})))).await;
    let ok = results.iter().filter(|r| r.status == 200).count();
    let broke = results.iter().filter(|r| r.status == 402).count();
    assert_eq!((ok, broke), (5, 25), "statuses: {:?}", results.iter().map(|r| r.status).collect::<Vec<_>>());
    for r in results.iter().filter(|r| r.status == 402) {
        assert_eq!(r.error_code(), "insufficient_credits");
    }
    let mut remaining: Vec<i64> = results
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.json()["data"]["credits_remaining"].as_i64().unwrap())
        .collect();
    remaining.sort();
    assert_eq!(remaining, [0, 1, 2, 3, 4], "each success saw its own debit");
    assert_eq!(app.assert_books_balance(&ws).await, 0);
    assert_eq!(app.charges(&ws).await, 5);
}
