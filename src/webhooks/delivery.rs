//! Delivering webhook events: the workers every `serve` process runs ([`Deliverer`]),
//! and the one attempt path they and a ping share ([`Webhooks::attempt`]).
//!
//! Invariants:
//! - a delivery is attempted only by whoever holds its lease (PostgreSQL: leased with
//!   `FOR UPDATE SKIP LOCKED`; SQLite: one writer), and an attempt's outcome is recorded
//!   only while the lease is held: on several replicas each attempt is made once; a
//!   worker that died mid-attempt leaves the delivery to be attempted again after the
//!   lease (`[webhooks] lease_ms`, longer than an attempt's `timeout_ms`): at least once;
//! - the body is rendered from the stored event the same way on every attempt, signed
//!   with the webhook's secret at the time of the attempt (`X-LeadLex-Signature:
//!   sha256=<hex HMAC-SHA256 of the body>`); the delivery id is the row's, the same on
//!   every attempt;
//! - a 2xx answer within `timeout_ms` is success; anything else (another status, a
//!   refused address, a timeout) is retried after the next step of `retry_schedule_ms`
//!   (± `jitter`), and once the schedule is spent the delivery is `failed`;
//! - a webhook whose attempts have all failed for `disable_after_ms` (a day) is turned
//!   off, with the reason; pending deliveries of an inactive webhook wait.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use rand::Rng;
use sea_orm::{
    sea_query::{Expr, Func},
    ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter, Statement, TransactionTrait,
};
use sha2::Sha256;

use entity::{webhook, webhook_delivery as delivery_row};

use super::{DeliveryView, Event, WebhookError, Webhooks};
use crate::hex::hex;
use crate::outbound::{self, Policy};

pub const PENDING: &str = "pending";
pub const SUCCEEDED: &str = "succeeded";
pub const FAILED: &str = "failed";

/// The `User-Agent` of every delivery.
pub const USER_AGENT: &str = "LeadLex-Webhook/1.0";

/// `sha256=<hex HMAC-SHA256 of body under secret>`: the `X-LeadLex-Signature` value. The
/// key is the whole secret string (`whsec_` included), as UTF-8 bytes.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex(&mac.finalize().into_bytes()))
}

/// The body of a delivery: `{"id", "event", "created_at", "workspace_id", "data"}`, the
/// same bytes on every attempt.
pub fn body(d: &delivery_row::Model) -> Vec<u8> {
    let data: serde_json::Value = serde_json::from_str(&d.data).unwrap_or(serde_json::Value::Null);
    let payload = serde_json::json!({
        "id": d.event_id,
        "event": d.event,
        "created_at": crate::time::at(d.created_at).to_rfc3339(),
        "workspace_id": d.workspace_id,
        "data": data,
    });
    serde_json::to_vec(&payload).expect("a payload serialises")
}

/// How one attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    status_code: Option<i32>,
    latency_ms: i64,
    error: Option<String>,
}

impl Outcome {
    fn succeeded(&self) -> bool {
        self.error.is_none()
    }
}

impl Webhooks {
    fn policy(&self) -> Policy {
        Policy { allow_loopback: self.settings.allow_loopback }
    }

    /// Sends a `ping` to the webhook now (whether or not it is active) and answers with
    /// the delivery after the attempt; a failed ping is retried like any delivery.
    pub async fn ping(&self, scope: &crate::scope::Scope, id: &str, now_ms: i64) -> Result<DeliveryView, WebhookError> {
        let w = self.row(scope, id).await?;
        let owner = format!("ping_{}", uuid::Uuid::new_v4().simple());
        let row = delivery_row::Model {
            id: uuid::Uuid::new_v4().to_string(),
            webhook_id: w.id.clone(),
            workspace_id: scope.workspace_id().to_string(),
            event_id: crate::outbox::new_event_id(),
            event: Event::Ping.as_str().to_string(),
            data: crate::outbox::ping_data(&w.id),
            created_at: now_ms,
            state: PENDING.to_string(),
            attempts: 0,
            round_attempts: 0,
            next_attempt_at: Some(now_ms),
            lease_owner: Some(owner.clone()),
            lease_until: Some(now_ms + self.settings.lease_ms as i64),
            status_code: None,
            latency_ms: None,
            error: None,
            last_attempt_at: None,
        };
        let id = row.id.clone();
        delivery_row::Entity::insert(row.clone().into_active_model()).exec_without_returning(&self.db).await?;
        self.attempt(&w, row, &owner).await?;
        let d = delivery_row::Entity::find_by_id(&id).one(&self.db).await?.ok_or(WebhookError::DeliveryNotFound)?;
        Ok(d.into())
    }

