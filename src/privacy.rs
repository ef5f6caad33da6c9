//! Privacy: suppression lists and erasure. Knows nothing of HTTP.
//!
//! A *subject* is an email address or a whole domain, normalised as lookups normalise
//! them, and written `email:{address}` or `domain:{name}`. Lists hold subjects only as
//! keyed hashes ([`Sealer::keyed_hash`]: HMAC-SHA256 under a key derived from the seal
//! key, so a database dump cannot be tested against guessed addresses):
//!
//! - the global list (`scope` `*`): subjects an operator erased (`leadlex privacy erase`);
//!   nobody's calls look them up again;
//! - a workspace's own do-not-enrich lists, one per mode ([`Scope::suppression_list`]:
//!   `scope` = its id for live calls, `{id}/test` for test-mode calls): the calls, bulk
//!   items and job items of that mode do not look them up.
//!
//! An input is suppressed when any subject it involves is on the global list or its
//! workspace's: its email, the email's domain, its company domain. A suppressed input
//! is answered `no_match`, free, and no vendor is asked.
//!
//! [`Suppressions`] is the one owner of the in-process copy of the lists. Invariant: a
//! change made by any process is seen by every process within `[privacy] refresh_ms`
//! (each list change bumps `privacy_version` in its own transaction; every process reads
//! that one row every `refresh_ms` and reloads the lists when it moved). When the
//! global list grew, the process also forgets every cache row and replayed answer it
//! holds in memory (`HotCaches::forget_enrichment_data`), so that no erased subject's
//! data stays in memory past the same bound.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sea_orm::{
    sea_query::{Expr, OnConflict},
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement,
    TransactionTrait,
};

use entity::suppression;

use crate::hot::HotCaches;
use crate::lookup::input::{Domain, EmailAddress, InputError, LookupInput};
use crate::scope::Scope;
use crate::seal::Sealer;

/// The global list's scope.
pub const GLOBAL: &str = "*";
/// Largest page of a workspace's list.
pub const MAX_PAGE: u64 = 100;

/// Why a privacy operation failed; mapped to HTTP in `api::error` only.
#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    #[error("invalid subject")]
    Invalid(Vec<InputError>),
    #[error("no such suppression")]
    NotFound,
    #[error(transparent)]
    Db(#[from] DbErr),
}

/// An email address or a whole domain, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Email(String),
    Domain(String),
}

impl Subject {
    /// Exactly one of `email` and `domain`, checked and normalised as a lookup's input.
    pub fn parse(email: Option<&str>, domain: Option<&str>) -> Result<Self, Vec<InputError>> {
        match (email, domain) {
            (Some(e), None) => EmailAddress::parse(e).map(|e| Subject::Email(e.to_string())).map_err(|e| vec![e]),
            (None, Some(d)) => Domain::parse(d).map(|d| Subject::Domain(d.to_string())).map_err(|e| vec![e]),
            _ => Err(vec![InputError::new("email", "send exactly one of `email` and `domain`")]),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Subject::Email(_) => "email",
            Subject::Domain(_) => "domain",
        }
    }

    /// What is hashed: `email:{address}` or `domain:{name}`.
    fn text(&self) -> String {
        match self {
            Subject::Email(e) => format!("email:{e}"),
            Subject::Domain(d) => format!("domain:{d}"),
        }
    }

    /// A masked form to show back (`j***@acme.com`; a domain as it is).
    pub fn hint(&self) -> String {
        match self {
            Subject::Email(e) => {
                let (local, domain) = e.rsplit_once('@').unwrap_or((e, ""));
                let first: String = local.chars().take(1).collect();
                format!("{first}***@{domain}")
            }
            Subject::Domain(d) => d.clone(),
        }
    }

    /// Whether a cache key (`email:…`, `email:…|company:…`, `domain:…`, each maybe in a
    /// test space `test:{workspace}:…`) holds data about this subject.
    pub fn in_cache_key(&self, key: &str) -> bool {
        let key = match key.strip_prefix("test:") {
            Some(rest) => rest.split_once(':').map_or(rest, |(_, k)| k),
            None => key,
        };
        let (lookup, company) = match key.split_once("|company:") {
            Some((lookup, company)) => (lookup, Some(company)),
            None => (key, None),
        };
        match self {
            Subject::Email(e) => lookup.strip_prefix("email:") == Some(e.as_str()),
            Subject::Domain(d) => {
                lookup.strip_prefix("domain:") == Some(d.as_str())
                    || lookup.strip_prefix("email:").and_then(|e| e.rsplit_once('@')).is_some_and(|(_, domain)| domain == d)
                    || company == Some(d.as_str())
            }
        }
    }
}

