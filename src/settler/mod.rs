//! Group commit: one writer per process settles successful lookups in batches, so that
//! many requests share one transaction and one durable commit (one fsync on SQLite, one
//! WAL flush on PostgreSQL) instead of paying one each.
//!
//! Each job in a batch: confirm the idempotency claim is still ours, take one credit with
//! the conditional update (`credit_balance >= 1`), append the ledger row, complete the
//! idempotency record with the exact response bytes (the body the request
//! rendered, with the balance after its own debit). A job that finds the balance gone or
//! its claim taken over writes nothing and gets its own answer; the others go ahead.
//! Every reply is sent only after the batch committed, so a response never precedes its
//! durable debit. A database error aborts the whole batch (nothing of it is committed)
//! and fails every job in it. The vendor answers to cache are written just after, off the
//! commit the responses wait for (see [`settle`]).
//!
//! The writer runs on a thread of its own with its own connection ([`sqlite`]: rusqlite,
//! synchronous, no hop per statement; [`postgres`]: sqlx, one statement per workspace for
//! the debits and their ledger rows). Requests never wait in the same run queue as the
//! batch that settles them, and the batch's statements never wait behind requests. On
//! SQLite, a settlement with no other in flight runs inline on the request's thread,
//! under the same lock as the writer's batches (one writer, one transaction at a time).
//!
//! Invariants are the credit module's: the balance never goes below zero and the ledger
//! always sums to it, whatever the batch size or the number of replicas.

/// How both writers upsert a cache row on conflict (`enrichment::cache::put` says the
/// same through sea-orm): every column replaced, but never a newer answer by an older one
/// (replicas race).
macro_rules! cache_on_conflict {
    () => {
        "ON CONFLICT (cache_key) DO UPDATE SET \
         record = excluded.record, vendor = excluded.vendor, confidence = excluded.confidence, \
         fetched_at = excluded.fetched_at, expires_at = excluded.expires_at, outcome = excluded.outcome \
         WHERE enrichment_cache.fetched_at <= excluded.fetched_at"
    };
}

mod postgres;
mod sqlite;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};

use crate::config::DatabaseSettings;
use crate::idempotency::ClaimToken;
use crate::metrics::Metrics;

/// Largest number of settlements in one transaction.
const MAX_BATCH: usize = 256;

/// One successful lookup to pay for.
pub struct Job {
    pub workspace_id: String,
    pub api_key_id: String,
    pub request_id: String,
    /// The vendor's answer to cache (none when it came from the cache); written after
    /// the debit's commit (see [`settle`]).
    pub cache_row: Option<entity::cache_entry::Model>,
    pub claim: Option<ClaimToken>,
    pub body: Arc<Body>,
}

/// A 200 body rendered by the request itself, with a hole where the balance after the
/// debit goes: the writer only fills the hole, so rendering never holds up a batch.
#[derive(Debug, Clone)]
pub struct Body {
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl Body {
    /// The balance to render the body with; [`Body::split`] cuts it out again.
    pub const PLACEHOLDER: i64 = i64::MAX;

    /// Cuts the last occurrence of [`Body::PLACEHOLDER`]'s digits out of `rendered`
    /// (the balance is the body's last number). `None` when they are not there.
    pub fn split(rendered: Vec<u8>) -> Option<Self> {
        let digits = Self::PLACEHOLDER.to_string();
        let at = rendered.windows(digits.len()).rposition(|w| w == digits.as_bytes())?;
        let tail = rendered[at + digits.len()..].to_vec();
        let mut head = rendered;
        head.truncate(at);
        Some(Self { head, tail })
    }

    /// The body with `balance` in the hole.
    pub fn with_balance(&self, balance: i64) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.head.len() + 20 + self.tail.len());
        out.extend_from_slice(&self.head);
        out.extend_from_slice(balance.to_string().as_bytes());
        out.extend_from_slice(&self.tail);
        out
    }
}

/// Why a settlement did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SettleError {
    #[error("insufficient credits")]
    Insufficient,
    #[error("the idempotency claim was taken over")]
    ClaimLost,
    #[error("settling")]
    Database(#[source] StoreError),
    #[error("the settler has stopped")]
    Stopped,
}

