//! `POST /v1/email/enrich/bulk`, as a customer with a list sees it: each item gets the
//! outcome it would have had alone, in its slot; credits are charged once per success,
//! in item order, in one transaction; an `Idempotency-Key` covers the whole call; the
//! items count against the rate limits.

use leadlex::{auth::Permission, ratelimit::Plan};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, Backend, Resp, TestApp};

fn url(app: &TestApp) -> String {
    format!("{}/v1/email/enrich/bulk", app.base)
}

async fn bulk(app: &TestApp, key: &str, body: Value) -> Resp {
    app.request(app.client.post(url(app)).bearer_auth(key).json(&body)).await
}

fn statuses(r: &Resp) -> Vec<u64> {
    r.json()["data"]["results"].as_array().unwrap().iter().map(|i| i["status"].as_u64().unwrap()).collect()
}

async fn each_item_gets_the_outcome_it_would_have_alone(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ws, key) = app.funded(10).await;
    let r = bulk(
        &app,
        &key,
        json!({"items": [
            {"email": "jane@acme.com", "reference": "crm-1"},
            {"domain": "acme.com", "include": ["company"]},
            {"email": "nobody@nowhere.invalid", "reference": "crm-3"},
            {"email": "not-an-email", "reference": "crm-4"},
            {"email": "JANE@acme.com", "reference": "dup"},
            {"reference": "empty"},
            {"email": "jane@acme.com", "include": ["persons"]},
        ]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));
    r.assert_rate_limit_headers();
    let body = r.json();
    let data = &body["data"];
    assert_eq!(statuses(&r), [200, 200, 404, 400, 200, 400, 400]);
    let results = data["results"].as_array().unwrap();
    let indexes: Vec<u64> = results.iter().map(|i| i["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, (0..7).collect::<Vec<u64>>());
    assert_eq!(results[0]["reference"], "crm-1");
    assert_eq!(results[1]["reference"], Value::Null);
    assert_eq!(results[0]["data"]["person"]["full_name"], "Jane Doe");
    assert_eq!(results[0]["data"]["source"], "vendor_a");
    assert!(results[1]["data"]["person"].is_null() && results[1]["data"]["company"]["name"].is_string());
    assert_eq!(results[4]["data"]["source"], "cached", "the same input again says cached");
    assert_eq!(results[4]["data"]["person"], results[0]["data"]["person"]);
    let balances: Vec<i64> = [0, 1, 4].iter().map(|&i| results[i]["data"]["credits_remaining"].as_i64().unwrap()).collect();
    assert_eq!(balances, [9, 8, 7], "each item's balance after its own debit");
    assert_eq!(results[2]["error"]["code"], "no_match");
    assert_eq!(results[3]["error"]["code"], "validation_error");
    assert_eq!(results[3]["error"]["details"][0]["field"], "email");
    assert_eq!(results[3]["error"]["request_id"], r.header("x-request-id").unwrap());
    assert!(results[3]["data"].is_null());
    assert_eq!(results[5]["error"]["details"][0]["field"], "email", "neither email nor domain");
    assert_eq!(results[6]["error"]["details"][0]["field"], "include");
    assert_eq!(data["summary"], json!({"succeeded": 3, "no_match": 1, "failed": 3, "credits_charged": 3}));
    assert_eq!(data["credits_remaining"], 7);
    assert_eq!(app.assert_books_balance(&ws).await, 7);
    assert_eq!(app.charges(&ws).await, 3);

    // The answers were cached for single calls too.
    let single = app.enrich(&key, json!({"domain": "acme.com"})).await;
    assert_eq!(single.json()["data"]["source"], "cached");
}

async fn the_balance_runs_out_in_item_order(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ws, key) = app.funded(2).await;
    let items: Vec<Value> = ["jane@acme.com", "acme.com", "jane@acme.com", "acme.com"]
        .iter()
        .enumerate()
        .map(|(n, s)| if n % 2 == 0 { json!({"email": s}) } else { json!({"domain": s}) })
        .collect();
    let r = bulk(&app, &key, json!({"items": items})).await;
    assert_eq!(statuses(&r), [200, 200, 402, 402]);
    let body = r.json();
    assert_eq!(body["data"]["results"][2]["error"]["code"], "insufficient_credits");
    assert_eq!(body["data"]["summary"]["credits_charged"], 2);
    assert_eq!(body["data"]["credits_remaining"], 0);
    assert_eq!(app.assert_books_balance(&ws).await, 0);
    // Empty now: every item is 402, and no vendor is asked (an input nobody has cached).
    let asked = app.vendor_calls().await;
    assert!(asked > 0, "the earlier items were asked of the vendors");
    let r = bulk(&app, &key, json!({"items": [{"email": "someone@new-company.com"}]})).await;
    assert_eq!(statuses(&r), [402]);
    assert_eq!(app.vendor_calls().await, asked, "no vendor asked for what the balance cannot pay");
    assert_eq!(app.charges(&ws).await, 2);
}

async fn an_idempotency_key_covers_the_whole_call(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ws, key) = app.funded(5).await;
    let idem = uuid::Uuid::new_v4().to_string();
    let body = json!({"items": [{"email": "jane@acme.com"}, {"domain": "acme.com"}, {"email": "bad"}]});
    let send = |body: Value| app.request(app.client.post(url(&app)).bearer_auth(&key).header("Idempotency-Key", &idem).json(&body));
    let first = send(body.clone()).await;
    assert_eq!(first.status, 200);
    let again = send(body.clone()).await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.bytes, first.bytes, "the same answer");
    assert_eq!(app.charges(&ws).await, 2, "charged once");
    let other = send(json!({"items": [{"email": "jane@acme.com"}]})).await;
    assert_eq!((other.status, other.error_code().as_str()), (422, "idempotency_key_reused"));

    // A call still running with the key: 409.
    let running = uuid::Uuid::new_v4().to_string();
    let fingerprint = leadlex::bulk::fingerprint(
        &[leadlex::bulk::ItemInput { email: Some("jane@acme.com".into()), ..Default::default() }],
        Default::default(),
    );
    app.hold_claim(&ws, &running, &fingerprint).await;
    let busy = app
        .request(
            app.client
                .post(url(&app))
                .bearer_auth(&key)
                .header("Idempotency-Key", &running)
                .json(&json!({"items": [{"email": "jane@acme.com"}]})),
        )
        .await;
    assert_eq!((busy.status, busy.error_code().as_str()), (409, "idempotency_key_in_use"));
    assert!(busy.header("retry-after").is_some());
    assert_eq!(app.assert_books_balance(&ws).await, 3);
}

