//! Bulk enrichment: up to [`MAX_ITEMS`] inputs in one call, each obeying exactly the
//! rules of a single call (`crate::enrich`), charged in one transaction. Knows nothing of
//! HTTP: it answers with a [`BulkAnswer`], which `api::bulk` renders.
//!
//! Invariants:
//! - an invalid item fails alone (`Invalid`, in its slot); the others go on;
//! - each item that succeeds costs one credit, an item that fails costs nothing; the
//!   charges are settled in one transaction, in item order, so that when the balance runs
//!   out the first items are paid and the rest are `InsufficientCredits`;
//! - identical inputs in one call cost one lookup (each item still costs its credit, and
//!   the later ones say `cached`, as separate calls would);
//! - no vendor is asked for more inputs than the balance (read before the lookups) could
//!   pay for: the items beyond it are `InsufficientCredits` without a lookup;
//! - with an `Idempotency-Key`, the whole answer is stored in the settling transaction
//!   and a retry gets it back, charged once;
//! - a test-mode key's call uses the test lookup and spaces of [`crate::test_mode`] and
//!   is never charged.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::{KeyMode, Principal};
use crate::enrich::{judge, Answer, EnrichError, EnrichService, Verdict};
use crate::hex::hex;
use crate::idempotency::{self, Begun, IdempotencyError, Idempotent};
use crate::lookup::input::{EnrichQuery, Quality, Section};
use crate::lookup::record::{Matched, Source};
use crate::lookup::{cache, LookupOutcome, Subject};
use crate::scope::Scope;
use crate::settler::{CacheRow, Charges, ChargesCompletion, ChargesSettled, JobItemsUpdate, SettleError};
use crate::test_mode::{self, Trigger};
use crate::validation::FieldError;

/// The most items one call takes.
pub const MAX_ITEMS: usize = 100;
/// The longest `reference`.
pub const REFERENCE_MAX: usize = 200;
/// Lookups of one call in flight at once.
const CONCURRENCY: usize = 8;

/// Method and path of idempotency fingerprints.
pub const OPERATION: (&str, &str) = ("POST", "/v1/email/enrich/bulk");

/// One item as sent: its fields are checked here, so that a bad item fails alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemInput {
    pub email: Option<String>,
    pub domain: Option<String>,
    /// Section names; the call's default when `None`.
    pub include: Option<Vec<String>>,
    pub reference: Option<String>,
}

impl ItemInput {
    /// What a job stores of this item: no more of each field than decides its outcome (a
    /// reference one character past its limit, an `include` one name past it, still fail
    /// the item as the whole would), and no NUL (which PostgreSQL cannot store; a field
    /// with one is invalid either way).
    pub fn storable(&self) -> ItemInput {
        let text = |s: &Option<String>, max: usize| s.as_ref().map(|s| s.chars().take(max).collect::<String>().replace('\0', "\u{FFFD}"));
        ItemInput {
            email: text(&self.email, crate::lookup::input::EMAIL_MAX + 1),
            domain: text(&self.domain, crate::lookup::input::DOMAIN_MAX + 1),
            include: self.include.as_ref().map(|l| {
                l.iter().take(Section::ALL.len() + 1).map(|n| n.chars().take(32).collect::<String>().replace('\0', "\u{FFFD}")).collect()
            }),
            reference: text(&self.reference, REFERENCE_MAX + 1),
        }
    }
}

/// A field problem, as stored with an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

/// Why an item did not succeed: the error the same input would have had alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ItemFailure {
    /// 400: malformed; what is wrong, field by field.
    Invalid { problems: Vec<Problem> },
    /// 402: the balance ran out before this item.
    InsufficientCredits,
    /// 404: nothing found (or none of the sections asked for).
    NoMatch,
    /// 404: the best answer was less sure than the call's `min_confidence` (free).
    BelowMinConfidence { confidence: f64, min: f64 },
    /// 503: every vendor failed for this input; retry it after `retry_after_secs`.
    UpstreamUnavailable { retry_after_secs: u64 },
}

/// What one item came to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ItemOutcome {
    /// Found and charged: the answer and the balance right after this item's debit.
    Found {
        answer: Box<Answer>,
        credits_remaining: i64,
    },
    Failed {
        failure: ItemFailure,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemResult {
    pub reference: Option<String>,
    #[serde(flatten)]
    pub outcome: ItemOutcome,
}

/// The whole answer of a bulk call (stored as JSON for replays).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BulkAnswer {
    /// In item order.
    pub items: Vec<ItemResult>,
    pub credits_charged: i64,
    /// The workspace's balance after the call.
    pub credits_remaining: i64,
    /// The call's request id (a replay shows the first call's, as in its error slots).
    pub request_id: String,
}

