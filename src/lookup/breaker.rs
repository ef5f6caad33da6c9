//! A per-vendor circuit breaker: after `threshold` consecutive failures the vendor is
//! skipped outright (no latency spent on a dead vendor) for `open_for`; then one probe is
//! let through: success closes the breaker, failure opens it again. A vendor "succeeds"
//! when it answers (match or no match) and "fails" on any [`VendorError`].
//!
//! [`VendorError`]: super::vendors::VendorError

use std::{sync::Mutex, time::Duration};

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

/// Whether a call may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    Allowed,
    /// The one call let through while half-open.
    Probe,
    Rejected,
}

#[derive(Debug)]
pub struct CircuitBreaker {
    state: Mutex<State>,
    threshold: u32,
    open_for: Duration,
}

impl CircuitBreaker {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self { state: Mutex::new(State::Closed { failures: 0 }), threshold: threshold.max(1), open_for }
    }

    pub fn acquire(&self) -> Permit {
        let mut state = self.state.lock().expect("not poisoned");
        match *state {
            State::Closed { .. } => Permit::Allowed,
            State::Open { until } if Instant::now() >= until => {
                *state = State::HalfOpen;
                Permit::Probe
            }
            State::Open { .. } | State::HalfOpen => Permit::Rejected,
        }
    }

    pub fn record(&self, success: bool) {
        let mut state = self.state.lock().expect("not poisoned");
        *state = match (*state, success) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 < self.threshold => State::Closed { failures: failures + 1 },
            (_, false) => State::Open { until: Instant::now() + self.open_for },
        };
    }

    /// 0 closed, 1 half-open, 2 open (the metric's encoding).
    pub fn state_code(&self) -> i64 {
        match *self.state.lock().expect("not poisoned") {
            State::Closed { .. } => 0,
            State::HalfOpen => 1,
            State::Open { .. } => 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_repeated_failures_probes_then_closes() {
        let b = CircuitBreaker::new(3, Duration::from_secs(30));
        for _ in 0..2 {
            assert_eq!(b.acquire(), Permit::Allowed);
            b.record(false);
        }
        assert_eq!(b.state_code(), 0, "two failures: still closed");
        b.record(false);
        assert_eq!((b.acquire(), b.state_code()), (Permit::Rejected, 2));
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(b.acquire(), Permit::Probe);
        assert_eq!(b.acquire(), Permit::Rejected, "one probe at a time");
        b.record(false);
        assert_eq!(b.state_code(), 2, "a failed probe opens again");
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(b.acquire(), Permit::Probe);
        b.record(true);
        assert_eq!((b.acquire(), b.state_code()), (Permit::Allowed, 0));
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = CircuitBreaker::new(2, Duration::from_secs(30));
        b.record(false);
        b.record(true);
        b.record(false);
        assert_eq!(b.state_code(), 0);
    }
}
