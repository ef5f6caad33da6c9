//! Connecting to the database (SQLite, the embedded default, or PostgreSQL) and running
//! migrations. SQLite runs in WAL mode with `synchronous=FULL` by default (a committed
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

/// Whether a database error means "the database cannot be reached right now" (answered
/// with 503 and `Retry-After`) rather than a bug (500).
pub fn is_unavailable(err: &DbErr) -> bool {
    use sea_orm::RuntimeErr;
    match err {
        DbErr::ConnectionAcquire(_) => true,
        DbErr::Conn(RuntimeErr::SqlxError(e)) | DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            sqlx_unavailable(e)
        }
        _ => false,
    }
}

/// [`is_unavailable`] for sqlx's own errors.
pub fn sqlx_unavailable(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed | sqlx::Error::Tls(_)
    )
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
