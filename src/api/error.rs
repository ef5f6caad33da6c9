//! The one error envelope of the API and the one place where domain errors become HTTP:
//! `{"error": {"code", "message", "request_id", "details"?}}` with a stable snake_case
//! `code`. Every error leaves the server in this shape, including the ones poem raises by
//! itself (malformed JSON, wrong content type, unknown path, wrong method, body too large).
//!
//! 5xx causes are logged with their whole chain and never sent to the client.

use std::time::Duration;

use poem::{error::ResponseError, http::StatusCode, IntoResponse, Response};
use poem_openapi::{
    registry::{MetaSchema, MetaSchemaRef, Registry},
    types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type},
    Object,
};

use super::middleware::current_request_id;
use crate::auth::AuthError;
use crate::enrich::EnrichError;
use crate::idempotency::IdempotencyError;
use crate::keys::KeyError;
use crate::validation::FieldError;

/// Stable machine-readable error code; branch on this, not on `message`. Published as
/// an open string (the known codes listed in its description), because new codes are
/// added over time: a closed enum would make each new code a breaking change for
/// clients generated from the spec (some refuse a value their enum does not know).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    ValidationError,
    InvalidKey,
    InsufficientCredits,
    InsufficientPermissions,
    LastAdminKey,
    TierNotAllowed,
    NoMatch,
    NotFound,
    MethodNotAllowed,
    IdempotencyKeyInUse,
    PayloadTooLarge,
    UnsupportedMediaType,
    IdempotencyKeyReused,
    InvalidRequest,
    RateLimited,
    InternalError,
    UpstreamUnavailable,
    ServiceUnavailable,
}

impl ErrorCode {
    /// Every code, with what it means (the published description lists them).
    pub const ALL: [(ErrorCode, &'static str, &'static str); 18] = [
        (Self::ValidationError, "validation_error", "400: a field or parameter is missing or malformed; `details` names the fields."),
        (Self::InvalidKey, "invalid_key", "401: the API key is missing, malformed, unknown, revoked or expired."),
        (Self::InsufficientCredits, "insufficient_credits", "402: the workspace credit balance is exhausted."),
        (
            Self::InsufficientPermissions,
            "insufficient_permissions",
            "403: the key lacks the permission the operation needs (`write:enrich`, `admin:api_keys`, …), asked to give a new key a permission it does not hold itself, or is a test-mode key that asked to create a live key.",
        ),
        (Self::LastAdminKey, "last_admin_key", "403: the workspace's last active key with `admin:api_keys` cannot be revoked."),
        (Self::TierNotAllowed, "tier_not_allowed", "403: the workspace's plan does not allow the asked `rate_limit_tier`."),
        (Self::NoMatch, "no_match", "404: upstream providers returned no data for the input."),
        (Self::NotFound, "not_found", "404: no such path, or no such resource in the workspace (an API key, job, suppression, webhook or delivery id)."),
        (Self::MethodNotAllowed, "method_not_allowed", "405: the path exists, the method does not."),
        (Self::IdempotencyKeyInUse, "idempotency_key_in_use", "409: a request with the same `Idempotency-Key` is still in progress."),
        (Self::PayloadTooLarge, "payload_too_large", "413: the request body is too large."),
        (
            Self::UnsupportedMediaType,
            "unsupported_media_type",
            "415: the request body's `Content-Type` is not one the operation takes (`application/json`; `text/csv` too for a job submission).",
        ),
        (Self::IdempotencyKeyReused, "idempotency_key_reused", "422: the `Idempotency-Key` was already used with a different request."),
        (
            Self::InvalidRequest,
            "invalid_request",
            "422: well formed but impossible as asked (an `expires_at` in the past); `details` names the fields.",
        ),
        (Self::RateLimited, "rate_limited", "429: a rate limit is exhausted."),
        (Self::InternalError, "internal_error", "500: an unexpected failure on our side; nothing was charged."),
        (Self::UpstreamUnavailable, "upstream_unavailable", "503: every upstream provider failed; nothing was charged, retry later."),
        (
            Self::ServiceUnavailable,
            "service_unavailable",
            "503: leadlex's own database or cache store is unreachable; nothing was charged, retry later.",
        ),
    ];

