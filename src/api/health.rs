//! `GET /healthz`: the process is alive and serving (touches no database).
//! `GET /readyz`: the process can serve traffic: its database and, when configured, Redis
//! answer. `GET /metrics`: Prometheus metrics (OpenMetrics text). None needs a key or is
//! rate limited; expose `/metrics` on an internal network only.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{payload::Json, ApiResponse, Object, OpenApi};

use super::error::{ApiError, ErrorBody};
use super::{ApiTags, AppState};

#[derive(Debug, Object)]
#[oai(example)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

impl poem_openapi::types::Example for Health {
    fn example() -> Self {
        Self { status: "ok".into() }
    }
}

#[derive(ApiResponse)]
#[oai(header(name = "X-Request-ID", ty = "String", description = "The request's id (echoed or generated)."))]
pub enum HealthResponse {
    /// The process is alive.
    #[oai(status = 200)]
    Ok(Json<Health>),
}

/// The state of each dependency.
#[derive(Debug, Object)]
#[oai(example)]
pub struct Readiness {
    /// `ready`, or `degraded`: serving correctly, with an optional dependency down
    /// (Redis: rate limits are counted by each replica on its own until it answers).
    /// Either way, send this replica traffic.
    pub status: String,
    /// `ok`.
    pub database: String,
    /// `ok`; `unreachable` (degraded: limits counted by this replica alone); or
    /// `not_configured` when rate limits live in the process by design.
    pub redis: String,
}

impl poem_openapi::types::Example for Readiness {
    fn example() -> Self {
        Self { status: "ready".into(), database: "ok".into(), redis: "ok".into() }
    }
}

#[derive(ApiResponse)]
#[oai(header(name = "X-Request-ID", ty = "String", description = "The request's id (echoed or generated)."))]
pub enum ReadyResponse {
    /// Ready to serve: the database answers (within the probe's bound). `status` says
    /// `degraded` when Redis is configured but does not answer (still serving).
    #[oai(status = 200)]
    Ready(Json<Readiness>),
    /// `service_unavailable`: the database does not answer within the probe's bound
    /// (500 ms); `message` says so. Take this replica out of rotation and ask again after
    /// `Retry-After` seconds.
    #[oai(status = 503)]
    NotReady(
        Json<ErrorBody>,
        /// Seconds before asking again.
        #[oai(header = "Retry-After")]
        u64,
    ),
}

/// Metrics as text that Prometheus scrapes (`text/plain; version=0.0.4`, which generated
/// clients understand; the body is OpenMetrics-compatible text).
pub struct OpenMetricsText(pub String);

impl poem_openapi::payload::Payload for OpenMetricsText {
    const CONTENT_TYPE: &'static str = "text/plain; version=0.0.4; charset=utf-8";

    fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
        <String as poem_openapi::types::Type>::schema_ref()
    }
}

impl poem::IntoResponse for OpenMetricsText {
    fn into_response(self) -> poem::Response {
        poem::Response::builder().content_type(<Self as poem_openapi::payload::Payload>::CONTENT_TYPE).body(self.0)
    }
}

#[derive(ApiResponse)]
#[oai(header(name = "X-Request-ID", ty = "String", description = "The request's id (echoed or generated)."))]
pub enum MetricsResponse {
    /// Every metric: requests by operation and status, latency histograms, vendor calls
    /// by outcome and latency, circuit-breaker states, cache hits and misses, coalesced
    /// lookups, credits charged, group-commit batch sizes and durations, webhook delivery
    /// attempts by outcome and their duration.
    #[oai(status = 200)]
    Ok(OpenMetricsText),
}

/// How long readiness waits for a dependency: a probe always answers well within an
/// orchestrator's usual 1 s timeout.
pub const READINESS_BOUND: std::time::Duration = std::time::Duration::from_millis(450);

pub struct HealthApi;

#[OpenApi(tag = "ApiTags::Operations")]
impl HealthApi {
    /// Liveness probe
    ///
    /// Answers 200 as long as the process serves HTTP. Needs no key and touches no
    /// database, so it costs nothing and is not rate limited.
    #[oai(path = "/healthz", method = "get", operation_id = "healthz")]
    async fn healthz(&self) -> HealthResponse {
        HealthResponse::Ok(Json(Health { status: "ok".into() }))
    }

    /// Prometheus metrics
    ///
    /// The service's metrics in the Prometheus text format, for a Prometheus scraper.
    /// Labels never carry keys, workspaces or inputs.
    #[oai(path = "/metrics", method = "get", operation_id = "metrics")]
    async fn metrics(&self, state: Data<&Arc<AppState>>) -> MetricsResponse {
        MetricsResponse::Ok(OpenMetricsText(state.metrics.render()))
    }

    /// Readiness probe
    ///
    /// "Send me traffic": 200 while the database answers, whatever Redis does (with Redis
    /// down the replica serves on its own rate limits, and says `degraded`); 503 when the
    /// database does not answer. Always answers within 500 ms, whatever the dependencies
    /// do (each is asked at once, with that bound). Needs no key and is not rate limited.
    #[oai(path = "/readyz", method = "get", operation_id = "readyz")]
    async fn readyz(&self, state: Data<&Arc<AppState>>) -> ReadyResponse {
        let (database, redis) = tokio::join!(
            tokio::time::timeout(READINESS_BOUND, state.db.ping()),
            tokio::time::timeout(READINESS_BOUND, state.limiter.ping())
        );
        let database = matches!(database, Ok(Ok(())));
        // `None`: Redis not configured; `Some(false)`: it did not answer (in time).
        let redis = redis.unwrap_or(Some(false));
        if !database {
            let err = ApiError::NotReady { unreachable: "database".into() };
            let retry_after = err.retry_after_secs().unwrap_or(1);
            return ReadyResponse::NotReady(Json(err.body()), retry_after);
        }
        let (status, redis) = match redis {
            None => ("ready", "not_configured"),
            Some(true) => ("ready", "ok"),
            Some(false) => ("degraded", "unreachable"),
        };
        ReadyResponse::Ready(Json(Readiness { status: status.into(), database: "ok".into(), redis: redis.into() }))
    }
}
