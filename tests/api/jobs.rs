//! Enrichment jobs as a customer with a list sees them: submitted (202, `Location`),
//! worked through in the background by the server's worker, followed, listed, cancelled,
//! their results read a page at a time; each item charged once if it succeeded, never
//! otherwise; items counted against the daily quota, not the per-minute limit.

use std::time::Duration;

use leadlex::{auth::Permission, ratelimit::Plan};
use serde_json::{json, Value};

use crate::helpers::{sandbox_input, spawn_app, spawn_app_with, Backend, Resp, TestApp};

fn jobs_url(app: &TestApp) -> String {
    format!("{}/v1/enrich/jobs", app.base)
}

async fn submit(app: &TestApp, key: &str, body: Value) -> Resp {
    app.request(app.client.post(jobs_url(app)).bearer_auth(key).json(&body)).await
}

async fn get(app: &TestApp, key: &str, path: &str) -> Resp {
    app.request(app.client.get(format!("{}{path}", app.base)).bearer_auth(key)).await
}

/// Polls the job until `done` holds (or fails after 30 s).
async fn wait_for(app: &TestApp, key: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = get(app, key, &format!("/v1/enrich/jobs/{id}")).await;
        assert_eq!(r.status, 200);
        let job = r.json()["data"].clone();
        if done(&job) {
            return job;
        }
        assert!(tokio::time::Instant::now() < deadline, "the job did not get there: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every result of a job, page by page.
async fn all_results(app: &TestApp, key: &str, id: &str, limit: u32) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/enrich/jobs/{id}/results?limit={limit}&starting_after={c}"),
            None => format!("/v1/enrich/jobs/{id}/results?limit={limit}"),
        };
        let r = get(app, key, &path).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));
        let body = r.json();
        out.extend(body["data"]["results"].as_array().unwrap().iter().cloned());
        match body["meta"]["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

fn known_emails(count: usize) -> Vec<String> {
    (0..count).map(|n| sandbox_input(&format!("worker{n}.{{i}}@acme.com"), |a, _| a)).collect()
}

async fn a_job_is_worked_through_and_its_results_paged(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ws, key) = app.funded(100).await;
    let mut items: Vec<Value> =
        known_emails(20).into_iter().enumerate().map(|(n, e)| json!({"email": e, "reference": format!("row-{n}")})).collect();
    items.push(json!({"email": "nobody@nowhere.invalid", "reference": "row-20"}));
    items.push(json!({"email": "not-an-email", "reference": "row-21"}));
    items.push(json!({"domain": "acme.com", "include": ["company"], "reference": "row-22"}));
    let r = submit(&app, &key, json!({"items": items})).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.bytes));
    let job = r.json()["data"].clone();
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!((job["status"].as_str(), job["total"].as_i64()), (Some("queued"), Some(23)));
    assert_eq!(r.header("location"), Some(format!("/v1/enrich/jobs/{id}").as_str()));

    let done = wait_for(&app, &key, &id, |j| j["status"] == "completed").await;
    assert_eq!(
        (done["done"].as_i64(), done["succeeded"].as_i64(), done["no_match"].as_i64(), done["failed"].as_i64()),
        (Some(23), Some(21), Some(1), Some(1))
    );
    assert_eq!(done["credits_charged"], 21);
    assert!(done["started_at"].is_string() && done["finished_at"].is_string());
    assert_eq!(app.assert_books_balance(&ws).await, 79);
    let ledger = leadlex::credits::ledger(&app.db, &ws).await.unwrap();
    assert_eq!(ledger.iter().filter(|l| l.request_id.as_deref() == Some(id.as_str())).count(), 21, "each charge names the job");

    let results = all_results(&app, &key, &id, 7).await;
    let indexes: Vec<u64> = results.iter().map(|r| r["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, (0..23).collect::<Vec<u64>>(), "every item once, in order, across pages");
    assert_eq!(results[3]["reference"], "row-3");
    assert_eq!((results[3]["status"].as_u64(), results[3]["data"]["source"].as_str()), (Some(200), Some("vendor_a")));
    assert_eq!(results[20]["error"]["code"], "no_match");
    assert_eq!((results[21]["status"].as_u64(), results[21]["error"]["request_id"].as_str()), (Some(400), Some(id.as_str())));
    assert!(results[22]["data"]["person"].is_null() && results[22]["data"]["company"].is_object());

    let listed = get(&app, &key, "/v1/enrich/jobs").await;
    assert_eq!(listed.json()["data"]["jobs"][0]["id"], id.as_str());

    // Another workspace's key sees nothing of it.
    let (_, other) = app.funded(5).await;
    for path in [format!("/v1/enrich/jobs/{id}"), format!("/v1/enrich/jobs/{id}/results")] {
        let r = get(&app, &other, &path).await;
        assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
    }
    let r = app.request(app.client.post(format!("{}/{id}/cancel", jobs_url(&app))).bearer_auth(&other)).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
    assert_eq!(get(&app, &other, "/v1/enrich/jobs").await.json()["data"]["jobs"], json!([]));
}

async fn the_balance_runs_out_in_item_order(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ws, key) = app.funded(3).await;
    let items: Vec<Value> = known_emails(8).into_iter().map(|e| json!({"email": e})).collect();
    let id = submit(&app, &key, json!({"items": items})).await.json()["data"]["id"].as_str().unwrap().to_string();
    let done = wait_for(&app, &key, &id, |j| j["status"] == "completed").await;
    assert_eq!((done["succeeded"].as_i64(), done["failed"].as_i64(), done["credits_charged"].as_i64()), (Some(3), Some(5), Some(3)));
    let statuses: Vec<u64> = all_results(&app, &key, &id, 100).await.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [200, 200, 200, 402, 402, 402, 402, 402]);
    assert_eq!(app.assert_books_balance(&ws).await, 0);
}

