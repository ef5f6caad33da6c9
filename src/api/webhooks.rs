//! `/v1/webhooks`: a workspace's signed webhooks (permission `admin:webhooks`): create,
//! list, read, change, delete, rotate the secret, send a test ping, list and redeliver
//! deliveries. The contract and thin handlers over [`crate::webhooks`]; the payloads the
//! server sends are published as schema components (`*Event`, see [`payload_schemas`]).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{
    param::{Path, Query},
    payload::Json,
    registry::Registry,
    types::{Example, MaybeUndefined, Type},
    Enum, Object, OpenApi,
};

use super::account::CursorMeta;
use super::error::ApiError;
use super::fields::{not_null, Nullable, Text, WebhookUrl};
use super::jobs::Job;
use super::keys::ApiKey;
use super::responses::{failures, successes};
use super::security::ApiKeyAuth;
use super::{ApiTags, AppState};
use crate::webhooks::{DeliveryView, Event, NewWebhook, WebhookPatch, WebhookView, DEFAULT_LOW_BALANCE_THRESHOLD};

/// An event a webhook can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Enum)]
pub enum WebhookEventName {
    /// A job's last item is done (`data`: the job).
    #[oai(rename = "enrichment.job.completed")]
    JobCompleted,
    /// A job was cancelled (`data`: the job).
    #[oai(rename = "enrichment.job.cancelled")]
    JobCancelled,
    /// An API key was created (`data`: the key, never its secret).
    #[oai(rename = "api_key.created")]
    ApiKeyCreated,
    /// An API key was revoked (`data`: the key).
    #[oai(rename = "api_key.revoked")]
    ApiKeyRevoked,
    /// A charge took the balance below the webhook's `low_balance_threshold`.
    #[oai(rename = "credits.low")]
    CreditsLow,
}

impl From<WebhookEventName> for Event {
    fn from(e: WebhookEventName) -> Self {
        match e {
            WebhookEventName::JobCompleted => Event::JobCompleted,
            WebhookEventName::JobCancelled => Event::JobCancelled,
            WebhookEventName::ApiKeyCreated => Event::ApiKeyCreated,
            WebhookEventName::ApiKeyRevoked => Event::ApiKeyRevoked,
            WebhookEventName::CreditsLow => Event::CreditsLow,
        }
    }
}

/// A new webhook.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// Where to POST events: an `https://` URL. Where it points is checked at each
    /// delivery: loopback, private, link-local (cloud metadata) and other internal
    /// addresses are refused. (A server configured for development also takes `http://`
    /// to a loopback host.)
    #[oai(validator(min_length = 1, max_length = 2048))]
    pub url: WebhookUrl,
    /// The events to send: at least one, each at most once.
    #[oai(validator(min_items = 1, max_items = 5, unique_items))]
    pub events: Vec<WebhookEventName>,
    /// What the webhook is for.
    #[oai(validator(max_length = 200))]
    pub description: MaybeUndefined<Text>,
    /// Whether events are sent (default `true`).
    pub active: MaybeUndefined<bool>,
    /// For `credits.low`: the event fires when a charge takes the balance from at least
    /// this to below it (default 100).
    #[oai(validator(minimum(value = "1"), maximum(value = "1000000000")))]
    pub low_balance_threshold: MaybeUndefined<i64>,
}

/// A change to a webhook: the fields sent change, the others stay.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct UpdateWebhookRequest {
    /// See `CreateWebhookRequest`.
    #[oai(validator(min_length = 1, max_length = 2048))]
    pub url: MaybeUndefined<WebhookUrl>,
    /// Replaces the list of events.
    #[oai(validator(min_items = 1, max_items = 5, unique_items))]
    pub events: MaybeUndefined<Vec<WebhookEventName>>,
    /// An empty string removes the description.
    #[oai(validator(max_length = 200))]
    pub description: MaybeUndefined<Text>,
    /// `true` turns a webhook on again (also one the server turned off).
    pub active: MaybeUndefined<bool>,
    #[oai(validator(minimum(value = "1"), maximum(value = "1000000000")))]
    pub low_balance_threshold: MaybeUndefined<i64>,
}

