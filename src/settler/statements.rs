//! The statements both stores run with the same text: written once, in PostgreSQL's
//! `$n` placeholders; SQLite's text is derived (`?n`, numbered the same), so the two
//! cannot drift. Statements whose shape differs per backend (PostgreSQL's array-bound
//! batches, its data-modifying CTEs) stay in their store.

use std::sync::LazyLock;

/// SQLite's text of a statement written with `$n` placeholders.
fn sqlite(pg: &str) -> String {
    pg.replace('$', "?")
}

/// A statement in both dialects: `$name` (PostgreSQL) and `$name_sqlite`.
macro_rules! both {
    ($(#[$doc:meta])* $name:ident, $sqlite:ident, $text:expr) => {
        $(#[$doc])*
        pub const $name: &str = $text;
        $(#[$doc])*
        pub static $sqlite: LazyLock<String> = LazyLock::new(|| sqlite($name));
    };
}

both!(
    /// The claim's row, if `$3` still owns it in state `$4` (PostgreSQL appends
    /// `FOR UPDATE`; inside SQLite's `BEGIN IMMEDIATE` reading it is enough).
    LOCK_CLAIM,
    LOCK_CLAIM_SQLITE,
    "SELECT 1 FROM idempotency_records WHERE workspace_id = $1 AND idempotency_key = $2 AND owner_token = $3 AND state = $4"
);

both!(
    /// Completes a claim that `$3` still owns in state `$4`: state `$5`, the answer `$6`
    /// and the balance `$7` the debit left.
    COMPLETE_CLAIM,
    COMPLETE_CLAIM_SQLITE,
    "UPDATE idempotency_records \
     SET state = $5, response_status = 200, response_body = $6, balance_after = $7 \
     WHERE workspace_id = $1 AND idempotency_key = $2 AND owner_token = $3 AND state = $4"
);

both!(
    /// Adds a chunk to its job's counters; the chunk that makes a running job's last
    /// item done completes it (status `completed`, `crate::outbox::JOB_COMPLETED`).
    /// SET expressions read the row as it was.
    COUNT_JOB_ITEMS,
    COUNT_JOB_ITEMS_SQLITE,
    "UPDATE enrichment_jobs SET \
     done = done + $2, succeeded = succeeded + $3, no_match = no_match + $4, failed = failed + $5, \
     credits_charged = credits_charged + $6, \
     status = CASE WHEN status = 'running' AND done + $2 >= total THEN 'completed' ELSE status END, \
     finished_at = CASE WHEN status = 'running' AND done + $2 >= total THEN $7 ELSE finished_at END, \
     purge_after = CASE WHEN status = 'running' AND done + $2 >= total THEN $8 ELSE purge_after END \
     WHERE id = $1 \
     RETURNING workspace_id, status, total, done, succeeded, no_match, failed, credits_charged, created_at, started_at, finished_at, mode"
);

/// Adds to a workspace's counter of a UTC day (`credit_usage_days`, what the usage
/// figures read: one row per workspace and day, where an index of the ledger took one
/// entry per charge): `$values` yields (workspace, day, credits charged by lookups,
/// credits granted) as a `VALUES` list (SQLite) or a `SELECT` (PostgreSQL's balance
/// change selects them from the changed balance, so it counts only a change made).
macro_rules! add_usage {
    ($values:literal) => {
        concat!(
            "INSERT INTO credit_usage_days (workspace_id, day, charged, granted) ",
            $values,
            " ON CONFLICT (workspace_id, day) DO UPDATE SET \
             charged = credit_usage_days.charged + excluded.charged, granted = credit_usage_days.granted + excluded.granted"
        )
    };
}
pub(crate) use add_usage;

/// The live webhooks of a workspace that take `credits.low` and whose threshold a balance
/// change crossed (from at least it, `$before`, to below it, `$after`): the common part
/// of both stores' `credits.low` fan-out.
macro_rules! low_balance_webhooks {
    ($workspace:literal, $after:literal, $before:literal) => {
        concat!(
            "webhooks w WHERE w.workspace_id = ",
            $workspace,
            " AND w.mode = 'live' AND w.active AND ",
            $after,
            " < w.low_balance_threshold AND ",
            $before,
            " >= w.low_balance_threshold AND (' ' || w.events || ' ') LIKE '% credits.low %'"
        )
    };
}
pub(crate) use low_balance_webhooks;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_texts_number_their_parameters_as_postgres_does() {
        for (pg, lite) in
            [(LOCK_CLAIM, &*LOCK_CLAIM_SQLITE), (COMPLETE_CLAIM, &*COMPLETE_CLAIM_SQLITE), (COUNT_JOB_ITEMS, &*COUNT_JOB_ITEMS_SQLITE)]
        {
            assert!(!lite.contains('$'), "{lite}");
            assert_eq!(lite.replace('?', "$"), pg);
        }
        assert!(COMPLETE_CLAIM_SQLITE.contains("?7"));
    }
}