    pub fn as_str(self) -> &'static str {
        Self::ALL.iter().find(|(c, ..)| *c == self).map(|(_, name, _)| *name).expect("every code is listed")
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().find(|(_, name, _)| *name == s).map(|(c, ..)| *c)
    }
}

impl Type for ErrorCode {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> std::borrow::Cow<'static, str> {
        "ErrorCode".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Reference(Self::name().into_owned())
    }

    fn register(registry: &mut Registry) {
        static DESCRIPTION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            let mut text = String::from(
                "Stable machine-readable error code: branch on it, never on `message`. \
                 New codes may be added: treat an unknown one by its HTTP status. The codes:\n\n",
            );
            for (_, name, meaning) in ErrorCode::ALL {
                text.push_str(&format!("- `{name}`: {meaning}\n"));
            }
            text
        });
        registry.create_schema::<Self, _>(Self::name().into_owned(), |_| MetaSchema {
            description: Some(DESCRIPTION.as_str()),
            example: Some(serde_json::Value::String("validation_error".into())),
            ..MetaSchema::new("string")
        });
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl ParseFromJSON for ErrorCode {
    fn parse_from_json(value: Option<serde_json::Value>) -> ParseResult<Self> {
        match value.unwrap_or_default() {
            serde_json::Value::String(s) => Self::parse(&s).ok_or_else(|| ParseError::custom(format!("unknown error code {s:?}"))),
            other => Err(ParseError::expected_type(other)),
        }
    }
}

impl ToJSON for ErrorCode {
    fn to_json(&self) -> Option<serde_json::Value> {
        Some(serde_json::Value::String(self.as_str().into()))
    }
}

/// A problem with one field of the request.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct FieldProblem {
    /// The request field at fault, e.g. `email`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
    /// A stable, machine-readable reason where there is one: `below_min_confidence` (a
    /// `no_match` because the best answer was less sure than `min_confidence`).
    #[oai(skip_serializing_if_is_none)]
    pub reason: Option<String>,
}

impl FieldProblem {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into(), reason: None }
    }
}

/// The error itself.
#[derive(Debug, Clone, Object)]
pub struct ErrorDetail {
    // No doc comment here: it would wrap the `$ref` in an `allOf`, which some client
    // generators cannot read. The description lives on `ErrorCode`.
    pub code: ErrorCode,
    /// Human-readable explanation; wording may change.
    pub message: String,
    /// The request's id, as in the `X-Request-ID` response header: quote it to support.
    pub request_id: String,
    /// Field-level problems, for `validation_error` and `invalid_request`; for a bulk
    /// call's `rate_limited`, how many items fit now (field `items`); for a `no_match`
    /// refused by `min_confidence`, that field with reason `below_min_confidence`.
    #[oai(skip_serializing_if_is_none)]
    pub details: Option<Vec<FieldProblem>>,
}