/// A webhook, never with its secret.
#[derive(Debug, Clone, Object)]
pub struct Webhook {
    /// `wh_…`.
    pub id: String,
    pub url: String,
    /// `enrichment.job.completed`, `enrichment.job.cancelled`, `api_key.created`,
    /// `api_key.revoked`, `credits.low` (more may be added).
    pub events: Vec<String>,
    pub description: Nullable<String>,
    /// Whether events are sent to it.
    pub active: bool,
    pub low_balance_threshold: i64,
    /// Why the server turned it off (its deliveries kept failing for a day); `null`
    /// otherwise. Turn it on again with `PATCH {"active": true}`.
    pub disabled_reason: Nullable<String>,
    /// `succeeded` or `failed`: how the last delivery attempt went; `null` before any.
    pub last_delivery_status: Nullable<String>,
    pub last_delivery_at: Nullable<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<WebhookView> for Webhook {
    fn from(w: WebhookView) -> Self {
        Self {
            id: w.id,
            url: w.url,
            events: w.events,
            description: w.description.into(),
            active: w.active,
            low_balance_threshold: w.low_balance_threshold,
            disabled_reason: w.disabled_reason.into(),
            last_delivery_status: w.last_delivery_status.into(),
            last_delivery_at: w.last_delivery_at.map(crate::time::at).into(),
            created_at: crate::time::at(w.created_at),
            updated_at: crate::time::at(w.updated_at),
        }
    }
}

/// A webhook with its signing secret: shown in this answer only.
#[derive(Clone, Object)]
pub struct WebhookWithSecret {
    #[oai(flatten)]
    pub webhook: Webhook,
    /// The signing secret (`whsec_…`): every delivery carries `X-LeadLex-Signature:
    /// sha256=<hex HMAC-SHA256 of the raw body, keyed with this whole string>`. Shown in
    /// this answer only: store it now.
    pub secret: String,
}

/// Never prints the secret.
impl std::fmt::Debug for WebhookWithSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookWithSecret").field("webhook", &self.webhook).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Object)]
pub struct WebhookSecretResponse {
    pub data: WebhookWithSecret,
}

#[derive(Debug, Clone, Object)]
pub struct WebhookResponse {
    pub data: Webhook,
}

#[derive(Debug, Clone, Object)]
pub struct WebhookList {
    pub webhooks: Vec<Webhook>,
}

#[derive(Debug, Clone, Object)]
pub struct WebhookListResponse {
    pub data: WebhookList,
    pub meta: CursorMeta,
}

/// One event for one webhook, and how its attempts went.
#[derive(Debug, Clone, Object)]
pub struct Delivery {
    /// A UUID: the `X-LeadLex-Delivery-ID` header, the same on every attempt (dedupe by it).
    pub id: String,
    /// The payload's `id` (`evt_…`).
    pub event_id: String,
    /// The event's name (`ping` for a test).
    pub event: String,
    /// `pending` (an attempt is due at `next_retry_at`), `succeeded` or `failed` (every
    /// retry failed).
    pub status: String,
    /// Attempts made so far.
    pub attempt: i32,
    /// The last attempt's HTTP status; `null` before one, or when none came back.
    pub status_code: Nullable<i32>,
    /// How long the last attempt took, in milliseconds.
    pub latency_ms: Nullable<i64>,
    /// Why the last attempt failed; `null` when it did not.
    pub error: Nullable<String>,
    /// When the event happened.
    pub created_at: DateTime<Utc>,
    pub last_attempt_at: Nullable<DateTime<Utc>>,
    /// When the next attempt is due; `null` unless `pending`.
    pub next_retry_at: Nullable<DateTime<Utc>>,
}

impl From<DeliveryView> for Delivery {
    fn from(d: DeliveryView) -> Self {
        Self {
            id: d.id,
            event_id: d.event_id,
            event: d.event,
            status: d.status,
            attempt: d.attempts,
            status_code: d.status_code.into(),
            latency_ms: d.latency_ms.into(),
            error: d.error.into(),
            created_at: crate::time::at(d.created_at),
            last_attempt_at: d.last_attempt_at.map(crate::time::at).into(),
            next_retry_at: d.next_retry_at.map(crate::time::at).into(),
        }
    }
}

#[derive(Debug, Clone, Object)]
pub struct DeliveryResponse {
    pub data: Delivery,
}

#[derive(Debug, Clone, Object)]
pub struct DeliveryList {
    pub deliveries: Vec<Delivery>,
}

#[derive(Debug, Clone, Object)]
pub struct DeliveryListResponse {
    pub data: DeliveryList,
    pub meta: CursorMeta,
}

// ---- The payloads the server sends (published as components; no operation answers them).

/// `enrichment.job.completed` and `enrichment.job.cancelled`.
#[derive(Debug, Clone, Object)]
pub struct JobEvent {
    /// `evt_…`: the event's id.
    pub id: String,
    /// `enrichment.job.completed` or `enrichment.job.cancelled`.
    pub event: String,
    pub created_at: DateTime<Utc>,
    pub workspace_id: String,
    pub data: Job,
}

/// `api_key.created` and `api_key.revoked`.
#[derive(Debug, Clone, Object)]
pub struct ApiKeyEvent {
    /// `evt_…`.
    pub id: String,
    /// `api_key.created` or `api_key.revoked`.
    pub event: String,
    pub created_at: DateTime<Utc>,
    pub workspace_id: String,
    pub data: ApiKey,
}

/// What `credits.low` says.
#[derive(Debug, Clone, Object)]
pub struct CreditsLow {
    /// The balance right after the charge that crossed the threshold.
    pub credits_remaining: i64,
    /// The webhook's threshold.
    pub low_balance_threshold: i64,
}

/// `credits.low`.
#[derive(Debug, Clone, Object)]
pub struct CreditsLowEvent {
    /// `evt_…`.
    pub id: String,
    /// `credits.low`.
    pub event: String,
    pub created_at: DateTime<Utc>,
    pub workspace_id: String,
    pub data: CreditsLow,
}

/// What `ping` says.
#[derive(Debug, Clone, Object)]
pub struct Ping {
    pub webhook_id: String,
}

/// `ping`, sent by `POST /v1/webhooks/{id}/test`.
#[derive(Debug, Clone, Object)]
pub struct PingEvent {
    /// `evt_…`.
    pub id: String,
    /// `ping`.
    pub event: String,
    pub created_at: DateTime<Utc>,
    pub workspace_id: String,
    pub data: Ping,
}

/// Registers the payload schemas as components of the spec (OpenAPI 3.0 has no
/// `webhooks` section): `JobEvent`, `ApiKeyEvent`, `CreditsLowEvent`, `PingEvent`.
pub fn payload_schemas(registry: &mut Registry) {
    JobEvent::register(registry);
    ApiKeyEvent::register(registry);
    CreditsLowEvent::register(registry);
    PingEvent::register(registry);
}

/// The payload component of each event.
pub const PAYLOAD_SCHEMAS: [(&str, &str); 6] = [
    ("enrichment.job.completed", "JobEvent"),
    ("enrichment.job.cancelled", "JobEvent"),
    ("api_key.created", "ApiKeyEvent"),
    ("api_key.revoked", "ApiKeyEvent"),
    ("credits.low", "CreditsLowEvent"),
    ("ping", "PingEvent"),
];

// ---- Examples.

const EXAMPLE_ID: &str = "wh_019a2b3c4d5e7f808192a3b4c5d6e7f9";

pub fn example_webhook() -> Webhook {
    Webhook {
        id: EXAMPLE_ID.into(),
        url: "https://hooks.example.com/leadlex".into(),
        events: vec!["enrichment.job.completed".into(), "credits.low".into()],
        description: Some("CRM sync".to_string()).into(),
        active: true,
        low_balance_threshold: 500,
        disabled_reason: None.into(),
        last_delivery_status: None.into(),
        last_delivery_at: None.into(),
        created_at: crate::time::at(1_796_000_000_000),
        updated_at: crate::time::at(1_796_000_000_000),
    }
}

impl Example for CreateWebhookRequest {
    fn example() -> Self {
        Self {
            url: WebhookUrl("https://hooks.example.com/leadlex".into()),
            events: vec![WebhookEventName::JobCompleted, WebhookEventName::CreditsLow],
            description: MaybeUndefined::Value(Text("CRM sync".into())),
            active: MaybeUndefined::Undefined,
            low_balance_threshold: MaybeUndefined::Value(500),
        }
    }
}

impl Example for WebhookSecretResponse {
    fn example() -> Self {
        Self {
            data: WebhookWithSecret { webhook: example_webhook(), secret: "whsec_Q2hhbmdlIG1lOiB0aGlzIGlzIGFuIGV4YW1wbGUgc2VjcmV0".into() },
        }
    }
}

successes! {
    /// The webhook, with its secret.
    pub enum CreateWebhookOk {
        /// Created: store `secret` now, it is not shown again.
        201 => Created(Json<WebhookSecretResponse>),
    }
}

successes! {
    /// A page of webhooks.
    pub enum ListWebhooksOk {
        /// The workspace's webhooks, oldest first.
        200 => Ok(Json<WebhookListResponse>),
    }
}

successes! {
    /// The webhook.
    pub enum WebhookOk {
        /// The webhook as it is now.
        200 => Ok(Json<WebhookResponse>),
    }
}

successes! {
    /// The webhook with its new secret.
    pub enum RotateSecretOk {
        /// Rotated: every attempt from now on (retries included) is signed with the new
        /// secret; the old one no longer verifies. Store it now.
        200 => Ok(Json<WebhookSecretResponse>),
    }
}

successes! {
    /// The webhook is gone.
    pub enum DeleteWebhookOk {
        /// Deleted, with its deliveries (pending ones are not sent).
        204 => Deleted,
    }
}

successes! {
    /// The ping's delivery, after its attempt.
    pub enum PingOk {
        /// Attempted: `status` says whether the endpoint took it (a failed ping is
        /// retried like any delivery).
        200 => Ok(Json<DeliveryResponse>),
    }
}

successes! {
    /// A page of deliveries.
    pub enum ListDeliveriesOk {
        /// The webhook's deliveries, newest first.
        200 => Ok(Json<DeliveryListResponse>),
    }
}

successes! {
    /// The delivery, queued again.
    pub enum RedeliverOk {
        /// Queued: attempted within seconds (once the webhook is active), same delivery id,
        /// with a fresh round of retries.
        202 => Accepted(Json<DeliveryResponse>),
    }
}

failures! {
    /// Every way creating a webhook can fail. Nothing is created.
    pub enum CreateWebhookFailure {
        /// `validation_error`: a field is missing or malformed (`details` names it).
        400 => BadRequest,
        401 => Unauthorized,
        403 => Forbidden,
        /// `payload_too_large`: the body is over 16 KiB.
        413 => PayloadTooLarge,
        /// `unsupported_media_type`: the body is not JSON.
        415 => UnsupportedMediaType,
        /// `invalid_request`: the workspace has its maximum of 20 webhooks in this mode
        /// (live or test) already; delete one first.
        422 => UnprocessableEntity,
        429 => TooManyRequests + u64,
        500 => InternalServerError,
        503 => ServiceUnavailable + u64,
    }
}

failures! {
    /// Every way listing webhooks can fail.
    pub enum ListWebhooksFailure {
        /// `validation_error`: a parameter is malformed.
        400 => BadRequest,
        401 => Unauthorized,
        403 => Forbidden,
        429 => TooManyRequests + u64,
        500 => InternalServerError,
        503 => ServiceUnavailable + u64,
    }
}

failures! {
    /// Every way an operation on one webhook can fail. Nothing changes.
    pub enum WebhookFailure {
        401 => Unauthorized,
        403 => Forbidden,
        /// `not_found`: the workspace has no webhook with this id.
        404 => NotFound,
        429 => TooManyRequests + u64,
        500 => InternalServerError,
        503 => ServiceUnavailable + u64,
    }
}

failures! {
    /// Every way changing a webhook can fail. Nothing changes.
    pub enum UpdateWebhookFailure {
        /// `validation_error`: a field is malformed (`details` names it).
        400 => BadRequest,
        401 => Unauthorized,
        403 => Forbidden,
        /// `not_found`: the workspace has no webhook with this id.
        404 => NotFound,
        /// `payload_too_large`: the body is over 16 KiB.
        413 => PayloadTooLarge,
        /// `unsupported_media_type`: the body is not JSON.
        415 => UnsupportedMediaType,
        429 => TooManyRequests + u64,
        500 => InternalServerError,
        503 => ServiceUnavailable + u64,
    }
}

failures! {
    /// Every way listing deliveries can fail.
    pub enum ListDeliveriesFailure {
        /// `validation_error`: a parameter is malformed.
        400 => BadRequest,
        401 => Unauthorized,
        403 => Forbidden,
        /// `not_found`: the workspace has no webhook with this id, or the webhook no
        /// delivery with the id in `starting_after`.
        404 => NotFound,
        429 => TooManyRequests + u64,
        500 => InternalServerError,
        503 => ServiceUnavailable + u64,
    }
}

failures! {
    /// Every way redelivering can fail. Nothing changes.
    pub enum RedeliverFailure {
        401 => Unauthorized,
        403 => Forbidden,
        /// `not_found`: the workspace has no such webhook, or it no such delivery.
        404 => NotFound,
        429 => TooManyRequests + u64,
        500 => InternalServerError,
        503 => ServiceUnavailable + u64,
    }
}

fn default_limit() -> u32 {
    25
}

fn events_of(list: Vec<WebhookEventName>) -> std::collections::BTreeSet<Event> {
    list.into_iter().map(Event::from).collect()
}

pub struct WebhooksApi;

#[OpenApi(tag = "ApiTags::Webhooks")]
impl WebhooksApi {
    /// Create a webhook
    ///
    /// Registers an `https://` endpoint for the events it names. Each event is POSTed as
    /// JSON (`{"id", "event", "created_at", "workspace_id", "data"}`; the schemas
    /// `JobEvent`, `ApiKeyEvent`, `CreditsLowEvent`, `PingEvent`) with the headers
    /// `X-LeadLex-Signature` (`sha256=` and the hex HMAC-SHA256 of the raw body, keyed
    /// with the secret), `X-LeadLex-Timestamp` (Unix seconds of the attempt),
    /// `X-LeadLex-Delivery-ID` (the same on every retry: dedupe by it) and `User-Agent:
    /// LeadLex-Webhook/1.0`. A 2xx within 10 seconds is success; otherwise the delivery
    /// is retried after 5 s, 30 s, 5 min, 1 h and 6 h (with jitter), then marked failed.
    /// The answer carries the signing secret, shown this once. Requires
    /// `admin:webhooks`. See `docs/webhooks.md`.
    #[oai(path = "/v1/webhooks", method = "post", operation_id = "create_webhook")]
    async fn create(
        &self,
        auth: ApiKeyAuth,
        state: Data<&Arc<AppState>>,
        body: Json<CreateWebhookRequest>,
    ) -> Result<CreateWebhookOk, CreateWebhookFailure> {
        let req = body.0;
        let spec = NewWebhook {
            url: req.url.0,
            events: events_of(req.events),
            description: not_null("description", req.description)?.map(|t| t.0),
            active: not_null("active", req.active)?.unwrap_or(true),
            low_balance_threshold: not_null("low_balance_threshold", req.low_balance_threshold)?.unwrap_or(DEFAULT_LOW_BALANCE_THRESHOLD),
        };
        let (view, secret) = state.webhooks.create(&auth.0.scope, &spec, crate::now_ms()).await.map_err(ApiError::from)?;
        Ok(CreateWebhookOk::Created(Json(WebhookSecretResponse { data: WebhookWithSecret { webhook: view.into(), secret: secret.0 } })))
    }