    /// Makes one attempt of `d` (leased by `owner`) to `w`, and records how it went.
    async fn attempt(&self, w: &webhook::Model, d: delivery_row::Model, owner: &str) -> Result<(), WebhookError> {
        let outcome = match self.secret_of(w) {
            Ok(secret) => self.send(w, &d, &secret.0).await,
            Err(err) => {
                tracing::error!(webhook = %w.id, error = %err, "a webhook secret could not be opened");
                Outcome { status_code: None, latency_ms: 0, error: Some("the signing secret could not be read; rotate it".into()) }
            }
        };
        let label = crate::metrics::WebhookLabels { outcome: if outcome.succeeded() { SUCCEEDED } else { FAILED } };
        self.metrics.webhook_attempts.get_or_create(&label).inc();
        self.metrics.webhook_attempt_seconds.observe(outcome.latency_ms as f64 / 1000.0);
        self.record(w, &d, owner, &outcome).await
    }

    async fn send(&self, w: &webhook::Model, d: &delivery_row::Model, secret: &str) -> Outcome {
        let started = std::time::Instant::now();
        let url = match super::parse_url(&w.url, self.settings.allow_loopback) {
            Ok(url) => url,
            Err(e) => return Outcome { status_code: None, latency_ms: 0, error: Some(format!("the URL is refused: {}", e.message)) },
        };
        let body = body(d);
        let headers = [
            ("Content-Type", "application/json".to_string()),
            ("User-Agent", USER_AGENT.to_string()),
            ("X-LeadLex-Signature", signature(secret, &body)),
            ("X-LeadLex-Timestamp", (crate::now_ms() / 1000).to_string()),
            ("X-LeadLex-Delivery-ID", d.id.clone()),
        ];
        let deadline = Duration::from_millis(self.settings.timeout_ms);
        let sent = outbound::post(&url, &headers, body, self.policy(), deadline, self.settings.max_response_bytes).await;
        let latency_ms = started.elapsed().as_millis() as i64;
        match sent {
            Ok(answer) if (200..300).contains(&answer.status) => {
                Outcome { status_code: Some(i32::from(answer.status)), latency_ms, error: None }
            }
            Ok(answer) => Outcome {
                status_code: Some(i32::from(answer.status)),
                latency_ms,
                error: Some(format!("the endpoint answered {} (a 2xx is success)", answer.status)),
            },
            Err(err) => Outcome { status_code: None, latency_ms, error: Some(err.to_string()) },
        }
    }

    /// When the next attempt after `round_attempts` failed ones is due, or `None` when
    /// the schedule is spent.
    fn next_attempt(&self, round_attempts: i32, now_ms: i64) -> Option<i64> {
        let step = *self.settings.retry_schedule_ms.get(usize::try_from(round_attempts - 1).ok()?)?;
        let jitter = self.settings.jitter.clamp(0.0, 1.0);
        let factor = if jitter > 0.0 { 1.0 + rand::thread_rng().gen_range(-jitter..=jitter) } else { 1.0 };
        Some(now_ms + (step as f64 * factor).round() as i64)
    }

