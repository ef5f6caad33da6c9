//! Per-workspace rate limits: a per-minute limit (GCRA) and a daily quota that resets at
//! 00:00 UTC. Every authenticated request counts, whatever its outcome; a request refused
//! with 429 does not.
//!
//! Two backends behind [`Limiter`]: [`RateLimiter`] in the process (the `governor` crate;
//! exact for one node) and [`RedisLimiter`], one atomic Lua script per request on a
//! shared Redis, so that N replicas together allow exactly the plan's limit. If Redis
//! cannot be reached, a replica falls back to its own in-process limiter (logged) rather
//! than refusing paying traffic. The headers describe the daily quota; an unmetered
//! workspace reports [`UNMETERED_REPORTED`] for limit and remaining and never touches
//! Redis.

use std::{collections::HashMap, num::NonZeroU32, sync::Mutex, time::Duration};

use governor::{
    clock::{Clock, DefaultClock},
    DefaultDirectRateLimiter, Quota,
};

/// What `X-RateLimit-Limit` and `X-RateLimit-Remaining` say for an unmetered workspace.
pub const UNMETERED_REPORTED: u64 = i32::MAX as u64;
const DAY_MS: i64 = 86_400_000;

/// The next 00:00 UTC after `now_ms`, in epoch seconds (when daily quotas reset).
pub fn next_midnight_secs(now_ms: i64) -> i64 {
    (now_ms.div_euclid(DAY_MS) + 1) * DAY_MS / 1000
}

/// The plans of the product's public docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    Starter,
    Pro,
    Org,
    Unmetered,
}

impl Plan {
    pub const ALL: [Plan; 4] = [Plan::Starter, Plan::Pro, Plan::Org, Plan::Unmetered];

    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Starter => "starter",
            Plan::Pro => "pro",
            Plan::Org => "org",
            Plan::Unmetered => "unmetered",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// starter 10/min 100/day, pro 50/min 1,000/day, org 200/min 10,000/day.
    pub fn limits(self) -> Limits {
        let (per_minute, per_day) = match self {
            Plan::Starter => (Some(10), Some(100)),
            Plan::Pro => (Some(50), Some(1_000)),
            Plan::Org => (Some(200), Some(10_000)),
            Plan::Unmetered => (None, None),
        };
        Limits { per_minute, per_day }
    }
}

/// The limits in force for a workspace; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_minute: Option<u32>,
    pub per_day: Option<u32>,
}

impl Limits {
    /// Applies a workspace's own overrides on top of its plan's limits.
    pub fn with_overrides(self, per_minute: Option<i64>, per_day: Option<i64>) -> Self {
        let clamp = |v: i64| u32::try_from(v.max(1)).unwrap_or(u32::MAX);
        Self { per_minute: per_minute.map(clamp).or(self.per_minute), per_day: per_day.map(clamp).or(self.per_day) }
    }
}

/// What the rate-limit headers of a response say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitStatus {
    pub limit: u64,
    pub remaining: u64,
    /// The next 00:00 UTC, Unix epoch seconds.
    pub reset_epoch_secs: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed(RateLimitStatus),
    Limited { status: RateLimitStatus, retry_after: Duration },
}

struct Window {
    limits: Limits,
    minute: Option<DefaultDirectRateLimiter>,
    day: i64,
    used_today: u64,
}

impl Window {
    fn new(limits: Limits, day: i64) -> Self {
        let minute = limits.per_minute.and_then(NonZeroU32::new).map(|n| DefaultDirectRateLimiter::direct(Quota::per_minute(n)));
        Self { limits, minute, day, used_today: 0 }
    }
}

/// The in-process limiter of one node.
#[derive(Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<String, Window>>,
}

