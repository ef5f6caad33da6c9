//! When each API key was last used (`api_keys.last_used_at`), kept without a database
//! write per request. The one owner of the in-process memory of it.
//!
//! A request notes its key's use here, in memory, at most once per [`NOTE_EVERY`] per key
//! (a bounded map of when each key was last noted); a background task writes what was
//! noted every `[server] last_used_flush_ms` (10 s), one `UPDATE` per key that never
//! moves the time backwards (several replicas write the same key), and once more at
//! shutdown. Staleness bound: `last_used_at` is at most a minute plus the flush interval
//! behind the key's last use; a crash loses at most the unflushed notes of its replica
//! (a later use notes the key again).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use quick_cache::sync::Cache;
use sea_orm::{sea_query::Expr, ColumnTrait, Condition, DatabaseConnection, DbErr, EntityTrait, QueryFilter};

use entity::api_key;

/// A key's use is noted at most this often per replica.
pub const NOTE_EVERY: Duration = Duration::from_secs(60);
/// How many keys' last notes are remembered (a key forgotten is noted again early: one
/// extra write, nothing lost).
const REMEMBERED: usize = 100_000;

pub struct KeyActivity {
    /// Key id → when its use was last noted (epoch ms).
    noted: Cache<String, i64>,
    /// Key id → the latest use not yet written.
    pending: Mutex<HashMap<String, i64>>,
}

impl Default for KeyActivity {
    fn default() -> Self {
        Self { noted: Cache::new(REMEMBERED), pending: Mutex::new(HashMap::new()) }
    }
}

impl KeyActivity {
    /// Notes that `key_id` was used at `now_ms` (cheap: a lookup, and once a minute a
    /// map insert).
    pub fn touch(&self, key_id: &str, now_ms: i64) {
        if self.noted.get(key_id).is_some_and(|at| now_ms - at < NOTE_EVERY.as_millis() as i64) {
            return;
        }
        self.noted.insert(key_id.to_string(), now_ms);
        self.pending.lock().expect("not poisoned").insert(key_id.to_string(), now_ms);
    }

    /// Writes every noted use; returns how many keys were written. Notes that fail to be
    /// written are kept for the next flush.
    pub async fn flush(&self, db: &DatabaseConnection) -> Result<usize, DbErr> {
        let batch: Vec<(String, i64)> = std::mem::take(&mut *self.pending.lock().expect("not poisoned")).into_iter().collect();
        for (i, (key_id, at)) in batch.iter().enumerate() {
            let written = api_key::Entity::update_many()
                .col_expr(api_key::Column::LastUsedAt, Expr::value(*at))
                .filter(api_key::Column::Id.eq(key_id.as_str()))
                .filter(Condition::any().add(api_key::Column::LastUsedAt.is_null()).add(api_key::Column::LastUsedAt.lt(*at)))
                .exec(db)
                .await;
            if let Err(err) = written {
                let mut pending = self.pending.lock().expect("not poisoned");
                for (key_id, at) in &batch[i..] {
                    let slot = pending.entry(key_id.clone()).or_insert(*at);
                    *slot = (*slot).max(*at);
                }
                return Err(err);
            }
        }
        Ok(batch.len())
    }
}

/// Writes noted uses every `every` (`[server] last_used_flush_ms`).
/// Returns after a last flush once `stop` is notified (never in the middle of a flush,
/// which would lose the notes it took).
pub async fn flush_loop(
    activity: std::sync::Arc<KeyActivity>,
    db: DatabaseConnection,
    every: Duration,
    stop: std::sync::Arc<tokio::sync::Notify>,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.notified() => true,
        };
        if let Err(err) = activity.flush(&db).await {
            tracing::warn!(error = %err, "writing keys' last use failed; retried at the next flush");
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_noted_at_most_once_a_minute() {
        let a = KeyActivity::default();
        a.touch("key_1", 1_000);
        a.touch("key_1", 30_000);
        assert_eq!(a.pending.lock().unwrap().get("key_1"), Some(&1_000));
        a.touch("key_1", 61_000);
        assert_eq!(a.pending.lock().unwrap().get("key_1"), Some(&61_000));
        a.touch("key_2", 61_500);
        assert_eq!(a.pending.lock().unwrap().len(), 2);
    }
}
