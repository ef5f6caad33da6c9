//! The settler: the one writer of balances, the ledger, completed idempotency records and
//! the enrichment cache. Requests hand it what they decided to pay for; it answers with
//! what it decided (the balance after the debit, or why there was none), and knows
//! nothing of HTTP.
//!
//! - [`Settler`] (this file): the handle requests use.
//! - `writer`: the writer's thread, its batching (group commit) and, on SQLite, the
//!   inline settlement of a charge alone in flight.
//! - `batch`: the `Store` interface and the algorithm that settles a batch of
//!   charges in one transaction (unit-tested against an in-memory store).
//! - `sqlite`, `postgres`: one store per backend; each statement exists once there.
//!
//! Invariants (see `docs/design.md`): the balance never goes below zero and the ledger
//! always sums to it; a charge is answered only after the transaction that holds its debit
//! committed; a failed batch commits nothing and answers every charge in it.

mod batch;
pub mod claim;
mod postgres;
mod sqlite;
mod statements;
mod writer;

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::config::DatabaseSettings;
use crate::metrics::Metrics;
use claim::ClaimToken;

pub use batch::StoreError;

/// Why a ledger row exists: the settler writes every ledger row, so the reasons are its
/// (re-exported by [`crate::credits`], which reads them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Grant,
    Enrich,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Grant => "grant",
            Reason::Enrich => "enrich",
        }
    }
}

/// A cache row as the writer stores it.
pub type CacheRow = entity::cache_entry::Model;

/// One successful lookup to pay for.
pub struct Charge {
    pub workspace_id: String,
    pub api_key_id: String,
    pub request_id: String,
    /// The vendor's answer to cache (none when it came from the cache); written after
    /// the debit's commit (see `docs/design.md`, cache writes).
    pub cache_row: Option<CacheRow>,
    /// For a call with an `Idempotency-Key`: the claim to complete in the debit's
    /// transaction, with what a replay needs.
    pub completion: Option<ClaimCompletion>,
}

/// What completes an idempotency claim: the call's answer, opaque bytes to the settler,
/// stored beside the balance the debit left.
pub struct ClaimCompletion {
    pub claim: ClaimToken,
    pub answer: Vec<u8>,
}

/// A bulk call's charges (or a job chunk's): one credit per entry, in item order, as many
/// as the balance covers, settled in one transaction (with whatever else the writer's
/// batch holds).
pub struct Charges {
    pub workspace_id: String,
    pub api_key_id: String,
    pub request_id: String,
    /// One per item to charge, with the vendor answer to cache when it is paid.
    pub charges: Vec<Option<CacheRow>>,
    /// The balance to report when nothing is charged (read just before).
    pub balance_if_unpaid: i64,
    pub completion: Option<ChargesCompletion>,
}

/// Renders a bulk call's answer once its charges are known.
pub type RenderBulk = Box<dyn FnOnce(&ChargesSettled) -> Vec<u8> + Send>;
/// Renders a job chunk's item results once its charges are known.
pub type RenderJobItems = Box<dyn FnOnce(&ChargesSettled) -> JobItemsUpdate + Send>;

/// What a bulk settlement completes in its transaction, rendered once the charges are
/// known (opaque to the settler).
pub enum ChargesCompletion {
    /// An idempotent bulk call's claim, completed with its whole answer.
    Claim { claim: ClaimToken, render: RenderBulk },
    /// A chunk of a job's items `idxs`: each item's result and the job's counters,
    /// written only while `owner` still holds the items' lease (else nothing of the
    /// chunk commits).
    JobItems { job_id: String, owner: String, idxs: Vec<i32>, render: RenderJobItems },
}

/// A job chunk's results and what they add to the job's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobItemsUpdate {
    /// (item index, result JSON).
    pub results: Vec<(i32, String)>,
    pub succeeded: i64,
    pub no_match: i64,
    pub failed: i64,
    pub credits_charged: i64,
    pub now_ms: i64,
    /// When a job this chunk completes gets its results purged.
    pub purge_after_ms: i64,
}

