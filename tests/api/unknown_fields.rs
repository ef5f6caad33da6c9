//! Request bodies are closed: a field the schema does not name is a `400
//! validation_error` whose `details` name it, on every operation that takes a JSON body
//! (walked from the served spec, so a new operation cannot forget it), at the top level
//! and in every nested object (bulk and job items), and nothing is charged or created.
//! The spec says the same (`additionalProperties: false` on every request object).

use leadlex::auth::Permission;
use serde_json::Value;

use crate::helpers::{spawn_app, Backend, TestApp};
use crate::on_both_backends;

const JSON: &str = "application/json; charset=utf-8";
const SURPLUS: &str = "inlcude";

/// The body with `SURPLUS` added to the object at `at` (a JSON pointer), and the field
/// path the error must name.
fn with_surplus(example: &Value, at: &str) -> (Value, String) {
    let mut body = example.clone();
    body.pointer_mut(at).and_then(Value::as_object_mut).expect("an object").insert(SURPLUS.into(), Value::from(["company"].as_slice()));
    // "/items/0" → "items[].inlcude"; "" → "inlcude".
    let mut path: Vec<String> = Vec::new();
    for segment in at.split('/').skip(1) {
        match segment.parse::<usize>() {
            Ok(_) => path.last_mut().expect("an index follows its list").push_str("[]"),
            Err(_) => path.push(segment.to_string()),
        }
    }
    path.push(SURPLUS.into());
    (body, path.join("."))
}

/// The pointers of every object within `value` (itself included).
fn objects(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            out.push(at.clone());
            for (k, v) in map {
                objects(v, format!("{at}/{k}"), out);
            }
        }
        Value::Array(items) => {
            // One element of a list stands for all (the schema gives them one type).
            if let Some(first) = items.first() {
                objects(first, format!("{at}/0"), out);
            }
        }
        _ => {}
    }
}

async fn every_operation_refuses_an_unknown_field(backend: Backend) {
    let app: TestApp = spawn_app(backend).await;
    let ws = app.workspace(leadlex::ratelimit::Plan::Unmetered, 100).await;
    let key = app.key(&ws, &Permission::ALL, None).await.key;
    let spec = app.request(app.client.get(format!("{}/openapi.json", app.base))).await.json();
    let mut walked = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(media) = op.pointer("/requestBody/content").and_then(|c| c.get(JSON)) else { continue };
            let id = op["operationId"].as_str().unwrap();
            // The published schema says so too.
            let name = media["schema"]["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/")).expect("a named schema");
            assert_eq!(spec["components"]["schemas"][name]["additionalProperties"], Value::Bool(false), "{id}: {name} is closed");
            let examples = media["examples"].as_object().unwrap_or_else(|| panic!("{id} publishes request examples"));
            let example = &examples.values().next().unwrap()["value"];
            let url = format!("{}{}", app.base, path.replace("{id}", "wh_00000000000000000000000000000000"));
            let mut pointers = Vec::new();
            objects(example, String::new(), &mut pointers);
            for at in pointers {
                let (body, field) = with_surplus(example, &at);
                let builder = app.client.request(method.to_uppercase().parse().unwrap(), &url).bearer_auth(&key).json(&body);
                let r = app.request(builder.header("Idempotency-Key", uuid::Uuid::new_v4().to_string())).await;
                let shown = String::from_utf8_lossy(&r.bytes).to_string();
                assert_eq!((r.status, r.error_code().as_str()), (400, "validation_error"), "{id} with {field}: {shown}");
                let error = &r.json()["error"];
                assert!(error["message"].as_str().unwrap().contains(&field), "{id}: the message names {field}: {shown}");
                let details = error["details"].as_array().unwrap_or_else(|| panic!("{id}: details: {shown}"));
                assert!(details.iter().any(|d| d["field"] == field.as_str()), "{id}: details name {field}: {shown}");
                walked.push(format!("{id} {field}"));
            }
        }
    }
    // Every body-taking operation was walked, items included.
    for expected in [
        "enrich_email_or_domain inlcude",
        "enrich_bulk inlcude",
        "enrich_bulk items[].inlcude",
        "submit_enrichment_job items[].inlcude",
        "create_api_key inlcude",
        "create_suppression inlcude",
        "create_webhook inlcude",
        "update_webhook inlcude",
    ] {
        assert!(walked.iter().any(|w| w == expected), "{expected} not walked: {walked:?}");
    }
    // Nothing was charged, created or remembered.
    assert_eq!(app.balance(&ws).await, 100);
    assert_eq!(app.charges(&ws).await, 0);
    for (list, field) in [("/v1/webhooks", "webhooks"), ("/v1/suppressions", "suppressions"), ("/v1/enrich/jobs", "jobs")] {
        let r = app.request(app.client.get(format!("{}{list}", app.base)).bearer_auth(&key)).await;
        assert_eq!(r.status, 200, "{list}");
        assert_eq!(r.json()["data"][field].as_array().map(Vec::len), Some(0), "{list} is empty: {}", String::from_utf8_lossy(&r.bytes));
    }
}