    /// List webhooks
    ///
    /// The workspace's webhooks, oldest first, a page at a time (pass `meta.next_cursor`
    /// as `starting_after`), each with how its last delivery went. Requires
    /// `admin:webhooks`.
    #[oai(path = "/v1/webhooks", method = "get", operation_id = "list_webhooks")]
    async fn list(
        &self,
        auth: ApiKeyAuth,
        state: Data<&Arc<AppState>>,
        /// Webhooks per page.
        #[oai(default = "default_limit", validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<u32>,
        /// The `id` of the last webhook of the previous page.
        #[oai(validator(pattern = "^wh_[0-9a-f]{32}$"))]
        starting_after: Query<Option<String>>,
    ) -> Result<ListWebhooksOk, ListWebhooksFailure> {
        let (found, next) =
            state.webhooks.list(&auth.0.scope, starting_after.0.as_deref(), u64::from(limit.0)).await.map_err(ApiError::from)?;
        Ok(ListWebhooksOk::Ok(Json(WebhookListResponse {
            data: WebhookList { webhooks: found.into_iter().map(Webhook::from).collect() },
            meta: CursorMeta { limit: limit.0, next_cursor: next.into() },
        })))
    }

    /// Read a webhook
    ///
    /// One webhook of the workspace (never its secret). Requires `admin:webhooks`.
    #[oai(path = "/v1/webhooks/:id", method = "get", operation_id = "get_webhook")]
    async fn get(
        &self,
        auth: ApiKeyAuth,
        state: Data<&Arc<AppState>>,
        /// The webhook's `id` (`wh_…`).
        id: Path<String>,
    ) -> Result<WebhookOk, WebhookFailure> {
        let view = state.webhooks.get(&auth.0.scope, &id.0).await.map_err(ApiError::from)?;
        Ok(WebhookOk::Ok(Json(WebhookResponse { data: view.into() })))
    }

