//! The published contract: the spec poem-openapi generates from our types, with one
//! correction applied in one place (header names spelled as the public docs spell them,
//! where the derive upper-cases them), served at `/openapi.json` and `/openapi.yaml` and
//! committed under `openapi/` (`leadlex spec --write openapi` regenerates every file).

use std::collections::HashMap;
use std::sync::OnceLock;

use poem::{handler, IntoResponse, Response};
use poem_openapi::types::{Example, ToJSON};
use serde_json::{json, Value};

use super::error::ApiError;
use super::keys;
use crate::validation::FieldError;

use crate::config::Settings;
use crate::lookup::vendors::{clearbit, pdl};

pub const API_DESCRIPTION: &str = "\
leadlex answers *who is behind this email or domain?* from upstream data vendors.\n\n\
Authenticate with `Authorization: Bearer wbk_…`. Each successful lookup costs 1 credit \
from the workspace balance; errors are free. Every response carries `X-Request-ID`, and \
every response to an authenticated request carries `X-RateLimit-Limit`, \
`X-RateLimit-Remaining` and `X-RateLimit-Reset`.\n\n\
Every error has the same JSON envelope: `{\"error\": {\"code\", \"message\", \"request_id\", \
\"details\"?}}`, where `code` is a stable snake_case string.";