/// A database error of either writer, and whether it means "unreachable right now".
#[derive(Debug, Clone, thiserror::Error)]
#[error("{source}")]
pub struct StoreError {
    source: Arc<dyn std::error::Error + Send + Sync>,
    pub unavailable: bool,
}

impl StoreError {
    fn new(source: impl std::error::Error + Send + Sync + 'static, unavailable: bool) -> Self {
        Self { source: Arc::new(source), unavailable }
    }

    fn bug(message: &str) -> Self {
        Self::new(std::io::Error::other(message.to_string()), false)
    }
}

type Outcome = Result<Vec<u8>, SettleError>;

struct Envelope {
    job: Job,
    reply: oneshot::Sender<Outcome>,
}

/// What the writer's thread is asked to do.
enum Msg {
    Settle(Envelope),
    /// Write the carried cache rows when nothing else is waiting (sent after a
    /// settlement ran inline and left rows behind).
    Flush,
}

/// The writer's state: its store and the cache rows carried to the next transaction.
/// Its thread takes the lock for each batch; on SQLite, a request alone in the system
/// may take it to settle inline (see [`Settler::settle`]).
struct Writer<S> {
    store: S,
    carried: Vec<CacheRow>,
}

type Shared<S> = Arc<Mutex<Writer<S>>>;

fn lock<S: Store>(writer: &Mutex<Writer<S>>) -> MutexGuard<'_, Writer<S>> {
    writer.lock().unwrap_or_else(|poisoned| recover(writer, poisoned))
}

/// A lock poisoned by a panic outside a batch's catch_unwind: whatever transaction that
/// left open is rolled back before anyone uses the store again (dropping a PostgreSQL
/// transaction rolls it back as well).
fn recover<'a, S: Store>(writer: &Mutex<Writer<S>>, poisoned: PoisonError<MutexGuard<'a, Writer<S>>>) -> MutexGuard<'a, Writer<S>> {
    let mut guard = poisoned.into_inner();
    let _ = guard.store.rollback().now_or_never();
    writer.clear_poison();
    guard
}

/// The handle requests use.
#[derive(Clone)]
pub struct Settler {
    tx: mpsc::UnboundedSender<Msg>,
    /// On SQLite, what settling inline needs (none on PostgreSQL, whose connection
    /// belongs to the writer thread's runtime).
    inline: Option<Inline>,
    metrics: Arc<Metrics>,
}

#[derive(Clone)]
struct Inline {
    writer: Shared<sqlite::Store>,
    /// Settlements asked for and not answered yet.
    in_flight: Arc<AtomicUsize>,
}

/// Counts one settlement in flight for as long as it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    /// Enters; true when no other settlement was in flight.
    fn enter(count: &'a AtomicUsize) -> (Self, bool) {
        let before = count.fetch_add(1, Ordering::AcqRel);
        (Self(count), before == 0)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Settler {
    /// Starts the writer on a thread of its own (a single-threaded runtime and its own
    /// connection to `settings`' database); returns once it is connected.
    pub async fn spawn(settings: &DatabaseSettings, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready) = oneshot::channel();
        let settings = settings.clone();
        let window = std::time::Duration::from_micros(settings.group_commit_window_us);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let thread_metrics = metrics.clone();
        std::thread::Builder::new().name("leadlex-settler".into()).spawn(move || {
            runtime.block_on(async move {
                if settings.url.starts_with("sqlite:") {
                    serve(sqlite::Store::open(&settings), |w| Some(w.clone()), ready_tx, rx, window, thread_metrics).await
                } else {
                    serve(postgres::Store::open(&settings).await, |_| None, ready_tx, rx, window, thread_metrics).await
                }
            })
        })?;
        let writer = ready.await.map_err(|_| anyhow::anyhow!("the settler thread died while connecting"))??;
        let inline = writer.map(|writer| Inline { writer, in_flight: Arc::new(AtomicUsize::new(0)) });
        Ok(Self { tx, inline, metrics })
    }

    /// Settles `job` durably; returns the response bytes.
    ///
    /// On SQLite, a settlement with no other in flight runs inline, on the request's own
    /// thread (the writer's statements are synchronous; blocking this worker for one
    /// commit is what the writer thread would have done): no hand-off to the writer's
    /// thread and back, each of which wakes an idle CPU. Under concurrency, settlements
    /// go to the writer's thread, which batches them (group commit).
    pub async fn settle(&self, job: Job) -> Outcome {
        let Some(inline) = &self.inline else { return self.queue(job).await };
        let (_flight, alone) = InFlight::enter(&inline.in_flight);
        let job = if alone {
            match self.settle_inline(&inline.writer, job) {
                Ok(outcome) => return outcome,
                Err(job) => job,
            }
        } else {
            job
        };
        self.queue(job).await
    }

    /// Settles `job` on this thread if the writer is free and the database's write lock
    /// is free right now (another process, or this one's pool, may hold it: waiting for
    /// it is the writer thread's job, never a request worker's); gives `job` back if not.
    fn settle_inline(&self, writer: &Mutex<Writer<sqlite::Store>>, job: Job) -> Result<Outcome, Job> {
        let mut w = match writer.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => recover(writer, poisoned),
            Err(TryLockError::WouldBlock) => return Err(job),
        };
        if !w.store.try_begin() {
            return Err(job);
        }
        let outcome = settle_batch(&mut w, vec![job], &self.metrics)
            .now_or_never()
            .expect("the SQLite writer never waits")
            .pop()
            .expect("one outcome per job");
        let flush = !w.carried.is_empty();
        drop(w);
        if flush {
            let _ = self.tx.send(Msg::Flush);
        }
        Ok(outcome)
    }

    /// Hands `job` to the writer's thread and waits for its batch's commit.
    async fn queue(&self, job: Job) -> Outcome {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Msg::Settle(Envelope { job, reply })).map_err(|_| SettleError::Stopped)?;
        answer.await.map_err(|_| SettleError::Stopped)?
    }
}