/// The subjects an input involves, as hashed: its email, the email's domain, its
/// company domain.
fn subjects_of(input: &LookupInput) -> Vec<String> {
    match input {
        LookupInput::Email { email, company_hint } => {
            let mut out = vec![format!("email:{email}"), format!("domain:{}", email.domain())];
            out.extend(company_hint.as_ref().map(|d| format!("domain:{d}")));
            out
        }
        LookupInput::Domain(d) => vec![format!("domain:{d}")],
    }
}

/// The lists as loaded.
#[derive(Default)]
struct Lists {
    version: i64,
    global: HashSet<String>,
    workspaces: HashMap<String, HashSet<String>>,
}

impl Lists {
    fn is_empty(&self) -> bool {
        self.global.is_empty() && self.workspaces.is_empty()
    }
}

/// A workspace's suppression, as shown to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuppressionView {
    pub id: String,
    /// `email` or `domain`.
    pub kind: String,
    pub hint: String,
    pub created_at: i64,
}

impl From<suppression::Model> for SuppressionView {
    fn from(m: suppression::Model) -> Self {
        Self { id: m.id, kind: m.kind, hint: m.hint.unwrap_or_default(), created_at: m.created_at }
    }
}

/// What an erasure removed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ErasureReport {
    /// `email` or `domain`.
    pub kind: &'static str,
    /// Whether the subject was already on the global list.
    pub already_suppressed: bool,
    /// Cache rows deleted (any workspace's test space included).
    pub cache_rows_deleted: u64,
    /// Stored idempotent answers that held the subject's data: a single call's replay
    /// now answers `no_match`; a bulk call's replay shows the subject's items as
    /// `no_match`. Their charges stay in the ledger.
    pub replays_redacted: u64,
    /// Job items about the subject whose result (and input) was replaced by a
    /// `no_match` result.
    pub job_results_redacted: u64,
}

/// The owner of the in-process copy of the suppression lists (see the module docs).
pub struct Suppressions {
    db: DatabaseConnection,
    sealer: Arc<Sealer>,
    hot: Arc<HotCaches>,
    lists: RwLock<Lists>,
}

impl Suppressions {
    /// Loads the lists.
    pub async fn load(db: DatabaseConnection, sealer: Arc<Sealer>, hot: Arc<HotCaches>) -> Result<Arc<Self>, DbErr> {
        let this = Arc::new(Self { db, sealer, hot, lists: RwLock::new(Lists { version: -1, ..Default::default() }) });
        this.refresh().await?;
        Ok(this)
    }

    /// Whether `input` is suppressed in `scope` (its own list, and the global list).
    /// Free while no list holds anything.
    pub fn is_suppressed(&self, scope: &Scope, input: &LookupInput) -> bool {
        let lists = self.lists.read().expect("not poisoned");
        if lists.is_empty() {
            return false;
        }
        let own = lists.workspaces.get(&scope.suppression_list());
        subjects_of(input)
            .iter()
            .map(|s| self.sealer.keyed_hash(s))
            .any(|h| lists.global.contains(&h) || own.is_some_and(|o| o.contains(&h)))
    }

    /// Reloads the lists when another process (or this one) changed them.
    pub async fn refresh(&self) -> Result<(), DbErr> {
        let version = current_version(&self.db).await?;
        if version == self.lists.read().expect("not poisoned").version {
            return Ok(());
        }
        let rows = suppression::Entity::find()
            .select_only()
            .column(suppression::Column::Scope)
            .column(suppression::Column::SubjectHash)
            .into_tuple::<(String, String)>()
            .all(&self.db)
            .await?;
        let mut fresh = Lists { version, ..Default::default() };
        for (scope, hash) in rows {
            if scope == GLOBAL {
                fresh.global.insert(hash);
            } else {
                fresh.workspaces.entry(scope).or_default().insert(hash);
            }
        }
        let grew = {
            let mut lists = self.lists.write().expect("not poisoned");
            let grew = fresh.global.iter().any(|h| !lists.global.contains(h));
            *lists = fresh;
            grew
        };
        if grew {
            self.hot.forget_enrichment_data();
        }
        Ok(())
    }

