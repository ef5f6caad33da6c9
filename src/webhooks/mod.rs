//! Signed webhooks: a workspace's endpoints, the events they take, and their
//! deliveries. Knows nothing of incoming HTTP; outgoing requests go through
//! [`crate::outbound`] only.
//!
//! - this file: [`Webhooks`], the one owner of webhook rows (create, list, change,
//!   delete, rotate the secret; deliveries listed, redelivered, a ping sent now);
//! - [`crate::outbox`] (in the store): recording an event in its cause's transaction;
//! - [`delivery`]: attempting deliveries (the workers every `serve` process runs, and a
//!   ping's immediate attempt), signing, retrying, disabling a failing webhook.
//!
//! Invariants:
//! - a webhook's secret (`whsec_…`) exists in the clear only in the answer to its
//!   creation or rotation, and in memory while a delivery is signed; the database holds
//!   it sealed ([`crate::seal`], bound to the webhook's id);
//! - every operation takes the caller's [`Scope`]: a webhook or delivery of another
//!   workspace, or of the other mode (live, test), behaves exactly as one that does not
//!   exist; a test webhook gets test events only, a live one live events only;
//! - a workspace has at most [`MAX_PER_WORKSPACE`] webhooks in each mode, also under
//!   concurrent creations (they are serialised per workspace);
//! - a URL is `https://` (`http://` to a loopback host only where `[webhooks]
//!   allow_loopback` is set); where it points is checked when each delivery is made.

pub mod delivery;

use std::collections::BTreeSet;
use std::sync::Arc;

use base64::Engine;
use rand::RngCore;
use sea_orm::{
    sea_query::Expr, ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, DatabaseConnection, DbErr, EntityTrait, IntoActiveModel,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};

use entity::{webhook, webhook_delivery as delivery_row};

use crate::config::WebhooksSettings;
use crate::scope::Scope;
use crate::seal::Sealer;
use crate::validation::FieldError;

/// The most webhooks a workspace may have in each mode (a test key cannot use up the
/// live webhooks' room, nor learn how many there are).
pub const MAX_PER_WORKSPACE: u64 = 20;
/// The most webhooks a workspace lists on one page.
pub const MAX_PAGE: u64 = 100;
pub const DESCRIPTION_MAX: usize = 200;
pub const URL_MAX: usize = 2048;
/// `credits.low`'s threshold when none is given.
pub const DEFAULT_LOW_BALANCE_THRESHOLD: i64 = 100;

/// What a webhook URL must look like, published as the `pattern` of its schema and
/// enforced by [`parse_url`] with the same text: `https://`, a host name (whose last
/// label starts with a letter) or an IPv4 address, an optional port, then anything
/// printable; white space around it is ignored (as every input's: Python's `$` matches
/// before a final line break, so a client's generator may add one). (A development
/// server allowing loopback also takes `http://`.)
pub const URL_PATTERN: &str = concat!(
    r"^[ \t\r\n]*https://(?:",
    r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}",
    r"|(?:[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*\.)*[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)*",
    r")(?::(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?(?:[/?#][!-~]*)?[ \t\r\n]*$"
);

static URL_SHAPE: std::sync::LazyLock<regex::Regex> =
    std::sync::LazyLock::new(|| regex::Regex::new(&URL_PATTERN.replacen("https://", "https?://", 1)).expect("URL_PATTERN compiles"));

pub use crate::outbox::Event;

/// Why a webhook operation failed; mapped to HTTP in `api::error` only.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("invalid webhook")]
    Invalid(Vec<FieldError>),
    #[error("no such webhook")]
    NotFound,
    #[error("no such delivery")]
    DeliveryNotFound,
    #[error("a workspace has at most {MAX_PER_WORKSPACE} webhooks (in each mode, live and test); delete one first")]
    TooMany,
    #[error("a stored secret could not be read: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Db(#[from] DbErr),
}

/// A new webhook, as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWebhook {
    pub url: String,
    pub events: BTreeSet<Event>,
    pub description: Option<String>,
    pub active: bool,
    pub low_balance_threshold: i64,
}

/// A change to a webhook: `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookPatch {
    pub url: Option<String>,
    pub events: Option<BTreeSet<Event>>,
    /// `Some("")` removes the description.
    pub description: Option<String>,
    pub active: Option<bool>,
    pub low_balance_threshold: Option<i64>,
}

