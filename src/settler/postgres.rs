//! The PostgreSQL store: one sqlx connection of its own, driven synchronously by the
//! writer's thread through a single-threaded runtime that only this store uses.
//!
//! A balance change is ONE statement: a CTE writes the cache rows carried from earlier
//! batches (if any), changes the balance with the conditional update, inserts the ledger
//! rows from the returned balance and adds the change to its day's usage counter. A batch
//! of plain lookups (one workspace, no idempotency claim: a burst of cached hits or of
//! misses) runs it in autocommit, so it costs one round trip and one WAL flush. Anything
//! else runs in a transaction.
//!
//! Every write of balances, the ledger and its usage counters, completed idempotency
//! records and the cache on PostgreSQL is one of the statements below. Enum values are
//! bound from their Rust types.

use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};
use tokio::runtime::Runtime;

use super::batch::{BalanceChange, StoreError};
use super::claim::{ClaimToken, State};
use super::statements::{self, add_usage, low_balance_webhooks, COMPLETE_CLAIM, COUNT_JOB_ITEMS};
use super::CacheRow;
use crate::config::DatabaseSettings;
use crate::outbox::{self, delivery_columns, Event, JobView};

/// Upserts the cache rows bound as seven arrays in `$1`–`$7` (see [`bind_cache`]); never
/// replaces a newer answer by an older one (replicas race).
macro_rules! cache_upsert {
    () => {
        "INSERT INTO enrichment_cache (cache_key, record, vendor, confidence, fetched_at, expires_at, outcome) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::int8[], $6::int8[], $7::text[]) \
         ON CONFLICT (cache_key) DO UPDATE SET \
         record = excluded.record, vendor = excluded.vendor, confidence = excluded.confidence, \
         fetched_at = excluded.fetched_at, expires_at = excluded.expires_at, outcome = excluded.outcome \
         WHERE enrichment_cache.fetched_at <= excluded.fetched_at"
    };
}

const PUT_CACHE: &str = cache_upsert!();

/// The balance change's common part, after the cache rows' CTE (`$cache`, or nothing
/// when the batch carries none; `$1`–`$7` are then bound empty and unused, so that both
/// variants number the rest alike): `$8` workspace, `$9` delta per ledger row, `$10`
/// number of rows, `$11`/`$12` their api key and request ids, `$13` reason, `$14` time;
/// `$15` its UTC day, `$16`/`$17` what it adds to that day's charged and granted counts
/// (`statements::add_usage`, here only once the balance changed). Row n (1-based)
/// carries the balance after its own change.
macro_rules! balance_change {
    ($cache:expr) => {
        concat!(
            "WITH ",
            $cache,
            "change AS ( \
               UPDATE workspaces SET credit_balance = credit_balance + $9 * $10 \
               WHERE id = $8 AND credit_balance + $9 * $10 >= 0 RETURNING credit_balance), \
             ledger AS ( \
               INSERT INTO credit_ledger (workspace_id, api_key_id, request_id, delta, balance_after, reason, created_at) \
               SELECT $8, k.key, k.request, $9, change.credit_balance - $9 * ($10 - k.n), $13, $14 \
               FROM change, unnest($11::text[], $12::text[]) WITH ORDINALITY AS k(key, request, n) ORDER BY k.n), \
             usage AS (",
            add_usage!("SELECT $8, $15, $16, $17 FROM change"),
            ")"
        )
    };
}

/// The cache rows' CTE of a balance change that carries some.
macro_rules! with_cache {
    () => {
        concat!("cache AS (", cache_upsert!(), "), ")
    };
}

/// A change that adds credits answers the balance after it.
macro_rules! credit {
    ($cache:expr) => {
        concat!(balance_change!($cache), " SELECT credit_balance FROM change")
    };
}

/// A change that takes credits also queues, in the same statement, a `credits.low`
/// delivery for each active webhook of the workspace that takes it and whose threshold
/// the change crossed (from at least it to below it); `$18` an event id.
macro_rules! debit {
    ($cache:expr) => {
        concat!(
            balance_change!($cache),
            ", low AS (",
            delivery_columns!(),
            "SELECT gen_random_uuid()::text, w.id, w.workspace_id, $18, 'credits.low', \
               json_build_object('credits_remaining', change.credit_balance, 'low_balance_threshold', w.low_balance_threshold)::text, \
               $14, 'pending', 0, 0, $14 FROM change, ",
            low_balance_webhooks!("$8", "change.credit_balance", "change.credit_balance - $9 * $10"),
            ") SELECT credit_balance FROM change"
        )
    };
}

