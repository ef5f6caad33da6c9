//! Per-workspace rate limits: a per-minute limit (GCRA) and a daily quota that resets at
//! 00:00 UTC. Every authenticated request counts, whatever its outcome; a request refused
//! with 429 does not.
//!
//! Two backends behind [`Limiter`], over the same arithmetic ([`take`]: a GCRA per minute,
//! a counter per UTC day; `n` units at once for a bulk call): [`RateLimiter`] in the
//! process (exact for one node) and [`RedisLimiter`], one atomic Lua script per request on a
//! shared Redis, so that N replicas together allow exactly the plan's limit. If Redis
//! cannot be reached, a replica falls back to its own in-process limiter (logged) rather
//! than refusing paying traffic. The headers describe the daily quota; an unmetered
//! workspace reports [`UNMETERED_REPORTED`] for limit and remaining and never touches
//! Redis.

use std::{collections::HashMap, sync::Mutex, time::Duration};

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
    /// Refused; `fits` is how many units would be allowed now (`u64::MAX`: no limit).
    Limited {
        status: RateLimitStatus,
        retry_after: Duration,
        fits: u64,
    },
}

/// One scope's counters: the day and how much of it was used, and the GCRA's theoretical
/// arrival time of the per-minute limit (epoch ms).
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    day: i64,
    used_today: u64,
    tat_ms: i64,
}

/// What asking a scope for `n` units found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Take {
    Taken,
    /// Nothing taken: only `fits` units would be now; the rest after `retry_after_ms`.
    Refused {
        fits: u64,
        retry_after_ms: i64,
    },
}

/// The limits' arithmetic, shared by both limiters (`LIMIT_SCRIPT` is the same on Redis):
/// the per-minute limit is a GCRA with a burst of the whole minute (`interval` =
/// 60 s / limit), the daily quota a counter of the UTC day. `n` units are taken at once or
/// not at all.
fn take(c: &mut Counters, limits: Limits, n: u64, now_ms: i64) -> Take {
    let day = now_ms.div_euclid(DAY_MS);
    if c.day != day {
        c.day = day;
        c.used_today = 0;
    }
    let day_left = limits.per_day.map_or(u64::MAX, |l| u64::from(l).saturating_sub(c.used_today));
    let tat = c.tat_ms.max(now_ms);
    let (minute_left, interval) = match limits.per_minute.filter(|&l| l > 0) {
        Some(per_min) => {
            let interval = (60_000 / i64::from(per_min)).max(1);
            let burst = interval * i64::from(per_min);
            (((now_ms + burst - tat) / interval).max(0) as u64, Some((interval, burst)))
        }
        None => (u64::MAX, None),
    };
    let fits = day_left.min(minute_left);
    if n > fits {
        let retry_after_ms = match interval {
            Some((interval, burst)) if day_left >= n => tat + interval * n as i64 - burst - now_ms,
            _ => (day + 1) * DAY_MS - now_ms,
        };
        return Take::Refused { fits, retry_after_ms };
    }
    if let Some((interval, _)) = interval {
        c.tat_ms = tat + interval * n as i64;
    }
    c.used_today += n;
    Take::Taken
}

fn status_of(limits: Limits, used_today: u64, reset_epoch_secs: i64) -> RateLimitStatus {
    match limits.per_day {
        Some(limit) => {
            RateLimitStatus { limit: u64::from(limit), remaining: u64::from(limit).saturating_sub(used_today), reset_epoch_secs }
        }
        None => RateLimitStatus { limit: UNMETERED_REPORTED, remaining: UNMETERED_REPORTED, reset_epoch_secs },
    }
}

/// The in-process limiter of one node.
#[derive(Default)]
pub struct RateLimiter {
    scopes: Mutex<HashMap<String, Counters>>,
}

