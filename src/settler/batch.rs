//! Settling a batch of charges in one transaction, against the synchronous [`Store`]
//! interface that each backend implements.
//!
//! A batch holds settlements of single calls (one credit each) and of bulk calls and job
//! chunks (one credit per charged item), in arrival order. Per batch: the cache rows
//! carried over from earlier batches commit first; each idempotency claim and each job
//! chunk's items are locked (a settlement whose claim or lease was taken over writes
//! nothing and is answered [`SettleError::TakenOver`]; the rest of the batch goes on);
//! per workspace, one conditional balance change takes all of its settlements' credits
//! with one ledger row each, and when the balance cannot cover them all, that workspace
//! falls back to one conditional debit per credit in order, so exactly as many succeed
//! as there are credits, the first ones; each claim is completed with its answer and
//! balance, each job chunk's results written; then one commit. The batch's own cache
//! rows are carried to the next transaction (off the commit its requests wait for).
//!
//! A database error or a panic anywhere in the batch rolls all of it back, answers every
//! settlement with the error, keeps the carried rows for later, and leaves the writer usable.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use super::claim::ClaimToken;
use super::Reason;
use super::{CacheRow, Charge, Charged, Charges, ChargesCompletion, ChargesSettled, JobItemsUpdate, SettleError};
use crate::metrics::Metrics;

/// The outcome of one charge.
pub type Outcome = Result<Charged, SettleError>;

/// A database error of either store, and whether it means "unreachable right now".
#[derive(Debug, Clone, thiserror::Error)]
#[error("{source}")]
pub struct StoreError {
    source: Arc<dyn std::error::Error + Send + Sync>,
    pub unavailable: bool,
}

impl StoreError {
    pub fn new(source: impl std::error::Error + Send + Sync + 'static, unavailable: bool) -> Self {
        Self { source: Arc::new(source), unavailable }
    }

    pub fn bug(message: &str) -> Self {
        Self::new(std::io::Error::other(message.to_string()), false)
    }
}

/// A change of one workspace's balance: `rows.len()` ledger rows of `delta` credits each,
/// applied at once, or not at all if the balance would go below zero.
pub struct BalanceChange<'a> {
    pub workspace_id: &'a str,
    /// Credits each ledger row adds (negative: takes).
    pub delta: i64,
    pub reason: Reason,
    /// One ledger row per entry: (api key id, request id), in balance order.
    pub rows: &'a [(Option<&'a str>, Option<&'a str>)],
    pub now_ms: i64,
}

impl BalanceChange<'_> {
    /// The balance after ledger row `n` (0-based), given the balance after all of them.
    pub fn balance_after_row(&self, n: usize, after_all: i64) -> i64 {
        after_all - self.delta * (self.rows.len() - 1 - n) as i64
    }

    /// The change's total (its rows' deltas).
    pub fn total(&self) -> i64 {
        self.delta * self.rows.len() as i64
    }

    /// What the change adds to its workspace's counter of its UTC day (see
    /// `statements::add_usage`): (day, credits charged by lookups, credits granted).
    pub fn usage(&self) -> (i64, i64, i64) {
        let day = crate::time::utc_day_start(self.now_ms);
        match self.reason {
            Reason::Enrich => (day, -self.total(), 0),
            Reason::Grant => (day, 0, self.total()),
        }
    }
}