/// A balance change that adds credits (a grant), with and without cache rows.
const CREDIT_BALANCE: [&str; 2] = [credit!(""), credit!(with_cache!())];

/// A balance change that takes credits, with and without cache rows. (Without them, no
/// empty upsert is set up on every batch of cached hits: measured, a tenth of a
/// PostgreSQL batch's time.)
const DEBIT_BALANCE: [&str; 2] = [debit!(""), debit!(with_cache!())];

/// Locks the claim's row until the transaction ends, so that no takeover can slip in
/// between the debit and the completion.
static LOCK_CLAIM: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| format!("{} FOR UPDATE", statements::LOCK_CLAIM));

/// Locks the chunk's items that `owner` still holds, until the transaction ends (no
/// takeover can slip in before their results are written); the count says whether it
/// holds them all.
const HOLD_JOB_ITEMS: &str = "SELECT count(*) FROM (SELECT 1 FROM enrichment_job_items \
     WHERE job_id = $1 AND idx = ANY($3) AND lease_owner = $2 AND state IN ('pending', 'looked_up') \
     ORDER BY idx FOR UPDATE) AS held";

/// Every item of a chunk `done` with its result, only where `owner` holds its lease.
const FINISH_JOB_ITEMS: &str = "UPDATE enrichment_job_items AS i \
     SET state = 'done', result = u.result, lease_owner = NULL, lease_until = NULL \
     FROM UNNEST($3::int[], $4::text[]) AS u(idx, result) \
     WHERE i.job_id = $1 AND i.idx = u.idx AND i.lease_owner = $2 AND i.state IN ('pending', 'looked_up')";

pub struct Store {
    runtime: Runtime,
    pool: PgPool,
    txn: Option<Transaction<'static, Postgres>>,
}

fn err(e: sqlx::Error) -> StoreError {
    let unavailable = crate::db::sqlx_unavailable(&e);
    StoreError::new(e, unavailable)
}

type Query<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

/// Binds cache rows as `$1`–`$7`, one array per column. One statement may upsert a key
/// only once, so for a repeated key the last row wins, as it would one statement after
/// another; rows go in key order, so that concurrent writers lock them in one order.
fn bind_cache<'q>(q: Query<'q>, rows: &'q [CacheRow]) -> Query<'q> {
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

impl Store {
    pub fn open(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let pool = runtime.block_on(
            PgPoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                // No ping before each statement: a dead connection fails its batch (503s,
                // nothing committed) and the pool replaces it.
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(settings.acquire_timeout_secs))
                .connect(&settings.url),
        )?;
        Ok(Self { runtime, pool, txn: None })
    }

    /// Runs `query` on the open transaction, or on its own when there is none.
    fn execute(&mut self, query: Query<'_>) -> Result<u64, StoreError> {
        let Self { runtime, pool, txn } = self;
        runtime
            .block_on(async {
                match txn.as_mut() {
                    Some(txn) => query.execute(&mut **txn).await,
                    None => query.execute(&*pool).await,
                }
            })
            .map(|done| done.rows_affected())
            .map_err(err)
    }

    fn fetch_optional(&mut self, query: Query<'_>) -> Result<Option<sqlx::postgres::PgRow>, StoreError> {
        let Self { runtime, pool, txn } = self;
        runtime
            .block_on(async {
                match txn.as_mut() {
                    Some(txn) => query.fetch_optional(&mut **txn).await,
                    None => query.fetch_optional(&*pool).await,
                }
            })
            .map_err(err)
    }
}

impl super::batch::Store for Store {
    fn begin(&mut self, one_statement: bool) -> Result<(), StoreError> {
        if self.txn.is_none() && !one_statement {
            let Self { runtime, pool, txn } = self;
            *txn = Some(runtime.block_on(pool.begin()).map_err(err)?);
        }
        Ok(())
    }

    fn lock_claim(&mut self, claim: &ClaimToken) -> Result<bool, StoreError> {
        let (workspace_id, key, token) = claim.parts();
        let q = sqlx::query(LOCK_CLAIM.as_str()).bind(workspace_id).bind(key).bind(token).bind(State::InProgress.as_str());
        Ok(self.fetch_optional(q)?.is_some())
    }