impl RateLimiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one request of `scope` at `now_ms`, unless a limit refuses it.
    pub fn check(&self, scope: &str, limits: Limits, now_ms: i64) -> Decision {
        self.check_n(scope, limits, 1, now_ms)
    }

    /// Counts `n` units of `scope` at once (a bulk call's items), or none of them.
    pub fn check_n(&self, scope: &str, limits: Limits, n: u64, now_ms: i64) -> Decision {
        let reset_epoch_secs = next_midnight_secs(now_ms);
        let mut scopes = self.scopes.lock().expect("not poisoned");
        let counters = scopes.entry(scope.to_string()).or_default();
        match take(counters, limits, n, now_ms) {
            Take::Taken => Decision::Allowed(status_of(limits, counters.used_today, reset_epoch_secs)),
            Take::Refused { fits, retry_after_ms } => Decision::Limited {
                status: status_of(limits, counters.used_today, reset_epoch_secs),
                retry_after: ceil_secs(Duration::from_millis(retry_after_ms.max(0) as u64)),
                fits,
            },
        }
    }
}

/// The limiter a replica uses.
pub enum Limiter {
    Local(RateLimiter),
    Redis(Box<RedisLimiter>),
}

impl Limiter {
    pub async fn check(&self, scope: &str, limits: Limits, now_ms: i64) -> Decision {
        self.check_n(scope, limits, 1, now_ms).await
    }

    /// Counts `n` units of `scope` at once, or none.
    pub async fn check_n(&self, scope: &str, limits: Limits, n: u64, now_ms: i64) -> Decision {
        match self {
            Limiter::Local(local) => local.check_n(scope, limits, n, now_ms),
            // Boxed: kept out of the local limiter's future (docs/design.md §19, a
            // request's future).
            Limiter::Redis(redis) => Box::pin(redis.check_n(scope, limits, n, now_ms)).await,
        }
    }

    /// Whether the limits are counted on this replica alone although Redis is
    /// configured (it did not answer lately): degraded, still serving.
    pub fn is_local_fallback(&self) -> bool {
        matches!(self, Limiter::Redis(redis) if redis.is_local())
    }

    /// `Some(reachable)` when a shared store backs the limits.
    pub async fn ping(&self) -> Option<bool> {
        match self {
            Limiter::Local(_) => None,
            Limiter::Redis(redis) => Some(redis.ping().await),
        }
    }
}

/// [`take`] on Redis's clock, atomically. KEYS[1]: the scope's hash; ARGV: per-minute
/// limit, daily limit (0: none), units asked for.
/// Returns {allowed, used today, retry after ms, next midnight ms, units that fit (-1: no
/// limit)}.
const LIMIT_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local day_ms = 86400000
local day = math.floor(now / day_ms)
local reset = (day + 1) * day_ms
local per_min = tonumber(ARGV[1])
local per_day = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'day', 'used', 'tat')
local used = 0
if state[1] and tonumber(state[1]) == day then used = tonumber(state[2]) or 0 end
local fits = -1
local day_left = -1
if per_day > 0 then
  day_left = math.max(per_day - used, 0)
  fits = day_left
end
local tat = tonumber(state[3]) or now
if tat < now then tat = now end
local interval = 0
local burst = 0
if per_min > 0 then
  interval = math.max(math.floor(60000 / per_min), 1)
  burst = interval * per_min
  local minute_left = math.max(math.floor((now + burst - tat) / interval), 0)
  if fits < 0 or minute_left < fits then fits = minute_left end
end
if fits >= 0 and n > fits then
  if per_min > 0 and (day_left < 0 or day_left >= n) then
    return {0, used, tat + interval * n - burst - now, reset, fits}
  end
  return {0, used, reset - now, reset, fits}
end
if per_min > 0 then tat = tat + interval * n end
used = used + n
redis.call('HSET', KEYS[1], 'day', day, 'used', used, 'tat', tat)
redis.call('PEXPIRE', KEYS[1], reset - now + 120000)
return {1, used, 0, reset, fits}
"#;

/// Limits shared by every replica through Redis.
pub struct RedisLimiter {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<redis::aio::ConnectionManager>>,
    script: redis::Script,
    fallback: RateLimiter,
    /// 1 while Redis does not answer and `fallback` counts (the metric
    /// `leadlex_rate_limits_local`; readiness reports it as `degraded`).
    local: prometheus_client::metrics::gauge::Gauge,
}