/// What a writer's connection does. Every method but `begin`, `commit` and `rollback`
/// runs inside the transaction `begin` opened, or, when `begin` was told the batch is
/// one atomic statement, on its own.
pub trait Store {
    /// Opens a transaction unless one is open, or unless `one_statement` says the batch
    /// is a single [`Store::change_balance`] or [`Store::put_cache`], each atomic on its
    /// own (a store may open one anyway).
    fn begin(&mut self, one_statement: bool) -> Result<(), StoreError>;
    /// Locks an in-progress claim for the rest of the transaction; false when it is no
    /// longer ours (taken over, or gone).
    fn lock_claim(&mut self, claim: &ClaimToken) -> Result<bool, StoreError>;
    /// Writes `cache` (rows already paid for), then applies `change` if the balance
    /// stays at or above zero, with its ledger rows; returns the balance after it, or
    /// `None` (no change: the balance would go below zero, or no such workspace).
    fn change_balance(&mut self, change: &BalanceChange<'_>, cache: &[CacheRow]) -> Result<Option<i64>, StoreError>;
    /// Inserts or replaces cache rows (never a newer answer by an older one).
    fn put_cache(&mut self, rows: &[CacheRow]) -> Result<(), StoreError>;
    /// Completes a locked claim with the call's answer and balance.
    fn complete(&mut self, claim: &ClaimToken, answer: &[u8], balance_after: i64) -> Result<bool, StoreError>;
    /// Locks a job chunk's items `idxs` for the rest of the transaction; false when
    /// `owner` no longer holds every one's lease (taken over, or done).
    fn hold_job_items(&mut self, job_id: &str, owner: &str, idxs: &[i32]) -> Result<bool, StoreError>;
    /// Writes a job chunk's item results (each item `done`, its lease released) and adds
    /// to its job's counters, completing the job when its last item is done; false (and
    /// the caller rolls back) when `owner` no longer holds every item's lease.
    fn finish_job_items(&mut self, job_id: &str, owner: &str, update: &JobItemsUpdate) -> Result<bool, StoreError>;
    fn commit(&mut self) -> Result<(), StoreError>;
    /// Abandons the open transaction, if any; leaves the store usable.
    fn rollback(&mut self);
}

/// A store with the cache rows paid for and not yet written.
pub struct Writer<S> {
    pub store: S,
    pub carried: Vec<CacheRow>,
    metrics: Arc<Metrics>,
}

impl<S: Store> Writer<S> {
    pub fn new(store: S, metrics: Arc<Metrics>) -> Self {
        Self { store, carried: Vec::new(), metrics }
    }

    /// Runs `work` (a transaction) on the store; on an error or a panic, rolls back what
    /// it left open and returns the error, the store usable again. The one failure path
    /// of every transaction the writer runs.
    fn attempt<T>(&mut self, work: impl FnOnce(&mut S) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let store = &mut self.store;
        let failure = match catch_unwind(AssertUnwindSafe(|| work(store))) {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(err)) => err,
            Err(_) => StoreError::bug("a writer transaction panicked"),
        };
        self.store.rollback();
        Err(failure)
    }

    /// Settles `batch` in one transaction; one outcome per settlement, in order.
    pub fn settle_batch(&mut self, batch: Vec<Settlement>) -> Vec<Settled> {
        self.metrics.settle_batch_size.observe(batch.len() as f64);
        let started = std::time::Instant::now();
        let bulk: Vec<bool> = batch.iter().map(|s| matches!(s, Settlement::Charges(_))).collect();
        let carried = std::mem::take(&mut self.carried);
        let result = self.attempt(|store| settle(store, batch, &carried));
        self.metrics.settle_batch_seconds.observe(started.elapsed().as_secs_f64());
        match result {
            Ok((settled, own_rows)) => {
                self.carried = own_rows;
                settled
            }
            Err(failure) => {
                tracing::error!(error = %failure, settlements = bulk.len(), "a settlement batch failed; nothing of it was committed");
                // The carried rows were paid for: they go with the next transaction.
                self.carried = carried;
                let error = || SettleError::Database(failure.clone());
                bulk.into_iter().map(|bulk| if bulk { Settled::Charges(Err(error())) } else { Settled::One(Err(error())) }).collect()
            }
        }
    }

    /// Writes the carried cache rows in a transaction of their own. A failure costs later
    /// vendor calls, never a credit: it is logged and the rows are dropped.
    pub fn write_carried(&mut self) {
        let rows = std::mem::take(&mut self.carried);
        if rows.is_empty() {
            return;
        }
        let result = self.attempt(|store| {
            store.begin(true)?;
            store.put_cache(&rows)?;
            store.commit()
        });
        if let Err(failure) = result {
            tracing::warn!(error = %failure, rows = rows.len(), "writing cache rows failed; those inputs will ask the vendors again");
        }
    }