/// What a writer does inside one batch; every method but `begin` runs inside the batch's
/// transaction (or, when `begin` was told none is needed, as one atomic statement).
trait Store {
    /// Opens the batch's transaction unless one is open, or unless `atomic_statements`
    /// says the batch is nothing but one [`Store::debit_batch`] or one
    /// [`Store::put_cache`], each atomic on its own (a store may open one anyway).
    async fn begin(&mut self, atomic_statements: bool) -> Result<(), StoreError>;
    /// Keeps an in-progress claim ours; false when it was taken over.
    async fn touch(&mut self, claim: &ClaimToken) -> Result<bool, StoreError>;
    /// Writes `cache` (rows already paid for), then takes `rows.len()` credits at once
    /// if the balance covers them all, and appends one ledger row per (api key id,
    /// request id), the n-th (0-based) with the balance after its own debit; returns the
    /// balance after all of them, or `None` (no credit taken; `cache` written anyway).
    async fn debit_batch(&mut self, workspace_id: &str, rows: &[(&str, &str)], cache: &[CacheRow], now_ms: i64)
        -> Result<Option<i64>, StoreError>;
    /// One conditional debit and its ledger row; `None` at balance 0.
    async fn debit_one(&mut self, workspace_id: &str, api_key_id: &str, request_id: &str, now_ms: i64)
        -> Result<Option<i64>, StoreError>;
    /// Inserts or replaces cache rows.
    async fn put_cache(&mut self, rows: &[entity::cache_entry::Model]) -> Result<(), StoreError>;
    /// Completes a claim with the response to replay; false when it is no longer ours.
    async fn complete(&mut self, claim: &ClaimToken, body: &[u8]) -> Result<bool, StoreError>;
    async fn commit(&mut self) -> Result<(), StoreError>;
    /// Abandons the batch (after an error or a panic); must leave the store usable.
    async fn rollback(&mut self);
}

/// Reports whether the store opened (and what `expose` shares of it), then runs the
/// writer on it.
async fn serve<S: Store>(
    opened: anyhow::Result<S>,
    expose: impl FnOnce(&Shared<S>) -> Option<Shared<sqlite::Store>>,
    ready: oneshot::Sender<anyhow::Result<Option<Shared<sqlite::Store>>>>,
    rx: mpsc::UnboundedReceiver<Msg>,
    window: std::time::Duration,
    metrics: Arc<Metrics>,
) {
    match opened {
        Ok(store) => {
            let writer = Arc::new(Mutex::new(Writer { store, carried: Vec::new() }));
            let _ = ready.send(Ok(expose(&writer)));
            run(writer, rx, window, metrics).await;
        }
        Err(err) => drop(ready.send(Err(err))),
    }
}

