//! The attacker's view: every operation of the published spec, walked with
//! (a) a key of another workspace, (b) a test-mode key of the same workspace, against the
//! victim's live ids, and (c) a key of the same workspace lacking the operation's
//! permission. Ids of the victim are `404` to (a) and (b), and left out of their lists;
//! an `Idempotency-Key` the victim used replays nothing to them; (c) is `403`. An
//! operation of the spec that is not in the table fails the test, so a new route cannot
//! forget its scope.

use std::collections::BTreeSet;

use leadlex::{auth::Permission, ratelimit::Plan};
use serde_json::{json, Value};

use crate::helpers::{dead_url, spawn_app_with, Backend, Resp, TestApp};

/// What an operation acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// One of the victim's resources, named in the path.
    Job,
    Key,
    Suppression,
    Webhook,
    /// A webhook and one of its deliveries.
    Delivery,
    /// A list: the victim's ids must not be in the attacker's answer.
    List,
    /// Creates in the caller's own scope; with `true`, it takes an `Idempotency-Key`,
    /// which must not replay the victim's call.
    Create {
        idempotent: bool,
    },
    /// The caller's own account (usage, ledger): the victim's ledger rows must not show.
    Account,
    /// No key: health and metrics.
    Public,
}

struct Op {
    id: &'static str,
    method: &'static str,
    path: &'static str,
    permission: Option<Permission>,
    target: Target,
    body: Option<fn() -> Value>,
}

fn enrich_body() -> Value {
    json!({"email": "jane@acme.com"})
}
fn bulk_body() -> Value {
    json!({"items": [{"email": "jane@acme.com"}, {"domain": "acme.com"}]})
}
fn job_body() -> Value {
    json!({"items": [{"email": "jane@acme.com"}, {"domain": "acme.com"}]})
}
fn key_body() -> Value {
    json!({"name": "ci", "permissions": ["write:enrich"], "mode": "test"})
}
fn suppression_body() -> Value {
    json!({"email": "someone@attacker.example"})
}
fn webhook_body() -> Value {
    json!({"url": format!("{}/hook", dead_url()), "events": ["api_key.created"]})
}
fn webhook_patch() -> Value {
    json!({"url": format!("{}/stolen", dead_url()), "description": "changed"})
}

/// Every operation of the spec: how to reach it, what it needs, what it acts on.
fn table() -> Vec<Op> {
    use Permission::*;
    use Target::*;
    let op = |id, method, path, permission, target, body| Op { id, method, path, permission, target, body };
    vec![
        op(
            "enrich_email_or_domain",
            "POST",
            "/v1/email/enrich",
            Some(WriteEnrich),
            Create { idempotent: true },
            Some(enrich_body as fn() -> Value),
        ),
        op("enrich_bulk", "POST", "/v1/email/enrich/bulk", Some(WriteEnrich), Create { idempotent: true }, Some(bulk_body)),
        op("submit_enrichment_job", "POST", "/v1/enrich/jobs", Some(WriteEnrich), Create { idempotent: true }, Some(job_body)),
        op("list_enrichment_jobs", "GET", "/v1/enrich/jobs", Some(WriteEnrich), List, None),
        op("get_enrichment_job", "GET", "/v1/enrich/jobs/{id}", Some(WriteEnrich), Job, None),
        op("cancel_enrichment_job", "POST", "/v1/enrich/jobs/{id}/cancel", Some(WriteEnrich), Job, None),
        op("get_enrichment_job_results", "GET", "/v1/enrich/jobs/{id}/results", Some(WriteEnrich), Job, None),
        op("create_api_key", "POST", "/v1/api-keys", Some(AdminApiKeys), Create { idempotent: true }, Some(key_body)),
        op("list_api_keys", "GET", "/v1/api-keys", Some(AdminApiKeys), List, None),
        op("revoke_api_key", "DELETE", "/v1/api-keys/{id}", Some(AdminApiKeys), Key, None),
        op("get_usage", "GET", "/v1/usage", Some(ReadUsage), Account, None),
        op("list_ledger_entries", "GET", "/v1/credits/ledger", Some(ReadUsage), Account, None),
        op("create_suppression", "POST", "/v1/suppressions", Some(AdminPrivacy), Create { idempotent: false }, Some(suppression_body)),
        op("list_suppressions", "GET", "/v1/suppressions", Some(AdminPrivacy), List, None),
        op("delete_suppression", "DELETE", "/v1/suppressions/{id}", Some(AdminPrivacy), Suppression, None),
        op("create_webhook", "POST", "/v1/webhooks", Some(AdminWebhooks), Create { idempotent: false }, Some(webhook_body)),
        op("list_webhooks", "GET", "/v1/webhooks", Some(AdminWebhooks), List, None),
        op("get_webhook", "GET", "/v1/webhooks/{id}", Some(AdminWebhooks), Webhook, None),
        op("update_webhook", "PATCH", "/v1/webhooks/{id}", Some(AdminWebhooks), Webhook, Some(webhook_patch)),
        op("delete_webhook", "DELETE", "/v1/webhooks/{id}", Some(AdminWebhooks), Webhook, None),
        op("rotate_webhook_secret", "POST", "/v1/webhooks/{id}/rotate-secret", Some(AdminWebhooks), Webhook, None),
        op("test_webhook", "POST", "/v1/webhooks/{id}/test", Some(AdminWebhooks), Webhook, None),
        op("list_webhook_deliveries", "GET", "/v1/webhooks/{id}/deliveries", Some(AdminWebhooks), Webhook, None),
        op(
            "redeliver_webhook_delivery",
            "POST",
            "/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver",
            Some(AdminWebhooks),
            Delivery,
            None,
        ),
        op("healthz", "GET", "/healthz", None, Public, None),
        op("metrics", "GET", "/metrics", None, Public, None),
        op("readyz", "GET", "/readyz", None, Public, None),
    ]
}

