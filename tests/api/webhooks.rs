//! Signed webhooks as a customer's receiver sees them: a real local HTTP server gets each
//! event, signed with the webhook's secret, in the published payload shape; a receiver
//! that fails gets the same delivery again; a retry survives a SIGKILL; two replicas
//! never both make one attempt; internal addresses are refused; every declared status of
//! the nine operations.

use std::{sync::Arc, time::Duration};

use hmac::{Hmac, Mac};
use leadlex::{auth::Permission, ratelimit::Plan};
use serde_json::{json, Value};
use sha2::Sha256;
use wiremock::{matchers::method, Mock, MockServer, Request, ResponseTemplate};

use crate::helpers::{spawn_app_with, Backend, Resp, TestApp};

fn url(app: &TestApp, path: &str) -> String {
    format!("{}{path}", app.base)
}

/// A test server that delivers to loopback receivers at once and retries within
/// milliseconds.
async fn app_for_webhooks(backend: Backend) -> TestApp {
    spawn_app_with(backend, |s| {
        s.webhooks.allow_loopback = true;
        s.webhooks.poll_ms = 50;
        s.webhooks.retry_schedule_ms = vec![200, 200, 200];
        s.webhooks.jitter = 0.0;
        s.jobs.poll_ms = 50;
    })
    .await
}

/// A receiver answering `status` to everything.
async fn receiver(status: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(status)).mount(&server).await;
    server
}

async fn create(app: &TestApp, key: &str, body: Value) -> Resp {
    app.request(app.client.post(url(app, "/v1/webhooks")).bearer_auth(key).json(&body)).await
}

/// Creates a webhook to `receiver` for `events`; its id and secret.
async fn hook(app: &TestApp, key: &str, receiver: &MockServer, events: &[&str], threshold: Option<i64>) -> (String, String) {
    let mut body = json!({"url": format!("{}/hook", receiver.uri()), "events": events});
    if let Some(t) = threshold {
        body["low_balance_threshold"] = t.into();
    }
    let r = create(app, key, body).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.bytes));
    let data = r.json()["data"].clone();
    (data["id"].as_str().unwrap().to_string(), data["secret"].as_str().unwrap().to_string())
}

/// Waits until the receiver got `n` requests; returns them.
async fn received(receiver: &MockServer, n: usize) -> Vec<Request> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = receiver.received_requests().await.unwrap_or_default();
        if got.len() >= n {
            return got;
        }
        assert!(tokio::time::Instant::now() < deadline, "the receiver got {} of {n} requests", got.len());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn header<'a>(r: &'a Request, name: &str) -> &'a str {
    r.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("{name} is sent"))
}

/// What a receiver does: HMAC-SHA256 of the raw body with the secret, compared in
/// constant time.
fn verifies(r: &Request, secret: &str) -> bool {
    let given = header(r, "x-leadlex-signature").strip_prefix("sha256=").expect("sha256=");
    let Ok(given) = (0..given.len()).step_by(2).map(|i| u8::from_str_radix(&given[i..i + 2], 16)).collect::<Result<Vec<u8>, _>>() else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&r.body);
    mac.verify_slice(&given).is_ok()
}

fn payload(r: &Request) -> Value {
    serde_json::from_slice(&r.body).expect("a JSON body")
}

/// The payload is an instance of the spec's component for its event.
fn assert_published_shape(p: &Value) {
    let event = p["event"].as_str().unwrap();
    let (_, component) = leadlex::api::webhooks::PAYLOAD_SCHEMAS.iter().find(|(e, _)| *e == event).expect("a published event");
    let errors = crate::spec_check::component_errors(component, p);
    assert!(errors.is_empty(), "{event} payload breaks {component}: {errors:?}\n{p}");
}