// The writer's lock is held across awaits: only on this thread's single-threaded runtime,
// and the only other taker (an inline SQLite settlement) never awaits while holding it.
#[allow(clippy::await_holding_lock)]
async fn run<S: Store>(
    writer: Shared<S>,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    window: std::time::Duration,
    metrics: Arc<Metrics>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut last_start = std::time::Instant::now();
    let mut concurrent = false;
    loop {
        // Cache rows of settled lookups are written with the next batch, or on their own
        // as soon as no lookup is waiting (see `settle`).
        if rx.is_empty() {
            let mut w = lock(&writer);
            if !w.carried.is_empty() {
                let rows = std::mem::take(&mut w.carried);
                write_cache(&mut w.store, rows).await;
                continue;
            }
        }
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            let mut w = lock(&writer);
            let rows = std::mem::take(&mut w.carried);
            write_cache(&mut w.store, rows).await;
            break;
        }
        // Under concurrency (this batch or the last had company), hold the commit until
        // `window` after the last one started, gathering what arrives meanwhile: fewer,
        // larger commits (PostgreSQL's commit_delay with commit_siblings, in spirit).
        // Blocking is right here: this thread does nothing else.
        concurrent |= batch.iter().filter(|msg| matches!(msg, Msg::Settle(_))).count() > 1;
        if concurrent && batch.len() < MAX_BATCH {
            if let Some(wait) = window.checked_sub(last_start.elapsed()) {
                std::thread::sleep(wait);
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(msg) => batch.push(msg),
                        Err(_) => break,
                    }
                }
            }
        }
        let (jobs, replies): (Vec<Job>, Vec<_>) = batch
            .drain(..)
            .filter_map(|msg| match msg {
                Msg::Settle(e) => Some((e.job, e.reply)),
                Msg::Flush => None,
            })
            .unzip();
        concurrent = jobs.len() > 1;
        if jobs.is_empty() {
            continue;
        }
        last_start = std::time::Instant::now();
        let outcomes = settle_batch(&mut lock(&writer), jobs, &metrics).await;
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            let _ = reply.send(outcome); // the request may have gone; the charge stands, with its stored record
        }
    }
}

/// Settles `jobs` in one transaction ([`settle`]) with the rows carried from the last
/// one; returns each job's outcome, to send once the writer's lock is released.
async fn settle_batch<S: Store>(w: &mut Writer<S>, jobs: Vec<Job>, metrics: &Metrics) -> Vec<Outcome> {
    metrics.settle_batch_size.observe(jobs.len() as f64);
    let started = std::time::Instant::now();
    let count = jobs.len();
    let rows = std::mem::take(&mut w.carried);
    // Should a batch fail or panic, its requests fail, its transaction rolls back, and
    // the writer lives on.
    let failure = match AssertUnwindSafe(settle(&mut w.store, jobs, &rows)).catch_unwind().await {
        Ok(Ok((outcomes, cache_rows))) => {
            w.carried = cache_rows;
            metrics.settle_batch_seconds.observe(started.elapsed().as_secs_f64());
            return outcomes;
        }
        Ok(Err(err)) => err,
        Err(_) => StoreError::bug("the settlement batch panicked"),
    };
    w.store.rollback().await;
    tracing::error!(error = %failure, jobs = count, "a settlement batch failed; nothing of it was committed");
    // The carried rows were paid for: try them once more on their own.
    w.carried = rows;
    metrics.settle_batch_seconds.observe(started.elapsed().as_secs_f64());
    (0..count).map(|_| Err(SettleError::Database(failure.clone()))).collect()
}

pub(crate) type CacheRow = entity::cache_entry::Model;

/// Writes cache rows in a transaction of their own; a failure costs later vendor calls,
/// never a credit, so it is logged and forgotten.
async fn write_cache(store: &mut impl Store, rows: Vec<CacheRow>) {
    if rows.is_empty() {
        return;
    }
    let result = AssertUnwindSafe(async {
        store.begin(true).await?;
        store.put_cache(&rows).await?;
        store.commit().await
    })
    .catch_unwind()
    .await;
    let failure = match result {
        Ok(Ok(())) => return,
        Ok(Err(err)) => err.to_string(),
        Err(_) => "panicked".to_string(),
    };
    store.rollback().await;
    tracing::warn!(error = %failure, rows = rows.len(), "writing cache rows failed; those inputs will ask the vendors again");
}

