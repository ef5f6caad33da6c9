//! Connecting to the database (SQLite, the embedded default, or PostgreSQL), running
//! migrations and checking that the schema is the binary's. SQLite runs in WAL mode with `synchronous=FULL` by default (a committed
//! debit survives a power cut; `normal` is configurable) and a busy timeout, so that
//! concurrent writers queue instead of failing.

use std::time::Duration;

use anyhow::Context;
use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, TransactionTrait};

use crate::config::DatabaseSettings;

pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<DatabaseConnection> {
    let mut url = settings.url.clone();
    let sqlite = url.starts_with("sqlite:");
    if sqlite && !url.contains("mode=") {
        url.push_str(if url.contains('?') { "&mode=rwc" } else { "?mode=rwc" });
    }
    let mut opts = ConnectOptions::new(url);
    opts.max_connections(settings.max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(settings.acquire_timeout_secs))
        .sqlx_logging(false)
        // No ping before every use of a pooled connection (a round trip per query on
        // PostgreSQL, a thread hop on SQLite): a connection that died shows as an I/O
        // error, answered 503 like any outage, and the pool replaces it.
        .test_before_acquire(false);
    if sqlite {
        let synchronous = match settings.sqlite_synchronous {
            crate::config::SqliteSynchronous::Full => sqlx::sqlite::SqliteSynchronous::Full,
            crate::config::SqliteSynchronous::Normal => sqlx::sqlite::SqliteSynchronous::Normal,
        };
        opts.map_sqlx_sqlite_opts(move |o| {
            o.journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(synchronous)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
        });
    }
    Database::connect(opts).await.with_context(|| format!("connecting to {}", redact(&settings.url)))
}

/// Applies pending migrations. On PostgreSQL they run in one transaction holding an
/// advisory lock, so that replicas starting together migrate once, one after the other.
pub async fn migrate(db: &DatabaseConnection) -> anyhow::Result<()> {
    if db.get_database_backend() == DbBackend::Postgres {
        let txn = db.begin().await?;
        txn.execute_unprepared("SELECT pg_advisory_xact_lock(7264601505)").await?;
        Migrator::up(&txn, None).await.context("running migrations")?;
        txn.commit().await?;
        Ok(())
    } else {
        Migrator::up(db, None).await.context("running migrations")
    }
}

/// Makes sure the schema is the one this binary expects before anything uses it. The
/// embedded SQLite default migrates itself; a PostgreSQL database is migrated only by
/// `leadlex migrate` (a production schema never changes by surprise), so one that is
/// behind gets an error naming that command.
pub async fn ensure_schema(db: &DatabaseConnection) -> anyhow::Result<()> {
    if db.get_database_backend() != DbBackend::Postgres {
        return migrate(db).await;
    }
    let manager = migration::SchemaManager::new(db);
    let pending: Vec<String> = if manager.has_table("seaql_migrations").await? {
        Migrator::get_pending_migrations(db).await?.iter().map(|m| m.name().to_string()).collect()
    } else {
        Migrator::migrations().iter().map(|m| m.name().to_string()).collect()
    };
    if !pending.is_empty() {
        anyhow::bail!(
            "the database schema is behind this binary (pending migrations: {}); run `leadlex migrate` first",
            pending.join(", ")
        );
    }
    Ok(())
}

/// Whether a database error means "the database cannot serve right now" (answered with
/// 503 and `Retry-After`) rather than a bug (500): it cannot be reached, the connection
/// broke (a failover, a restart, a proxy or network cut), it is shutting down or
/// starting, it has no room (disk full) or is read-only. Such an error says nothing about
/// the request; a retry later may succeed.
pub fn is_unavailable(err: &DbErr) -> bool {
    use sea_orm::RuntimeErr;
    match err {
        DbErr::ConnectionAcquire(_) => true,
        DbErr::Conn(RuntimeErr::SqlxError(e)) | DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            sqlx_unavailable(e)
        }
        DbErr::Conn(RuntimeErr::Internal(_)) => true,
        _ => false,
    }
}