async fn a_call_counts_its_items_against_the_limits(backend: Backend) {
    let app = spawn_app(backend).await;
    let ws = app.workspace(Plan::Starter, 100).await; // 10 a minute, 100 a day
    let key = app.key(&ws, &[Permission::WriteEnrich], None).await.key;
    let five: Vec<Value> = (0..5).map(|_| json!({"domain": "acme.com"})).collect();
    let r = bulk(&app, &key, json!({"items": five})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("95"), "five items counted");
    let seven: Vec<Value> = (0..7).map(|_| json!({"domain": "acme.com"})).collect();
    let limited = bulk(&app, &key, json!({"items": seven})).await;
    assert_eq!((limited.status, limited.error_code().as_str()), (429, "rate_limited"));
    assert!(limited.header("retry-after").is_some());
    assert_eq!(limited.json()["error"]["details"], json!([{"field": "items", "message": "5 items fit now"}]));
    assert_eq!(app.charges(&ws).await, 5, "nothing done for the refused call");
    // A refused call counts nothing: the same answer again.
    let again = bulk(&app, &key, json!({"items": seven})).await;
    assert_eq!(again.json()["error"]["details"], json!([{"field": "items", "message": "5 items fit now"}]));
    assert_eq!(again.header("x-ratelimit-remaining"), Some("95"));
    let four: Vec<Value> = (0..4).map(|_| json!({"domain": "acme.com"})).collect();
    assert_eq!(bulk(&app, &key, json!({"items": four})).await.status, 200);
}

