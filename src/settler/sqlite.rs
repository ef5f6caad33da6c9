//! The SQLite store: one rusqlite connection owned by the writer, so a batch runs its
//! statements synchronously, with no hop to another thread per statement (sqlx runs each
//! SQLite statement on a worker thread of its own; under load, waking it and being woken
//! back took most of a batch's time).
//!
//! Every write of balances, the ledger and its usage counters, completed idempotency
//! records and the cache on SQLite is one of the statements below. Enum values are bound
//! from their Rust types.
//! Transactions are `BEGIN IMMEDIATE`: the writer takes the write lock up front and
//! waits for it (busy timeout) instead of failing half-way.

use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::batch::{BalanceChange, StoreError};
use super::claim::{ClaimToken, State};
use super::statements::{add_usage, low_balance_webhooks, COMPLETE_CLAIM_SQLITE, COUNT_JOB_ITEMS_SQLITE, LOCK_CLAIM_SQLITE};
use super::CacheRow;
use crate::config::{DatabaseSettings, SqliteSynchronous};
use crate::outbox::{self, delivery_columns, uuid_sqlite, Event, JobView};

/// How long the writer's thread waits for the database's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const CHANGE_BALANCE: &str = "UPDATE workspaces SET credit_balance = credit_balance + ?2 \
     WHERE id = ?1 AND credit_balance + ?2 >= 0 RETURNING credit_balance";

const LEDGER_INSERT: &str = "INSERT INTO credit_ledger \
     (workspace_id, api_key_id, request_id, delta, balance_after, reason, created_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// Adds a balance change to its workspace's (`?1`) counter of UTC day `?2`: `?3`
/// credits charged, `?4` granted.
const ADD_USAGE: &str = add_usage!("VALUES (?1, ?2, ?3, ?4)");

/// Never replaces a newer answer by an older one (replicas race).
const CACHE_UPSERT: &str = "INSERT INTO enrichment_cache \
     (cache_key, record, vendor, confidence, fetched_at, expires_at, outcome) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
     ON CONFLICT (cache_key) DO UPDATE SET \
     record = excluded.record, vendor = excluded.vendor, confidence = excluded.confidence, \
     fetched_at = excluded.fetched_at, expires_at = excluded.expires_at, outcome = excluded.outcome \
     WHERE enrichment_cache.fetched_at <= excluded.fetched_at";

/// One item of a chunk, if `owner` holds its lease (inside `BEGIN IMMEDIATE` nobody can
/// take it over until the transaction ends).
const HOLD_JOB_ITEM: &str = "SELECT 1 FROM enrichment_job_items \
     WHERE job_id = ?1 AND idx = ?2 AND lease_owner = ?3 AND state IN ('pending', 'looked_up')";

/// One item of a chunk `done` with its result, only where `owner` holds its lease.
const FINISH_JOB_ITEM: &str = "UPDATE enrichment_job_items \
     SET state = 'done', result = ?4, lease_owner = NULL, lease_until = NULL \
     WHERE job_id = ?1 AND idx = ?2 AND lease_owner = ?3 AND state IN ('pending', 'looked_up')";

/// A `credits.low` delivery for each active webhook of workspace `?4` that takes it and
/// whose threshold the balance crossed (from `?5` before to `?2` after); `?1` event id,
/// `?3` time.
const LOW_BALANCE: &str = concat!(
    delivery_columns!(),
    "SELECT ",
    uuid_sqlite!(),
    ", w.id, w.workspace_id, ?1, 'credits.low', \
     json_object('credits_remaining', ?2, 'low_balance_threshold', w.low_balance_threshold), ?3, 'pending', 0, 0, ?3 FROM ",
    low_balance_webhooks!("?4", "?2", "?5")
);

pub struct Store {
    conn: Connection,
    /// What reopening the connection needs (after a failed rollback).
    settings: DatabaseSettings,
}

fn err(e: rusqlite::Error) -> StoreError {
    // The one classification of SQLite's codes (busy, locked, read-only, I/O, full, …).
    let unavailable = match &e {
        rusqlite::Error::SqliteFailure(failure, _) => crate::db::sqlite_code_unavailable(failure.extended_code),
        _ => false,
    };
    StoreError::new(e, unavailable)
}