/// [`is_unavailable`] for sqlx's own errors.
pub fn sqlx_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_)
        // A connection cut mid-message (a proxy dropping it) shows as a protocol error.
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(e) => {
            if let Some(pg) = e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                pg_code_unavailable(pg.code())
            } else {
                e.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(sqlite_code_unavailable)
            }
        }
        _ => false,
    }
}

/// Whether a PostgreSQL SQLSTATE says the database cannot serve right now: connection
/// exceptions (class 08), an administrator's or a crash's shutdown and a server still
/// starting (57P01–57P03), out of resources (class 53: disk, memory, connections), a
/// read-only transaction (a failover reached a standby).
pub fn pg_code_unavailable(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("53") || matches!(code, "57P01" | "57P02" | "57P03" | "25006")
}

/// Whether an SQLite result code (primary, or extended: its low byte is the primary)
/// says the database cannot serve right now: busy or locked past the busy timeout,
/// read-only (the file or its folder), an I/O error, cannot open, full.
pub fn sqlite_code_unavailable(code: i32) -> bool {
    matches!(code & 0xff, 5 | 6 | 8 | 10 | 13 | 14)
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// The SQLite file a `sqlite:` URL names (`None` for an in-memory database).
pub fn sqlite_path(url: &str) -> Option<&str> {
    let path = url.strip_prefix("sqlite:")?.trim_start_matches("//");
    let path = path.split('?').next().unwrap_or(path);
    (!path.is_empty() && !path.starts_with(":memory:")).then_some(path)
}

/// Point reads on SQLite on the caller's own thread: a read by primary key takes
/// microseconds from the page cache, where sqlx would hand it to its worker thread and
/// back (two wake-ups of an idle CPU, a tenth of a miss's CPU). Read-only connections,
/// pooled; in WAL mode they never block the writer nor wait for it.
pub struct SqliteReads {
    path: String,
    idle: std::sync::Mutex<Vec<rusqlite::Connection>>,
}

/// Connections kept for reuse (more are opened under concurrency, then dropped).
const SQLITE_READS_KEPT: usize = 4;

impl SqliteReads {
    pub fn new(path: &str) -> Self {
        Self { path: path.to_string(), idle: std::sync::Mutex::new(Vec::new()) }
    }

    /// Runs `read` on a pooled connection.
    pub fn with<T>(&self, read: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
        let pooled = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => {
                let conn = rusqlite::Connection::open_with_flags(
                    &self.path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                // A WAL read waits for nobody but a rare recovery; past this it falls
                // back to the pool.
                conn.busy_timeout(Duration::from_millis(50))?;
                conn
            }
        };
        let result = read(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < SQLITE_READS_KEPT {
            idle.push(conn);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::{pg_code_unavailable, sqlite_code_unavailable};

    #[test]
    fn outages_are_told_from_bugs_by_their_codes() {
        for outage in ["57P01", "57P02", "57P03", "08006", "08001", "08P01", "53100", "53300", "25006"] {
            assert!(pg_code_unavailable(outage), "{outage}");
        }
        for bug in ["23505", "42P01", "42703", "22P02", "40P01", "23514"] {
            assert!(!pg_code_unavailable(bug), "{bug}");
        }
        // SQLITE_FULL, _READONLY, _IOERR, _CANTOPEN, _BUSY, _LOCKED, _IOERR_WRITE (778),
        // _READONLY_DIRECTORY (1544).
        for outage in [13, 8, 10, 14, 5, 6, 778, 1544] {
            assert!(sqlite_code_unavailable(outage), "{outage}");
        }
        // SQLITE_CONSTRAINT, _CONSTRAINT_UNIQUE (2067), _ERROR, _CORRUPT, _MISMATCH.
        for bug in [19, 2067, 1, 11, 20] {
            assert!(!sqlite_code_unavailable(bug), "{bug}");
        }
    }
}