async fn wait_for_job(app: &TestApp, key: &str, id: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let job = app.request(app.client.get(url(app, &format!("/v1/enrich/jobs/{id}"))).bearer_auth(key)).await.json();
        if job["data"]["status"] == status {
            return job["data"].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "the job is {status}: {job}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Every event reaches the receiver, signed with the secret, with the documented headers
/// and the published payload; a job's and a key's `data` are what the API shows of them.
async fn every_event_reaches_a_receiver_signed(backend: Backend) {
    let app = app_for_webhooks(backend).await;
    let ws = app.workspace(Plan::Pro, 3).await;
    let admin = app.key(&ws, &[Permission::AdminWebhooks, Permission::AdminApiKeys, Permission::WriteEnrich], None).await.key;
    let hooks = receiver(204).await;
    let all = ["enrichment.job.completed", "enrichment.job.cancelled", "api_key.created", "api_key.revoked", "credits.low"];
    let (id, secret) = hook(&app, &admin, &hooks, &all, Some(2)).await;
    assert!(secret.starts_with("whsec_"));
    // Another workspace's webhook hears nothing of this one's events.
    let other_ws_admin = app.key(&app.workspace(Plan::Pro, 0).await, &[Permission::AdminWebhooks], None).await.key;
    let bystander = receiver(200).await;
    hook(&app, &other_ws_admin, &bystander, &all, None).await;

    // api_key.created, api_key.revoked.
    let r = app
        .request(
            app.client.post(url(&app, "/v1/api-keys")).bearer_auth(&admin).json(&json!({"name": "ci", "permissions": ["write:enrich"]})),
        )
        .await;
    assert_eq!(r.status, 201);
    let key_id = r.json()["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(app.request(app.client.delete(url(&app, &format!("/v1/api-keys/{key_id}"))).bearer_auth(&admin)).await.status, 204);
    // credits.low: 3 → 2 is not below 2; 2 → 1 is, once; 1 → 0 is not a crossing.
    let job = app
        .request(
            app.client
                .post(url(&app, "/v1/enrich/jobs"))
                .bearer_auth(&admin)
                .json(&json!({"items": [{"domain": crate::helpers::sandbox_input("acme{i}.com", |a, b| a || b)}]})),
        )
        .await
        .json()["data"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let done = wait_for_job(&app, &admin, &job, "completed").await;
    for template in ["globex{i}.com", "initech{i}.com"] {
        let domain = crate::helpers::sandbox_input(template, |a, b| a || b);
        assert_eq!(app.enrich(&admin, json!({"domain": domain})).await.status, 200);
    }
    assert_eq!(app.balance(&ws).await, 0);

    received(&hooks, 4).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_all = hooks.received_requests().await.unwrap();
    assert_eq!(got_all.len(), 4, "the four events, each once");
    let by_event = |name: &str| -> Vec<&Request> { got_all.iter().filter(|r| payload(r)["event"] == name).collect() };
    for r in &got_all {
        assert!(verifies(r, &secret), "the signature verifies with the secret");
        assert!(!verifies(r, "whsec_other"), "and with no other");
        assert_eq!(header(r, "user-agent"), "LeadLex-Webhook/1.0");
        assert_eq!(header(r, "content-type"), "application/json");
        assert!(uuid::Uuid::parse_str(header(r, "x-leadlex-delivery-id")).is_ok());
        let at: i64 = header(r, "x-leadlex-timestamp").parse().unwrap();
        assert!((at - chrono::Utc::now().timestamp()).abs() < 60, "unix seconds of the attempt");
        assert!(r.headers.get("authorization").is_none(), "none of our credentials");
        let p = payload(r);
        assert_published_shape(&p);
        assert_eq!(p["workspace_id"], ws.as_str());
        assert!(p["id"].as_str().unwrap().starts_with("evt_"));
    }
    let created = by_event("api_key.created");
    let keys_now =
        app.request(app.client.get(url(&app, "/v1/api-keys?include_revoked=true&per_page=100")).bearer_auth(&admin)).await.json();
    let listed = keys_now["data"]["api_keys"].as_array().unwrap().iter().find(|k| k["id"] == key_id.as_str()).unwrap().clone();
    assert_eq!(created.len(), 1);
    let mut as_created = listed.clone();
    as_created["revoked_at"] = Value::Null;
    assert_eq!(payload(created[0])["data"], as_created, "the key as the API lists it, before its revocation");
    assert_eq!(payload(by_event("api_key.revoked")[0])["data"], listed, "the key as the API lists it now");
    assert_eq!(payload(by_event("enrichment.job.completed")[0])["data"], done, "the job as the API shows it");
    let low = by_event("credits.low");
    assert_eq!(low.len(), 1, "one crossing, one event");
    assert_eq!(payload(low[0])["data"], json!({"credits_remaining": 1, "low_balance_threshold": 2}));
    assert!(bystander.received_requests().await.unwrap().is_empty(), "another workspace hears nothing");

    // The webhook says how its last delivery went; the deliveries list has them all.
    let w = app.request(app.client.get(url(&app, &format!("/v1/webhooks/{id}"))).bearer_auth(&admin)).await.json();
    assert_eq!(w["data"]["last_delivery_status"], "succeeded");
    assert!(w["data"].get("secret").is_none(), "the secret is shown once");
    let list = app.request(app.client.get(url(&app, &format!("/v1/webhooks/{id}/deliveries"))).bearer_auth(&admin)).await.json();
    let deliveries = list["data"]["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 4);
    assert!(deliveries.iter().all(|d| d["status"] == "succeeded" && d["attempt"] == 1 && d["status_code"] == 204));
    let ids: std::collections::BTreeSet<&str> = got_all.iter().map(|r| header(r, "x-leadlex-delivery-id")).collect();
    assert!(deliveries.iter().all(|d| ids.contains(d["id"].as_str().unwrap())), "the list's ids are the headers'");

    // A top-up above the threshold re-arms it: the next crossing is an event again.
    app.settler.grant(&ws, 2).await.unwrap();
    let domain = crate::helpers::sandbox_input("hooli{i}.com", |a, b| a || b);
    assert_eq!(app.enrich(&admin, json!({"domain": domain})).await.status, 200);
    let again = received(&hooks, 5).await;
    assert_eq!(payload(&again[4])["data"], json!({"credits_remaining": 1, "low_balance_threshold": 2}));
}

/// `enrichment.job.cancelled` carries the job as cancelling it answered.
async fn a_cancelled_job_is_an_event(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.webhooks.allow_loopback = true;
        s.webhooks.poll_ms = 50;
        s.jobs.workers = false; // the job stays queued until it is cancelled
    })
    .await;
    let ws = app.workspace(Plan::Pro, 10).await;
    let key = app.key(&ws, &[Permission::AdminWebhooks, Permission::WriteEnrich], None).await.key;
    let hooks = receiver(200).await;
    let (_, secret) = hook(&app, &key, &hooks, &["enrichment.job.cancelled"], None).await;
    let job = app
        .request(app.client.post(url(&app, "/v1/enrich/jobs")).bearer_auth(&key).json(&json!({"items": [{"domain": "acme.com"}]})))
        .await
        .json()["data"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let cancel = |app: &TestApp| app.client.post(url(app, &format!("/v1/enrich/jobs/{job}/cancel"))).bearer_auth(&key);
    let cancelled = app.request(cancel(&app)).await.json()["data"].clone();
    assert_eq!(cancelled["status"], "cancelled");
    // Cancelling again changes nothing, and says nothing more.
    assert_eq!(app.request(cancel(&app)).await.status, 200);
    let got = received(&hooks, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hooks.received_requests().await.unwrap().len(), 1);
    assert!(verifies(&got[0], &secret));
    let p = payload(&got[0]);
    assert_published_shape(&p);
    assert_eq!((p["event"].as_str(), &p["data"]), (Some("enrichment.job.cancelled"), &cancelled));
}

/// A receiver that answers 500 and then 200 gets the event twice, with the same delivery
/// id and body; the deliveries list shows both attempts; a redelivery is a third, and a
/// rotated secret signs it.
async fn a_failed_attempt_is_retried_with_the_same_delivery_id(backend: Backend) {
    let app = app_for_webhooks(backend).await;
    let ws = app.workspace(Plan::Pro, 0).await;
    let key = app.key(&ws, &[Permission::AdminWebhooks], None).await.key;
    let hooks = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(500)).up_to_n_times(1).with_priority(1).mount(&hooks).await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).with_priority(2).mount(&hooks).await;
    let (id, secret) = hook(&app, &key, &hooks, &["credits.low"], None).await;

    let ping = app.request(app.client.post(url(&app, &format!("/v1/webhooks/{id}/test"))).bearer_auth(&key)).await;
    assert_eq!(ping.status, 200);
    let first = ping.json()["data"].clone();
    assert_eq!((first["event"].as_str(), first["status"].as_str(), first["attempt"].as_i64()), (Some("ping"), Some("pending"), Some(1)));
    assert_eq!(first["status_code"], 500);
    assert!(first["error"].as_str().unwrap().contains("500"), "{first}");
    assert!(first["next_retry_at"].is_string());

    let got = received(&hooks, 2).await;
    assert_eq!(header(&got[0], "x-leadlex-delivery-id"), header(&got[1], "x-leadlex-delivery-id"));
    assert_eq!(header(&got[0], "x-leadlex-delivery-id"), first["id"].as_str().unwrap());
    assert_eq!(got[0].body, got[1].body, "the same payload");
    assert!(got.iter().all(|r| verifies(r, &secret)));
    let p = payload(&got[0]);
    assert_published_shape(&p);
    assert_eq!(p["data"], json!({"webhook_id": id}));

    let deliveries = |app: &TestApp| app.client.get(url(app, &format!("/v1/webhooks/{id}/deliveries"))).bearer_auth(&key);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let d = app.request(deliveries(&app)).await.json()["data"]["deliveries"][0].clone();
        if d["status"] == "succeeded" {
            break d;
        }
        assert!(tokio::time::Instant::now() < deadline, "the retry is recorded: {d}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!((listed["attempt"].as_i64(), listed["status_code"].as_i64()), (Some(2), Some(200)));
    assert!(listed["error"].is_null() && listed["next_retry_at"].is_null());
    // Operators see the attempts in the metrics.
    let metrics = app.client.get(url(&app, "/metrics")).send().await.unwrap().text().await.unwrap();
    let attempts = |outcome: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("leadlex_webhook_attempts_total{{outcome=\"{outcome}\"}}")))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
    };
    assert_eq!((attempts("failed"), attempts("succeeded")), (Some(1), Some(1)), "{metrics}");

    // Rotate, then redeliver: the third attempt, same id, signed with the new secret.
    let rotated = app.request(app.client.post(url(&app, &format!("/v1/webhooks/{id}/rotate-secret"))).bearer_auth(&key)).await;
    assert_eq!(rotated.status, 200);
    let new_secret = rotated.json()["data"]["secret"].as_str().unwrap().to_string();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    let again = app
        .request(
            app.client
                .post(url(&app, &format!("/v1/webhooks/{id}/deliveries/{}/redeliver", first["id"].as_str().unwrap())))
                .bearer_auth(&key),
        )
        .await;
    assert_eq!(again.status, 202);
    assert_eq!(again.json()["data"]["status"], "pending");
    let got = received(&hooks, 3).await;
    assert_eq!(header(&got[2], "x-leadlex-delivery-id"), first["id"].as_str().unwrap());
    assert!(verifies(&got[2], &new_secret) && !verifies(&got[2], &secret), "the rotated secret signs it");
    assert_eq!(got[2].body, got[0].body);
}

