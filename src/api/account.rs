//! `GET /v1/usage` and `GET /v1/credits/ledger` (permission `read:usage`): what a
//! workspace's plan allows and what is left, what its credits did, and every balance
//! change, so that a customer can reconcile charges. The contract and thin handlers over
//! [`crate::credits`]. Neither costs a credit.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{param::Query, payload::Json, types::Example, Enum, Object, OpenApi};

use super::error::ApiError;
use super::fields::Nullable;
use super::middleware::current_rate_limit;
use super::responses::{failures, successes};
use super::security::ApiKeyAuth;
use super::{ApiTags, AppState};
use crate::credits::{self, LedgerQuery, Reason};
use crate::validation::FieldError;

/// The limits the calling key is held to (its workspace's plan, or its tier's).
#[derive(Debug, Clone, Object)]
pub struct UsageLimits {
    /// Requests per minute; `null`: no per-minute limit.
    pub per_minute: Nullable<u32>,
    /// Requests per UTC day; `null`: no daily quota.
    pub per_day: Nullable<u32>,
}

/// What the workspace's credits did (UTC days and months).
#[derive(Debug, Clone, Object)]
pub struct UsageCredits {
    pub balance: i64,
    /// Credits charged for lookups since 00:00 UTC.
    pub charged_today: i64,
    /// Credits charged for lookups since the first of the month, 00:00 UTC.
    pub charged_this_month: i64,
    /// Credits granted since the first of the month, 00:00 UTC.
    pub granted_this_month: i64,
}

#[derive(Debug, Clone, Object)]
pub struct Usage {
    /// The workspace's plan: `starter`, `pro`, `org` or `unmetered`.
    pub plan: String,
    pub limits: UsageLimits,
    /// Requests left today (this one counted); `null`: no daily quota.
    pub remaining_today: Nullable<u64>,
    /// When the daily quota resets (the next 00:00 UTC), in Unix epoch seconds.
    pub resets_at: i64,
    pub credits: UsageCredits,
}

/// The workspace's usage.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct UsageResponse {
    pub data: Usage,
}

impl Example for UsageResponse {
    fn example() -> Self {
        Self {
            data: Usage {
                plan: "pro".into(),
                limits: UsageLimits { per_minute: Some(50).into(), per_day: Some(1_000).into() },
                remaining_today: Some(998).into(),
                resets_at: 1_796_256_000,
                credits: UsageCredits { balance: 999, charged_today: 1, charged_this_month: 1, granted_this_month: 1_000 },
            },
        }
    }
}

/// Why a ledger entry exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum LedgerReason {
    /// A successful lookup: −1.
    Enrich,
    /// Credits added by an operator.
    Grant,
}

impl From<LedgerReason> for Reason {
    fn from(r: LedgerReason) -> Self {
        match r {
            LedgerReason::Enrich => Reason::Enrich,
            LedgerReason::Grant => Reason::Grant,
        }
    }
}

/// One change of the balance.
#[derive(Debug, Clone, Object)]
pub struct LedgerEntry {
    /// `led_…`; also the cursor that pages past it.
    pub id: String,
    /// Credits added (positive) or charged (negative).
    pub delta: i64,
    /// The balance right after this entry.
    pub balance_after: i64,
    /// `enrich` or `grant` (more reasons may be added).
    pub reason: String,
    /// The key that made the call, for `enrich`; `null` for an operator's grant.
    pub api_key_id: Nullable<String>,
    /// The request that was charged (its `X-Request-ID`); `null` for a grant.
    pub request_id: Nullable<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Object)]
pub struct LedgerEntries {
    pub entries: Vec<LedgerEntry>,
}

/// Where a cursor-paged list stands.
#[derive(Debug, Clone, Object)]
pub struct CursorMeta {
    pub limit: u32,
    /// Pass as `starting_after` for the next page; `null` on the last page.
    pub next_cursor: Nullable<String>,
}

/// A page of the ledger, newest first.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct LedgerResponse {
    pub data: LedgerEntries,
    pub meta: CursorMeta,
}

impl Example for LedgerResponse {
    fn example() -> Self {
        let at = DateTime::from_timestamp_millis(1_796_000_000_000).unwrap_or_default();
        Self {
            data: LedgerEntries {
                entries: vec![
                    LedgerEntry {
                        id: "led_2".into(),
                        delta: -1,
                        balance_after: 999,
                        reason: "enrich".into(),
                        api_key_id: Some("key_3f1c8a9d0b2e4f6a8c0d1e2f3a4b5c6d".to_string()).into(),
                        request_id: Some("req_8f14e45fceea167a5a36dedd4bea2543".to_string()).into(),
                        created_at: at,
                    },
                    LedgerEntry {
                        id: "led_1".into(),
                        delta: 1_000,
                        balance_after: 1_000,
                        reason: "grant".into(),
                        api_key_id: Nullable(None),
                        request_id: Nullable(None),
                        created_at: at,
                    },
                ],
            },
            meta: CursorMeta { limit: 25, next_cursor: Nullable(None) },
        }
    }
}

const ENTRY_PREFIX: &str = "led_";

successes! {
    /// The usage.
    pub enum UsageOk {
        /// The workspace's plan, limits, what is left today, and its credits.
        200 => Ok(Json<UsageResponse>),
    }
}

failures! {
    /// Every way reading the usage can fail.
    pub enum UsageFailure {
        401 => Unauthorized,
        403 => Forbidden,
        429 => TooManyRequests + u64,
        500 => InternalServerError,
        503 => ServiceUnavailable + u64,
    }
}

