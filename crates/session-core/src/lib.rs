//! Opaque, revoke-only login sessions: the domain, the ports, and the use cases.
//!
//! A session is issued for an account and handed to the client as an opaque
//! [`SessionToken`]; only its [`TokenHash`] is stored. Sessions never expire;
//! they end only when revoked. [`SessionService`] keeps every active session
//! in a [`SessionCache`] that is written through after each [`SessionStore`]
//! commit and warmed from the store at start, so resolving a token is a hash
//! and a cache lookup.
//!
//! This crate knows nothing about SQL, HTTP, JSON or any cache library:
//! adapters implement the ports in their own crates. [`MemoryStore`] and
//! [`MemoryCache`] are in-process adapters for tests and a baseline.
//! With the `testkit` feature, `testkit` holds the contract suites every
//! adapter runs.

mod cache;
mod clock;
mod feed;
mod last_seen;
mod memory;
mod miss;
mod service;
mod session;
mod store;
mod token;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use cache::{PreparedContents, SessionCache};
pub use clock::{Clock, ManualClock, SystemClock};
pub use feed::{
    Change, ChangeLog, ChangeLogDecorator, ChangeLogOperation, LogEntry, LogPage, LogPosition,
    LogRead, WakeUps,
};
pub use last_seen::{LastSeenSettings, LastSeenStats, MAX_BATCH as LAST_SEEN_MAX_BATCH};
pub use memory::{MemoryCache, MemoryStore};
pub use miss::MissPolicy;
pub use service::{
    Error, LogLag, NewSession, Readiness, ResolveCounts, ResolveOutcome, Revocation,
    SessionService, SessionServiceBuilder, SyncStats, WarmReport,
};
pub use session::{
    AccountId, ClientMetadata, Field, Label, Reason, Session, SessionId, UserAgent,
    ValidationError, parse_ip,
};
pub use store::{
    AccountPage, ActivePage, BoxError, InvalidRow, ListPosition, ListScope, PageLimit, PageRequest,
    RevokeOutcome, RowId, SeenAt, SessionStore, StoreDecorator, StoreError, StoreOperation,
    StoredSession,
};
pub use token::{
    InvalidTokenHash, SessionToken, TOKEN_LEN, TOKEN_PREFIX, TokenHash, TokenHashHasher,
    TokenHashState, TokenParseError,
};
