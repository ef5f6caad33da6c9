//! The integration suite: every test spawns the real server on a random port with a
//! fresh database, on SQLite and on PostgreSQL, and talks HTTP to it.

mod helpers;
mod spec_check;

mod bodies;
mod bulk;
mod cli;
mod contract;
mod credits;
mod enrich;
mod errors;
mod examples;
mod faults;
mod idempotency;
mod isolation;
mod jobs;
mod key_management;
mod keys;
mod logs;
mod normalisation;
mod privacy;
mod quality;
mod query_plans;
mod ratelimit;
mod replicas;
mod test_mode;
mod unknown_fields;
mod usage;
mod vendors;
mod webhooks;