impl BulkAnswer {
    /// (succeeded, no_match, failed) counts.
    pub fn counts(&self) -> (u64, u64, u64) {
        let (mut ok, mut none, mut failed) = (0, 0, 0);
        for item in &self.items {
            match &item.outcome {
                ItemOutcome::Found { .. } => ok += 1,
                ItemOutcome::Failed { failure: ItemFailure::NoMatch | ItemFailure::BelowMinConfidence { .. } } => none += 1,
                ItemOutcome::Failed { .. } => failed += 1,
            }
        }
        (ok, none, failed)
    }
}

/// A successful bulk call.
#[derive(Debug, Clone)]
pub struct BulkSuccess {
    pub answer: Arc<BulkAnswer>,
    pub replayed: bool,
}

fn problems(errors: Vec<FieldError>) -> Vec<Problem> {
    errors.into_iter().map(|e| Problem { field: e.field.to_string(), message: e.message }).collect()
}

/// An item's query, or why it is invalid.
/// What a call sets for all of its items: the sections of items that name none, and the
/// quality controls.
#[derive(Debug, Clone, Copy, Default)]
pub struct Defaults<'a> {
    pub include: Option<&'a [String]>,
    pub quality: Quality,
}

fn parse_item(item: &ItemInput, defaults: Defaults<'_>) -> Result<EnrichQuery, Vec<Problem>> {
    let default_include = defaults.include;
    let mut bad = Vec::new();
    if item.reference.as_ref().is_some_and(|r| r.chars().count() > REFERENCE_MAX) {
        bad.push(Problem { field: "reference".into(), message: format!("must be at most {REFERENCE_MAX} characters") });
    }
    let names = item.include.as_deref().or(default_include);
    let include: Option<Vec<Section>> = match names {
        None => None,
        Some(names) if names.len() > Section::ALL.len() => {
            bad.push(Problem { field: "include".into(), message: format!("must name at most {} sections", Section::ALL.len()) });
            Some(Vec::new())
        }
        Some(names) => {
            let parsed: Option<Vec<Section>> = names.iter().map(|n| Section::ALL.into_iter().find(|s| s.as_str() == n)).collect();
            match parsed {
                Some(list) => Some(list),
                None => {
                    bad.push(Problem { field: "include".into(), message: "must name sections among `person`, `company`, `social`".into() });
                    Some(Vec::new())
                }
            }
        }
    };
    let query = EnrichQuery::parse(item.email.as_deref(), item.domain.as_deref(), include.as_deref());
    match query {
        Ok(q) if bad.is_empty() => Ok(q.with_quality(defaults.quality)),
        Ok(_) => Err(bad),
        Err(errors) => {
            bad.extend(problems(errors).into_iter().filter(|p| !(p.field == "include" && names.is_some_and(|n| !n.is_empty()))));
            Err(bad)
        }
    }
}

/// What the request means, for idempotency: the normalised query of each valid item and
/// the raw fields of each invalid one, with its reference.
pub fn fingerprint(items: &[ItemInput], defaults: Defaults<'_>) -> String {
    let mut hash = Sha256::new();
    hash.update(format!("{} {}\n", OPERATION.0, OPERATION.1).as_bytes());
    for item in items {
        let line = match parse_item(item, defaults) {
            Ok(q) => serde_json::json!([q.fingerprint(OPERATION.0, OPERATION.1), item.reference]),
            Err(_) => serde_json::json!([item.email, item.domain, item.include, defaults.include, item.reference]),
        };
        hash.update(line.to_string().as_bytes());
        hash.update(b"\n");
    }
    hex(&hash.finalize())
}

/// Who a call's items are for, and what its ledger rows name.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The workspace and mode the items are for.
    pub scope: Scope,
    pub api_key_id: String,
    /// The bulk call's request id, or the job's id for a job's items.
    pub request_id: String,
}

impl Caller {
    pub fn of(principal: &Principal, request_id: &str) -> Self {
        Self { scope: principal.scope.clone(), api_key_id: principal.key_id.clone(), request_id: request_id.to_string() }
    }
}