    /// Adds `amount` credits to a workspace, with its ledger row, in a transaction of its
    /// own (with the carried cache rows).
    pub fn grant(&mut self, workspace_id: &str, amount: i64) -> Result<i64, SettleError> {
        let carried = std::mem::take(&mut self.carried);
        let result = self.attempt(|store| {
            store.begin(false)?;
            let change =
                BalanceChange { workspace_id, delta: amount, reason: Reason::Grant, rows: &[(None, None)], now_ms: crate::now_ms() };
            let after = store.change_balance(&change, &carried)?;
            store.commit()?;
            Ok(after)
        });
        match result {
            Ok(Some(balance)) => Ok(balance),
            Ok(None) => Err(SettleError::UnknownWorkspace),
            Err(failure) => {
                self.carried = carried;
                Err(SettleError::Database(failure))
            }
        }
    }
}

/// A settlement in a batch: a single call's, or a bulk call's (or job chunk's) charges.
pub enum Settlement {
    One(Charge),
    Charges(Charges),
}

/// What a [`Settlement`] came to.
pub enum Settled {
    One(Outcome),
    Charges(Result<ChargesSettled, SettleError>),
}

impl Settlement {
    /// Whether settling it writes more than its balance change (a claim, job items).
    fn completes(&self) -> bool {
        match self {
            Settlement::One(job) => job.completion.is_some(),
            Settlement::Charges(bulk) => bulk.completion.is_some(),
        }
    }

    fn workspace_id(&self) -> &str {
        match self {
            Settlement::One(job) => &job.workspace_id,
            Settlement::Charges(bulk) => &bulk.workspace_id,
        }
    }

    /// Its ledger rows' key and request ids, and how many credits it asks for.
    fn charges(&self) -> (&str, &str, usize) {
        match self {
            Settlement::One(job) => (&job.api_key_id, &job.request_id, 1),
            Settlement::Charges(bulk) => (&bulk.api_key_id, &bulk.request_id, bulk.charges.len()),
        }
    }

    /// Locks what it completes (its claim, its job items' lease); false when that is no
    /// longer its own: then it writes nothing.
    fn hold(&self, store: &mut impl Store) -> Result<bool, StoreError> {
        match self {
            Settlement::One(Charge { completion: Some(completion), .. }) => store.lock_claim(&completion.claim),
            Settlement::Charges(bulk) => match &bulk.completion {
                Some(ChargesCompletion::Claim { claim, .. }) => store.lock_claim(claim),
                Some(ChargesCompletion::JobItems { job_id, owner, idxs, .. }) => store.hold_job_items(job_id, owner, idxs),
                None => Ok(true),
            },
            Settlement::One(_) => Ok(true),
        }
    }

    fn refused(&self, error: SettleError) -> Settled {
        match self {
            Settlement::One(_) => Settled::One(Err(error)),
            Settlement::Charges(_) => Settled::Charges(Err(error)),
        }
    }
}