/// The batch in one transaction; any database error rolls all of it back. Returns each
/// job's outcome and the cache rows of the settled ones, to write after the replies.
///
/// The cache rows `carried` over from the previous batch commit first, in this
/// transaction; a batch's own rows wait for the next one (or a transaction of their own
/// when nothing else is waiting). They are not money: keeping them out of the commit a
/// response waits for takes their pages off that fsync, and on PostgreSQL lets a batch
/// of misses be one statement (see `docs/deployment.md` for the figures). The request that
/// paid for a row remembers it in-process at once, so that its process serves the input
/// from the cache right away; a crash before the row commits costs a vendor call, never
/// a credit.
///
/// Per workspace, one [`Store::debit_batch`] takes all of its jobs' credits at once.
/// When the balance cannot cover them all, that workspace's jobs fall back to one
/// conditional debit each, so exactly as many succeed as there are credits.
async fn settle(
    store: &mut impl Store,
    mut jobs: Vec<Job>,
    carried: &[CacheRow],
) -> Result<(Vec<Outcome>, Vec<CacheRow>), StoreError> {
    let now = crate::now_ms();
    let mut outcomes: Vec<Option<Outcome>> = (0..jobs.len()).map(|_| None).collect();
    let mut by_workspace: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, job) in jobs.iter().enumerate() {
        by_workspace.entry(job.workspace_id.clone()).or_default().push(i);
    }
    let mut cache_rows = Vec::new();
    let plain = by_workspace.len() == 1 && jobs.iter().all(|j| j.claim.is_none());
    store.begin(plain).await?;
    let mut carried = Some(carried);

    // Claims first: a job whose claim was taken over writes nothing.
    for (i, job) in jobs.iter().enumerate() {
        if let Some(claim) = &job.claim {
            if !store.touch(claim).await? {
                outcomes[i] = Some(Err(SettleError::ClaimLost));
            }
        }
    }
    for (workspace_id, mut members) in by_workspace {
        members.retain(|&i| outcomes[i].is_none());
        let rows: Vec<(&str, &str)> =
            members.iter().map(|&i| (jobs[i].api_key_id.as_str(), jobs[i].request_id.as_str())).collect();
        let balances: Vec<Option<i64>> = match store.debit_batch(&workspace_id, &rows, carried.take().unwrap_or_default(), now).await? {
            // Job n (0-based) of k sees the balance after its own debit.
            Some(after) => (0..rows.len()).map(|n| Some(after + (rows.len() - 1 - n) as i64)).collect(),
            None => {
                // Several statements now: they must commit together.
                store.begin(false).await?;
                let mut balances = Vec::with_capacity(rows.len());
                for (key, request) in &rows {
                    balances.push(store.debit_one(&workspace_id, key, request, now).await?);
                }
                balances
            }
        };
        drop(rows);
        for (&i, balance) in members.iter().zip(balances) {
            let job = &mut jobs[i];
            outcomes[i] = Some(match balance {
                None => Err(SettleError::Insufficient),
                Some(balance_after) => {
                    let body = job.body.with_balance(balance_after);
                    cache_rows.extend(job.cache_row.take());
                    if let Some(claim) = &job.claim {
                        if !store.complete(claim, &body).await? {
                            return Err(StoreError::bug("idempotency claim vanished inside the settling transaction"));
                        }
                    }
                    Ok(body)
                }
            });
        }
    }
    store.commit().await?;
    Ok((outcomes.into_iter().map(|o| o.expect("every job has an outcome")).collect(), cache_rows))
}

#[cfg(test)]
mod tests {
    use super::Body;

    #[test]
    fn a_body_gets_its_balance_where_the_placeholder_was() {
        let rendered = format!(r#"{{"data":{{"confidence":0.9,"credits_remaining":{}}}}}"#, Body::PLACEHOLDER);
        let body = Body::split(rendered.into_bytes()).expect("placeholder found");
        assert_eq!(body.with_balance(41), br#"{"data":{"confidence":0.9,"credits_remaining":41}}"#);
        assert!(Body::split(b"{}".to_vec()).is_none());
    }
}
