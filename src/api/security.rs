//! The Bearer security scheme and the permission guard.
//!
//! Admission, the one owner of "who calls and may they now": [`authenticate`] (401) runs
//! in the request scope before a byte of the body is read, and [`admit_call`] counts the
//! request against its limits (429) once the body is there (a bulk call counts its
//! items, all at once or not at all), recording both in the request scope so that every
//! later response, whatever answers it (a 413, a 405, the operation), carries the
//! rate-limit headers. The security scheme's checker then only takes the admitted
//! caller.
//! A [`Guard`] ([`CanEnrich`], [`CanManageKeys`]) then checks the permission (403)
//! before the body is parsed (400), in the order `docs/design.md` fixes.

use std::sync::Arc;

use poem::Request;
use poem_openapi::{auth::Bearer, SecurityScheme};

use super::error::ApiError;
use super::middleware::record_caller;
use super::AppState;
use crate::auth::{Permission, Principal};
use crate::ratelimit::Decision;

/// API keys look like `wbk_…`; send them as `Authorization: Bearer wbk_…`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "wbk_ API key", checker = "check_key")]
pub struct ApiKeyAuth(pub Arc<Principal>);

async fn check_key(_req: &Request, _bearer: Bearer) -> poem::Result<Arc<Principal>> {
    // Admitted by the request scope before the operation runs (see [`admit_call`]).
    Ok(super::middleware::current_principal().ok_or(ApiError::InvalidKey)?)
}

/// The Bearer token of `req`, if it sends one.
pub fn bearer_token(req: &Request) -> Option<&str> {
    let value = req.headers().get(poem::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Who calls: the key of `req`, authenticated (`401` otherwise). Runs before a byte of
/// the body is read.
pub async fn authenticate(req: &Request, state: &AppState) -> Result<Arc<Principal>, ApiError> {
    let token = bearer_token(req).ok_or(ApiError::InvalidKey)?;
    Ok(state.auth.authenticate(token, crate::now_ms()).await?)
}

/// The one rate-limit decision of a request (`enrichment`: whether it is an enrichment
/// call, [`is_enrichment_call`]): `units` of `principal`'s limits (a bulk
/// call's items, else 1) counted at once, or none of them (a refused request counts
/// nothing: `429`, with how many items fit for a bulk call). Either way the state is
/// recorded for the response's `X-RateLimit-*` headers.
pub async fn admit_call(enrichment: bool, state: &AppState, principal: &Arc<Principal>, units: u64) -> Result<(), ApiError> {
    let (limit_scope, limits) = principal.limits_for(crate::auth::Work::Request { enrichment });
    match state.limiter.check_n(&limit_scope, limits, units, crate::now_ms()).await {
        Decision::Allowed(status) => {
            record_caller(principal, status);
            Ok(())
        }
        Decision::Limited { status, retry_after, fits } => {
            record_caller(principal, status);
            Err(match units {
                1 => ApiError::RateLimited { retry_after },
                _ => ApiError::TooManyItems { retry_after, fits },
            })
        }
    }
}

/// Whether `req` is an enrichment call (a single or bulk call, a job submission): the
/// calls a test-mode key's small limits count.
pub fn is_enrichment_call(req: &Request) -> bool {
    let path = req.uri().path();
    path.starts_with("/v1/email/enrich") || (req.method() == poem::http::Method::POST && path == "/v1/enrich/jobs")
}

/// The permission each operation needs: the one owner of that rule, enforced by the
/// request scope for every operation under `/v1/` before its body is read (`403`). An
/// operation missing here is refused as a server error, and a test walks the spec to
/// keep every one here.
pub fn permission_of(operation: &str) -> Option<Permission> {
    use Permission::*;
    Some(match operation {
        "enrich_email_or_domain"
        | "enrich_bulk"
        | "submit_enrichment_job"
        | "list_enrichment_jobs"
        | "get_enrichment_job"
        | "cancel_enrichment_job"
        | "get_enrichment_job_results" => WriteEnrich,
        "create_api_key" | "list_api_keys" | "revoke_api_key" => AdminApiKeys,
        "get_usage" | "list_ledger_entries" => ReadUsage,
        "create_suppression" | "list_suppressions" | "delete_suppression" => AdminPrivacy,
        "create_webhook"
        | "list_webhooks"
        | "get_webhook"
        | "update_webhook"
        | "delete_webhook"
        | "rotate_webhook_secret"
        | "test_webhook"
        | "list_webhook_deliveries"
        | "redeliver_webhook_delivery" => AdminWebhooks,
        _ => return None,
    })
}

/// Whether `principal` may call `operation` (`403` otherwise).
pub fn authorise(principal: &Principal, operation: &str) -> Result<(), ApiError> {
    match permission_of(operation) {
        Some(needed) => Ok(principal.require(needed)?),
        None => Err(ApiError::Internal(anyhow::anyhow!("operation {operation} declares no permission"))),
    }
}

#[cfg(test)]
mod tests {
    use super::permission_of;

    /// Every authenticated operation of the spec has its permission here.
    #[test]
    fn every_operation_under_v1_declares_its_permission() {
        let spec = super::super::spec::openapi_value();
        for (path, item) in spec["paths"].as_object().unwrap() {
            for op in item.as_object().unwrap().values() {
                let id = op["operationId"].as_str().unwrap();
                assert_eq!(path.starts_with("/v1/"), permission_of(id).is_some(), "{id} ({path})");
            }
        }
    }
}
