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
    sea_query::OnConflict, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement, TransactionTrait,
};

use entity::suppression;

use crate::hot::Forget;
use crate::lookup::input::{Domain, EmailAddress, LookupInput};
use crate::scope::Scope;
use crate::seal::Sealer;
use crate::validation::FieldError;

/// The global list's scope.
pub const GLOBAL: &str = "*";
/// Largest page of a workspace's list.
pub const MAX_PAGE: u64 = 100;

/// Why a privacy operation failed; mapped to HTTP in `api::error` only.
#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    #[error("invalid subject")]
    Invalid(Vec<FieldError>),
    #[error("no such suppression")]
    NotFound,
    #[error(transparent)]
    Db(#[from] DbErr),
}

/// An email address or a whole domain, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSubject {
    Email(String),
    Domain(String),
}

impl DataSubject {
    /// Exactly one of `email` and `domain`, checked and normalised as a lookup's input.
    pub fn parse(email: Option<&str>, domain: Option<&str>) -> Result<Self, Vec<FieldError>> {
        match (email, domain) {
            (Some(e), None) => EmailAddress::parse(e).map(|e| DataSubject::Email(e.to_string())).map_err(|e| vec![e]),
            (None, Some(d)) => Domain::parse(d).map(|d| DataSubject::Domain(d.to_string())).map_err(|e| vec![e]),
            _ => Err(vec![FieldError::new("email", "send exactly one of `email` and `domain`")]),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            DataSubject::Email(_) => "email",
            DataSubject::Domain(_) => "domain",
        }
    }

    /// What is hashed: `email:{address}` or `domain:{name}`.
    pub(crate) fn text(&self) -> String {
        match self {
            DataSubject::Email(e) => format!("email:{e}"),
            DataSubject::Domain(d) => format!("domain:{d}"),
        }
    }

    /// A masked form to show back (`j***@acme.com`; a domain as it is).
    pub fn hint(&self) -> String {
        match self {
            DataSubject::Email(e) => {
                let (local, domain) = e.rsplit_once('@').unwrap_or((e, ""));
                let first: String = local.chars().take(1).collect();
                format!("{first}***@{domain}")
            }
            DataSubject::Domain(d) => d.clone(),
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
            DataSubject::Email(e) => lookup.strip_prefix("email:") == Some(e.as_str()),
            DataSubject::Domain(d) => {
                lookup.strip_prefix("domain:") == Some(d.as_str())
                    || lookup.strip_prefix("email:").and_then(|e| e.rsplit_once('@')).is_some_and(|(_, domain)| domain == d)
                    || company == Some(d.as_str())
            }
        }
    }
}

/// The subjects an input involves, as hashed: its email, the email's domain, its
/// company domain.
pub(crate) fn subjects_of(input: &LookupInput) -> Vec<String> {
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

/// The owner of the in-process copy of the suppression lists (see the module docs).
pub struct Suppressions {
    db: DatabaseConnection,
    sealer: Arc<Sealer>,
    /// The in-process caches that may hold a subject's data (cache rows, replays): all
    /// emptied when the global list grows (an erasure).
    forget: Vec<Arc<dyn Forget>>,
    lists: RwLock<Lists>,
}

impl Suppressions {
    /// Loads the lists.
    pub async fn load(db: DatabaseConnection, sealer: Arc<Sealer>, forget: Vec<Arc<dyn Forget>>) -> Result<Arc<Self>, DbErr> {
        let this = Arc::new(Self { db, sealer, forget, lists: RwLock::new(Lists { version: -1, ..Default::default() }) });
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
            self.forget.iter().for_each(|cache| cache.forget_all());
        }
        Ok(())
    }

    /// Refreshes every `every` until `stop` is notified; after failures in a row (the
    /// database is down) it waits longer each time (`crate::backoff`), and resumes by
    /// itself.
    pub async fn run(self: Arc<Self>, every: Duration, stop: Arc<tokio::sync::Notify>) {
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
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.notified() => return,
            }
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
    async fn add(
        &self,
        scope: &str,
        subject: &DataSubject,
        hint: Option<String>,
        now_ms: i64,
    ) -> Result<(suppression::Model, bool), DbErr> {
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
    pub async fn add_for_workspace(
        &self,
        scope: &Scope,
        subject: &DataSubject,
        now_ms: i64,
    ) -> Result<(SuppressionView, bool), PrivacyError> {
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

    /// Puts `subject` on the global list (for `crate::erasure`); whether it is new there.
    pub(crate) async fn add_global(&self, subject: &DataSubject, now_ms: i64) -> Result<bool, DbErr> {
        Ok(self.add(GLOBAL, subject, None, now_ms).await?.1)
    }

    /// The keyed hash by which stored records name `subject` (see `subjects_of_call`).
    pub(crate) fn subject_hash(&self, subject: &DataSubject) -> String {
        self.sealer.keyed_hash(&subject.text())
    }

    pub(crate) fn db(&self) -> &DatabaseConnection {
        &self.db
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_is_found_in_every_cache_key_about_it() {
        let email = DataSubject::parse(Some("Jane@Acme.com"), None).unwrap();
        assert_eq!(email, DataSubject::Email("jane@acme.com".into()));
        assert_eq!(email.hint(), "j***@acme.com");
        for key in ["email:jane@acme.com", "email:jane@acme.com|company:other.com", "test:ws_1:email:jane@acme.com"] {
            assert!(email.in_cache_key(key), "{key}");
        }
        for key in ["email:xjane@acme.com", "email:jane@acme.com.evil", "domain:acme.com", "email:jane@acmes.com"] {
            assert!(!email.in_cache_key(key), "{key}");
        }
        let domain = DataSubject::parse(None, Some("https://www.Acme.com/about")).unwrap();
        assert_eq!(domain, DataSubject::Domain("acme.com".into()));
        for key in ["domain:acme.com", "email:bob@acme.com", "email:bob@gmail.com|company:acme.com", "test:ws_1:domain:acme.com"] {
            assert!(domain.in_cache_key(key), "{key}");
        }
        for key in ["domain:notacme.com", "email:bob@sub.acme.com", "email:acme.com@x.org", "domain:acme.co"] {
            assert!(!domain.in_cache_key(key), "{key}");
        }
        assert!(DataSubject::parse(Some("a@b.co"), Some("b.co")).is_err());
        assert!(DataSubject::parse(None, None).is_err());
    }
}