impl RedisLimiter {
    /// A limiter on the Redis at `url`; `local` is set to 1 while it counts on its own.
    pub fn new(url: &str, local: prometheus_client::metrics::gauge::Gauge) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            conn: tokio::sync::Mutex::new(None),
            script: redis::Script::new(LIMIT_SCRIPT),
            fallback: RateLimiter::new(),
            local,
        })
    }

    /// Whether the limits are counted on this replica alone right now (Redis did not
    /// answer the last time it was asked).
    pub fn is_local(&self) -> bool {
        self.local.get() > 0
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

    async fn eval(&self, scope: &str, limits: Limits, n: u64) -> redis::RedisResult<(i64, i64, i64, i64, i64)> {
        let mut conn = self.connection().await?;
        self.script
            .key(format!("leadlex:ratelimit:{scope}"))
            .arg(limits.per_minute.unwrap_or(0))
            .arg(limits.per_day.unwrap_or(0))
            .arg(n)
            .invoke_async(&mut conn)
            .await
    }

    pub async fn check_n(&self, scope: &str, limits: Limits, n: u64, now_ms: i64) -> Decision {
        if limits.per_minute.is_none() && limits.per_day.is_none() {
            return self.fallback.check_n(scope, limits, n, now_ms);
        }
        match self.eval(scope, limits, n).await {
            Ok((allowed, used, retry_ms, reset_ms, fits)) => {
                self.local.set(0);
                let status = status_of(limits, used.max(0) as u64, reset_ms / 1000);
                if allowed == 1 {
                    Decision::Allowed(status)
                } else {
                    let fits = u64::try_from(fits).unwrap_or(u64::MAX);
                    Decision::Limited { status, retry_after: ceil_secs(Duration::from_millis(retry_ms.max(0) as u64)), fits }
                }
            }
            Err(err) => {
                if self.local.set(1) == 0 {
                    tracing::warn!(error = %err, "Redis unreachable: rate limiting in-process on this replica");
                }
                self.fallback.check_n(scope, limits, n, now_ms)
            }
        }
    }

    pub async fn ping(&self) -> bool {
        let answered = match self.connection().await {
            Ok(mut conn) => redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok(),
            Err(_) => false,
        };
        self.local.set(i64::from(!answered));
        answered
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
            Decision::Limited { status, retry_after, fits } => {
                assert_eq!((status.remaining, fits), (90, 0));
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
            Decision::Limited { status, retry_after, .. } => {
                assert_eq!(retry_after, Duration::from_secs(12 * 3600));
                assert_eq!(status.reset_epoch_secs, (NOON + 12 * 3_600_000) / 1000);
            }
            other => panic!("{other:?}"),
        }
        let next_day = NOON + DAY_MS;
        assert!(matches!(rl.check("w", limits, next_day), Decision::Allowed(s) if s.remaining == 1));
    }

    #[test]
    fn n_units_are_taken_at_once_or_not_at_all() {
        let rl = RateLimiter::new();
        let limits = Plan::Starter.limits(); // 10 a minute, 100 a day
        assert!(matches!(rl.check_n("w", limits, 7, NOON), Decision::Allowed(s) if s.remaining == 93));
        match rl.check_n("w", limits, 4, NOON) {
            Decision::Limited { status, fits, retry_after } => {
                assert_eq!((status.remaining, fits), (93, 3), "nothing taken; three would fit");
                assert_eq!(retry_after, Duration::from_secs(6), "one more unit of the minute in 6 s");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(rl.check_n("w", limits, 3, NOON), Decision::Allowed(s) if s.remaining == 90));
        // Twelve seconds later, two units came back.
        assert!(matches!(rl.check_n("w", limits, 3, NOON + 12_000), Decision::Limited { fits: 2, .. }));
        // More than the whole day: refused until midnight, whatever the minute says.
        let daily = Limits { per_minute: None, per_day: Some(5) };
        match rl.check_n("d", daily, 6, NOON) {
            Decision::Limited { fits, retry_after, .. } => assert_eq!((fits, retry_after), (5, Duration::from_secs(12 * 3600))),
            other => panic!("{other:?}"),
        }
        assert!(matches!(rl.check_n("u", Plan::Unmetered.limits(), 1_000_000, NOON), Decision::Allowed(_)));
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
