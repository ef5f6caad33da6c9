//! Per-workspace rate limits: a per-minute limit (GCRA, the `governor` crate) and a daily
//! quota that resets at 00:00 UTC. Every authenticated request counts, whatever its
//! outcome; a request refused with 429 does not.
//!
//! This limiter lives in the process: it is exact for one node. The headers describe the
//! daily quota; an unmetered workspace reports [`UNMETERED_REPORTED`] for limit and
//! remaining.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::Mutex,
    time::Duration,
};

use governor::{clock::{Clock, DefaultClock}, DefaultDirectRateLimiter, Quota};

/// What `X-RateLimit-Limit` and `X-RateLimit-Remaining` say for an unmetered workspace.
pub const UNMETERED_REPORTED: u64 = i32::MAX as u64;
const DAY_MS: i64 = 86_400_000;

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
        Self {
            per_minute: per_minute.map(clamp).or(self.per_minute),
            per_day: per_day.map(clamp).or(self.per_day),
        }
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
        let minute = limits
            .per_minute
            .and_then(NonZeroU32::new)
            .map(|n| DefaultDirectRateLimiter::direct(Quota::per_minute(n)));
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
        let reset_epoch_secs = (day + 1) * DAY_MS / 1000;
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
            Some(limit) => RateLimitStatus {
                limit: u64::from(limit),
                remaining: u64::from(limit).saturating_sub(used),
                reset_epoch_secs,
            },
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