/// Header names as the public docs spell them.
const HEADER_NAMES: [&str; 8] = [
    "X-Request-ID",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "Retry-After",
    "Idempotent-Replayed",
    "Idempotency-Key",
    "Location",
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

/// The wording of the failures every operation shares, written once: a response of
/// these statuses whose `failures!` variant carries no doc comment of its own gets this
/// text (403 names the permission the operation needs, from the one permission table);
/// an operation documents only what it adds.
pub fn shared_failure_text(status: &str, operation_id: &str) -> Option<String> {
    Some(match status {
        "401" => "`invalid_key`: the API key is missing, malformed, unknown, revoked or expired.".to_string(),
        "403" => {
            let permission = super::security::permission_of(operation_id)?;
            format!("`insufficient_permissions`: the key lacks the `{}` permission.", permission.as_str())
        }
        "429" => "`rate_limited`: retry after `Retry-After` seconds.".to_string(),
        "500" => "`internal_error`: an unexpected failure on our side.".to_string(),
        "503" => "`service_unavailable`: leadlex's own store is unreachable; retry after `Retry-After` seconds.".to_string(),
        _ => return None,
    })
}

/// Fills in [`shared_failure_text`] where an operation left a shared failure undescribed.
fn describe_shared_failures(spec: &mut Value) {
    for item in spec["paths"].as_object_mut().into_iter().flat_map(|paths| paths.values_mut()) {
        for op in item.as_object_mut().into_iter().flat_map(|ops| ops.values_mut()) {
            let id = op["operationId"].as_str().unwrap_or_default().to_string();
            for (status, response) in op["responses"].as_object_mut().into_iter().flatten() {
                if response["description"].as_str().is_none_or(str::is_empty) {
                    if let Some(text) = shared_failure_text(status, &id) {
                        response["description"] = Value::from(text);
                    }
                }
            }
        }
    }
}

/// Operations without a security requirement are public: say so explicitly
/// (`security: []`), so that clients and linters do not read "unspecified".
fn declare_public_operations(spec: &mut Value) {
    for op in spec["paths"].as_object_mut().into_iter().flatten().flat_map(|(_, item)| item.as_object_mut().into_iter().flatten()) {
        if op.1.get("security").is_none() {
            op.1["security"] = json!([]);
        }
    }
}

/// Media-type `examples`, which poem-openapi's derives cannot declare: request examples
/// and one example body per response of every operation, rendered by the same code that
/// renders real responses, attached to their operation by its `operationId` (the name
/// the permission table and the clients use; a path may change, an id does not).
fn add_examples(spec: &mut Value) {
    let Some(paths) = spec.get_mut("paths").and_then(Value::as_object_mut) else { return };
    for item in paths.values_mut() {
        for op in item.as_object_mut().into_iter().flat_map(|ops| ops.values_mut()) {
            let operation = op["operationId"].as_str().unwrap_or_default().to_string();
            let operation = operation.as_str();
            if let Some(content) = op.pointer_mut("/requestBody/content").and_then(Value::as_object_mut) {
                for (media_type, media) in content.iter_mut() {
                    media["examples"] = match media_type.starts_with("text/csv") {
                        true => csv_request_examples(operation),
                        false => request_examples(operation),
                    };
                }
            }
            for (status, resp) in op.get_mut("responses").and_then(Value::as_object_mut).into_iter().flatten() {
                let Some(example) = response_example(operation, status) else { continue };
                // The first media type's (a streamed alternative has none).
                if let Some(media) = resp.get_mut("content").and_then(Value::as_object_mut).and_then(|c| c.values_mut().next()) {
                    media["examples"] = example;
                }
            }
        }
    }
}

fn request_examples(operation: &str) -> Value {
    match operation {
        "enrich_email_or_domain" => json!({
            "email": {"summary": "A person by email", "value": {"email": "jane@acme.com"}},
            "domain": {"summary": "A company by domain, company and social sections only",
                       "value": {"domain": "acme.com", "include": ["company", "social"]}},
            "email_and_company": {"summary": "A personal address with the person's company",
                                  "value": {"email": "jane@gmail.com", "domain": "acme.com"}},
        }),
        "enrich_bulk" => {
            let value = <super::bulk::BulkRequest as Example>::example().to_json();
            json!({"crm_export": {"summary": "Four rows of a CRM export: a person, the same person's company, nobody, a malformed row", "value": value}})
        }
        "submit_enrichment_job" => {
            let value = <super::jobs::JobRequest as Example>::example().to_json();
            json!({"crm_export": {"summary": "The bulk example's four rows, as a job", "value": value}})
        }
        "create_webhook" => {
            let value = <super::webhooks::CreateWebhookRequest as Example>::example().to_json();
            json!({"crm_sync": {"summary": "Job completions and a low balance, to a CRM sync", "value": value}})
        }
        "create_api_key" => json!({
            "ci_key": {"summary": "A key for a CI pipeline that only enriches", "value": {
                "name": keys::EXAMPLE_NAME,
                "permissions": ["write:enrich"],
                "description": keys::EXAMPLE_DESCRIPTION,
                "rate_limit_tier": "standard",
                "expires_at": keys::EXAMPLE_EXPIRY,
            }},
        }),
        "create_suppression" => json!({
            "email": {"summary": "An address never to look up", "value": {"email": "unsubscribed@globex.com"}},
            "domain": {"summary": "A whole domain: its addresses and the company", "value": {"domain": "initech.com"}},
        }),
        "update_webhook" => json!({
            "pause": {"summary": "Pause deliveries, keeping the webhook", "value": {"active": false}},
            "events": {"summary": "Subscribe to job events only", "value": {"events": ["enrichment.job.completed", "enrichment.job.cancelled"]}},
        }),
        _ => json!({}),
    }
}

/// The CSV request examples (the JSON examples' rows).
fn csv_request_examples(operation: &str) -> Value {
    match operation {
        "submit_enrichment_job" => json!({
            "crm_export": {"summary": "A CRM export: email, company domain, your id", "value": CSV_EXAMPLE},
        }),
        _ => json!({}),
    }
}

/// A CSV job submission.
pub const CSV_EXAMPLE: &str =
    "email,domain,reference\njane@acme.com,,crm-1001\n,acme.com,crm-1002\nnobody@nowhere.invalid,,crm-1003\nnot-an-email,,crm-1004\n";

/// The errors an operation's examples show: each one an answer the operation gives (the
/// suite checks that every example was seen).
fn error_examples(operation: &str) -> Vec<ApiError> {
    let secs = std::time::Duration::from_secs;
    let problem = |field: &'static str, message: &str| ApiError::validation(vec![FieldError::new(field, message)]);
    let unavailable = ApiError::ServiceUnavailable { retry_after: secs(2) };
    let internal = ApiError::Internal(anyhow::anyhow!("example"));
    let limited = ApiError::RateLimited { retry_after: secs(6) };
    match operation {
        "readyz" => vec![ApiError::NotReady { unreachable: "database".into() }],
        "enrich_email_or_domain" => vec![
            problem("email", "must look like name@example.com"),
            ApiError::InvalidKey,
            ApiError::InsufficientCredits,
            ApiError::InsufficientPermissions("write:enrich"),
            ApiError::NoMatch,
            ApiError::IdempotencyKeyInUse { retry_after: secs(3) },
            ApiError::PayloadTooLarge,
            ApiError::UnsupportedMediaType,
            ApiError::IdempotencyKeyReused,
            limited,
            internal,
            ApiError::UpstreamUnavailable { retry_after: secs(5) },
            unavailable,
        ],
        "enrich_bulk" => vec![
            problem("items", "is too long"),
            ApiError::InvalidKey,
            ApiError::InsufficientPermissions("write:enrich"),
            ApiError::IdempotencyKeyInUse { retry_after: secs(3) },
            ApiError::PayloadTooLarge,
            ApiError::UnsupportedMediaType,
            ApiError::IdempotencyKeyReused,
            ApiError::TooManyItems { retry_after: secs(6), fits: 5 },
            internal,
            unavailable,
        ],
        "submit_enrichment_job" => vec![
            problem("items", "is too short"),
            ApiError::InvalidKey,
            ApiError::InsufficientPermissions("write:enrich"),
            ApiError::IdempotencyKeyInUse { retry_after: secs(3) },
            ApiError::PayloadTooLarge,
            ApiError::UnsupportedMediaType,
            ApiError::IdempotencyKeyReused,
            limited,
            internal,
            unavailable,
        ],
        "list_enrichment_jobs" => vec![
            problem("limit", "is invalid"),
            ApiError::InvalidKey,
            ApiError::InsufficientPermissions("write:enrich"),
            limited,
            internal,
            unavailable,
        ],
        "get_enrichment_job" | "cancel_enrichment_job" => vec![
            ApiError::InvalidKey,
            ApiError::InsufficientPermissions("write:enrich"),
            ApiError::ResourceNotFound("job"),
            limited,
            internal,
            unavailable,
        ],
        "get_enrichment_job_results" => vec![
            problem("limit", "is invalid"),
            ApiError::InvalidKey,
            ApiError::InsufficientPermissions("write:enrich"),
            ApiError::ResourceNotFound("job"),
            limited,
            internal,
            unavailable,
        ],
        "create_api_key" => vec![
            problem("permissions", &format!("unknown permission `admin:everything`; the valid ones are {}", permission_catalogue())),
            ApiError::InvalidKey,
            ApiError::InsufficientPermissions("admin:api_keys"),
            ApiError::TierNotAllowed { tier: "unmetered", plan: "pro" },
            ApiError::IdempotencyKeyInUse { retry_after: secs(3) },
            ApiError::PayloadTooLarge,
            ApiError::UnsupportedMediaType,
            ApiError::IdempotencyKeyReused,
            ApiError::invalid_request(FieldError::new("expires_at", "must be in the future")),
            limited,
            internal,
            unavailable,
        ],
        "list_api_keys" => vec![
            problem("per_page", "is invalid"),
            ApiError::InvalidKey,
            ApiError::InsufficientPermissions("admin:api_keys"),
            limited,
            internal,
            unavailable,
        ],
        "get_usage" => {
            vec![ApiError::InvalidKey, ApiError::InsufficientPermissions("read:usage"), limited, internal, unavailable]
        }
        "list_ledger_entries" => vec![
            problem("starting_after", "is invalid"),
            ApiError::InvalidKey,
            ApiError::InsufficientPermissions("read:usage"),
            limited,
            internal,
            unavailable,
        ],
        "revoke_api_key" => vec![
            ApiError::InvalidKey,
            ApiError::InsufficientPermissions("admin:api_keys"),
            ApiError::LastAdminKey,
            ApiError::ResourceNotFound("API key"),
            limited,
            internal,
            unavailable,
        ],
        _ => Vec::new(),
    }
}

fn permission_catalogue() -> String {
    crate::auth::Permission::ALL.map(|p| p.as_str()).join(", ")
}

fn response_example(operation: &str, status: &str) -> Option<Value> {
    let status: u16 = status.parse().ok()?;
    if operation == "healthz" {
        return Some(json!({"ok": {"value": {"status": "ok"}}}));
    }
    if operation == "metrics" {
        let text = "# HELP leadlex_credits_charged Credits charged for successful lookups.\n# TYPE leadlex_credits_charged counter\nleadlex_credits_charged_total 42\n# EOF\n";
        return Some(json!({"sample": {"value": text}}));
    }
    if operation == "readyz" && status == 200 {
        let value = <super::health::Readiness as poem_openapi::types::Example>::example().to_json();
        return Some(json!({"ready": {"value": value}}));
    }
    match (operation, status) {
        ("enrich_email_or_domain", 200) => {
            let value = <super::enrich::EnrichResponse as Example>::example().to_json();
            return Some(json!({"jane": {"summary": "The public docs' example, as the sandbox vendors answer it", "value": value}}));
        }
        ("enrich_bulk", 200) => {
            let value = <super::bulk::BulkResponse as Example>::example().to_json();
            return Some(json!({"crm_export": {"summary": "The answer to the request example", "value": value}}));
        }
        ("submit_enrichment_job", 202) => {
            let value = <super::jobs::JobResponse as Example>::example().to_json();
            return Some(json!({"queued": {"summary": "The request example, just stored", "value": value}}));
        }
        ("get_enrichment_job", 200) => {
            let value = super::jobs::JobResponse { data: super::jobs::example_job("completed") }.to_json();
            return Some(json!({"completed": {"summary": "The request example's job, done", "value": value}}));
        }
        ("cancel_enrichment_job", 200) => {
            let value = super::jobs::JobResponse { data: super::jobs::example_job("cancelled") }.to_json();
            return Some(json!({"cancelled": {"summary": "The request example's job, cancelled before it started", "value": value}}));
        }
        ("list_enrichment_jobs", 200) => {
            let value = <super::jobs::JobListResponse as Example>::example().to_json();
            return Some(json!({"one_job": {"summary": "A workspace with the request example's job, done", "value": value}}));
        }
        ("get_enrichment_job_results", 200) => {
            let value = <super::jobs::JobResultsResponse as Example>::example().to_json();
            return Some(json!({"crm_export": {"summary": "The request example's results", "value": value}}));
        }
        ("create_webhook", 201) => {
            let value = <super::webhooks::WebhookSecretResponse as Example>::example().to_json();
            return Some(json!({"crm_sync": {"summary": "The webhook created by the request example", "value": value}}));
        }
        ("create_api_key", 201) => {
            let value = <keys::ApiKeyCreatedResponse as Example>::example().to_json();
            return Some(json!({"ci_key": {"summary": "The key created by the request example", "value": value}}));
        }
        ("get_usage", 200) => {
            let value = <super::account::UsageResponse as Example>::example().to_json();
            return Some(json!({"pro": {"summary": "A pro workspace after its first lookup", "value": value}}));
        }
        ("list_ledger_entries", 200) => {
            let value = <super::account::LedgerResponse as Example>::example().to_json();
            return Some(json!({"pro": {"summary": "The same workspace's ledger: its grant and its first charge", "value": value}}));
        }
        ("list_api_keys", 200) => {
            let value = <keys::ListApiKeysResponse as Example>::example().to_json();
            return Some(json!({"search": {"summary": "`?search=CI` after the request example of `create_api_key`", "value": value}}));
        }
        _ => {}
    }
    let examples: serde_json::Map<String, Value> = error_examples(operation)
        .into_iter()
        .filter(|e| e.status().as_u16() == status)
        .map(|e| {
            let body = e.envelope(EXAMPLE_REQUEST_ID.into());
            let code = body.error.code.to_json().and_then(|c| c.as_str().map(str::to_string)).unwrap_or_default();
            (code, json!({"value": body.to_json()}))
        })
        .collect();
    (!examples.is_empty()).then(|| Value::Object(examples))
}

const EXAMPLE_REQUEST_ID: &str = "req_8f14e45fceea167a5a36dedd4bea2543";

/// The payloads webhooks send, as components (no operation answers with them, so the
/// derive does not list them; OpenAPI 3.0 has no `webhooks` section).
fn add_webhook_payloads(spec: &mut Value) {
    let mut registry = poem_openapi::registry::Registry::new();
    super::webhooks::payload_schemas(&mut registry);
    let Some(schemas) = spec.pointer_mut("/components/schemas").and_then(Value::as_object_mut) else { return };
    for (name, schema) in registry.schemas {
        if !schemas.contains_key(&name) {
            schemas.insert(name, serde_json::to_value(&schema).expect("a schema serialises"));
        }
    }
    schemas.sort_keys();
}

/// The component schemas `roots` refer to, directly or through other components.
fn reachable_schemas<'a>(spec: &Value, roots: impl IntoIterator<Item = &'a Value>) -> std::collections::BTreeSet<String> {
    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(name) = map.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/components/schemas/")) {
                    out.push(name.to_string());
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut todo = Vec::new();
    roots.into_iter().for_each(|root| refs(root, &mut todo));
    let mut seen = std::collections::BTreeSet::new();
    while let Some(name) = todo.pop() {
        if seen.insert(name.clone()) {
            refs(&spec["components"]["schemas"][&name], &mut todo);
        }
    }
    seen
}

