//! The money path of one enrich call, in the order `shared/DESIGN.md` fixes (steps 6–10;
//! authentication, rate limiting, permission and validation happen before, in `api`):
//!
//! 6. idempotency claim: replay a completed call, refuse a reused key (422) or a key in
//!    use (409);
//! 7. a cheap balance read: 402 before any vendor is asked;
//! 8. lookup: cache, then the vendor waterfall; 404 when nothing asked for was found;
//! 9. settle in ONE transaction: conditional debit, ledger row, cache write, idempotency
//!    record completed with the exact response bytes (batched with concurrent requests'
//!    settlements by the [`Settler`]: group commit, the response waits for its commit);
//! 10. any failure before step 9 commits leaves no charge and releases the claim.
//!
//! Invariants: a 200 costs exactly one credit, whether from a vendor or the cache; every
//! other outcome costs nothing; a replay never charges and never asks a vendor.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use sea_orm::{DatabaseConnection, DbErr};

use crate::auth::Principal;
use crate::credits;
use crate::settler::{Body, Job, SettleError, Settler};
use crate::enrichment::input::{EnrichQuery, Section};
use crate::enrichment::record::{EnrichmentRecord, Source};
use crate::enrichment::{cache, Enricher, LookupOutcome};
use crate::idempotency::{self, Claim, ClaimToken};

/// Why an enrich call did not succeed; mapped to HTTP in `api::error` only.
#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    #[error("the workspace has no credits left")]
    InsufficientCredits,
    #[error("no data found for the input")]
    NoMatch,
    #[error("a request with this Idempotency-Key is still in progress")]
    IdempotencyKeyInUse { retry_after: Duration },
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    #[error("every upstream vendor failed")]
    UpstreamUnavailable { retry_after: Duration },
    #[error("the database is unreachable")]
    StoreUnavailable(#[source] Arc<dyn std::error::Error + Send + Sync>),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<DbErr> for EnrichError {
    fn from(err: DbErr) -> Self {
        if crate::db::is_unavailable(&err) {
            Self::StoreUnavailable(Arc::new(err))
        } else {
            Self::Internal(anyhow::Error::new(err).context("enrich database operation"))
        }
    }
}

/// What the API layer needs to render a 200 body.
#[derive(Debug)]
pub struct Answer<'a> {
    /// Only the sections asked for; never empty.
    pub record: &'a EnrichmentRecord,
    pub source: Source,
    pub confidence: f64,
    pub credits_remaining: i64,
}

/// A successful call: the exact bytes of the 200 body.
#[derive(Debug)]
pub struct Success {
    pub body: bytes::Bytes,
    /// True when these bytes are a replay of an earlier call with the same key.
    pub replayed: bool,
}

/// A completed idempotent call, remembered in-process for replays (immutable until it
/// expires, so any replica may serve it from memory).
#[derive(Clone)]
pub struct Completed {
    fingerprint: String,
    body: bytes::Bytes,
    expires_at: i64,
}

/// How long a rendered body of a cached answer is reused.
const CACHED_BODY_TTL: Duration = Duration::from_secs(30);

/// How long a replayable response read from the database is reused in-process.
const REPLAY_MEMO_TTL: Duration = Duration::from_secs(60);