/// A URL whose host is loopback, private or cloud metadata is refused at delivery, with
/// the reason in the deliveries list, unless the configuration allows loopback (and then
/// only loopback); `http://` is refused at creation unless it does.
async fn internal_addresses_are_refused(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.webhooks.poll_ms = 50;
        s.webhooks.retry_schedule_ms = vec![];
    })
    .await;
    let ws = app.workspace(Plan::Pro, 0).await;
    let key = app.key(&ws, &[Permission::AdminWebhooks], None).await.key;
    let hooks = receiver(200).await;
    let port = hooks.address().port();
    let r = create(&app, &key, json!({"url": format!("http://127.0.0.1:{port}/hook"), "events": ["credits.low"]})).await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "validation_error"), "http:// is refused");
    for target in [
        format!("https://127.0.0.1:{port}/hook"),
        format!("https://localhost:{port}/hook"),
        "https://169.254.169.254/latest/meta-data".to_string(),
        "https://10.0.0.1/hook".to_string(),
    ] {
        let r = create(&app, &key, json!({"url": target, "events": ["credits.low"]})).await;
        assert_eq!(r.status, 201, "{target} is a well-formed https URL");
        let id = r.json()["data"]["id"].as_str().unwrap().to_string();
        let ping = app.request(app.client.post(url(&app, &format!("/v1/webhooks/{id}/test"))).bearer_auth(&key)).await.json();
        let d = &ping["data"];
        assert_eq!(d["status"], "failed", "{target}: no retries configured");
        assert!(d["status_code"].is_null());
        let error = d["error"].as_str().unwrap();
        assert!(error.contains("refused address"), "{target}: {error}");
        // What a name resolved to is not told (it would map the server's network).
        assert!(!error.contains("127.0.0.1") || target.contains("127.0.0.1"), "{target}: {error}");
        let listed = app.request(app.client.get(url(&app, &format!("/v1/webhooks/{id}/deliveries"))).bearer_auth(&key)).await.json();
        assert_eq!(listed["data"]["deliveries"][0]["error"], error, "visible in the deliveries list");
    }
    assert!(hooks.received_requests().await.unwrap().is_empty(), "nothing reached the loopback receiver");

    // Allowed: loopback over http, and over https resolution; never metadata.
    let dev = app_for_webhooks(backend).await;
    let ws = dev.workspace(Plan::Pro, 0).await;
    let key = dev.key(&ws, &[Permission::AdminWebhooks], None).await.key;
    let (id, _) = hook(&dev, &key, &hooks, &["credits.low"], None).await;
    let ping = dev.request(dev.client.post(url(&dev, &format!("/v1/webhooks/{id}/test"))).bearer_auth(&key)).await.json();
    assert_eq!(ping["data"]["status"], "succeeded");
    let r = create(&dev, &key, json!({"url": "https://169.254.169.254/latest/meta-data", "events": ["credits.low"]})).await;
    let id = r.json()["data"]["id"].as_str().unwrap().to_string();
    let ping = dev.request(dev.client.post(url(&dev, &format!("/v1/webhooks/{id}/test"))).bearer_auth(&key)).await.json();
    assert!(ping["data"]["error"].as_str().unwrap().contains("refused address"), "metadata stays refused: {ping}");
}

