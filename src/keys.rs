//! API keys as a workspace manages them: create (optionally idempotent), list, revoke.
//! Knows nothing of HTTP; the CLI and `api/keys.rs` both call it.
//!
//! Invariants:
//! - the plaintext of a key exists only in the [`CreatedKey`] returned to its creator;
//!   the database holds its SHA-256 and a display prefix, and an idempotent creation's
//!   stored answer (which a retry must get back, secret included) is sealed
//!   ([`crate::seal`]) and bound to its idempotency record;
//! - a key of another workspace behaves exactly as a key that does not exist;
//! - a workspace never loses its last active live key holding `admin:api_keys` through
//!   the API (revocations are serialised per workspace, so two concurrent
//!   revocations cannot both pass the check);
//! - every function takes the caller's [`Scope`]: a live scope (a live key, an operator)
//!   manages the workspace's keys of both modes; a test scope manages test-mode keys
//!   only: it cannot create a live key, and live keys are invisible to it (listing skips
//!   them, revoking one is `NotFound`);
//! - a key created by a key holds a subset of its creator's permissions (no escalation);
//! - every rule of a creation is checked before its `Idempotency-Key` is looked at, so a
//!   stored answer (a secret) is replayed only to a caller who may make the request now;
//! - revoking a key stops its work: its queued and running jobs are cancelled
//!   (`api_key_revoked`) in the revocation's transaction, so nothing is charged in its
//!   name once the revocation commits;
//! - a revoked key is refused within the known-key cache's TTL on every replica
//!   ([`crate::hot`], 1 s; the revoking replica drops it from its cache at once, but a
//!   lookup that read the row just before the revocation may cache it again).

use std::collections::BTreeSet;

use sea_orm::{
    sea_query::{Expr, Func},
    ActiveValue::Set,
    ColumnTrait, Condition, ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use entity::{api_key, workspace};

use crate::auth::{self, KeyMode, Permission, RateLimitTier};
use crate::hex::hex;
use crate::idempotency::{self, Begun, IdempotencyError, Idempotent};
use crate::jobs::CancelReason;
use crate::outbox::{self, Event};
use crate::ratelimit::Plan;
use crate::scope::Scope;
use crate::seal::Sealer;
use crate::validation::FieldError;

/// What a new key should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKeySpec {
    pub name: String,
    pub description: Option<String>,
    pub permissions: BTreeSet<Permission>,
    pub tier: RateLimitTier,
    /// Epoch milliseconds; must be in the future.
    pub expires_at: Option<i64>,
    pub mode: KeyMode,
}

impl NewKeySpec {
    /// A spec from text, as an operator types it (the command line): permission and
    /// tier names, an RFC 3339 expiry. The API parses the same values through its typed
    /// schema; both then go through [`create`]'s checks.
    pub fn from_text(
        name: &str,
        description: Option<&str>,
        permissions: &[String],
        tier: &str,
        expires_at: Option<&str>,
        mode: KeyMode,
    ) -> Result<Self, Vec<FieldError>> {
        let mut problems = Vec::new();
        let mut parsed = BTreeSet::new();
        for p in permissions {
            match Permission::parse(p) {
                Some(p) => {
                    parsed.insert(p);
                }
                None => {
                    let known = Permission::ALL.map(|p| p.as_str()).join(", ");
                    problems.push(FieldError::new("permissions", format!("{p:?} is not a permission (known: {known})")));
                }
            }
        }
        let tier = RateLimitTier::parse(tier).unwrap_or_else(|| {
            let known = RateLimitTier::ALL.map(|t| t.as_str()).join(", ");
            problems.push(FieldError::new("rate_limit_tier", format!("{tier:?} is not a tier (known: {known})")));
            RateLimitTier::default()
        });
        let expires_at = expires_at.and_then(|text| match chrono::DateTime::parse_from_rfc3339(text) {
            Ok(at) => Some(at.timestamp_millis()),
            Err(_) => {
                problems.push(FieldError::new("expires_at", format!("{text:?} is not an RFC 3339 time")));
                None
            }
        });
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self { name: name.to_string(), description: description.map(str::to_string), permissions: parsed, tier, expires_at, mode })
    }
}

/// Who creates a key over the API: the key's id and what it may give.
#[derive(Debug, Clone, Copy)]
pub struct Creator<'a> {
    pub key_id: &'a str,
    pub permissions: &'a BTreeSet<Permission>,
}

