//! The money path of one enrich call (steps 6–10 of the order in `docs/design.md`;
//! authentication, rate limiting, permission and validation happen before, in `api`):
//!
//! 6. idempotency claim: replay a completed call, refuse a reused key (422) or a key in
//!    use (409);
//! 7. a cheap balance read: 402 before any vendor is asked;
//! 8. lookup: cache, then the vendor waterfall; 404 when nothing asked for was found;
//! 9. settle: the [`Settler`] takes the credit with its ledger row and completes the
//!    idempotency record with the answer, in one transaction (batched with concurrent
//!    requests' settlements: group commit); the vendor's answer is cached just after;
//! 10. any failure before step 9 commits leaves no charge and releases the claim.
//!
//! Invariants: a 200 costs exactly one credit, whether from a vendor or the cache; every
//! other outcome costs nothing; a replay never charges and never asks a vendor. A
//! test-mode key's call ([`crate::test_mode`]) takes the same steps with the test lookup
//! (the sandbox) and its own cache and idempotency spaces, skips the balance check and
//! the settlement (never charged) and reports the live balance as it is. Knows nothing
//! of HTTP: it answers with an [`Answer`] and the balance, which `api` renders.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sea_orm::{DatabaseConnection, DbErr};
use serde::{Deserialize, Serialize};

use crate::auth::{KeyMode, Principal};
use crate::config::HotCachesSettings;
use crate::credits;
use crate::hot::{self, TtlCache};
use crate::idempotency::{self, Begun, ClaimToken, IdempotencyError, Idempotent};
use crate::lookup::input::EnrichQuery;
use crate::lookup::record::{EnrichmentRecord, Matched, Source};
use crate::lookup::{cache, Lookup, LookupOutcome, Subject};
use crate::privacy::Suppressions;
use crate::scope::Scope;
use crate::settler::{Charge, ClaimCompletion, SettleError, Settler};
use crate::test_mode::{self, Trigger};

/// Why an enrich call did not succeed; mapped to HTTP in `api::error` only.
#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    #[error("the workspace has no credits left")]
    InsufficientCredits,
    #[error("no data found for the input")]
    NoMatch,
    /// The best answer found is less sure than the caller's `min_confidence`: a no-match,
    /// free, that says why.
    #[error("the best answer's confidence ({confidence}) is below min_confidence ({min})")]
    BelowMinConfidence { confidence: f64, min: f64 },
    #[error(transparent)]
    Idempotency(IdempotencyError),
    /// A job chunk's items were taken over by another worker (its lease ran out): that
    /// worker settles them. Never an HTTP answer.
    #[error("the job items' lease was lost")]
    LeaseLost,
    #[error("every upstream vendor failed")]
    UpstreamUnavailable { retry_after: Duration },
    #[error("the database is unreachable")]
    StoreUnavailable(#[source] Arc<dyn std::error::Error + Send + Sync>),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<IdempotencyError> for EnrichError {
    fn from(err: IdempotencyError) -> Self {
        match err {
            IdempotencyError::Db(db) => db.into(),
            other => Self::Idempotency(other),
        }
    }
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

/// What an enrich call found: the sections asked for (never empty), where they came from,
/// how sure the vendor was and when the data was obtained from it. Stored as JSON with a
/// completed idempotency record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    #[serde(flatten)]
    pub record: EnrichmentRecord,
    pub source: Source,
    pub confidence: f64,
    /// When a vendor gave this data (for `cached`, the cache entry's). Absent only from
    /// answers stored before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::time::rfc3339_opt")]
    pub fetched_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A successful call.
#[derive(Debug, Clone)]
pub struct Success {
    pub answer: Arc<Answer>,
    /// The workspace's balance right after this call's debit.
    pub credits_remaining: i64,
    /// True when this is a replay of an earlier call with the same key.
    pub replayed: bool,
    /// For a replay served from memory and for a cached answer asked for again: a slot
    /// where the caller may keep its rendering of `answer`, which never changes (it
    /// lives as long as the remembered call in [`Replays`] or the answer in
    /// [`Answers`]); the balance is not part of it. Opaque bytes to this module.
    pub rendering: Option<Arc<OnceLock<bytes::Bytes>>>,
}

/// An idempotent call: the workspace and its `Idempotency-Key` (mode-scoped).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReplayKey {
    pub workspace_id: String,
    pub idempotency_key: String,
}

