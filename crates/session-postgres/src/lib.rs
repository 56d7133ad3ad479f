//! PostgreSQL storage for sessions: [`PgSessionStore`] implements
//! session-core's [`SessionStore`](session_core::port::store::SessionStore) port, and its
//! [`ChangeLog`](session_core::port::change_log::ChangeLog) so several processes can share
//! one database.
//!
//! - Sessions live in the `session` schema, so they can share the host
//!   application's database. The schema is created by versioned migrations
//!   embedded in the crate and applied by [`PgSessionStore::migrate`], which is
//!   safe to run at every start and from several processes at once.
//! - Connections come from a pool with bounded size, connect and checkout
//!   times ([`PgConfig`]). A connection the server closed is detected before
//!   use and replaced.
//! - The driver is tokio-postgres (pure Rust, no libpq); TLS goes through
//!   rustls when the URL's `sslmode` asks for it, with libpq's meaning of each
//!   mode ([`SslMode`]).
//! - Every committed change to the active sessions is written by triggers to
//!   the change log `session.changes`, in the writing transaction, and read
//!   from a cursor that never passes a transaction still running. An empty
//!   NOTIFY on [`CHANGES_CHANNEL`] wakes readers early; its payload is never
//!   read, since any role may notify. The listener has a connection of its
//!   own and fails promptly when it is lost, or stays silent past
//!   [`PgConfig::change_log_heartbeat`]; [`PgConfig::wake_ups`] turns it off
//!   (behind a pooler that cannot LISTEN), leaving readers to poll. Entries
//!   older than [`PgConfig::change_retention`] are pruned.
//! - Errors map to [`StoreError`](session_core::port::store::StoreError): a repeated token
//!   hash is `DuplicateTokenHash`; a database out of reach (refused, closed,
//!   timed out) is the retryable `Unavailable`; anything else is `Failed`.

mod call;
mod change_log;
mod config;
mod copy;
mod error;
mod events;
mod migrate;
#[cfg(test)]
mod plans;
mod pool;
mod raw;
mod schema;
mod store;
mod tls;

pub use change_log::CHANGES_CHANNEL;
pub use config::{ConfigError, PgConfig, SslMode, Statements};
pub use store::{
    IDLE_JOB_LOCK, NOT_BEFORE_JOB_LOCK, PgSessionStore, PoolStatus, RETENTION_JOB_LOCK,
};

/// The change log's decoding, for the fuzz targets in `fuzz/`: not an API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use change_log::{LogRow, page as read_log_page};

/// The raw column forms [`LogRow`] holds, for the fuzz targets: not an API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use raw::RawInstant;

/// The diesel view of the sessions table, for the benchmark harness: not an API.
#[cfg(feature = "schema")]
#[doc(hidden)]
pub use schema::sessions;
