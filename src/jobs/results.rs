//! A job's results, a page at a time: done items in item order, each with its input and
//! its result (what `GET /v1/enrich/jobs/{id}/results` and its CSV show).

use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use entity::enrichment_job_item as item;

use crate::bulk::ItemResult;
use crate::scope::Scope;

use super::store::get;
use super::{JobError, DONE};

/// A done item of a job: its input and its result.
#[derive(Debug, Clone)]
pub struct ResultRow {
    pub idx: i32,
    pub email: Option<String>,
    pub domain: Option<String>,
    pub result: ItemResult,
}

/// Up to `limit` done items of the job `id` of `scope` after item `starting_after`, in
/// item order; the cursor of the next page when there is one.
pub async fn result_rows(
    db: &DatabaseConnection,
    scope: &Scope,
    id: &str,
    limit: u64,
    starting_after: Option<i32>,
) -> Result<(Vec<ResultRow>, Option<i32>), JobError> {
    get(db, scope, id).await?;
    let mut q = item::Entity::find().filter(item::Column::JobId.eq(id)).filter(item::Column::State.eq(DONE));
    if let Some(after) = starting_after {
        q = q.filter(item::Column::Idx.gt(after));
    }
    let rows = q.order_by_asc(item::Column::Idx).limit(limit + 1).all(db).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let result: ItemResult =
            serde_json::from_str(row.result.as_deref().unwrap_or("null")).map_err(|e| JobError::Corrupt(e.to_string()))?;
        out.push(ResultRow { idx: row.idx, email: row.email, domain: row.domain, result });
    }
    Ok(crate::page::split(out, limit, |r| r.idx))
}