/// A webhook whose attempts keep failing for `disable_after_ms` is turned off with the
/// reason, its pending deliveries wait; `PATCH {"active": true}` turns it on again.
async fn a_webhook_failing_for_too_long_is_turned_off(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.webhooks.allow_loopback = true;
        s.webhooks.poll_ms = 50;
        s.webhooks.retry_schedule_ms = vec![150; 20];
        s.webhooks.jitter = 0.0;
        s.webhooks.disable_after_ms = 500;
    })
    .await;
    let ws = app.workspace(Plan::Pro, 0).await;
    let key = app.key(&ws, &[Permission::AdminWebhooks], None).await.key;
    let hooks = receiver(503).await;
    let (id, _) = hook(&app, &key, &hooks, &["credits.low"], None).await;
    assert_eq!(app.request(app.client.post(url(&app, &format!("/v1/webhooks/{id}/test"))).bearer_auth(&key)).await.status, 200);
    let get = |app: &TestApp| app.client.get(url(app, &format!("/v1/webhooks/{id}"))).bearer_auth(&key);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let off = loop {
        let w = app.request(get(&app)).await.json()["data"].clone();
        if w["active"] == false {
            break w;
        }
        assert!(tokio::time::Instant::now() < deadline, "turned off: {w}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let reason = off["disabled_reason"].as_str().unwrap();
    assert!(reason.contains("503"), "{reason}");
    assert_eq!(off["last_delivery_status"], "failed");
    let attempts = hooks.received_requests().await.unwrap().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hooks.received_requests().await.unwrap().len(), attempts, "an inactive webhook gets nothing");
    let d = app.request(app.client.get(url(&app, &format!("/v1/webhooks/{id}/deliveries"))).bearer_auth(&key)).await.json();
    assert_eq!(d["data"]["deliveries"][0]["status"], "pending", "the delivery waits");

    let on = app.request(app.client.patch(url(&app, &format!("/v1/webhooks/{id}"))).bearer_auth(&key).json(&json!({"active": true}))).await;
    assert_eq!(on.status, 200);
    assert_eq!((on.json()["data"]["active"].as_bool(), on.json()["data"]["disabled_reason"].clone()), (Some(true), Value::Null));
    received(&hooks, attempts + 1).await;
}