async fn cancelling_stops_what_has_not_started(backend: Backend) {
    // Slow vendors and a pro plan (5 items at a time): the job is still running when it
    // is cancelled.
    let app = spawn_app_with(backend, |s| s.sandbox.latency_ms = 150).await;
    let ws = app.workspace(Plan::Pro, 100).await;
    let key = app.key(&ws, &[Permission::WriteEnrich], None).await.key;
    let items: Vec<Value> = known_emails(30).into_iter().map(|e| json!({"email": e})).collect();
    let id = submit(&app, &key, json!({"items": items})).await.json()["data"]["id"].as_str().unwrap().to_string();
    wait_for(&app, &key, &id, |j| j["done"].as_i64() >= Some(2)).await;
    let r = app.request(app.client.post(format!("{}/{id}/cancel", jobs_url(&app))).bearer_auth(&key)).await;
    assert_eq!((r.status, r.json()["data"]["status"].as_str()), (200, Some("cancelled")));
    assert!(r.json()["data"]["finished_at"].is_string());
    // The chunk in flight finishes; nothing after it starts.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let settled = get(&app, &key, &format!("/v1/enrich/jobs/{id}")).await.json()["data"].clone();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = get(&app, &key, &format!("/v1/enrich/jobs/{id}")).await.json()["data"].clone();
    assert_eq!(settled, later, "nothing moves after the chunk in flight");
    let done = later["done"].as_i64().unwrap();
    assert!(done < 30, "the rest never started: {later}");
    assert_eq!(later["credits_charged"].as_i64(), Some(done));
    assert_eq!(app.charges(&ws).await as i64, done, "only what was done was charged");
    assert_eq!(all_results(&app, &key, &id, 100).await.len() as i64, done);
    // Cancelling again changes nothing.
    let again = app.request(app.client.post(format!("{}/{id}/cancel", jobs_url(&app))).bearer_auth(&key)).await;
    assert_eq!(again.json()["data"], later);
}

async fn a_submission_is_safe_to_retry(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_ws, key) = app.funded(10).await;
    let idem = uuid::Uuid::new_v4().to_string();
    let body = json!({"items": [{"email": "jane@acme.com"}]});
    let send = |body: Value| app.request(app.client.post(jobs_url(&app)).bearer_auth(&key).header("Idempotency-Key", &idem).json(&body));
    let first = send(body.clone()).await;
    assert_eq!(first.status, 202);
    let again = send(body.clone()).await;
    assert_eq!((again.status, again.header("idempotent-replayed")), (202, Some("true")));
    assert_eq!(again.json()["data"]["id"], first.json()["data"]["id"]);
    let listed = get(&app, &key, "/v1/enrich/jobs").await;
    assert_eq!(listed.json()["data"]["jobs"].as_array().unwrap().len(), 1, "one job");
    let other = send(json!({"items": [{"email": "other@acme.com"}]})).await;
    assert_eq!((other.status, other.error_code().as_str()), (422, "idempotency_key_reused"));
    for body in [json!({"items": []}), json!({}), json!({"items": [{"email": 7}]}), json!({"items": [{"reference": null}]})] {
        let r = submit(&app, &key, body).await;
        assert_eq!((r.status, r.error_code().as_str()), (400, "validation_error"));
    }
    let r = get(&app, &key, "/v1/enrich/jobs/job_00000000000000000000000000000000").await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
}

async fn items_count_against_the_daily_quota_not_the_minute(backend: Backend) {
    let app = spawn_app(backend).await;
    let ws = app.workspace(Plan::Starter, 100).await; // 10 a minute, 100 a day
    let key = app.key(&ws, &[Permission::WriteEnrich], None).await.key;
    let items: Vec<Value> = (0..30).map(|_| json!({"domain": "acme.com"})).collect();
    let id = submit(&app, &key, json!({"items": items})).await.json()["data"]["id"].as_str().unwrap().to_string();
    // Followed in the database, not over the API: polls would count against the minute.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while leadlex::jobs::get(&app.db, &leadlex::scope::Scope::live(&ws), &id).await.unwrap().status != "completed" {
        assert!(tokio::time::Instant::now() < deadline, "the job completes");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Thirty items in well under a minute, and the minute is still whole: the nine calls
    // left after the submission pass, the tenth is refused.
    for n in 0..9 {
        let r = app.enrich(&key, json!({"domain": "acme.com"})).await;
        assert_eq!(r.status, 200, "call {n}: {}", String::from_utf8_lossy(&r.bytes));
        let remaining: u64 = r.header("x-ratelimit-remaining").unwrap().parse().unwrap();
        assert_eq!(remaining, 100 - 1 - 30 - (n + 1), "the items counted against the day");
    }
    assert_eq!(app.enrich(&key, json!({"domain": "acme.com"})).await.status, 429);
}

/// A job of 10 items submitted by a key of 7 a day (1 kept back), with chunks of 10 (the
/// org plan's), once its items have spent what its key's quota leaves to jobs: 1 went to
/// the submission, 5 items are worked and charged, then, well past a few worker rounds
/// (and quota rechecks), nothing more. Returns the workspace, the key and the job's id.
async fn a_job_on_a_spent_quota(app: &TestApp) -> (String, String, String) {
    let ws = leadlex::admin::create_workspace(&app.db, &app.settler, "quota", Plan::Org, 100, None, Some(7)).await.unwrap().id;
    let key = app.key(&ws, &[Permission::WriteEnrich], None).await.key;
    let items: Vec<Value> = (0..10).map(|n| json!({"domain": format!("acme{n}.com")})).collect();
    let id = submit(app, &key, json!({"items": items})).await.json()["data"]["id"].as_str().unwrap().to_string();
    let scope = leadlex::scope::Scope::live(&ws);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while leadlex::jobs::get(&app.db, &scope, &id).await.unwrap().done < 5 {
        assert!(tokio::time::Instant::now() < deadline, "the units left to jobs are used");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let job = leadlex::jobs::get(&app.db, &scope, &id).await.unwrap();
    assert_eq!((job.done, job.status.as_str()), (5, "running"), "the jobs' share of the day is spent: {job:?}");
    assert_eq!(app.charges(&ws).await, job.credits_charged as usize);
    app.assert_books_balance(&ws).await;
    (ws, key, id)
}

/// The end of a daily quota is used, not stranded, but for the reserve left to the key's
/// own requests: its owner can still follow the waiting job and cancel it.
async fn a_job_uses_what_is_left_of_the_daily_quota(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, key, id) = a_job_on_a_spent_quota(&app).await;
    let r = app.request(app.client.post(format!("{}/v1/enrich/jobs/{id}/cancel", app.base)).bearer_auth(&key)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));
}