/// The batch in one transaction (see the module docs). Returns each settlement's
/// outcome and the cache rows of what was paid, to carry to the next transaction.
fn settle(store: &mut impl Store, batch: Vec<Settlement>, carried: &[CacheRow]) -> Result<(Vec<Settled>, Vec<CacheRow>), StoreError> {
    let now_ms = crate::now_ms();
    let mut refused: Vec<Option<SettleError>> = batch.iter().map(|_| None).collect();
    let mut by_workspace: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, settlement) in batch.iter().enumerate() {
        by_workspace.entry(settlement.workspace_id()).or_default().push(i);
    }
    // One workspace and nothing to complete: a single balance change, atomic on its own.
    let one_statement = by_workspace.len() == 1 && !batch.iter().any(Settlement::completes);
    store.begin(one_statement)?;

    // Claims and leases first: a settlement whose claim was taken over is left out, and
    // the rest of the batch goes on.
    for (i, settlement) in batch.iter().enumerate() {
        if !settlement.hold(store)? {
            refused[i] = Some(SettleError::TakenOver);
        }
    }
    // Per settlement, the balance after each of its charges (`None`: not covered).
    let mut balances: Vec<Vec<Option<i64>>> = batch.iter().map(|_| Vec::new()).collect();
    let mut carried = Some(carried);
    for (workspace_id, members) in by_workspace {
        // One ledger row per charge, settlement after settlement in arrival order.
        let mut owners = Vec::new();
        let mut rows: Vec<(Option<&str>, Option<&str>)> = Vec::new();
        for &i in members.iter().filter(|&&i| refused[i].is_none()) {
            let (key, request, count) = batch[i].charges();
            owners.extend(std::iter::repeat_n(i, count));
            rows.extend(std::iter::repeat_n((Some(key), Some(request)), count));
        }
        if rows.is_empty() {
            continue;
        }
        let all = BalanceChange { workspace_id, delta: -1, reason: Reason::Enrich, rows: &rows, now_ms };
        let after: Vec<Option<i64>> = match store.change_balance(&all, carried.take().unwrap_or_default())? {
            Some(after) => (0..rows.len()).map(|n| Some(all.balance_after_row(n, after))).collect(),
            None => {
                // Several statements now: they must commit together.
                store.begin(false)?;
                let mut after = Vec::with_capacity(rows.len());
                for row in &rows {
                    let one = BalanceChange { rows: std::slice::from_ref(row), ..all };
                    after.push(store.change_balance(&one, &[])?);
                }
                after
            }
        };
        for (i, balance) in owners.into_iter().zip(after) {
            balances[i].push(balance);
        }
    }
    if let Some(rows) = carried.filter(|rows| !rows.is_empty()) {
        store.put_cache(rows)?;
    }

    let mut own_rows = Vec::new();
    let mut settled = Vec::with_capacity(batch.len());
    for ((settlement, refusal), balances) in batch.into_iter().zip(refused).zip(balances) {
        if let Some(error) = refusal {
            settled.push(settlement.refused(error));
            continue;
        }
        settled.push(match settlement {
            Settlement::One(job) => match balances.first().copied().flatten() {
                None => Settled::One(Err(SettleError::Insufficient)),
                Some(balance_after) => {
                    if let Some(completion) = &job.completion {
                        if !store.complete(&completion.claim, &completion.answer, balance_after)? {
                            return Err(StoreError::bug("a locked idempotency claim vanished inside the settling transaction"));
                        }
                    }
                    own_rows.extend(job.cache_row);
                    Settled::One(Ok(Charged { balance_after }))
                }
            },
            Settlement::Charges(bulk) => {
                let Charges { charges, balance_if_unpaid, completion, .. } = bulk;
                let balance = balances.iter().rev().flatten().next().copied().unwrap_or(balance_if_unpaid);
                let charged = ChargesSettled { balances, balance };
                let completed = match completion {
                    None => true,
                    Some(ChargesCompletion::Claim { claim, render }) => store.complete(&claim, &render(&charged), balance)?,
                    Some(ChargesCompletion::JobItems { job_id, owner, render, .. }) => {
                        store.finish_job_items(&job_id, &owner, &render(&charged))?
                    }
                };
                if !completed {
                    return Err(StoreError::bug("a locked claim or job items' lease vanished inside the settling transaction"));
                }
                own_rows.extend(charges.into_iter().zip(&charged.balances).filter(|(_, b)| b.is_some()).filter_map(|(row, _)| row));
                Settled::Charges(Ok(charged))
            }
        });
    }
    store.commit()?;
    Ok((settled, own_rows))
}

#[cfg(test)]
mod tests {
    //! The batch algorithm against an in-memory store with transactions and faults.

    use std::collections::HashMap;

    use super::*;

    /// A claim: still owned, and what completed it (answer, balance).
    type FakeClaim = (bool, Option<(Vec<u8>, i64)>);

    #[derive(Clone, Default, Debug, PartialEq)]
    struct State {
        balances: HashMap<String, i64>,
        /// (workspace, delta, balance_after, reason)
        ledger: Vec<(String, i64, i64, &'static str)>,
        /// claim token → (owned, completed answer and balance)
        claims: HashMap<String, FakeClaim>,
        cache: HashMap<String, i64>,
        /// job id → (lease owner, results written)
        jobs: HashMap<String, (String, Vec<(i32, String)>)>,
    }

    #[derive(Default)]
    struct FakeStore {
        committed: State,
        open: Option<State>,
        /// Fail (or panic) on the n-th change_balance call from now.
        fail_at: Option<(usize, bool)>,
        calls: usize,
    }

    impl FakeStore {
        fn state(&mut self) -> &mut State {
            // A statement outside a transaction commits on its own.
            if self.open.is_none() {
                self.open = Some(self.committed.clone());
            }
            self.open.as_mut().unwrap()
        }
    }