pub struct EnrichService {
    pub db: DatabaseConnection,
    pub replays: crate::memo::Memo<(String, String), Completed>,
    /// Bodies of cached answers, by (cache key, sections asked for, the entry's
    /// `fetched_at`, vendor and confidence), rendered once with a hole for the balance.
    pub cached_bodies: crate::memo::Memo<(String, BTreeSet<Section>, i64, &'static str, u64), Arc<Body>>,
    pub settler: Settler,
    /// Workspaces just seen at balance 0, so that a flood of 402s costs one read per
    /// `hint_ttl` (a top-up is honoured within that time).
    pub known_empty: crate::memo::Memo<String, ()>,
    pub hint_ttl: Duration,
    pub enricher: Enricher,
    pub idempotency_lease: Duration,
    pub idempotency_ttl: Duration,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

/// Method and path that idempotency fingerprints are made of.
pub const OPERATION: (&str, &str) = ("POST", "/v1/email/enrich");

impl EnrichService {
    pub async fn enrich(
        &self,
        principal: &Principal,
        request_id: &str,
        query: &EnrichQuery,
        idempotency_key: Option<&str>,
        render: fn(Answer<'_>) -> Vec<u8>,
    ) -> Result<Success, EnrichError> {
        let now = crate::now_ms();
        let claim = match idempotency_key {
            None => None,
            Some(key) => {
                let fingerprint = query.fingerprint(OPERATION.0, OPERATION.1);
                let memo_key = (principal.workspace_id.clone(), key.to_string());
                if let Some(done) = self.replays.get(&memo_key).filter(|d| d.expires_at > now) {
                    return if done.fingerprint == fingerprint {
                        Ok(Success { body: done.body, replayed: true })
                    } else {
                        Err(EnrichError::IdempotencyKeyReused)
                    };
                }
                match idempotency::claim(
                    &self.db,
                    &principal.workspace_id,
                    key,
                    &fingerprint,
                    now,
                    self.idempotency_lease,
                    self.idempotency_ttl,
                )
                .await?
                {
                    Claim::Acquired(token) => Some(token),
                    Claim::Replay { body, expires_at, .. } => {
                        let body = bytes::Bytes::from(body);
                        let left = Duration::from_millis((expires_at - now).max(0) as u64);
                        let done = Completed { fingerprint, body: body.clone(), expires_at };
                        self.replays.insert(memo_key, done, left.min(REPLAY_MEMO_TTL));
                        return Ok(Success { body, replayed: true });
                    }
                    Claim::InUse { retry_after } => return Err(EnrichError::IdempotencyKeyInUse { retry_after }),
                    Claim::Reused => return Err(EnrichError::IdempotencyKeyReused),
                }
            }
        };
        let result = self.run(principal, request_id, query, claim.as_ref(), render).await;
        if let (Err(_), Some(token)) = (&result, &claim) {
            if let Err(err) = idempotency::release(&self.db, token).await {
                // The lease runs out by itself; a retry then takes the claim over.
                tracing::error!(error = %err, "releasing an idempotency claim failed");
            }
        }
        result
    }

    async fn run(
        &self,
        principal: &Principal,
        request_id: &str,
        query: &EnrichQuery,
        claim: Option<&ClaimToken>,
        render: fn(Answer<'_>) -> Vec<u8>,
    ) -> Result<Success, EnrichError> {
        let ws = &principal.workspace_id;
        // A cheap pre-check on the balance seen at authentication; when it says empty,
        // read again before refusing, so that a fresh top-up is honoured at once.
        if principal.balance_hint <= 0 {
            if self.known_empty.get(ws).is_some() {
                return Err(EnrichError::InsufficientCredits);
            }
            if !matches!(credits::balance(&self.db, ws).await?, Some(b) if b > 0) {
                self.known_empty.insert(ws.clone(), (), self.hint_ttl);
                return Err(EnrichError::InsufficientCredits);
            }
        }

        let lookup = self.enricher.lookup(&self.db, &query.input, &query.include, crate::now_ms()).await?;
        let (matched, cached_at) = match lookup {
            LookupOutcome::Found { matched, cached_at } => (matched, cached_at),
            LookupOutcome::NoMatch => return Err(EnrichError::NoMatch),
            LookupOutcome::Unavailable { retry_after } => return Err(EnrichError::UpstreamUnavailable { retry_after }),
        };
        let from_cache = cached_at.is_some();
        let policy = &self.enricher.cache;
        // A cached answer's body depends only on the entry and the sections asked for.
        let memo_key = cached_at
            .map(|at| (query.input.cache_key(), query.include.clone(), at, matched.vendor.as_str(), matched.confidence.to_bits()));
        let body = match memo_key.as_ref().and_then(|k| self.cached_bodies.get(k)) {
            Some(body) => body,
            None => {
                let Some(record) = matched.record.project(&query.include) else {
                    // The vendor knew something, just not what was asked: keep it, charge nothing.
                    if !from_cache {
                        cache::put(&self.db, &query.input, &matched, policy, crate::now_ms()).await?;
                    }
                    return Err(EnrichError::NoMatch);
                };
                let source = if from_cache { Source::Cached } else { Source::Vendor(matched.vendor) };
                let answer = Answer { record: &record, source, confidence: matched.confidence, credits_remaining: Body::PLACEHOLDER };
                let body = Arc::new(
                    Body::split(render(answer)).ok_or_else(|| anyhow::anyhow!("the 200 body does not show credits_remaining"))?,
                );
                if let Some(key) = memo_key {
                    self.cached_bodies.insert(key, body.clone(), CACHED_BODY_TTL);
                }
                body
            }
        };
        let cache_row = (!from_cache).then(|| cache::match_row(&query.input, &matched, policy, crate::now_ms()));
        let stamps = cache_row.as_ref().map(|r| (r.fetched_at, r.expires_at));
        let job = Job {
            workspace_id: ws.clone(),
            api_key_id: principal.key_id.clone(),
            request_id: request_id.to_string(),
            cache_row,
            claim: claim.cloned(),
            body,
        };
        let body = match self.settler.settle(job).await {
            Ok(body) => body,
            Err(SettleError::Insufficient) => return Err(EnrichError::InsufficientCredits),
            Err(SettleError::ClaimLost) => return Err(EnrichError::IdempotencyKeyInUse { retry_after: Duration::from_secs(1) }),
            Err(SettleError::Database(err)) if err.unavailable => return Err(EnrichError::StoreUnavailable(Arc::new(err))),
            Err(err) => return Err(anyhow::Error::new(err).into()),
        };
        if let Some((fetched_at, expires_at)) = stamps {
            self.enricher.remember(&query.input, cache::Entry::of_match(matched, fetched_at, expires_at), crate::now_ms());
        }
        self.metrics.credits_charged.inc();
        Ok(Success { body: body.into(), replayed: false })
    }
}