/// A misspelt field is a `400` naming it, not a charged `200` that ignored it.
async fn a_misspelt_enrich_field_is_refused_and_free(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ws, key) = app.funded(10).await;
    let r = app.enrich(&key, serde_json::json!({"email": "jane@acme.com", "inlcude": ["company"]})).await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.bytes));
    assert_eq!(r.json()["error"]["details"][0]["field"], "inlcude");
    assert_eq!(app.balance(&ws).await, 10);
}

/// What the client sent is never taken for a field name (a value is not a name), names
/// are echoed cut short, and a malformed `Idempotency-Key` is said to need a UUID.
async fn error_details_name_fields_not_values(backend: Backend) {
    let app = spawn_app(backend).await;
    let ws = app.workspace(leadlex::ratelimit::Plan::Unmetered, 10).await;
    let key = app.key(&ws, &Permission::ALL, None).await.key;
    let post = |path: &str, body: Value| app.client.post(format!("{}{path}", app.base)).bearer_auth(&key).json(&body);
    let forged = [
        ("/v1/api-keys", serde_json::json!({"name": "x", "permissions": ["unknown field `admin_override`"]}), "admin_override"),
        ("/v1/webhooks", serde_json::json!({"url": "https://hooks.example.com/x", "events": ["field `url`: evil"]}), "url"),
        ("/v1/email/enrich", serde_json::json!({"domain": "acme.com", "include": ["unknown field `secret`"]}), "include[].secret"),
    ];
    for (path, body, not_this) in forged {
        let r = app.request(post(path, body.clone())).await;
        assert_eq!(r.status, 400, "{body}");
        let field = r.json()["error"]["details"][0]["field"].as_str().unwrap().to_string();
        assert!(field != not_this && !field.contains("admin_override") && !field.contains("secret"), "{body}: {field}");
    }
    let long = "k".repeat(5_000);
    let r = app.request(post("/v1/email/enrich", serde_json::json!({"domain": "acme.com", long.clone(): 1}))).await;
    assert_eq!(r.status, 400);
    assert!(r.bytes.len() < 2_000, "the name is echoed cut short: {} bytes", r.bytes.len());
    let r = app.request(post("/v1/email/enrich", serde_json::json!({"domain": "acme.com"})).header("Idempotency-Key", "nope")).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["details"][0]["field"], "Idempotency-Key");
    assert!(r.json()["error"]["details"][0]["message"].as_str().unwrap().contains("UUID"), "{}", String::from_utf8_lossy(&r.bytes));
    assert_eq!(app.balance(&ws).await, 10);
}

on_both_backends!(
    every_operation_refuses_an_unknown_field,
    a_misspelt_enrich_field_is_refused_and_free,
    error_details_name_fields_not_values
);
