//! The spec's small truths: every request example in the published contract is a request
//! the server accepts (sent as it stands, answered 2xx and checked against the spec), and
//! the contract carries the crate's own version and license. That every *response*
//! example is a response the server gives is checked across the whole suite: the spec
//! check records each response that equals an example, and `tests/endpoint_coverage.rs`
//! fails on an example no response matched.

use std::path::Path;

use serde_json::{json, Value};

use crate::helpers::{spawn_app, Backend};
use crate::on_both_backends;

on_both_backends!(
    every_request_example_is_accepted,
    a_malformed_email_gets_the_documented_validation_error,
    a_ready_server_with_redis_answers_the_documented_readiness
);

fn committed_spec() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/leadlex.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// (method, path, example name, media type, body) for every request-body example of
/// every operation, and the `example` of every schema used as a request body.
fn request_examples(spec: &Value) -> Vec<(String, String, String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (media_type, media) in op["requestBody"]["content"].as_object().into_iter().flatten() {
                for (name, example) in media["examples"].as_object().into_iter().flatten() {
                    out.push((method.clone(), path.clone(), name.clone(), media_type.clone(), example["value"].clone()));
                }
                if let Some(schema) = media["schema"]["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/")) {
                    if let Some(example) = spec["components"]["schemas"][schema].get("example") {
                        out.push((method.clone(), path.clone(), format!("schema {schema}"), media_type.clone(), example.clone()));
                    }
                }
            }
        }
    }
    out
}

async fn every_request_example_is_accepted(backend: Backend) {
    let app = spawn_app(backend).await;
    let ws = app.workspace(leadlex::ratelimit::Plan::Unmetered, 100).await;
    let key = app.key(&ws, &leadlex::auth::Permission::ALL, None).await.key;
    let examples = request_examples(&committed_spec());
    assert!(examples.len() >= 4, "the enrich examples are found: {examples:?}");
    // The webhook the `{id}` examples change: one made as the create example makes it.
    let create = examples.iter().find(|(m, p, ..)| m == "post" && p == "/v1/webhooks").expect("a webhook create example").4.clone();
    let made = app.request(app.client.post(format!("{}/v1/webhooks", app.base)).bearer_auth(&key).json(&create)).await;
    assert_eq!(made.status, 201, "{}", String::from_utf8_lossy(&made.bytes));
    let webhook = made.json()["data"]["id"].as_str().unwrap().to_string();
    for (method, path, name, media_type, body) in examples {
        let path = if path.starts_with("/v1/webhooks/") { path.replace("{id}", &webhook) } else { path };
        assert!(!path.contains('{'), "{method} {path}: send its path parameters too before adding examples to it");
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let builder = app.client.request(method.clone(), format!("{}{path}", app.base)).bearer_auth(&key);
        let builder = match body.as_str() {
            Some(text) if !media_type.contains("json") => builder.header("content-type", media_type.as_str()).body(text.to_string()),
            _ => builder.json(&body),
        };
        let r = app.request(builder).await;
        assert!(
            (200..300).contains(&r.status),
            "{method} {path} example {name:?} ({body}) was answered {}: {}",
            r.status,
            String::from_utf8_lossy(&r.bytes)
        );
    }
    // The list example is the key the create example made, found by its name.
    let r = app.request(app.client.get(format!("{}/v1/api-keys?search=CI", app.base)).bearer_auth(&key)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["meta"]["total"], 1);
}

async fn a_malformed_email_gets_the_documented_validation_error(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, key) = app.funded(1).await;
    let r = app.enrich(&key, json!({"email": "jane.acme.com"})).await;
    assert_eq!(r.status, 400);
    let example = &committed_spec()["paths"]["/v1/email/enrich"]["post"]["responses"]["400"]["content"]["application/json; charset=utf-8"]
        ["examples"]["validation_error"]["value"];
    let mut body = r.json();
    body["error"]["request_id"] = example["error"]["request_id"].clone();
    assert_eq!(&body, example, "the 400 example is what a malformed email gets");
}

async fn a_ready_server_with_redis_answers_the_documented_readiness(backend: Backend) {
    let app = crate::helpers::spawn_app_with(backend, |s| s.redis.url = Some(crate::helpers::redis_url())).await;
    let r = app.request(app.client.get(format!("{}/readyz", app.base))).await;
    assert_eq!(r.status, 200);
    let example = &committed_spec()["paths"]["/readyz"]["get"]["responses"]["200"]["content"]["application/json; charset=utf-8"]
        ["examples"]["ready"]["value"];
    assert_eq!(&r.json(), example);
}

#[test]
fn the_contract_carries_the_crates_version_and_license() {
    let spec = committed_spec();
    let manifest = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let license = manifest.lines().find_map(|l| l.strip_prefix("license = ")).expect("the workspace declares a license");
    assert_eq!(spec["info"]["license"]["name"], license.trim_matches('"'), "info.license is Cargo.toml's");
    assert_eq!(spec["info"]["license"]["name"], "MIT");
    assert_eq!(spec["info"]["version"], env!("CARGO_PKG_VERSION"), "info.version is the crate's");
}
