//! `/v1/api-keys`: a workspace manages its own API keys (permission `admin:api_keys`),
//! in the shapes LeadLex documents. The contract (request, responses, every error) and
//! thin handlers over [`crate::keys`].

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{
    param::{Header, Path, Query},
    payload::Json,
    types::{Example, MaybeUndefined},
    Enum, Object, OpenApi,
};

use super::error::ApiError;
use super::fields::{not_null, Nullable, PermissionName, Text};
use super::responses::{failures, successes};
use super::security::ApiKeyAuth;
use super::{ApiTags, AppState};
use crate::auth::{KeyMode, RateLimitTier};
use crate::idempotency::Idempotent;
use crate::keys::{self, CreatedKey, Creator, KeyView, ListQuery, NewKeySpec};

/// How a key is rate-limited, against its workspace's plan (`standard` when a new key
/// does not say).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "RateLimitTier", rename_all = "snake_case")]
pub enum RateLimitTierName {
    /// The workspace's plan limits (per minute and per day), shared with its other
    /// standard keys. The default.
    Standard,
    /// Limits of the key's own, apart from the workspace's standard keys: five times the
    /// plan's per-minute limit, and the plan's daily quota. Not on the starter plan.
    High,
    /// No per-minute limit and no daily quota (lookups still cost credits). Only on the
    /// org and unmetered plans.
    Unmetered,
}

impl From<RateLimitTierName> for RateLimitTier {
    fn from(t: RateLimitTierName) -> Self {
        match t {
            RateLimitTierName::Standard => RateLimitTier::Standard,
            RateLimitTierName::High => RateLimitTier::High,
            RateLimitTierName::Unmetered => RateLimitTier::Unmetered,
        }
    }
}

/// Whether a key spends real credits (`live`) or is answered by the sandbox for free
/// (`test`, a `wbk_test_…` key; see `docs/testing.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "KeyMode", rename_all = "snake_case")]
pub enum KeyModeName {
    /// Real vendors, real credits, the plan's rate limits.
    Live,
    /// The built-in sandbox data only, never charged, test-mode rate limits of its own
    /// (10 per minute, 1,000 per day). The default for a key created by a test-mode key,
    /// which may create test-mode keys only.
    Test,
}

impl From<KeyModeName> for KeyMode {
    fn from(m: KeyModeName) -> Self {
        match m {
            KeyModeName::Live => KeyMode::Live,
            KeyModeName::Test => KeyMode::Test,
        }
    }
}

/// A new API key.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    /// A name to recognise the key by.
    #[oai(validator(min_length = 1, max_length = 120))]
    pub name: Text,
    /// What the key may do: at least one permission, each at most once.
    #[oai(validator(min_items = 1, max_items = 5, unique_items))]
    pub permissions: Vec<PermissionName>,
    /// What the key is for.
    #[oai(validator(max_length = 500))]
    pub description: MaybeUndefined<Text>,
    // No doc comment: it would wrap the `$ref` in an `allOf`, which openapi-python-client
    // cannot read. `RateLimitTier` says that `standard` is the default.
    pub rate_limit_tier: MaybeUndefined<RateLimitTierName>,
    /// When the key stops working (RFC 3339, in the future). Never, when left out.
    pub expires_at: MaybeUndefined<DateTime<Utc>>,
    // No doc comment, as for `rate_limit_tier`: `KeyMode` says what the default is.
    pub mode: MaybeUndefined<KeyModeName>,
}

/// A key just created, with its secret.
#[derive(Clone, Object)]
pub struct ApiKeyCreated {
    pub id: String,
    /// The secret key (`wbk_…`): shown in this answer only (and in a replay of it, for
    /// the same `Idempotency-Key` within 24 hours). Store it now.
    pub key: String,
    /// The key's first characters, to recognise it in lists and logs.
    pub prefix: String,
    pub name: String,
    pub description: Nullable<String>,
    /// The key's permissions (see `Permission`; more may be added).
    pub permissions: Vec<String>,
    /// `standard`, `high` or `unmetered` (see `RateLimitTier`; more may be added).
    pub rate_limit_tier: String,
    /// `live` or `test` (see `KeyMode`).
    pub mode: String,
    pub expires_at: Nullable<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// Never prints the secret.
impl std::fmt::Debug for ApiKeyCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyCreated").field("id", &self.id).field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl From<CreatedKey> for ApiKeyCreated {
    fn from(k: CreatedKey) -> Self {
        Self {
            permissions: k.permissions,
            rate_limit_tier: k.rate_limit_tier,
            mode: k.mode,
            expires_at: k.expires_at.map(crate::time::at).into(),
            created_at: crate::time::at(k.created_at),
            description: k.description.into(),
            id: k.id,
            key: k.key,
            prefix: k.prefix,
            name: k.name,
        }
    }
}