    fn claim_of(token: &str) -> ClaimToken {
        ClaimToken::for_tests("ws", "key", token)
    }

    impl Store for FakeStore {
        fn begin(&mut self, _one_statement: bool) -> Result<(), StoreError> {
            if self.open.is_none() {
                self.open = Some(self.committed.clone());
            }
            Ok(())
        }

        fn lock_claim(&mut self, claim: &ClaimToken) -> Result<bool, StoreError> {
            let token = claim.parts().2.to_string();
            Ok(self.state().claims.get(&token).is_some_and(|(owned, done)| *owned && done.is_none()))
        }

        fn change_balance(&mut self, change: &BalanceChange<'_>, cache: &[CacheRow]) -> Result<Option<i64>, StoreError> {
            self.calls += 1;
            if let Some((at, panic)) = self.fail_at {
                if self.calls == at {
                    if panic {
                        panic!("injected panic");
                    }
                    return Err(StoreError::bug("injected failure"));
                }
            }
            self.put_cache(cache)?;
            let state = self.state();
            let Some(balance) = state.balances.get(change.workspace_id).copied() else { return Ok(None) };
            let after = balance + change.delta * change.rows.len() as i64;
            if after < 0 {
                return Ok(None);
            }
            state.balances.insert(change.workspace_id.to_string(), after);
            for n in 0..change.rows.len() {
                let row = (change.workspace_id.to_string(), change.delta, change.balance_after_row(n, after), change.reason.as_str());
                state.ledger.push(row);
            }
            Ok(Some(after))
        }

        fn put_cache(&mut self, rows: &[CacheRow]) -> Result<(), StoreError> {
            let state = self.state();
            for row in rows {
                state.cache.insert(row.cache_key.clone(), row.fetched_at);
            }
            Ok(())
        }

        fn complete(&mut self, claim: &ClaimToken, answer: &[u8], balance_after: i64) -> Result<bool, StoreError> {
            let token = claim.parts().2.to_string();
            match self.state().claims.get_mut(&token) {
                Some((true, done @ None)) => {
                    *done = Some((answer.to_vec(), balance_after));
                    Ok(true)
                }
                _ => Ok(false),
            }
        }

        fn hold_job_items(&mut self, job_id: &str, owner: &str, _idxs: &[i32]) -> Result<bool, StoreError> {
            Ok(self.state().jobs.get(job_id).is_some_and(|(held_by, _)| held_by == owner))
        }

        fn finish_job_items(&mut self, job_id: &str, owner: &str, update: &JobItemsUpdate) -> Result<bool, StoreError> {
            match self.state().jobs.get_mut(job_id) {
                Some((held_by, results)) if held_by == owner => {
                    results.extend(update.results.iter().cloned());
                    Ok(true)
                }
                _ => Ok(false),
            }
        }

        fn commit(&mut self) -> Result<(), StoreError> {
            if let Some(state) = self.open.take() {
                self.committed = state;
            }
            Ok(())
        }

        fn rollback(&mut self) {
            self.open = None;
        }
    }

    fn row(key: &str) -> CacheRow {
        CacheRow {
            cache_key: key.into(),
            record: "{}".into(),
            vendor: "vendor_a".into(),
            confidence: 0.9,
            fetched_at: 1,
            expires_at: i64::MAX,
            outcome: "match".into(),
        }
    }

    fn job(ws: &str, n: usize) -> Charge {
        Charge {
            workspace_id: ws.into(),
            api_key_id: "k".into(),
            request_id: format!("r{n}"),
            cache_row: Some(row(&format!("email:{ws}{n}@x.com"))),
            completion: None,
        }
    }

    /// Settles single calls' charges in one batch.
    fn settle_ones(w: &mut Writer<FakeStore>, jobs: Vec<Charge>) -> Vec<Outcome> {
        let settled = w.settle_batch(jobs.into_iter().map(Settlement::One).collect());
        settled.into_iter().map(|s| if let Settled::One(outcome) = s { outcome } else { panic!("a single call's outcome") }).collect()
    }

    fn bulk_outcome(settled: Settled) -> Result<ChargesSettled, SettleError> {
        match settled {
            Settled::Charges(outcome) => outcome,
            Settled::One(_) => panic!("a bulk call's outcome"),
        }
    }