pub const NAME_MAX: usize = 120;
pub const DESCRIPTION_MAX: usize = 500;

/// A key just created: the only value that ever holds its plaintext.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CreatedKey {
    pub id: String,
    pub key: String,
    pub prefix: String,
    pub name: String,
    pub description: Option<String>,
    pub permissions: Vec<String>,
    pub rate_limit_tier: String,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    /// `live` or `test` (answers sealed before test mode existed are live ones).
    #[serde(default = "live")]
    pub mode: String,
}

fn live() -> String {
    KeyMode::Live.as_str().to_string()
}

impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKey").field("id", &self.id).field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

/// A key as listed: never its secret or its hash. Times are epoch milliseconds,
/// serialised (for the CLI) as RFC 3339.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub prefix: String,
    pub permissions: Vec<String>,
    pub rate_limit_tier: String,
    /// `live` or `test`.
    pub mode: String,
    /// The key that created it over the API; `None` when an operator did.
    pub created_by: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: i64,
    #[serde(serialize_with = "rfc3339_opt")]
    pub last_used_at: Option<i64>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub expires_at: Option<i64>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub revoked_at: Option<i64>,
}

fn rfc3339<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    rfc3339_opt(&Some(*ms), s)
}

fn rfc3339_opt<S: serde::Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    let text = ms.and_then(chrono::DateTime::from_timestamp_millis).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    serde::Serialize::serialize(&text, s)
}

