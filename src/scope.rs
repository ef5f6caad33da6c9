//! Who a request acts for: one workspace, in one mode (live or test).
//!
//! Every read and write of a workspace's data (jobs and their items and results, API
//! keys, webhooks and their deliveries, suppressions, the ledger and usage, idempotency
//! records) takes a [`Scope`]: the store functions have no other way to name a
//! workspace, so a query that forgets the mode does not compile. A `Scope` comes from
//! an authenticated key ([`crate::auth::Principal::scope`]) or from an operator's
//! command ([`Scope::live`]).
//!
//! A leaf of the core: it imports nothing of the crate.
//!
//! Invariants:
//! - data of another workspace, or of the other mode, behaves exactly as data that does
//!   not exist (`NotFound`, left out of lists);
//! - test mode owns its own jobs, keys, webhooks (and so their deliveries: test events go
//!   to test webhooks only), suppressions and idempotency records; it has no ledger (a
//!   test call is never charged);
//! - the live mode's stored names are the ones written before modes existed (an
//!   idempotency key as sent, a suppression list named by the workspace id), so that
//!   nothing stored before needs rewriting.

use std::fmt;

/// Whether a key spends real credits with real vendors (`live`) or is answered by the
/// sandbox for free (`test`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub enum KeyMode {
    #[default]
    Live,
    Test,
}

impl KeyMode {
    pub const ALL: [KeyMode; 2] = [KeyMode::Live, KeyMode::Test];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyMode::Live => "live",
            KeyMode::Test => "test",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// One workspace in one mode: what every query of a workspace's data is limited to.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    workspace_id: String,
    mode: KeyMode,
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.workspace_id, self.mode.as_str())
    }
}

impl Scope {
    /// The scope of an authenticated key (see [`crate::auth`]).
    pub(crate) fn new(workspace_id: impl Into<String>, mode: KeyMode) -> Self {
        Self { workspace_id: workspace_id.into(), mode }
    }

    /// A workspace's live data, as an operator's command acts on it.
    pub fn live(workspace_id: impl Into<String>) -> Self {
        Self::new(workspace_id, KeyMode::Live)
    }

    /// A workspace's test data, as an operator's command acts on it.
    pub fn test(workspace_id: impl Into<String>) -> Self {
        Self::new(workspace_id, KeyMode::Test)
    }

    pub fn workspace_id(&self) -> &str {
        &self.workspace_id
    }

    pub fn mode(&self) -> KeyMode {
        self.mode
    }

    pub fn is_test(&self) -> bool {
        self.mode == KeyMode::Test
    }

    /// The name an `Idempotency-Key` is stored under in this scope: as sent in live
    /// mode, apart (`test:` before it) in test mode.
    pub fn idempotency_key(&self, key: &str) -> String {
        match self.mode {
            KeyMode::Live => key.to_string(),
            KeyMode::Test => format!("test:{key}"),
        }
    }

    /// The name of this scope's suppression list (`suppressions.scope`): the workspace
    /// id in live mode, `{workspace}/test` in test mode. (`*`, the global list, cannot be
    /// one: workspace ids have no `*`.)
    pub fn suppression_list(&self) -> String {
        match self.mode {
            KeyMode::Live => self.workspace_id.clone(),
            KeyMode::Test => format!("{}/test", self.workspace_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_modes_of_one_workspace_name_their_data_apart() {
        let live = Scope::live("ws_1");
        let test = Scope::test("ws_1");
        assert_ne!(live.idempotency_key("k"), test.idempotency_key("k"));
        assert_eq!(live.idempotency_key("k"), "k");
        assert_ne!(live.suppression_list(), test.suppression_list());
        assert_eq!(live.suppression_list(), "ws_1");
        assert!(KeyMode::ALL.iter().all(|m| KeyMode::parse(m.as_str()) == Some(*m)));
    }
}
