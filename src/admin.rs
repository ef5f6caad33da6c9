//! Operator actions behind the CLI: workspaces, keys, credit grants. Plaintext keys leave
//! this module only in the value returned by [`create_key`].

use std::collections::BTreeSet;

use anyhow::{bail, Context};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use serde::Serialize;

use entity::{api_key, workspace};

use crate::auth::{Permission, RateLimitTier};
use crate::credits;
use crate::keys::{self, NewKeySpec};
use crate::ratelimit::Plan;
use crate::settler::Settler;

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

fn rfc3339(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

#[derive(Debug, Serialize)]
pub struct WorkspaceCreated {
    pub id: String,
    pub name: String,
    pub plan: &'static str,
    pub balance: i64,
}

/// Creates a workspace; its initial `credits` are granted through `settler` (the one
/// writer of balances), with their ledger row.
pub async fn create_workspace(
    db: &DatabaseConnection,
    settler: &Settler,
    name: &str,
    plan: Plan,
    credits: i64,
    per_minute: Option<i64>,
    per_day: Option<i64>,
) -> anyhow::Result<WorkspaceCreated> {
    if credits < 0 {
        bail!("--credits must not be negative");
    }
    if per_minute.is_some_and(|n| n < 1) || per_day.is_some_and(|n| n < 1) {
        bail!("rate limit overrides must be at least 1");
    }
    let id = new_id("ws");
    workspace::ActiveModel {
        id: Set(id.clone()),
        name: Set(name.to_string()),
        plan: Set(plan.as_str().to_string()),
        rate_limit_per_minute: Set(per_minute),
        rate_limit_per_day: Set(per_day),
        credit_balance: Set(0),
        created_at: Set(crate::now_ms()),
    }
    .insert(db)
    .await
    .context("creating the workspace")?;
    let balance = if credits > 0 { credits::grant(settler, &id, credits).await? } else { 0 };
    Ok(WorkspaceCreated { id, name: name.to_string(), plan: plan.as_str(), balance })
}

/// Changes a workspace's plan or its rate-limit overrides.
pub async fn update_workspace(
    db: &DatabaseConnection,
    id: &str,
    plan: Option<Plan>,
    per_minute: Option<i64>,
    per_day: Option<i64>,
) -> anyhow::Result<()> {
    let ws = workspace::Entity::find_by_id(id).one(db).await?.context("no such workspace")?;
    let mut ws: workspace::ActiveModel = ws.into();
    if let Some(plan) = plan {
        ws.plan = Set(plan.as_str().to_string());
    }
    if let Some(n) = per_minute {
        ws.rate_limit_per_minute = Set((n > 0).then_some(n));
    }
    if let Some(n) = per_day {
        ws.rate_limit_per_day = Set((n > 0).then_some(n));
    }
    ws.update(db).await?;
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct KeyCreated {
    pub id: String,
    /// The plaintext key: shown this once, never stored.
    pub key: String,
    pub prefix: String,
    pub name: String,
    pub description: Option<String>,
    pub permissions: Vec<String>,
    pub rate_limit_tier: String,
    /// `live` or `test`.
    pub mode: String,
    pub expires_at: Option<String>,
}

/// Creates a standard-tier key (what most callers want).
pub async fn create_key(
    db: &DatabaseConnection,
    workspace_id: &str,
    name: &str,
    permissions: &BTreeSet<Permission>,
    expires_at_ms: Option<i64>,
) -> anyhow::Result<KeyCreated> {
    let spec = NewKeySpec {
        name: name.to_string(),
        description: None,
        permissions: permissions.clone(),
        tier: RateLimitTier::Standard,
        expires_at: expires_at_ms,
        mode: crate::auth::KeyMode::Live,
    };
    create_key_with(db, workspace_id, &spec).await
}

/// Creates a key as an operator (no creating key): the rules of `POST /v1/api-keys`.
pub async fn create_key_with(db: &DatabaseConnection, workspace_id: &str, spec: &NewKeySpec) -> anyhow::Result<KeyCreated> {
    let created =
        keys::create(db, &crate::scope::Scope::live(workspace_id), None, spec, crate::now_ms()).await.map_err(|err| match err {
            keys::KeyError::NoSuchWorkspace => anyhow::anyhow!("no such workspace: {workspace_id}"),
            other => anyhow::Error::new(other).context("creating the key"),
        })?;
    Ok(KeyCreated {
        expires_at: created.expires_at.and_then(rfc3339),
        id: created.id,
        key: created.key,
        prefix: created.prefix,
        name: created.name,
        description: created.description,
        permissions: created.permissions,
        rate_limit_tier: created.rate_limit_tier,
        mode: created.mode,
    })
}

/// Revokes a key as an operator, by the rules of `DELETE /v1/api-keys/{id}`
/// ([`keys::revoke`]: its `api_key.revoked` event, its jobs cancelled and their results
/// kept for `job_retention`, the workspace's last live admin key kept); it is refused
/// from the next request on.
pub async fn revoke_key(db: &DatabaseConnection, id: &str, job_retention: std::time::Duration) -> anyhow::Result<()> {
    let key = api_key::Entity::find_by_id(id).one(db).await?.context("no such key")?;
    // An operator acts on the workspace's live scope, which sees keys of both modes.
    let scope = crate::scope::Scope::live(key.workspace_id);
    // An operator's process holds no key cache worth keeping; servers see it within 1 s.
    let key_cache = crate::auth::KeyCache::new(&Default::default(), &crate::metrics::Metrics::new());
    keys::revoke(db, &key_cache, &scope, id, job_retention, crate::now_ms()).await.context("revoking the key")
}

/// Every key of a workspace, revoked ones included, oldest first (times in RFC 3339 when
/// serialised).
pub async fn list_keys(db: &DatabaseConnection, workspace_id: &str) -> anyhow::Result<Vec<keys::KeyView>> {
    // Through the domain's listing ([`keys::list`], newest first, a page at a time), in
    // the live scope, which sees keys of both modes.
    let scope = crate::scope::Scope::live(workspace_id);
    let mut all = Vec::new();
    for page in 1.. {
        let q = keys::ListQuery { page, per_page: 100, include_revoked: true, search: None, mode: None };
        let (found, _) = keys::list(db, &scope, &q).await.context("listing the keys")?;
        let last = found.len() < 100;
        all.extend(found);
        if last {
            break;
        }
    }
    all.reverse();
    Ok(all)
}

/// The demo workspace of `serve --demo`: created once, with credits and a fresh key
/// holding every permission on
/// every start (the plaintext of an older key cannot be shown again).
pub async fn demo(db: &DatabaseConnection, settler: &Settler) -> anyhow::Result<(String, KeyCreated)> {
    const NAME: &str = "demo";
    let existing = workspace::Entity::find().filter(workspace::Column::Name.eq(NAME)).one(db).await?;
    let ws_id = match existing {
        Some(ws) => {
            if ws.credit_balance < 100 {
                credits::grant(settler, &ws.id, 1_000).await?;
            }
            ws.id
        }
        None => create_workspace(db, settler, NAME, Plan::Pro, 1_000, None, None).await?.id,
    };
    // Every permission: a newcomer exploring Swagger UI can try every operation.
    let key = create_key(db, &ws_id, "demo", &BTreeSet::from(Permission::ALL), None).await?;
    Ok((ws_id, key))
}