impl From<api_key::Model> for KeyView {
    fn from(k: api_key::Model) -> Self {
        Self {
            permissions: k.permissions.split_whitespace().map(str::to_string).collect(),
            id: k.id,
            name: k.name,
            description: k.description,
            prefix: k.prefix,
            rate_limit_tier: k.rate_limit_tier,
            mode: k.mode,
            created_by: k.created_by,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// Which keys to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// From 1.
    pub page: u64,
    pub per_page: u64,
    pub include_revoked: bool,
    /// A part of the name, or the start of the prefix (case-insensitive).
    pub search: Option<String>,
    /// Only keys of this mode (`None`: every mode).
    pub mode: Option<KeyMode>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no such workspace")]
    NoSuchWorkspace,
    #[error("no such API key")]
    NotFound,
    #[error("this is the workspace's last active key with the `admin:api_keys` permission; create another one before revoking it")]
    LastAdminKey,
    #[error("a test-mode key can create test-mode keys only")]
    LiveKeyFromTestKey,
    #[error("a key can give a new key only permissions it holds itself; it lacks `{0}`")]
    PermissionsExceedCreator(Permission),
    #[error("the workspace's {plan} plan does not allow `{tier}` keys")]
    TierNotAllowed { tier: &'static str, plan: &'static str },
    /// Well-formed but impossible as asked (an expiry in the past).
    #[error("{}", .0.message)]
    Unprocessable(FieldError),
    #[error(transparent)]
    Idempotency(IdempotencyError),
    #[error("a stored answer could not be read: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Db(#[from] DbErr),
}

impl From<IdempotencyError> for KeyError {
    fn from(err: IdempotencyError) -> Self {
        match err {
            IdempotencyError::Db(db) => Self::Db(db),
            other => Self::Idempotency(other),
        }
    }
}

fn new_id() -> String {
    format!("key_{}", uuid::Uuid::new_v4().simple())
}

fn plan_of(ws: &workspace::Model) -> Plan {
    Plan::parse(&ws.plan).unwrap_or(Plan::Starter)
}

/// Checks every rule of a new key. Over the API the schema has refused a bad name,
/// description or permission list already (400); the CLI has no schema. What no schema
/// can say: the expiry is in the future and the plan allows the tier.
fn check(scope: &Scope, spec: &NewKeySpec, creator: Option<Creator<'_>>, plan: Plan, now_ms: i64) -> Result<(), KeyError> {
    if scope.is_test() && spec.mode == KeyMode::Live {
        return Err(KeyError::LiveKeyFromTestKey);
    }
    if let Some(lacking) = creator.and_then(|c| spec.permissions.iter().find(|p| !c.permissions.contains(p))) {
        return Err(KeyError::PermissionsExceedCreator(*lacking));
    }
    let problem = |field, message: String| Err(KeyError::Unprocessable(FieldError::new(field, message)));
    if spec.name.is_empty() || spec.name.chars().count() > NAME_MAX {
        return problem("name", format!("must be 1 to {NAME_MAX} characters"));
    }
    if spec.description.as_ref().is_some_and(|d| d.chars().count() > DESCRIPTION_MAX) {
        return problem("description", format!("must be at most {DESCRIPTION_MAX} characters"));
    }
    if spec.permissions.is_empty() {
        return problem("permissions", "must name at least one permission".into());
    }
    if spec.expires_at.is_some_and(|at| at <= now_ms) {
        return Err(KeyError::Unprocessable(FieldError::new("expires_at", "must be in the future")));
    }
    if !spec.tier.allowed_on(plan) {
        return Err(KeyError::TierNotAllowed { tier: spec.tier.as_str(), plan: plan.as_str() });
    }
    Ok(())
}

/// Creates a key in `scope`'s workspace, by the key `created_by` (`None`: an operator),
/// with its `api_key.created` event.
pub async fn create(
    db: &DatabaseConnection,
    scope: &Scope,
    created_by: Option<Creator<'_>>,
    spec: &NewKeySpec,
    now_ms: i64,
) -> Result<CreatedKey, KeyError> {
    check_workspace(db, scope, created_by, spec, now_ms).await?;
    let txn = db.begin().await?;
    let created = insert(&txn, scope.workspace_id(), created_by.map(|c| c.key_id), spec, now_ms).await?;
    txn.commit().await?;
    Ok(created)
}

/// The workspace exists, its plan allows the key, the creator may create it (and the
/// expiry is in the future).
async fn check_workspace(
    db: &impl ConnectionTrait,
    scope: &Scope,
    created_by: Option<Creator<'_>>,
    spec: &NewKeySpec,
    now_ms: i64,
) -> Result<(), KeyError> {
    let ws = workspace::Entity::find_by_id(scope.workspace_id()).one(db).await?.ok_or(KeyError::NoSuchWorkspace)?;
    check(scope, spec, created_by, plan_of(&ws), now_ms)
}

/// Stores a new key (its hash) with its `api_key.created` event (`db`: a transaction)
/// and returns it with its plaintext.
async fn insert(
    db: &impl ConnectionTrait,
    workspace_id: &str,
    created_by: Option<&str>,
    spec: &NewKeySpec,
    now_ms: i64,
) -> Result<CreatedKey, KeyError> {
    let new = auth::generate_key(spec.mode);
    let id = new_id();
    let permissions: Vec<String> = spec.permissions.iter().map(|p| p.as_str().to_string()).collect();
    api_key::Entity::insert(api_key::ActiveModel {
        id: Set(id.clone()),
        workspace_id: Set(workspace_id.to_string()),
        name: Set(spec.name.clone()),
        prefix: Set(new.prefix.clone()),
        key_hash: Set(new.hash.clone()),
        permissions: Set(permissions.join(" ")),
        expires_at: Set(spec.expires_at),
        revoked_at: Set(None),
        created_at: Set(now_ms),
        description: Set(spec.description.clone()),
        rate_limit_tier: Set(spec.tier.as_str().to_string()),
        created_by: Set(created_by.map(str::to_string)),
        last_used_at: Set(None),
        mode: Set(spec.mode.as_str().to_string()),
    })
    .exec_without_returning(db)
    .await?;
    let created = CreatedKey {
        id,
        key: new.plaintext,
        prefix: new.prefix,
        name: spec.name.clone(),
        description: spec.description.clone(),
        permissions,
        rate_limit_tier: spec.tier.as_str().to_string(),
        expires_at: spec.expires_at,
        created_at: now_ms,
        mode: spec.mode.as_str().to_string(),
    };
    let view = KeyView {
        id: created.id.clone(),
        name: created.name.clone(),
        description: created.description.clone(),
        prefix: created.prefix.clone(),
        permissions: created.permissions.clone(),
        rate_limit_tier: created.rate_limit_tier.clone(),
        mode: created.mode.clone(),
        created_by: created_by.map(str::to_string),
        created_at: now_ms,
        last_used_at: None,
        expires_at: spec.expires_at,
        revoked_at: None,
    };
    outbox::record(db, workspace_id, spec.mode, Event::ApiKeyCreated, &key_data(&view), now_ms).await?;
    Ok(created)
}

/// The fingerprint of a creation request: what a retry must repeat exactly.
pub fn fingerprint(spec: &NewKeySpec) -> String {
    let mut canonical = serde_json::json!({
        "name": spec.name,
        "description": spec.description,
        "permissions": spec.permissions.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        "rate_limit_tier": spec.tier.as_str(),
        "expires_at": spec.expires_at,
    });
    // Only a test key's: a live key's fingerprint is what it was before modes existed,
    // so that a retry across the upgrade still replays.
    if spec.mode == KeyMode::Test {
        canonical["mode"] = spec.mode.as_str().into();
    }
    hex(&Sha256::digest(format!("create API key\n{canonical}").as_bytes()))
}

/// What binds a sealed answer to its idempotency record.
fn seal_context(workspace_id: &str, idempotency_key: &str) -> Vec<u8> {
    format!("api-key-created\n{workspace_id}\n{idempotency_key}").into_bytes()
}

/// Creates a key once per `Idempotency-Key`: the first call creates it and stores its
/// answer, sealed, in the same transaction; a retry with the same request gets that
/// answer back (`true`: replayed), secret included, once the retry's caller passed every
/// check a creation passes now.
pub async fn create_idempotent(
    db: &DatabaseConnection,
    sealer: &Sealer,
    scope: &Scope,
    created_by: Option<Creator<'_>>,
    spec: &NewKeySpec,
    idem: Idempotent<'_>,
    now_ms: i64,
) -> Result<(CreatedKey, bool), KeyError> {
    // Before the record is read: a replay carries a secret. (Checked outside the
    // transaction, so that its first statement is a write: a SQLite transaction that
    // read first cannot wait for the writer's lock.)
    check_workspace(db, scope, created_by, spec, now_ms).await?;
    let stored_key = scope.idempotency_key(idem.key);
    let context = seal_context(scope.workspace_id(), &stored_key);
    let token = match idempotency::begin(db, scope, idem, &fingerprint(spec), None, now_ms).await? {
        Begun::Fresh(token) => token,
        Begun::Replay { answer, .. } => {
            let sealed = String::from_utf8(answer).map_err(|e| KeyError::Corrupt(e.to_string()))?;
            let plain = sealer.open(&sealed, &context).map_err(|e| KeyError::Corrupt(e.to_string()))?;
            let created = serde_json::from_slice(&plain).map_err(|e| KeyError::Corrupt(e.to_string()))?;
            return Ok((created, true));
        }
        Begun::Erased => return Err(KeyError::Corrupt("a key creation's record says erased".into())),
    };
    let result: Result<CreatedKey, KeyError> = async {
        let txn = db.begin().await?;
        let created = insert(&txn, scope.workspace_id(), created_by.map(|c| c.key_id), spec, now_ms).await?;
        let sealed = sealer.seal(&serde_json::to_vec(&created).expect("serialises"), &context);
        if !idempotency::complete(&txn, &token, 201, sealed.into_bytes(), None).await? {
            // Our lease ran out and a retry took the claim over: it creates the key.
            txn.rollback().await?;
            return Err(IdempotencyError::lost().into());
        }
        txn.commit().await?;
        Ok(created)
    }
    .await;
    if result.is_err() {
        idempotency::release_quietly(db, &token).await;
    }
    result.map(|created| (created, false))
}

/// The modes of key a scope sees: every mode from a live scope, test keys only from a
/// test scope.
fn visible(scope: &Scope) -> Condition {
    match scope.mode() {
        KeyMode::Live => Condition::all(),
        KeyMode::Test => Condition::all().add(api_key::Column::Mode.eq(KeyMode::Test.as_str())),
    }
}

/// A page of the keys `scope` sees, newest first, and how many match in all.
pub async fn list(db: &DatabaseConnection, scope: &Scope, q: &ListQuery) -> Result<(Vec<KeyView>, u64), KeyError> {
    let filter = list_filter(scope, q);
    let total = api_key::Entity::find().filter(filter.clone()).count(db).await?;
    let keys = list_query(scope, q).all(db).await?;
    Ok((keys.into_iter().map(KeyView::from).collect(), total))
}

/// The page query of [`list`]; public so that a test can ask each backend for its plan.
pub fn list_query(scope: &Scope, q: &ListQuery) -> sea_orm::Select<api_key::Entity> {
    api_key::Entity::find()
        .filter(list_filter(scope, q))
        .order_by_desc(api_key::Column::CreatedAt)
        .order_by_desc(api_key::Column::Id)
        .offset(q.page.saturating_sub(1).saturating_mul(q.per_page))
        .limit(q.per_page)
}

fn list_filter(scope: &Scope, q: &ListQuery) -> Condition {
    let mut filter = Condition::all().add(api_key::Column::WorkspaceId.eq(scope.workspace_id())).add(visible(scope));
    if !q.include_revoked {
        filter = filter.add(api_key::Column::RevokedAt.is_null());
    }
    if let Some(mode) = q.mode {
        filter = filter.add(api_key::Column::Mode.eq(mode.as_str()));
    }
    // ASCII case folding only: SQLite's `lower()` folds nothing else, PostgreSQL's more.
    if let Some(search) = q.search.as_deref().map(str::to_ascii_lowercase).filter(|s| !s.is_empty()) {
        let escaped = search.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        let lower = |col: api_key::Column| Expr::expr(Func::lower(Expr::col(col)));
        filter = filter.add(
            Condition::any()
                .add(lower(api_key::Column::Name).like(sea_orm::sea_query::LikeExpr::new(format!("%{escaped}%")).escape('\\')))
                .add(lower(api_key::Column::Prefix).like(sea_orm::sea_query::LikeExpr::new(format!("{escaped}%")).escape('\\'))),
        );
    }
    filter
}

fn holds_admin(permissions: &str) -> bool {
    permissions.split_whitespace().any(|p| p == Permission::AdminApiKeys.as_str())
}

/// Revokes the key `id` that `scope` sees (again: no change), and cancels its queued and
/// running jobs (their results kept for `job_retention`). Refuses to revoke the last
/// active live key that can manage keys (a test-mode one cannot manage live keys).
pub async fn revoke(
    db: &DatabaseConnection,
    key_cache: &auth::KeyCache,
    scope: &Scope,
    id: &str,
    job_retention: std::time::Duration,
    now_ms: i64,
) -> Result<(), KeyError> {
    let workspace_id = scope.workspace_id();
    let txn = db.begin().await?;
    // Serialise revocations per workspace: PostgreSQL locks the workspace row; SQLite has
    // one writer, taken by the update below before the count.
    if txn.get_database_backend() == DatabaseBackend::Postgres {
        workspace::Entity::find_by_id(workspace_id).lock_exclusive().one(&txn).await?;
    }
    // The write comes first: on SQLite it takes the writer's lock, so that the count
    // below sees every other revocation.
    let revoked = api_key::Entity::update_many()
        .col_expr(api_key::Column::RevokedAt, Expr::value(now_ms))
        .filter(api_key::Column::Id.eq(id))
        .filter(api_key::Column::WorkspaceId.eq(workspace_id))
        .filter(api_key::Column::RevokedAt.is_null())
        .filter(visible(scope))
        .exec(&txn)
        .await?
        .rows_affected;
    let key = api_key::Entity::find_by_id(id)
        .filter(api_key::Column::WorkspaceId.eq(workspace_id))
        .filter(visible(scope))
        .one(&txn)
        .await?
        .ok_or(KeyError::NotFound)?;
    if revoked == 0 {
        return Ok(()); // revoked before
    }
    // A test-mode admin key manages test-mode keys only: only live ones count.
    if holds_admin(&key.permissions) && key.mode == KeyMode::Live.as_str() {
        let admins_left = api_key::Entity::find()
            .filter(api_key::Column::WorkspaceId.eq(workspace_id))
            .filter(api_key::Column::RevokedAt.is_null())
            .filter(api_key::Column::Mode.eq(KeyMode::Live.as_str()))
            .filter(Condition::any().add(api_key::Column::ExpiresAt.is_null()).add(api_key::Column::ExpiresAt.gt(now_ms)))
            .all(&txn)
            .await?
            .iter()
            .filter(|k| holds_admin(&k.permissions))
            .count();
        if admins_left == 0 {
            txn.rollback().await?;
            return Err(KeyError::LastAdminKey);
        }
    }
    let key_mode = KeyMode::parse(&key.mode).unwrap_or(KeyMode::Test);
    outbox::record(&txn, workspace_id, key_mode, Event::ApiKeyRevoked, &key_data(&KeyView::from(key.clone())), now_ms).await?;
    let key_scope = Scope::new(workspace_id, key_mode);
    crate::jobs::cancel_for_key(&txn, &key_scope, id, CancelReason::ApiKeyRevoked, job_retention, now_ms).await.map_err(|e| match e {
        crate::jobs::JobError::Db(db) => KeyError::Db(db),
        other => KeyError::Corrupt(other.to_string()),
    })?;
    txn.commit().await?;
    if let Some(digest) = decode_digest(&key.key_hash) {
        key_cache.forget(&digest);
    }
    Ok(())
}

fn decode_digest(hash_hex: &str) -> Option<auth::KeyDigest> {
    let bytes: Vec<u8> =
        (0..hash_hex.len()).step_by(2).map(|i| u8::from_str_radix(hash_hex.get(i..i + 2)?, 16).ok()).collect::<Option<_>>()?;
    Some(auth::KeyDigest(bytes.try_into().ok()?))
}

/// A key as `GET /v1/api-keys` lists it (never its secret).
#[derive(Serialize)]
struct KeyData<'a> {
    id: &'a str,
    name: &'a str,
    description: Option<&'a str>,
    prefix: &'a str,
    permissions: &'a [String],
    rate_limit_tier: &'a str,
    mode: &'a str,
    created_by: Option<&'a str>,
    created_at: String,
    last_used_at: Option<String>,
    expires_at: Option<String>,
    revoked_at: Option<String>,
}

/// The `data` of an `api_key.*` event.
pub fn key_data(k: &KeyView) -> String {
    serde_json::to_string(&KeyData {
        id: &k.id,
        name: &k.name,
        description: k.description.as_deref(),
        prefix: &k.prefix,
        permissions: &k.permissions,
        rate_limit_tier: &k.rate_limit_tier,
        mode: &k.mode,
        created_by: k.created_by.as_deref(),
        created_at: outbox::rfc3339(k.created_at),
        last_used_at: outbox::rfc3339_opt(k.last_used_at),
        expires_at: outbox::rfc3339_opt(k.expires_at),
        revoked_at: outbox::rfc3339_opt(k.revoked_at),
    })
    .expect("a key serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> NewKeySpec {
        NewKeySpec {
            name: "ci".into(),
            description: None,
            permissions: BTreeSet::from([Permission::WriteEnrich]),
            tier: RateLimitTier::Standard,
            expires_at: None,
            mode: KeyMode::Live,
        }
    }

    #[test]
    fn the_fingerprint_covers_every_field() {
        let base = fingerprint(&spec());
        assert_eq!(base, fingerprint(&spec()));
        let changes: [fn(&mut NewKeySpec); 6] = [
            |s| s.mode = KeyMode::Test,
            |s| s.name = "other".into(),
            |s| s.description = Some("d".into()),
            |s| {
                s.permissions.insert(Permission::ReadUsage);
            },
            |s| s.tier = RateLimitTier::High,
            |s| s.expires_at = Some(1),
        ];
        for change in changes {
            let mut s = spec();
            change(&mut s);
            assert_ne!(fingerprint(&s), base);
        }
    }

    #[test]
    fn what_the_schema_cannot_say_is_checked() {
        let mut s = spec();
        s.expires_at = Some(1_000);
        let (live, test) = (Scope::live("ws"), Scope::test("ws"));
        assert!(matches!(check(&live, &s, None, Plan::Pro, 2_000), Err(KeyError::Unprocessable(_))));
        s.expires_at = Some(3_000);
        assert!(check(&live, &s, None, Plan::Pro, 2_000).is_ok());
        let all = BTreeSet::from(Permission::ALL);
        let tester = Creator { key_id: "key_t", permissions: &all };
        assert!(matches!(check(&test, &s, Some(tester), Plan::Pro, 2_000), Err(KeyError::LiveKeyFromTestKey)));
        s.mode = KeyMode::Test;
        assert!(check(&test, &s, Some(tester), Plan::Pro, 2_000).is_ok());
        let keys_only = BTreeSet::from([Permission::AdminApiKeys]);
        let admin = Creator { key_id: "key_a", permissions: &keys_only };
        assert!(matches!(
            check(&live, &s, Some(admin), Plan::Pro, 2_000),
            Err(KeyError::PermissionsExceedCreator(Permission::WriteEnrich))
        ));
        s.permissions = keys_only.clone();
        assert!(check(&live, &s, Some(admin), Plan::Pro, 2_000).is_ok());
        s.tier = RateLimitTier::Unmetered;
        assert!(matches!(check(&live, &s, None, Plan::Pro, 2_000), Err(KeyError::TierNotAllowed { .. })));
    }

    #[test]
    fn a_stored_hash_decodes_to_its_digest() {
        let new = auth::generate_key(KeyMode::Live);
        let digest = decode_digest(&new.hash).unwrap();
        assert_eq!(digest.0.as_slice(), Sha256::digest(new.plaintext.as_bytes()).as_slice());
        assert!(decode_digest("zz").is_none());
    }
}