    /// Change a webhook
    ///
    /// Changes the fields sent (`url`, `events`, `description`, `active`,
    /// `low_balance_threshold`). `{"active": true}` turns on a webhook the server turned
    /// off. Requires `admin:webhooks`.
    #[oai(path = "/v1/webhooks/:id", method = "patch", operation_id = "update_webhook")]
    async fn update(
        &self,
        auth: ApiKeyAuth,
        state: Data<&Arc<AppState>>,
        /// The webhook's `id` (`wh_…`).
        id: Path<String>,
        body: Json<UpdateWebhookRequest>,
    ) -> Result<WebhookOk, UpdateWebhookFailure> {
        let req = body.0;
        let patch = WebhookPatch {
            url: not_null("url", req.url)?.map(|u| u.0),
            events: not_null("events", req.events)?.map(events_of),
            description: not_null("description", req.description)?.map(|t| t.0),
            active: not_null("active", req.active)?,
            low_balance_threshold: not_null("low_balance_threshold", req.low_balance_threshold)?,
        };
        let view = state.webhooks.update(&auth.0.scope, &id.0, &patch, crate::now_ms()).await.map_err(ApiError::from)?;
        Ok(WebhookOk::Ok(Json(WebhookResponse { data: view.into() })))
    }

    /// Delete a webhook
    ///
    /// Deletes the webhook and its deliveries; pending ones are not sent. Requires
    /// `admin:webhooks`.
    #[oai(path = "/v1/webhooks/:id", method = "delete", operation_id = "delete_webhook")]
    async fn delete(
        &self,
        auth: ApiKeyAuth,
        state: Data<&Arc<AppState>>,
        /// The webhook's `id` (`wh_…`).
        id: Path<String>,
    ) -> Result<DeleteWebhookOk, WebhookFailure> {
        state.webhooks.delete(&auth.0.scope, &id.0).await.map_err(ApiError::from)?;
        Ok(DeleteWebhookOk::Deleted)
    }