/// The envelope of every error response.
#[derive(Debug, Clone, Object)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// Every error the API answers with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Validation { message: String, details: Vec<FieldProblem> },
    #[error("invalid or expired API key")]
    InvalidKey,
    #[error("the workspace credit balance is exhausted")]
    InsufficientCredits,
    #[error("this API key lacks the `{0}` permission")]
    InsufficientPermissions(&'static str),
    /// A test-mode key asked for something only a live key may do.
    #[error("a test-mode key can create test-mode keys only")]
    TestModeOnly,
    /// A key asked to give a new key a permission it does not hold itself.
    #[error("a key can give a new key only permissions it holds itself; it lacks `{0}`")]
    PermissionNotHeld(&'static str),
    #[error("upstream providers returned no data for the input")]
    NoMatch,
    /// A no-match because the best answer is less sure than the caller asked.
    #[error("no data found with at least the confidence asked for")]
    BelowMinConfidence { confidence: f64, min: f64 },
    #[error("no such path")]
    NotFound,
    /// No such resource in the caller's workspace (one of another workspace included).
    #[error("no such {0}")]
    ResourceNotFound(&'static str),
    #[error("this is the workspace's last active key with the `admin:api_keys` permission; create another one before revoking it")]
    LastAdminKey,
    #[error("the workspace's {plan} plan does not allow `{tier}` keys")]
    TierNotAllowed { tier: &'static str, plan: &'static str },
    #[error("{message}")]
    InvalidRequest { message: String, details: Vec<FieldProblem> },
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    #[error("a request with this Idempotency-Key is still in progress; retry later")]
    IdempotencyKeyInUse { retry_after: Duration },
    #[error("the request body is too large")]
    PayloadTooLarge,
    #[error("the request body's Content-Type is not one this operation takes (application/json; text/csv too for a job submission)")]
    UnsupportedMediaType,
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyKeyReused,
    #[error("rate limit exceeded; retry after the time in Retry-After")]
    RateLimited { retry_after: Duration },
    /// A bulk call's items do not fit in the limits now; `fits` would.
    #[error("the call's items do not fit in the rate limits now; send at most {fits} or retry after the time in Retry-After")]
    TooManyItems { retry_after: Duration, fits: u64 },
    #[error("every upstream provider is unavailable; nothing was charged, retry later")]
    UpstreamUnavailable { retry_after: Duration },
    #[error("the service is temporarily unavailable; nothing was charged, retry later")]
    ServiceUnavailable { retry_after: Duration },
    /// A readiness probe's answer: which dependencies do not answer.
    #[error("not ready: {unreachable} unreachable")]
    NotReady { unreachable: String },
    #[error("internal error; nothing was charged")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// Malformed fields (400 `validation_error`).
    pub fn validation(problems: Vec<FieldError>) -> Self {
        let (message, details) = field_problems(problems);
        Self::Validation { message, details }
    }

    /// Well formed, but not possible as asked (422 `invalid_request`).
    pub fn invalid_request(problem: FieldError) -> Self {
        let (message, details) = field_problems(vec![problem]);
        Self::InvalidRequest { message, details }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Validation { .. } => StatusCode::BAD_REQUEST,
            Self::InvalidKey => StatusCode::UNAUTHORIZED,
            Self::InsufficientCredits => StatusCode::PAYMENT_REQUIRED,
            Self::InsufficientPermissions(_)
            | Self::TestModeOnly
            | Self::PermissionNotHeld(_)
            | Self::LastAdminKey
            | Self::TierNotAllowed { .. } => StatusCode::FORBIDDEN,
            Self::NoMatch | Self::BelowMinConfidence { .. } | Self::NotFound | Self::ResourceNotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::IdempotencyKeyInUse { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::IdempotencyKeyReused | Self::InvalidRequest { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } | Self::TooManyItems { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::UpstreamUnavailable { .. } | Self::ServiceUnavailable { .. } | Self::NotReady { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Validation { .. } => ErrorCode::ValidationError,
            Self::InvalidKey => ErrorCode::InvalidKey,
            Self::InsufficientCredits => ErrorCode::InsufficientCredits,
            Self::InsufficientPermissions(_) | Self::TestModeOnly | Self::PermissionNotHeld(_) => ErrorCode::InsufficientPermissions,
            Self::NoMatch | Self::BelowMinConfidence { .. } => ErrorCode::NoMatch,
            Self::NotFound | Self::ResourceNotFound(_) => ErrorCode::NotFound,
            Self::LastAdminKey => ErrorCode::LastAdminKey,
            Self::TierNotAllowed { .. } => ErrorCode::TierNotAllowed,
            Self::InvalidRequest { .. } => ErrorCode::InvalidRequest,
            Self::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            Self::IdempotencyKeyInUse { .. } => ErrorCode::IdempotencyKeyInUse,
            Self::PayloadTooLarge => ErrorCode::PayloadTooLarge,
            Self::UnsupportedMediaType => ErrorCode::UnsupportedMediaType,
            Self::IdempotencyKeyReused => ErrorCode::IdempotencyKeyReused,
            Self::RateLimited { .. } | Self::TooManyItems { .. } => ErrorCode::RateLimited,
            Self::UpstreamUnavailable { .. } => ErrorCode::UpstreamUnavailable,
            Self::ServiceUnavailable { .. } | Self::NotReady { .. } => ErrorCode::ServiceUnavailable,
            Self::Internal(_) => ErrorCode::InternalError,
        }
    }

    /// Whole seconds for the `Retry-After` header, where the error has one.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::IdempotencyKeyInUse { retry_after }
            | Self::RateLimited { retry_after }
            | Self::TooManyItems { retry_after, .. }
            | Self::UpstreamUnavailable { retry_after }
            | Self::ServiceUnavailable { retry_after } => {
                Some(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)).map(|s| s.max(1))
            }
            Self::NotReady { .. } => Some(STORE_RETRY_AFTER.as_secs()),
            _ => None,
        }
    }

    /// The envelope, stamped with the current request's id. Logs 5xx causes.
    pub fn body(&self) -> ErrorBody {
        let request_id = current_request_id();
        if let Self::Internal(cause) = self {
            tracing::error!(request_id = %request_id, error = ?cause, "internal error");
        }
        self.envelope(request_id)
    }

    /// The envelope with a given request id.
    pub fn envelope(&self, request_id: String) -> ErrorBody {
        let details = match self {
            Self::Validation { details, .. } | Self::InvalidRequest { details, .. } if !details.is_empty() => Some(details.clone()),
            Self::TooManyItems { fits, .. } => {
                let fits = if *fits > crate::bulk::MAX_ITEMS as u64 { crate::bulk::MAX_ITEMS as u64 } else { *fits };
                Some(vec![FieldProblem::new("items", format!("{fits} items fit now"))])
            }
            Self::BelowMinConfidence { confidence, min } => Some(vec![FieldProblem {
                reason: Some("below_min_confidence".into()),
                ..FieldProblem::new("min_confidence", format!("the best answer's confidence is {confidence}, below {min}"))
            }]),
            _ => None,
        };
        ErrorBody { error: ErrorDetail { code: self.code(), message: self.to_string(), request_id, details } }
    }

    /// Classifies an error raised by poem or poem-openapi (or one of ours travelling
    /// inside a `poem::Error`).
    pub fn from_poem(err: poem::Error) -> Self {
        if err.is::<poem_openapi::error::AuthorizationError>() {
            return Self::InvalidKey;
        }
        let err = match err.downcast::<ApiError>() {
            Ok(api) => return api,
            Err(err) => err,
        };
        match err.status() {
            StatusCode::NOT_FOUND => Self::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType,
            StatusCode::UNAUTHORIZED => Self::InvalidKey,
            s if s.is_server_error() => Self::Internal(anyhow::anyhow!("{err}")),
            _ => explain_parse_error(&err.to_string()),
        }
    }
}

/// The message (`field: problem; …`) and the `details` of some field problems.
fn field_problems(problems: Vec<FieldError>) -> (String, Vec<FieldProblem>) {
    let message = problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ");
    (message, problems.into_iter().map(|p| FieldProblem::new(p.field, p.message)).collect())
}

/// How long a client should wait when our own store is unreachable.
const STORE_RETRY_AFTER: Duration = Duration::from_secs(2);

impl ApiError {
    /// Our own database (or cache store) is unreachable: the one place that decides the
    /// answer and its `Retry-After`.
    pub fn store_unavailable(cause: &dyn std::fmt::Display, doing: &str) -> Self {
        tracing::warn!(error = %cause, "database unavailable while {doing}");
        Self::ServiceUnavailable { retry_after: STORE_RETRY_AFTER }
    }

    /// A database error: 503 when the database is unreachable, 500 otherwise.
    pub fn from_db(err: sea_orm::DbErr, doing: &'static str) -> Self {
        if crate::db::is_unavailable(&err) {
            Self::store_unavailable(&err, doing)
        } else {
            Self::Internal(anyhow::Error::new(err).context(doing))
        }
    }
}

/// What a value of the internal type `kind` that was `found` instead is, in the
/// contract's words: the field it sits in and what that field takes (never a Rust type
/// name). A type that is not one of the API's value lists is a request body.
fn in_contract_words(kind: &str, found: &str) -> (&'static str, String) {
    fn among(values: impl IntoIterator<Item = &'static str>) -> String {
        values.into_iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", ")
    }
    use crate::auth::{KeyMode, RateLimitTier};
    use crate::lookup::input::Section;
    use crate::webhooks::Event;
    let (field, takes) = match kind {
        "IncludeSection" => ("include", format!("names sections among {}", among(Section::ALL.map(Section::as_str)))),
        "WebhookEventName" => ("events", format!("names events among {}", among(Event::SUBSCRIBABLE.map(Event::as_str)))),
        "RateLimitTier" => ("rate_limit_tier", format!("is one of {}", among(RateLimitTier::ALL.map(RateLimitTier::as_str)))),
        "KeyMode" => ("mode", format!("is one of {}", among(KeyMode::ALL.map(KeyMode::as_str)))),
        "LedgerReason" => ("reason", format!("is one of {}", among(["enrich", "grant"]))),
        // A field of a plain type: poem-openapi does not say which.
        k if plain_kind(k).is_some() => {
            return match found {
                "null" => ("body", "a required field is missing or null (see the operation's schema)".to_string()),
                _ => ("body", format!("a field must be {}, not {found} (see the operation's schema)", plain_kind(k).unwrap_or_default())),
            };
        }
        _ => return ("body", format!("must be a JSON object, not {found}")),
    };
    (field, format!("{takes}, not {found}"))
}