/// The answer to a key creation.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct ApiKeyCreatedResponse {
    pub data: ApiKeyCreated,
}

/// A key as listed: never its secret.
#[derive(Debug, Clone, Object)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub description: Nullable<String>,
    /// The key's first characters.
    pub prefix: String,
    /// The key's permissions (see `Permission`; more may be added).
    pub permissions: Vec<String>,
    /// `standard`, `high` or `unmetered` (see `RateLimitTier`; more may be added).
    pub rate_limit_tier: String,
    /// `live` or `test` (see `KeyMode`).
    pub mode: String,
    /// The id of the key that created this one; `null` when an operator did.
    pub created_by: Nullable<String>,
    pub created_at: DateTime<Utc>,
    /// When the key was last used, to the minute; `null` if never.
    pub last_used_at: Nullable<DateTime<Utc>>,
    pub expires_at: Nullable<DateTime<Utc>>,
    /// `null` unless revoked.
    pub revoked_at: Nullable<DateTime<Utc>>,
}

impl From<KeyView> for ApiKey {
    fn from(k: KeyView) -> Self {
        Self {
            permissions: k.permissions,
            rate_limit_tier: k.rate_limit_tier,
            mode: k.mode,
            description: k.description.into(),
            created_by: k.created_by.into(),
            created_at: crate::time::at(k.created_at),
            last_used_at: k.last_used_at.map(crate::time::at).into(),
            expires_at: k.expires_at.map(crate::time::at).into(),
            revoked_at: k.revoked_at.map(crate::time::at).into(),
            id: k.id,
            name: k.name,
            prefix: k.prefix,
        }
    }
}

#[derive(Debug, Clone, Object)]
pub struct ApiKeyList {
    pub api_keys: Vec<ApiKey>,
}

/// Where a page sits.
#[derive(Debug, Clone, Object)]
pub struct PageMeta {
    pub page: u32,
    pub per_page: u32,
    /// How many keys match, on every page.
    pub total: u64,
}

/// A page of the workspace's keys, newest first.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct ListApiKeysResponse {
    pub data: ApiKeyList,
    pub meta: PageMeta,
}

/// The key the documentation shows (its `id`, `key`, `prefix` and times are made up).
fn example_key() -> (ApiKeyCreated, ApiKey) {
    let created = crate::time::at(1_796_000_000_000);
    let expires = DateTime::parse_from_rfc3339(EXAMPLE_EXPIRY).expect("RFC 3339").with_timezone(&Utc);
    let perms = vec!["write:enrich".to_string()];
    let made = ApiKeyCreated {
        id: "key_3f1c8a9d0b2e4f6a8c0d1e2f3a4b5c6d".into(),
        key: EXAMPLE_SECRET.into(),
        prefix: EXAMPLE_SECRET[..12].into(),
        name: EXAMPLE_NAME.into(),
        description: Some(EXAMPLE_DESCRIPTION.to_string()).into(),
        permissions: perms.clone(),
        rate_limit_tier: "standard".into(),
        mode: "live".into(),
        expires_at: Some(expires).into(),
        created_at: created,
    };
    let listed = ApiKey {
        id: made.id.clone(),
        name: made.name.clone(),
        description: made.description.clone(),
        prefix: made.prefix.clone(),
        permissions: perms,
        rate_limit_tier: "standard".into(),
        mode: "live".into(),
        created_by: Some("key_9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b".to_string()).into(),
        created_at: created,
        last_used_at: Nullable(None),
        expires_at: made.expires_at.clone(),
        revoked_at: Nullable(None),
    };
    (made, listed)
}

/// The secret the documentation shows: the shape of a key, plainly not one.
pub const EXAMPLE_SECRET: &str = "wbk_EXAMPLE000000000000000000000000000000000000";
pub const EXAMPLE_NAME: &str = "CI pipeline";
pub const EXAMPLE_DESCRIPTION: &str = "Enrichment from the nightly CRM sync";
pub const EXAMPLE_EXPIRY: &str = "2030-01-01T00:00:00Z";

impl Example for ApiKeyCreatedResponse {
    fn example() -> Self {
        Self { data: example_key().0 }
    }
}

impl Example for ListApiKeysResponse {
    fn example() -> Self {
        Self { data: ApiKeyList { api_keys: vec![example_key().1] }, meta: PageMeta { page: 1, per_page: 25, total: 1 } }
    }
}