successes! {
    /// A page of the ledger.
    pub enum LedgerOk {
        /// Entries newest first; `meta.next_cursor` pages on.
        200 => Ok(Json<LedgerResponse>),
    }
}

failures! {
    /// Every way reading the ledger can fail.
    pub enum LedgerFailure {
        /// `validation_error`: a query parameter is malformed or out of range (a cursor
        /// that is not an entry id).
        400 => BadRequest,
        401 => Unauthorized,
        403 => Forbidden,
        429 => TooManyRequests + u64,
        500 => InternalServerError,
        503 => ServiceUnavailable + u64,
    }
}

fn default_limit() -> u32 {
    25
}

pub struct AccountApi;

#[OpenApi(tag = "ApiTags::Usage")]
impl AccountApi {
    /// Usage and credits
    ///
    /// The workspace's plan, the limits the calling key is held to, the requests left
    /// today and when the quota resets, and what its credits did today and this month.
    /// Free (it counts against the rate limits like every request). Requires `read:usage`.
    #[oai(path = "/v1/usage", method = "get", operation_id = "get_usage")]
    async fn usage(&self, auth: ApiKeyAuth, state: Data<&Arc<AppState>>) -> Result<UsageOk, UsageFailure> {
        let principal = auth.0;
        let now = crate::now_ms();
        let credits = credits::usage(&state.db, &principal.scope, now)
            .await
            .map_err(|e| ApiError::from_db(e, "reading usage"))?
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("the caller's workspace is gone")))?;
        let status = current_rate_limit();
        // The limits this very request counted against (its headers say the same; a
        // test key's requests other than enrichment calls count apart).
        let (_, limits) = principal.limits_for(crate::auth::Work::Request { enrichment: false });
        Ok(UsageOk::Ok(Json(UsageResponse {
            data: Usage {
                plan: principal.plan.as_str().into(),
                limits: UsageLimits { per_minute: limits.per_minute.into(), per_day: limits.per_day.into() },
                remaining_today: limits.per_day.and(status.map(|s| s.remaining)).into(),
                resets_at: status.map_or_else(|| crate::ratelimit::next_midnight_secs(now), |s| s.reset_epoch_secs),
                credits: UsageCredits {
                    balance: credits.balance,
                    charged_today: credits.charged_today,
                    charged_this_month: credits.charged_this_month,
                    granted_this_month: credits.granted_this_month,
                },
            },
        })))
    }

    /// The credit ledger
    ///
    /// Every change of the workspace's balance, newest first, a page at a time: pass
    /// `meta.next_cursor` as `starting_after` for the next page (a page deep in the
    /// ledger costs what the first does). The sum of every entry's `delta` is the
    /// balance. Requires `read:usage`.
    #[oai(path = "/v1/credits/ledger", method = "get", operation_id = "list_ledger_entries")]
    #[allow(clippy::too_many_arguments)]
    async fn ledger(
        &self,
        auth: ApiKeyAuth,
        state: Data<&Arc<AppState>>,
        /// Entries per page.
        #[oai(default = "default_limit", validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<u32>,
        /// The `id` of the last entry of the previous page (its `meta.next_cursor`).
        #[oai(validator(pattern = "^led_[0-9]{1,18}$"))]
        starting_after: Query<Option<String>>,
        /// Only the entries of this key.
        #[oai(validator(max_length = 100, pattern = "^[^\\x00]*$"))]
        api_key_id: Query<Option<String>>,
        /// Only the entries with this reason.
        reason: Query<Option<LedgerReason>>,
        /// Only the entries at or after this time (RFC 3339).
        from: Query<Option<DateTime<Utc>>>,
        /// Only the entries before this time (RFC 3339).
        to: Query<Option<DateTime<Utc>>>,
    ) -> Result<LedgerOk, LedgerFailure> {
        let starting_after = match starting_after.0 {
            None => None,
            Some(cursor) => Some(
                cursor
                    .strip_prefix(ENTRY_PREFIX)
                    .and_then(|n| n.parse::<i64>().ok())
                    .ok_or_else(|| ApiError::validation(vec![FieldError::new("starting_after", "is not a ledger entry id")]))?,
            ),
        };
        // `from` after `to` is an empty window, not an error (a schema cannot say it).
        let (from_ms, to_ms) = (from.0.map(|t| t.timestamp_millis()), to.0.map(|t| t.timestamp_millis()));
        let q = LedgerQuery {
            limit: u64::from(limit.0),
            starting_after,
            api_key_id: api_key_id.0,
            reason: reason.0.map(|r| Reason::from(r).as_str().to_string()),
            from_ms,
            to_ms,
        };
        let (rows, more) =
            credits::ledger_page(&state.db, &auth.0.scope, &q).await.map_err(|e| ApiError::from_db(e, "reading the ledger"))?;
        let next_cursor = more.then(|| rows.last().map(|r| format!("{ENTRY_PREFIX}{}", r.id))).flatten();
        let entries = rows
            .into_iter()
            .map(|r| LedgerEntry {
                id: format!("{ENTRY_PREFIX}{}", r.id),
                delta: r.delta,
                balance_after: r.balance_after,
                reason: r.reason,
                api_key_id: r.api_key_id.into(),
                request_id: r.request_id.into(),
                created_at: crate::time::at(r.created_at),
            })
            .collect();
        Ok(LedgerOk::Ok(Json(LedgerResponse {
            data: LedgerEntries { entries },
            meta: CursorMeta { limit: limit.0, next_cursor: next_cursor.into() },
        })))
    }
}
