//! The PostgreSQL writer: a small sqlx pool of its own, driven by the settler's thread.
//!
//! A batch of plain lookups (one workspace, no idempotency claim: a burst of cached hits
//! or of misses) is ONE statement in autocommit: a CTE writes the cache rows carried
//! from the previous batch, takes all of the batch's credits with the conditional update
//! and inserts their ledger rows from the returned balance, so it costs one round trip
//! and one WAL flush. Anything else runs in a transaction.
//! The statements are the ones `credits`, `idempotency` and `enrichment::cache` issue
//! through sea-orm, written out for the hot path (the whole suite runs them on
//! PostgreSQL).

use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};

use super::{CacheRow, StoreError};
use crate::config::DatabaseSettings;
use crate::idempotency::ClaimToken;

pub struct Store {
    pool: PgPool,
    txn: Option<Transaction<'static, Postgres>>,
}

fn err(e: sqlx::Error) -> StoreError {
    let unavailable = crate::db::sqlx_unavailable(&e);
    StoreError::new(e, unavailable)
}

/// Runs `$query` on the open transaction, or on the pool when the batch needs none.
macro_rules! on {
    ($self:ident, $query:expr, $method:ident) => {
        match $self.txn.as_mut() {
            Some(txn) => $query.$method(&mut **txn).await,
            None => $query.$method(&$self.pool).await,
        }
        .map_err(err)
    };
}

impl Store {
    pub async fn open(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            // No ping before each statement: a dead connection fails its batch (503s,
            // nothing committed) and the pool replaces it.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(settings.acquire_timeout_secs))
            .connect(&settings.url)
            .await?;
        Ok(Self { pool, txn: None })
    }
}

const DEBIT_BATCH: &str = concat!(
    "WITH cache AS (INSERT INTO enrichment_cache \
       (cache_key, record, vendor, confidence, fetched_at, expires_at, outcome) \
       SELECT * FROM unnest($6::text[], $7::text[], $8::text[], $9::float8[], $10::int8[], $11::int8[], $12::text[]) ",
    cache_on_conflict!(),
    "), \
     debit AS ( \
       UPDATE workspaces SET credit_balance = credit_balance - $2 \
       WHERE id = $1 AND credit_balance >= $2 RETURNING credit_balance), \
     ledger AS ( \
       INSERT INTO credit_ledger (workspace_id, api_key_id, request_id, delta, balance_after, reason, created_at) \
       SELECT $1, k.key, k.request, -1, debit.credit_balance + $2 - k.n, 'enrich', $5 \
       FROM debit, unnest($3::text[], $4::text[]) WITH ORDINALITY AS k(key, request, n) ORDER BY k.n) \
     SELECT credit_balance FROM debit"
);

const PUT_CACHE: &str = concat!(
    "INSERT INTO enrichment_cache \
     (cache_key, record, vendor, confidence, fetched_at, expires_at, outcome) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::int8[], $6::int8[], $7::text[]) ",
    cache_on_conflict!()
);

type Query<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

/// Binds cache rows as seven arrays, one per column (the next seven parameters). One
/// statement may upsert a key only once, so for a repeated key the last row wins, as it
/// would one statement after another.
fn bind_cache<'q>(q: Query<'q>, rows: &'q [CacheRow]) -> Query<'q> {
    // In key order, so that concurrent writers (other replicas) lock rows in one order.
    let mut last: std::collections::BTreeMap<&str, &CacheRow> = Default::default();
    for row in rows {
        last.insert(&row.cache_key, row);
    }
    let rows: Vec<&CacheRow> = last.into_values().collect();
    q.bind(rows.iter().map(|r| r.cache_key.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.record.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.vendor.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.confidence).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.fetched_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.expires_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.outcome.as_str()).collect::<Vec<_>>())
}

impl super::Store for Store {
    async fn begin(&mut self, atomic_statements: bool) -> Result<(), StoreError> {
        if self.txn.is_none() && !atomic_statements {
            self.txn = Some(self.pool.begin().await.map_err(err)?);
        }
        Ok(())
    }

    async fn touch(&mut self, claim: &ClaimToken) -> Result<bool, StoreError> {
        let (workspace_id, key, token) = claim.parts();
        let q = sqlx::query(
            "UPDATE idempotency_records SET locked_until = locked_until \
             WHERE workspace_id = $1 AND idempotency_key = $2 AND state = 'in_progress' AND owner_token = $3",
        )
        .bind(workspace_id)
        .bind(key)
        .bind(token);
        Ok(on!(self, q, execute)?.rows_affected() == 1)
    }

    async fn debit_batch(
        &mut self,
        workspace_id: &str,
        rows: &[(&str, &str)],
        cache: &[CacheRow],
        now_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        if rows.is_empty() {
            if !cache.is_empty() {
                super::Store::put_cache(self, cache).await?;
            }
            return Ok(None);
        }
        let keys: Vec<&str> = rows.iter().map(|r| r.0).collect();
        let requests: Vec<&str> = rows.iter().map(|r| r.1).collect();
        let q = bind_cache(
            sqlx::query(DEBIT_BATCH)
                .bind(workspace_id)
                .bind(rows.len() as i64)
                .bind(&keys)
                .bind(&requests)
                .bind(now_ms),
            cache,
        );
        let row = on!(self, q, fetch_optional)?;
        row.map(|r| r.try_get::<i64, _>(0)).transpose().map_err(err)
    }

    async fn debit_one(&mut self, workspace_id: &str, api_key_id: &str, request_id: &str, now_ms: i64) -> Result<Option<i64>, StoreError> {
        self.debit_batch(workspace_id, &[(api_key_id, request_id)], &[], now_ms).await
    }

    async fn put_cache(&mut self, rows: &[CacheRow]) -> Result<(), StoreError> {
        let q = bind_cache(sqlx::query(PUT_CACHE), rows);
        on!(self, q, execute)?;
        Ok(())
    }

    async fn complete(&mut self, claim: &ClaimToken, body: &[u8]) -> Result<bool, StoreError> {
        let (workspace_id, key, token) = claim.parts();
        let q = sqlx::query(
            "UPDATE idempotency_records SET state = 'completed', response_status = 200, response_body = $4 \
             WHERE workspace_id = $1 AND idempotency_key = $2 AND state = 'in_progress' AND owner_token = $3",
        )
        .bind(workspace_id)
        .bind(key)
        .bind(token)
        .bind(body);
        Ok(on!(self, q, execute)?.rows_affected() == 1)
    }

    async fn commit(&mut self) -> Result<(), StoreError> {
        match self.txn.take() {
            Some(txn) => txn.commit().await.map_err(err),
            None => Ok(()),
        }
    }

    async fn rollback(&mut self) {
        if let Some(txn) = self.txn.take() {
            if let Err(e) = txn.rollback().await {
                tracing::error!(error = %e, "rolling back a settlement batch failed");
            }
        }
    }
}
