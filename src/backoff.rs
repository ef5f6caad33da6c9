//! How a background loop waits after a failed round: twice as long after each failure in
//! a row, from its normal pause up to [`MAX`], and its normal pause again after the first
//! success. A leaf: imports nothing of the crate.
//!
//! Invariant: a loop that fails (its database is down) neither spins nor logs every
//! round; it resumes by itself, within [`MAX`] of the dependency's return.

use std::time::Duration;

/// The longest wait after failures in a row.
pub const MAX: Duration = Duration::from_secs(10);

/// The failures in a row of one loop.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// Records a failed round; how long to wait before the next one (`pause`: the loop's
    /// normal pause), and whether this failure is worth a log line (the first, then each
    /// time the wait doubles up to [`MAX`]).
    pub fn failed(&mut self, pause: Duration) -> (Duration, bool) {
        self.failures = self.failures.saturating_add(1);
        let wait = pause.saturating_mul(1u32 << (self.failures - 1).min(16)).min(MAX).max(pause);
        (wait, wait < MAX || self.failures == 1 || self.failures.is_power_of_two())
    }

    /// Records a successful round; whether it ends a run of failures (worth a log line).
    pub fn succeeded(&mut self) -> bool {
        std::mem::take(&mut self.failures) > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_reset_on_success() {
        let mut b = Backoff::default();
        let pause = Duration::from_millis(500);
        let waits: Vec<u64> = (0..8).map(|_| b.failed(pause).0.as_millis() as u64).collect();
        assert_eq!(waits, [500, 1_000, 2_000, 4_000, 8_000, 10_000, 10_000, 10_000]);
        assert!(b.succeeded());
        assert!(!b.succeeded());
        assert_eq!(b.failed(pause).0, pause);
        // A pause longer than the cap is kept.
        assert_eq!(Backoff::default().failed(Duration::from_secs(30)).0, Duration::from_secs(30));
    }
}