    /// Settles one bulk call in a batch of its own.
    fn settle_bulk(w: &mut Writer<FakeStore>, bulk: Charges) -> Result<ChargesSettled, SettleError> {
        bulk_outcome(w.settle_batch(vec![Settlement::Charges(bulk)]).pop().unwrap())
    }

    fn writer(balances: &[(&str, i64)]) -> Writer<FakeStore> {
        let mut store = FakeStore::default();
        for (ws, b) in balances {
            store.committed.balances.insert(ws.to_string(), *b);
        }
        Writer::new(store, Arc::new(Metrics::new()))
    }

    fn ledger_sums_to_balances(state: &State) {
        for (ws, balance) in &state.balances {
            let charged: i64 = state.ledger.iter().filter(|l| &l.0 == ws).map(|l| l.1).sum();
            assert_eq!(charged, balance - 10, "{ws}: the ledger sums to the balance (all started at 10)");
        }
    }

    #[test]
    fn a_covered_batch_charges_each_job_once_in_order() {
        let mut w = writer(&[("a", 10), ("b", 10)]);
        let jobs = vec![job("a", 0), job("b", 1), job("a", 2)];
        let out = settle_ones(&mut w, jobs);
        let balances: Vec<i64> = out.iter().map(|o| o.as_ref().unwrap().balance_after).collect();
        assert_eq!(balances, vec![9, 9, 8], "job n of a workspace sees the balance after its own debit");
        let state = &w.store.committed;
        assert_eq!(state.balances["a"], 8);
        assert_eq!(state.ledger.iter().filter(|l| l.0 == "a").map(|l| l.2).collect::<Vec<_>>(), vec![9, 8]);
        ledger_sums_to_balances(state);
        assert!(state.cache.is_empty(), "the batch's own cache rows wait for the next transaction");
        assert_eq!(w.carried.len(), 3);
    }

    #[test]
    fn a_workspace_that_cannot_cover_its_jobs_falls_back_to_one_debit_each() {
        let mut w = writer(&[("a", 2), ("b", 10)]);
        let out = settle_ones(&mut w, (0..4).map(|n| job("a", n)).chain([job("b", 9)]).collect());
        let ok: Vec<bool> = out.iter().map(Result::is_ok).collect();
        assert_eq!(ok, vec![true, true, false, false, true]);
        assert!(matches!(out[2], Err(SettleError::Insufficient)));
        assert_eq!(out[0].as_ref().unwrap().balance_after, 1);
        assert_eq!(out[1].as_ref().unwrap().balance_after, 0);
        let state = &w.store.committed;
        assert_eq!((state.balances["a"], state.balances["b"]), (0, 9));
        assert_eq!(state.ledger.iter().filter(|l| l.0 == "a").count(), 2);
        assert_eq!(w.carried.len(), 3, "only paid jobs' rows are cached");
    }

    #[test]
    fn a_bulk_call_charges_its_first_items_as_far_as_the_balance_goes_and_stores_its_answer() {
        let mut w = writer(&[("a", 3)]);
        w.store.committed.claims.insert("bulk".into(), (true, None));
        let bulk = Charges {
            workspace_id: "a".into(),
            api_key_id: "k".into(),
            request_id: "r".into(),
            charges: (0..5).map(|n| Some(row(&format!("email:b{n}@x.com")))).collect(),
            balance_if_unpaid: 3,
            completion: Some(ChargesCompletion::Claim {
                claim: ClaimToken::for_tests("a", "idem", "bulk"),
                render: Box::new(|charged| format!("{:?}", charged.balances).into_bytes()),
            }),
        };
        let charged = settle_bulk(&mut w, bulk).unwrap();
        assert_eq!(charged.balances, vec![Some(2), Some(1), Some(0), None, None]);
        assert_eq!(charged.balance, 0);
        let state = &w.store.committed;
        assert_eq!(state.balances["a"], 0);
        assert_eq!(state.ledger.len(), 3);
        let stored = state.claims["bulk"].1.clone().unwrap();
        assert_eq!((String::from_utf8(stored.0).unwrap().as_str(), stored.1), ("[Some(2), Some(1), Some(0), None, None]", 0));
        assert_eq!(w.carried.len(), 3, "only the paid items' rows are cached");

        // Nothing to charge: the balance read before is reported, nothing moves.
        let empty = Charges {
            workspace_id: "a".into(),
            api_key_id: "k".into(),
            request_id: "r2".into(),
            charges: Vec::new(),
            balance_if_unpaid: 0,
            completion: None,
        };
        assert_eq!(settle_bulk(&mut w, empty).unwrap(), ChargesSettled { balances: Vec::new(), balance: 0 });
        assert!(w.store.committed.cache.contains_key("email:b0@x.com"), "the carried rows went with it");
    }

