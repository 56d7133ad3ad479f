//! Opaque, revoke-only login sessions: the domain, the ports, and the use cases.
//!
//! A session is issued for an account and handed to the client as an opaque
//! [`SessionToken`]; only its hash is stored. Sessions never expire; they end
//! only when revoked. [`SessionService`] keeps every active session in a
//! cache that is written through after each store commit and warmed from the
//! store at start, so resolving a token is a hash and a cache lookup.
//!
//! This crate knows nothing about SQL, HTTP, JSON or any cache library:
//! adapters implement the ports in their own crates.
//!
//! # Where to look
//!
//! - **A host backend** uses the crate root: [`SessionService`] and its
//!   builder, the [`BackgroundTasks`] it starts, [`Error`], the session and
//!   its fields, [`SessionIdentity`] (what a resolve answers), [`SessionToken`],
//!   the list types, and the two in-process caches: [`MemoryCache`] (full
//!   records) and [`CompactCache`] (an index of identities, for sessions
//!   that would not fit in memory with their metadata).
//! - **Adapter authors** implement [`port::store`], [`port::change_log`] or
//!   [`port::cache`] (time comes through [`port::clock`]), and run the
//!   contract suites of `testkit` (the `testkit` feature).
//! - **Operators and monitoring code** read [`status`] (what
//!   [`SessionService::status`] returns) and tune [`config`].
//! - **Tests** use [`memory::MemoryStore`], the one store this crate has,
//!   and `testkit`.
//! - The detail of tokens and of input validation is in [`token`] and
//!   [`validation`].
//!
//! # Embedding
//!
//! A host builds the service over a store and a cache, starts its
//! background tasks, serves, and shuts them down:
//!
//! ```
//! use std::sync::Arc;
//!
//! use session_core::memory::MemoryStore;
//! use session_core::{
//!     AccountId, ClientMetadata, Error, MemoryCache, Revocation, RevocationReason,
//!     SessionService,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Error> {
//! // A real host passes its database's store; this crate has only the memory one.
//! let store = Arc::new(MemoryStore::new());
//! let service = SessionService::builder(store, Arc::new(MemoryCache::new())).build();
//! // Warms the cache (and with a change log, follows it) until shut down.
//! let tasks = service.start();
//! // Until the first warm completes, resolves answer `Error::NotReady`
//! // ("retry"): a readiness probe waits for this.
//! while !service.status().cache_ready() {
//!     tokio::task::yield_now().await;
//! }
//!
//! // Sign in: hand the token to the client, once.
//! let account: AccountId = "0195d2c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d".parse().expect("a UUID");
//! let created = service.create(account, ClientMetadata::default()).await?;
//! let token = created.token.expose_secret().to_owned();
//!
//! // Each request: the token the client sent back names its session.
//! let identity = service.resolve(&token).await?;
//! assert_eq!(identity.account_id, account);
//! // Its whole record (created at, user agent, IP, label), when needed.
//! let session = service.session(&identity).await?;
//! assert_eq!(session.id, identity.id);
//!
//! // Sign out: the token stops working at once, and the session records why.
//! let revoked = service.revoke(identity.id, RevocationReason::LOGOUT).await?;
//! assert_eq!(revoked, Revocation::Revoked);
//! let revoked = service.get(identity.id).await?;
//! assert_eq!(revoked.revocation_reason(), Some(&RevocationReason::LOGOUT));
//! assert!(matches!(service.resolve(&token).await, Err(Error::InvalidToken)));
//!
//! // Stops the tasks, then writes the last-seen marks still pending.
//! tasks.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod compact_cache;
pub mod config;
mod last_seen;
mod list;
pub mod memory;
mod memory_cache;
pub mod port;
mod recent;
mod service;
mod session;
pub mod status;
pub mod token;
pub mod validation;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use compact_cache::CompactCache;
pub use list::{AccountPage, ListPosition, ListScope, PageLimit, PageRequest};
pub use memory_cache::MemoryCache;
pub use service::{
    BackgroundTasks, Error, NewSession, Revocation, SessionService, SessionServiceBuilder,
};
pub use session::{
    AccountId, ClientMetadata, Label, RevocationDetails, RevocationReason, Revoker, Session,
    SessionId, SessionIdentity, UserAgent,
};
pub use token::session_token::SessionToken;