    fn change_balance(&mut self, change: &BalanceChange<'_>, cache: &[CacheRow]) -> Result<Option<i64>, StoreError> {
        if change.rows.is_empty() {
            self.put_cache(cache)?;
            return Ok(None);
        }
        let keys: Vec<Option<&str>> = change.rows.iter().map(|r| r.0).collect();
        let requests: Vec<Option<&str>> = change.rows.iter().map(|r| r.1).collect();
        let statements = if change.delta < 0 { DEBIT_BALANCE } else { CREDIT_BALANCE };
        let sql = statements[usize::from(!cache.is_empty())];
        let (day, charged, granted) = change.usage();
        let mut q = bind_cache(sqlx::query(sql), cache)
            .bind(change.workspace_id)
            .bind(change.delta)
            .bind(change.rows.len() as i64)
            .bind(keys)
            .bind(requests)
            .bind(change.reason.as_str())
            .bind(change.now_ms)
            .bind(day)
            .bind(charged)
            .bind(granted);
        if change.delta < 0 {
            q = q.bind(outbox::new_event_id());
        }
        let row = self.fetch_optional(q)?;
        row.map(|r| r.try_get::<i64, _>(0)).transpose().map_err(err)
    }

    fn put_cache(&mut self, rows: &[CacheRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.execute(bind_cache(sqlx::query(PUT_CACHE), rows))?;
        Ok(())
    }

    fn complete(&mut self, claim: &ClaimToken, answer: &[u8], balance_after: i64) -> Result<bool, StoreError> {
        let (workspace_id, key, token) = claim.parts();
        let q = sqlx::query(COMPLETE_CLAIM)
            .bind(workspace_id)
            .bind(key)
            .bind(token)
            .bind(State::InProgress.as_str())
            .bind(State::Completed.as_str())
            .bind(answer)
            .bind(balance_after);
        Ok(self.execute(q)? == 1)
    }

    fn hold_job_items(&mut self, job_id: &str, owner: &str, idxs: &[i32]) -> Result<bool, StoreError> {
        let q = sqlx::query(HOLD_JOB_ITEMS).bind(job_id).bind(owner).bind(idxs);
        let held: i64 = self.fetch_optional(q)?.map(|row| row.get(0)).unwrap_or(0);
        Ok(held == idxs.len() as i64)
    }

    fn finish_job_items(&mut self, job_id: &str, owner: &str, update: &super::JobItemsUpdate) -> Result<bool, StoreError> {
        let (idxs, results): (Vec<i32>, Vec<&str>) = update.results.iter().map(|(i, r)| (*i, r.as_str())).unzip();
        let q = sqlx::query(FINISH_JOB_ITEMS).bind(job_id).bind(owner).bind(idxs).bind(results);
        if self.execute(q)? != update.results.len() as u64 {
            return Ok(false);
        }
        let q = sqlx::query(COUNT_JOB_ITEMS)
            .bind(job_id)
            .bind(update.results.len() as i64)
            .bind(update.succeeded)
            .bind(update.no_match)
            .bind(update.failed)
            .bind(update.credits_charged)
            .bind(update.now_ms)
            .bind(update.purge_after_ms);
        let Some(row) = self.fetch_optional(q)? else { return Ok(false) };
        let get = |n: usize| row.try_get::<i64, _>(n).map_err(err);
        let job = JobView {
            id: job_id.to_string(),
            status: row.try_get(1).map_err(err)?,
            cancel_reason: None,
            total: get(2)?,
            done: get(3)?,
            succeeded: get(4)?,
            no_match: get(5)?,
            failed: get(6)?,
            credits_charged: get(7)?,
            created_at: get(8)?,
            started_at: row.try_get(9).map_err(err)?,
            finished_at: row.try_get(10).map_err(err)?,
        };
        // This chunk completed the job: its event commits with it.
        if job.status == outbox::JOB_COMPLETED && job.done == job.total {
            let workspace_id: String = row.try_get(0).map_err(err)?;
            let event = Event::JobCompleted;
            let q = sqlx::query(outbox::FAN_OUT_PG)
                .bind(workspace_id)
                .bind(outbox::new_event_id())
                .bind(event.as_str())
                .bind(outbox::job_data(&job))
                .bind(update.now_ms)
                .bind(outbox::event_pattern(event))
                .bind(row.try_get::<String, _>(11).map_err(err)?);
            self.execute(q)?;
        }
        Ok(true)
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        let Self { runtime, txn, .. } = self;
        match txn.take() {
            Some(txn) => runtime.block_on(txn.commit()).map_err(err),
            None => Ok(()),
        }
    }

    fn rollback(&mut self) {
        let Self { runtime, txn, .. } = self;
        if let Some(txn) = txn.take() {
            if let Err(e) = runtime.block_on(txn.rollback()) {
                tracing::error!(error = %e, "rolling back a settlement batch failed");
            }
        }
    }
}
