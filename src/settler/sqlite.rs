//! The SQLite writer: one rusqlite connection owned by the settler's thread, so a batch
//! runs its statements synchronously, with no hop to another thread per statement (sqlx
//! runs each SQLite statement on a worker thread of its own; under load, waking it and
//! being woken back took most of a batch's time).
//!
//! The statements are the ones `credits`, `idempotency` and `enrichment::cache` issue
//! through sea-orm, written out for the hot path (the whole suite runs them on SQLite).
//! Transactions are `BEGIN IMMEDIATE`: the writer takes the write lock up front and
//! waits for it (busy timeout) instead of failing half-way.

use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OptionalExtension};

use super::StoreError;
use crate::config::{DatabaseSettings, SqliteSynchronous};
use crate::idempotency::ClaimToken;

pub struct Store {
    conn: Connection,
}

fn err(e: rusqlite::Error) -> StoreError {
    let unavailable = matches!(
        e.sqlite_error_code(),
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::CannotOpen
                | ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::ReadOnly
        )
    );
    StoreError::new(e, unavailable)
}

impl Store {
    pub fn open(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        let path = crate::db::sqlite_path(&settings.url).ok_or_else(|| anyhow::anyhow!("the settler needs an SQLite database file"))?;
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let synchronous = match settings.sqlite_synchronous {
            SqliteSynchronous::Full => "FULL",
            SqliteSynchronous::Normal => "NORMAL",
        };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON;"
        ))?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(Self { conn })
    }

    /// Opens the batch's transaction only if the write lock is free right now (no busy
    /// wait); false, with nothing begun, when it is not (or on any error: the writer's
    /// thread will meet it and report it).
    pub fn try_begin(&mut self) -> bool {
        if !self.conn.is_autocommit() {
            return true;
        }
        let began = self.conn.busy_timeout(Duration::ZERO).and_then(|()| self.conn.execute_batch("BEGIN IMMEDIATE")).is_ok();
        if self.conn.busy_timeout(BUSY_TIMEOUT).is_err() && began {
            let _ = self.conn.execute_batch("ROLLBACK");
            return false;
        }
        began
    }
}

/// How long the writer's thread waits for the database's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

impl super::Store for Store {
    async fn begin(&mut self, _atomic_statements: bool) -> Result<(), StoreError> {
        if self.conn.is_autocommit() {
            self.conn.execute_batch("BEGIN IMMEDIATE").map_err(err)?;
        }
        Ok(())
    }

    async fn touch(&mut self, claim: &ClaimToken) -> Result<bool, StoreError> {
        let (workspace_id, key, token) = claim.parts();
        let n = self
            .conn
            .prepare_cached(
                "UPDATE idempotency_records SET locked_until = locked_until \
                 WHERE workspace_id = ?1 AND idempotency_key = ?2 AND state = 'in_progress' AND owner_token = ?3",
            )
            .and_then(|mut s| s.execute(params![workspace_id, key, token]))
            .map_err(err)?;
        Ok(n == 1)
    }

    async fn debit_batch(
        &mut self,
        workspace_id: &str,
        rows: &[(&str, &str)],
        cache: &[super::CacheRow],
        now_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        if !cache.is_empty() {
            super::Store::put_cache(self, cache).await?;
        }
        let k = rows.len() as i64;
        if k == 0 {
            return Ok(None);
        }
        let after: Option<i64> = self
            .conn
            .prepare_cached(
                "UPDATE workspaces SET credit_balance = credit_balance - ?2 \
                 WHERE id = ?1 AND credit_balance >= ?2 RETURNING credit_balance",
            )
            .and_then(|mut s| s.query_row(params![workspace_id, k], |r| r.get(0)).optional())
            .map_err(err)?;
        let Some(after) = after else { return Ok(None) };
        // Row n (0-based) carries the balance after its own debit, in that order.
        let mut insert = self.conn.prepare_cached(LEDGER_INSERT).map_err(err)?;
        for (n, (key, request)) in rows.iter().enumerate() {
            insert.execute(params![workspace_id, key, request, after + k - 1 - n as i64, now_ms]).map_err(err)?;
        }
        Ok(Some(after))
    }

    async fn debit_one(&mut self, workspace_id: &str, api_key_id: &str, request_id: &str, now_ms: i64) -> Result<Option<i64>, StoreError> {
        self.debit_batch(workspace_id, &[(api_key_id, request_id)], &[], now_ms).await
    }

    async fn put_cache(&mut self, rows: &[entity::cache_entry::Model]) -> Result<(), StoreError> {
        // Several rows need one transaction to be atomic.
        let own_txn = rows.len() > 1 && self.conn.is_autocommit();
        if own_txn {
            self.conn.execute_batch("BEGIN IMMEDIATE").map_err(err)?;
        }
        for row in rows {
            self.conn
            .prepare_cached(concat!(
                "INSERT INTO enrichment_cache (cache_key, record, vendor, confidence, fetched_at, expires_at, outcome) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ",
                cache_on_conflict!()
            ))
            .and_then(|mut s| {
                s.execute(params![
                    row.cache_key,
                    row.record,
                    row.vendor,
                    row.confidence,
                    row.fetched_at,
                    row.expires_at,
                    row.outcome
                ])
            })
            .map_err(err)?;
        }
        if own_txn {
            self.conn.execute_batch("COMMIT").map_err(err)?;
        }
        Ok(())
    }

    async fn complete(&mut self, claim: &ClaimToken, body: &[u8]) -> Result<bool, StoreError> {
        let (workspace_id, key, token) = claim.parts();
        let n = self
            .conn
            .prepare_cached(
                "UPDATE idempotency_records SET state = 'completed', response_status = 200, response_body = ?4 \
                 WHERE workspace_id = ?1 AND idempotency_key = ?2 AND state = 'in_progress' AND owner_token = ?3",
            )
            .and_then(|mut s| s.execute(params![workspace_id, key, token, body]))
            .map_err(err)?;
        Ok(n == 1)
    }

    async fn commit(&mut self) -> Result<(), StoreError> {
        self.conn.execute_batch("COMMIT").map_err(err)
    }

    async fn rollback(&mut self) {
        if !self.conn.is_autocommit() {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::error!(error = %e, "rolling back a settlement batch failed");
            }
        }
    }
}

const LEDGER_INSERT: &str = "INSERT INTO credit_ledger \
     (workspace_id, api_key_id, request_id, delta, balance_after, reason, created_at) \
     VALUES (?1, ?2, ?3, -1, ?4, 'enrich', ?5)";