/// Request bodies are closed: every object schema a request body uses declares
/// `additionalProperties: false`, as the server refuses a field it does not name (the
/// request types derive with `deny_unknown_fields`; `every_operation_refuses_an_unknown_field`
/// holds the two together). poem-openapi's derive cannot say `false` (its
/// `additionalProperties` is a schema). Response schemas stay open, so that clients
/// accept the fields a later minor version adds; a schema used by both would be
/// ambiguous, and `no_schema_is_both_request_and_response` forbids it.
fn close_request_bodies(spec: &mut Value) {
    let (requests, responses) = request_and_response_schemas(spec);
    for name in requests.difference(&responses) {
        let schema = &mut spec["components"]["schemas"][name];
        if schema["type"] == "object" && schema.get("properties").is_some() {
            schema["additionalProperties"] = Value::Bool(false);
        }
    }
}

/// The component schemas the operations' request bodies reach, and those their
/// responses reach.
fn request_and_response_schemas(spec: &Value) -> (std::collections::BTreeSet<String>, std::collections::BTreeSet<String>) {
    let operations =
        || spec["paths"].as_object().into_iter().flatten().flat_map(|(_, item)| item.as_object().into_iter().flatten().map(|(_, op)| op));
    let requests = reachable_schemas(spec, operations().filter_map(|op| op.get("requestBody")));
    let responses = reachable_schemas(spec, operations().filter_map(|op| op.get("responses")));
    (requests, responses)
}