/// The hot cache of completed calls, for replays from memory. Staleness: none (a
/// completed call never changes); 60 s by default, never past the record's expiry;
/// erasure empties it (`privacy::Suppressions`).
pub type Replays = TtlCache<ReplayKey, Arc<Completed>>;

/// The replays instance, as configured.
pub fn replays(settings: &HotCachesSettings, metrics: &crate::metrics::Metrics) -> Replays {
    TtlCache::new("replays", &settings.replays, metrics)
}

/// The empty-workspaces instance, as configured (see [`EnrichParts::empty_workspaces`]).
pub fn empty_workspaces(settings: &HotCachesSettings, metrics: &crate::metrics::Metrics) -> TtlCache<String, ()> {
    TtlCache::new("empty_workspaces", &settings.empty_workspaces, metrics)
}

/// The hot cache of answers made of cache entries: the same question (sections) asked
/// of the same parsed entry (the one `lookup::CacheRows` shares, by identity) is the
/// same answer, so every call that asks it shares one [`Answer`] and one rendering slot
/// (see [`Success::rendering`]) instead of building and rendering it anew. Staleness:
/// none (an entry read again is another entry, hence another key); 30 s and 5,000
/// answers by default, only for inputs of at most [`SHARED_INPUT_MAX`] bytes (so each
/// is a few KB at most); erasure empties it (`privacy::Suppressions`).
pub type Answers = TtlCache<AnswerKey, Arc<Answered>>;

/// The longest cache key whose answers are shared (an email or a domain is far
/// shorter; a longer one, such as an internationalised domain in punycode, is answered
/// as a miss of this cache would be: built and rendered for its call).
pub const SHARED_INPUT_MAX: usize = 256;

/// The answers instance, as configured.
pub fn answers(settings: &HotCachesSettings, metrics: &crate::metrics::Metrics) -> Answers {
    TtlCache::new("answers", &settings.answers, metrics)
}

/// What a cached answer is made of (see [`Answers`]): the entry by identity (its
/// address, which cannot be reused while [`Answered`] holds the entry) and the sections
/// asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AnswerKey {
    entry: usize,
    sections: u8,
}

/// A cached answer, the entry it was made of (kept alive: see [`AnswerKey`]) and the
/// slot its rendering is kept in.
#[derive(Debug)]
pub struct Answered {
    _entry: Arc<Matched>,
    answer: Arc<Answer>,
    rendering: Arc<OnceLock<bytes::Bytes>>,
}

/// A completed idempotent call, remembered for replays (immutable until it expires, so
/// any replica may serve it from memory).
#[derive(Debug)]
pub struct Completed {
    fingerprint: String,
    answer: Arc<Answer>,
    balance_after: i64,
    pub expires_at: i64,
    /// See [`Success::rendering`].
    rendering: Arc<OnceLock<bytes::Bytes>>,
}

impl Completed {
    /// The replay of this call for a request with `fingerprint`.
    fn replay(&self, fingerprint: &str) -> Result<Success, EnrichError> {
        if self.fingerprint != fingerprint {
            return Err(IdempotencyError::Reused.into());
        }
        Ok(self.success())
    }

    fn success(&self) -> Success {
        Success {
            answer: self.answer.clone(),
            credits_remaining: self.balance_after,
            replayed: true,
            rendering: Some(self.rendering.clone()),
        }
    }
}

/// Method and path that idempotency fingerprints are made of.
pub const OPERATION: (&str, &str) = ("POST", "/v1/email/enrich");