/// A raised quota is used once the worker looks again (`[jobs] quota_recheck_ms`, a
/// minute by default; short here): the job that waited for the quota is finished.
async fn a_raised_quota_is_used_at_the_next_recheck(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.jobs.quota_recheck_ms = 300).await;
    let (ws, _, id) = a_job_on_a_spent_quota(&app).await;
    leadlex::admin::update_workspace(&app.db, &ws, None, None, Some(1_000)).await.unwrap();
    let scope = leadlex::scope::Scope::live(&ws);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let job = leadlex::jobs::get(&app.db, &scope, &id).await.unwrap();
        if job.status == "completed" {
            assert_eq!((job.done, job.credits_charged), (10, job.succeeded), "every item done, each match charged: {job:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the raised quota is used: {job:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.assert_books_balance(&ws).await;
}

/// A key whose daily quota is spent holds up its own jobs only: another key of the same
/// workspace with a quota of its own (`high` tier) gets its job worked.
async fn a_spent_key_does_not_hold_up_another_keys_jobs(backend: Backend) {
    use leadlex::auth::{KeyMode, RateLimitTier};
    let app = spawn_app(backend).await;
    let ws = leadlex::admin::create_workspace(&app.db, &app.settler, "two keys", Plan::Pro, 100, None, Some(5)).await.unwrap().id;
    let spent = app.key(&ws, &[Permission::WriteEnrich], None).await.key;
    let spec = leadlex::keys::NewKeySpec::from_text(
        "own quota",
        None,
        &["write:enrich".into()],
        RateLimitTier::High.as_str(),
        None,
        KeyMode::Live,
    )
    .unwrap();
    let own = leadlex::admin::create_key_with(&app.db, &ws, &spec).await.unwrap().key;
    let scope = leadlex::scope::Scope::live(&ws);
    let items = |n: usize| json!({"items": (0..n).map(|i| json!({"domain": format!("acme{i}.com")})).collect::<Vec<_>>()});
    // The first key's job spends its quota (5 a day: 1 submission, 3 items, 1 kept back).
    let first = submit(&app, &spent, items(10)).await.json()["data"]["id"].as_str().unwrap().to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while leadlex::jobs::get(&app.db, &scope, &first).await.unwrap().done < 3 {
        assert!(tokio::time::Instant::now() < deadline, "the first job uses its key's quota");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The second key's job, behind it in the same workspace, is worked to the end.
    let second = submit(&app, &own, items(3)).await.json()["data"]["id"].as_str().unwrap().to_string();
    while leadlex::jobs::get(&app.db, &scope, &second).await.unwrap().status != "completed" {
        assert!(tokio::time::Instant::now() < deadline, "the other key's job is not held up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(leadlex::jobs::get(&app.db, &scope, &first).await.unwrap().done, 3);
    app.assert_books_balance(&ws).await;
}

async fn a_test_key_job_is_free(backend: Backend) {
    let app = spawn_app(backend).await;
    let ws = app.workspace(Plan::Pro, 2).await;
    let admin = app.key(&ws, &Permission::ALL, None).await.key;
    let test = app.test_key(&admin, &["write:enrich"]).await;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let items = json!({"items": [
        {"email": format!("vendor_a+{tag}@leadlex.test")},
        {"email": format!("vendor_b+{tag}@leadlex.test")},
        {"email": format!("no_match+{tag}@leadlex.test")},
        {"email": format!("insufficient_credits+{tag}@leadlex.test")},
    ]});
    let id = submit(&app, &test, items).await.json()["data"]["id"].as_str().unwrap().to_string();
    let done = wait_for(&app, &test, &id, |j| j["status"] == "completed").await;
    assert_eq!((done["succeeded"].as_i64(), done["credits_charged"].as_i64()), (Some(2), Some(0)));
    let statuses: Vec<u64> = all_results(&app, &test, &id, 10).await.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [200, 200, 404, 402]);
    assert_eq!(app.assert_books_balance(&ws).await, 2);
    assert_eq!(app.charges(&ws).await, 0);
}

/// A vendor that knows every email, answering after `delay`, and counts what it was asked.
async fn counting_vendor(delay: Duration) -> wiremock::MockServer {
    let server = wiremock::MockServer::start().await;
    let person = json!({"status": 200, "likelihood": 8, "data": {"full_name": "Pat Doe", "job_title": "CFO"}});
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(person).set_delay(delay))
        .mount(&server)
        .await;
    server
}

/// SIGKILL the serving process in the middle of a job, start it again: the job completes,
/// every item is charged exactly once, every result is there, and only the items whose
/// lookup was in flight at the kill were asked of the vendor again. On PostgreSQL a second
/// replica works on meanwhile (sharing the job's chunks).
async fn a_job_survives_a_killed_worker(backend: Backend) {
    use crate::replicas::Replica;
    let vendor = counting_vendor(Duration::from_millis(100)).await;
    let store = crate::helpers::ProcessStore::new(backend).await;
    let (db, database_url) = (store.db.clone(), store.url.clone());
    let (ws, key) = store.funded(Plan::Unmetered, 1_000, &[Permission::WriteEnrich]).await;
    let config = store.config(&format!(
        "[server]\nrequest_deadline_ms = 3000\n[jobs]\nlease_ms = 1500\npoll_ms = 50\n\
         [[vendors]]\nname = \"vendor_a\"\nbase_url = \"{}\"\napi_key = \"k\"\ntimeout_ms = 2000\n",
        vendor.uri()
    ));
    let replicas = if backend == Backend::Postgres { 2 } else { 1 };
    let mut running: Vec<Replica> = futures::future::join_all((0..replicas).map(|_| Replica::start(&database_url, &config))).await;

    let emails: Vec<String> = (0..100).map(|n| format!("person{n}@company{n}.com")).collect();
    let items: Vec<Value> = emails.iter().map(|e| json!({"email": e})).collect();
    let client = reqwest::Client::new();
    let r =
        client.post(format!("{}/v1/enrich/jobs", running[0].base)).bearer_auth(&key).json(&json!({"items": items})).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["data"]["id"].as_str().unwrap().to_string();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let progress = |db: sea_orm::DatabaseConnection, ws: String, id: String| async move {
        leadlex::jobs::get(&db, &leadlex::scope::Scope::live(&ws), &id).await.unwrap()
    };
    while progress(db.clone(), ws.clone(), id.clone()).await.done < 20 {
        assert!(tokio::time::Instant::now() < deadline, "the job makes progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running[0].signal("-KILL");
    let _ = running[0].child.wait().await;
    let at_kill = progress(db.clone(), ws.clone(), id.clone()).await;
    assert!(at_kill.done < 100, "killed mid-job: {at_kill:?}");
    running[0] = Replica::start(&database_url, &config).await;

    let done = loop {
        let job = progress(db.clone(), ws.clone(), id.clone()).await;
        if job.status == "completed" {
            break job;
        }
        assert!(tokio::time::Instant::now() < deadline, "the job completes after the restart: {job:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((done.done, done.succeeded, done.credits_charged), (100, 100, 100));
    let ledger = leadlex::credits::ledger(&db, &ws).await.unwrap();
    assert_eq!(ledger.iter().filter(|l| l.request_id.as_deref() == Some(id.as_str())).count(), 100, "each item charged once");
    assert_eq!(ledger.iter().map(|l| l.delta).sum::<i64>(), 900);
    assert_eq!(leadlex::credits::balance(&db, &ws).await.unwrap(), Some(900));
    let (results, _) = leadlex::jobs::result_rows(&db, &leadlex::scope::Scope::live(&ws), &id, 1_000, None).await.unwrap();
    assert_eq!(results.iter().map(|r| r.idx).collect::<Vec<_>>(), (0..100).collect::<Vec<i32>>(), "no result lost");
    let mut asked: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for request in vendor.received_requests().await.unwrap() {
        let email = request.url.query_pairs().find(|(k, _)| k == "email").map(|(_, v)| v.to_string()).unwrap_or_default();
        *asked.entry(email).or_default() += 1;
    }
    assert!(emails.iter().all(|e| asked.get(e).is_some_and(|&n| n >= 1)), "every item was looked up");
    let again: Vec<_> = asked.iter().filter(|(_, &n)| n > 1).collect();
    assert!(again.iter().all(|(_, &n)| n == 2), "asked twice at most: {again:?}");
    // A chunk is at most 20 items (unmetered) and one was in flight on the killed worker.
    assert!(again.len() <= 20, "only the lookups in flight at the kill were repeated: {}", again.len());
    drop(running);
}

fn example(spec: &Value, method: &str, path: &str, status: &str, name: &str) -> Value {
    let media = "application/json; charset=utf-8";
    spec["paths"][path][method]["responses"][status]["content"][media]["examples"][name]["value"].clone()
}

/// The spec's job examples are what the server answers to the request example: stored
/// (`queued`), done, listed, its results, and cancelled before it started.
async fn the_documented_examples_are_what_the_server_answers(backend: Backend) {
    use crate::spec_check::without_per_call_values as blank;
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/leadlex.json")).unwrap(),
    )
    .unwrap();
    let media = "application/json; charset=utf-8";
    let request = spec["paths"]["/v1/enrich/jobs"]["post"]["requestBody"]["content"][media]["examples"]["crm_export"]["value"].clone();

    // No worker: the job stays queued until it is cancelled.
    let idle = spawn_app_with(backend, |s| s.jobs.workers = false).await;
    let (_, key) = idle.funded(10).await;
    let stored = submit(&idle, &key, request.clone()).await;
    assert_eq!(blank(stored.json()), blank(example(&spec, "post", "/v1/enrich/jobs", "202", "queued")));
    let id = stored.json()["data"]["id"].as_str().unwrap().to_string();
    let cancelled = idle.request(idle.client.post(format!("{}/{id}/cancel", jobs_url(&idle))).bearer_auth(&key)).await;
    assert_eq!(blank(cancelled.json()), blank(example(&spec, "post", "/v1/enrich/jobs/{id}/cancel", "200", "cancelled")));
    assert!(all_results(&idle, &key, &id, 10).await.is_empty(), "a job cancelled before it started has no result");

    let app = spawn_app(backend).await;
    let (_, key) = app.funded(10).await;
    let id = submit(&app, &key, request).await.json()["data"]["id"].as_str().unwrap().to_string();
    wait_for(&app, &key, &id, |j| j["status"] == "completed").await;
    let job = get(&app, &key, &format!("/v1/enrich/jobs/{id}")).await;
    assert_eq!(blank(job.json()), blank(example(&spec, "get", "/v1/enrich/jobs/{id}", "200", "completed")));
    let listed = get(&app, &key, "/v1/enrich/jobs").await;
    assert_eq!(blank(listed.json()), blank(example(&spec, "get", "/v1/enrich/jobs", "200", "one_job")));
    let results = get(&app, &key, &format!("/v1/enrich/jobs/{id}/results")).await;
    assert_eq!(blank(results.json()), blank(example(&spec, "get", "/v1/enrich/jobs/{id}/results", "200", "crm_export")));
}

/// Every way the job operations fail, each with its documented error.
async fn every_job_operation_refuses_what_it_should(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.server.max_job_body_bytes = 64 * 1024).await;
    let (ws, key) = app.funded(10).await;
    let reader = app.key(&ws, &[Permission::ReadUsage], None).await.key;
    let id = submit(&app, &key, json!({"items": [{"email": "jane@acme.com"}]})).await.json()["data"]["id"].as_str().unwrap().to_string();
    let paths = [
        (reqwest::Method::POST, "/v1/enrich/jobs".to_string()),
        (reqwest::Method::GET, "/v1/enrich/jobs".to_string()),
        (reqwest::Method::GET, format!("/v1/enrich/jobs/{id}")),
        (reqwest::Method::POST, format!("/v1/enrich/jobs/{id}/cancel")),
        (reqwest::Method::GET, format!("/v1/enrich/jobs/{id}/results")),
    ];
    let call = |method: reqwest::Method, path: &str, key: Option<&str>| {
        let mut b = app.client.request(method.clone(), format!("{}{path}", app.base));
        if let Some(key) = key {
            b = b.bearer_auth(key);
        }
        if method == reqwest::Method::POST {
            b = b.json(&json!({"items": [{"domain": "acme.com"}]}));
        }
        b
    };
    for (method, path) in &paths {
        let r = app.request(call(method.clone(), path, None)).await;
        assert_eq!((r.status, r.error_code().as_str()), (401, "invalid_key"), "{method} {path}");
        let r = app.request(call(method.clone(), path, Some(&reader))).await;
        assert_eq!((r.status, r.error_code().as_str()), (403, "insufficient_permissions"), "{method} {path}");
    }
    for path in ["/v1/enrich/jobs/job_00000000000000000000000000000000", "/v1/enrich/jobs/job_00000000000000000000000000000000/results"] {
        let r = get(&app, &key, path).await;
        assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
    }
    let r = app.request(app.client.post(format!("{}/job_0/cancel", jobs_url(&app))).bearer_auth(&key)).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
    for path in ["/v1/enrich/jobs?limit=0".to_string(), format!("/v1/enrich/jobs/{id}/results?limit=0")] {
        let r = get(&app, &key, &path).await;
        assert_eq!((r.status, r.error_code().as_str()), (400, "validation_error"), "{path}");
        assert_eq!(r.json()["error"]["details"][0]["field"], "limit");
    }
    let r = app.request(app.client.post(jobs_url(&app)).bearer_auth(&key).header("content-type", "text/plain").body("email")).await;
    assert_eq!((r.status, r.error_code().as_str()), (415, "unsupported_media_type"));
    let big: Vec<Value> = (0..2_000).map(|n| json!({"email": format!("someone.with.a.long.name{n}@acme.com")})).collect();
    let r = submit(&app, &key, json!({"items": big})).await;
    assert_eq!((r.status, r.error_code().as_str()), (413, "payload_too_large"));

    // A submission still being stored with the same key: 409.
    let running = uuid::Uuid::new_v4().to_string();
    let items = [leadlex::bulk::ItemInput { domain: Some("acme.com".into()), ..Default::default() }];
    app.hold_claim(&ws, &running, &leadlex::jobs::fingerprint(&items, Default::default())).await;
    let busy = app
        .request(
            app.client
                .post(jobs_url(&app))
                .bearer_auth(&key)
                .header("Idempotency-Key", &running)
                .json(&json!({"items": [{"domain": "acme.com"}]})),
        )
        .await;
    assert_eq!((busy.status, busy.error_code().as_str()), (409, "idempotency_key_in_use"));

    // A starter key spent for the minute: every operation says 429.
    let slow = app.throttled_key(&[Permission::WriteEnrich], "/v1/enrich/jobs").await;
    for (method, path) in &paths {
        let r = app.request(call(method.clone(), path, Some(&slow))).await;
        assert_eq!((r.status, r.error_code().as_str()), (429, "rate_limited"), "{method} {path}");
    }

    // The store breaks: 500, nothing charged.
    use sea_orm::ConnectionTrait;
    app.db.execute_unprepared("DROP TABLE enrichment_job_items").await.unwrap();
    app.db.execute_unprepared("DROP TABLE enrichment_jobs").await.unwrap();
    for (method, path) in &paths {
        let r = app.request(call(method.clone(), path, Some(&key))).await;
        assert_eq!((r.status, r.error_code().as_str()), (500, "internal_error"), "{method} {path}");
    }
}

async fn submit_csv(app: &TestApp, key: &str, text: &str) -> Resp {
    app.request(app.client.post(jobs_url(app)).bearer_auth(key).header("content-type", "text/csv").body(text.to_string())).await
}

/// A CSV file in; the results out as CSV and as JSON lines, streamed a page at a time.
async fn a_csv_file_in_csv_and_ndjson_out(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_ws, key) = app.funded(10_000).await;
    // A BOM, a column we ignore, a quoted reference with a comma, a blank line, a
    // malformed row whose cells are spreadsheet formulas, an empty cell.
    let mut text = String::from("\u{feff}Email,Domain,Notes,Reference\n");
    text.push_str("jane@acme.com,,vip,\"crm, 1\"\n\n");
    text.push_str(",acme.com,,crm-2\n");
    text.push_str("=1+2,,,\"=HYPERLINK(\"\"http://x\"\")\"\n");
    for n in 0..1_200 {
        text.push_str(&format!(",acme.com,,bulk-{n}\n"));
    }
    let r = submit_csv(&app, &key, &text).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.bytes));
    let id = r.json()["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(r.json()["data"]["total"], 1_203);
    wait_for(&app, &key, &id, |j| j["status"] == "completed").await;

    let url = format!("{}/{id}/results", jobs_url(&app));
    let csv = app.request(app.client.get(&url).bearer_auth(&key).header("accept", "text/csv")).await;
    assert_eq!((csv.status, csv.header("content-type")), (200, Some("text/csv")));
    let mut reader = csv::Reader::from_reader(csv.bytes.as_slice());
    let headers = reader.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap_or_else(|| panic!("column {name}"));
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1_203, "one row per item, across pages");
    assert_eq!(rows.iter().map(|r| r[col("index")].parse::<usize>().unwrap()).collect::<Vec<_>>(), (0..1_203).collect::<Vec<_>>());
    assert_eq!((&rows[0][col("reference")], &rows[0][col("status")], &rows[0][col("source")]), ("crm, 1", "200", "vendor_a"));
    assert_eq!((&rows[0][col("email")], &rows[0][col("person_full_name")]), ("jane@acme.com", "Jane Doe"));
    assert_eq!((&rows[1][col("domain")], &rows[1][col("company_name")]), ("acme.com", "Acme Corp"));
    assert_eq!((&rows[2][col("status")], &rows[2][col("error_code")]), ("400", "validation_error"));
    // A formula comes back as text a spreadsheet shows, never runs.
    assert_eq!((&rows[2][col("email")], &rows[2][col("reference")]), ("'=1+2", "'=HYPERLINK(\"http://x\")"));
    assert_eq!(&rows[1_202][col("reference")], "bulk-1199");

    let ndjson = app.request(app.client.get(&url).bearer_auth(&key).header("accept", "application/x-ndjson")).await;
    assert_eq!(ndjson.header("content-type"), Some("application/x-ndjson"));
    let lines: Vec<Value> = String::from_utf8(ndjson.bytes).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1_203);
    assert_eq!((lines[0]["index"].as_u64(), lines[0]["reference"].as_str()), (Some(0), Some("crm, 1")));
    assert_eq!(lines[2]["error"]["request_id"], id.as_str());
    // Starting after an item, as the JSON pages do.
    let tail = app.request(app.client.get(format!("{url}?starting_after=1200")).bearer_auth(&key).header("accept", "text/csv")).await;
    assert_eq!(String::from_utf8(tail.bytes).unwrap().lines().count(), 3, "the header and the last two");

    // What a CSV file must have.
    for (bad, why) in [("name,reference\nJane,1\n", "an `email` or a `domain` column"), ("email\n", "at least one row")] {
        let r = submit_csv(&app, &key, bad).await;
        assert_eq!((r.status, r.error_code().as_str()), (400, "validation_error"), "{bad:?}");
        assert!(r.json()["error"]["message"].as_str().unwrap().contains(why), "{}", r.json());
    }
    let too_many = format!("domain\n{}", "acme.com\n".repeat(10_001));
    let r = submit_csv(&app, &key, &too_many).await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "validation_error"));
}