impl Store {
    pub fn open(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        Ok(Self { conn: Self::connect(settings)?, settings: settings.clone() })
    }

    fn connect(settings: &DatabaseSettings) -> anyhow::Result<Connection> {
        let path = crate::db::sqlite_path(&settings.url).ok_or_else(|| anyhow::anyhow!("the settler needs an SQLite database file"))?;
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let synchronous = match settings.sqlite_synchronous {
            SqliteSynchronous::Full => "FULL",
            SqliteSynchronous::Normal => "NORMAL",
        };
        conn.execute_batch(&format!("PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON;"))?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(conn)
    }

    /// Opens the batch's transaction only if the write lock is free right now (no busy
    /// wait); false, with nothing begun, when it is not (or on any error: the writer's
    /// thread will meet it and report it).
    pub fn try_begin(&mut self) -> bool {
        if !self.conn.is_autocommit() {
            return true;
        }
        let began = self.conn.busy_timeout(Duration::ZERO).and_then(|()| self.control("BEGIN IMMEDIATE")).is_ok();
        if self.conn.busy_timeout(BUSY_TIMEOUT).is_err() && began {
            let _ = self.control("ROLLBACK");
            return false;
        }
        began
    }

    /// Runs a transaction's `BEGIN IMMEDIATE`, `COMMIT` or `ROLLBACK` from the statement
    /// cache (prepared once, not on every batch).
    fn control(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([]).map(drop)
    }
}

impl super::batch::Store for Store {
    fn begin(&mut self, _one_statement: bool) -> Result<(), StoreError> {
        // Always a transaction: the balance change and its ledger rows are several
        // statements here.
        if self.conn.is_autocommit() {
            self.control("BEGIN IMMEDIATE").map_err(err)?;
        }
        Ok(())
    }

    fn lock_claim(&mut self, claim: &ClaimToken) -> Result<bool, StoreError> {
        let (workspace_id, key, token) = claim.parts();
        let found = self
            .conn
            .prepare_cached(&LOCK_CLAIM_SQLITE)
            .and_then(|mut s| s.query_row(params![workspace_id, key, token, State::InProgress.as_str()], |_| Ok(())).optional())
            .map_err(err)?;
        Ok(found.is_some())
    }

    fn change_balance(&mut self, change: &BalanceChange<'_>, cache: &[CacheRow]) -> Result<Option<i64>, StoreError> {
        self.put_cache(cache)?;
        if change.rows.is_empty() {
            return Ok(None);
        }
        let total = change.total();
        let after: Option<i64> = self
            .conn
            .prepare_cached(CHANGE_BALANCE)
            .and_then(|mut s| s.query_row(params![change.workspace_id, total], |r| r.get(0)).optional())
            .map_err(err)?;
        let Some(after) = after else { return Ok(None) };
        let mut insert = self.conn.prepare_cached(LEDGER_INSERT).map_err(err)?;
        for (n, (api_key_id, request_id)) in change.rows.iter().enumerate() {
            insert
                .execute(params![
                    change.workspace_id,
                    api_key_id,
                    request_id,
                    change.delta,
                    change.balance_after_row(n, after),
                    change.reason.as_str(),
                    change.now_ms
                ])
                .map_err(err)?;
        }
        drop(insert);
        let (day, charged, granted) = change.usage();
        self.conn
            .prepare_cached(ADD_USAGE)
            .and_then(|mut s| s.execute(params![change.workspace_id, day, charged, granted]))
            .map_err(err)?;
        if change.delta < 0 {
            let before = after - total;
            self.conn
                .prepare_cached(LOW_BALANCE)
                .and_then(|mut s| s.execute(params![outbox::new_event_id(), after, change.now_ms, change.workspace_id, before]))
                .map_err(err)?;
        }
        Ok(Some(after))
    }

