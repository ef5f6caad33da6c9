//! API keys, their modes and permissions.
//!
//! A key is `wbk_` (live) or `wbk_test_` (test mode, see [`crate::test_mode`]) + 43
//! base62 characters from the OS CSPRNG (~256 bits). Only its
//! SHA-256 hash (looked up by index, then compared in constant time) and a short display
//! prefix are stored; the plaintext is shown once at creation and never logged.
//! A malformed key is refused before any database access; known and unknown keys are
//! remembered apart in the key caches ([`KeyCache`]): a flood of bad keys costs one
//! lookup each and never evicts a good key; a revocation takes effect on every replica
//! within the known-key TTL (1 s by default; a key's expiry is checked on every request).

use std::{collections::BTreeSet, fmt, sync::Arc};

use rand::{distributions::Alphanumeric, rngs::OsRng, Rng};
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use entity::{api_key, workspace};

use crate::config::HotCachesSettings;
use crate::hex::hex;
use crate::hot::TtlCache;
use crate::key_activity::KeyActivity;
use crate::metrics::Metrics;
use crate::ratelimit::{Limits, Plan};

pub const KEY_PREFIX: &str = "wbk_";
/// What a test-mode key starts with (base62 has no `_`, so no live key does).
pub const TEST_KEY_PREFIX: &str = "wbk_test_";
const KEY_RANDOM_LEN: usize = 43;
/// How many random characters the display prefix shows after `wbk_` or `wbk_test_`.
const DISPLAY_RANDOM_LEN: usize = 8;

pub use crate::scope::KeyMode;
use crate::scope::Scope;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// `write:enrich`: call `POST /v1/email/enrich` (and spend credits).
    WriteEnrich,
    /// `read:usage`: read balances and usage (reserved for the usage API).
    ReadUsage,
    /// `admin:api_keys`: create, list and revoke the workspace's API keys.
    AdminApiKeys,
    /// `admin:privacy`: manage the workspace's suppression (do-not-enrich) list.
    AdminPrivacy,
    /// `admin:webhooks`: manage the workspace's webhooks and see their deliveries.
    AdminWebhooks,
}

impl Permission {
    /// The catalogue, in the order the docs list it.
    pub const ALL: [Permission; 5] =
        [Permission::WriteEnrich, Permission::ReadUsage, Permission::AdminApiKeys, Permission::AdminPrivacy, Permission::AdminWebhooks];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::WriteEnrich => "write:enrich",
            Permission::ReadUsage => "read:usage",
            Permission::AdminApiKeys => "admin:api_keys",
            Permission::AdminPrivacy => "admin:privacy",
            Permission::AdminWebhooks => "admin:webhooks",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a key is rate-limited, against its workspace's plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RateLimitTier {
    /// The workspace's plan limits, shared by all its standard keys (per minute and per
    /// day).
    #[default]
    Standard,
    /// Limits of the key's own, apart from the workspace's standard keys: five times the
    /// plan's per-minute limit, and the plan's daily quota. Not on the starter plan.
    High,
    /// No per-minute limit and no daily quota (lookups still cost credits). Only on the
    /// org and unmetered plans.
    Unmetered,
}

impl RateLimitTier {
    pub const ALL: [RateLimitTier; 3] = [RateLimitTier::Standard, RateLimitTier::High, RateLimitTier::Unmetered];

    pub fn as_str(self) -> &'static str {
        match self {
            RateLimitTier::Standard => "standard",
            RateLimitTier::High => "high",
            RateLimitTier::Unmetered => "unmetered",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Whether a workspace on `plan` may create keys of this tier.
    pub fn allowed_on(self, plan: Plan) -> bool {
        match self {
            RateLimitTier::Standard => true,
            RateLimitTier::High => plan != Plan::Starter,
            RateLimitTier::Unmetered => matches!(plan, Plan::Org | Plan::Unmetered),
        }
    }

    /// The limits of a key of this tier, given its workspace's (plan and overrides).
    pub fn limits(self, workspace: Limits) -> Limits {
        match self {
            RateLimitTier::Standard => workspace,
            RateLimitTier::High => Limits { per_minute: workspace.per_minute.map(|n| n.saturating_mul(5)), per_day: workspace.per_day },
            RateLimitTier::Unmetered => Limits { per_minute: None, per_day: None },
        }
    }
}

/// A freshly generated key: the plaintext exists only in this value.
pub struct NewKey {
    pub plaintext: String,
    pub hash: String,
    pub prefix: String,
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NewKey({}…)", self.prefix)
    }
}

/// What a key of `mode` starts with.
pub fn key_prefix(mode: KeyMode) -> &'static str {
    match mode {
        KeyMode::Live => KEY_PREFIX,
        KeyMode::Test => TEST_KEY_PREFIX,
    }
}