    /// Records an attempt's outcome on the delivery (only while `owner` holds its lease)
    /// and on its webhook, in one transaction; turns off a webhook failing for too long.
    async fn record(&self, w: &webhook::Model, d: &delivery_row::Model, owner: &str, outcome: &Outcome) -> Result<(), WebhookError> {
        let now = crate::now_ms();
        let round = d.round_attempts + 1;
        let (state, next) = match outcome.succeeded() {
            true => (SUCCEEDED, None),
            false => match self.next_attempt(round, now) {
                Some(at) => (PENDING, Some(at)),
                None => (FAILED, None),
            },
        };
        let txn = self.db.begin().await?;
        let recorded = delivery_row::Entity::update_many()
            .col_expr(delivery_row::Column::State, Expr::value(state))
            .col_expr(delivery_row::Column::Attempts, Expr::col(delivery_row::Column::Attempts).add(1))
            .col_expr(delivery_row::Column::RoundAttempts, Expr::value(round))
            .col_expr(delivery_row::Column::NextAttemptAt, Expr::value(next))
            .col_expr(delivery_row::Column::LeaseOwner, Expr::value(Option::<String>::None))
            .col_expr(delivery_row::Column::LeaseUntil, Expr::value(Option::<i64>::None))
            .col_expr(delivery_row::Column::StatusCode, Expr::value(outcome.status_code))
            .col_expr(delivery_row::Column::LatencyMs, Expr::value(outcome.latency_ms))
            .col_expr(delivery_row::Column::Error, Expr::value(outcome.error.clone()))
            .col_expr(delivery_row::Column::LastAttemptAt, Expr::value(now))
            .filter(delivery_row::Column::Id.eq(d.id.as_str()))
            .filter(delivery_row::Column::LeaseOwner.eq(owner))
            .exec(&txn)
            .await?
            .rows_affected;
        if recorded == 0 {
            // The lease ran out and another worker took the delivery over: its outcome counts.
            txn.rollback().await?;
            return Ok(());
        }
        let mut health = webhook::Entity::update_many()
            .col_expr(webhook::Column::LastDeliveryStatus, Expr::value(if outcome.succeeded() { SUCCEEDED } else { FAILED }))
            .col_expr(webhook::Column::LastDeliveryAt, Expr::value(now));
        health = match outcome.succeeded() {
            true => health.col_expr(webhook::Column::FailingSince, Expr::value(Option::<i64>::None)),
            false => health.col_expr(
                webhook::Column::FailingSince,
                Func::coalesce([Expr::col(webhook::Column::FailingSince).into(), Expr::val(now).into()]).into(),
            ),
        };
        health.filter(webhook::Column::Id.eq(w.id.as_str())).exec(&txn).await?;
        if !outcome.succeeded() {
            let cutoff = now - self.settings.disable_after_ms as i64;
            let reason = format!(
                "turned off at {}: every delivery attempt failed for {} hours; last error: {}",
                crate::time::at(now).to_rfc3339(),
                self.settings.disable_after_ms / 3_600_000,
                outcome.error.as_deref().unwrap_or("unknown"),
            );
            let disabled = webhook::Entity::update_many()
                .col_expr(webhook::Column::Active, Expr::value(false))
                .col_expr(webhook::Column::DisabledReason, Expr::value(reason))
                .filter(webhook::Column::Id.eq(w.id.as_str()))
                .filter(webhook::Column::Active.eq(true))
                .filter(webhook::Column::FailingSince.lte(cutoff))
                .exec(&txn)
                .await?
                .rows_affected;
            if disabled > 0 {
                tracing::warn!(webhook = %w.id, "a webhook failing for too long was turned off");
            }
        }
        txn.commit().await?;
        Ok(())
    }

    /// Leases up to `n` due deliveries of active webhooks for `owner`, oldest due first,
    /// none of the webhooks in `busy_hooks` nor of the workspaces in `busy_workspaces`;
    /// returns them with their webhooks.
    async fn lease(
        &self,
        owner: &str,
        n: usize,
        now_ms: i64,
        busy_hooks: &[String],
        busy_workspaces: &[String],
    ) -> Result<Vec<(webhook::Model, delivery_row::Model)>, WebhookError> {
        let backend = self.db.get_database_backend();
        let lease_until = now_ms + self.settings.lease_ms as i64;
        let mut values: Vec<sea_orm::Value> = vec![owner.into(), lease_until.into(), now_ms.into(), (n as i64).into()];
        let mut param = |v: &String| {
            values.push(v.clone().into());
            // As `$n`: the lease statement derives SQLite's `?n`.
            format!("${}", values.len())
        };
        let not_in = |column: &str, list: Vec<String>| match list.is_empty() {
            true => String::new(),
            false => format!(" AND {column} NOT IN ({})", list.join(", ")),
        };
        let hooks = not_in("d.webhook_id", busy_hooks.iter().map(&mut param).collect());
        let workspaces = not_in("d.workspace_id", busy_workspaces.iter().map(&mut param).collect());
        let candidates = format!(
            "SELECT d.id FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
             WHERE d.state = 'pending' AND d.next_attempt_at <= $3 AND (d.lease_until IS NULL OR d.lease_until < $3) \
             AND w.active{hooks}{workspaces} ORDER BY d.next_attempt_at LIMIT $4"
        );
        let sql = crate::lease::Lease {
            table: "webhook_deliveries",
            key: "id",
            candidates: &candidates,
            lock: "FOR UPDATE OF d SKIP LOCKED",
            returning: "id",
        }
        .sql(backend);
        let rows = self.db.query_all(Statement::from_sql_and_values(backend, sql, values)).await?;
        let ids: Vec<String> = rows.iter().map(|r| r.try_get::<String>("", "id")).collect::<Result<_, _>>()?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut deliveries = delivery_row::Entity::find().filter(delivery_row::Column::Id.is_in(ids)).all(&self.db).await?;
        deliveries.sort_by_key(|d| d.next_attempt_at);
        let hook_ids: Vec<String> = deliveries.iter().map(|d| d.webhook_id.clone()).collect();
        let hooks = webhook::Entity::find().filter(webhook::Column::Id.is_in(hook_ids)).all(&self.db).await?;
        Ok(deliveries.into_iter().filter_map(|d| hooks.iter().find(|w| w.id == d.webhook_id).cloned().map(|w| (w, d))).collect())
    }

