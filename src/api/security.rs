//! The Bearer security scheme and the permission guard.
//!
//! The checker runs before anything else of an operation: it authenticates the key
//! (401) and counts the request against the workspace's limits (429), recording both in
//! the request scope so that every later response carries the rate-limit headers.
//! [`CanEnrich`] then checks the permission (403) before the body is parsed (400), in
//! the order `docs/design.md` fixes.

use std::sync::Arc;

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
    let principal = state.auth.authenticate(&bearer.token, now).await.map_err(ApiError::from)?;
    match state.limiter.check(&principal.workspace_id, principal.limits, now).await {
        Decision::Allowed(status) => {
            record_caller(&principal, status);
            Ok(principal)
        }
        Decision::Limited { status, retry_after } => {
            record_caller(&principal, status);
            Err(ApiError::RateLimited { retry_after }.into())
        }
    }
}

/// Guard: the authenticated key holds `write:enrich`.
pub struct CanEnrich;

impl<'a> FromRequest<'a> for CanEnrich {
    async fn from_request(_req: &'a Request, _body: &mut RequestBody) -> poem::Result<Self> {
        let principal = current_principal().ok_or(ApiError::InvalidKey)?;
        principal.require(Permission::WriteEnrich).map_err(ApiError::from)?;
        Ok(CanEnrich)
    }
}
