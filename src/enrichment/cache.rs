//! The enrichment cache, keyed by the normalised input ([`LookupInput::cache_key`]).
//! An entry is served until its `expires_at`; expired entries are ignored and purged.

use sea_orm::{
    sea_query::OnConflict, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter,
};

use entity::cache_entry;

use super::input::LookupInput;
use super::record::{EnrichmentRecord, Matched};
use super::vendors::VendorName;

/// The cached answer for `input`, if fresh at `now_ms`.
pub async fn get(db: &impl ConnectionTrait, input: &LookupInput, now_ms: i64) -> Result<Option<Matched>, DbErr> {
    let Some(row) = cache_entry::Entity::find_by_id(input.cache_key()).one(db).await? else {
        return Ok(None);
    };
    if row.expires_at <= now_ms {
        return Ok(None);
    }
    let (Ok(record), Some(vendor)) = (
        serde_json::from_str::<EnrichmentRecord>(&row.record),
        VendorName::parse(&row.vendor),
    ) else {
        tracing::warn!(cache_key = %row.cache_key, "unreadable cache entry ignored");
        return Ok(None);
    };
    Ok(Some(Matched { record, vendor, confidence: row.confidence }))
}

/// Stores (or replaces) the answer for `input`.
pub async fn put(
    db: &impl ConnectionTrait,
    input: &LookupInput,
    matched: &Matched,
    now_ms: i64,
    ttl_ms: i64,
) -> Result<(), DbErr> {
    let row = cache_entry::ActiveModel {
        cache_key: Set(input.cache_key()),
        record: Set(serde_json::to_string(&matched.record).expect("record serialises")),
        vendor: Set(matched.vendor.as_str().to_string()),
        confidence: Set(matched.confidence),
        fetched_at: Set(now_ms),
        expires_at: Set(now_ms.saturating_add(ttl_ms)),
    };
    cache_entry::Entity::insert(row)
        .on_conflict(
            OnConflict::column(cache_entry::Column::CacheKey)
                .update_columns([
                    cache_entry::Column::Record,
                    cache_entry::Column::Vendor,
                    cache_entry::Column::Confidence,
                    cache_entry::Column::FetchedAt,
                    cache_entry::Column::ExpiresAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// Deletes expired entries; returns how many.
pub async fn purge_expired(db: &impl ConnectionTrait, now_ms: i64) -> Result<u64, DbErr> {
    let res = cache_entry::Entity::delete_many()
        .filter(cache_entry::Column::ExpiresAt.lte(now_ms))
        .exec(db)
        .await?;
    Ok(res.rows_affected)
}
