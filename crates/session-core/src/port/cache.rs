//! The cache port: the in-memory projection of every active session.

use std::any::Any;
use std::sync::Arc;

use crate::session::Session;
use crate::token::TokenHash;

/// The complete in-memory projection of active sessions, keyed by token hash.
///
/// Synchronous on purpose: a lookup never awaits. A cache holds every active
/// session and evicts nothing by itself (no time-to-live, no size bound),
/// because a miss means "no such active session" and an evicted entry would
/// log a user out.
pub trait SessionCache: Send + Sync + 'static {
    /// The session with this token hash, if cached.
    fn get(&self, hash: &TokenHash) -> Option<Arc<Session>>;

    /// Adds a session, replacing any entry with the same token hash.
    fn insert(&self, session: Arc<Session>);

    /// Drops the session with this token hash, if cached.
    fn remove(&self, hash: &TokenHash);

    /// Drops every session with one of these token hashes.
    fn remove_many(&self, hashes: &[TokenHash]);

    /// Builds contents holding exactly `sessions` (the last wins for a
    /// repeated hash), apart from the live ones: readers do not see them,
    /// and they can still be changed, until [`install`](Self::install).
    ///
    /// Building a million sessions takes a while; splitting it from the
    /// install lets a caller build without holding its own locks.
    fn prepare(&self, sessions: Vec<Arc<Session>>) -> Box<dyn PreparedContents>;

    /// Makes contents from [`prepare`](Self::prepare) the live contents, at
    /// once: concurrent readers see either the old contents or the new ones,
    /// never a mix. A write that overlaps the install may apply to either;
    /// callers that must keep it order their writes against the install.
    ///
    /// # Panics
    ///
    /// If `contents` was prepared by a cache of another type.
    fn install(&self, contents: Box<dyn PreparedContents>);

    /// Replaces the whole contents with `sessions`: prepare, then install.
    fn replace_all(&self, sessions: Vec<Arc<Session>>) {
        self.install(self.prepare(sessions));
    }

    /// The exact number of cached sessions.
    fn len(&self) -> usize;

    /// Whether the cache holds no session.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A cache's next contents, built by [`SessionCache::prepare`] and not yet
/// visible to readers.
pub trait PreparedContents: Send {
    /// Adds a session, replacing any with the same token hash.
    fn insert(&mut self, session: Arc<Session>);

    /// Drops the session with this token hash, if present.
    fn remove(&mut self, hash: &TokenHash);

    /// The contents as [`Any`], for the cache that prepared them to take
    /// its own type back in [`SessionCache::install`].
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}