/// A webhook as its workspace sees it: never its secret. Times are epoch milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    pub active: bool,
    pub low_balance_threshold: i64,
    pub disabled_reason: Option<String>,
    pub last_delivery_status: Option<String>,
    pub last_delivery_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<webhook::Model> for WebhookView {
    fn from(w: webhook::Model) -> Self {
        Self {
            events: w.events.split_whitespace().map(str::to_string).collect(),
            id: w.id,
            url: w.url,
            description: w.description,
            active: w.active,
            low_balance_threshold: w.low_balance_threshold,
            disabled_reason: w.disabled_reason,
            last_delivery_status: w.last_delivery_status,
            last_delivery_at: w.last_delivery_at,
            created_at: w.created_at,
            updated_at: w.updated_at,
        }
    }
}

/// A delivery as its workspace sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryView {
    pub id: String,
    pub event_id: String,
    pub event: String,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    pub attempts: i32,
    pub status_code: Option<i32>,
    pub latency_ms: Option<i64>,
    pub error: Option<String>,
    pub created_at: i64,
    pub last_attempt_at: Option<i64>,
    pub next_retry_at: Option<i64>,
}

impl From<delivery_row::Model> for DeliveryView {
    fn from(d: delivery_row::Model) -> Self {
        Self {
            next_retry_at: if d.state == delivery::PENDING { d.next_attempt_at } else { None },
            id: d.id,
            event_id: d.event_id,
            event: d.event,
            status: d.state,
            attempts: d.attempts,
            status_code: d.status_code,
            latency_ms: d.latency_ms,
            error: d.error,
            created_at: d.created_at,
            last_attempt_at: d.last_attempt_at,
        }
    }
}

/// A signing secret, shown once. Its `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(pub String);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(…)")
    }
}

impl SigningSecret {
    fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(format!("whsec_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
    }
}

/// Checks a webhook URL: its shape ([`URL_PATTERN`]), and `http://` only to a loopback
/// host where `allow_loopback`. Where the host points is checked at each delivery.
/// The URL is `text` without the white space around it.
pub fn parse_url(text: &str, allow_loopback: bool) -> Result<url::Url, FieldError> {
    let bad = |message: &str| FieldError::new("url", message);
    if text.chars().count() > URL_MAX || !URL_SHAPE.is_match(text) {
        return Err(bad("must be an https:// URL with a host name or IPv4 address"));
    }
    let url = url::Url::parse(text.trim()).map_err(|e| bad(&format!("is not a URL: {e}")))?;
    if url.scheme() == "http" {
        let loopback = url
            .host_str()
            .is_some_and(|h| h.eq_ignore_ascii_case("localhost") || h.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback()));
        if !(allow_loopback && loopback) {
            return Err(bad("must be https:// (http:// is taken only for a loopback host, by a server configured for development)"));
        }
    }
    Ok(url)
}

fn check_events(events: &BTreeSet<Event>) -> Result<(), FieldError> {
    if events.is_empty() {
        return Err(FieldError::new("events", "must name at least one event"));
    }
    if events.contains(&Event::Ping) {
        return Err(FieldError::new("events", "`ping` is sent on request only"));
    }
    Ok(())
}

fn check_description(d: &str) -> Result<(), FieldError> {
    if d.chars().count() > DESCRIPTION_MAX {
        return Err(FieldError::new("description", format!("must be at most {DESCRIPTION_MAX} characters")));
    }
    Ok(())
}

fn check_threshold(t: i64) -> Result<(), FieldError> {
    if t < 1 {
        return Err(FieldError::new("low_balance_threshold", "must be at least 1"));
    }
    Ok(())
}

fn events_text(events: &BTreeSet<Event>) -> String {
    events.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(" ")
}

fn new_id() -> String {
    format!("wh_{}", uuid::Uuid::now_v7().simple())
}

/// The webhooks of `scope`: its workspace's, of its mode.
fn in_scope(scope: &Scope) -> Condition {
    Condition::all().add(webhook::Column::WorkspaceId.eq(scope.workspace_id())).add(webhook::Column::Mode.eq(scope.mode().as_str()))
}

/// What binds a sealed secret to its webhook.
fn seal_context(webhook_id: &str) -> Vec<u8> {
    format!("webhook-secret\n{webhook_id}").into_bytes()
}

