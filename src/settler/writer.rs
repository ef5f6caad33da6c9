//! The writer's thread: one per process, with its own connection, so that a batch never
//! waits in the request workers' run queue and its statements never wait behind
//! requests. It takes whatever settlements are waiting (up to [`MAX_BATCH`]) and settles
//! them in one transaction: one durable commit (an fsync on SQLite, a WAL flush on
//! PostgreSQL) for many requests. Cache rows carried over from paid lookups are written
//! with the next batch, or on their own as soon as nothing waits.
//!
//! On SQLite, a settlement with no other in flight runs inline on the request's own
//! thread ([`Inline`]), under the same lock as the thread's batches (one writer, one
//! transaction at a time): no hand-off to the writer's thread and back, each of which
//! wakes an idle CPU. It does so only if the database's write lock is free right now; a
//! request worker never waits for it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::batch::{Outcome, Settled, Settlement, Store, Writer};
use super::{postgres, sqlite, CacheRow, Charge, Charges, ChargesSettled, SettleError};
use crate::config::DatabaseSettings;
use crate::metrics::Metrics;

/// Largest number of settlements in one transaction.
const MAX_BATCH: usize = 256;

/// What the writer's thread is asked to do.
pub enum Msg {
    Settle(Charge, oneshot::Sender<Outcome>),
    /// A bulk call's (or job chunk's) charges, batched with the rest.
    SettleBulk(Box<Charges>, oneshot::Sender<Result<ChargesSettled, SettleError>>),
    /// A cache row nobody pays for, to write with the next transaction.
    Cache(CacheRow),
    Grant {
        workspace_id: String,
        amount: i64,
        reply: oneshot::Sender<Result<i64, SettleError>>,
    },
    /// Wakes the thread to write the rows an inline settlement carried.
    Flush,
}

/// Where a settlement's outcome goes.
enum Reply {
    One(oneshot::Sender<Outcome>),
    Charges(oneshot::Sender<Result<ChargesSettled, SettleError>>),
}

type Shared<S> = Arc<Mutex<Writer<S>>>;

/// Takes the writer's lock; a lock poisoned by a panic outside a batch's own catch is
/// recovered after rolling back whatever transaction that left open.
fn lock<S: Store>(writer: &Mutex<Writer<S>>) -> MutexGuard<'_, Writer<S>> {
    writer.lock().unwrap_or_else(|poisoned| recover(writer, poisoned))
}

fn recover<'a, S: Store>(writer: &Mutex<Writer<S>>, poisoned: PoisonError<MutexGuard<'a, Writer<S>>>) -> MutexGuard<'a, Writer<S>> {
    let mut guard = poisoned.into_inner();
    guard.store.rollback();
    writer.clear_poison();
    guard
}

/// Starts the writer's thread; `ready` gets what settling inline needs (SQLite), or
/// nothing (PostgreSQL), once the store is open, or the error that kept it from opening.
pub fn spawn(
    settings: DatabaseSettings,
    metrics: Arc<Metrics>,
    rx: mpsc::UnboundedReceiver<Msg>,
    ready: oneshot::Sender<anyhow::Result<Option<Inline>>>,
) -> std::io::Result<()> {
    let window = Duration::from_micros(settings.group_commit_window_us);
    std::thread::Builder::new().name("leadlex-settler".into()).spawn(move || {
        if settings.url.starts_with("sqlite:") {
            let inline = |writer: &Shared<sqlite::Store>| Some(Inline { writer: writer.clone(), in_flight: Arc::new(AtomicUsize::new(0)) });
            serve(sqlite::Store::open(&settings), inline, metrics, rx, ready, window);
        } else {
            serve(postgres::Store::open(&settings), |_| None, metrics, rx, ready, window);
        }
    })?;
    Ok(())
}

/// Reports whether the store opened (with what `inline` shares of it), then runs the
/// writer on it.
fn serve<S: Store>(
    opened: anyhow::Result<S>,
    inline: impl FnOnce(&Shared<S>) -> Option<Inline>,
    metrics: Arc<Metrics>,
    rx: mpsc::UnboundedReceiver<Msg>,
    ready: oneshot::Sender<anyhow::Result<Option<Inline>>>,
    window: Duration,
) {
    match opened {
        Ok(store) => {
            let writer = Arc::new(Mutex::new(Writer::new(store, metrics)));
            let _ = ready.send(Ok(inline(&writer)));
            run(&writer, rx, window);
        }
        Err(err) => drop(ready.send(Err(err))),
    }
}