/// The operations of the committed spec: `(operationId, METHOD, path)`.
fn spec_operations() -> BTreeSet<(String, String, String)> {
    let spec: Value = serde_json::from_str(include_str!("../../openapi/leadlex.json")).unwrap();
    let mut ops = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            ops.insert((op["operationId"].as_str().unwrap().to_string(), method.to_uppercase(), path.clone()));
        }
    }
    ops
}

#[test]
fn every_operation_of_the_spec_is_in_the_table() {
    let table: BTreeSet<(String, String, String)> =
        table().iter().map(|o| (o.id.to_string(), o.method.to_string(), o.path.to_string())).collect();
    let spec = spec_operations();
    let missing: Vec<_> = spec.difference(&table).collect();
    let stale: Vec<_> = table.difference(&spec).collect();
    assert!(missing.is_empty(), "operations of the spec the attacker's table does not walk: {missing:?}");
    assert!(stale.is_empty(), "operations in the table the spec does not have: {stale:?}");
}

/// The victim's live resources, each made over the API with its live admin key.
struct Victim {
    ws: String,
    admin: String,
    job: String,
    key: String,
    suppression: String,
    webhook: String,
    delivery: String,
    /// The `Idempotency-Key` of every idempotent call it made, with that call's answer.
    idempotent: Vec<(&'static str, String, Value)>,
    ledger_request_ids: Vec<String>,
}

fn url(app: &TestApp, path: &str) -> String {
    format!("{}{path}", app.base)
}

fn request(app: &TestApp, method: &str, path: &str, key: &str, body: Option<Value>) -> reqwest::RequestBuilder {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let builder = app.client.request(method, url(app, path)).bearer_auth(key);
    match body {
        Some(body) => builder.json(&body),
        None => builder,
    }
}

async fn ok(app: &TestApp, builder: reqwest::RequestBuilder) -> Value {
    let r = app.request(builder).await;
    assert!((200..300).contains(&r.status), "{}: {}", r.status, String::from_utf8_lossy(&r.bytes));
    if r.bytes.is_empty() {
        Value::Null
    } else {
        r.json()
    }
}

async fn victim(app: &TestApp) -> Victim {
    let ws = app.workspace(Plan::Unmetered, 1_000).await;
    let admin = app.key(&ws, &Permission::ALL, None).await.key;
    let mut idempotent = Vec::new();
    for op in table().into_iter().filter(|o| o.target == Target::Create { idempotent: true }) {
        let idem = uuid::Uuid::new_v4().to_string();
        let body = (op.body.unwrap())();
        let answer = ok(app, request(app, op.method, op.path, &admin, Some(body)).header("Idempotency-Key", &idem)).await;
        idempotent.push((op.id, idem, answer));
    }
    let job = ok(app, request(app, "POST", "/v1/enrich/jobs", &admin, Some(job_body()))).await["data"]["id"].as_str().unwrap().to_string();
    let key = ok(app, request(app, "POST", "/v1/api-keys", &admin, Some(json!({"name": "victim", "permissions": ["read:usage"]})))).await
        ["data"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let suppression = ok(app, request(app, "POST", "/v1/suppressions", &admin, Some(json!({"email": "private@victim.example"})))).await
        ["data"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let webhook =
        ok(app, request(app, "POST", "/v1/webhooks", &admin, Some(webhook_body()))).await["data"]["id"].as_str().unwrap().to_string();
    let delivery = ok(app, request(app, "POST", &format!("/v1/webhooks/{webhook}/test"), &admin, None)).await["data"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let ledger = ok(app, request(app, "GET", "/v1/credits/ledger", &admin, None)).await;
    let ledger_request_ids = ledger["data"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["request_id"].as_str().map(str::to_string))
        .collect::<Vec<_>>();
    assert!(!ledger_request_ids.is_empty(), "the victim's calls were charged: {ledger}");
    Victim { ws, admin, job, key, suppression, webhook, delivery, idempotent, ledger_request_ids }
}

impl Victim {
    fn path(&self, op: &Op) -> String {
        let id = match op.target {
            Target::Job => &self.job,
            Target::Key => &self.key,
            Target::Suppression => &self.suppression,
            Target::Webhook | Target::Delivery => &self.webhook,
            _ => return op.path.to_string(),
        };
        op.path.replace("{id}", id).replace("{delivery_id}", &self.delivery)
    }

    fn ids(&self) -> [&str; 6] {
        [&self.job, &self.key, &self.suppression, &self.webhook, &self.delivery, &self.ws]
    }
}

/// A test-mode key of `victim`'s workspace holding every permission, made over the API.
async fn test_key_of(app: &TestApp, victim: &Victim) -> String {
    let all: Vec<&str> = Permission::ALL.iter().map(|p| p.as_str()).collect();
    app.test_key(&victim.admin, &all).await
}

/// Walks every operation with `attacker` (`who` names it in failures) against `victim`.
async fn walk(app: &TestApp, victim: &Victim, attacker: &str, who: &str) {
    let mut created_webhooks = Vec::new();
    let mut created_suppressions = Vec::new();
    for op in table() {
        let what = format!("{who}: {} {}", op.method, op.path);
        let path = victim.path(&op);
        let body = op.body.map(|b| b());
        match op.target {
            Target::Job | Target::Key | Target::Suppression | Target::Webhook | Target::Delivery => {
                let r = app.request(request(app, op.method, &path, attacker, body)).await;
                assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"), "{what}");
            }
            Target::List => {
                let r = app.request(request(app, op.method, &path, attacker, None)).await;
                assert_eq!(r.status, 200, "{what}: {}", String::from_utf8_lossy(&r.bytes));
                let text = String::from_utf8_lossy(&r.bytes);
                for id in victim.ids() {
                    assert!(!text.contains(id), "{what} shows the victim's {id}: {text}");
                }
            }
            Target::Account => {
                let r = app.request(request(app, op.method, &path, attacker, None)).await;
                assert_eq!(r.status, 200, "{what}");
                let text = String::from_utf8_lossy(&r.bytes);
                for id in &victim.ledger_request_ids {
                    assert!(!text.contains(id.as_str()), "{what} shows the victim's ledger ({id}): {text}");
                }
            }
            Target::Create { idempotent } => {
                if idempotent {
                    // The victim's key and body, sent again: never its answer.
                    let (_, idem, answer) = victim.idempotent.iter().find(|(id, ..)| *id == op.id).unwrap();
                    let r = app.request(request(app, op.method, &path, attacker, body).header("Idempotency-Key", idem)).await;
                    assert!(r.status < 500, "{what}: {}", r.status);
                    assert_eq!(r.header("idempotent-replayed"), None, "{what} replayed the victim's call");
                    let text = String::from_utf8_lossy(&r.bytes);
                    for secret in [&answer["data"]["key"], &answer["data"]["id"]].into_iter().filter_map(|v| v.as_str()) {
                        assert!(!text.contains(secret), "{what} got the victim's {secret}");
                    }
                } else {
                    let r = app.request(request(app, op.method, &path, attacker, body)).await;
                    assert!((200..300).contains(&r.status), "{what}: {} {}", r.status, String::from_utf8_lossy(&r.bytes));
                    let id = r.json()["data"]["id"].as_str().unwrap().to_string();
                    match op.id {
                        "create_webhook" => created_webhooks.push(id),
                        _ => created_suppressions.push(id),
                    }
                }
            }
            Target::Public => {}
        }
    }
    // What the attacker created is in its own scope: the victim does not see it.
    let hooks = ok(app, request(app, "GET", "/v1/webhooks", &victim.admin, None)).await.to_string();
    let sups = ok(app, request(app, "GET", "/v1/suppressions", &victim.admin, None)).await.to_string();
    for id in &created_webhooks {
        assert!(!hooks.contains(id.as_str()), "{who}'s webhook {id} shows in the victim's list");
    }
    for id in &created_suppressions {
        assert!(!sups.contains(id.as_str()), "{who}'s suppression {id} shows in the victim's list");
    }
    // And the victim's resources are as they were.
    let hook = ok(app, request(app, "GET", &format!("/v1/webhooks/{}", victim.webhook), &victim.admin, None)).await;
    assert_ne!(hook["data"]["description"], "changed", "{who} changed the victim's webhook");
    let job = ok(app, request(app, "GET", &format!("/v1/enrich/jobs/{}", victim.job), &victim.admin, None)).await;
    assert_ne!(job["data"]["cancel_reason"], "requested", "{who} cancelled the victim's job");
}

async fn neither_another_workspace_nor_test_mode_reaches_live_data(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.webhooks.allow_loopback = true;
        s.jobs.workers = false; // the victim's job stays queued: cancellable, until the end
    })
    .await;
    let victim = victim(&app).await;

    let other_ws = app.workspace(Plan::Unmetered, 1_000).await;
    let other = app.key(&other_ws, &Permission::ALL, None).await.key;
    walk(&app, &victim, &other, "another workspace's key").await;

    let test = test_key_of(&app, &victim).await;
    walk(&app, &victim, &test, "a test-mode key").await;

    // Each key lacking one permission gets 403 from every operation that needs it.
    for op in table() {
        let Some(needed) = op.permission else { continue };
        let others: Vec<Permission> = Permission::ALL.into_iter().filter(|p| *p != needed).collect();
        let lacking = app.key(&victim.ws, &others, None).await.key;
        let r: Resp = app.request(request(&app, op.method, &victim.path(&op), &lacking, op.body.map(|b| b()))).await;
        assert_eq!((r.status, r.error_code().as_str()), (403, "insufficient_permissions"), "{} {} without {needed}", op.method, op.path);
    }
}

/// The confirmed hole: a live admin key creates a key with an `Idempotency-Key`; a test
/// key of the same workspace sends the same key and body, with and without `"mode":
/// "live"`, and gets neither the live secret nor a live key.
async fn a_test_key_never_gets_a_live_key_secret(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let ws = app.workspace(Plan::Pro, 10).await;
    let admin = app.key(&ws, &Permission::ALL, None).await.key;
    let idem = uuid::Uuid::new_v4().to_string();
    let body = json!({"name": "prod", "permissions": ["admin:api_keys"]});
    let live = ok(&app, request(&app, "POST", "/v1/api-keys", &admin, Some(body.clone())).header("Idempotency-Key", &idem)).await;
    let secret = live["data"]["key"].as_str().unwrap().to_string();
    assert!(!secret.starts_with("wbk_test_"));
    let test = ok(
        &app,
        request(&app, "POST", "/v1/api-keys", &admin, Some(json!({"name": "ci", "permissions": ["admin:api_keys"], "mode": "test"}))),
    )
    .await["data"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let mut live_body = body.clone();
    live_body["mode"] = "live".into();
    let r = app.request(request(&app, "POST", "/v1/api-keys", &test, Some(live_body)).header("Idempotency-Key", &idem)).await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "insufficient_permissions"));
    let r = app.request(request(&app, "POST", "/v1/api-keys", &test, Some(body)).header("Idempotency-Key", &idem)).await;
    assert_eq!(r.status, 201, "a test key may create a test key: {}", String::from_utf8_lossy(&r.bytes));
    assert_eq!(r.header("idempotent-replayed"), None);
    let got = r.json()["data"]["key"].as_str().unwrap().to_string();
    assert!(got.starts_with("wbk_test_") && got != secret, "{got}");
}

/// A key can give a new key only permissions it holds; a replay is refused to a caller
/// who could not make the request now.
async fn a_new_key_holds_at_most_its_creators_permissions(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let ws = app.workspace(Plan::Pro, 10).await;
    let keys_only = app.key(&ws, &[Permission::AdminApiKeys], None).await.key;
    let all: Vec<&str> = Permission::ALL.iter().map(|p| p.as_str()).collect();
    let r = app.request(request(&app, "POST", "/v1/api-keys", &keys_only, Some(json!({"name": "x", "permissions": all})))).await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "insufficient_permissions"), "{}", String::from_utf8_lossy(&r.bytes));
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("write:enrich"));
    let same = json!({"name": "x", "permissions": ["admin:api_keys"]});
    assert_eq!(app.request(request(&app, "POST", "/v1/api-keys", &keys_only, Some(same))).await.status, 201);

    // A replay carries a secret: the retry's caller must hold what the key holds.
    let admin = app.key(&ws, &Permission::ALL, None).await.key;
    let idem = uuid::Uuid::new_v4().to_string();
    let body = json!({"name": "enricher", "permissions": ["write:enrich"]});
    ok(&app, request(&app, "POST", "/v1/api-keys", &admin, Some(body.clone())).header("Idempotency-Key", &idem)).await;
    let r = app.request(request(&app, "POST", "/v1/api-keys", &keys_only, Some(body)).header("Idempotency-Key", &idem)).await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "insufficient_permissions"));
}