/// At most this many characters of a name or value the client sent are echoed.
const ECHOED: usize = 64;

fn echoed(text: &str) -> String {
    if text.chars().count() <= ECHOED {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(ECHOED).collect::<String>())
    }
}

/// What a poem-openapi type name of a plain value stands for, in the contract's words
/// (`None`: an object).
fn plain_kind(kind: &str) -> Option<&'static str> {
    Some(match kind {
        k if k.starts_with("integer") => "an integer",
        k if k.starts_with("number") || k.starts_with("float") => "a number",
        k if k.starts_with("string") => "a string",
        "boolean" => "`true` or `false`",
        k if k.starts_with("list_") || k.starts_with('[') => "a list",
        _ => return None,
    })
}

/// The unknown field of poem-openapi's `deny_unknown_fields` message, with its path:
/// `failed to parse "BulkItem": unknown field `x`. (occurred while parsing
/// "list_BulkItem") (occurred while parsing "BulkRequest")` → `items[].x` (the path read
/// off the published schemas). Read from the start of the message only, where no value
/// the client sent can stand (a value is echoed after `found`), so a value cannot forge
/// it; the name, which the client did send, is cut at [`ECHOED`] characters.
fn unknown_field(raw: &str) -> Option<String> {
    let rest = raw.strip_prefix("parse request payload error: failed to parse \"")?;
    let (inner, rest) = rest.split_once("\": unknown field `")?;
    if !inner.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    // The name may hold backticks itself: it ends at the last "`.", after which come only
    // the type names of the chain.
    let end = rest.rfind("`.")?;
    let (name, chain) = (echoed(&rest[..end]), &rest[end + 2..]);
    let outer = chain
        .rsplit("(occurred while parsing \"")
        .next()
        .and_then(|t| t.split('"').next())
        .filter(|t| !chain.trim().is_empty() && *t != inner);
    Some(match outer.and_then(|outer| super::spec::property_path(outer, inner)) {
        Some(path) => format!("{path}.{name}"),
        None => name,
    })
}