async fn a_malformed_call_fails_as_a_whole(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.server.max_bulk_body_bytes = 32 * 1024).await;
    let (ws, key) = app.funded(5).await;
    let many: Vec<Value> = (0..101).map(|_| json!({"domain": "acme.com"})).collect();
    for body in [json!({"items": many}), json!({"items": []}), json!({}), json!({"items": [{"email": 42}]})] {
        let r = bulk(&app, &key, body).await;
        assert_eq!((r.status, r.error_code().as_str()), (400, "validation_error"));
    }
    let r = bulk(&app, &key, json!({"items": [{"domain": "acme.com"}, {"email": null}]})).await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "validation_error"), "null is not a string");
    assert_eq!(r.json()["error"]["details"][0]["field"], "items[1].email");
    let r = app.request(app.client.post(url(&app)).bearer_auth(&key).header("content-type", "text/plain").body("items")).await;
    assert_eq!((r.status, r.error_code().as_str()), (415, "unsupported_media_type"));
    let huge: Vec<Value> =
        (0..100).map(|n| json!({"email": format!("{}{n}@acme.com", "a".repeat(200)), "reference": "r".repeat(200)})).collect();
    let r = bulk(&app, &key, json!({"items": huge})).await;
    assert_eq!((r.status, r.error_code().as_str()), (413, "payload_too_large"), "{} bytes", r.bytes.len());
    let r = app.request(app.client.post(url(&app)).json(&json!({"items": [{"domain": "acme.com"}]}))).await;
    assert_eq!((r.status, r.error_code().as_str()), (401, "invalid_key"));
    let reader = app.key(&ws, &[Permission::ReadUsage], None).await.key;
    let r = bulk(&app, &reader, json!({"items": [{"domain": "acme.com"}]})).await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "insufficient_permissions"));
    assert_eq!(app.assert_books_balance(&ws).await, 5);

    use sea_orm::ConnectionTrait;
    app.db.execute_unprepared("DROP TABLE enrichment_cache").await.unwrap();
    let r = bulk(&app, &key, json!({"items": [{"domain": "acme.com"}]})).await;
    assert_eq!((r.status, r.error_code().as_str()), (500, "internal_error"));
    assert_eq!(app.assert_books_balance(&ws).await, 5);
}

async fn a_test_key_calls_bulk_for_free(backend: Backend) {
    let app = spawn_app(backend).await;
    let ws = app.workspace(Plan::Pro, 3).await;
    let admin = app.key(&ws, &Permission::ALL, None).await.key;
    let test = app.test_key(&admin, &["write:enrich"]).await;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let r = bulk(
        &app,
        &test,
        json!({"items": [
            {"email": format!("vendor_b+{tag}@leadlex.test")},
            {"email": format!("insufficient_credits+{tag}@leadlex.test")},
            {"email": format!("no_match+{tag}@leadlex.test")},
        ]}),
    )
    .await;
    assert_eq!(statuses(&r), [200, 402, 404]);
    let body = r.json();
    assert_eq!(body["data"]["results"][0]["data"]["source"], "vendor_b");
    assert_eq!((body["data"]["summary"]["credits_charged"].as_i64(), body["data"]["credits_remaining"].as_i64()), (Some(0), Some(3)));
    assert_eq!(app.assert_books_balance(&ws).await, 3);
    assert_eq!(app.charges(&ws).await, 0);
    // Its vendor answers went to the workspace's test cache: a single test call says cached.
    let again = app.enrich(&test, json!({"email": format!("vendor_b+{tag}@leadlex.test")})).await;
    assert_eq!(again.json()["data"]["source"], "cached");
}

/// The spec's example request, sent to a fresh server, gets the spec's example answer
/// (balances and request ids aside).
async fn the_documented_example_is_what_a_fresh_server_answers(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, key) = app.funded(10).await;
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/leadlex.json")).unwrap(),
    )
    .unwrap();
    let op = &spec["paths"]["/v1/email/enrich/bulk"]["post"];
    let media = "application/json; charset=utf-8";
    let request = &op["requestBody"]["content"][media]["examples"]["crm_export"]["value"];
    let r = bulk(&app, &key, request.clone()).await;
    assert_eq!(r.status, 200);
    let mut body = r.json();
    let example = &op["responses"]["200"]["content"][media]["examples"]["crm_export"]["value"];
    // What differs from call to call: the balances, when the data was fetched and the
    // call's request id.
    let results = body["data"]["results"].as_array_mut().unwrap();
    for (n, item) in results.iter_mut().enumerate() {
        let documented = &example["data"]["results"][n];
        if item["data"].is_object() {
            item["data"]["credits_remaining"] = documented["data"]["credits_remaining"].clone();
            assert!(item["data"]["fetched_at"].is_string(), "{item}");
            item["data"]["fetched_at"] = documented["data"]["fetched_at"].clone();
        }
        if item["error"].is_object() {
            item["error"]["request_id"] = documented["error"]["request_id"].clone();
        }
    }
    body["data"]["credits_remaining"] = example["data"]["credits_remaining"].clone();
    assert_eq!(&body, example);
}