/// What an [`EnrichService`] is built from.
pub struct EnrichParts {
    pub db: DatabaseConnection,
    /// The suppression lists: a suppressed input is a free no-match, never looked up.
    pub suppressions: Arc<Suppressions>,
    /// Completed calls, replayed from memory (shared with the suppression lists, which
    /// empty it on an erasure).
    pub replays: Arc<Replays>,
    /// The hot cache of workspaces seen at balance 0. Staleness: a top-up is honoured
    /// within the TTL (1 s by default).
    pub empty_workspaces: TtlCache<String, ()>,
    /// Answers made of cache entries (shared with the suppression lists, which empty it
    /// on an erasure).
    pub answers: Arc<Answers>,
    pub settler: Settler,
    pub lookup: Lookup,
    /// Test-mode keys' lookup: the built-in sandbox only.
    pub test_lookup: Lookup,
    /// How long an in-progress claim is leased (request deadline plus a margin).
    pub idempotency_lease: Duration,
    /// How long a completed call is replayed.
    pub idempotency_ttl: Duration,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The money path of enrich calls, on the parts it was built from (their one copy).
pub struct EnrichService {
    parts: EnrichParts,
}

/// What the lookup found for a call: the answer's record and where it came from.
struct Found {
    matched: Arc<Matched>,
    record: EnrichmentRecord,
    /// `None` when a vendor answered now.
    cached_at: Option<i64>,
}

impl EnrichService {
    pub fn new(parts: EnrichParts) -> Self {
        Self { parts }
    }

    pub(crate) fn db(&self) -> &DatabaseConnection {
        &self.parts.db
    }

    pub(crate) fn suppressions(&self) -> &Suppressions {
        &self.parts.suppressions
    }

    pub(crate) fn settler(&self) -> &Settler {
        &self.parts.settler
    }

    pub(crate) fn live_lookup(&self) -> &Lookup {
        &self.parts.lookup
    }

    pub(crate) fn test_lookup(&self) -> &Lookup {
        &self.parts.test_lookup
    }

    pub(crate) fn lease(&self) -> Duration {
        self.parts.idempotency_lease
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.parts.idempotency_ttl
    }

    pub(crate) fn metrics(&self) -> &crate::metrics::Metrics {
        &self.parts.metrics
    }

    pub async fn enrich(
        &self,
        principal: &Principal,
        request_id: &str,
        query: &EnrichQuery,
        idempotency_key: Option<&str>,
    ) -> Result<Success, EnrichError> {
        let now = crate::now_ms();
        let claim = match idempotency_key {
            None => None,
            Some(key) => {
                let scope = &principal.scope;
                let fingerprint = query.fingerprint(OPERATION.0, OPERATION.1);
                let replay_key = ReplayKey { workspace_id: scope.workspace_id().to_string(), idempotency_key: scope.idempotency_key(key) };
                if let Some(done) = self.parts.replays.get(&replay_key).filter(|done| done.expires_at > now) {
                    return done.replay(&fingerprint);
                }
                let idem = Idempotent { key, lease: self.parts.idempotency_lease, ttl: self.parts.idempotency_ttl };
                let subjects = Some(self.parts.suppressions.subjects_of_call(&query.input));
                match Box::pin(idempotency::begin(&self.parts.db, scope, idem, &fingerprint, subjects, now)).await? {
                    Begun::Fresh(token) => Some((token, fingerprint, replay_key)),
                    Begun::Replay { answer, balance_after, expires_at } => {
                        let balance_after = balance_after.ok_or_else(|| anyhow::anyhow!("a stored idempotent answer has no balance"))?;
                        let answer: Answer = serde_json::from_slice(&answer)
                            .map_err(|e| anyhow::Error::new(e).context("reading a stored idempotent answer"))?;
                        let done = Arc::new(Completed {
                            fingerprint,
                            answer: Arc::new(answer),
                            balance_after,
                            expires_at,
                            rendering: Default::default(),
                        });
                        self.parts.replays.insert(replay_key, done.clone(), hot::until(done.expires_at, now));
                        // The record was claimed for this fingerprint: the same request.
                        return Ok(done.success());
                    }
                    // Its subject was erased: as a call would answer now, free.
                    Begun::Erased => return Err(EnrichError::NoMatch),
                }
            }
        };
        let token = claim.as_ref().map(|c| &c.0);
        // The cold awaits (database queries, test mode) are boxed here and in `run`
        // (docs/design.md §19, a request's future).
        let result = match principal.mode() {
            KeyMode::Live => self.run(principal, request_id, query, token).await,
            KeyMode::Test => Box::pin(self.run_test(principal, query, token)).await,
        };
        match (&result, claim) {
            (Err(_), Some((token, ..))) => Box::pin(idempotency::release_quietly(&self.parts.db, &token)).await,
            (Ok(success), Some((_, fingerprint, replay_key))) => {
                let expires_at = now + self.parts.idempotency_ttl.as_millis() as i64;
                let done = Completed {
                    fingerprint,
                    answer: success.answer.clone(),
                    balance_after: success.credits_remaining,
                    expires_at,
                    rendering: Default::default(),
                };
                let cap = hot::until(done.expires_at, crate::now_ms());
                self.parts.replays.insert(replay_key, Arc::new(done), cap);
            }
            _ => {}
        }
        result
    }