pub fn generate_key(mode: KeyMode) -> NewKey {
    let random: String = OsRng.sample_iter(&Alphanumeric).take(KEY_RANDOM_LEN).map(char::from).collect();
    let plaintext = format!("{}{random}", key_prefix(mode));
    let prefix = plaintext[..key_prefix(mode).len() + DISPLAY_RANDOM_LEN].to_string();
    NewKey { hash: hash_key(&plaintext), prefix, plaintext }
}

pub fn hash_key(plaintext: &str) -> String {
    hex(&Sha256::digest(plaintext.as_bytes()))
}

/// Shape check only: `wbk_` or `wbk_test_` followed by 40 to 100 base62 characters.
pub fn is_well_formed(token: &str) -> bool {
    let rest = token.strip_prefix(TEST_KEY_PREFIX).or_else(|| token.strip_prefix(KEY_PREFIX));
    rest.is_some_and(|rest| (40..=100).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// An authenticated caller.
#[derive(Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    /// Display prefix of the key (safe to log).
    pub key_prefix: String,
    /// Its workspace and mode (live or test: a test-mode key is answered by the sandbox
    /// and never charged): what every query it makes is limited to.
    pub scope: Scope,
    pub permissions: BTreeSet<Permission>,
    pub limits: Limits,
    /// The workspace's plan.
    pub plan: Plan,
    /// What the limits are counted against: the workspace for a standard key, the key
    /// itself for a high or unmetered one, and for a test-mode key.
    pub limit_scope: String,
    /// The workspace balance when the key was looked up (at most the key cache's TTL
    /// ago): a cheap pre-check only; the debit is the authority.
    pub balance_hint: i64,
    expires_at: Option<i64>,
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal").field("key", &self.key_prefix).field("scope", &self.scope).finish()
    }
}

impl Principal {
    pub fn workspace_id(&self) -> &str {
        self.scope.workspace_id()
    }

    pub fn mode(&self) -> KeyMode {
        self.scope.mode()
    }

    /// The one rate-limit rule: what `work` of this key counts against, and its limits.
    /// The key's [`Principal::limits`] under its `limit_scope`; except a test-mode key's
    /// requests that are not enrichment calls, which count apart against
    /// [`crate::test_mode::OTHER_LIMITS`], and a job's items, which count against the
    /// daily quota only (never the per-minute limit: a job is paced by its workers) and
    /// leave the last [`job_reserve`] units of the day to the key's own requests, so that
    /// its owner can always follow or cancel a job that spent the rest.
    pub fn limits_for(&self, work: Work) -> (std::borrow::Cow<'_, str>, Limits) {
        match work {
            Work::Request { enrichment: false } if self.mode() == KeyMode::Test => {
                (format!("{}/other", self.limit_scope).into(), crate::test_mode::OTHER_LIMITS)
            }
            Work::Request { .. } => (self.limit_scope.as_str().into(), self.limits),
            Work::JobItems => {
                let per_day = self.limits.per_day.map(|day| day - job_reserve(day));
                (self.limit_scope.as_str().into(), Limits { per_minute: None, per_day })
            }
        }
    }

    /// Whether this key may still act: not expired at `now_ms`. (A revoked key is not
    /// found at all.)
    pub fn is_current(&self, now_ms: i64) -> bool {
        self.expires_at.is_none_or(|at| at > now_ms)
    }

    pub fn require(&self, permission: Permission) -> Result<(), AuthError> {
        if self.permissions.contains(&permission) {
            Ok(())
        } else {
            Err(AuthError::MissingPermission(permission))
        }
    }
}

/// The units of a daily quota that job items leave to the key's own requests: 5 % of the
/// day, at least one (none for a quota of one).
pub fn job_reserve(per_day: u32) -> u32 {
    if per_day < 2 {
        return 0;
    }
    (per_day / 20).max(1)
}

/// What a key's work is, for its rate limits ([`Principal::limits_for`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// A request; `enrichment` for a single or bulk call or a job submission.
    Request { enrichment: bool },
    /// A chunk of a job's items, worked in the background.
    JobItems,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Missing, malformed, unknown, revoked or expired: callers are not told which.
    #[error("invalid API key")]
    InvalidKey,
    #[error("the key lacks the `{0}` permission")]
    MissingPermission(Permission),
    #[error("looking up the API key")]
    Database(#[from] DbErr),
}

/// Parses the stored space-separated permission list, ignoring names this build does
/// not know.
pub fn parse_permissions(stored: &str) -> BTreeSet<Permission> {
    stored.split_whitespace().filter_map(Permission::parse).collect()
}