/// Turns poem-openapi's parse messages (`failed to parse "EnrichRequest": field `email`
/// verification failed. pattern(…)`) into a message and field-level `details`, in the
/// contract's words. Names are read only from poem-openapi's own words, before any
/// value the client sent (echoed after `found`), and what is echoed is cut short.
fn explain_parse_error(raw: &str) -> ApiError {
    let head = raw.split(" found ").next().unwrap_or(raw);
    let named = |pattern: &str| head.split(pattern).nth(1).and_then(|rest| rest.split('`').next()).map(echoed);
    let (field, what) = if let Some(field) = unknown_field(raw) {
        (field, "is not a field of this request body (see the operation's schema)".to_string())
    } else if let Some(field) = named("field `") {
        // Our own field types say what is wrong after "field `name`: ".
        let own = head.split(&format!("field `{field}`: ")).nth(1).map(|rest| rest.split(" (occurred while").next().unwrap_or(rest));
        let what = if let Some(own) = own {
            own
        } else if raw.contains("maxLength") || raw.contains("maxItems") {
            "is too long"
        } else if raw.contains("minLength") || raw.contains("minItems") {
            "is too short"
        } else if raw.contains("pattern") {
            "has an invalid format"
        } else {
            "is invalid"
        };
        (field, what.to_string())
    } else if let Some(param) = named("parameter `") {
        let uuid = head.contains("string_uuid") || head.contains("(uuid)");
        let what = if uuid { "must be a UUID, such as `9f1c2b2e-6a4d-4c1e-9d43-2f6b8e1a7c55`" } else { "is invalid" };
        (param, what.to_string())
    } else if let Some(kind) = head.split("Expected input type \"").nth(1).and_then(|r| r.split('"').next()) {
        let found = raw.split(" found ").nth(1).and_then(|r| r.split(". (").next()).unwrap_or("something else");
        let found = echoed(found.trim_end_matches('.'));
        let (field, what) = in_contract_words(kind, &found);
        (field.to_string(), what)
    } else if let Some(typed) = raw.strip_prefix("parse request payload error: failed to parse \"") {
        // Valid JSON whose value does not fit its field's type (`1.5` for an integer).
        let kind = typed.split('"').next().unwrap_or_default();
        ("body".to_string(), format!("a field is not {} (see the operation's schema)", plain_kind(kind).unwrap_or("an object")))
    } else if let Some(json) = raw.strip_prefix("parse request payload error: ") {
        ("body".to_string(), format!("is not valid JSON ({})", echoed(json)))
    } else {
        ("body".to_string(), "is not a valid request".to_string())
    };
    let message = format!("{field}: {what}");
    ApiError::Validation { message, details: vec![FieldProblem::new(field, what)] }
}