    /// Gives back deliveries `owner` leased but will not attempt now (due at once again).
    async fn release(&self, owner: &str, ids: Vec<String>) -> Result<(), WebhookError> {
        if ids.is_empty() {
            return Ok(());
        }
        delivery_row::Entity::update_many()
            .col_expr(delivery_row::Column::LeaseOwner, Expr::value(Option::<String>::None))
            .col_expr(delivery_row::Column::LeaseUntil, Expr::value(Option::<i64>::None))
            .filter(delivery_row::Column::Id.is_in(ids))
            .filter(delivery_row::Column::LeaseOwner.eq(owner))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Deletes finished deliveries older than `[webhooks] retention_days`, and any
    /// delivery whose webhook is gone (an event recorded while its webhook was deleted).
    pub async fn purge_finished(&self, now_ms: i64) -> Result<u64, WebhookError> {
        let retention = i64::try_from(self.settings.retention_days.saturating_mul(86_400_000)).unwrap_or(i64::MAX);
        let cutoff = now_ms.saturating_sub(retention);
        let finished = delivery_row::Entity::delete_many()
            .filter(delivery_row::Column::State.is_in([SUCCEEDED, FAILED]))
            .filter(delivery_row::Column::CreatedAt.lt(cutoff))
            .exec(&self.db)
            .await?
            .rows_affected;
        let orphaned = delivery_row::Entity::delete_many()
            .filter(
                delivery_row::Column::WebhookId
                    .not_in_subquery(sea_orm::sea_query::Query::select().column(webhook::Column::Id).from(webhook::Entity).to_owned()),
            )
            .exec(&self.db)
            .await?
            .rows_affected;
        Ok(finished + orphaned)
    }
}

/// The delivery worker of one serving process.
pub struct Deliverer {
    pub webhooks: Arc<Webhooks>,
    /// This process's lease owner name.
    pub owner: String,
}

/// The attempts a worker has in flight, by webhook and by workspace: what its fair
/// shares are counted on.
#[derive(Default)]
struct InFlight {
    hooks: HashMap<String, usize>,
    workspaces: HashMap<String, usize>,
}

impl InFlight {
    fn add(&mut self, hook: &str, workspace: &str) {
        *self.hooks.entry(hook.to_string()).or_default() += 1;
        *self.workspaces.entry(workspace.to_string()).or_default() += 1;
    }

    fn remove(&mut self, hook: &str, workspace: &str) {
        for (map, key) in [(&mut self.hooks, hook), (&mut self.workspaces, workspace)] {
            if let Some(n) = map.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(key);
                }
            }
        }
    }

    /// The keys of `map` at `cap` attempts or more.
    fn full(map: &HashMap<String, usize>, cap: usize) -> Vec<String> {
        map.iter().filter(|(_, n)| **n >= cap).map(|(k, _)| k.clone()).collect()
    }
}