/// What a bulk settlement decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargesSettled {
    /// Per charge, in order: the balance right after it, `None` when the balance could
    /// not cover it (nothing taken).
    pub balances: Vec<Option<i64>>,
    /// The workspace's balance after the whole call.
    pub balance: i64,
}

/// A charge paid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charged {
    /// The workspace's balance right after this job's own debit.
    pub balance_after: i64,
}

/// Why a charge was not paid for, or a grant not made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SettleError {
    #[error("insufficient credits")]
    Insufficient,
    /// The idempotency claim or the job items' lease was taken over by another owner: nothing
    /// of the settlement was written.
    #[error("the idempotency claim or the items' lease was taken over")]
    TakenOver,
    #[error("no such workspace")]
    UnknownWorkspace,
    #[error("settling")]
    Database(#[source] StoreError),
    #[error("the settler has stopped")]
    Stopped,
}

/// The handle requests use; cheap to clone.
#[derive(Clone)]
pub struct Settler {
    tx: mpsc::UnboundedSender<writer::Msg>,
    /// On SQLite, what settling inline needs (see [`writer::Inline`]).
    inline: Option<writer::Inline>,
}

impl Settler {
    /// Starts the writer on a thread of its own with its own connection to `settings`'
    /// database; returns once it is connected.
    pub async fn spawn(settings: &DatabaseSettings, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready) = oneshot::channel();
        writer::spawn(settings.clone(), metrics, rx, ready_tx)?;
        let inline = ready.await.map_err(|_| anyhow::anyhow!("the settler thread died while connecting"))??;
        Ok(Self { tx, inline })
    }

    /// Pays for `job` durably: returns once the transaction holding its debit (and, for
    /// an idempotent call, its completed record) committed.
    ///
    /// On SQLite, a settlement with no other in flight runs inline, on the request's own
    /// thread; under concurrency, settlements go to the writer's thread, which batches
    /// them (group commit).
    pub async fn settle(&self, job: Charge) -> Result<Charged, SettleError> {
        let flight = self.inline.as_ref().map(|inline| (inline, inline.enter()));
        let job = match &flight {
            Some((inline, f)) if f.alone => match inline.try_settle(job, &self.tx) {
                Ok(outcome) => return outcome,
                Err(job) => *job,
            },
            _ => job,
        };
        let (reply, answer) = oneshot::channel();
        self.tx.send(writer::Msg::Settle(job, reply)).map_err(|_| SettleError::Stopped)?;
        answer.await.map_err(|_| SettleError::Stopped)?
    }

    /// Pays for a bulk call's charges in one transaction (with its completed record, for
    /// an idempotent call; with the item results, for a job chunk), grouped with other
    /// settlements waiting as single calls are: returns once it committed.
    pub async fn settle_bulk(&self, bulk: Charges) -> Result<ChargesSettled, SettleError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(writer::Msg::SettleBulk(Box::new(bulk), reply)).map_err(|_| SettleError::Stopped)?;
        answer.await.map_err(|_| SettleError::Stopped)?
    }

    /// Stores a cache row that nobody pays for (a remembered no-match, or a vendor answer
    /// without the sections asked for), with the next transaction. Fire and forget: a row
    /// lost costs a later vendor call, never a credit.
    pub fn cache(&self, row: CacheRow) {
        let _ = self.tx.send(writer::Msg::Cache(row));
    }

    /// Adds `amount` (> 0) credits to a workspace with its ledger row; returns the new
    /// balance.
    pub async fn grant(&self, workspace_id: &str, amount: i64) -> Result<i64, SettleError> {
        let (reply, answer) = oneshot::channel();
        let msg = writer::Msg::Grant { workspace_id: workspace_id.to_string(), amount, reply };
        self.tx.send(msg).map_err(|_| SettleError::Stopped)?;
        answer.await.map_err(|_| SettleError::Stopped)?
    }
}
