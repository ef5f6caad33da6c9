//! The HTTP contract: poem-openapi types declare every operation, header and error, and
//! produce the published spec. Handlers parse into domain types, call the domain and map
//! the result; they hold no SQL and no business rule.

pub mod account;
pub mod bulk;
pub mod docs;
pub mod enrich;
pub mod error;
pub mod fields;
pub mod health;
pub mod json;
pub mod keys;
pub mod middleware;
pub mod responses;
pub mod security;
pub mod spec;

use std::sync::Arc;

use poem::{Endpoint, EndpointExt, Route};
use poem_openapi::{ContactObject, LicenseObject, OpenApiService, ServerObject, Tags};

use crate::auth::Authenticator;
use crate::enrich::EnrichService;
use crate::ratelimit::Limiter;

/// Everything a handler may need.
pub struct AppState {
    pub db: sea_orm::DatabaseConnection,
    pub auth: Authenticator,
    pub limiter: Limiter,
    pub enrich: EnrichService,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    pub hot: Arc<crate::hot::HotCaches>,
    pub sealer: crate::seal::Sealer,
    /// How long an `Idempotency-Key` claim is held, and its answer replayed.
    pub idempotency_lease: std::time::Duration,
    pub idempotency_ttl: std::time::Duration,
}

/// The tags of the API; every operation has exactly one.
#[derive(Tags)]
pub enum ApiTags {
    /// Look up the person or organization behind an email address or domain.
    Enrichment,
    /// Liveness and readiness of the service, for load balancers and orchestrators.
    Operations,
    /// The workspace's API keys: create, list, revoke.
    ApiKeys,
    /// What the workspace's plan allows and what is left; the credit ledger.
    Usage,
}

pub type Apis = (enrich::EnrichApi, bulk::BulkApi, keys::KeysApi, account::AccountApi, health::HealthApi);

/// Where the text of the crate's license (`Cargo.toml`: MIT) is published.
const LICENSE_URL: &str = "https://opensource.org/license/mit";

/// The poem-openapi service: the one source of the published spec. Its version and
/// license are the crate's (`Cargo.toml`).
pub fn openapi_service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (enrich::EnrichApi, bulk::BulkApi, keys::KeysApi, account::AccountApi, health::HealthApi),
        "leadlex",
        env!("CARGO_PKG_VERSION"),
    )
    .description(spec::API_DESCRIPTION)
    .server(ServerObject::new("/").description("This leadlex deployment"))
    .license(LicenseObject::new(env!("CARGO_PKG_LICENSE")).url(LICENSE_URL))
    .contact(ContactObject::new().name("leadlex support").url("https://docs.leadlex.com"))
}

/// The whole HTTP application.
pub fn app(state: Arc<AppState>, max_body_bytes: usize) -> impl Endpoint {
    let metrics = state.metrics.clone();
    Route::new()
        .nest("/", openapi_service())
        .at("/openapi.json", poem::get(spec::openapi_json))
        .at("/openapi.yaml", poem::get(spec::openapi_yaml))
        .nest("/docs", docs::swagger_ui())
        .data(state)
        .around(move |ep, req| middleware::request_scope(ep, req, max_body_bytes, metrics.clone()))
}