/// A lookup's outcome as a job keeps it (so that a retry after a crash asks no vendor).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StoredLookup {
    Found {
        matched: Box<Matched>,
        from_cache: bool,
        /// When the vendor gave it (ms; absent from lookups kept before it existed).
        #[serde(default)]
        fetched_at: Option<i64>,
    },
    NoMatch,
    Unavailable {
        retry_after_secs: u64,
    },
    /// The item's subject was erased after the item was stored (`crate::privacy`): its
    /// input is gone, and it is answered `no_match`, free, without a lookup.
    Erased,
}

/// One item, before settlement.
enum Pending {
    Failed(ItemFailure),
    /// Looked up: subject `n` of the call's unique subjects.
    Found {
        subject: usize,
        query: EnrichQuery,
    },
}

/// What a unique subject's lookup found.
#[derive(Clone)]
enum Looked {
    Found {
        matched: Arc<Matched>,
        from_cache: bool,
        /// When the vendor gave it (ms).
        fetched_at: i64,
    },
    NoMatch,
    Unavailable {
        retry_after: Duration,
    },
    /// Not looked up: the balance could not have paid for it.
    Unpaid,
}

impl Looked {
    fn stored(&self) -> Option<StoredLookup> {
        match self {
            Looked::Found { matched, from_cache, fetched_at } => {
                Some(StoredLookup::Found { matched: Box::new((**matched).clone()), from_cache: *from_cache, fetched_at: Some(*fetched_at) })
            }
            Looked::NoMatch => Some(StoredLookup::NoMatch),
            Looked::Unavailable { retry_after } => Some(StoredLookup::Unavailable { retry_after_secs: retry_after.as_secs().max(1) }),
            Looked::Unpaid => None,
        }
    }

    fn of_stored(stored: &StoredLookup) -> Self {
        match stored {
            StoredLookup::Found { matched, from_cache, fetched_at } => Looked::Found {
                matched: Arc::new((**matched).clone()),
                from_cache: *from_cache,
                fetched_at: fetched_at.unwrap_or_else(crate::now_ms),
            },
            StoredLookup::NoMatch | StoredLookup::Erased => Looked::NoMatch,
            StoredLookup::Unavailable { retry_after_secs } => Looked::Unavailable { retry_after: Duration::from_secs(*retry_after_secs) },
        }
    }
}

/// A call's items, validated and looked up: each one's answer or failure, and the
/// charges its answers need, in item order.
pub struct Resolved {
    /// Per item: its answer and the index of its charge.
    answers: Vec<Option<(Answer, usize)>>,
    failures: Vec<Option<ItemFailure>>,
    references: Vec<Option<String>>,
    /// One per answer, in item order: the vendor answer to cache if it is paid.
    charges: Vec<Option<CacheRow>>,
    /// The balance read before the lookups.
    balance: i64,
    /// Per item, the lookup outcome obtained by this call from the vendors (`None`:
    /// invalid, known before, answered by the cache, or not looked up).
    pub fresh_lookups: Vec<Option<StoredLookup>>,
    mode: KeyMode,
}

impl Resolved {
    /// The whole answer, given what the settlement decided.
    pub fn answer(&self, request_id: &str, charged: &ChargesSettled) -> BulkAnswer {
        let mut results = Vec::with_capacity(self.answers.len());
        let mut paid = 0i64;
        for ((answer, failure), reference) in self.answers.iter().zip(&self.failures).zip(&self.references) {
            let outcome = match (answer, failure) {
                (Some((answer, charge)), _) => match charged.balances.get(*charge).copied().flatten() {
                    Some(balance_after) => {
                        paid += 1;
                        ItemOutcome::Found { answer: Box::new(answer.clone()), credits_remaining: balance_after }
                    }
                    None => ItemOutcome::Failed { failure: ItemFailure::InsufficientCredits },
                },
                (None, Some(failure)) => ItemOutcome::Failed { failure: failure.clone() },
                (None, None) => unreachable!("every item has an answer or a failure"),
            };
            results.push(ItemResult { reference: reference.clone(), outcome });
        }
        let credits_charged = if self.mode == KeyMode::Test { 0 } else { paid };
        BulkAnswer { items: results, credits_charged, credits_remaining: charged.balance, request_id: request_id.to_string() }
    }