successes! {
    /// The key was created.
    pub enum CreateKeyOk {
        /// The key, with its secret. A retry with the same `Idempotency-Key` and the same
        /// request within 24 hours gets this same answer (secret included) with
        /// `Idempotent-Replayed: true`, and creates nothing.
        201 => Created(
            Json<ApiKeyCreatedResponse>,
            /// `true` when this response is a replay of an earlier call with the same
            /// `Idempotency-Key`.
            #[oai(header = "Idempotent-Replayed")]
            Option<bool>,
        ),
    }
}

failures! {
    /// Every way creating a key can fail. Nothing is created.
    pub enum CreateKeyFailure {
        /// `validation_error`: a field is missing or malformed (an unknown permission: the
        /// message names the valid ones); `details` lists the fields at fault.
        400 => BadRequest,
        401 => Unauthorized,
        /// `insufficient_permissions`: the key lacks `admin:api_keys`, or is a test-mode key
        /// asking for a live one; or `tier_not_allowed`: the workspace's plan does not allow
        /// the `rate_limit_tier`.
        403 => Forbidden,
        /// `idempotency_key_in_use`: a request with the same `Idempotency-Key` is still in
        /// progress; retry after `Retry-After` seconds.
        409 => Conflict + u64,
        /// `payload_too_large`: the request body exceeds the size limit.
        413 => PayloadTooLarge,
        /// `unsupported_media_type`: the body is not sent as `application/json`.
        415 => UnsupportedMediaType,
        /// `idempotency_key_reused`: the `Idempotency-Key` was used with a different
        /// request; or `invalid_request`: `expires_at` is not in the future.
        422 => UnprocessableEntity,
        /// `rate_limited`: a rate limit of the key is exhausted; retry after `Retry-After`
        /// seconds.
        429 => TooManyRequests + u64,
        500 => InternalServerError,
        /// `service_unavailable`: leadlex's own store is unreachable; retry (with the same
        /// `Idempotency-Key`) after `Retry-After` seconds.
        503 => ServiceUnavailable + u64,
    }
}

successes! {
    /// A page of keys.
    pub enum ListKeysOk {
        /// The workspace's keys, newest first; never their secrets.
        200 => Listed(Json<ListApiKeysResponse>),
    }
}

failures! {
    /// Every way listing keys can fail.
    pub enum ListKeysFailure {
        /// `validation_error`: a query parameter is out of range.
        400 => BadRequest,
        401 => Unauthorized,
        403 => Forbidden,
        429 => TooManyRequests + u64,
        500 => InternalServerError,
        503 => ServiceUnavailable + u64,
    }
}

successes! {
    /// The key is revoked.
    pub enum RevokeKeyOk {
        /// Revoked (or it already was): it stops working within a second on every server.
        /// There is no un-revoke.
        204 => Revoked,
    }
}

failures! {
    /// Every way revoking a key can fail. Nothing changes.
    pub enum RevokeKeyFailure {
        401 => Unauthorized,
        /// `insufficient_permissions`: the key lacks `admin:api_keys`; or
        /// `last_admin_key`: it is the workspace's last active key with `admin:api_keys`.
        403 => Forbidden,
        /// `not_found`: the workspace has no key with this id.
        404 => NotFound,
        429 => TooManyRequests + u64,
        500 => InternalServerError,
        503 => ServiceUnavailable + u64,
    }
}

fn default_page() -> u32 {
    1
}

fn default_per_page() -> u32 {
    25
}

pub struct KeysApi;