impl Deliverer {
    /// Delivers until `stop` is notified (then finishes the attempts in flight and
    /// leases nothing more). Attempts run side by side, at most `[webhooks] batch` at
    /// once, `per_endpoint` to one webhook and `per_workspace` for one workspace; a
    /// freed slot is filled at once (no attempt waits for a slower one), else the worker
    /// looks again after `poll_ms`.
    pub async fn run(self, stop: Arc<tokio::sync::Notify>) {
        let settings = &self.webhooks.settings;
        let poll = Duration::from_millis(settings.poll_ms.max(10));
        let (total, per_hook, per_ws) = (settings.batch.max(1), settings.per_endpoint.max(1), settings.per_workspace.max(1));
        let stopped = stop.notified();
        tokio::pin!(stopped);
        let mut tasks: tokio::task::JoinSet<(String, String)> = tokio::task::JoinSet::new();
        let mut in_flight = InFlight::default();
        let mut backoff = crate::backoff::Backoff::default();
        loop {
            while let Some(done) = tasks.try_join_next() {
                if let Ok((hook, workspace)) = done {
                    in_flight.remove(&hook, &workspace);
                }
            }
            // Never lease on the way out (it would sit leased until the lease ends).
            if futures_util::FutureExt::now_or_never(stopped.as_mut()).is_some() {
                break;
            }
            let free = total.saturating_sub(tasks.len());
            let mut wait = poll;
            let started = match free {
                0 => 0,
                _ => match self.fill(free, per_hook, per_ws, &mut in_flight, &mut tasks).await {
                    Ok(n) => {
                        if backoff.succeeded() {
                            tracing::info!("the webhook worker delivers again");
                        }
                        n
                    }
                    Err(err) => {
                        let (longer, log) = backoff.failed(poll);
                        if log {
                            tracing::warn!(error = %err, retry_in_ms = longer.as_millis() as u64, "a webhook delivery round failed");
                        }
                        wait = longer;
                        0
                    }
                },
            };
            if started > 0 && tasks.len() < total {
                continue;
            }
            tokio::select! {
                _ = &mut stopped => break,
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok((hook, workspace)) = done {
                        in_flight.remove(&hook, &workspace);
                    }
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Leases up to `free` deliveries within the fair shares and starts their attempts;
    /// how many it started.
    async fn fill(
        &self,
        free: usize,
        per_hook: usize,
        per_ws: usize,
        in_flight: &mut InFlight,
        tasks: &mut tokio::task::JoinSet<(String, String)>,
    ) -> Result<usize, WebhookError> {
        let busy_hooks = InFlight::full(&in_flight.hooks, per_hook);
        let busy_workspaces = InFlight::full(&in_flight.workspaces, per_ws);
        let leased = self.webhooks.lease(&self.owner, free, crate::now_ms(), &busy_hooks, &busy_workspaces).await?;
        let mut started = 0;
        let mut back = Vec::new();
        for (w, d) in leased {
            let hook_n = in_flight.hooks.get(&w.id).copied().unwrap_or(0);
            let ws_n = in_flight.workspaces.get(&w.workspace_id).copied().unwrap_or(0);
            if hook_n >= per_hook || ws_n >= per_ws {
                back.push(d.id);
                continue;
            }
            in_flight.add(&w.id, &w.workspace_id);
            let (webhooks, owner) = (self.webhooks.clone(), self.owner.clone());
            tasks.spawn(async move {
                let (hook, workspace, id) = (w.id.clone(), w.workspace_id.clone(), d.id.clone());
                if let Err(err) = webhooks.attempt(&w, d, &owner).await {
                    tracing::warn!(delivery = %id, error = %err, "recording a webhook delivery failed; it will be attempted again");
                }
                (hook, workspace)
            });
            started += 1;
        }
        // Past a share within this round: due again at once, for a later slot.
        self.webhooks.release(&self.owner, back).await?;
        Ok(started)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hex_hmac_of_the_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_body_is_the_same_on_every_attempt_and_has_the_documented_fields() {
        let d = delivery_row::Model {
            id: "d".into(),
            webhook_id: "wh_1".into(),
            workspace_id: "ws_1".into(),
            event_id: "evt_1".into(),
            event: "credits.low".into(),
            data: r#"{"credits_remaining":9,"low_balance_threshold":10}"#.into(),
            created_at: 1_796_000_000_000,
            state: PENDING.into(),
            attempts: 0,
            round_attempts: 0,
            next_attempt_at: None,
            lease_owner: None,
            lease_until: None,
            status_code: None,
            latency_ms: None,
            error: None,
            last_attempt_at: None,
        };
        assert_eq!(body(&d), body(&d));
        let v: serde_json::Value = serde_json::from_slice(&body(&d)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id": "evt_1", "event": "credits.low", "created_at": "2026-11-30T00:53:20+00:00",
                "workspace_id": "ws_1", "data": {"credits_remaining": 9, "low_balance_threshold": 10}})
        );
    }
}
