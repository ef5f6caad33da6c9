//! The enrichment cache, keyed by the normalised input ([`LookupInput::cache_key`]), in
//! the live space or a workspace's test space ([`Subject`]).
//!
//! A match is served while every section the caller asks for is younger than its TTL
//! (configurable per section); a remembered no-match is served until its short TTL runs
//! out. Expired entries are ignored and purged in the background, as is every entry past
//! `[cache] retention_days` (90) whatever its TTL. Rows are written by the
//! settler only (see `docs/design.md`, cache writes); this module reads and interprets them.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};

use entity::cache_entry;

use super::input::Section;
use super::record::{EnrichmentRecord, Matched};
use super::vendors::VendorName;
use super::Subject;
use crate::config::CacheSettings;

const MATCH: &str = "match";
const NO_MATCH: &str = "no_match";

/// How long each kind of entry is served.
#[derive(Debug, Clone, Copy)]
pub struct CachePolicy {
    pub person: Duration,
    pub company: Duration,
    pub social: Duration,
    pub negative: Duration,
}

impl CachePolicy {
    pub fn from_settings(s: &CacheSettings) -> Self {
        let or_default = |v: Option<u64>| Duration::from_secs(v.unwrap_or(s.ttl_secs));
        Self {
            person: or_default(s.person_ttl_secs),
            company: or_default(s.company_ttl_secs),
            social: or_default(s.social_ttl_secs),
            negative: Duration::from_secs(s.negative_ttl_secs),
        }
    }

    fn ttl(&self, section: Section) -> Duration {
        match section {
            Section::Person => self.person,
            Section::Company => self.company,
            Section::Social => self.social,
        }
    }

    fn longest(&self) -> Duration {
        self.person.max(self.company).max(self.social)
    }
}

/// What the cache knows about an input.
#[derive(Debug, Clone, PartialEq)]
pub enum Cached {
    /// The answer, and the `fetched_at` of its entry (entries change only by being
    /// replaced, so the cache key and `fetched_at` identify one).
    Match(Arc<Matched>, i64),
    /// A remembered no-match, and when the vendors said so.
    NoMatch(i64),
    Miss,
}

impl Cached {
    /// A miss when the entry is `max_age_ms` old or older (a caller's `max_age_days`).
    pub fn younger_than(self, max_age_ms: Option<i64>, now_ms: i64) -> Self {
        let fetched_at = match &self {
            Cached::Match(_, at) | Cached::NoMatch(at) => *at,
            Cached::Miss => return self,
        };
        match max_age_ms {
            Some(max) if now_ms - fetched_at >= max => Cached::Miss,
            _ => self,
        }
    }
}

fn present(record: &EnrichmentRecord) -> impl Iterator<Item = Section> + '_ {
    Section::ALL.into_iter().filter(|s| match s {
        Section::Person => record.person.is_some(),
        Section::Company => record.company.is_some(),
        Section::Social => record.social.is_some(),
    })
}

/// The stored entry for a cache key, fresh or not.
pub async fn row(db: &impl ConnectionTrait, cache_key: &str) -> Result<Option<cache_entry::Model>, DbErr> {
    cache_entry::Entity::find_by_id(cache_key).one(db).await
}

/// [`row`] on a synchronous SQLite connection (see `db::SqliteReads`).
pub fn row_sqlite(conn: &rusqlite::Connection, cache_key: &str) -> rusqlite::Result<Option<cache_entry::Model>> {
    use rusqlite::OptionalExtension;
    conn.prepare_cached(
        "SELECT cache_key, record, vendor, confidence, fetched_at, expires_at, outcome \
         FROM enrichment_cache WHERE cache_key = ?1",
    )?
    .query_row([cache_key], |r| {
        Ok(cache_entry::Model {
            cache_key: r.get(0)?,
            record: r.get(1)?,
            vendor: r.get(2)?,
            confidence: r.get(3)?,
            fetched_at: r.get(4)?,
            expires_at: r.get(5)?,
            outcome: r.get(6)?,
        })
    })
    .optional()
}

