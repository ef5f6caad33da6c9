//! Every response the suite sees is checked against the committed spec
//! (`openapi/leadlex.json`): the status is declared for the operation, every declared
//! header is present when required and has the declared type, and the body matches the
//! declared schema (a JSON Schema validator over the spec's components; expectations are
//! not written twice). Each (operation, status) seen is recorded for the
//! endpoint-coverage check (`tests/endpoint_coverage.rs`), and so is each response that
//! is exactly one of the spec's examples (request ids, balances, and the ids, secrets
//! and times the server makes up aside), so that every example is shown to be a
//! response the server gives.

use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::{LazyLock, Mutex},
};

use reqwest::header::HeaderMap;
use serde_json::{json, Value};

static SPEC: LazyLock<Value> = LazyLock::new(|| {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/leadlex.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("committed spec")).expect("spec is JSON")
});

/// Where (operation, status) pairs seen by the suite are recorded.
pub fn coverage_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("contract-coverage")
}

static COVERAGE: LazyLock<Mutex<std::fs::File>> = LazyLock::new(|| {
    let dir = coverage_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let file = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("{}.txt", std::process::id()))).unwrap();
    Mutex::new(file)
});

fn record(operation_id: &str, status: u16) {
    let mut f = COVERAGE.lock().unwrap();
    writeln!(f, "{operation_id} {status}").unwrap();
}

/// The operation of a concrete path: the spec's path template it matches (`{id}` matches
/// one segment).
fn operation(method: &str, path: &str) -> Option<&'static Value> {
    let (_, item) = SPEC["paths"].as_object()?.iter().find(|(template, _)| leadlex::api::spec::template_matches(template, path))?;
    item.get(method.to_ascii_lowercase())
}

/// OpenAPI 3.0's `nullable: true` in JSON Schema terms (the validator speaks JSON
/// Schema): `type: T` becomes `type: [T, "null"]`; a nullable `allOf` accepts `null` too.
fn json_schema_of(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut out: serde_json::Map<String, Value> = map.iter().map(|(k, v)| (k.clone(), json_schema_of(v))).collect();
            if out.remove("nullable") == Some(Value::Bool(true)) {
                match out.get("type").cloned() {
                    Some(Value::String(t)) => {
                        out.insert("type".into(), json!([t, "null"]));
                    }
                    _ => return json!({"anyOf": [Value::Object(out), {"type": "null"}]}),
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(json_schema_of).collect()),
        other => other.clone(),
    }
}

static COMPONENTS: LazyLock<Value> = LazyLock::new(|| json_schema_of(&SPEC["components"]));

fn schema_validator(schema: &Value) -> jsonschema::Validator {
    let doc = json!({"components": *COMPONENTS, "allOf": [json_schema_of(schema)]});
    jsonschema::options().with_draft(jsonschema::Draft::Draft4).build(&doc).unwrap_or_else(|e| panic!("schema {schema} compiles: {e}"))
}

/// Why `value` is not an instance of the spec's component schema `name` (empty: it is).
pub fn component_errors(name: &str, value: &Value) -> Vec<String> {
    assert!(SPEC["components"]["schemas"].get(name).is_some(), "the spec has a component {name}");
    let validator = schema_validator(&json!({"$ref": format!("#/components/schemas/{name}")}));
    validator.iter_errors(value).map(|e| format!("{} at {}", e, e.instance_path)).collect()
}

/// Whether `body` is valid for the JSON request body of `method path` in the committed spec.
pub fn request_is_valid(method: &str, path: &str, body: &Value) -> bool {
    let op = operation(method, path).unwrap_or_else(|| panic!("{method} {path} is an operation"));
    let content = op["requestBody"]["content"].as_object().and_then(|c| c.values().next()).expect("a JSON request body");
    schema_validator(&content["schema"]).is_valid(body)
}

