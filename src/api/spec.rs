//! The published contract: the spec poem-openapi generates from our types, with one
//! correction applied in one place (header names spelled as the public docs spell them,
//! where the derive upper-cases them), served at `/openapi.json` and `/openapi.yaml` and
//! committed under `openapi/` (`leadlex spec --write openapi` regenerates every file).

use std::sync::OnceLock;

use poem::{handler, IntoResponse, Response};
use serde_json::Value;

use crate::config::Settings;
use crate::enrichment::vendors::{clearbit, pdl};

pub const API_DESCRIPTION: &str = "\
leadlex answers *who is behind this email or domain?* from upstream data vendors.\n\n\
Authenticate with `Authorization: Bearer wbk_…`. Each successful lookup costs 1 credit \
from the workspace balance; errors are free. Every response carries `X-Request-ID`, and \
every response to an authenticated request carries `X-RateLimit-Limit`, \
`X-RateLimit-Remaining` and `X-RateLimit-Reset`.\n\n\
Every error has the same JSON envelope: `{\"error\": {\"code\", \"message\", \"request_id\", \
\"details\"?}}`, where `code` is a stable snake_case string.";

/// Header names as the public docs spell them.
const HEADER_NAMES: [&str; 7] = [
    "X-Request-ID",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "Retry-After",
    "Idempotent-Replayed",
    "Idempotency-Key",
];

fn canonical_header(name: &str) -> Option<&'static str> {
    HEADER_NAMES.iter().copied().find(|h| h.eq_ignore_ascii_case(name))
}

/// Renames response-header keys and header parameters to their canonical spelling.
fn fix_header_names(spec: &mut Value) {
    if let Some(paths) = spec.get_mut("paths").and_then(Value::as_object_mut) {
        for op in paths.values_mut().filter_map(Value::as_object_mut).flat_map(|p| p.values_mut()) {
            if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
                for param in params.iter_mut().filter(|p| p["in"] == "header") {
                    if let Some(name) = param["name"].as_str().and_then(canonical_header) {
                        param["name"] = Value::from(name);
                    }
                }
            }
            if let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) {
                for resp in responses.values_mut() {
                    if let Some(headers) = resp.get_mut("headers").and_then(Value::as_object_mut) {
                        let renamed: serde_json::Map<String, Value> = std::mem::take(headers)
                            .into_iter()
                            .map(|(k, v)| (canonical_header(&k).map(str::to_string).unwrap_or(k), v))
                            .collect();
                        *headers = renamed;
                    }
                }
            }
        }
    }
}

/// The spec as a JSON value.
pub fn openapi_value() -> Value {
    let mut spec: Value = serde_json::from_str(&super::openapi_service().spec()).expect("spec is JSON");
    fix_header_names(&mut spec);
    spec
}

/// The spec as pretty JSON (what `openapi/leadlex.json` holds).
pub fn openapi_json_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| format!("{}\n", serde_json::to_string_pretty(&openapi_value()).expect("serialises")))
}

pub fn openapi_yaml_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| serde_yaml::to_string(&openapi_value()).expect("serialises"))
}

/// Every generated contract file, by its path under `openapi/`.
pub fn committed_files() -> Vec<(&'static str, String)> {
    let pretty = |v: Value| format!("{}\n", serde_json::to_string_pretty(&v).expect("serialises"));
    vec![
        ("leadlex.json", openapi_json_text().to_string()),
        ("vendors/vendor_a.json", pretty(pdl::wire_schema())),
        ("vendors/vendor_b.json", pretty(clearbit::wire_schema())),
        ("config.schema.json", pretty(Settings::json_schema())),
    ]
}

#[handler]
pub fn openapi_json() -> Response {
    Response::builder().content_type("application/json; charset=utf-8").body(openapi_json_text()).into_response()
}

#[handler]
pub fn openapi_yaml() -> Response {
    Response::builder().content_type("application/yaml; charset=utf-8").body(openapi_yaml_text()).into_response()
}