    /// Refreshes every `every`, forever; after failures in a row (the database is down)
    /// it waits longer each time (`crate::backoff`), and resumes by itself.
    pub async fn run(self: Arc<Self>, every: Duration) {
        let mut backoff = crate::backoff::Backoff::default();
        loop {
            let wait = match self.refresh().await {
                Ok(()) => {
                    if backoff.succeeded() {
                        tracing::info!("the suppression lists reload again");
                    }
                    every
                }
                Err(err) => {
                    let (wait, log) = backoff.failed(every);
                    if log {
                        tracing::warn!(error = %err, retry_in_ms = wait.as_millis() as u64, "reloading the suppression lists failed");
                    }
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// The hashes of what a single call is about, as `idempotency_records.subjects` keeps
    /// them: `one:` and the input's subjects' hashes.
    pub fn subjects_of_call(&self, input: &LookupInput) -> String {
        format!("one:{}", self.hashes(input).join(" "))
    }

    /// The same for a bulk call: `bulk:` and each item's hashes (none for an invalid
    /// item), items separated by `;`.
    pub fn subjects_of_items<'a>(&self, inputs: impl Iterator<Item = Option<&'a LookupInput>>) -> String {
        let items: Vec<String> = inputs.map(|input| input.map(|i| self.hashes(i).join(" ")).unwrap_or_default()).collect();
        format!("bulk:{}", items.join(";"))
    }

    fn hashes(&self, input: &LookupInput) -> Vec<String> {
        subjects_of(input).iter().map(|s| self.sealer.keyed_hash(s)).collect()
    }

    /// Puts `subject` on `scope`'s list (once); the row, and whether it was new.
    async fn add(&self, scope: &str, subject: &Subject, hint: Option<String>, now_ms: i64) -> Result<(suppression::Model, bool), DbErr> {
        let hash = self.sealer.keyed_hash(&subject.text());
        let txn = self.db.begin().await?;
        let inserted = suppression::Entity::insert(suppression::ActiveModel {
            id: Set(format!("sup_{}", uuid::Uuid::now_v7().simple())),
            scope: Set(scope.to_string()),
            kind: Set(subject.kind().to_string()),
            subject_hash: Set(hash.clone()),
            hint: Set(hint),
            created_at: Set(now_ms),
        })
        .on_conflict(OnConflict::columns([suppression::Column::Scope, suppression::Column::SubjectHash]).do_nothing().to_owned())
        .exec_without_returning(&txn)
        .await?;
        if inserted == 1 {
            bump_version(&txn).await?;
        }
        let row = suppression::Entity::find()
            .filter(suppression::Column::Scope.eq(scope))
            .filter(suppression::Column::SubjectHash.eq(hash))
            .one(&txn)
            .await?
            .ok_or_else(|| DbErr::RecordNotFound("the suppression just stored".into()))?;
        txn.commit().await?;
        self.refresh().await?;
        Ok((row, inserted == 1))
    }

    /// Puts `subject` on the list of `scope` (a workspace's live or test list); the
    /// entry, and whether it was new.
    pub async fn add_for_workspace(&self, scope: &Scope, subject: &Subject, now_ms: i64) -> Result<(SuppressionView, bool), PrivacyError> {
        let (row, new) = self.add(&scope.suppression_list(), subject, Some(subject.hint()), now_ms).await?;
        Ok((row.into(), new))
    }

    /// A page of a workspace's list, oldest first, after the cursor `after` (an id), and
    /// the cursor of the next page when there is one.
    pub async fn list(
        &self,
        scope: &Scope,
        after: Option<&str>,
        limit: u64,
    ) -> Result<(Vec<SuppressionView>, Option<String>), PrivacyError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let mut query = suppression::Entity::find().filter(suppression::Column::Scope.eq(scope.suppression_list()));
        if let Some(after) = after {
            query = query.filter(suppression::Column::Id.gt(after));
        }
        let rows = query.order_by_asc(suppression::Column::Id).limit(limit + 1).all(&self.db).await?;
        let (rows, next) = crate::page::split(rows, limit, |r| r.id.clone());
        Ok((rows.into_iter().map(Into::into).collect(), next))
    }

    /// Takes an entry off the list of `scope` (one of another workspace or mode is
    /// `NotFound`).
    pub async fn remove(&self, scope: &Scope, id: &str) -> Result<(), PrivacyError> {
        let txn = self.db.begin().await?;
        let deleted = suppression::Entity::delete_many()
            .filter(suppression::Column::Id.eq(id))
            .filter(suppression::Column::Scope.eq(scope.suppression_list()))
            .exec(&txn)
            .await?
            .rows_affected;
        if deleted == 0 {
            return Err(PrivacyError::NotFound);
        }
        bump_version(&txn).await?;
        txn.commit().await?;
        self.refresh().await?;
        Ok(())
    }

    /// An operator's erasure: the subject goes on the global list, and every cache row
    /// about it is deleted, now and again after `settle` (a row some server was writing
    /// at the first pass; by the second every server knows the subject is suppressed and
    /// writes no more). Idempotent; see `docs/privacy.md`.
    pub async fn erase(&self, subject: &Subject, now_ms: i64, settle: Duration) -> Result<ErasureReport, DbErr> {
        let (_, new) = self.add(GLOBAL, subject, None, now_ms).await?;
        let mut cache_rows_deleted = delete_cache_rows(&self.db, subject).await?;
        tokio::time::sleep(settle).await;
        cache_rows_deleted += delete_cache_rows(&self.db, subject).await?;
        let replays_redacted = redact_replays(&self.db, &self.sealer.keyed_hash(&subject.text())).await?;
        let job_results_redacted = redact_job_items(&self.db, subject).await?;
        Ok(ErasureReport { kind: subject.kind(), already_suppressed: !new, cache_rows_deleted, replays_redacted, job_results_redacted })
    }
}

async fn current_version(db: &impl ConnectionTrait) -> Result<i64, DbErr> {
    let row = db
        .query_one(Statement::from_string(db.get_database_backend(), "SELECT version FROM privacy_version WHERE id = 1"))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("privacy_version".into()))?;
    row.try_get_by_index(0)
}

async fn bump_version(db: &impl ConnectionTrait) -> Result<(), DbErr> {
    db.execute(Statement::from_string(db.get_database_backend(), "UPDATE privacy_version SET version = version + 1 WHERE id = 1")).await?;
    Ok(())
}

/// Deletes every cache row about `subject`: the rows whose key names it (found by a
/// coarse `LIKE` on its text, then checked exactly). Returns how many.
pub async fn delete_cache_rows(db: &impl ConnectionTrait, subject: &Subject) -> Result<u64, DbErr> {
    use entity::cache_entry;
    let needle = match subject {
        Subject::Email(e) | Subject::Domain(e) => e,
    };
    let escaped: String = needle.chars().flat_map(|c| if matches!(c, '%' | '_' | '\\') { vec!['\\', c] } else { vec![c] }).collect();
    let keys: Vec<String> = cache_entry::Entity::find()
        .select_only()
        .column(cache_entry::Column::CacheKey)
        .filter(Expr::col(cache_entry::Column::CacheKey).like(sea_orm::sea_query::LikeExpr::new(format!("%{escaped}%")).escape('\\')))
        .into_tuple()
        .all(db)
        .await?;
    let doomed: Vec<String> = keys.into_iter().filter(|k| subject.in_cache_key(k)).collect();
    let mut deleted = 0;
    for chunk in doomed.chunks(500) {
        deleted +=
            cache_entry::Entity::delete_many().filter(cache_entry::Column::CacheKey.is_in(chunk.to_vec())).exec(db).await?.rows_affected;
    }
    Ok(deleted)
}

/// Redacts the stored idempotent answers about the subject with keyed hash `hash` (see
/// [`ErasureReport::replays_redacted`]); returns how many records changed.
pub async fn redact_replays(db: &DatabaseConnection, hash: &str) -> Result<u64, DbErr> {
    use crate::bulk::{BulkAnswer, ItemFailure, ItemOutcome};
    use crate::idempotency::State;
    use entity::idempotency_record as rec;
    let records = rec::Entity::find()
        .filter(rec::Column::State.eq(State::Completed.as_str()))
        .filter(rec::Column::Subjects.like(format!("%{hash}%")))
        .all(db)
        .await?;
    let mut redacted = 0;
    for record in records {
        let subjects = record.subjects.as_deref().unwrap_or_default();
        let update = rec::Entity::update_many()
            .filter(rec::Column::WorkspaceId.eq(record.workspace_id.as_str()))
            .filter(rec::Column::IdempotencyKey.eq(record.idempotency_key.as_str()))
            .filter(rec::Column::State.eq(State::Completed.as_str()));
        if let Some(hashes) = subjects.strip_prefix("one:") {
            if hashes.split(' ').any(|h| h == hash) {
                update
                    .col_expr(rec::Column::State, Expr::value(State::Erased.as_str()))
                    .col_expr(rec::Column::ResponseBody, Expr::value(Option::<Vec<u8>>::None))
                    .exec(db)
                    .await?;
                redacted += 1;
            }
        } else if let Some(items) = subjects.strip_prefix("bulk:") {
            let about: Vec<usize> =
                items.split(';').enumerate().filter(|(_, hashes)| hashes.split(' ').any(|h| h == hash)).map(|(n, _)| n).collect();
            let Some(body) = record.response_body.as_deref().filter(|_| !about.is_empty()) else { continue };
            let mut answer: BulkAnswer = serde_json::from_slice(body).map_err(|e| DbErr::Custom(format!("a stored bulk answer: {e}")))?;
            for n in about {
                if let Some(item) = answer.items.get_mut(n) {
                    item.outcome = ItemOutcome::Failed { failure: ItemFailure::NoMatch };
                }
            }
            let body = serde_json::to_vec(&answer).map_err(|e| DbErr::Custom(e.to_string()))?;
            update.col_expr(rec::Column::ResponseBody, Expr::value(body)).exec(db).await?;
            redacted += 1;
        }
    }
    Ok(redacted)
}

/// Forgets every stored job item input about `subject`, whatever the item's state and
/// however the input was spelt (case, Unicode or punycode: an item is about the subject
/// when the parser's normal form of its input is): a done item's result becomes a
/// `no_match` result; an item not done yet loses its input and its lease, and is marked
/// erased (`StoredLookup::Erased`), so that it is answered `no_match` when it runs (a
/// chunk in flight loses its lease: it commits nothing, and runs again); a cancelled
/// item loses its input. Returns how many items changed.
pub async fn redact_job_items(db: &DatabaseConnection, subject: &Subject) -> Result<u64, DbErr> {
    use crate::bulk::{ItemFailure, ItemOutcome, ItemResult, StoredLookup};
    use entity::enrichment_job_item as item;
    // A coarse filter the exact check below refines: the ASCII text of the subject's
    // punycode form, or the longest ASCII run of its Unicode form (`bücher.de` →
    // `cher.de`), each found case-insensitively for ASCII letters (as both databases
    // fold `lower()`), so that `Jane@Bücher.de` and `ANNA@MÜLLER.DE` are candidates.
    let needles = coarse_needles(subject);
    let like = |col: item::Column, needle: &str| {
        let escaped = needle.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        Expr::expr(sea_orm::sea_query::Func::lower(Expr::col(col)))
            .like(sea_orm::sea_query::LikeExpr::new(format!("%{escaped}%")).escape('\\'))
    };
    let mut any = sea_orm::Condition::any();
    for needle in &needles {
        any = any.add(like(item::Column::Email, needle)).add(like(item::Column::Domain, needle));
    }
    let candidates = item::Entity::find().filter(any).all(db).await?;
    let wanted = subject.text();
    let erased = serde_json::to_string(&StoredLookup::Erased).map_err(|e| DbErr::Custom(e.to_string()))?;
    let mut redacted = 0;
    for found in candidates {
        let email = found.email.as_deref().and_then(|e| EmailAddress::parse(e).ok());
        let domain = found.domain.as_deref().and_then(|d| Domain::parse(d).ok());
        let Ok(input) = LookupInput::new(email, domain) else { continue };
        if !subjects_of(&input).contains(&wanted) {
            continue;
        }
        let update = item::Entity::update_many()
            .col_expr(item::Column::Email, Expr::value(Option::<String>::None))
            .col_expr(item::Column::Domain, Expr::value(Option::<String>::None))
            .filter(item::Column::JobId.eq(found.job_id.as_str()))
            .filter(item::Column::Idx.eq(found.idx))
            .filter(item::Column::State.eq(found.state.as_str()));
        let update = match found.state.as_str() {
            "done" => {
                let result =
                    ItemResult { reference: found.reference.clone(), outcome: ItemOutcome::Failed { failure: ItemFailure::NoMatch } };
                update
                    .col_expr(item::Column::Result, Expr::value(serde_json::to_string(&result).map_err(|e| DbErr::Custom(e.to_string()))?))
                    .col_expr(item::Column::Lookup, Expr::value(Option::<String>::None))
            }
            "pending" | "looked_up" => update
                .col_expr(item::Column::Lookup, Expr::value(erased.clone()))
                .col_expr(item::Column::LeaseOwner, Expr::value(Option::<String>::None))
                .col_expr(item::Column::LeaseUntil, Expr::value(Option::<i64>::None)),
            _ => update.col_expr(item::Column::Lookup, Expr::value(Option::<String>::None)),
        };
        redacted += update.exec(db).await?.rows_affected;
    }
    Ok(redacted)
}

/// The texts a stored input about `subject` must contain (see [`redact_job_items`]).
fn coarse_needles(subject: &Subject) -> Vec<String> {
    let text = match subject {
        Subject::Email(e) | Subject::Domain(e) => e.clone(),
    };
    let (local, host) = match subject {
        Subject::Email(e) => e.rsplit_once('@').map_or((None, e.as_str()), |(l, h)| (Some(l), h)),
        Subject::Domain(d) => (None, d.as_str()),
    };
    let unicode = idna::domain_to_unicode(host).0;
    let unicode = match local {
        Some(local) => format!("{local}@{unicode}"),
        None => unicode,
    };
    let longest_ascii = unicode.split(|c: char| !c.is_ascii()).max_by_key(|run| run.len()).unwrap_or("").to_ascii_lowercase();
    let mut needles = vec![text];
    if !longest_ascii.is_empty() && !needles.contains(&longest_ascii) {
        needles.push(longest_ascii);
    }
    needles
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_is_found_in_every_cache_key_about_it() {
        let email = Subject::parse(Some("Jane@Acme.com"), None).unwrap();
        assert_eq!(email, Subject::Email("jane@acme.com".into()));
        assert_eq!(email.hint(), "j***@acme.com");
        for key in ["email:jane@acme.com", "email:jane@acme.com|company:other.com", "test:ws_1:email:jane@acme.com"] {
            assert!(email.in_cache_key(key), "{key}");
        }
        for key in ["email:xjane@acme.com", "email:jane@acme.com.evil", "domain:acme.com", "email:jane@acmes.com"] {
            assert!(!email.in_cache_key(key), "{key}");
        }
        let domain = Subject::parse(None, Some("https://www.Acme.com/about")).unwrap();
        assert_eq!(domain, Subject::Domain("acme.com".into()));
        for key in ["domain:acme.com", "email:bob@acme.com", "email:bob@gmail.com|company:acme.com", "test:ws_1:domain:acme.com"] {
            assert!(domain.in_cache_key(key), "{key}");
        }
        for key in ["domain:notacme.com", "email:bob@sub.acme.com", "email:acme.com@x.org", "domain:acme.co"] {
            assert!(!domain.in_cache_key(key), "{key}");
        }
        assert!(Subject::parse(Some("a@b.co"), Some("b.co")).is_err());
        assert!(Subject::parse(None, None).is_err());
    }

    #[test]
    fn every_spelling_of_a_subject_contains_one_of_its_needles() {
        let subject = Subject::parse(Some("jane@bücher.de"), None).unwrap();
        let needles = coarse_needles(&subject);
        for stored in ["jane@xn--bcher-kva.de", "Jane@Bücher.de", "JANE@BÜCHER.DE", " jane@bücher.de "] {
            let folded = stored.to_ascii_lowercase();
            assert!(needles.iter().any(|n| folded.contains(n.as_str())), "{stored}: {needles:?}");
        }
        let domain = Subject::parse(None, Some("MÜLLER.de")).unwrap();
        let needles = coarse_needles(&domain);
        for stored in ["anna@müller.de", "ANNA@MÜLLER.DE", "https://www.xn--mller-kva.de/x"] {
            let folded = stored.to_ascii_lowercase();
            assert!(needles.iter().any(|n| folded.contains(n.as_str())), "{stored}: {needles:?}");
        }
    }
}