/// The SHA-256 digest of an API key's plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest(pub [u8; 32]);

impl KeyDigest {
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }
}

/// What the key caches know about a key digest.
#[derive(Debug, Clone)]
pub enum KnownKey {
    Valid(Arc<Principal>),
    /// Unknown or revoked.
    Invalid,
}

/// The key caches (hot, in-process): known keys' principals and, apart, well-formed
/// keys found unknown or revoked, so that a flood of bad keys never evicts a good one.
/// Staleness: a revocation, expiry or plan change is seen within the known keys' TTL
/// (1 s by default; the revoking replica forgets the key at once); an unknown key is
/// remembered for 10 s; a key's own `expires_at` is checked on every request.
pub struct KeyCache {
    known: TtlCache<KeyDigest, Arc<Principal>>,
    unknown: TtlCache<KeyDigest, ()>,
}

impl KeyCache {
    pub fn new(settings: &HotCachesSettings, metrics: &Metrics) -> Self {
        Self {
            known: TtlCache::new("known_keys", &settings.known_keys, metrics),
            unknown: TtlCache::new("unknown_keys", &settings.unknown_keys, metrics),
        }
    }

    /// What is remembered about a key, if anything.
    pub fn get(&self, digest: &KeyDigest) -> Option<KnownKey> {
        if let Some(principal) = self.known.get(digest) {
            return Some(KnownKey::Valid(principal));
        }
        self.unknown.get(digest).map(|()| KnownKey::Invalid)
    }

    pub fn remember(&self, digest: KeyDigest, known: KnownKey) {
        match known {
            KnownKey::Valid(principal) => self.known.insert(digest, principal, None),
            KnownKey::Invalid => self.unknown.insert(digest, (), None),
        }
    }

    /// Forgets a key this replica just revoked (other replicas see it within the TTL).
    pub fn forget(&self, digest: &KeyDigest) {
        self.known.remove(digest);
    }
}

/// Resolves bearer tokens to principals, remembering what it found in its key caches.
pub struct Authenticator {
    db: DatabaseConnection,
    keys: Arc<KeyCache>,
    activity: Arc<KeyActivity>,
}

impl Authenticator {
    pub fn new(db: DatabaseConnection, keys: Arc<KeyCache>, activity: Arc<KeyActivity>) -> Self {
        Self { db, keys, activity }
    }

    pub async fn authenticate(&self, token: &str, now_ms: i64) -> Result<Arc<Principal>, AuthError> {
        if !is_well_formed(token) {
            return Err(AuthError::InvalidKey);
        }
        let digest = KeyDigest::of(token);
        let known = match self.keys.get(&digest) {
            Some(known) => known,
            None => {
                // Boxed: a cold await (docs/design.md §19, a request's future).
                let known = match Box::pin(self.lookup(&hex(&digest.0))).await? {
                    Some(principal) => KnownKey::Valid(Arc::new(principal)),
                    None => KnownKey::Invalid,
                };
                self.keys.remember(digest, known.clone());
                known
            }
        };
        match known {
            KnownKey::Valid(p) if p.is_current(now_ms) => {
                self.activity.touch(&p.key_id, now_ms);
                Ok(p)
            }
            _ => Err(AuthError::InvalidKey),
        }
    }

    /// The key behind `hash`, `None` when unknown or revoked.
    async fn lookup(&self, hash: &str) -> Result<Option<Principal>, AuthError> {
        let found =
            api_key::Entity::find().filter(api_key::Column::KeyHash.eq(hash)).find_also_related(workspace::Entity).one(&self.db).await?;
        let (key, ws) = match found {
            Some((key, Some(ws))) if bool::from(key.key_hash.as_bytes().ct_eq(hash.as_bytes())) => (key, ws),
            _ => return Ok(None),
        };
        if key.revoked_at.is_some() {
            return Ok(None);
        }
        Ok(Some(principal_of(key, ws)))
    }
}

/// Whether a key can still act, for work it started earlier (a job's items are counted
/// and charged against the key that submitted the job).
#[derive(Debug)]
pub enum KeyStanding {
    Active(Principal),
    Revoked,
    Expired,
    /// No such key (or no such workspace).
    Unknown,
}

/// The standing of the key `key_id` at `now_ms`, read from the database.
pub async fn key_standing(db: &DatabaseConnection, key_id: &str, now_ms: i64) -> Result<KeyStanding, DbErr> {
    let found = api_key::Entity::find_by_id(key_id).find_also_related(workspace::Entity).one(db).await?;
    Ok(match found {
        Some((key, _)) if key.revoked_at.is_some() => KeyStanding::Revoked,
        Some((key, Some(ws))) => {
            let principal = principal_of(key, ws);
            if principal.is_current(now_ms) {
                KeyStanding::Active(principal)
            } else {
                KeyStanding::Expired
            }
        }
        _ => KeyStanding::Unknown,
    })
}