/// The background purge deletes finished deliveries past `[webhooks] retention_days` and
/// any delivery whose webhook is gone; a pending one stays.
async fn finished_deliveries_are_purged_after_their_retention(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.webhooks.allow_loopback = true;
        s.webhooks.retry_schedule_ms = vec![3_600_000];
        s.webhooks.retention_days = 0;
        s.idempotency.purge_interval_secs = 1;
    })
    .await;
    let ws = app.workspace(Plan::Pro, 0).await;
    let key = app.key(&ws, &[Permission::AdminWebhooks], None).await.key;
    let (ok, failing) = (receiver(200).await, receiver(500).await);
    let (done_hook, _) = hook(&app, &key, &ok, &["credits.low"], None).await;
    let (waiting_hook, _) = hook(&app, &key, &failing, &["credits.low"], None).await;
    for id in [&done_hook, &waiting_hook] {
        assert_eq!(app.request(app.client.post(url(&app, &format!("/v1/webhooks/{id}/test"))).bearer_auth(&key)).await.status, 200);
    }
    use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
    let orphan = entity::webhook_delivery::ActiveModel {
        id: Set(uuid::Uuid::new_v4().to_string()),
        webhook_id: Set("wh_gone".into()),
        workspace_id: Set(ws.clone()),
        event_id: Set("evt_gone".into()),
        event: Set("credits.low".into()),
        data: Set("{}".into()),
        created_at: Set(leadlex::now_ms()),
        state: Set("pending".into()),
        attempts: Set(0),
        round_attempts: Set(0),
        next_attempt_at: Set(Some(leadlex::now_ms())),
        lease_owner: Set(None),
        lease_until: Set(None),
        status_code: Set(None),
        latency_ms: Set(None),
        error: Set(None),
        last_attempt_at: Set(None),
    };
    entity::webhook_delivery::Entity::insert(orphan).exec_without_returning(&app.db).await.unwrap();
    let listed = |id: String| {
        let app = &app;
        let key = key.clone();
        async move {
            let page = app.request(app.client.get(url(app, &format!("/v1/webhooks/{id}/deliveries"))).bearer_auth(&key)).await.json();
            page["data"]["deliveries"].as_array().unwrap().iter().map(|d| d["status"].as_str().unwrap().to_string()).collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(done_hook.clone()).await, ["succeeded"]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !listed(done_hook.clone()).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the finished delivery is purged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(listed(waiting_hook.clone()).await, ["pending"], "a pending delivery stays");
    let orphans = entity::webhook_delivery::Entity::find()
        .filter(entity::webhook_delivery::Column::WebhookId.eq("wh_gone"))
        .all(&app.db)
        .await
        .unwrap();
    assert!(orphans.is_empty(), "a delivery of a deleted webhook is purged");
}

/// SIGKILL the server while a delivery waits for its retry, start it again: the retry is
/// made, once, with the same delivery id.
async fn a_retry_survives_a_killed_server(backend: Backend) {
    use crate::replicas::Replica;
    let store = crate::helpers::ProcessStore::new(backend).await;
    let (db, database_url) = (store.db.clone(), store.url.clone());
    let (_, key) = store.funded(Plan::Pro, 0, &[Permission::AdminWebhooks]).await;
    let config = store.config(
        "[webhooks]\nallow_loopback = true\npoll_ms = 50\nretry_schedule_ms = [2000]\njitter = 0.0\ntimeout_ms = 2000\nlease_ms = 3000\n",
    );
    let hooks = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(500)).up_to_n_times(1).with_priority(1).mount(&hooks).await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).with_priority(2).mount(&hooks).await;

    let mut server = Replica::start(&database_url, &config).await;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/v1/webhooks", server.base))
        .bearer_auth(&key)
        .json(&json!({"url": format!("{}/hook", hooks.uri()), "events": ["credits.low"]}))
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["data"]["id"].as_str().unwrap().to_string();
    let ping: Value =
        client.post(format!("{}/v1/webhooks/{id}/test", server.base)).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert_eq!(ping["data"]["status"], "pending", "{ping}");
    server.signal("-KILL");
    let _ = server.child.wait().await;
    assert_eq!(hooks.received_requests().await.unwrap().len(), 1, "killed during the retry wait");
    let _server = Replica::start(&database_url, &config).await;
    let got = received(&hooks, 2).await;
    assert_eq!(header(&got[0], "x-leadlex-delivery-id"), header(&got[1], "x-leadlex-delivery-id"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(hooks.received_requests().await.unwrap().len(), 2, "delivered once more, not twice");
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let found = entity::webhook_delivery::Entity::find()
        .filter(entity::webhook_delivery::Column::WebhookId.eq(id.as_str()))
        .all(&db)
        .await
        .unwrap();
    assert_eq!((found.len(), found[0].state.as_str(), found[0].attempts), (1, "succeeded", 2));

    // Killed in the middle of an attempt (the receiver is slow to answer): after the
    // lease, the restarted server makes the attempt again (at least once), same id.
    let slow = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&slow)
        .await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).with_priority(2).mount(&slow).await;
    let r = client
        .post(format!("{}/v1/webhooks", _server.base))
        .bearer_auth(&key)
        .json(&json!({"url": format!("{}/hook", slow.uri()), "events": ["credits.low"]}))
        .send()
        .await
        .unwrap();
    let slow_id = r.json::<Value>().await.unwrap()["data"]["id"].as_str().unwrap().to_string();
    let ping = client.post(format!("{}/v1/webhooks/{slow_id}/test", _server.base)).bearer_auth(&key).send();
    let pinging = tokio::spawn(ping);
    received(&slow, 1).await;
    let mut server = _server;
    server.signal("-KILL");
    let _ = server.child.wait().await;
    assert!(pinging.await.unwrap().is_err(), "the server died mid-attempt");
    let _server = Replica::start(&database_url, &config).await;
    let got = received(&slow, 2).await;
    assert_eq!(header(&got[0], "x-leadlex-delivery-id"), header(&got[1], "x-leadlex-delivery-id"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let d = entity::webhook_delivery::Entity::find()
            .filter(entity::webhook_delivery::Column::WebhookId.eq(slow_id.as_str()))
            .one(&db)
            .await
            .unwrap()
            .unwrap();
        if d.state == "succeeded" {
            assert_eq!(d.attempts, 1, "the killed attempt was never recorded");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "recorded: {d:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(_server);
}

/// Two replicas deliver from one database: every delivery reaches the receiver once, and
/// each attempt was made by one of them.
async fn two_replicas_never_both_make_one_attempt(backend: Backend) {
    let app = app_for_webhooks(backend).await;
    let replica = app.replica().await;
    let ws = app.workspace(Plan::Pro, 0).await;
    let admin = app.key(&ws, &Permission::ALL, None).await.key;
    let hooks = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(50))).mount(&hooks).await;
    hook(&app, &admin, &hooks, &["api_key.created"], None).await;
    let n = 30;
    let creations = (0..n).map(|i| {
        let server = if i % 2 == 0 { &app } else { &replica };
        server.request(
            server
                .client
                .post(url(server, "/v1/api-keys"))
                .bearer_auth(&admin)
                .json(&json!({"name": format!("k{i}"), "permissions": ["write:enrich"]})),
        )
    });
    assert!(futures::future::join_all(creations).await.iter().all(|r| r.status == 201));
    received(&hooks, n).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let got_all = hooks.received_requests().await.unwrap();
    let ids: std::collections::BTreeSet<&str> = got_all.iter().map(|r| header(r, "x-leadlex-delivery-id")).collect();
    assert_eq!((got_all.len(), ids.len()), (n, n), "each delivery once");
}

