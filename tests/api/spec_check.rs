//! Every response the suite sees is checked against the committed spec
//! (`openapi/leadlex.json`): the status is declared for the operation, every declared
//! header is present when required and has the declared type, and the body matches the
//! declared schema (a JSON Schema validator over the spec's components; expectations are
//! not written twice). Each (operation, status) seen is recorded for the
//! endpoint-coverage check (`tests/endpoint_coverage.rs`).

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

/// The spec's path template matching a concrete path (leadlex has no path parameters).
fn operation(method: &str, path: &str) -> Option<&'static Value> {
    SPEC["paths"].get(path)?.get(method.to_ascii_lowercase())
}

fn schema_validator(schema: &Value) -> jsonschema::Validator {
    let doc = json!({"components": SPEC["components"], "allOf": [schema]});
    jsonschema::options().with_draft(jsonschema::Draft::Draft4).build(&doc).unwrap_or_else(|e| panic!("schema {schema} compiles: {e}"))
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
    if let Some((media, content)) = declared["content"].as_object().and_then(|c| c.iter().next()) {
        let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
        let essence = |m: &str| m.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        assert_eq!(essence(content_type), essence(media), "{op_id} {status}: content type");
        if !essence(media).ends_with("json") {
            assert_eq!(content["schema"]["type"], "string", "{op_id} {status}: a text body is declared as a string");
            assert!(std::str::from_utf8(body).is_ok(), "{op_id} {status}: text body is UTF-8");
            record(op_id, status);
            return;
        }
        let body: Value = serde_json::from_slice(body)
            .unwrap_or_else(|e| panic!("{op_id} {status}: body is not JSON ({e}): {}", String::from_utf8_lossy(body)));
        let v = schema_validator(&content["schema"]);
        let errors: Vec<String> = v.iter_errors(&body).map(|e| format!("{} at {}", e, e.instance_path)).collect();
        assert!(errors.is_empty(), "{op_id} {status}: body does not match the spec: {errors:?}\n{body}");
    }
    record(op_id, status);
}
