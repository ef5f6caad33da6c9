//! Persistence model of leadlex: one sea-orm entity per table.
//!
//! Invariants kept by the code that writes these tables (not by this crate):
//! - a workspace's `credit_balance` is never negative and always equals the sum of its
//!   `credit_ledger` rows (the ledger is append-only), and `credit_usage_days` counts
//!   them per UTC day;
//! - API keys are stored only as a SHA-256 hash plus a short display prefix;
//! - every instant is stored as Unix epoch **milliseconds** (`*_at` columns, `BIGINT`), so
//!   that comparisons in SQL behave the same on SQLite and PostgreSQL.

pub mod api_key;
pub mod cache_entry;
pub mod credit_ledger;
pub mod credit_usage_day;
pub mod enrichment_job;
pub mod enrichment_job_item;
pub mod idempotency_record;
pub mod suppression;
pub mod webhook;
pub mod webhook_delivery;
pub mod workspace;

pub mod prelude {
    //! The entities under their table-ish names.
    pub use super::api_key::Entity as ApiKey;
    pub use super::cache_entry::Entity as CacheEntry;
    pub use super::credit_ledger::Entity as CreditLedger;
    pub use super::credit_usage_day::Entity as CreditUsageDay;
    pub use super::enrichment_job::Entity as EnrichmentJob;
    pub use super::enrichment_job_item::Entity as EnrichmentJobItem;
    pub use super::idempotency_record::Entity as IdempotencyRecord;
    pub use super::suppression::Entity as Suppression;
    pub use super::webhook::Entity as Webhook;
    pub use super::webhook_delivery::Entity as WebhookDelivery;
    pub use super::workspace::Entity as Workspace;
}