/// Every declared status of every webhook operation.
async fn every_webhook_operation_refuses_what_it_should(backend: Backend) {
    let app = app_for_webhooks(backend).await;
    let ws = app.workspace(Plan::Pro, 0).await;
    let key = app.key(&ws, &[Permission::AdminWebhooks], None).await.key;
    let enrich_only = app.key(&ws, &[Permission::WriteEnrich], None).await.key;
    let stranger = app.key(&app.workspace(Plan::Pro, 0).await, &[Permission::AdminWebhooks], None).await.key;
    let hooks = receiver(200).await;

    // The request example creates what the response example shows.
    let spec: Value = serde_json::from_str(leadlex::api::spec::openapi_json_text()).unwrap();
    let media = "application/json; charset=utf-8";
    let example = spec["paths"]["/v1/webhooks"]["post"]["requestBody"]["content"][media]["examples"]["crm_sync"]["value"].clone();
    let r = create(&app, &key, example).await;
    assert_eq!(r.status, 201);
    let example_id = r.json()["data"]["id"].as_str().unwrap().to_string();
    let (id, _) = hook(&app, &key, &hooks, &["credits.low"], None).await;

    // Lists page with a cursor.
    let page = app.request(app.client.get(url(&app, "/v1/webhooks?limit=1")).bearer_auth(&key)).await.json();
    assert_eq!(page["data"]["webhooks"][0]["id"], example_id.as_str());
    let cursor = page["meta"]["next_cursor"].as_str().unwrap().to_string();
    let page =
        app.request(app.client.get(url(&app, &format!("/v1/webhooks?limit=1&starting_after={cursor}"))).bearer_auth(&key)).await.json();
    assert_eq!((page["data"]["webhooks"][0]["id"].as_str(), page["meta"]["next_cursor"].clone()), (Some(id.as_str()), Value::Null));

    // PATCH changes what it names.
    let patched = app
        .request(app.client.patch(url(&app, &format!("/v1/webhooks/{id}"))).bearer_auth(&key).json(&json!({
            "events": ["api_key.created", "credits.low"], "description": "ops", "low_balance_threshold": 50
        })))
        .await;
    assert_eq!(patched.status, 200);
    let w = patched.json()["data"].clone();
    assert_eq!(
        (w["events"].clone(), w["description"].clone(), w["low_balance_threshold"].clone()),
        (json!(["api_key.created", "credits.low"]), json!("ops"), json!(50))
    );
    let cleared =
        app.request(app.client.patch(url(&app, &format!("/v1/webhooks/{id}"))).bearer_auth(&key).json(&json!({"description": ""}))).await;
    assert_eq!(cleared.json()["data"]["description"], Value::Null);

    // 400s.
    for body in [
        json!({"url": "ftp://x.com", "events": ["credits.low"]}),
        json!({"url": "https://x.com", "events": []}),
        json!({"url": "https://x.com", "events": ["ping"]}),
        json!({"url": "https://x.com", "events": ["credits.low"], "low_balance_threshold": 0}),
        json!({"url": "https://x.com"}),
    ] {
        let r = create(&app, &key, body.clone()).await;
        assert_eq!((r.status, r.error_code().as_str()), (400, "validation_error"), "{body}");
        assert!(r.json()["error"]["details"][0]["field"].is_string(), "details name the field: {}", r.json());
    }
    let ping = create(&app, &key, json!({"url": "https://x.com", "events": ["ping"]})).await.json();
    assert_eq!(ping["error"]["details"][0]["field"], "events", "{ping}");
    assert!(!ping.to_string().contains("WebhookEventName"), "{ping}");
    let r = app
        .request(app.client.patch(url(&app, &format!("/v1/webhooks/{id}"))).bearer_auth(&key).json(&json!({"url": "http://x.com"})))
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "validation_error"));
    let r = app.request(app.client.get(url(&app, "/v1/webhooks?limit=0")).bearer_auth(&key)).await;
    assert_eq!(r.status, 400);
    let r = app.request(app.client.get(url(&app, &format!("/v1/webhooks/{id}/deliveries?starting_after=nope"))).bearer_auth(&key)).await;
    assert_eq!(r.status, 400);
    // 413, 415.
    let huge = json!({"url": "https://x.com", "events": ["credits.low"], "description": "x".repeat(20_000)});
    for req in [app.client.post(url(&app, "/v1/webhooks")), app.client.patch(url(&app, &format!("/v1/webhooks/{id}")))] {
        let r = app.request(req.try_clone().unwrap().bearer_auth(&key).json(&huge)).await;
        assert_eq!((r.status, r.error_code().as_str()), (413, "payload_too_large"));
        let r = app.request(req.bearer_auth(&key).header("content-type", "text/plain").body("{}")).await;
        assert_eq!((r.status, r.error_code().as_str()), (415, "unsupported_media_type"));
    }
    // 404: another workspace's webhook, an unknown delivery.
    let nowhere = "00000000-0000-4000-8000-000000000000";
    for req in [
        app.client.get(url(&app, &format!("/v1/webhooks/{id}"))),
        app.client.patch(url(&app, &format!("/v1/webhooks/{id}"))).json(&json!({"active": false})),
        app.client.delete(url(&app, &format!("/v1/webhooks/{id}"))),
        app.client.post(url(&app, &format!("/v1/webhooks/{id}/rotate-secret"))),
        app.client.post(url(&app, &format!("/v1/webhooks/{id}/test"))),
        app.client.get(url(&app, &format!("/v1/webhooks/{id}/deliveries"))),
        app.client.post(url(&app, &format!("/v1/webhooks/{id}/deliveries/{nowhere}/redeliver"))),
    ] {
        let r = app.request(req.bearer_auth(&stranger)).await;
        assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
    }
    for req in [
        app.client.get(url(&app, &format!("/v1/webhooks/{id}/deliveries?starting_after={nowhere}"))),
        app.client.post(url(&app, &format!("/v1/webhooks/{id}/deliveries/{nowhere}/redeliver"))),
    ] {
        let r = app.request(req.bearer_auth(&key)).await;
        assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
    }

    let calls = || {
        [
            app.client.post(url(&app, "/v1/webhooks")).json(&json!({"url": "https://x.com", "events": ["credits.low"]})),
            app.client.get(url(&app, "/v1/webhooks")),
            app.client.get(url(&app, &format!("/v1/webhooks/{id}"))),
            app.client.patch(url(&app, &format!("/v1/webhooks/{id}"))).json(&json!({"active": true})),
            app.client.post(url(&app, &format!("/v1/webhooks/{id}/rotate-secret"))),
            app.client.post(url(&app, &format!("/v1/webhooks/{id}/test"))),
            app.client.get(url(&app, &format!("/v1/webhooks/{id}/deliveries"))),
            app.client.post(url(&app, &format!("/v1/webhooks/{id}/deliveries/{nowhere}/redeliver"))),
            app.client.delete(url(&app, &format!("/v1/webhooks/{id}"))),
        ]
    };
    app.assert_each(calls(), None, (401, "invalid_key")).await;
    app.assert_each(calls(), Some(&enrich_only), (403, "insufficient_permissions")).await;
    let slow = app.throttled_key(&[Permission::AdminWebhooks], "/v1/webhooks").await;
    app.assert_each(calls(), Some(&slow), (429, "rate_limited")).await;
    // DELETE: 204, then 404; its deliveries go with it.
    assert_eq!(app.request(app.client.post(url(&app, &format!("/v1/webhooks/{id}/test"))).bearer_auth(&key)).await.status, 200);
    assert_eq!(app.request(app.client.delete(url(&app, &format!("/v1/webhooks/{id}"))).bearer_auth(&key)).await.status, 204);
    let r = app.request(app.client.delete(url(&app, &format!("/v1/webhooks/{id}"))).bearer_auth(&key)).await;
    assert_eq!(r.status, 404);
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    let left = entity::webhook_delivery::Entity::find()
        .filter(entity::webhook_delivery::Column::WebhookId.eq(id.as_str()))
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(left, 0);

    // The store breaks: 500.
    use sea_orm::ConnectionTrait;
    app.db.execute_unprepared("DROP TABLE webhook_deliveries").await.unwrap();
    app.db.execute_unprepared("DROP TABLE webhooks").await.unwrap();
    app.assert_each(calls(), Some(&key), (500, "internal_error")).await;
}