/// A finished job and its results are deleted once `[jobs] retention_days` have passed
/// (here none), by the background purge; the ledger keeps its charges.
async fn finished_jobs_are_purged_after_their_retention(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.jobs.retention_days = 0;
        s.idempotency.purge_interval_secs = 1;
    })
    .await;
    let (ws, key) = app.funded(10).await;
    let id = submit(&app, &key, json!({"items": [{"domain": "acme.com"}]})).await.json()["data"]["id"].as_str().unwrap().to_string();
    wait_for(&app, &key, &id, |j| j["status"] == "completed").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&app, &key, &format!("/v1/enrich/jobs/{id}")).await;
        if r.status == 404 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "purged within the purge interval");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    let items = entity::enrichment_job_item::Entity::find()
        .filter(entity::enrichment_job_item::Column::JobId.eq(id.as_str()))
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(items, 0, "its items too");
    assert_eq!(app.charges(&ws).await, 1, "the ledger keeps its charge");
}

/// A job's quality controls hold for each of its items, as on a single call.
async fn a_job_keeps_its_quality_controls(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ws, key) = app.funded(100).await;
    let emails = known_emails(12);
    let items: Vec<Value> = emails.iter().map(|e| json!({"email": e})).collect();
    // Cached first, so that `refresh` has something to skip.
    let id = submit(&app, &key, json!({"items": items})).await.json()["data"]["id"].as_str().unwrap().to_string();
    wait_for(&app, &key, &id, |j| j["status"] == "completed").await;
    let balance = app.balance(&ws).await;

    let r = submit(&app, &key, json!({"items": items, "min_confidence": 1.0, "refresh": true})).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.bytes));
    let id = r.json()["data"]["id"].as_str().unwrap().to_string();
    let done = wait_for(&app, &key, &id, |j| j["status"] == "completed").await;
    let results = all_results(&app, &key, &id, 100).await;
    let mut refused = 0;
    for result in &results {
        match result["status"].as_u64() {
            Some(200) => {
                assert_eq!(result["data"]["confidence"].as_f64(), Some(1.0), "only sure answers pass: {result}");
                assert_eq!(result["data"]["source"], "vendor_a", "refreshed, not cached: {result}");
                assert!(result["data"]["fetched_at"].is_string());
            }
            _ => {
                assert_eq!(result["error"]["details"][0]["reason"], "below_min_confidence", "{result}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "some answers are below 1.0");
    assert_eq!((done["no_match"].as_i64(), done["succeeded"].as_i64()), (Some(refused), Some(12 - refused)));
    assert_eq!(app.assert_books_balance(&ws).await, balance - (12 - refused), "only the sure answers are charged");

    let r = submit(&app, &key, json!({"items": items, "max_age_days": -1})).await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "validation_error"));

    // A CSV file takes them as query parameters; a JSON body's own fields win over those.
    let text = format!("email\n{}\n", emails.join("\n"));
    let r = app
        .request(
            app.client
                .post(format!("{}?min_confidence=1&max_age_days=0", jobs_url(&app)))
                .bearer_auth(&key)
                .header("content-type", "text/csv")
                .body(text),
        )
        .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.bytes));
    let id = r.json()["data"]["id"].as_str().unwrap().to_string();
    let done = wait_for(&app, &key, &id, |j| j["status"] == "completed").await;
    assert_eq!(done["no_match"].as_i64(), Some(refused), "the same answers refused as with the JSON body");
    for result in all_results(&app, &key, &id, 100).await.iter().filter(|r| r["status"] == 200) {
        assert_eq!((result["data"]["confidence"].as_f64(), result["data"]["source"].as_str()), (Some(1.0), Some("vendor_a")), "{result}");
    }
    let r = app
        .request(
            app.client
                .post(format!("{}?min_confidence=1", jobs_url(&app)))
                .bearer_auth(&key)
                .json(&json!({"items": items, "min_confidence": 0})),
        )
        .await;
    let id = r.json()["data"]["id"].as_str().unwrap().to_string();
    let done = wait_for(&app, &key, &id, |j| j["status"] == "completed").await;
    assert_eq!(done["succeeded"].as_i64(), Some(12), "the body's min_confidence (0) wins over the query's");
    let r = app
        .request(
            app.client
                .post(format!("{}?min_confidence=2", jobs_url(&app)))
                .bearer_auth(&key)
                .header("content-type", "text/csv")
                .body("email\na@b.co\n"),
        )
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "validation_error"));
}

