//! Finding out who is behind an input: the cache first, then the vendors in waterfall
//! order until one matches. Knows nothing of HTTP callers, keys or credits.
//!
//! Outcomes: a match (from the cache or a vendor), no match (every vendor answered and
//! none matched, or some failed and the rest said no), or unavailable (every vendor
//! failed: the data may exist, so the caller should retry).

pub mod cache;
pub mod input;
pub mod record;
pub mod vendors;

use std::time::Duration;

use sea_orm::{DatabaseConnection, DbErr};

use input::LookupInput;
use record::Matched;
use vendors::{Vendor, VendorAnswer};

/// The result of a lookup.
#[derive(Debug, Clone)]
pub enum LookupOutcome {
    Found { matched: Matched, from_cache: bool },
    NoMatch,
    /// Every vendor failed; `retry_after` is the soonest a retry makes sense.
    Unavailable { retry_after: Duration },
}

/// The waterfall of configured vendors, behind the cache.
#[derive(Debug, Clone)]
pub struct Enricher {
    vendors: Vec<Vendor>,
    deadline: Duration,
}

impl Enricher {
    pub fn new(vendors: Vec<Vendor>, deadline: Duration) -> Self {
        Self { vendors, deadline }
    }

    pub fn vendor_names(&self) -> Vec<&'static str> {
        self.vendors.iter().map(|v| v.name().as_str()).collect()
    }

    pub async fn lookup(
        &self,
        db: &DatabaseConnection,
        input: &LookupInput,
        now_ms: i64,
    ) -> Result<LookupOutcome, DbErr> {
        if let Some(matched) = cache::get(db, input, now_ms).await? {
            return Ok(LookupOutcome::Found { matched, from_cache: true });
        }
        Ok(self.ask_vendors(input).await)
    }

    /// Asks each vendor in order, within one overall deadline.
    async fn ask_vendors(&self, input: &LookupInput) -> LookupOutcome {
        let started = tokio::time::Instant::now();
        let mut failures = 0usize;
        let mut retry_after = Duration::from_secs(1);
        for vendor in &self.vendors {
            let left = self.deadline.saturating_sub(started.elapsed());
            let answer = match tokio::time::timeout(left, vendor.lookup(input)).await {
                Ok(answer) => answer,
                Err(_) => Err(vendors::VendorError::Timeout),
            };
            match answer {
                Ok(VendorAnswer::Match { record, confidence }) => {
                    let matched = Matched { record, vendor: vendor.name(), confidence: confidence.clamp(0.0, 1.0) };
                    return LookupOutcome::Found { matched, from_cache: false };
                }
                Ok(VendorAnswer::NoMatch) => {
                    tracing::debug!(vendor = vendor.name().as_str(), "no match");
                }
                Err(err) => {
                    failures += 1;
                    if let Some(after) = err.retry_after() {
                        retry_after = retry_after.max(after);
                    }
                    tracing::warn!(vendor = vendor.name().as_str(), error = %err, "vendor failed");
                }
            }
        }
        if failures > 0 && failures == self.vendors.len() {
            LookupOutcome::Unavailable { retry_after: retry_after.min(Duration::from_secs(60)) }
        } else {
            LookupOutcome::NoMatch
        }
    }
}