impl ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        ApiError::status(self)
    }

    fn as_response(&self) -> Response {
        let body = serde_json::to_vec(&self.body().to_json()).expect("envelope serialises");
        let mut resp = Response::builder().status(self.status()).content_type("application/json; charset=utf-8").body(body);
        if let Some(secs) = self.retry_after_secs() {
            resp.headers_mut().insert(poem::http::header::RETRY_AFTER, secs.into());
        }
        resp
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.as_response()
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::InvalidKey => Self::InvalidKey,
            AuthError::MissingPermission(p) => Self::InsufficientPermissions(p.as_str()),
            AuthError::Database(e) => Self::from_db(e, "authenticating"),
        }
    }
}

impl From<IdempotencyError> for ApiError {
    fn from(err: IdempotencyError) -> Self {
        match err {
            IdempotencyError::InUse { retry_after } => Self::IdempotencyKeyInUse { retry_after },
            IdempotencyError::Reused => Self::IdempotencyKeyReused,
            IdempotencyError::Db(e) => Self::from_db(e, "reading or writing an idempotency record"),
        }
    }
}

impl From<EnrichError> for ApiError {
    fn from(err: EnrichError) -> Self {
        match err {
            EnrichError::InsufficientCredits => Self::InsufficientCredits,
            EnrichError::NoMatch => Self::NoMatch,
            EnrichError::BelowMinConfidence { confidence, min } => Self::BelowMinConfidence { confidence, min },
            EnrichError::Idempotency(e) => e.into(),
            EnrichError::UpstreamUnavailable { retry_after } => Self::UpstreamUnavailable { retry_after },
            EnrichError::StoreUnavailable(e) => Self::store_unavailable(&e, "enriching"),
            EnrichError::Internal(e) => Self::Internal(e),
            EnrichError::LeaseLost => Self::Internal(anyhow::anyhow!("a job chunk's lease was lost in a request")),
        }
    }
}

impl From<crate::privacy::PrivacyError> for ApiError {
    fn from(err: crate::privacy::PrivacyError) -> Self {
        use crate::privacy::PrivacyError;
        match err {
            PrivacyError::Invalid(problems) => Self::validation(problems),
            PrivacyError::NotFound => Self::ResourceNotFound("suppression"),
            PrivacyError::Db(e) => Self::from_db(e, "reading or changing a suppression list"),
        }
    }
}

impl From<crate::webhooks::WebhookError> for ApiError {
    fn from(err: crate::webhooks::WebhookError) -> Self {
        use crate::webhooks::WebhookError;
        match err {
            WebhookError::Invalid(problems) => Self::validation(problems),
            WebhookError::NotFound => Self::ResourceNotFound("webhook"),
            WebhookError::DeliveryNotFound => Self::ResourceNotFound("delivery"),
            WebhookError::TooMany => Self::InvalidRequest { message: err_text_too_many(), details: Vec::new() },
            WebhookError::Corrupt(why) => Self::Internal(anyhow::anyhow!("a stored webhook secret: {why}")),
            WebhookError::Db(e) => Self::from_db(e, "reading or changing webhooks"),
        }
    }
}

fn err_text_too_many() -> String {
    crate::webhooks::WebhookError::TooMany.to_string()
}