/// The published spec, built once per process: what `/openapi.json` and `/openapi.yaml`
/// serve and what the per-request tables below (operation ids, allowed methods, property
/// paths) are read from.
pub fn openapi() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(openapi_value)
}

/// The spec as a JSON value, built afresh (see [`openapi`] for the process's copy).
pub fn openapi_value() -> Value {
    let mut spec: Value = serde_json::from_str(&super::openapi_service().spec()).expect("spec is JSON");
    add_webhook_payloads(&mut spec);
    describe_shared_failures(&mut spec);
    fix_header_names(&mut spec);
    add_examples(&mut spec);
    declare_public_operations(&mut spec);
    close_request_bodies(&mut spec);
    spec
}

/// The path, within the published object schema `outer`, of the property holding an
/// `inner` object (`items[]` for a list of them), for error details; `None` if none does.
pub fn property_path(outer: &str, inner: &str) -> Option<String> {
    let spec = openapi();
    let target = format!("#/components/schemas/{inner}");
    let properties = spec["components"]["schemas"][outer]["properties"].as_object()?;
    properties.iter().find_map(|(name, schema)| {
        if schema["$ref"] == target.as_str() {
            Some(name.clone())
        } else if schema["items"]["$ref"] == target.as_str() {
            Some(format!("{name}[]"))
        } else {
            None
        }
    })
}

