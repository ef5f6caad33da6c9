//! Group commit: one writer per process settles successful lookups in batches, so that
//! many requests share one transaction and one durable commit (one fsync on SQLite, one
//! WAL flush on PostgreSQL) instead of paying one each.
//!
//! Each job in a batch: confirm the idempotency claim is still ours, take one credit with
//! the conditional update (`credit_balance >= 1`), append the ledger row, render the
//! response with the balance after the debit, write the cache, complete the idempotency
//! record with those bytes. A job that finds the balance gone or its claim taken over
//! writes nothing and gets its own answer; the others go ahead. Every reply is sent only
//! after the batch committed, so a response never precedes its durable debit. A database
//! error aborts the whole batch (nothing of it is committed) and fails every job in it.
//!
//! Invariants are the credit module's: the balance never goes below zero and the ledger
//! always sums to it, whatever the batch size or the number of replicas.

use std::sync::Arc;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, TransactionTrait};
use tokio::sync::{mpsc, oneshot};

use crate::credits::{self, CreditsError};
use crate::enrichment::cache::{self, CachePolicy};
use crate::enrichment::input::LookupInput;
use crate::enrichment::record::Matched;
use crate::idempotency::{self, ClaimToken};
use crate::metrics::Metrics;

/// Largest number of settlements in one transaction.
const MAX_BATCH: usize = 256;

/// Renders the 200 body from the balance after the debit.
pub type Render = Box<dyn FnOnce(i64) -> Vec<u8> + Send>;

/// One successful lookup to pay for.
pub struct Job {
    pub workspace_id: String,
    pub api_key_id: String,
    pub request_id: String,
    /// The vendor's answer to cache (none when it came from the cache).
    pub cache_write: Option<(LookupInput, Matched)>,
    pub claim: Option<ClaimToken>,
    pub render: Render,
}

/// Why a settlement did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error("insufficient credits")]
    Insufficient,
    #[error("the idempotency claim was taken over")]
    ClaimLost,
    #[error("settling")]
    Database(#[source] Arc<DbErr>),
    #[error("the settler has stopped")]
    Stopped,
}

struct Envelope {
    job: Job,
    reply: oneshot::Sender<Result<Vec<u8>, SettleError>>,
}

/// The handle requests use.
#[derive(Clone)]
pub struct Settler {
    tx: mpsc::UnboundedSender<Envelope>,
}

impl Settler {
    pub fn spawn(db: DatabaseConnection, cache: CachePolicy, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(db, cache, rx, metrics));
        Self { tx }
    }

    /// Settles `job` durably; returns the response bytes.
    pub async fn settle(&self, job: Job) -> Result<Vec<u8>, SettleError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Envelope { job, reply }).map_err(|_| SettleError::Stopped)?;
        answer.await.map_err(|_| SettleError::Stopped)?
    }
}

async fn run(db: DatabaseConnection, cache: CachePolicy, mut rx: mpsc::UnboundedReceiver<Envelope>, metrics: Arc<Metrics>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // A batch runs in a task of its own: should it panic, its requests fail (their
        // reply channels drop) and its transaction rolls back, but the writer lives on.
        let (db, jobs) = (db.clone(), std::mem::take(&mut batch));
        metrics.settle_batch_size.observe(jobs.len() as f64);
        let started = tokio::time::Instant::now();
        let outcome = tokio::spawn(async move { settle_batch(&db, &cache, jobs).await }).await;
        metrics.settle_batch_seconds.observe(started.elapsed().as_secs_f64());
        if let Err(err) = outcome {
            tracing::error!(error = %err, "a settlement batch panicked; its requests failed, nothing was committed");
        }
    }
}

async fn settle_batch(db: &DatabaseConnection, cache: &CachePolicy, batch: Vec<Envelope>) {
    let (jobs, replies): (Vec<Job>, Vec<_>) = batch.into_iter().map(|e| (e.job, e.reply)).unzip();
    match settle_jobs(db, cache, jobs).await {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(outcome); // the request may have gone; the charge stands, with its stored record
            }
        }
        Err(err) => {
            let err = Arc::new(err);
            for reply in replies {
                let _ = reply.send(Err(SettleError::Database(err.clone())));
            }
        }
    }
}