    /// A test-mode call's settlement: every answer covered, nothing charged, the live
    /// balance as it was.
    fn uncharged(&self) -> ChargesSettled {
        ChargesSettled { balances: self.charges.iter().map(|_| Some(self.balance)).collect(), balance: self.balance }
    }
}

/// What completes a resolved call in its settlement.
pub enum Finish {
    None,
    /// An idempotent bulk call's claim.
    Claim(idempotency::ClaimToken),
    /// A job chunk: the items `idxs` (in the call's item order) of `job_id`, leased by
    /// `owner`; their results and the job's counters commit with the charges.
    JobItems {
        job_id: String,
        owner: String,
        idxs: Vec<i32>,
        purge_after_ms: i64,
    },
}

impl EnrichService {
    /// Runs a bulk call (see the module docs).
    pub async fn enrich_bulk(
        &self,
        principal: &Principal,
        request_id: &str,
        items: &[ItemInput],
        defaults: Defaults<'_>,
        idempotency_key: Option<&str>,
    ) -> Result<BulkSuccess, EnrichError> {
        let now = crate::now_ms();
        let token = match idempotency_key {
            None => None,
            Some(key) => {
                let fingerprint = fingerprint(items, defaults);
                let inputs: Vec<Option<EnrichQuery>> = items.iter().map(|i| parse_item(i, defaults).ok()).collect();
                let subjects = self.suppressions().subjects_of_items(inputs.iter().map(|q| q.as_ref().map(|q| &q.input)));
                let idem = Idempotent { key, lease: self.lease(), ttl: self.ttl() };
                match idempotency::begin(self.db(), &principal.scope, idem, &fingerprint, Some(subjects), now).await? {
                    Begun::Fresh(token) => Some(token),
                    Begun::Replay { answer, .. } => {
                        let answer: BulkAnswer =
                            serde_json::from_slice(&answer).map_err(|e| anyhow::Error::new(e).context("reading a stored bulk answer"))?;
                        return Ok(BulkSuccess { answer: Arc::new(answer), replayed: true });
                    }
                    // A bulk call's record is redacted item by item, never erased whole.
                    Begun::Erased => return Err(anyhow::anyhow!("a bulk call's record says erased").into()),
                }
            }
        };
        let caller = Caller::of(principal, request_id);
        let result = async {
            let resolved = Arc::new(self.resolve(&caller, items, defaults, &[]).await?);
            let completion = token.clone().map_or(Finish::None, Finish::Claim);
            let charged = self.settle_resolved(&caller, resolved.clone(), completion).await?;
            Ok::<_, EnrichError>(resolved.answer(request_id, &charged))
        }
        .await;
        if let (Err(_), Some(token)) = (&result, &token) {
            idempotency::release_quietly(self.db(), token).await;
        }
        result.map(|answer| BulkSuccess { answer: Arc::new(answer), replayed: false })
    }