/// The one owner of webhook rows, and what delivering needs.
pub struct Webhooks {
    pub(crate) db: DatabaseConnection,
    pub(crate) sealer: Arc<Sealer>,
    pub(crate) settings: WebhooksSettings,
    /// This process's metrics: attempts by outcome, their duration.
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
}

impl Webhooks {
    pub fn new(db: DatabaseConnection, sealer: Arc<Sealer>, settings: WebhooksSettings, metrics: Arc<crate::metrics::Metrics>) -> Self {
        Self { db, sealer, settings, metrics }
    }

    fn check_new(&self, spec: &NewWebhook) -> Result<(), WebhookError> {
        let problems: Vec<FieldError> = [
            parse_url(&spec.url, self.settings.allow_loopback).err(),
            check_events(&spec.events).err(),
            spec.description.as_deref().and_then(|d| check_description(d).err()),
            check_threshold(spec.low_balance_threshold).err(),
        ]
        .into_iter()
        .flatten()
        .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(WebhookError::Invalid(problems))
        }
    }

    /// Creates a webhook; its secret is in the answer, and nowhere else in the clear.
    pub async fn create(&self, scope: &Scope, spec: &NewWebhook, now_ms: i64) -> Result<(WebhookView, SigningSecret), WebhookError> {
        self.check_new(spec)?;
        // Creations in one workspace are serialised, so that the cap holds under
        // concurrency: the transaction's first statement is a write to the workspace's
        // row (PostgreSQL: its lock, held to the commit; SQLite: the one writer's lock).
        let txn = self.db.begin().await?;
        entity::workspace::Entity::update_many()
            .col_expr(entity::workspace::Column::Id, Expr::col(entity::workspace::Column::Id).into())
            .filter(entity::workspace::Column::Id.eq(scope.workspace_id()))
            .exec(&txn)
            .await?;
        let existing = webhook::Entity::find().filter(in_scope(scope)).count(&txn).await?;
        if existing >= MAX_PER_WORKSPACE {
            txn.rollback().await?;
            return Err(WebhookError::TooMany);
        }
        let id = new_id();
        let secret = SigningSecret::generate();
        let row = webhook::Model {
            id: id.clone(),
            workspace_id: scope.workspace_id().to_string(),
            mode: scope.mode().as_str().to_string(),
            url: spec.url.trim().to_string(),
            events: events_text(&spec.events),
            description: spec.description.clone().filter(|d| !d.is_empty()),
            active: spec.active,
            low_balance_threshold: spec.low_balance_threshold,
            secret_sealed: self.sealer.seal(secret.0.as_bytes(), &seal_context(&id)),
            created_at: now_ms,
            updated_at: now_ms,
            disabled_reason: None,
            failing_since: None,
            last_delivery_status: None,
            last_delivery_at: None,
        };
        webhook::Entity::insert(row.clone().into_active_model()).exec_without_returning(&txn).await?;
        txn.commit().await?;
        Ok((row.into(), secret))
    }

    /// The webhook `id` of `scope`.
    pub(crate) async fn row(&self, scope: &Scope, id: &str) -> Result<webhook::Model, WebhookError> {
        webhook::Entity::find_by_id(id).filter(in_scope(scope)).one(&self.db).await?.ok_or(WebhookError::NotFound)
    }

    /// The webhook `id` of `scope`.
    pub async fn get(&self, scope: &Scope, id: &str) -> Result<WebhookView, WebhookError> {
        Ok(self.row(scope, id).await?.into())
    }

    /// A page of the workspace's webhooks, oldest first, after `starting_after`; the
    /// cursor of the next page when there is one.
    pub async fn list(
        &self,
        scope: &Scope,
        starting_after: Option<&str>,
        limit: u64,
    ) -> Result<(Vec<WebhookView>, Option<String>), WebhookError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let mut q = webhook::Entity::find().filter(in_scope(scope));
        if let Some(after) = starting_after {
            q = q.filter(webhook::Column::Id.gt(after));
        }
        let rows = q.order_by_asc(webhook::Column::Id).limit(limit + 1).all(&self.db).await?;
        let (rows, next) = crate::page::split(rows, limit, |w| w.id.clone());
        Ok((rows.into_iter().map(WebhookView::from).collect(), next))
    }

    /// Changes what `patch` names. Turning a webhook on clears why it was turned off.
    pub async fn update(&self, scope: &Scope, id: &str, patch: &WebhookPatch, now_ms: i64) -> Result<WebhookView, WebhookError> {
        let problems: Vec<FieldError> = [
            patch.url.as_deref().and_then(|u| parse_url(u, self.settings.allow_loopback).err()),
            patch.events.as_ref().and_then(|e| check_events(e).err()),
            patch.description.as_deref().and_then(|d| check_description(d).err()),
            patch.low_balance_threshold.and_then(|t| check_threshold(t).err()),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !problems.is_empty() {
            return Err(WebhookError::Invalid(problems));
        }
        let mut row = self.row(scope, id).await?.into_active_model();
        if let Some(url) = &patch.url {
            row.url = Set(url.trim().to_string());
        }
        if let Some(events) = &patch.events {
            row.events = Set(events_text(events));
        }
        if let Some(description) = &patch.description {
            row.description = Set(Some(description.clone()).filter(|d| !d.is_empty()));
        }
        if let Some(threshold) = patch.low_balance_threshold {
            row.low_balance_threshold = Set(threshold);
        }
        if let Some(active) = patch.active {
            row.active = Set(active);
            if active {
                row.disabled_reason = Set(None);
                row.failing_since = Set(None);
            }
        }
        row.updated_at = Set(now_ms);
        Ok(row.update(&self.db).await?.into())
    }

    /// Deletes the webhook and its deliveries (pending ones are not sent).
    pub async fn delete(&self, scope: &Scope, id: &str) -> Result<(), WebhookError> {
        let txn = self.db.begin().await?;
        let deleted =
            webhook::Entity::delete_many().filter(webhook::Column::Id.eq(id)).filter(in_scope(scope)).exec(&txn).await?.rows_affected;
        if deleted == 0 {
            txn.rollback().await?;
            return Err(WebhookError::NotFound);
        }
        delivery_row::Entity::delete_many().filter(delivery_row::Column::WebhookId.eq(id)).exec(&txn).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Replaces the signing secret: every delivery attempted from now on (retries of
    /// earlier events included) is signed with the new one.
    pub async fn rotate_secret(&self, scope: &Scope, id: &str, now_ms: i64) -> Result<(WebhookView, SigningSecret), WebhookError> {
        let secret = SigningSecret::generate();
        let updated = webhook::Entity::update_many()
            .col_expr(webhook::Column::SecretSealed, Expr::value(self.sealer.seal(secret.0.as_bytes(), &seal_context(id))))
            .col_expr(webhook::Column::UpdatedAt, Expr::value(now_ms))
            .filter(webhook::Column::Id.eq(id))
            .filter(in_scope(scope))
            .exec(&self.db)
            .await?
            .rows_affected;
        if updated == 0 {
            return Err(WebhookError::NotFound);
        }
        Ok((self.get(scope, id).await?, secret))
    }

    /// The webhook's secret, opened.
    pub(crate) fn secret_of(&self, w: &webhook::Model) -> Result<SigningSecret, WebhookError> {
        let plain = self.sealer.open(&w.secret_sealed, &seal_context(&w.id)).map_err(|e| WebhookError::Corrupt(e.to_string()))?;
        String::from_utf8(plain).map(SigningSecret).map_err(|e| WebhookError::Corrupt(e.to_string()))
    }

    /// A page of the webhook's deliveries, newest first, after the delivery
    /// `starting_after`; the cursor of the next page when there is one.
    pub async fn deliveries(
        &self,
        scope: &Scope,
        id: &str,
        starting_after: Option<&str>,
        limit: u64,
    ) -> Result<(Vec<DeliveryView>, Option<String>), WebhookError> {
        self.row(scope, id).await?;
        let limit = limit.clamp(1, MAX_PAGE);
        let mut q = delivery_row::Entity::find().filter(delivery_row::Column::WebhookId.eq(id));
        if let Some(after) = starting_after {
            let cursor = delivery_row::Entity::find_by_id(after)
                .filter(delivery_row::Column::WebhookId.eq(id))
                .one(&self.db)
                .await?
                .ok_or(WebhookError::DeliveryNotFound)?;
            q =
                q.filter(Condition::any().add(delivery_row::Column::CreatedAt.lt(cursor.created_at)).add(
                    Condition::all().add(delivery_row::Column::CreatedAt.eq(cursor.created_at)).add(delivery_row::Column::Id.lt(after)),
                ));
        }
        let rows =
            q.order_by_desc(delivery_row::Column::CreatedAt).order_by_desc(delivery_row::Column::Id).limit(limit + 1).all(&self.db).await?;
        let (rows, next) = crate::page::split(rows, limit, |d| d.id.clone());
        Ok((rows.into_iter().map(DeliveryView::from).collect(), next))
    }

    /// Queues the delivery again, due now, with a fresh round of retries (same delivery
    /// id, same payload). An attempt in flight right now is not interrupted, but loses
    /// its lease: its outcome is not recorded, and the redelivery stands.
    pub async fn redeliver(&self, scope: &Scope, id: &str, delivery_id: &str, now_ms: i64) -> Result<DeliveryView, WebhookError> {
        self.row(scope, id).await?;
        let updated = delivery_row::Entity::update_many()
            .col_expr(delivery_row::Column::State, Expr::value(delivery::PENDING))
            .col_expr(delivery_row::Column::RoundAttempts, Expr::value(0))
            .col_expr(delivery_row::Column::NextAttemptAt, Expr::value(now_ms))
            .col_expr(delivery_row::Column::LeaseOwner, Expr::value(Option::<String>::None))
            .col_expr(delivery_row::Column::LeaseUntil, Expr::value(Option::<i64>::None))
            .filter(delivery_row::Column::Id.eq(delivery_id))
            .filter(delivery_row::Column::WebhookId.eq(id))
            .exec(&self.db)
            .await?
            .rows_affected;
        if updated == 0 {
            return Err(WebhookError::DeliveryNotFound);
        }
        let row = delivery_row::Entity::find_by_id(delivery_id).one(&self.db).await?.ok_or(WebhookError::DeliveryNotFound)?;
        Ok(row.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_https_with_a_host_and_http_only_to_loopback_where_allowed() {
        for ok in [
            "https://hooks.example.com/leadlex",
            "https://example.com:8443/a?b=c#d",
            "https://203.0.113.5/x",
            "https://localhost",
            " https://example.com/x\n",
        ] {
            assert!(parse_url(ok, false).is_ok(), "{ok}");
        }
        for bad in [
            "http://example.com/x",
            "ftp://example.com/",
            "https://",
            "https://user:pw@example.com/",
            "https://999.1.1.1/",
            "https://example.com:99999/",
            "https://xn--a.com/",
            "https://example.com /x",
        ] {
            assert!(parse_url(bad, false).is_err(), "{bad}");
            assert!(parse_url(bad, true).is_err(), "{bad}");
        }
        assert!(parse_url("http://127.0.0.1:8080/hook", false).is_err());
        assert!(parse_url("http://127.0.0.1:8080/hook", true).is_ok());
        assert!(parse_url("http://localhost:8080/hook", true).is_ok());
        assert!(parse_url("http://example.com/hook", true).is_err());
    }

    #[test]
    fn every_string_the_pattern_generates_is_a_url_with_a_host() {
        use rand::{Rng, SeedableRng};
        let body = URL_PATTERN.strip_prefix('^').and_then(|p| p.strip_suffix('$')).unwrap();
        let generator = rand_regex::Regex::compile(body, 12).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(20261203);
        for _ in 0..2_000 {
            let s: String = rng.sample(&generator);
            let url = parse_url(&s, false).unwrap_or_else(|e| panic!("{s:?}: {e:?}"));
            assert!(url.host_str().is_some(), "{s:?}");
        }
    }

    #[test]
    fn a_secret_never_prints_and_is_whsec_then_43_characters() {
        let s = SigningSecret::generate();
        assert!(s.0.starts_with("whsec_") && s.0.len() == 6 + 43, "{}", s.0.len());
        assert!(!format!("{s:?}").contains(&s.0));
    }

    #[test]
    fn event_names_round_trip() {
        for e in Event::SUBSCRIBABLE.into_iter().chain([Event::Ping]) {
            assert_eq!(Event::parse(e.as_str()), Some(e));
        }
        assert_eq!(Event::parse("credits"), None);
    }
}
