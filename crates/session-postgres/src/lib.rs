//! PostgreSQL storage for sessions: [`PgSessionStore`] implements
//! session-core's [`SessionStore`](session_core::SessionStore) port, and its
//! [`ChangeFeed`](session_core::ChangeFeed) so several processes can share
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
//! - Every committed change to the active sessions is published by triggers
//!   on [`CHANGES_CHANNEL`] with LISTEN/NOTIFY; a subscription listens on a
//!   connection of its own and fails promptly when that connection is lost,
//!   or stays silent past [`PgConfig::feed_heartbeat`].
//! - Errors map to [`StoreError`](session_core::StoreError): a repeated token
//!   hash is `DuplicateTokenHash`; a database out of reach (refused, closed,
//!   timed out) is the retryable `Unavailable`; anything else is `Failed`.

mod config;
mod error;
mod feed;
mod migrate;
mod pool;
mod schema;
mod store;
mod tls;

pub use config::{ConfigError, PgConfig, SslMode};
pub use feed::CHANGES_CHANNEL;
pub use store::PgSessionStore;
