//! Privacy as a customer and an operator see it: a workspace's do-not-enrich list
//! (`/v1/suppressions`) honoured by its calls, bulk items and jobs without a vendor call
//! or a charge; an operator's erasure (`leadlex privacy erase`, the real binary) that
//! deletes the cached records and makes every replica answer `no_match` for the subject.

use leadlex::{auth::Permission, ratelimit::Plan};
use serde_json::{json, Value};
use wiremock::MockServer;

use crate::helpers::{person_vendor, sandbox_input, spawn_app, spawn_app_with, spawn_app_with_vendor, Backend, Resp, TestApp};

fn url(app: &TestApp, path: &str) -> String {
    format!("{}{path}", app.base)
}

async fn suppress(app: &TestApp, key: &str, body: Value) -> Resp {
    app.request(app.client.post(url(app, "/v1/suppressions")).bearer_auth(key).json(&body)).await
}

async fn vendor_requests(vendor: &MockServer) -> usize {
    vendor.received_requests().await.unwrap_or_default().len()
}

async fn a_workspace_list_is_honoured_by_its_calls_bulk_items_and_jobs(backend: Backend) {
    let vendor = person_vendor("Known Person").await;
    let app = spawn_app_with_vendor(backend, &vendor).await;
    let ws = app.workspace(Plan::Pro, 100).await;
    let key = app.key(&ws, &[Permission::WriteEnrich, Permission::AdminPrivacy], None).await.key;
    let (_, other_key) = app.funded(100).await;

    // Looked up (and cached) before it is suppressed.
    assert_eq!(app.enrich(&key, json!({"email": "jane.roe@corp.com"})).await.status, 200);
    let r = suppress(&app, &key, json!({"email": "Jane.Roe@CORP.com"})).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.bytes));
    let entry = r.json()["data"].clone();
    assert_eq!((entry["type"].as_str(), entry["hint"].as_str()), (Some("email"), Some("j***@corp.com")));
    assert!(entry["id"].as_str().unwrap().starts_with("sup_"));
    let again = suppress(&app, &key, json!({"email": "jane.roe@corp.com"})).await;
    assert_eq!((again.status, again.json()["data"]["id"].clone()), (200, entry["id"].clone()), "once per subject");
    let domain = suppress(&app, &key, json!({"domain": "https://www.quiet.org/about"})).await;
    assert_eq!((domain.status, domain.json()["data"]["hint"].as_str()), (201, Some("quiet.org")));

    let (balance, asked) = (app.balance(&ws).await, vendor_requests(&vendor).await);
    for body in [
        json!({"email": "jane.roe@corp.com"}),
        json!({"email": "anyone@quiet.org"}),
        json!({"domain": "quiet.org"}),
        json!({"email": "someone@gmail.com", "domain": "quiet.org"}),
        json!({"email": "jane.roe@corp.com", "refresh": true}),
    ] {
        let r = app.enrich(&key, body.clone()).await;
        assert_eq!((r.status, r.error_code().as_str()), (404, "no_match"), "{body}");
    }
    let r = app
        .request(
            app.client
                .post(url(&app, "/v1/email/enrich/bulk"))
                .bearer_auth(&key)
                .json(&json!({"items": [{"email": "jane.roe@corp.com"}, {"email": "x@quiet.org"}, {"email": "fresh.person@open.com"}]})),
        )
        .await;
    let statuses: Vec<u64> = r.json()["data"]["results"].as_array().unwrap().iter().map(|i| i["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [404, 404, 200]);
    assert_eq!(vendor_requests(&vendor).await, asked + 1, "the vendor was asked only for the one input not suppressed");
    assert_eq!(app.balance(&ws).await, balance - 1, "only that one was charged");

    // A job's items too.
    let r = app
        .request(app.client.post(url(&app, "/v1/enrich/jobs")).bearer_auth(&key).json(&json!({"items": [{"email": "y@quiet.org"}]})))
        .await;
    let id = r.json()["data"]["id"].as_str().unwrap().to_string();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let job = app.request(app.client.get(url(&app, &format!("/v1/enrich/jobs/{id}"))).bearer_auth(&key)).await.json();
        if job["data"]["status"] == "completed" {
            assert_eq!((job["data"]["no_match"].as_i64(), job["data"]["credits_charged"].as_i64()), (Some(1), Some(0)));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the job completes");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(vendor_requests(&vendor).await, asked + 1, "no vendor call for the job's suppressed item");

    // Another workspace's list is its own.
    assert_eq!(app.enrich(&other_key, json!({"email": "jane.roe@corp.com"})).await.status, 200);

    // Listed a page at a time; removed, the subject is looked up again.
    let page = app.request(app.client.get(url(&app, "/v1/suppressions?limit=1")).bearer_auth(&key)).await.json();
    assert_eq!(page["data"]["suppressions"][0]["id"], entry["id"]);
    let next = page["meta"]["next_cursor"].as_str().unwrap().to_string();
    let page = app.request(app.client.get(url(&app, &format!("/v1/suppressions?starting_after={next}"))).bearer_auth(&key)).await.json();
    assert_eq!((page["data"]["suppressions"].as_array().unwrap().len(), page["meta"]["next_cursor"].is_null()), (1, true));
    let gone =
        app.request(app.client.delete(url(&app, &format!("/v1/suppressions/{}", entry["id"].as_str().unwrap()))).bearer_auth(&key)).await;
    assert_eq!(gone.status, 204);
    assert_eq!(app.enrich(&key, json!({"email": "jane.roe@corp.com"})).await.status, 200);
    let again =
        app.request(app.client.delete(url(&app, &format!("/v1/suppressions/{}", entry["id"].as_str().unwrap()))).bearer_auth(&key)).await;
    assert_eq!((again.status, again.error_code().as_str()), (404, "not_found"));
    app.assert_books_balance(&ws).await;
}

/// Every way the suppression operations fail, each with its documented error.
async fn every_suppression_operation_refuses_what_it_should(backend: Backend) {
    let app = spawn_app(backend).await;
    let ws = app.workspace(Plan::Pro, 10).await;
    let key = app.key(&ws, &[Permission::AdminPrivacy], None).await.key;
    let enrich_only = app.key(&ws, &[Permission::WriteEnrich], None).await.key;
    let (_, stranger) = {
        let other = app.workspace(Plan::Pro, 10).await;
        (other.clone(), app.key(&other, &[Permission::AdminPrivacy], None).await.key)
    };
    let id = suppress(&app, &key, json!({"domain": "acme.com"})).await.json()["data"]["id"].as_str().unwrap().to_string();

    for body in [json!({}), json!({"email": "a@b.co", "domain": "b.co"}), json!({"email": "not an email"}), json!({"domain": null})] {
        let r = suppress(&app, &key, body.clone()).await;
        assert_eq!((r.status, r.error_code().as_str()), (400, "validation_error"), "{body}");
    }
    for path in ["/v1/suppressions?limit=0", "/v1/suppressions?starting_after=nope"] {
        let r = app.request(app.client.get(url(&app, path)).bearer_auth(&key)).await;
        assert_eq!((r.status, r.error_code().as_str()), (400, "validation_error"), "{path}");
    }
    let huge = app
        .request(
            app.client
                .post(url(&app, "/v1/suppressions"))
                .bearer_auth(&key)
                .header("content-type", "application/json")
                .body(format!(r#"{{"email":"a@b.co","pad":"{}"}}"#, "x".repeat(20_000))),
        )
        .await;
    assert_eq!((huge.status, huge.error_code().as_str()), (413, "payload_too_large"));
    let text = app
        .request(app.client.post(url(&app, "/v1/suppressions")).bearer_auth(&key).header("content-type", "text/plain").body("a@b.co"))
        .await;
    assert_eq!((text.status, text.error_code().as_str()), (415, "unsupported_media_type"));
    let stranger_delete = app.request(app.client.delete(url(&app, &format!("/v1/suppressions/{id}"))).bearer_auth(&stranger)).await;
    assert_eq!((stranger_delete.status, stranger_delete.error_code().as_str()), (404, "not_found"), "another workspace's entry");

    let calls = || {
        [
            app.client.post(url(&app, "/v1/suppressions")).json(&json!({"email": "c@d.co"})),
            app.client.get(url(&app, "/v1/suppressions")),
            app.client.delete(url(&app, &format!("/v1/suppressions/{id}"))),
        ]
    };
    app.assert_each(calls(), None, (401, "invalid_key")).await;
    app.assert_each(calls(), Some(&enrich_only), (403, "insufficient_permissions")).await;
    // A starter key spent for the minute: every operation says 429.
    let slow = app.throttled_key(&[Permission::AdminPrivacy], "/v1/suppressions").await;
    app.assert_each(calls(), Some(&slow), (429, "rate_limited")).await;
    // The store breaks: 500.
    use sea_orm::ConnectionTrait;
    app.db.execute_unprepared("DROP TABLE suppressions").await.unwrap();
    app.assert_each(calls(), Some(&key), (500, "internal_error")).await;
}

/// `leadlex privacy erase`: the cached records go, on both backends; the next call is a
/// free `no_match` without a vendor call, on this server and on a second replica (whose
/// memo held the record); running it again removes nothing more.
async fn an_erased_subject_is_gone_everywhere(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.privacy.refresh_ms = 100).await;
    let replica = app.replica().await;
    let (ws, key) = app.funded(100).await;
    let email = sandbox_input("erased.{i}@acme.com", |a, _| a);
    let colleague = sandbox_input("colleague.{i}@erased-co.com", |a, _| a);
    assert_eq!(app.enrich(&key, json!({"email": email})).await.status, 200);
    assert_eq!(app.enrich(&key, json!({"email": colleague})).await.status, 200);
    assert_eq!(app.enrich(&key, json!({"domain": "erased-co.com"})).await.status, 200);
    // The replica reads it from the cache: its memo holds the record now.
    assert_eq!(replica.enrich(&key, json!({"email": email})).await.json()["data"]["source"], "cached");
    // Stored answers about the subject: an idempotent call, a bulk call, a job.
    let single = uuid::Uuid::new_v4().to_string();
    assert_eq!(app.enrich_idem(&key, &single, json!({"email": email})).await.status, 200);
    let bulk_key = uuid::Uuid::new_v4().to_string();
    let bulk = |app: &TestApp| {
        app.client
            .post(url(app, "/v1/email/enrich/bulk"))
            .bearer_auth(&key)
            .header("Idempotency-Key", &bulk_key)
            .json(&json!({"items": [{"email": email}, {"domain": "acme.com"}]}))
    };
    let first = app.request(bulk(&app)).await.json();
    assert_eq!(first["data"]["results"][0]["status"], 200);
    let job = app
        .request(
            app.client.post(url(&app, "/v1/enrich/jobs")).bearer_auth(&key).json(&json!({"items": [{"email": email, "reference": "r1"}]})),
        )
        .await
        .json()["data"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while app.request(app.client.get(url(&app, &format!("/v1/enrich/jobs/{job}"))).bearer_auth(&key)).await.json()["data"]["status"]
        != "completed"
    {
        assert!(tokio::time::Instant::now() < deadline, "the job completes");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let rows = |needle: String| {
        let db = app.db.clone();
        async move {
            use sea_orm::ConnectionTrait;
            let sql = format!("SELECT cache_key FROM enrichment_cache WHERE cache_key LIKE '%{needle}%'");
            db.query_all(sea_orm::Statement::from_string(db.get_database_backend(), sql)).await.unwrap().len()
        }
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while rows(email.clone()).await == 0 || rows("erased-co.com".into()).await < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the cache rows were written");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let report = app.cli(&["privacy", "erase", "--email", &email.to_uppercase()]);
    assert_eq!((report["kind"].as_str(), report["already_suppressed"].as_bool()), (Some("email"), Some(false)), "{report}");
    assert_eq!(report["cache_rows_deleted"], 1, "{report}");
    assert_eq!((report["replays_redacted"].as_u64(), report["job_results_redacted"].as_u64()), (Some(2), Some(1)), "{report}");
    assert_eq!(rows(email.clone()).await, 0, "no cached record of the subject is left");
    let report = app.cli(&["privacy", "erase", "--domain", "erased-co.com"]);
    assert_eq!(report["cache_rows_deleted"], 2, "the domain's own row and its people's: {report}");
    assert_eq!(rows("erased-co.com".into()).await, 0);

    // The erasure waited out the servers' refresh bound: both answer no_match at once,
    // and ask no vendor.
    let asked = (app.vendor_calls().await, replica.vendor_calls().await);
    let balance = app.balance(&ws).await;
    for server in [&app, &replica] {
        for body in [json!({"email": email}), json!({"email": colleague}), json!({"domain": "erased-co.com"})] {
            let r = server.enrich(&key, body.clone()).await;
            assert_eq!((r.status, r.error_code().as_str()), (404, "no_match"), "{body}");
        }
    }
    assert_eq!(app.balance(&ws).await, balance, "never charged for an erased subject");
    assert_eq!((app.vendor_calls().await, replica.vendor_calls().await), asked, "no vendor asked about an erased subject");

    // The stored answers hold the subject's data no more; their charges stay.
    let charges = app.charges(&ws).await;
    let replay = app.enrich_idem(&key, &single, json!({"email": email})).await;
    assert_eq!((replay.status, replay.error_code().as_str()), (404, "no_match"), "a single call's replay");
    let replay = app.request(bulk(&app)).await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    let replay = replay.json();
    let statuses: Vec<u64> = replay["data"]["results"].as_array().unwrap().iter().map(|i| i["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [404, 200], "only the subject's item is redacted");
    assert_eq!(replay["data"]["summary"]["credits_charged"], first["data"]["summary"]["credits_charged"], "its charge stays");
    let results = app.request(app.client.get(url(&app, &format!("/v1/enrich/jobs/{job}/results"))).bearer_auth(&key)).await.json();
    let item = &results["data"]["results"][0];
    assert_eq!(
        (item["status"].as_u64(), item["error"]["code"].as_str(), item["reference"].as_str()),
        (Some(404), Some("no_match"), Some("r1"))
    );
    assert_eq!((app.charges(&ws).await, app.balance(&ws).await), (charges, balance), "replays charge nothing");
    assert_eq!(rows(email.clone()).await, 0, "and nothing was cached again");

    let again = app.cli(&["privacy", "erase", "--email", &email]);
    assert_eq!((again["already_suppressed"].as_bool(), again["cache_rows_deleted"].as_u64()), (Some(true), Some(0)));
}

/// Erasure reaches every stored input about the subject, however it was spelt (case,
/// Unicode, punycode) and whatever its item's state: queued, held by a worker (its lease
/// is taken away), cancelled. An erased item still to run is answered `no_match`, free,
/// without a lookup.
async fn erasure_reaches_every_spelling_and_state(backend: Backend) {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
    let app = spawn_app_with(backend, |s| {
        s.privacy.refresh_ms = 100;
        s.jobs.workers = false;
        s.jobs.poll_ms = 50;
    })
    .await;
    let (ws, key) = app.funded(100).await;
    let submit = |items: serde_json::Value| {
        let app = &app;
        let key = &key;
        async move {
            let r = app.request(app.client.post(url(app, "/v1/enrich/jobs")).bearer_auth(key).json(&json!({"items": items}))).await;
            assert_eq!(r.status, 202);
            r.json()["data"]["id"].as_str().unwrap().to_string()
        }
    };
    let queued = submit(json!([{"email": "Jane@Bücher.de"}, {"email": "ANNA@MÜLLER.DE"}, {"email": "jane@acme.com"}, {"domain": "https://www.xn--mller-kva.de/x"}])).await;
    let cancelled = submit(json!([{"email": "jane@xn--bcher-kva.de"}])).await;
    let r = app.request(app.client.post(url(&app, &format!("/v1/enrich/jobs/{cancelled}/cancel"))).bearer_auth(&key)).await;
    assert_eq!(r.status, 200);
    // A worker holds the second item, as if its lookup were in flight.
    entity::enrichment_job_item::Entity::update_many()
        .col_expr(entity::enrichment_job_item::Column::LeaseOwner, sea_orm::sea_query::Expr::value("some-worker"))
        .col_expr(entity::enrichment_job_item::Column::LeaseUntil, sea_orm::sea_query::Expr::value(leadlex::now_ms() + 600_000))
        .filter(entity::enrichment_job_item::Column::JobId.eq(queued.as_str()))
        .filter(entity::enrichment_job_item::Column::Idx.eq(1))
        .exec(&app.db)
        .await
        .unwrap();

    app.cli(&["privacy", "erase", "--email", "jane@bücher.de"]);
    let report = app.cli(&["privacy", "erase", "--domain", "müller.de"]);
    assert_eq!(report["job_results_redacted"], 2, "{report}");
    let items = entity::enrichment_job_item::Entity::find()
        .order_by_asc(entity::enrichment_job_item::Column::JobId)
        .order_by_asc(entity::enrichment_job_item::Column::Idx)
        .all(&app.db)
        .await
        .unwrap();
    let stored: Vec<(Option<String>, Option<String>)> = items.iter().map(|i| (i.email.clone(), i.domain.clone())).collect();
    assert_eq!(stored, [(None, None), (None, None), (Some("jane@acme.com".into()), None), (None, None), (None, None)], "{items:?}");
    assert!(items[1].lease_owner.is_none(), "the held item lost its lease");

    // A worker now: the erased items are no-matches, free, and nobody looks them up.
    let worker = app.replica_with(|s| s.jobs.workers = true).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let job = loop {
        let job =
            app.request(app.client.get(url(&app, &format!("/v1/enrich/jobs/{queued}"))).bearer_auth(&key)).await.json()["data"].clone();
        if job["status"] == "completed" {
            break job;
        }
        assert!(tokio::time::Instant::now() < deadline, "{job}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(
        (job["succeeded"].as_i64(), job["no_match"].as_i64(), job["credits_charged"].as_i64()),
        (Some(1), Some(3), Some(1)),
        "{job}"
    );
    assert_eq!(worker.vendor_calls().await, 1, "only jane@acme.com was looked up");
    assert_eq!(app.assert_books_balance(&ws).await, 99);
}

crate::on_both_backends!(
    erasure_reaches_every_spelling_and_state,
    a_workspace_list_is_honoured_by_its_calls_bulk_items_and_jobs,
    every_suppression_operation_refuses_what_it_should,
    an_erased_subject_is_gone_everywhere,
);