    async fn run(
        &self,
        principal: &Principal,
        request_id: &str,
        query: &EnrichQuery,
        claim: Option<&ClaimToken>,
    ) -> Result<Success, EnrichError> {
        let ws = principal.workspace_id();
        // A cheap pre-check on the balance seen at authentication; when it says empty,
        // read again before refusing, so that a fresh top-up is honoured at once.
        if principal.balance_hint <= 0 {
            if self.parts.empty_workspaces.get(ws).is_some() {
                return Err(EnrichError::InsufficientCredits);
            }
            if !matches!(Box::pin(credits::balance(&self.parts.db, ws)).await?, Some(b) if b > 0) {
                self.parts.empty_workspaces.insert(ws.to_string(), (), None);
                return Err(EnrichError::InsufficientCredits);
            }
        }

        let subject = Subject::live(&query.input);
        let Found { matched, record, cached_at } = self.find(&self.parts.lookup, &subject, query, &principal.scope).await?;
        let from_cache = cached_at.is_some();
        let cache_row = (!from_cache).then(|| cache::match_row(&subject, &matched, self.parts.lookup.cache_policy(), crate::now_ms()));
        let stamps = cache_row.as_ref().map(|r| (r.fetched_at, r.expires_at));
        let (answer, rendering) = match cached_at {
            Some(at) => self.cached_answer(&subject, query, &matched, record, at),
            None => {
                let fetched_at = stamps.and_then(|s| crate::time::from_ms(s.0));
                let source = Source::Vendor(matched.vendor);
                (Arc::new(Answer { record, source, confidence: matched.confidence, fetched_at }), None)
            }
        };
        let completion = match claim {
            None => None,
            Some(token) => Some(ClaimCompletion {
                claim: token.clone(),
                answer: serde_json::to_vec(&*answer).map_err(|e| anyhow::Error::new(e).context("storing the answer"))?,
            }),
        };
        let job = Charge {
            workspace_id: ws.to_string(),
            api_key_id: principal.key_id.clone(),
            request_id: request_id.to_string(),
            cache_row,
            completion,
        };
        let charged = match self.parts.settler.settle(job).await {
            Ok(charged) => charged,
            Err(SettleError::Insufficient) => return Err(EnrichError::InsufficientCredits),
            Err(SettleError::TakenOver) => return Err(IdempotencyError::lost().into()),
            Err(SettleError::Database(err)) if err.unavailable => return Err(EnrichError::StoreUnavailable(Arc::new(err))),
            Err(err) => return Err(anyhow::Error::new(err).into()),
        };
        if let Some((fetched_at, expires_at)) = stamps {
            self.parts.lookup.remember(&subject, cache::Entry::of_match(matched, fetched_at, expires_at), crate::now_ms());
        }
        self.parts.metrics.credits_charged.inc();
        Ok(Success { answer, credits_remaining: charged.balance_after, replayed: false, rendering })
    }

