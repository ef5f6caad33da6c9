//! The HTTP contract: poem-openapi types declare every operation, header and error, and
//! produce the published spec. Handlers parse into domain types, call the domain and map
//! the result; they hold no SQL and no business rule.

pub mod account;
pub mod alternatives;
pub mod bulk;
pub mod docs;
pub mod enrich;
pub mod error;
pub mod fields;
pub mod health;
pub mod jobs;
pub mod json;
pub mod keys;
pub mod middleware;
pub mod privacy;
pub mod responses;
pub mod security;
pub mod spec;
pub mod text;
pub mod webhooks;

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
    pub limiter: Arc<Limiter>,
    pub enrich: Arc<EnrichService>,
    /// Wakes this process's job worker when a job is stored.
    pub jobs_wake: Arc<tokio::sync::Notify>,
    /// How long a finished job's results are kept.
    pub job_retention_days: u64,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// The key caches `auth` keeps (a revoking request forgets the key at once).
    pub key_cache: Arc<crate::auth::KeyCache>,
    pub sealer: Arc<crate::seal::Sealer>,
    /// The suppression lists (see `crate::privacy`).
    pub suppressions: Arc<crate::privacy::Suppressions>,
    /// The workspace's webhooks and their deliveries.
    pub webhooks: Arc<crate::webhooks::Webhooks>,
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
    /// Enrichment jobs: up to 10,000 items enriched in the background.
    Jobs,
    /// The workspace's do-not-enrich list.
    Privacy,
    /// Signed webhooks: events POSTed to the workspace's endpoints (payload schemas:
    /// `JobEvent`, `ApiKeyEvent`, `CreditsLowEvent`, `PingEvent`).
    Webhooks,
}

/// Where the text of the crate's license (`Cargo.toml`: MIT) is published.
const LICENSE_URL: &str = "https://opensource.org/license/mit";

/// The poem-openapi service: the one source of the published spec. Its version and
/// license are the crate's (`Cargo.toml`).
pub fn openapi_service() -> OpenApiService<impl poem_openapi::OpenApi, ()> {
    OpenApiService::new(
        (
            enrich::EnrichApi,
            bulk::BulkApi,
            jobs::JobsApi,
            keys::KeysApi,
            account::AccountApi,
            privacy::PrivacyApi,
            webhooks::WebhooksApi,
            health::HealthApi,
        ),
        "leadlex",
        env!("CARGO_PKG_VERSION"),
    )
    .description(spec::API_DESCRIPTION)
    .server(ServerObject::new("/").description("This leadlex deployment"))
    .license(LicenseObject::new(env!("CARGO_PKG_LICENSE")).url(LICENSE_URL))
    .contact(ContactObject::new().name("leadlex support").url("https://docs.leadlex.com"))
}

/// The whole HTTP application.
pub fn app(state: Arc<AppState>, limits: middleware::BodyLimits) -> impl Endpoint {
    let metrics = state.metrics.clone();
    let scope_state = state.clone();
    Route::new()
        .nest("/", openapi_service())
        .at("/openapi.json", poem::get(spec::openapi_json))
        .at("/openapi.yaml", poem::get(spec::openapi_yaml))
        .nest("/docs", docs::swagger_ui())
        .data(state)
        .around(move |ep, req| middleware::request_scope(ep, req, limits, metrics.clone(), scope_state.clone()))
}