impl RateLimiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one request of `workspace_id` at `now_ms`, unless a limit refuses it.
    pub fn check(&self, workspace_id: &str, limits: Limits, now_ms: i64) -> Decision {
        let day = now_ms.div_euclid(DAY_MS);
        let reset_epoch_secs = next_midnight_secs(now_ms);
        let mut windows = self.windows.lock().expect("not poisoned");
        let window = windows.entry(workspace_id.to_string()).or_insert_with(|| Window::new(limits, day));
        if window.limits != limits {
            let used = if window.day == day { window.used_today } else { 0 };
            *window = Window::new(limits, day);
            window.used_today = used;
        }
        if window.day != day {
            window.day = day;
            window.used_today = 0;
        }
        let status = |used: u64| match limits.per_day {
            Some(limit) => RateLimitStatus { limit: u64::from(limit), remaining: u64::from(limit).saturating_sub(used), reset_epoch_secs },
            None => RateLimitStatus { limit: UNMETERED_REPORTED, remaining: UNMETERED_REPORTED, reset_epoch_secs },
        };
        if let Some(limit) = limits.per_day {
            if window.used_today >= u64::from(limit) {
                let until_midnight = Duration::from_millis(((day + 1) * DAY_MS - now_ms) as u64);
                return Decision::Limited { status: status(window.used_today), retry_after: ceil_secs(until_midnight) };
            }
        }
        if let Some(minute) = &window.minute {
            if let Err(not_until) = minute.check() {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                return Decision::Limited { status: status(window.used_today), retry_after: ceil_secs(wait) };
            }
        }
        window.used_today += 1;
        Decision::Allowed(status(window.used_today))
    }
}

/// The limiter a replica uses.
pub enum Limiter {
    Local(RateLimiter),
    Redis(Box<RedisLimiter>),
}

impl Limiter {
    pub async fn check(&self, workspace_id: &str, limits: Limits, now_ms: i64) -> Decision {
        match self {
            Limiter::Local(local) => local.check(workspace_id, limits, now_ms),
            Limiter::Redis(redis) => redis.check(workspace_id, limits, now_ms).await,
        }
    }

    /// `Some(reachable)` when a shared store backs the limits.
    pub async fn ping(&self) -> Option<bool> {
        match self {
            Limiter::Local(_) => None,
            Limiter::Redis(redis) => Some(redis.ping().await),
        }
    }
}

/// GCRA and the daily counter of one workspace, atomically, on Redis's clock.
/// KEYS[1]: the workspace's hash; ARGV: per-minute limit, daily limit (0: none).
/// Returns {allowed, used today, retry after ms, next midnight ms}.
const LIMIT_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local day_ms = 86400000
local day = math.floor(now / day_ms)
local reset = (day + 1) * day_ms
local per_min = tonumber(ARGV[1])
local per_day = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'day', 'used', 'tat')
local used = 0
if state[1] and tonumber(state[1]) == day then used = tonumber(state[2]) or 0 end
if per_day > 0 and used >= per_day then
  return {0, used, reset - now, reset}
end
local tat = tonumber(state[3]) or now
if tat < now then tat = now end
if per_min > 0 then
  local interval = math.floor(60000 / per_min)
  local new_tat = tat + interval
  if new_tat - now > interval * per_min then
    return {0, used, new_tat - now - interval * per_min, reset}
  end
  tat = new_tat
end
used = used + 1
redis.call('HSET', KEYS[1], 'day', day, 'used', used, 'tat', tat)
redis.call('PEXPIRE', KEYS[1], reset - now + 120000)
return {1, used, 0, reset}
"#;

/// Limits shared by every replica through Redis.
pub struct RedisLimiter {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<redis::aio::ConnectionManager>>,
    script: redis::Script,
    fallback: RateLimiter,
}