impl From<crate::jobs::JobError> for ApiError {
    fn from(err: crate::jobs::JobError) -> Self {
        use crate::jobs::JobError;
        match err {
            JobError::NotFound => Self::ResourceNotFound("job"),
            JobError::Idempotency(e) => e.into(),
            JobError::Corrupt(why) => Self::Internal(anyhow::anyhow!("a stored job answer: {why}")),
            JobError::Db(e) => Self::from_db(e, "reading or storing a job"),
        }
    }
}

impl From<KeyError> for ApiError {
    fn from(err: KeyError) -> Self {
        match err {
            KeyError::NotFound | KeyError::NoSuchWorkspace => Self::ResourceNotFound("API key"),
            KeyError::LastAdminKey => Self::LastAdminKey,
            KeyError::LiveKeyFromTestKey => Self::TestModeOnly,
            KeyError::TierNotAllowed { tier, plan } => Self::TierNotAllowed { tier, plan },
            KeyError::Unprocessable(problem) => Self::invalid_request(problem),
            KeyError::Idempotency(e) => e.into(),
            KeyError::PermissionsExceedCreator(p) => Self::PermissionNotHeld(p.as_str()),
            KeyError::Corrupt(why) => Self::Internal(anyhow::anyhow!("a stored key-creation answer: {why}")),
            KeyError::Db(e) => Self::from_db(e, "managing API keys"),
        }
    }
}

#[cfg(test)]
mod parse_errors {
    use super::*;

    fn field_of(raw: &str) -> (String, String) {
        match explain_parse_error(raw) {
            ApiError::Validation { details, .. } => (details[0].field.clone(), details[0].message.clone()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unknown_field_is_named_with_its_path() {
        let top = r#"parse request payload error: failed to parse "EnrichFields": unknown field `inlcude`. (occurred while parsing "EnrichRequest")"#;
        assert_eq!(field_of(top).0, "inlcude");
        let item = r#"parse request payload error: failed to parse "BulkItem": unknown field `x`. (occurred while parsing "list_BulkItem") (occurred while parsing "BulkRequest")"#;
        assert_eq!(field_of(item).0, "items[].x");
        // A name holding backticks is named whole; a long one is cut.
        let ticks = r#"parse request payload error: failed to parse "CreateWebhookRequest": unknown field `a`b`."#;
        assert_eq!(field_of(ticks).0, "a`b");
        let long =
            format!(r#"parse request payload error: failed to parse "CreateWebhookRequest": unknown field `{}`."#, "k".repeat(10_000));
        assert!(field_of(&long).0.chars().count() <= ECHOED + 1);
    }

    /// A value the client sent (echoed after `found`) cannot pose as a field name.
    #[test]
    fn a_value_cannot_forge_the_field() {
        let forged = r#"parse request payload error: failed to parse "CreateApiKeyRequest": Expected input type "PermissionName", found "unknown field `admin_override`". (occurred while parsing "list_PermissionName")"#;
        assert!(!field_of(forged).0.contains("admin_override"), "{:?}", field_of(forged));
        let forged = r#"parse request payload error: failed to parse "CreateWebhookRequest": Expected input type "WebhookEventName", found "field `url`: evil""#;
        assert_eq!(field_of(forged).0, "events");
        let quoted = r#"parse request payload error: failed to parse "X": Expected input type "string", found "a\": unknown field `y`.""#;
        assert_eq!(field_of(quoted).0, "body", "{:?}", field_of(quoted));
    }

    #[test]
    fn a_header_that_is_not_a_uuid_says_so() {
        let raw = r#"failed to parse parameter `Idempotency-Key`: failed to parse "string_uuid": invalid character: expected an optional prefix of `urn:uuid:` followed by [0-9a-fA-F-], found `n` at 1"#;
        let (field, message) = field_of(raw);
        assert_eq!(field, "Idempotency-Key");
        assert!(message.contains("must be a UUID"), "{message}");
    }

    #[test]
    fn type_errors_use_the_contracts_words() {
        let missing = r#"parse request payload error: failed to parse "CreateApiKeyRequest": Expected input type "string", found null. (occurred while parsing "CreateApiKeyRequest")"#;
        assert!(field_of(missing).1.contains("missing"), "{:?}", field_of(missing));
        let typed = r#"parse request payload error: failed to parse "integer_int64": Expected input type "integer_int64", found 1.5. (occurred while parsing "EnrichFields")"#;
        let (_, message) = field_of(typed);
        assert!(message.contains("an integer") && !message.contains("int64"), "{message}");
    }
}
