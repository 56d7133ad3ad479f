//! The change-feed port: how one process hears about writes that other
//! processes committed to a shared store.

use async_trait::async_trait;

use crate::session::Session;
use crate::store::StoreError;
use crate::token::TokenHash;

/// A write that committed in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A session was created.
    Created(Session),
    /// Sessions were revoked. One revoke-all may arrive as several changes.
    Revoked(Vec<TokenHash>),
}

/// A source of committed changes, for stores that several processes share.
///
/// Stores without one (SQLite, the memory store by default) are used by one
/// process, whose own writes keep its cache complete.
#[async_trait]
pub trait ChangeFeed: Send + Sync + 'static {
    /// Starts listening. Every change that commits after this returns is
    /// delivered by the subscription, in commit order, so a warm that starts
    /// after subscribing misses nothing. Changes made by this process may be
    /// delivered too; applying them again is harmless.
    async fn subscribe(&self) -> Result<Box<dyn ChangeSubscription>, StoreError>;
}

/// One live subscription to a [`ChangeFeed`].
#[async_trait]
pub trait ChangeSubscription: Send {
    /// The next change. An error means the subscription is lost and changes
    /// may have been missed: the subscriber must resubscribe and re-warm.
    /// A change that cannot be read is such an error too, never skipped: a
    /// skipped revocation would leave a revoked session in the caches.
    /// Once it has failed, a subscription fails on every later call.
    ///
    /// Must be cancel-safe: a call dropped before it returns loses no change.
    async fn next_change(&mut self) -> Result<Change, StoreError>;
}