    /// Rotate a webhook's secret
    ///
    /// Replaces the signing secret at once: every attempt from now on, retries of
    /// earlier events included, is signed with the new one. The answer carries it, shown
    /// this once. Requires `admin:webhooks`.
    #[oai(path = "/v1/webhooks/:id/rotate-secret", method = "post", operation_id = "rotate_webhook_secret")]
    async fn rotate(
        &self,
        auth: ApiKeyAuth,
        state: Data<&Arc<AppState>>,
        /// The webhook's `id` (`wh_…`).
        id: Path<String>,
    ) -> Result<RotateSecretOk, WebhookFailure> {
        let (view, secret) = state.webhooks.rotate_secret(&auth.0.scope, &id.0, crate::now_ms()).await.map_err(ApiError::from)?;
        Ok(RotateSecretOk::Ok(Json(WebhookSecretResponse { data: WebhookWithSecret { webhook: view.into(), secret: secret.0 } })))
    }

    /// Send a test ping
    ///
    /// Sends a `ping` event (`PingEvent`) to the webhook now, active or not, and answers
    /// with the delivery after the attempt: whether the endpoint took it, its status
    /// code, latency and error. Requires `admin:webhooks`.
    #[oai(path = "/v1/webhooks/:id/test", method = "post", operation_id = "test_webhook")]
    async fn test(
        &self,
        auth: ApiKeyAuth,
        state: Data<&Arc<AppState>>,
        /// The webhook's `id` (`wh_…`).
        id: Path<String>,
    ) -> Result<PingOk, WebhookFailure> {
        let delivery = state.webhooks.ping(&auth.0.scope, &id.0, crate::now_ms()).await.map_err(ApiError::from)?;
        Ok(PingOk::Ok(Json(DeliveryResponse { data: delivery.into() })))
    }