fn principal_of(key: api_key::Model, ws: workspace::Model) -> Principal {
    let plan = Plan::parse(&ws.plan).unwrap_or(Plan::Starter);
    let tier = RateLimitTier::parse(&key.rate_limit_tier).unwrap_or_default();
    // Unknown (a newer build's mode): the safe one, that never spends.
    let mode = KeyMode::parse(&key.mode).unwrap_or(KeyMode::Test);
    // A high or unmetered key is counted apart, so that it never uses up (nor resets)
    // the workspace's standard keys' limits; a test key has the small test limits of
    // its own, whatever its tier.
    let (limits, limit_scope) = match (mode, tier) {
        (KeyMode::Test, _) => (crate::test_mode::LIMITS, format!("{}/{}/test", ws.id, key.id)),
        (KeyMode::Live, RateLimitTier::High | RateLimitTier::Unmetered) => {
            (tier.limits(plan.limits().with_overrides(ws.rate_limit_per_minute, ws.rate_limit_per_day)), format!("{}/{}", ws.id, key.id))
        }
        (KeyMode::Live, RateLimitTier::Standard) => {
            (plan.limits().with_overrides(ws.rate_limit_per_minute, ws.rate_limit_per_day), ws.id.clone())
        }
    };
    Principal {
        limits,
        limit_scope,
        plan,
        key_id: key.id,
        key_prefix: key.prefix,
        scope: Scope::new(ws.id, mode),
        permissions: parse_permissions(&key.permissions),
        balance_hint: ws.credit_balance,
        expires_at: key.expires_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed_and_distinct() {
        let a = generate_key(KeyMode::Live);
        let b = generate_key(KeyMode::Live);
        assert!(is_well_formed(&a.plaintext), "{}", a.plaintext.len());
        assert_ne!(a.plaintext, b.plaintext);
        assert_eq!(a.hash, hash_key(&a.plaintext));
        assert!(a.plaintext.starts_with(&a.prefix));
        assert_eq!(a.hash.len(), 64);
        assert!(!format!("{a:?}").contains(&a.plaintext));
        assert_eq!(a.prefix.len(), 12);
        let t = generate_key(KeyMode::Test);
        assert!(is_well_formed(&t.plaintext) && t.plaintext.starts_with(TEST_KEY_PREFIX), "{}", t.plaintext.len());
        assert_eq!(t.prefix.len(), TEST_KEY_PREFIX.len() + 8);
        assert!(!a.plaintext.starts_with(TEST_KEY_PREFIX));
    }

    #[test]
    fn malformed_keys_are_refused_by_shape() {
        assert!(!is_well_formed("wbk_short"));
        assert!(!is_well_formed(&format!("sk_{}", "a".repeat(43))));
        assert!(!is_well_formed(&format!("wbk_{}!", "a".repeat(43))));
        assert!(is_well_formed(&format!("wbk_{}", "a".repeat(40))));
        assert!(is_well_formed(&format!("wbk_test_{}", "a".repeat(40))));
        assert!(!is_well_formed(&format!("wbk_test_{}", "a".repeat(39))));
        assert!(!is_well_formed(&format!("wbk_live_{}", "a".repeat(43))));
    }

    #[test]
    fn tiers_follow_the_plan() {
        let pro = Plan::Pro.limits();
        assert_eq!(RateLimitTier::Standard.limits(pro), pro);
        assert_eq!(RateLimitTier::High.limits(pro), Limits { per_minute: Some(250), per_day: Some(1_000) });
        assert_eq!(RateLimitTier::Unmetered.limits(pro), Limits { per_minute: None, per_day: None });
        assert!(!RateLimitTier::High.allowed_on(Plan::Starter));
        assert!(RateLimitTier::High.allowed_on(Plan::Pro));
        assert!(!RateLimitTier::Unmetered.allowed_on(Plan::Pro));
        assert!(RateLimitTier::Unmetered.allowed_on(Plan::Org));
        assert!(RateLimitTier::ALL.iter().all(|t| RateLimitTier::parse(t.as_str()) == Some(*t)));
    }

    #[test]
    fn permissions_round_trip() {
        let p = parse_permissions("write:enrich read:usage unknown:thing");
        assert_eq!(p.len(), 2);
        assert!(Permission::ALL.iter().all(|p| Permission::parse(p.as_str()) == Some(*p)));
        assert!(p.contains(&Permission::WriteEnrich));
    }
}
