//! Database migrations of leadlex, for SQLite and PostgreSQL alike.
//!
//! Migrations never import the `entity` crate: each names its tables and columns with
//! local `DeriveIden` enums, so that an old migration keeps compiling when entities change.
//! Every migration has a `down`.

pub use sea_orm_migration::prelude::*;

mod m20261125_000001_initial;
mod m20261125_000002_cache_outcome;
mod m20261202_000003_replay_answers;
mod m20261202_000004_key_management;
mod m20261202_000005_ledger_indexes;
mod m20261203_000006_key_mode;
mod m20261203_000007_enrichment_jobs;
mod m20261203_000008_quality;
mod m20261203_000009_suppressions;
mod m20261203_000010_webhooks;
mod m20261203_000011_claimable_items;
mod m20261207_000012_scopes;
mod m20261207_000013_ledger_one_workspace_index;
mod m20261207_000014_usage_days;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_initial::Migration),
            Box::new(m20261125_000002_cache_outcome::Migration),
            Box::new(m20261202_000003_replay_answers::Migration),
            Box::new(m20261202_000004_key_management::Migration),
            Box::new(m20261202_000005_ledger_indexes::Migration),
            Box::new(m20261203_000006_key_mode::Migration),
            Box::new(m20261203_000007_enrichment_jobs::Migration),
            Box::new(m20261203_000008_quality::Migration),
            Box::new(m20261203_000009_suppressions::Migration),
            Box::new(m20261203_000010_webhooks::Migration),
            Box::new(m20261203_000011_claimable_items::Migration),
            Box::new(m20261207_000012_scopes::Migration),
            Box::new(m20261207_000013_ledger_one_workspace_index::Migration),
            Box::new(m20261207_000014_usage_days::Migration),
        ]
    }
}