    /// Validates `items` and looks them up: once per distinct input, only for items the
    /// balance could still pay for (in item order), skipping the inputs whose outcome is
    /// `known` (per item; a job's items looked up before a crash).
    pub async fn resolve(
        &self,
        caller: &Caller,
        items: &[ItemInput],
        defaults: Defaults<'_>,
        known: &[Option<StoredLookup>],
    ) -> Result<Resolved, EnrichError> {
        let ws = caller.scope.workspace_id();
        let test = caller.scope.is_test();
        let lookup = if test { self.test_lookup() } else { self.live_lookup() };

        // Validate each item; group the valid ones by what they look up.
        let mut pending = Vec::with_capacity(items.len());
        let mut subjects: Vec<(String, BTreeSet<Section>, usize)> = Vec::new(); // (cache key, union of sections, first item)
        let mut index: HashMap<String, usize> = HashMap::new();
        for (n, item) in items.iter().enumerate() {
            // An item whose subject was erased since it was stored: its input is gone.
            if matches!(known.get(n), Some(Some(StoredLookup::Erased))) {
                pending.push(Pending::Failed(ItemFailure::NoMatch));
                continue;
            }
            match parse_item(item, defaults) {
                Err(problems) => pending.push(Pending::Failed(ItemFailure::Invalid { problems })),
                Ok(query) if test && Trigger::of(&query.input) == Some(Trigger::InsufficientCredits) => {
                    pending.push(Pending::Failed(ItemFailure::InsufficientCredits))
                }
                // A suppressed input is a free no-match, never looked up.
                Ok(query) if self.suppressions().is_suppressed(&caller.scope, &query.input) => {
                    pending.push(Pending::Failed(ItemFailure::NoMatch))
                }
                Ok(query) => {
                    let key = if test { test_mode::subject(&query.input, ws).cache_key } else { Subject::live(&query.input).cache_key };
                    let at = *index.entry(key.clone()).or_insert_with(|| {
                        subjects.push((key, BTreeSet::new(), n));
                        subjects.len() - 1
                    });
                    subjects[at].1.extend(query.include.iter().copied());
                    pending.push(Pending::Found { subject: at, query });
                }
            }
        }

        // What is known already.
        let mut found: Vec<Option<Looked>> = vec![None; subjects.len()];
        let mut seeded = vec![false; subjects.len()];
        for (item, known) in pending.iter().zip(known) {
            if let (Pending::Found { subject, .. }, Some(stored)) = (item, known) {
                found[*subject] = Some(Looked::of_stored(stored));
                seeded[*subject] = true;
            }
        }

        // The balance bounds how many items can be paid, in item order: look up only the
        // subjects of items that could still be paid, wave by wave (an item whose lookup
        // found nothing costs nothing and makes room for a later one).
        let balance = crate::credits::balance(self.db(), ws).await?.unwrap_or(0);
        let budget = if test { usize::MAX } else { usize::try_from(balance.max(0)).unwrap_or(usize::MAX) };
        loop {
            let mut used = 0usize;
            let mut wave: Vec<usize> = Vec::new();
            for item in &pending {
                let Pending::Found { subject, query } = item else { continue };
                if used >= budget {
                    break;
                }
                match &found[*subject] {
                    Some(Looked::Found { matched, .. }) if matches!(judge(matched, query), Verdict::Answer(_)) => used += 1,
                    Some(_) => {}
                    None => {
                        if !wave.contains(subject) {
                            wave.push(*subject);
                        }
                        used += 1;
                    }
                }
            }
            if wave.is_empty() {
                break;
            }
            let outcomes: Vec<(usize, Result<LookupOutcome, sea_orm::DbErr>)> = stream::iter(wave)
                .map(|s| {
                    let first = match &pending[subjects[s].2] {
                        Pending::Found { query, .. } => query.input.clone(),
                        Pending::Failed(_) => unreachable!("a subject's first item was looked up"),
                    };
                    let (key, include) = (subjects[s].0.clone(), subjects[s].1.clone());
                    async move {
                        let subject = Subject { input: &first, cache_key: key };
                        (s, lookup.find(self.db(), &subject, &include, defaults.quality.max_age_ms(), crate::now_ms()).await)
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            for (s, outcome) in outcomes {
                found[s] = Some(match outcome? {
                    LookupOutcome::Found { matched, cached_at } => {
                        Looked::Found { matched, from_cache: cached_at.is_some(), fetched_at: cached_at.unwrap_or_else(crate::now_ms) }
                    }
                    LookupOutcome::NoMatch => Looked::NoMatch,
                    LookupOutcome::Unavailable { retry_after } => Looked::Unavailable { retry_after },
                });
            }
        }
        let looked: Vec<Looked> = found.into_iter().map(|l| l.unwrap_or(Looked::Unpaid)).collect();

        // Each item's answer; the charges in item order; each vendor answer cached with
        // the first item that pays for it.
        let mut answers: Vec<Option<(Answer, usize)>> = Vec::with_capacity(pending.len());
        let mut failures: Vec<Option<ItemFailure>> = Vec::with_capacity(pending.len());
        let mut fresh_lookups: Vec<Option<StoredLookup>> = Vec::with_capacity(pending.len());
        let mut charges = Vec::new();
        let mut charged_subject: Vec<bool> = vec![false; subjects.len()];
        for item in &pending {
            let (subject, query) = match item {
                Pending::Failed(failure) => {
                    answers.push(None);
                    failures.push(Some(failure.clone()));
                    fresh_lookups.push(None);
                    continue;
                }
                Pending::Found { subject, query } => (*subject, query),
            };
            // Kept for a job only when asking again would cost a vendor call (an answer
            // read from the cache is read again as cheaply).
            let from_cache = matches!(looked[subject], Looked::Found { from_cache: true, .. });
            fresh_lookups.push(if seeded[subject] || from_cache { None } else { looked[subject].stored() });
            let failure = match &looked[subject] {
                Looked::Unpaid => ItemFailure::InsufficientCredits,
                Looked::NoMatch => ItemFailure::NoMatch,
                Looked::Unavailable { retry_after } => ItemFailure::UpstreamUnavailable { retry_after_secs: retry_after.as_secs().max(1) },
                Looked::Found { matched, from_cache, fetched_at } => match judge(matched, query) {
                    Verdict::NoMatch => ItemFailure::NoMatch,
                    Verdict::BelowMinConfidence { confidence, min } => ItemFailure::BelowMinConfidence { confidence, min },
                    Verdict::Answer(record) => {
                        // The first item of a subject answered now by a vendor says so; the
                        // later ones, like later calls, say `cached`.
                        let fresh = !from_cache && !charged_subject[subject];
                        charged_subject[subject] = true;
                        let source = if fresh { Source::Vendor(matched.vendor) } else { Source::Cached };
                        let row = fresh.then(|| {
                            let subject = Subject { input: &query.input, cache_key: subjects[subject].0.clone() };
                            cache::match_row(&subject, matched, lookup.cache_policy(), *fetched_at)
                        });
                        let fetched_at = crate::time::from_ms(*fetched_at);
                        answers.push(Some((Answer { record, source, confidence: matched.confidence, fetched_at }, charges.len())));
                        charges.push(row);
                        failures.push(None);
                        continue;
                    }
                },
            };
            answers.push(None);
            failures.push(Some(failure));
        }
        // A vendor answer no item could use is kept, unpaid (as a single call keeps it); a
        // test-mode call keeps every vendor answer so (in its test space: never paid).
        for (s, looked) in looked.iter().enumerate() {
            if let (Looked::Found { matched, from_cache: false, .. }, false) = (looked, charged_subject[s] && !test) {
                if let Pending::Found { query, .. } = &pending[subjects[s].2] {
                    lookup.keep_unpaid(&Subject { input: &query.input, cache_key: subjects[s].0.clone() }, matched, crate::now_ms());
                }
            }
        }
        // A reference too long to take is not echoed either (the item failed for it).
        let references = items.iter().map(|i| i.reference.clone().filter(|r| r.chars().count() <= REFERENCE_MAX)).collect();
        Ok(Resolved { answers, failures, references, charges, balance, fresh_lookups, mode: caller.scope.mode() })
    }

    /// Pays for a resolved call in one transaction (a test-mode call: nothing), with its
    /// completion; returns what the settlement decided.
    pub async fn settle_resolved(
        &self,
        caller: &Caller,
        resolved: Arc<Resolved>,
        completion: Finish,
    ) -> Result<ChargesSettled, EnrichError> {
        let test = caller.scope.is_test();
        let lookup = if test { self.test_lookup() } else { self.live_lookup() };
        let request_id = caller.request_id.clone();
        let job = matches!(completion, Finish::JobItems { .. });
        let settle_completion = match completion {
            Finish::None => None,
            Finish::Claim(claim) if test => {
                let charged = resolved.uncharged();
                let stored = serde_json::to_vec(&resolved.answer(&request_id, &charged))
                    .map_err(|e| anyhow::Error::new(e).context("storing the answer"))?;
                if !idempotency::complete(self.db(), &claim, 200, stored, Some(resolved.balance)).await? {
                    return Err(IdempotencyError::lost().into());
                }
                return Ok(charged);
            }
            Finish::Claim(claim) => {
                let resolved = resolved.clone();
                Some(ChargesCompletion::Claim {
                    claim,
                    render: Box::new(move |charged: &ChargesSettled| {
                        serde_json::to_vec(&resolved.answer(&request_id, charged)).expect("a bulk answer serialises")
                    }),
                })
            }
            Finish::JobItems { job_id, owner, idxs, purge_after_ms } => {
                let resolved = resolved.clone();
                let uncharged = test.then(|| resolved.uncharged());
                Some(ChargesCompletion::JobItems {
                    job_id,
                    owner,
                    idxs: idxs.clone(),
                    render: Box::new(move |charged: &ChargesSettled| {
                        job_items_update(&resolved, &request_id, uncharged.as_ref().unwrap_or(charged), &idxs, purge_after_ms)
                    }),
                })
            }
        };
        let charges = if test { Vec::new() } else { resolved.charges.clone() };
        let bulk = Charges {
            workspace_id: caller.scope.workspace_id().to_string(),
            api_key_id: caller.api_key_id.clone(),
            request_id: caller.request_id.clone(),
            charges,
            balance_if_unpaid: resolved.balance,
            completion: settle_completion,
        };
        if test && bulk.completion.is_none() {
            return Ok(resolved.uncharged());
        }
        let charged = match self.settler().settle_bulk(bulk).await {
            Ok(charged) => charged,
            Err(SettleError::TakenOver) if job => return Err(EnrichError::LeaseLost),
            Err(SettleError::TakenOver) => return Err(IdempotencyError::lost().into()),
            Err(SettleError::Database(err)) if err.unavailable => return Err(EnrichError::StoreUnavailable(Arc::new(err))),
            Err(err) => return Err(anyhow::Error::new(err).into()),
        };
        if test {
            return Ok(resolved.uncharged());
        }
        // The paid vendor answers, remembered in-process now that their rows are on their way.
        for (row, balance) in resolved.charges.iter().zip(&charged.balances) {
            if let (Some(row), Some(_)) = (row, balance) {
                lookup.remember_row(row.cache_key.clone(), cache::Entry::new(row.clone()), crate::now_ms());
            }
        }
        let paid = charged.balances.iter().flatten().count() as u64;
        self.metrics().credits_charged.inc_by(paid);
        Ok(charged)
    }
}

/// A job chunk's results (each item's result with the bulk result's shape) and counts.
fn job_items_update(resolved: &Resolved, request_id: &str, charged: &ChargesSettled, idxs: &[i32], purge_after_ms: i64) -> JobItemsUpdate {
    let answer = resolved.answer(request_id, charged);
    let (succeeded, no_match, failed) = answer.counts();
    let results =
        idxs.iter().zip(&answer.items).map(|(idx, item)| (*idx, serde_json::to_string(item).expect("an item result serialises"))).collect();
    JobItemsUpdate {
        results,
        succeeded: succeeded as i64,
        no_match: no_match as i64,
        failed: failed as i64,
        credits_charged: answer.credits_charged,
        now_ms: crate::now_ms(),
        purge_after_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(email: Option<&str>, domain: Option<&str>, include: Option<&[&str]>) -> ItemInput {
        ItemInput {
            email: email.map(Into::into),
            domain: domain.map(Into::into),
            include: include.map(|l| l.iter().map(|s| s.to_string()).collect()),
            reference: None,
        }
    }

    #[test]
    fn an_item_is_checked_as_a_single_call_would_be() {
        assert!(parse_item(&item(Some("jane@acme.com"), None, None), Defaults::default()).is_ok());
        let bad = parse_item(&item(Some("not an email"), None, Some(&["persons"])), Defaults::default()).unwrap_err();
        let fields: Vec<&str> = bad.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["include", "email"]);
        assert_eq!(parse_item(&item(None, None, None), Defaults::default()).unwrap_err()[0].field, "email");
        // The call's default applies when the item gives none; the item's own wins.
        let default = vec!["company".to_string()];
        let q = parse_item(&item(None, Some("acme.com"), None), Defaults { include: Some(&default), ..Default::default() }).unwrap();
        assert_eq!(q.include, BTreeSet::from([Section::Company]));
        let q = parse_item(&item(None, Some("acme.com"), Some(&["social"])), Defaults { include: Some(&default), ..Default::default() })
            .unwrap();
        assert_eq!(q.include, BTreeSet::from([Section::Social]));
        let mut long = item(Some("jane@acme.com"), None, None);
        long.reference = Some("r".repeat(REFERENCE_MAX + 1));
        assert_eq!(parse_item(&long, Defaults::default()).unwrap_err()[0].field, "reference");
    }

    #[test]
    fn the_fingerprint_follows_normalised_inputs_and_references() {
        let a = [item(Some("Jane@ACME.com"), None, None)];
        let b = [item(Some("jane@acme.com"), None, None)];
        assert_eq!(fingerprint(&a, Defaults::default()), fingerprint(&b, Defaults::default()));
        let mut c = b.clone();
        c[0].reference = Some("crm-1".into());
        assert_ne!(fingerprint(&b, Defaults::default()), fingerprint(&c, Defaults::default()));
        assert_ne!(fingerprint(&b, Defaults::default()), fingerprint(&[b[0].clone(), b[0].clone()], Defaults::default()));
    }
}