/// Panics with a precise message when the response breaks the contract.
pub fn check(method: &str, path: &str, status: u16, headers: &HeaderMap, body: &[u8]) {
    let Some(op) = operation(method, path) else {
        // Not an operation of the API (unknown path, wrong method, /docs): still the envelope
        // for errors.
        if status >= 400 {
            let body: Value = serde_json::from_slice(body).expect("errors are JSON");
            let v = schema_validator(&json!({"$ref": "#/components/schemas/ErrorBody"}));
            assert!(v.is_valid(&body), "{method} {path} {status}: not the error envelope: {body}");
        }
        return;
    };
    let op_id = op["operationId"].as_str().expect("operationId");
    let declared =
        op["responses"].get(status.to_string()).unwrap_or_else(|| panic!("{op_id}: status {status} is not declared in the spec"));
    for (name, header) in declared["headers"].as_object().into_iter().flatten() {
        let value = headers.get(name.as_str()).and_then(|v| v.to_str().ok());
        let required = header["required"].as_bool().unwrap_or(false);
        match value {
            None => assert!(!required, "{op_id} {status}: required header {name} missing"),
            Some(v) => match header["schema"]["type"].as_str() {
                Some("integer") => assert!(v.parse::<i64>().is_ok(), "{op_id} {status}: {name}={v} is not an integer"),
                Some("boolean") => assert!(v == "true" || v == "false", "{op_id} {status}: {name}={v} is not a boolean"),
                _ => {}
            },
        }
    }
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = |m: &str| m.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if let Some(declared_content) = declared["content"].as_object().filter(|c| !c.is_empty()) {
        let (media, content) = declared_content
            .iter()
            .find(|(m, _)| essence(m) == essence(content_type))
            .unwrap_or_else(|| panic!("{op_id} {status}: content type {content_type:?} is not declared"));
        let json = essence(media) == "application/json" || essence(media).ends_with("+json");
        if !json {
            assert_eq!(content["schema"]["type"], "string", "{op_id} {status}: a text body is declared as a string");
            let text = std::str::from_utf8(body).unwrap_or_else(|_| panic!("{op_id} {status}: text body is UTF-8"));
            for (name, example) in content["examples"].as_object().into_iter().flatten() {
                if text_matches_example(example["value"].as_str().unwrap_or_default(), text) {
                    record_example(op_id, status, name);
                }
            }
            record(op_id, status);
            return;
        }
        let body: Value = serde_json::from_slice(body)
            .unwrap_or_else(|e| panic!("{op_id} {status}: body is not JSON ({e}): {}", String::from_utf8_lossy(body)));
        let v = schema_validator(&content["schema"]);
        let errors: Vec<String> = v.iter_errors(&body).map(|e| format!("{} at {}", e, e.instance_path)).collect();
        assert!(errors.is_empty(), "{op_id} {status}: body does not match the spec: {errors:?}\n{body}");
        for (name, example) in content["examples"].as_object().into_iter().flatten() {
            if without_per_call_values(example["value"].clone()) == without_per_call_values(body.clone()) {
                record_example(op_id, status, name);
            }
        }
    }
    record(op_id, status);
}

/// Records that a response was exactly one of the spec's examples, for the check that
/// every example is a response the server gives (`tests/endpoint_coverage.rs`).
fn record_example(operation_id: &str, status: u16, name: &str) {
    let mut f = COVERAGE.lock().unwrap();
    writeln!(f, "example {operation_id} {status} {name}").unwrap();
}

/// A response with the values that differ from call to call (the request id, the
/// balance after the call, ids, secrets and times the server made up) blanked, so that
/// it compares with an example.
pub fn without_per_call_values(mut body: Value) -> Value {
    if let Some(id) = body.pointer_mut("/error/request_id") {
        *id = Value::Null;
    }
    blank_generated(&mut body);
    body
}

/// Values the server makes up for each call: ids, secrets, times, balances.
fn blank_generated(value: &mut Value) {
    const GENERATED: [&str; 16] = [
        "secret",
        "updated_at",
        "credits_remaining",
        "fetched_at",
        "started_at",
        "finished_at",
        "id",
        "key",
        "prefix",
        "created_at",
        "created_by",
        "last_used_at",
        "api_key_id",
        "request_id",
        "resets_at",
        "next_cursor",
    ];
    match value {
        Value::Object(map) => {
            for (name, v) in map.iter_mut() {
                if GENERATED.contains(&name.as_str()) && !v.is_null() {
                    *v = Value::String("<generated>".into());
                } else {
                    blank_generated(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(blank_generated),
        _ => {}
    }
}

/// A text example (the Prometheus exposition) matches when every comment line it shows
/// is in the response, and every sample it shows is a series the response has.
fn text_matches_example(example: &str, body: &str) -> bool {
    let series = |line: &str| line.split([' ', '{']).next().unwrap_or_default().to_string();
    let samples: std::collections::BTreeSet<String> = body.lines().filter(|l| !l.starts_with('#')).map(series).collect();
    example.lines().filter(|l| !l.is_empty()).all(|l| {
        if l.starts_with('#') {
            body.lines().any(|b| b == l)
        } else {
            samples.contains(&series(l))
        }
    })
}