    /// A test-mode call: the sandbox through the test lookup, in the workspace's test
    /// space of the cache; never charged, whatever the balance. `credits_remaining` is
    /// the live balance, read now.
    async fn run_test(&self, principal: &Principal, query: &EnrichQuery, claim: Option<&ClaimToken>) -> Result<Success, EnrichError> {
        let ws = principal.workspace_id();
        if Trigger::of(&query.input) == Some(Trigger::InsufficientCredits) {
            return Err(EnrichError::InsufficientCredits);
        }
        let subject = test_mode::subject(&query.input, ws);
        let Found { matched, record, cached_at } = self.find(&self.parts.test_lookup, &subject, query, &principal.scope).await?;
        let (answer, rendering) = match cached_at {
            Some(at) => self.cached_answer(&subject, query, &matched, record, at),
            None => {
                // Nobody pays for it: cached at once, in the test space.
                let now = crate::now_ms();
                self.parts.test_lookup.keep_unpaid(&subject, &matched, now);
                let fetched_at = crate::time::from_ms(now);
                (Arc::new(Answer { record, source: Source::Vendor(matched.vendor), confidence: matched.confidence, fetched_at }), None)
            }
        };
        let balance = credits::balance(&self.parts.db, ws).await?.unwrap_or(0);
        if let Some(token) = claim {
            let stored = serde_json::to_vec(&*answer).map_err(|e| anyhow::Error::new(e).context("storing the answer"))?;
            if !idempotency::complete(&self.parts.db, token, 200, stored, Some(balance)).await? {
                // Our lease ran out and a retry took the claim over.
                return Err(IdempotencyError::lost().into());
            }
        }
        Ok(Success { answer, credits_remaining: balance, replayed: false, rendering })
    }

    /// The answer a cache entry makes for `query` (its projection `record`), shared with
    /// every call that asked the same of the same entry lately (see [`Answers`]).
    fn cached_answer(
        &self,
        subject: &Subject<'_>,
        query: &EnrichQuery,
        matched: &Arc<Matched>,
        record: EnrichmentRecord,
        fetched_at: i64,
    ) -> (Arc<Answer>, Option<Arc<OnceLock<bytes::Bytes>>>) {
        let build = |record| {
            Arc::new(Answer {
                record,
                source: Source::Cached,
                confidence: matched.confidence,
                fetched_at: crate::time::from_ms(fetched_at),
            })
        };
        if subject.cache_key.len() > SHARED_INPUT_MAX {
            return (build(record), None);
        }
        let sections = query.include.iter().fold(0u8, |bits, section| bits | 1 << (*section as u8));
        let key = AnswerKey { entry: Arc::as_ptr(matched) as usize, sections };
        if let Some(known) = self.parts.answers.get(&key) {
            return (known.answer.clone(), Some(known.rendering.clone()));
        }
        let answer = build(record);
        let known = Arc::new(Answered { _entry: matched.clone(), answer: answer.clone(), rendering: Default::default() });
        let rendering = known.rendering.clone();
        self.parts.answers.insert(key, known, None);
        (answer, Some(rendering))
    }

