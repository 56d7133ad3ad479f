//! The cache port: the in-memory projection of every active session.

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

    /// Replaces the whole contents with `sessions`.
    ///
    /// Concurrent readers see either the old contents or the new ones, never
    /// a partly filled cache.
    fn replace_all(&self, sessions: Vec<Arc<Session>>);

    /// The exact number of cached sessions.
    fn len(&self) -> usize;

    /// Whether the cache holds no session.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