/// The address whose lookup the vendor of [`app_held_by_a_slow_lookup`] answers slowly.
const HELD: &str = "held@slow.example";

/// A server whose one vendor answers everyone at once but [`HELD`], after `hold`: a
/// request about it is one the server is answering for that long. (A request whose body
/// has not arrived does not count: it is not being answered yet.)
async fn app_held_by_a_slow_lookup(
    backend: Backend,
    hold: Duration,
    configure: impl FnOnce(&mut leadlex::config::Settings),
) -> (TestApp, wiremock::MockServer) {
    use wiremock::matchers::{method, query_param};
    let vendor = wiremock::MockServer::start().await;
    let person = json!({"status": 200, "likelihood": 8, "data": {"full_name": "Pat Doe", "job_title": "CFO"}});
    wiremock::Mock::given(method("GET"))
        .and(query_param("email", HELD))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(person.clone()).set_delay(hold))
        .with_priority(1)
        .mount(&vendor)
        .await;
    wiremock::Mock::given(method("GET")).respond_with(wiremock::ResponseTemplate::new(200).set_body_json(person)).mount(&vendor).await;
    let base = vendor.uri();
    let app = spawn_app_with(backend, move |s| {
        s.vendors = crate::helpers::one_vendor(base, 20_000);
        s.server.request_deadline_ms = 20_000;
        configure(s);
    })
    .await;
    (app, vendor)
}