/// One parser, one set of limits: an input the single call refuses for its length fails
/// in its bulk slot (`400`, naming the limit), uncharged, and never reaches a vendor;
/// a JSON job's item fails the same way.
async fn an_item_the_single_call_refuses_fails_in_its_slot(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ws, key) = app.funded(10).await;
    let long = format!("{}@acme.com", "a".repeat(250));
    let huge = format!("{}@acme.com", "b".repeat(60_000));
    let single = app.enrich(&key, json!({"email": long})).await;
    assert_eq!((single.status, single.error_code().as_str()), (400, "validation_error"));
    let calls = app.vendor_calls().await;
    let r = bulk(&app, &key, json!({"items": [{"email": long}, {"email": huge}, {"domain": format!("{}.com", "c".repeat(2_100))}]})).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));
    assert_eq!(statuses(&r), [400, 400, 400]);
    let results = r.json()["data"]["results"].clone();
    for (n, field, limit) in [(0, "email", "254"), (1, "email", "254"), (2, "domain", "2048")] {
        assert_eq!(results[n]["error"]["details"][0]["field"], field, "{results}");
        assert!(results[n]["error"]["details"][0]["message"].as_str().unwrap().contains(limit), "{results}");
    }
    let job = app
        .request(app.client.post(format!("{}/v1/enrich/jobs", app.base)).bearer_auth(&key).json(&json!({"items": [{"email": huge}]})))
        .await;
    assert_eq!(job.status, 202);
    let id = job.json()["data"]["id"].as_str().unwrap().to_string();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let j = app.request(app.client.get(format!("{}/v1/enrich/jobs/{id}", app.base)).bearer_auth(&key)).await.json();
        if j["data"]["status"] == "completed" {
            assert_eq!((j["data"]["failed"].as_i64(), j["data"]["credits_charged"].as_i64()), (Some(1), Some(0)), "{j}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{j}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A reference past its limit fails its item and is not echoed; so does an `include`
    // longer than the three sections.
    let reference = "r".repeat(300_000);
    let include: Vec<&str> = std::iter::repeat_n("person", 50_000).collect();
    let long_reference = bulk(&app, &key, json!({"items": [{"email": "jane@acme.com", "reference": reference}]})).await;
    assert_eq!(statuses(&long_reference), [400]);
    let result = long_reference.json()["data"]["results"][0].clone();
    assert_eq!((result["reference"].clone(), result["error"]["details"][0]["field"].clone()), (Value::Null, json!("reference")));
    let long_include = bulk(&app, &key, json!({"items": [{"email": "jane@acme.com", "include": include}]})).await;
    assert_eq!(statuses(&long_include), [400]);
    assert_eq!(long_include.json()["data"]["results"][0]["error"]["details"][0]["field"], "include");
    // A NUL in a CSV cell fails its item (it is no email), never the server.
    let csv = app
        .request(
            app.client
                .post(format!("{}/v1/enrich/jobs", app.base))
                .bearer_auth(&key)
                .header("content-type", "text/csv")
                .body("email,reference\njane\u{0}@acme.com,r\u{0}1\n"),
        )
        .await;
    assert_eq!(csv.status, 202, "{}", String::from_utf8_lossy(&csv.bytes));
    // And a path id with a NUL names nothing.
    let nul = app.request(app.client.get(format!("{}/v1/enrich/jobs/job_%00x", app.base)).bearer_auth(&key)).await;
    assert_eq!((nul.status, nul.error_code().as_str()), (404, "not_found"));
    assert_eq!(app.vendor_calls().await, calls, "no vendor was asked");
    assert_eq!(app.charges(&ws).await, 0);
}

crate::on_both_backends!(
    an_item_the_single_call_refuses_fails_in_its_slot,
    the_documented_example_is_what_a_fresh_server_answers,
    each_item_gets_the_outcome_it_would_have_alone,
    the_balance_runs_out_in_item_order,
    an_idempotency_key_covers_the_whole_call,
    a_call_counts_its_items_against_the_limits,
    a_malformed_call_fails_as_a_whole,
    a_test_key_calls_bulk_for_free,
);