/// The spec's paths compiled once for matching the path of a request: a path without
/// parameters is found by hash (most requests, `/healthz` included, cost one lookup), a
/// templated one segment by segment, in the spec's order. Every request asks it (the
/// middleware's operation and `Allow` header), so nothing here splits a template or
/// scans a path per request more than once.
struct PathTable {
    literal: HashMap<String, PathOperations>,
    templated: Vec<(Vec<Segment>, PathOperations)>,
}

/// One segment of a path template: itself, or `{name}` (any non-empty segment).
enum Segment {
    Literal(String),
    Parameter,
}

/// What a path of the spec answers: its operations by method, and its `Allow` header.
struct PathOperations {
    /// (method in capitals, operationId).
    operations: Vec<(String, String)>,
    allow: String,
}

impl PathTable {
    fn get() -> &'static PathTable {
        static TABLE: OnceLock<PathTable> = OnceLock::new();
        TABLE.get_or_init(|| {
            let mut table = PathTable { literal: HashMap::new(), templated: Vec::new() };
            for (path, item) in openapi()["paths"].as_object().into_iter().flatten() {
                let operations: Vec<(String, String)> = item
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(m, op)| (m.to_uppercase(), op["operationId"].as_str().unwrap_or_default().to_string()))
                    .collect();
                let mut methods: Vec<&str> = operations.iter().map(|(m, _)| m.as_str()).collect();
                if methods.contains(&"GET") {
                    methods.push("HEAD");
                }
                let entry = PathOperations { allow: methods.join(", "), operations };
                if path.contains('{') {
                    table.templated.push((segments_of(path), entry));
                } else {
                    table.literal.insert(path.clone(), entry);
                }
            }
            table
        })
    }

    fn find(&self, path: &str) -> Option<&PathOperations> {
        if let Some(entry) = self.literal.get(path) {
            return Some(entry);
        }
        self.templated.iter().find(|(segments, _)| segments_match(segments, path)).map(|(_, entry)| entry)
    }
}