/// A workspace has at most 20 webhooks in each mode, also when forty creations race: the
/// 21st is `422`, and test webhooks never take the live ones' room.
async fn a_workspace_has_at_most_twenty_webhooks(backend: Backend) {
    let app = app_for_webhooks(backend).await;
    let ws = app.workspace(leadlex::ratelimit::Plan::Unmetered, 10).await;
    let admin = app.key(&ws, &Permission::ALL, None).await.key;
    let body = || json!({"url": format!("{}/h", crate::helpers::dead_url()), "events": ["credits.low"]});
    let test = app.test_key(&admin, &["admin:webhooks"]).await;
    // Forty at once in test mode: twenty are created.
    let racing = futures::future::join_all((0..40).map(|_| create(&app, &test, body()))).await;
    assert_eq!(racing.iter().filter(|r| r.status == 201).count(), 20, "{:?}", racing.iter().map(|r| r.status).collect::<Vec<_>>());
    for r in racing.iter().filter(|r| r.status != 201) {
        assert_eq!((r.status, r.error_code().as_str()), (422, "invalid_request"));
        assert!(r.json()["error"]["message"].as_str().unwrap().contains("20"));
    }
    // The live mode has its own twenty.
    for n in 0..20 {
        assert_eq!(create(&app, &admin, body()).await.status, 201, "live webhook {n}");
    }
    let r = create(&app, &admin, body()).await;
    assert_eq!((r.status, r.error_code().as_str()), (422, "invalid_request"));
}

