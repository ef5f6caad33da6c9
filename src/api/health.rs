//! `GET /healthz`: the process is alive and serving (touches no database).

use poem_openapi::{payload::Json, ApiResponse, Object, OpenApi};

use super::ApiTags;

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
}