/// The thread's loop: until every handle is gone, settle what waits, batch by batch.
fn run<S: Store>(writer: &Mutex<Writer<S>>, mut rx: mpsc::UnboundedReceiver<Msg>, window: Duration) {
    let mut batch: Vec<Msg> = Vec::with_capacity(MAX_BATCH);
    let mut last_start = Instant::now();
    let mut concurrent = false;
    loop {
        // Nothing waiting: write the carried cache rows now, on their own.
        if rx.is_empty() {
            let mut w = lock(writer);
            if !w.carried.is_empty() {
                w.write_carried();
                continue;
            }
        }
        let Some(first) = rx.blocking_recv() else { break };
        batch.push(first);
        take_waiting(&mut rx, &mut batch);
        // Under concurrency (this batch or the last had company), hold the commit until
        // `window` after the last one started, gathering what arrives meanwhile: fewer,
        // larger commits. Blocking is right here: this thread does nothing else.
        concurrent |= batch.iter().filter(|m| matches!(m, Msg::Settle(..) | Msg::SettleBulk(..))).count() > 1;
        if concurrent && batch.len() < MAX_BATCH {
            if let Some(wait) = window.checked_sub(last_start.elapsed()) {
                std::thread::sleep(wait);
                take_waiting(&mut rx, &mut batch);
            }
        }
        let mut settlements = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        let mut w = lock(writer);
        for msg in batch.drain(..) {
            match msg {
                Msg::Settle(job, reply) => {
                    settlements.push(Settlement::One(job));
                    replies.push(Reply::One(reply));
                }
                Msg::SettleBulk(bulk, reply) => {
                    settlements.push(Settlement::Charges(*bulk));
                    replies.push(Reply::Charges(reply));
                }
                Msg::Cache(row) => w.carried.push(row),
                Msg::Grant { workspace_id, amount, reply } => {
                    let _ = reply.send(w.grant(&workspace_id, amount));
                }
                Msg::Flush => {}
            }
        }
        concurrent = settlements.len() > 1;
        if settlements.is_empty() {
            continue;
        }
        last_start = Instant::now();
        let settled = w.settle_batch(settlements);
        drop(w);
        for (reply, settled) in replies.into_iter().zip(settled) {
            // The caller may have gone: the charge stands, with its stored record.
            match (reply, settled) {
                (Reply::One(reply), Settled::One(outcome)) => drop(reply.send(outcome)),
                (Reply::Charges(reply), Settled::Charges(outcome)) => drop(reply.send(outcome)),
                _ => unreachable!("settle_batch answers each settlement in its own kind, in order"),
            }
        }
    }
    lock(writer).write_carried();
}

fn take_waiting(rx: &mut mpsc::UnboundedReceiver<Msg>, batch: &mut Vec<Msg>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(msg) => batch.push(msg),
            Err(_) => break,
        }
    }
}

/// What settling inline needs (SQLite only).
#[derive(Clone)]
pub struct Inline {
    writer: Shared<sqlite::Store>,
    /// Settlements asked for and not answered yet.
    in_flight: Arc<AtomicUsize>,
}

/// Counts one settlement in flight (inline or queued) for as long as it lives.
pub struct InFlight<'a> {
    count: &'a AtomicUsize,
    /// No other settlement was in flight when this one entered.
    pub alone: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Inline {
    /// Counts a settlement in flight until the guard drops.
    pub fn enter(&self) -> InFlight<'_> {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight { count: &self.in_flight, alone: before == 0 }
    }

    /// Settles `job` (one charge) on this thread when the writer is free and the database's write
    /// lock is free right now; gives `job` back otherwise (a request worker never waits
    /// for the lock). Blocking this worker for one commit is what the writer's thread
    /// would have done.
    pub fn try_settle(&self, job: Charge, tx: &mpsc::UnboundedSender<Msg>) -> Result<Outcome, Box<Charge>> {
        let mut w = match self.writer.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => recover(&self.writer, poisoned),
            Err(TryLockError::WouldBlock) => return Err(Box::new(job)),
        };
        if !w.store.try_begin() {
            return Err(Box::new(job));
        }
        let Some(Settled::One(outcome)) = w.settle_batch(vec![Settlement::One(job)]).pop() else {
            unreachable!("settle_batch answers a single call's settlement with one outcome")
        };
        let flush = !w.carried.is_empty();
        drop(w);
        if flush {
            let _ = tx.send(Msg::Flush);
        }
        Ok(outcome)
    }
}