impl RedisLimiter {
    pub fn new(url: &str) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            conn: tokio::sync::Mutex::new(None),
            script: redis::Script::new(LIMIT_SCRIPT),
            fallback: RateLimiter::new(),
        })
    }

    /// A connection, made on first use (so that a replica starts while Redis is down).
    async fn connection(&self) -> redis::RedisResult<redis::aio::ConnectionManager> {
        let mut guard = self.conn.lock().await;
        if let Some(conn) = guard.as_ref() {
            return Ok(conn.clone());
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1);
        let conn = self.client.get_connection_manager_with_config(config).await?;
        *guard = Some(conn.clone());
        Ok(conn)
    }

    async fn eval(&self, workspace_id: &str, limits: Limits) -> redis::RedisResult<(i64, i64, i64, i64)> {
        let mut conn = self.connection().await?;
        self.script
            .key(format!("leadlex:ratelimit:{workspace_id}"))
            .arg(limits.per_minute.unwrap_or(0))
            .arg(limits.per_day.unwrap_or(0))
            .invoke_async(&mut conn)
            .await
    }

    pub async fn check(&self, workspace_id: &str, limits: Limits, now_ms: i64) -> Decision {
        if limits.per_minute.is_none() && limits.per_day.is_none() {
            return self.fallback.check(workspace_id, limits, now_ms);
        }
        match self.eval(workspace_id, limits).await {
            Ok((allowed, used, retry_ms, reset_ms)) => {
                let used = used.max(0) as u64;
                let status = match limits.per_day {
                    Some(limit) => RateLimitStatus {
                        limit: u64::from(limit),
                        remaining: u64::from(limit).saturating_sub(used),
                        reset_epoch_secs: reset_ms / 1000,
                    },
                    None => RateLimitStatus { limit: UNMETERED_REPORTED, remaining: UNMETERED_REPORTED, reset_epoch_secs: reset_ms / 1000 },
                };
                if allowed == 1 {
                    Decision::Allowed(status)
                } else {
                    Decision::Limited { status, retry_after: ceil_secs(Duration::from_millis(retry_ms.max(0) as u64)) }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "Redis unreachable: rate limiting in-process on this replica");
                self.fallback.check(workspace_id, limits, now_ms)
            }
        }
    }

    pub async fn ping(&self) -> bool {
        let Ok(mut conn) = self.connection().await else { return false };
        redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok()
    }
}

/// Rounds up to whole seconds, at least one (what `Retry-After` can say).
fn ceil_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOON: i64 = 1_764_072_000_000; // 2025-11-25T12:00:00Z

    #[test]
    fn per_minute_limit_refuses_the_eleventh_request() {
        let rl = RateLimiter::new();
        let limits = Plan::Starter.limits();
        for i in 0..10 {
            assert!(matches!(rl.check("w", limits, NOON), Decision::Allowed(s) if s.remaining == 99 - i));
        }
        match rl.check("w", limits, NOON) {
            Decision::Limited { status, retry_after } => {
                assert_eq!(status.remaining, 90);
                assert!(retry_after >= Duration::from_secs(1) && retry_after <= Duration::from_secs(6));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(rl.check("other", limits, NOON), Decision::Allowed(_)));
    }

    #[test]
    fn daily_quota_resets_at_midnight_utc() {
        let rl = RateLimiter::new();
        let limits = Limits { per_minute: None, per_day: Some(2) };
        assert!(matches!(rl.check("w", limits, NOON), Decision::Allowed(_)));
        assert!(matches!(rl.check("w", limits, NOON), Decision::Allowed(s) if s.remaining == 0));
        match rl.check("w", limits, NOON) {
            Decision::Limited { status, retry_after } => {
                assert_eq!(retry_after, Duration::from_secs(12 * 3600));
                assert_eq!(status.reset_epoch_secs, (NOON + 12 * 3_600_000) / 1000);
            }
            other => panic!("{other:?}"),
        }
        let next_day = NOON + DAY_MS;
        assert!(matches!(rl.check("w", limits, next_day), Decision::Allowed(s) if s.remaining == 1));
    }

    #[test]
    fn unmetered_reports_documented_values() {
        let rl = RateLimiter::new();
        match rl.check("w", Plan::Unmetered.limits(), NOON) {
            Decision::Allowed(s) => assert_eq!((s.limit, s.remaining), (UNMETERED_REPORTED, UNMETERED_REPORTED)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn overrides_win_over_the_plan() {
        let l = Plan::Starter.limits().with_overrides(None, Some(5000));
        assert_eq!(l, Limits { per_minute: Some(10), per_day: Some(5000) });
    }
}