/// A path template's segments.
fn segments_of(template: &str) -> Vec<Segment> {
    template
        .split('/')
        .map(|s| if s.starts_with('{') && s.ends_with('}') { Segment::Parameter } else { Segment::Literal(s.to_string()) })
        .collect()
}

fn segments_match(template: &[Segment], path: &str) -> bool {
    let mut parts = path.split('/');
    for segment in template {
        match (segment, parts.next()) {
            (Segment::Literal(literal), Some(part)) if literal == part => {}
            (Segment::Parameter, Some(part)) if !part.is_empty() => {}
            _ => return false,
        }
    }
    parts.next().is_none()
}

/// The operationId of a method and path, for metric labels (`None`: not an operation).
pub fn operation_id(method: &str, path: &str) -> Option<&'static str> {
    let entry = PathTable::get().find(path)?;
    entry.operations.iter().find(|(m, _)| m == method).map(|(_, id)| id.as_str())
}

/// The methods a path answers, for the `Allow` header of a 405 (read off the spec).
pub fn allowed_methods(path: &str) -> Option<&'static str> {
    PathTable::get().find(path).map(|entry| entry.allow.as_str())
}

/// Whether a concrete path is an instance of a spec path template (`{id}` matches one
/// non-empty segment).
pub fn template_matches(template: &str, path: &str) -> bool {
    segments_match(&segments_of(template), path)
}