#[OpenApi(tag = "ApiTags::ApiKeys")]
impl KeysApi {
    /// Create an API key
    ///
    /// Creates a key for the caller's workspace; its secret is in this answer only.
    /// Requires `admin:api_keys`. Send an `Idempotency-Key` (a UUID) to make a retry
    /// safe: within 24 hours, the same request with the same key gets the same answer,
    /// secret included, and creates nothing more (the stored answer is encrypted).
    ///
    /// **Rate-limit tiers**, against the workspace's plan: `standard` shares the plan's
    /// limits with the workspace's other standard keys; `high` has limits of its own, five
    /// times the plan's per-minute limit and the plan's daily quota (not on starter);
    /// `unmetered` has no rate limit (org and unmetered plans only). Credits are charged
    /// the same whatever the tier.
    ///
    /// **Modes.** `live` (the default) keys spend credits with real vendors; `test` keys
    /// (`wbk_test_…`) are answered by the sandbox, never charged, with limits of their own
    /// (10 per minute, 1,000 per day, whatever the tier); see `docs/testing.md`. A
    /// test-mode key creates test-mode keys only (its default), and sees and revokes
    /// test-mode keys only.
    #[oai(path = "/v1/api-keys", method = "post", operation_id = "create_api_key")]
    async fn create(
        &self,
        auth: ApiKeyAuth,
        state: Data<&Arc<AppState>>,
        /// Optional UUID that makes retries safe within 24 hours.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<uuid::Uuid>>,
        body: Json<CreateApiKeyRequest>,
    ) -> Result<CreateKeyOk, CreateKeyFailure> {
        let principal = auth.0;
        let req = body.0;
        let creator = Creator { key_id: &principal.key_id, permissions: &principal.permissions };
        let spec = NewKeySpec {
            name: req.name.0,
            description: not_null("description", req.description)?.map(|t| t.0),
            permissions: req.permissions.into_iter().map(|p| p.0).collect(),
            tier: not_null("rate_limit_tier", req.rate_limit_tier)?.map(RateLimitTier::from).unwrap_or_default(),
            expires_at: not_null("expires_at", req.expires_at)?.map(|t| t.timestamp_millis()),
            mode: not_null("mode", req.mode)?.map(KeyMode::from).unwrap_or(principal.mode()),
        };
        let now = crate::now_ms();
        let (created, replayed) = match idempotency_key.0 {
            Some(key) => {
                let key = key.hyphenated().to_string();
                let idem = Idempotent { key: &key, lease: state.idempotency_lease, ttl: state.idempotency_ttl };
                keys::create_idempotent(&state.db, &state.sealer, &principal.scope, Some(creator), &spec, idem, now).await
            }
            None => keys::create(&state.db, &principal.scope, Some(creator), &spec, now).await.map(|k| (k, false)),
        }
        .map_err(ApiError::from)?;
        Ok(CreateKeyOk::Created(Json(ApiKeyCreatedResponse { data: created.into() }), replayed.then_some(true)))
    }

    /// List API keys
    ///
    /// The workspace's keys, newest first, a page at a time; never their secrets.
    /// Requires `admin:api_keys`. A test-mode key lists test-mode keys only.
    #[oai(path = "/v1/api-keys", method = "get", operation_id = "list_api_keys")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        auth: ApiKeyAuth,
        state: Data<&Arc<AppState>>,
        /// Page number, from 1.
        #[oai(default = "default_page", validator(minimum(value = "1"), maximum(value = "1000000")))]
        page: Query<u32>,
        /// Keys per page.
        #[oai(default = "default_per_page", validator(minimum(value = "1"), maximum(value = "100")))]
        per_page: Query<u32>,
        /// Also list revoked keys.
        #[oai(default)]
        include_revoked: Query<bool>,
        /// Keys whose name contains this, or whose prefix starts with it (case-insensitive
        /// for ASCII letters).
        #[oai(validator(max_length = 120, pattern = "^[^\\x00]*$"))]
        search: Query<Option<String>>,
    ) -> Result<ListKeysOk, ListKeysFailure> {
        let q = ListQuery {
            page: u64::from(page.0),
            per_page: u64::from(per_page.0),
            include_revoked: include_revoked.0,
            search: search.0,
            mode: None,
        };
        let (found, total) = keys::list(&state.db, &auth.0.scope, &q).await.map_err(ApiError::from)?;
        Ok(ListKeysOk::Listed(Json(ListApiKeysResponse {
            data: ApiKeyList { api_keys: found.into_iter().map(ApiKey::from).collect() },
            meta: PageMeta { page: page.0, per_page: per_page.0, total },
        })))
    }

    /// Revoke an API key
    ///
    /// Revokes one of the workspace's keys for good (there is no un-revoke). A key of
    /// another workspace is `404`, like one that does not exist. The workspace's last
    /// active live key with `admin:api_keys` cannot be revoked (`403 last_admin_key`). A test-mode key sees test-mode keys only (a live key's id is
    /// `404` to it). Requires `admin:api_keys`.
    #[oai(path = "/v1/api-keys/:id", method = "delete", operation_id = "revoke_api_key")]
    async fn revoke(
        &self,
        auth: ApiKeyAuth,
        state: Data<&Arc<AppState>>,
        /// The key's `id` (`key_…`).
        id: Path<String>,
    ) -> Result<RevokeKeyOk, RevokeKeyFailure> {
        let job_retention = std::time::Duration::from_secs(state.job_retention_days * 86_400);
        keys::revoke(&state.db, &state.key_cache, &auth.0.scope, &id.0, job_retention, crate::now_ms()).await.map_err(ApiError::from)?;
        Ok(RevokeKeyOk::Revoked)
    }
}
