//! An idempotency record as the store sees it: the names of its states and the token that
//! proves a caller owns its claim. Here, below `crate::idempotency`, because the settler
//! completes a claim inside the debit's transaction (`COMPLETE_CLAIM`); when to claim,
//! replay, complete or release is `crate::idempotency`'s to decide.
//!
//! Invariant: only the owner of a claim (the holder of its token) completes or releases
//! it; the token is random per claim.

/// The state of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The first call with the key is running (leased until `locked_until`).
    InProgress,
    /// The call succeeded; its answer is replayed until the record expires.
    Completed,
    /// The call succeeded, then its subject was erased (erasure): no answer is
    /// kept, and a replay answers as a call would now (`no_match`, free).
    Erased,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::InProgress => "in_progress",
            State::Completed => "completed",
            State::Erased => "erased",
        }
    }
}

/// Proof of owning a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimToken {
    workspace_id: String,
    key: String,
    token: String,
}

impl ClaimToken {
    /// Workspace id, idempotency key and owner token: what identifies the claim in the
    /// `idempotency_records` table.
    pub fn parts(&self) -> (&str, &str, &str) {
        (&self.workspace_id, &self.key, &self.token)
    }

    pub(crate) fn new(workspace_id: &str, key: &str, token: String) -> Self {
        Self { workspace_id: workspace_id.into(), key: key.into(), token }
    }

    #[cfg(test)]
    pub fn for_tests(workspace_id: &str, key: &str, token: &str) -> Self {
        Self { workspace_id: workspace_id.into(), key: key.into(), token: token.into() }
    }
}