/// The spec as pretty JSON (what `openapi/leadlex.json` holds).
pub fn openapi_json_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| format!("{}\n", serde_json::to_string_pretty(openapi()).expect("serialises")))
}

pub fn openapi_yaml_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| serde_yaml::to_string(openapi()).expect("serialises"))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operation of the published spec is found by its method and a concrete path
    /// (each parameter a value), and only by those; its path's `Allow` names its methods.
    #[test]
    fn every_operation_is_found_by_method_and_concrete_path() {
        let mut seen = 0;
        for (template, item) in openapi()["paths"].as_object().unwrap() {
            let concrete = template.split('/').map(|s| if s.starts_with('{') { "abc_123" } else { s }).collect::<Vec<_>>().join("/");
            for (method, op) in item.as_object().unwrap() {
                let method = method.to_uppercase();
                assert_eq!(operation_id(&method, &concrete), op["operationId"].as_str(), "{method} {concrete}");
                assert!(allowed_methods(&concrete).unwrap().split(", ").any(|m| m == method), "{concrete}");
                seen += 1;
            }
            assert_eq!(operation_id("PUT", &concrete), None);
            assert_eq!(operation_id("GET", &format!("{concrete}/")), None);
        }
        assert!(seen >= 27, "{seen}");
        assert_eq!(operation_id("DELETE", "/v1/webhooks//"), None, "a parameter is never empty");
        assert_eq!(operation_id("DELETE", "/v1/webhooks/"), None);
        assert_eq!(allowed_methods("/v1/webhooks/wh_1"), Some("GET, PATCH, DELETE, HEAD"));
        assert_eq!(allowed_methods("/v1/nothing"), None);
        assert_eq!(operation_id("GET", "/healthz"), Some("healthz"));
    }

    /// Closing request bodies must not close a response schema (clients would refuse a
    /// field a later version adds).
    #[test]
    fn no_schema_is_both_request_and_response() {
        let spec = openapi();
        let (requests, responses) = request_and_response_schemas(spec);
        let shared: Vec<&String> =
            requests.intersection(&responses).filter(|n| spec["components"]["schemas"][n.as_str()]["type"] == "object").collect();
        assert_eq!(shared, Vec::<&String>::new());
    }

    /// Every object a request body uses is closed; no response schema is.
    #[test]
    fn request_bodies_are_closed_and_responses_open() {
        let spec = openapi_value();
        let schemas = spec["components"]["schemas"].as_object().unwrap();
        for name in [
            "EnrichRequest",
            "BulkRequest",
            "BulkItem",
            "JobRequest",
            "CreateApiKeyRequest",
            "SuppressionRequest",
            "CreateWebhookRequest",
            "UpdateWebhookRequest",
        ] {
            assert_eq!(schemas[name]["additionalProperties"], Value::Bool(false), "{name}");
        }
        for name in ["EnrichResponse", "ErrorBody", "Job", "ApiKey"] {
            assert!(schemas[name].get("additionalProperties").is_none(), "{name}");
        }
    }
}

#[cfg(test)]
mod property_paths {
    #[test]
    fn an_item_is_found_in_its_list() {
        assert_eq!(super::property_path("BulkRequest", "BulkItem").as_deref(), Some("items[]"));
        assert_eq!(super::property_path("JobRequest", "BulkItem").as_deref(), Some("items[]"));
        assert_eq!(super::property_path("EnrichRequest", "EnrichFields"), None);
    }
}