    fn put_cache(&mut self, rows: &[CacheRow]) -> Result<(), StoreError> {
        // Always inside the transaction `begin` opened (on SQLite it always opens one).
        if rows.is_empty() {
            return Ok(());
        }
        let mut upsert = self.conn.prepare_cached(CACHE_UPSERT).map_err(err)?;
        for row in rows {
            upsert
                .execute(params![row.cache_key, row.record, row.vendor, row.confidence, row.fetched_at, row.expires_at, row.outcome])
                .map_err(err)?;
        }
        Ok(())
    }

    fn complete(&mut self, claim: &ClaimToken, answer: &[u8], balance_after: i64) -> Result<bool, StoreError> {
        let (workspace_id, key, token) = claim.parts();
        let n = self
            .conn
            .prepare_cached(&COMPLETE_CLAIM_SQLITE)
            .and_then(|mut s| {
                s.execute(params![workspace_id, key, token, State::InProgress.as_str(), State::Completed.as_str(), answer, balance_after])
            })
            .map_err(err)?;
        Ok(n == 1)
    }

    fn hold_job_items(&mut self, job_id: &str, owner: &str, idxs: &[i32]) -> Result<bool, StoreError> {
        let mut hold = self.conn.prepare_cached(HOLD_JOB_ITEM).map_err(err)?;
        for idx in idxs {
            if hold.query_row(params![job_id, idx, owner], |_| Ok(())).optional().map_err(err)?.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn finish_job_items(&mut self, job_id: &str, owner: &str, update: &super::JobItemsUpdate) -> Result<bool, StoreError> {
        let mut finish = self.conn.prepare_cached(FINISH_JOB_ITEM).map_err(err)?;
        for (idx, result) in &update.results {
            if finish.execute(params![job_id, idx, owner, result]).map_err(err)? != 1 {
                return Ok(false);
            }
        }
        drop(finish);
        let counted = self
            .conn
            .prepare_cached(&COUNT_JOB_ITEMS_SQLITE)
            .and_then(|mut s| {
                s.query_row(
                    params![
                        job_id,
                        update.results.len() as i64,
                        update.succeeded,
                        update.no_match,
                        update.failed,
                        update.credits_charged,
                        update.now_ms,
                        update.purge_after_ms
                    ],
                    |r| {
                        let workspace_id: String = r.get(0)?;
                        let mode: String = r.get(11)?;
                        let view = JobView {
                            id: job_id.to_string(),
                            status: r.get(1)?,
                            cancel_reason: None,
                            total: r.get(2)?,
                            done: r.get(3)?,
                            succeeded: r.get(4)?,
                            no_match: r.get(5)?,
                            failed: r.get(6)?,
                            credits_charged: r.get(7)?,
                            created_at: r.get(8)?,
                            started_at: r.get(9)?,
                            finished_at: r.get(10)?,
                        };
                        Ok((workspace_id, mode, view))
                    },
                )
                .optional()
            })
            .map_err(err)?;
        let Some((workspace_id, mode, job)) = counted else { return Ok(false) };
        // This chunk completed the job: its event commits with it.
        if job.status == outbox::JOB_COMPLETED && job.done == job.total {
            let data = outbox::job_data(&job);
            let event = Event::JobCompleted;
            self.conn
                .prepare_cached(outbox::fan_out_sqlite())
                .and_then(|mut s| {
                    s.execute(params![
                        workspace_id,
                        outbox::new_event_id(),
                        event.as_str(),
                        data,
                        update.now_ms,
                        outbox::event_pattern(event),
                        mode
                    ])
                })
                .map_err(err)?;
        }
        Ok(true)
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        if self.conn.is_autocommit() {
            return Ok(());
        }
        self.control("COMMIT").map_err(err)
    }

    fn rollback(&mut self) {
        if self.conn.is_autocommit() {
            return;
        }
        if let Err(e) = self.control("ROLLBACK") {
            // The transaction must not live on into the next batch (it would commit what
            // failed): a new connection; dropping the old one rolls it back.
            tracing::error!(error = %e, "rolling back a settlement batch failed; reconnecting");
            match Self::connect(&self.settings) {
                Ok(conn) => self.conn = conn,
                Err(e) => tracing::error!(error = %e, "reconnecting the SQLite writer failed"),
            }
        }
    }
}