    #[test]
    fn a_job_chunk_commits_only_while_its_worker_holds_the_lease() {
        let mut w = writer(&[("a", 5)]);
        w.store.committed.jobs.insert("job_1".into(), ("worker-b".into(), Vec::new()));
        let chunk = |owner: &str| Charges {
            workspace_id: "a".into(),
            api_key_id: "k".into(),
            request_id: "job_1".into(),
            charges: vec![Some(row("email:j0@x.com")), None],
            balance_if_unpaid: 5,
            completion: Some(ChargesCompletion::JobItems {
                job_id: "job_1".into(),
                owner: owner.into(),
                idxs: vec![0, 1],
                render: Box::new(|charged| JobItemsUpdate {
                    results: vec![(0, format!("{:?}", charged.balances[0])), (1, format!("{:?}", charged.balances[1]))],
                    succeeded: 2,
                    no_match: 0,
                    failed: 0,
                    credits_charged: 2,
                    now_ms: 1,
                    purge_after_ms: 2,
                }),
            }),
        };
        // Worker a's lease was taken over by worker b: nothing of a's chunk commits.
        assert!(matches!(settle_bulk(&mut w, chunk("worker-a")), Err(SettleError::TakenOver)));
        assert_eq!((w.store.committed.balances["a"], w.store.committed.ledger.len()), (5, 0));
        assert!(w.carried.is_empty(), "and its cache row is not kept");
        let charged = settle_bulk(&mut w, chunk("worker-b")).unwrap();
        assert_eq!(charged.balances, vec![Some(4), Some(3)]);
        assert_eq!(w.store.committed.jobs["job_1"].1, vec![(0, "Some(4)".to_string()), (1, "Some(3)".to_string())]);
    }

    #[test]
    fn single_calls_bulk_calls_and_job_chunks_share_one_transaction_in_arrival_order() {
        let mut w = writer(&[("a", 4)]);
        w.store.committed.claims.insert("bulk".into(), (true, None));
        w.store.committed.jobs.insert("job_1".into(), ("worker-b".into(), Vec::new()));
        let lost_chunk = Charges {
            workspace_id: "a".into(),
            api_key_id: "k".into(),
            request_id: "job_1".into(),
            charges: vec![Some(row("email:j0@x.com"))],
            balance_if_unpaid: 4,
            completion: Some(ChargesCompletion::JobItems {
                job_id: "job_1".into(),
                owner: "worker-a".into(),
                idxs: vec![0],
                render: Box::new(|_| unreachable!("a chunk whose lease was lost renders nothing")),
            }),
        };
        let bulk = Charges {
            workspace_id: "a".into(),
            api_key_id: "k".into(),
            request_id: "r-bulk".into(),
            charges: (0..3).map(|n| Some(row(&format!("email:b{n}@x.com")))).collect(),
            balance_if_unpaid: 4,
            completion: Some(ChargesCompletion::Claim {
                claim: ClaimToken::for_tests("a", "idem", "bulk"),
                render: Box::new(|charged| format!("{:?}", charged.balances).into_bytes()),
            }),
        };
        let batch =
            vec![Settlement::One(job("a", 0)), Settlement::Charges(lost_chunk), Settlement::Charges(bulk), Settlement::One(job("a", 1))];
        let mut settled = w.settle_batch(batch).into_iter();
        let Some(Settled::One(first)) = settled.next() else { panic!("a single call's outcome first") };
        assert_eq!(first.unwrap().balance_after, 3);
        assert!(matches!(bulk_outcome(settled.next().unwrap()), Err(SettleError::TakenOver)), "the chunk lost its lease");
        let charged = bulk_outcome(settled.next().unwrap()).unwrap();
        assert_eq!(charged, ChargesSettled { balances: vec![Some(2), Some(1), Some(0)], balance: 0 });
        let Some(Settled::One(last)) = settled.next() else { panic!("a single call's outcome last") };
        assert!(matches!(last, Err(SettleError::Insufficient)), "the balance ran out before the last call");

        let state = &w.store.committed;
        assert_eq!((state.balances["a"], state.ledger.len()), (0, 4), "four credits, four ledger rows");
        assert!(state.jobs["job_1"].1.is_empty(), "nothing of the lost chunk was written");
        assert_eq!(state.claims["bulk"].1.as_ref().map(|(_, b)| *b), Some(0), "the bulk claim completed with its balance");
        assert_eq!(w.carried.len(), 4, "the paid rows: one single call's and the bulk call's three");
    }

