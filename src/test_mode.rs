//! Test mode: what a `wbk_test_…` key gets, so that a customer's CI can exercise every
//! outcome of the contract without spending money (`docs/testing.md`).
//!
//! Invariants:
//! - a test-mode call is answered by the built-in sandbox vendors only (its own
//!   [`Lookup`](crate::lookup::Lookup), even when real vendors are configured), never
//!   charged, and its `credits_remaining` is the live balance, unchanged;
//! - its answers live in the workspace's own test space of the cache
//!   ([`subject`]: `test:{workspace}:…`), apart from live data and from other workspaces;
//!   its `Idempotency-Key`s are apart from live ones ([`crate::scope::Scope`]);
//! - its rate limits are [`LIMITS`] for enrichment calls (single, bulk, job
//!   submissions), counted per test key, whatever its tier, and [`OTHER_LIMITS`], counted
//!   apart, for everything else it does (following a job, reading results, managing
//!   test keys, webhooks and suppressions), so that a CI run can follow a test job to its
//!   end;
//! - the trigger inputs ([`Trigger`]) give the same outcome every time: the test lookup
//!   has no retries and no circuit breaker, so one trigger's failures never change
//!   another call's answer.

use crate::config::WaterfallSettings;
use crate::lookup::input::LookupInput;
use crate::lookup::Subject;
use crate::ratelimit::Limits;

/// A test-mode key's limits on enrichment calls: small, so that a client's CI can reach
/// `429` on purpose.
pub const LIMITS: Limits = Limits { per_minute: Some(10), per_day: Some(1_000) };

/// A test-mode key's limits on every other operation, counted apart from [`LIMITS`]:
/// enough to poll a job twice a second and page through its results.
pub const OTHER_LIMITS: Limits = Limits { per_minute: Some(120), per_day: Some(10_000) };

/// The domain of the trigger inputs (`.test` is reserved by RFC 2606: no real person has
/// an address there).
pub const TRIGGER_DOMAIN: &str = "leadlex.test";

/// A documented input with a fixed outcome: `<trigger>@leadlex.test`, optionally with a
/// `+tag` (`vendor_a+run42@leadlex.test`) so that each CI run can start from an uncached
/// input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `200`, `source: vendor_a` (then `cached`).
    VendorA,
    /// `200`, `source: vendor_b`: the first vendor does not know it (then `cached`).
    VendorB,
    /// `404 no_match`.
    NoMatch,
    /// `402 insufficient_credits` (whatever the balance).
    InsufficientCredits,
    /// `503 upstream_unavailable`: every vendor fails.
    UpstreamUnavailable,
    /// `200` from `vendor_a`, answered after [`SLOW`]: time enough to send a retry with
    /// the same `Idempotency-Key` and get `409 idempotency_key_in_use`.
    Slow,
}

/// How long the sandbox takes to answer the `slow` trigger.
pub const SLOW: std::time::Duration = std::time::Duration::from_millis(1_500);

impl Trigger {
    pub const ALL: [(Trigger, &'static str); 6] = [
        (Trigger::VendorA, "vendor_a"),
        (Trigger::VendorB, "vendor_b"),
        (Trigger::NoMatch, "no_match"),
        (Trigger::InsufficientCredits, "insufficient_credits"),
        (Trigger::UpstreamUnavailable, "upstream_unavailable"),
        (Trigger::Slow, "slow"),
    ];

    /// The trigger of a normalised email address, if it is one.
    pub fn of_email(address: &str) -> Option<Self> {
        let (local, domain) = address.rsplit_once('@')?;
        if domain != TRIGGER_DOMAIN {
            return None;
        }
        let name = local.split_once('+').map_or(local, |(name, _tag)| name);
        Self::ALL.iter().find(|(_, n)| *n == name).map(|(t, _)| *t)
    }

    /// The trigger of a lookup input (an email; a company hint changes nothing).
    pub fn of(input: &LookupInput) -> Option<Self> {
        match input {
            LookupInput::Email { email, .. } => Self::of_email(&email.to_string()),
            LookupInput::Domain(_) => None,
        }
    }
}

/// Where a workspace's test-mode answers live in the cache.
pub fn subject<'a>(input: &'a LookupInput, workspace_id: &str) -> Subject<'a> {
    Subject::in_space(input, &format!("test:{workspace_id}"))
}

/// The test lookup's waterfall: the configured one without retries or circuit breaker,
/// so that an outcome depends on the input only.
pub fn waterfall(live: &WaterfallSettings) -> WaterfallSettings {
    WaterfallSettings { max_retries: 0, breaker_failure_threshold: u32::MAX, ..live.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_are_read_from_the_local_part_with_an_optional_tag() {
        assert_eq!(Trigger::of_email("vendor_a@leadlex.test"), Some(Trigger::VendorA));
        assert_eq!(Trigger::of_email("vendor_b+run-42@leadlex.test"), Some(Trigger::VendorB));
        assert_eq!(Trigger::of_email("upstream_unavailable@leadlex.test"), Some(Trigger::UpstreamUnavailable));
        assert_eq!(Trigger::of_email("no_match@leadlex.test"), Some(Trigger::NoMatch));
        assert_eq!(Trigger::of_email("slow+1@leadlex.test"), Some(Trigger::Slow));
        assert_eq!(Trigger::of_email("insufficient_credits+x@leadlex.test"), Some(Trigger::InsufficientCredits));
        assert_eq!(Trigger::of_email("vendor_a@leadlex.testing"), None);
        assert_eq!(Trigger::of_email("vendor_c@leadlex.test"), None);
        assert_eq!(Trigger::of_email("jane@acme.com"), None);
    }

    #[test]
    fn test_spaces_are_apart_from_live_and_from_each_other() {
        let input = LookupInput::Domain(crate::lookup::input::Domain::parse("acme.com").unwrap());
        let live = Subject::live(&input).cache_key;
        let a = subject(&input, "ws_a").cache_key;
        let b = subject(&input, "ws_b").cache_key;
        assert_eq!(live, "domain:acme.com");
        assert_eq!(a, "test:ws_a:domain:acme.com");
        assert!(a != b && a != live);
    }
}