    /// Step 8: `NoMatch` for a suppressed input (no vendor asked, nothing charged); else what
    /// `lookup` knows about `subject` (no cached data older than the caller
    /// accepts), projected on the sections asked for; `NoMatch` when it has none of them
    /// and `BelowMinConfidence` when it is less sure than the caller asks (a vendor answer
    /// refused so is cached unpaid), `UpstreamUnavailable` when every vendor failed.
    async fn find(&self, lookup: &Lookup, subject: &Subject<'_>, query: &EnrichQuery, scope: &Scope) -> Result<Found, EnrichError> {
        if self.parts.suppressions.is_suppressed(scope, &query.input) {
            return Err(EnrichError::NoMatch);
        }
        let max_age_ms = query.quality.max_age_ms();
        let (matched, cached_at) = match lookup.find(&self.parts.db, subject, &query.include, max_age_ms, crate::now_ms()).await? {
            LookupOutcome::Found { matched, cached_at } => (matched, cached_at),
            LookupOutcome::NoMatch => return Err(EnrichError::NoMatch),
            LookupOutcome::Unavailable { retry_after } => return Err(EnrichError::UpstreamUnavailable { retry_after }),
        };
        match judge(&matched, query) {
            Verdict::Answer(record) => Ok(Found { matched, record, cached_at }),
            refused => {
                // The vendor knew something, just not what was asked or not surely enough:
                // keep it, charge nothing.
                if cached_at.is_none() {
                    lookup.keep_unpaid(subject, &matched, crate::now_ms());
                }
                Err(match refused {
                    Verdict::BelowMinConfidence { confidence, min } => EnrichError::BelowMinConfidence { confidence, min },
                    _ => EnrichError::NoMatch,
                })
            }
        }
    }
}

/// What a call makes of a lookup's answer.
// Returned and matched at once, never stored: boxing the record would cost every paid
// call an allocation for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The record to answer with (projected on the sections asked for), paid for.
    Answer(EnrichmentRecord),
    /// None of the sections asked for: a free `no_match`.
    NoMatch,
    /// Less sure than the caller accepts: a free `no_match` saying so.
    BelowMinConfidence { confidence: f64, min: f64 },
}

/// The one judgement of what a lookup found, for a single call, a bulk item and a job
/// item alike: projected on the sections asked for, then held to the caller's quality
/// (a suppressed input never gets here: it is not looked up).
pub fn judge(matched: &Matched, query: &EnrichQuery) -> Verdict {
    let Some(record) = matched.record.project(&query.include) else { return Verdict::NoMatch };
    if !query.quality.accepts(matched.confidence) {
        return Verdict::BelowMinConfidence { confidence: matched.confidence, min: query.quality.min_confidence.unwrap_or_default() };
    }
    Verdict::Answer(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookup::record::{Company, Person};
    use crate::vendor_name::VendorName;

    /// A stored answer reads back as the same answer, in the JSON shape the migration of
    /// older records produces (the 200 body's `data` without `credits_remaining`).
    #[test]
    fn a_stored_answer_round_trips_in_the_documented_shape() {
        let answer = Answer {
            record: EnrichmentRecord {
                person: Some(Person { full_name: Some("Jane Doe".into()), ..Default::default() }),
                company: Some(Company { name: Some("Acme Corp".into()), founded_year: Some(1998), ..Default::default() }),
                social: None,
            },
            source: Source::Vendor(VendorName::VendorA),
            confidence: 0.9,
            fetched_at: crate::time::from_ms(1_796_000_000_123),
        };
        let stored = serde_json::to_string(&answer).unwrap();
        assert_eq!(
            stored,
            r#"{"person":{"full_name":"Jane Doe"},"company":{"name":"Acme Corp","founded_year":1998},"source":"vendor_a","confidence":0.9,"fetched_at":"2026-11-30T00:53:20.123+00:00"}"#
        );
        assert_eq!(serde_json::from_str::<Answer>(&stored).unwrap(), answer);
        // Answers stored before `fetched_at` existed still read.
        let cached: Answer = serde_json::from_str(r#"{"company":{"name":"X"},"source":"cached","confidence":0.5}"#).unwrap();
        assert_eq!((cached.source, cached.fetched_at), (Source::Cached, None));
    }
}