    /// List a webhook's deliveries
    ///
    /// Newest first, a page at a time: each event sent (or to send) to the webhook, its
    /// attempts, the last one's status code, latency and error, and when the next retry
    /// is due. Requires `admin:webhooks`.
    #[oai(path = "/v1/webhooks/:id/deliveries", method = "get", operation_id = "list_webhook_deliveries")]
    async fn deliveries(
        &self,
        auth: ApiKeyAuth,
        state: Data<&Arc<AppState>>,
        /// The webhook's `id` (`wh_…`).
        id: Path<String>,
        /// Deliveries per page.
        #[oai(default = "default_limit", validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<u32>,
        /// The `id` of the last delivery of the previous page.
        #[oai(validator(pattern = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"))]
        starting_after: Query<Option<String>>,
    ) -> Result<ListDeliveriesOk, ListDeliveriesFailure> {
        let (found, next) = state
            .webhooks
            .deliveries(&auth.0.scope, &id.0, starting_after.0.as_deref(), u64::from(limit.0))
            .await
            .map_err(ApiError::from)?;
        Ok(ListDeliveriesOk::Ok(Json(DeliveryListResponse {
            data: DeliveryList { deliveries: found.into_iter().map(Delivery::from).collect() },
            meta: CursorMeta { limit: limit.0, next_cursor: next.into() },
        })))
    }

    /// Redeliver an event
    ///
    /// Queues the delivery again, due now, with a fresh round of retries: the same
    /// payload and the same `X-LeadLex-Delivery-ID` (a receiver that processed it already
    /// can tell). Requires `admin:webhooks`.
    #[oai(path = "/v1/webhooks/:id/deliveries/:delivery_id/redeliver", method = "post", operation_id = "redeliver_webhook_delivery")]
    async fn redeliver(
        &self,
        auth: ApiKeyAuth,
        state: Data<&Arc<AppState>>,
        /// The webhook's `id` (`wh_…`).
        id: Path<String>,
        /// The delivery's `id`.
        delivery_id: Path<String>,
    ) -> Result<RedeliverOk, RedeliverFailure> {
        let delivery = state.webhooks.redeliver(&auth.0.scope, &id.0, &delivery_id.0, crate::now_ms()).await.map_err(ApiError::from)?;
        Ok(RedeliverOk::Accepted(Json(DeliveryResponse { data: delivery.into() })))
    }
}
