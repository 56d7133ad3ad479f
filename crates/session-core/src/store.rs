//! The storage port: where sessions are durable.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::session::{AccountId, Session, SessionId};
use crate::token::TokenHash;

/// A boxed error from an adapter, kept as the source of a [`StoreError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Durable storage of sessions.
///
/// Every method is one atomic operation: it either committed when it returns
/// `Ok`, or changed nothing. Implementations must never store a raw token.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a new session.
    ///
    /// # Errors
    ///
    /// [`StoreError::DuplicateTokenHash`] if a session with the same token hash exists.
    async fn insert(&self, session: &Session) -> Result<(), StoreError>;

    /// The active session with this token hash, if there is one.
    async fn find_active_by_hash(&self, hash: &TokenHash) -> Result<Option<Session>, StoreError>;

    /// The session with this id, active or revoked.
    async fn get(&self, id: SessionId) -> Result<Option<Session>, StoreError>;

    /// Revokes one session at `at`. Idempotent: an already revoked session keeps
    /// its first `revoked_at`.
    async fn revoke(&self, id: SessionId, at: OffsetDateTime) -> Result<RevokeOutcome, StoreError>;

    /// Revokes every active session of `account` at `at`, except `except` if
    /// given, and returns the token hashes it revoked.
    async fn revoke_all_for_account(
        &self,
        account: AccountId,
        except: Option<SessionId>,
        at: OffsetDateTime,
    ) -> Result<Vec<TokenHash>, StoreError>;

    /// An account's sessions, newest first (by `created_at`, then id).
    async fn list_for_account(
        &self,
        account: AccountId,
        scope: ListScope,
    ) -> Result<Vec<Session>, StoreError>;

    /// One page of active sessions with ids greater than `after`, in id order,
    /// at most `limit` long: keyset pagination for warming a cache with
    /// bounded memory per query.
    async fn active_page(
        &self,
        after: Option<SessionId>,
        limit: u32,
    ) -> Result<Vec<Session>, StoreError>;

    /// Checks that the store answers.
    async fn health_check(&self) -> Result<(), StoreError>;
}

/// Which of an account's sessions to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListScope {
    /// Only sessions that are still active.
    #[default]
    Active,
    /// Active and revoked sessions.
    IncludeRevoked,
}

/// What revoking one session did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// The session was active and is revoked now.
    Revoked {
        /// The hash of the revoked session's token, to drop it from caches.
        token_hash: TokenHash,
    },
    /// The session had already been revoked; nothing changed.
    AlreadyRevoked,
    /// No session has this id.
    NotFound,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A session with the same token hash already exists.
    #[error("a session with this token hash already exists")]
    DuplicateTokenHash,
    /// The store cannot be reached right now (connection lost, pool exhausted,
    /// server down). Nothing was changed; retrying later may succeed.
    #[error("session store unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The store answered but the operation failed for a reason retrying will
    /// not fix (a constraint, a corrupt row, a bug).
    #[error("session store failed: {0}")]
    Failed(#[source] BoxError),
}

impl StoreError {
    /// Whether retrying the same operation later may succeed.
    #[must_use]
    pub const fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}