/// Test mode owns its webhooks: a test key's events go to test webhooks only, a live
/// key's to live ones only.
async fn test_events_go_to_test_webhooks_only(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.webhooks.allow_loopback = true).await;
    let ws = app.workspace(Plan::Pro, 10).await;
    let admin = app.key(&ws, &Permission::ALL, None).await.key;
    let all: Vec<&str> = Permission::ALL.iter().map(|p| p.as_str()).collect();
    let test = app.test_key(&admin, &all).await;
    let hook = |key: &str| {
        request(&app, "POST", "/v1/webhooks", key, Some(json!({"url": format!("{}/h", dead_url()), "events": ["api_key.created"]})))
    };
    let live_hook = ok(&app, hook(&admin)).await["data"]["id"].as_str().unwrap().to_string();
    let test_hook = ok(&app, hook(&test)).await["data"]["id"].as_str().unwrap().to_string();
    // One key created in each mode.
    ok(&app, request(&app, "POST", "/v1/api-keys", &test, Some(json!({"name": "t", "permissions": ["write:enrich"]})))).await;
    ok(&app, request(&app, "POST", "/v1/api-keys", &admin, Some(json!({"name": "l", "permissions": ["write:enrich"]})))).await;
    let created_events = |key: String, hook: String| {
        let app = &app;
        async move {
            let r = ok(app, request(app, "GET", &format!("/v1/webhooks/{hook}/deliveries"), &key, None)).await;
            r["data"]["deliveries"].as_array().unwrap().iter().filter(|d| d["event"] == "api_key.created").count()
        }
    };
    assert_eq!(created_events(admin.clone(), live_hook.clone()).await, 1, "the live webhook got the live key's event only");
    assert_eq!(created_events(test.clone(), test_hook.clone()).await, 1, "the test webhook got the test key's event only");
    // Each is invisible to the other mode.
    let r = app.request(request(&app, "GET", &format!("/v1/webhooks/{live_hook}"), &test, None)).await;
    assert_eq!(r.status, 404);
    let r = app.request(request(&app, "GET", &format!("/v1/webhooks/{test_hook}"), &admin, None)).await;
    assert_eq!(r.status, 404);
}

crate::on_both_backends!(
    neither_another_workspace_nor_test_mode_reaches_live_data,
    a_test_key_never_gets_a_live_key_secret,
    a_new_key_holds_at_most_its_creators_permissions,
    test_events_go_to_test_webhooks_only,
);
