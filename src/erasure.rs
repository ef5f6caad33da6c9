//! Erasure: an operator's request to forget a subject everywhere (`leadlex privacy
//! erase`). The subject goes on the global suppression list ([`crate::privacy`]), its
//! cache rows are deleted, and what bulk calls and jobs stored about it is rewritten as
//! a `no_match` (their stored formats are [`crate::bulk`]'s), in every item state.
//!
//! A capability above jobs and bulk (it rewrites their records) and beside privacy,
//! which stays below enrich (every lookup asks it whether a subject is suppressed).
//! Invariants: idempotent; charges stay in the ledger; nothing about the subject is
//! left in a cache row, a replay or a job item once it returns.

use std::time::Duration;

use sea_orm::{sea_query::Expr, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QuerySelect};

use crate::lookup::input::{Domain, EmailAddress, LookupInput};
use crate::privacy::{subjects_of, DataSubject, Suppressions};

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

/// An operator's erasure: the subject goes on the global list, and every cache row
/// about it is deleted, now and again after `settle` (a row some server was writing at
/// the first pass; by the second every server knows the subject is suppressed and writes
/// no more); then the stored replays and job items about it are redacted. Idempotent;
/// see `docs/privacy.md`.
pub async fn erase(suppressions: &Suppressions, subject: &DataSubject, now_ms: i64, settle: Duration) -> Result<ErasureReport, DbErr> {
    let new = suppressions.add_global(subject, now_ms).await?;
    let db = suppressions.db();
    let mut cache_rows_deleted = delete_cache_rows(db, subject).await?;
    tokio::time::sleep(settle).await;
    cache_rows_deleted += delete_cache_rows(db, subject).await?;
    let replays_redacted = redact_replays(db, &suppressions.subject_hash(subject)).await?;
    let job_results_redacted = redact_job_items(db, subject).await?;
    Ok(ErasureReport { kind: subject.kind(), already_suppressed: !new, cache_rows_deleted, replays_redacted, job_results_redacted })
}

/// Deletes every cache row about `subject`: the rows whose key names it (found by a
/// coarse `LIKE` on its text, then checked exactly). Returns how many.
pub async fn delete_cache_rows(db: &impl ConnectionTrait, subject: &DataSubject) -> Result<u64, DbErr> {
    use entity::cache_entry;
    let needle = match subject {
        DataSubject::Email(e) | DataSubject::Domain(e) => e,
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
pub async fn redact_job_items(db: &DatabaseConnection, subject: &DataSubject) -> Result<u64, DbErr> {
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
fn coarse_needles(subject: &DataSubject) -> Vec<String> {
    let text = match subject {
        DataSubject::Email(e) | DataSubject::Domain(e) => e.clone(),
    };
    let (local, host) = match subject {
        DataSubject::Email(e) => e.rsplit_once('@').map_or((None, e.as_str()), |(l, h)| (Some(l), h)),
        DataSubject::Domain(d) => (None, d.as_str()),
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
    fn every_spelling_of_a_subject_contains_one_of_its_needles() {
        let subject = DataSubject::parse(Some("jane@bücher.de"), None).unwrap();
        let needles = coarse_needles(&subject);
        for stored in ["jane@xn--bcher-kva.de", "Jane@Bücher.de", "JANE@BÜCHER.DE", " jane@bücher.de "] {
            let folded = stored.to_ascii_lowercase();
            assert!(needles.iter().any(|n| folded.contains(n.as_str())), "{stored}: {needles:?}");
        }
        let domain = DataSubject::parse(None, Some("MÜLLER.de")).unwrap();
        let needles = coarse_needles(&domain);
        for stored in ["anna@müller.de", "ANNA@MÜLLER.DE", "https://www.xn--mller-kva.de/x"] {
            let folded = stored.to_ascii_lowercase();
            assert!(needles.iter().any(|n| folded.contains(n.as_str())), "{stored}: {needles:?}");
        }
    }
}
