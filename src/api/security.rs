//! The Bearer security scheme and the permission guard.
//!
//! The checker runs before anything else of an operation: it authenticates the key
//! (401) and counts the request against the workspace's limits (429), recording both in
//! the request scope so that every later response carries the rate-limit headers.
//! A [`Guard`] ([`CanEnrich`], [`CanManageKeys`]) then checks the permission (403)
//! before the body is parsed (400), in the order `docs/design.md` fixes.

use std::{marker::PhantomData, sync::Arc};

use poem::{FromRequest, Request, RequestBody};
use poem_openapi::{auth::Bearer, SecurityScheme};

use super::error::ApiError;
use super::middleware::{current_principal, record_caller};
use super::AppState;
use crate::auth::{Permission, Principal};
use crate::ratelimit::Decision;

/// API keys look like `wbk_…`; send them as `Authorization: Bearer wbk_…`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "wbk_ API key", checker = "check_key")]
pub struct ApiKeyAuth(pub Arc<Principal>);

async fn check_key(req: &Request, bearer: Bearer) -> poem::Result<Arc<Principal>> {
    let state = req.data::<Arc<AppState>>().expect("AppState is attached to the routes");
    let now = crate::now_ms();
    // Authenticated already when the request has a body (before it was read).
    let principal = match super::middleware::take_authenticated() {
        Some(principal) => principal,
        None => state.auth.authenticate(&bearer.token, now).await.map_err(ApiError::from)?,
    };
    let (limit_scope, limits) = principal.limits_for(is_enrichment_call(req));
    match state.limiter.check(&limit_scope, limits, now).await {
        Decision::Allowed(status) => {
            record_caller(&principal, status);
            Ok(principal)
        }
        Decision::Limited { status, retry_after, .. } => {
            record_caller(&principal, status);
            Err(ApiError::RateLimited { retry_after }.into())
        }
    }
}

/// Whether `req` is an enrichment call (a single or bulk call, a job submission): the
/// calls a test-mode key's small limits count.
fn is_enrichment_call(req: &Request) -> bool {
    let path = req.uri().path();
    path.starts_with("/v1/email/enrich") || (req.method() == poem::http::Method::POST && path == "/v1/enrich/jobs")
}

/// A permission an operation needs, as a type (see [`Guard`]).
pub trait Needs {
    const PERMISSION: Permission;
}

/// Guard: the authenticated key holds `N::PERMISSION` (403 otherwise), checked before
/// the body is read.
pub struct Guard<N>(PhantomData<N>);

impl<'a, N: Needs> FromRequest<'a> for Guard<N> {
    async fn from_request(_req: &'a Request, _body: &mut RequestBody) -> poem::Result<Self> {
        let principal = current_principal().ok_or(ApiError::InvalidKey)?;
        principal.require(N::PERMISSION).map_err(ApiError::from)?;
        Ok(Guard(PhantomData))
    }
}

pub struct EnrichPermission;
impl Needs for EnrichPermission {
    const PERMISSION: Permission = Permission::WriteEnrich;
}

pub struct ApiKeysPermission;
impl Needs for ApiKeysPermission {
    const PERMISSION: Permission = Permission::AdminApiKeys;
}

pub struct PrivacyPermission;
impl Needs for PrivacyPermission {
    const PERMISSION: Permission = Permission::AdminPrivacy;
}

pub struct WebhooksPermission;
impl Needs for WebhooksPermission {
    const PERMISSION: Permission = Permission::AdminWebhooks;
}

pub struct UsagePermission;
impl Needs for UsagePermission {
    const PERMISSION: Permission = Permission::ReadUsage;
}

/// Guard: the key holds `write:enrich`.
pub type CanEnrich = Guard<EnrichPermission>;
/// Guard: the key holds `admin:api_keys`.
pub type CanManageKeys = Guard<ApiKeysPermission>;
/// Guard: the key holds `admin:privacy`.
pub type CanManagePrivacy = Guard<PrivacyPermission>;
/// Guard: the key holds `admin:webhooks`.
pub type CanManageWebhooks = Guard<WebhooksPermission>;
/// Guard: the key holds `read:usage`.
pub type CanReadUsage = Guard<UsagePermission>;