/// A stored entry with its record parsed once (what the in-process memo keeps).
#[derive(Debug)]
pub struct Entry {
    pub fetched_at: i64,
    pub expires_at: i64,
    /// `None` for a remembered no-match, or a record that does not parse (ignored).
    matched: Option<Arc<Matched>>,
    no_match: bool,
}

impl Entry {
    pub fn new(row: cache_entry::Model) -> Self {
        let no_match = row.outcome == NO_MATCH;
        let matched = if no_match {
            None
        } else {
            match (serde_json::from_str::<EnrichmentRecord>(&row.record), VendorName::parse(&row.vendor)) {
                (Ok(record), Some(vendor)) => Some(Arc::new(Matched { record, vendor, confidence: row.confidence })),
                _ => {
                    tracing::warn!(cache_key = %row.cache_key, "unreadable cache entry ignored");
                    None
                }
            }
        };
        Self { fetched_at: row.fetched_at, expires_at: row.expires_at, matched, no_match }
    }

    /// The entry [`match_row`] makes, without a round trip through its JSON.
    pub fn of_match(matched: Arc<Matched>, fetched_at: i64, expires_at: i64) -> Self {
        Self { fetched_at, expires_at, matched: Some(matched), no_match: false }
    }

    /// What the entry says about a request for `include` at `now_ms`.
    pub fn interpret(&self, include: &BTreeSet<Section>, policy: &CachePolicy, now_ms: i64) -> Cached {
        if self.expires_at <= now_ms {
            return Cached::Miss;
        }
        if self.no_match {
            return Cached::NoMatch(self.fetched_at);
        }
        let Some(matched) = &self.matched else { return Cached::Miss };
        let age = Duration::from_millis((now_ms - self.fetched_at).max(0) as u64);
        if present(&matched.record).any(|s| include.contains(&s) && age >= policy.ttl(s)) {
            return Cached::Miss;
        }
        Cached::Match(matched.clone(), self.fetched_at)
    }
}

/// The row that stores `matched` as the answer for `subject`, fetched at `now_ms`.
/// Written by the settler, the one writer of the cache.
pub fn match_row(subject: &Subject<'_>, matched: &Matched, policy: &CachePolicy, now_ms: i64) -> cache_entry::Model {
    cache_entry::Model {
        cache_key: subject.cache_key.clone(),
        record: serde_json::to_string(&matched.record).expect("record serialises"),
        vendor: matched.vendor.as_str().to_string(),
        confidence: matched.confidence,
        fetched_at: now_ms,
        expires_at: now_ms.saturating_add(policy.longest().as_millis() as i64),
        outcome: MATCH.to_string(),
    }
}

/// The row that remembers that no vendor knows `subject`, for the policy's negative TTL
/// (`None` when no-matches are not remembered).
pub fn no_match_row(subject: &Subject<'_>, policy: &CachePolicy, now_ms: i64) -> Option<cache_entry::Model> {
    (!policy.negative.is_zero()).then(|| cache_entry::Model {
        cache_key: subject.cache_key.clone(),
        record: "null".to_string(),
        vendor: String::new(),
        confidence: 0.0,
        fetched_at: now_ms,
        expires_at: now_ms.saturating_add(policy.negative.as_millis() as i64),
        outcome: NO_MATCH.to_string(),
    })
}

/// Deletes expired entries, and entries fetched `retention` ago or longer whatever their
/// expiry; returns how many.
pub async fn purge_expired(db: &impl ConnectionTrait, now_ms: i64, retention: Duration) -> Result<u64, DbErr> {
    let kept_since = now_ms.saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
    let res = cache_entry::Entity::delete_many()
        .filter(cache_entry::Column::ExpiresAt.lte(now_ms).or(cache_entry::Column::FetchedAt.lte(kept_since)))
        .exec(db)
        .await?;
    Ok(res.rows_affected)
}