/// One tenant's endpoints that never answer do not hold up another tenant's delivery: a
/// worker makes at most `per_workspace` attempts at once for one workspace, and fills a
/// free slot without waiting for the slow ones.
async fn a_tenants_hanging_endpoints_do_not_hold_up_another(backend: Backend) {
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    let app = spawn_app_with(backend, |s| {
        s.webhooks.allow_loopback = true;
        s.webhooks.poll_ms = 50;
        s.webhooks.timeout_ms = 5_000;
        s.webhooks.batch = 8;
        s.webhooks.per_endpoint = 1;
        s.webhooks.per_workspace = 2;
        s.webhooks.jitter = 0.0;
        s.webhooks.retry_schedule_ms = vec![60_000];
    })
    .await;
    // An endpoint that takes every connection and never answers.
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging_url = format!("http://{}/hook", hanging.local_addr().unwrap());
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = hanging.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(conn);
        }
    });
    let noisy_ws = app.workspace(Plan::Pro, 0).await;
    let noisy = app.key(&noisy_ws, &Permission::ALL, None).await.key;
    for _ in 0..10 {
        let r = create(&app, &noisy, json!({"url": hanging_url, "events": ["api_key.created"]})).await;
        assert_eq!(r.status, 201);
    }
    let quiet_ws = app.workspace(Plan::Pro, 0).await;
    let quiet = app.key(&quiet_ws, &Permission::ALL, None).await.key;
    let fast = receiver(200).await;
    hook(&app, &quiet, &fast, &["api_key.created"], None).await;

    // Ten events for the noisy tenant's hanging endpoints first, then one for the quiet one.
    let new_key = |key: String| {
        let app = &app;
        async move {
            let r = app
                .request(
                    app.client.post(url(app, "/v1/api-keys")).bearer_auth(&key).json(&json!({"name": "k", "permissions": ["read:usage"]})),
                )
                .await;
            assert_eq!(r.status, 201);
        }
    };
    new_key(noisy.clone()).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    new_key(quiet.clone()).await;

    received(&fast, 1).await;
    // Delivered while the noisy tenant's attempts still hang: none of them has ended.
    let ended = entity::webhook_delivery::Entity::find()
        .filter(entity::webhook_delivery::Column::WorkspaceId.eq(noisy_ws.as_str()))
        .filter(entity::webhook_delivery::Column::Attempts.gt(0))
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(ended, 0, "the quiet tenant's delivery waited for a hanging attempt to time out");
    let hanging_now = accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert!((1..=2).contains(&hanging_now), "the noisy tenant had {hanging_now} attempts at once (its share is 2)");
    holder.abort();
}

crate::on_both_backends!(
    a_tenants_hanging_endpoints_do_not_hold_up_another,
    a_workspace_has_at_most_twenty_webhooks,
    every_event_reaches_a_receiver_signed,
    a_cancelled_job_is_an_event,
    a_failed_attempt_is_retried_with_the_same_delivery_id,
    internal_addresses_are_refused,
    a_webhook_failing_for_too_long_is_turned_off,
    finished_deliveries_are_purged_after_their_retention,
    a_retry_survives_a_killed_server,
    two_replicas_never_both_make_one_attempt,
    every_webhook_operation_refuses_what_it_should,
);