/// The batch in one transaction; any database error rolls all of it back.
///
/// Fast path, per workspace: one conditional update takes all of its jobs' credits at
/// once (`credit_balance >= k`) and one multi-row insert writes their ledger rows, with
/// each job's `balance_after` in order. When the balance cannot cover them all, that
/// workspace's jobs fall back to one conditional debit each, so exactly as many succeed
/// as there are credits.
async fn settle_jobs(
    db: &DatabaseConnection,
    cache: &CachePolicy,
    jobs: Vec<Job>,
) -> Result<Vec<Result<Vec<u8>, SettleError>>, DbErr> {
    let txn = db.begin().await?;
    let mut outcomes: Vec<Option<Result<Vec<u8>, SettleError>>> = (0..jobs.len()).map(|_| None).collect();
    let mut jobs: Vec<Option<Job>> = jobs.into_iter().map(Some).collect();

    // Claims first: a job whose claim was taken over writes nothing.
    for (i, slot) in jobs.iter_mut().enumerate() {
        if let Some(claim) = slot.as_ref().and_then(|j| j.claim.as_ref()) {
            if !idempotency::touch(&txn, claim).await? {
                outcomes[i] = Some(Err(SettleError::ClaimLost));
                *slot = None;
            }
        }
    }

    let mut by_workspace: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    for (i, job) in jobs.iter().enumerate() {
        if let Some(job) = job {
            by_workspace.entry(job.workspace_id.clone()).or_default().push(i);
        }
    }
    for (workspace_id, members) in by_workspace {
        let k = members.len() as i64;
        let balances: Vec<Option<i64>> = match credits::debit(&txn, &workspace_id, k).await? {
            Some(after) => {
                // Job n (0-based) of k sees the balance after its own debit.
                let rows: Vec<(String, String, i64)> = members
                    .iter()
                    .enumerate()
                    .map(|(n, &i)| {
                        let job = jobs[i].as_ref().expect("present");
                        (job.api_key_id.clone(), job.request_id.clone(), after + k - 1 - n as i64)
                    })
                    .collect();
                credits::append_debits(&txn, &workspace_id, &rows).await?;
                rows.iter().map(|r| Some(r.2)).collect()
            }
            None => {
                let mut balances = Vec::with_capacity(members.len());
                for &i in &members {
                    let job = jobs[i].as_ref().expect("present");
                    balances.push(match credits::debit_one(&txn, &workspace_id, &job.api_key_id, &job.request_id).await {
                        Ok(balance) => Some(balance),
                        Err(CreditsError::Insufficient) => None,
                        Err(CreditsError::Database(e)) => return Err(e),
                        Err(other) => return Err(DbErr::Custom(other.to_string())),
                    });
                }
                balances
            }
        };
        for (&i, balance) in members.iter().zip(balances) {
            let job = jobs[i].take().expect("present");
            outcomes[i] = Some(match balance {
                None => Err(SettleError::Insufficient),
                Some(balance_after) => Ok(finish(&txn, cache, job, balance_after).await?),
            });
        }
    }
    txn.commit().await?;
    Ok(outcomes.into_iter().map(|o| o.expect("every job has an outcome")).collect())
}

/// After a job's debit: render, write the cache, complete the idempotency record.
async fn finish(txn: &impl ConnectionTrait, cache_policy: &CachePolicy, job: Job, balance_after: i64) -> Result<Vec<u8>, DbErr> {
    let body = (job.render)(balance_after);
    if let Some((input, matched)) = &job.cache_write {
        cache::put(txn, input, matched, cache_policy, crate::now_ms()).await?;
    }
    if let Some(claim) = &job.claim {
        if !idempotency::complete(txn, claim, 200, &body).await? {
            return Err(DbErr::Custom("idempotency claim vanished inside the settling transaction".into()));
        }
    }
    Ok(body)
}