    #[test]
    fn carried_rows_commit_with_the_next_batch() {
        let mut w = writer(&[("a", 10)]);
        settle_ones(&mut w, vec![job("a", 0)]);
        assert_eq!(w.carried.len(), 1);
        settle_ones(&mut w, vec![job("a", 1)]);
        assert!(w.store.committed.cache.contains_key("email:a0@x.com"));
        assert_eq!(w.carried.len(), 1);
        w.write_carried();
        assert!(w.store.committed.cache.contains_key("email:a1@x.com"));
        assert!(w.carried.is_empty());
    }

    #[test]
    fn claims_are_completed_with_the_answer_and_a_lost_claim_pays_nothing() {
        let mut w = writer(&[("a", 10)]);
        w.store.committed.claims.insert("mine".into(), (true, None));
        w.store.committed.claims.insert("lost".into(), (false, None));
        let mut mine = job("a", 0);
        mine.completion = Some(super::super::ClaimCompletion { claim: claim_of("mine"), answer: b"answer".to_vec() });
        let mut lost = job("a", 1);
        lost.completion = Some(super::super::ClaimCompletion { claim: claim_of("lost"), answer: b"other".to_vec() });
        let out = settle_ones(&mut w, vec![mine, lost]);
        assert_eq!(out[0].as_ref().unwrap().balance_after, 9);
        assert!(matches!(out[1], Err(SettleError::TakenOver)));
        let state = &w.store.committed;
        assert_eq!(state.claims["mine"].1, Some((b"answer".to_vec(), 9)));
        assert_eq!(state.claims["lost"].1, None);
        assert_eq!(state.balances["a"], 9);
        assert_eq!(w.carried.len(), 1);
    }

    fn a_failing_batch_commits_nothing(panic: bool) {
        let mut w = writer(&[("a", 10), ("b", 10)]);
        settle_ones(&mut w, vec![job("a", 0)]);
        let before = w.store.committed.clone();
        // The second workspace's balance change fails: the first one's must not stand.
        w.store.fail_at = Some((w.store.calls + 2, panic));
        let out = settle_ones(&mut w, vec![job("a", 1), job("b", 2)]);
        assert!(out.iter().all(|o| matches!(o, Err(SettleError::Database(_)))), "every waiter is answered");
        assert_eq!(w.store.committed, before, "nothing of the batch was committed");
        assert_eq!(w.carried.len(), 1, "the rows carried in are kept for the next transaction");
        // The writer lives on.
        let out = settle_ones(&mut w, vec![job("b", 3)]);
        assert_eq!(out[0].as_ref().unwrap().balance_after, 9);
        assert!(w.store.committed.cache.contains_key("email:a0@x.com"));
        ledger_sums_to_balances(&w.store.committed);
    }

    #[test]
    fn a_failing_batch_commits_nothing_and_the_writer_lives_on() {
        a_failing_batch_commits_nothing(false);
    }

    #[test]
    fn a_panicking_batch_commits_nothing_and_the_writer_lives_on() {
        a_failing_batch_commits_nothing(true);
    }

    #[test]
    fn a_grant_adds_credits_with_a_ledger_row() {
        let mut w = writer(&[("a", 10)]);
        assert_eq!(w.grant("a", 5).unwrap(), 15);
        assert!(matches!(w.grant("nope", 5), Err(SettleError::UnknownWorkspace)));
        let state = &w.store.committed;
        assert_eq!(state.ledger, vec![("a".to_string(), 5, 15, "grant")]);
    }
}
