//! The lease: how a worker takes rows to work on (job items, webhook deliveries) so that
//! several workers and replicas share them and none takes a row another holds. A row is
//! leased while its `lease_until` is in the future; taking rows sets `lease_owner` and
//! `lease_until` on up to N of them in one statement, and returns what the worker needs.
//!
//! One statement shape for both backends: PostgreSQL locks the candidate rows with
//! `FOR UPDATE SKIP LOCKED` (replicas skip each other's), SQLite has one writer (the
//! statement runs alone); placeholders are PostgreSQL's `$n`, SQLite's `?n` derived.
//!
//! Invariant: `$1` is the owner and `$2` the lease's end; the candidates' query holds
//! every other placeholder.

use sea_orm::DbBackend;

/// A lease statement on `table`: rows whose `key` (a column, or a tuple of columns) the
/// `candidates` query selects (it must exclude rows under a live lease, order them and
/// limit how many), locked by `lock` on PostgreSQL (`FOR UPDATE SKIP LOCKED`, or `FOR
/// UPDATE OF d SKIP LOCKED` for a join), returning `returning`.
pub struct Lease<'a> {
    pub table: &'a str,
    pub key: &'a str,
    pub candidates: &'a str,
    pub lock: &'a str,
    pub returning: &'a str,
}

impl Lease<'_> {
    /// The statement's text for `backend`.
    pub fn sql(&self, backend: DbBackend) -> String {
        let Lease { table, key, candidates, lock, returning } = self;
        match backend {
            DbBackend::Postgres => {
                format!("UPDATE {table} SET lease_owner = $1, lease_until = $2 WHERE {key} IN ({candidates} {lock}) RETURNING {returning}")
            }
            _ => format!("UPDATE {table} SET lease_owner = $1, lease_until = $2 WHERE {key} IN ({candidates}) RETURNING {returning}")
                .replace('$', "?"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shape_two_dialects() {
        let lease = Lease {
            table: "t",
            key: "id",
            candidates: "SELECT id FROM t WHERE x = $3 LIMIT $4",
            lock: "FOR UPDATE SKIP LOCKED",
            returning: "id",
        };
        let pg = lease.sql(DbBackend::Postgres);
        let lite = lease.sql(DbBackend::Sqlite);
        assert!(pg.contains("lease_owner = $1, lease_until = $2") && pg.contains("LIMIT $4 FOR UPDATE SKIP LOCKED"));
        assert!(lite.contains("lease_owner = ?1, lease_until = ?2") && lite.contains("LIMIT ?4)") && !lite.contains("FOR UPDATE"));
    }
}
