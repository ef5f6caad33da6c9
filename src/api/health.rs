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
    /// Always `ready`.
    pub status: String,
    /// `ok`.
    pub database: String,
    /// `ok`, or `not_configured` when rate limits live in the process.
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
    /// Ready to serve: the database (and Redis, when configured) answer.
    #[oai(status = 200)]
    Ready(Json<Readiness>),
    /// `service_unavailable`: a dependency does not answer; `message` says which. Take
    /// this replica out of rotation and ask again after `Retry-After` seconds.
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
    /// Answers 200 when the database and, if configured, Redis answer; 503 otherwise.
    /// Needs no key and is not rate limited.
    #[oai(path = "/readyz", method = "get", operation_id = "readyz")]
    async fn readyz(&self, state: Data<&Arc<AppState>>) -> ReadyResponse {
        let database = state.db.ping().await.is_ok();
        let redis = state.limiter.ping().await;
        if database && redis != Some(false) {
            let redis = if redis.is_some() { "ok" } else { "not_configured" };
            return ReadyResponse::Ready(Json(Readiness { status: "ready".into(), database: "ok".into(), redis: redis.into() }));
        }
        let failing: Vec<&str> =
            [(!database).then_some("database"), (redis == Some(false)).then_some("redis")].into_iter().flatten().collect();
        let err = ApiError::NotReady { unreachable: failing.join(" and ") };
        let retry_after = err.retry_after_secs().unwrap_or(1);
        ReadyResponse::NotReady(Json(err.body()), retry_after)
    }
}