/// A request the server answers for as long as its vendor holds [`HELD`].
fn hold_a_request(app: &TestApp, key: &str) -> tokio::task::JoinHandle<u16> {
    let request = app.client.post(format!("{}/v1/email/enrich", app.base)).bearer_auth(key).json(&json!({"email": HELD}));
    tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()).unwrap_or(0) })
}

/// The requests the server says it is answering (its `/metrics`), this one included.
async fn in_flight(app: &TestApp) -> i64 {
    let text = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    let line = text.lines().find(|l| l.starts_with("leadlex_http_requests_in_flight ")).expect("the gauge is exported");
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Interactive calls come first: while the process answers `[jobs] busy_requests`
/// requests, a job waits for a lull, at most `[jobs] busy_interval_ms` between rounds.
async fn a_busy_process_answers_requests_before_working_jobs(backend: Backend) {
    // Busy at one request in flight; no floor to speak of: the job waits for the lull.
    let (app, _vendor) = app_held_by_a_slow_lookup(backend, Duration::from_secs(4), |s| {
        s.jobs.busy_requests = Some(1);
        s.jobs.busy_interval_ms = 600_000;
    })
    .await;
    let (_, key) = app.funded_on(Plan::Pro, 100).await;
    let items: Vec<Value> = known_emails(15).into_iter().map(|e| json!({"email": e})).collect();
    assert_eq!(in_flight(&app).await, 1, "only the metrics request itself");
    let held = hold_a_request(&app, &key);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while in_flight(&app).await != 2 {
        assert!(tokio::time::Instant::now() < deadline, "the held request is counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let id = submit(&app, &key, json!({"items": items.clone()})).await.json()["data"]["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let waiting = get(&app, &key, &format!("/v1/enrich/jobs/{id}")).await.json()["data"].clone();
    assert_eq!((waiting["status"].as_str(), waiting["done"].as_i64()), (Some("queued"), Some(0)), "{waiting}");
    assert_eq!(held.await.unwrap(), 200, "the held request ends");
    let done = wait_for(&app, &key, &id, |j| j["status"] == "completed").await;
    assert_eq!(done["succeeded"], 15);

    // With a floor of 100 ms, a job moves on while the process stays busy: 3 rounds of a
    // pro plan's 5 items.
    let (app, _vendor) = app_held_by_a_slow_lookup(backend, Duration::from_secs(8), |s| {
        s.jobs.busy_requests = Some(1);
        s.jobs.busy_interval_ms = 100;
    })
    .await;
    let (_, key) = app.funded_on(Plan::Pro, 100).await;
    let held = hold_a_request(&app, &key);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while in_flight(&app).await != 2 {
        assert!(tokio::time::Instant::now() < deadline, "the held request is counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let id = submit(&app, &key, json!({"items": items})).await.json()["data"]["id"].as_str().unwrap().to_string();
    let done = wait_for(&app, &key, &id, |j| j["status"] == "completed").await;
    assert_eq!(done["succeeded"], 15);
    assert_eq!(in_flight(&app).await, 2, "the held request was answering throughout");
    held.abort();
}

/// When each charge of `job` was made (its enrich ledger rows in `ws`).
async fn job_charges(app: &TestApp, ws: &str, job: &str) -> Vec<i64> {
    leadlex::credits::ledger(&app.db, ws)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.reason == "enrich" && r.request_id.as_deref() == Some(job))
        .map(|r| r.created_at)
        .collect()
}

/// How many `enrichment.job.cancelled` deliveries name `job`.
async fn cancelled_events(app: &TestApp, job: &str) -> usize {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    entity::webhook_delivery::Entity::find()
        .filter(entity::webhook_delivery::Column::Event.eq("enrichment.job.cancelled"))
        .all(&app.db)
        .await
        .unwrap()
        .iter()
        .filter(|d| d.data.contains(job))
        .count()
}

/// Revoking a key cancels its jobs at once, items in flight included: nothing is charged
/// in its name once the revocation answered, and the job says why (with its event). A
/// key that expires while its job runs: the same, within a second of its expiry.
async fn revoking_or_expiring_a_key_stops_its_jobs(backend: Backend) {
    let vendor = counting_vendor(Duration::from_millis(100)).await;
    let base = vendor.uri();
    let app = spawn_app_with(backend, move |s| {
        s.vendors = crate::helpers::one_vendor(base, 2_000);
        s.webhooks.allow_loopback = true;
        s.webhooks.workers = false;
        s.jobs.poll_ms = 50;
    })
    .await;
    let ws = app.workspace(Plan::Unmetered, 10_000).await;
    let admin = app.key(&ws, &Permission::ALL, None).await.key;
    let hook = json!({"url": format!("{}/h", crate::helpers::dead_url()), "events": ["enrichment.job.cancelled"]});
    let r = app.request(app.client.post(format!("{}/v1/webhooks", app.base)).bearer_auth(&admin).json(&hook)).await;
    assert_eq!(r.status, 201);
    let items = |tag: &str| json!({"items": (0..400).map(|i| json!({"email": format!("p{i}@{tag}.example")})).collect::<Vec<_>>()});

    let worker = app.key(&ws, &[Permission::WriteEnrich], None).await;
    let id = submit(&app, &worker.key, items("revoked")).await.json()["data"]["id"].as_str().unwrap().to_string();
    wait_for(&app, &admin, &id, |j| j["done"].as_i64() > Some(0)).await;
    let revoked = app.request(app.client.delete(format!("{}/v1/api-keys/{}", app.base, worker.id)).bearer_auth(&admin)).await;
    assert_eq!(revoked.status, 204);
    let answered = leadlex::now_ms();
    let charged = job_charges(&app, &ws, &id).await;
    let job = get(&app, &admin, &format!("/v1/enrich/jobs/{id}")).await.json()["data"].clone();
    assert_eq!((job["status"].as_str(), job["cancel_reason"].as_str()), (Some("cancelled"), Some("api_key_revoked")), "{job}");
    assert!(job["done"].as_i64() < Some(400), "the job was stopped, not finished: {job}");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let later = job_charges(&app, &ws, &id).await;
    assert_eq!(later.len(), charged.len(), "charges after the revocation");
    assert!(later.iter().all(|at| *at <= answered), "a charge dated after the revocation answered");
    assert_eq!(
        get(&app, &admin, &format!("/v1/enrich/jobs/{id}")).await.json()["data"]["credits_charged"].as_u64(),
        Some(later.len() as u64)
    );
    assert_eq!(cancelled_events(&app, &id).await, 1);

    let expires_at = leadlex::now_ms() + 1_500;
    let expiring = app.key(&ws, &[Permission::WriteEnrich], Some(expires_at)).await;
    let id = submit(&app, &expiring.key, items("expiring")).await.json()["data"]["id"].as_str().unwrap().to_string();
    let job = wait_for(&app, &admin, &id, |j| j["status"] != "queued" && j["status"] != "running").await;
    assert_eq!((job["status"].as_str(), job["cancel_reason"].as_str()), (Some("cancelled"), Some("api_key_expired")), "{job}");
    let charged = job_charges(&app, &ws, &id).await;
    assert!(!charged.is_empty(), "it ran before its key expired");
    assert!(charged.iter().all(|at| *at <= expires_at + 1_000), "charged more than a second after the key expired");
    assert_eq!(cancelled_events(&app, &id).await, 1);
    app.assert_books_balance(&ws).await;
}

/// A test key's CI follows its job to the end: polling and reading results do not count
/// against its small limit on enrichment calls (which still answers `429` on the
/// eleventh call within a minute).
async fn a_test_key_can_follow_its_job_to_the_end(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.jobs.poll_ms = 50).await;
    let ws = app.workspace(Plan::Pro, 2).await;
    let admin = app.key(&ws, &[Permission::AdminApiKeys, Permission::WriteEnrich], None).await.key;
    let test = app.test_key(&admin, &["write:enrich"]).await;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let items: Vec<Value> = (0..40).map(|i| json!({"email": format!("vendor_a+{tag}{i}@leadlex.test")})).collect();
    let id = submit(&app, &test, json!({"items": items})).await.json()["data"]["id"].as_str().unwrap().to_string();
    let mut polls = 0;
    loop {
        let r = get(&app, &test, &format!("/v1/enrich/jobs/{id}")).await;
        assert_eq!(r.status, 200, "poll {polls}: {}", String::from_utf8_lossy(&r.bytes));
        polls += 1;
        if r.json()["data"]["status"] == "completed" && polls > 12 {
            break;
        }
        assert!(polls < 100, "the job did not complete");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(all_results(&app, &test, &id, 5).await.len(), 40);
    // Enrichment calls keep their own small limit: 1 submission, then 9 calls, then 429.
    for n in 0..9 {
        let r = app.enrich(&test, json!({"email": format!("vendor_a+{tag}x{n}@leadlex.test")})).await;
        assert_eq!(r.status, 200, "call {n}");
    }
    let r = app.enrich(&test, json!({"email": format!("vendor_a+{tag}last@leadlex.test")})).await;
    assert_eq!((r.status, r.error_code().as_str()), (429, "rate_limited"));
}

/// One tenant's slow chunk paces nobody else's: each tenant's chunk runs as a task of its
/// own, and a tenant whose chunk ended goes on at once. Workspace B's job waits on a
/// vendor that holds its input for seconds; workspace A's three chunks all finish
/// meanwhile.
async fn a_slow_tenant_does_not_pace_the_others(backend: Backend) {
    let (app, _vendor) = app_held_by_a_slow_lookup(backend, Duration::from_secs(5), |s| s.jobs.poll_ms = 50).await;
    let (_, slow_key) = app.funded_on(Plan::Pro, 100).await;
    let (_, key) = app.funded_on(Plan::Pro, 100).await;
    let slow = submit(&app, &slow_key, json!({"items": [{"email": HELD}]})).await.json()["data"]["id"].as_str().unwrap().to_string();
    // B's chunk is in flight (its item leased) before A submits.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while get(&app, &slow_key, &format!("/v1/enrich/jobs/{slow}")).await.json()["data"]["status"] != "running" {
        assert!(tokio::time::Instant::now() < deadline, "B's job started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Fifteen items: three of a pro plan's chunks of five.
    let items: Vec<Value> = known_emails(15).into_iter().map(|e| json!({"email": e})).collect();
    let id = submit(&app, &key, json!({"items": items})).await.json()["data"]["id"].as_str().unwrap().to_string();
    let done = wait_for(&app, &key, &id, |j| j["status"] == "completed").await;
    assert_eq!(done["succeeded"], 15);
    let held = get(&app, &slow_key, &format!("/v1/enrich/jobs/{slow}")).await.json()["data"].clone();
    assert_eq!(held["done"], 0, "A finished while B's one chunk was still held: {held}");
}

crate::on_both_backends!(
    a_slow_tenant_does_not_pace_the_others,
    revoking_or_expiring_a_key_stops_its_jobs,
    a_test_key_can_follow_its_job_to_the_end,
    a_busy_process_answers_requests_before_working_jobs,
    a_job_keeps_its_quality_controls,
    finished_jobs_are_purged_after_their_retention,
    a_csv_file_in_csv_and_ndjson_out,
    the_documented_examples_are_what_the_server_answers,
    every_job_operation_refuses_what_it_should,
    a_job_survives_a_killed_worker,
    a_job_is_worked_through_and_its_results_paged,
    the_balance_runs_out_in_item_order,
    cancelling_stops_what_has_not_started,
    a_submission_is_safe_to_retry,
    items_count_against_the_daily_quota_not_the_minute,
    a_job_uses_what_is_left_of_the_daily_quota,
    a_raised_quota_is_used_at_the_next_recheck,
    a_spent_key_does_not_hold_up_another_keys_jobs,
    a_test_key_job_is_free,
);
