//! The embedded default session store: sessions in one SQLite file, for a
//! service that runs without a database server.
//!
//! [`SqliteSessionStore`] implements session-core's
//! [`SessionStore`](session_core::SessionStore) with diesel's SQLite backend.
//! SQLite is compiled in, so nothing has to be installed.
//!
//! ```no_run
//! # async fn run() -> Result<(), session_sqlite::OpenError> {
//! let store = session_sqlite::SqliteSessionStore::open("data/sessions.db").await?;
//! for version in store.migrations_applied() {
//!     println!("applied schema migration {version}");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Durability
//!
//! The file is in write-ahead-log mode with `synchronous = FULL`: every commit
//! syncs the log to disk before the call returns, so an acknowledged create or
//! revoke survives a crash of the process and a loss of power. (`NORMAL`
//! would sync only at checkpoints, trading the last commits before a power
//! loss for speed.) A new file and any directories created for it are synced
//! into their parent directories at open.
//!
//! # Concurrency
//!
//! One writer connection behind an async mutex serialises writes inside the
//! process, so they never meet SQLite's "database is locked"; a pool of
//! read-only connections serves reads, which the write-ahead log lets run
//! while a write is in progress. `busy_timeout` only matters when another
//! process writes the same file; if it runs out, the call fails with the
//! retryable [`StoreError::Unavailable`](session_core::StoreError::Unavailable).
//! Every SQLite call runs on Tokio's blocking pool, never on a runtime worker.
//!
//! # Schema
//!
//! Migrations live in `migrations/sqlite` and are compiled in; [`open`]
//! applies pending ones and refuses a file migrated by a newer version. Ids
//! and account ids are 16-byte big-endian BLOBs (bytewise order is UUID
//! order), token hashes 32-byte BLOBs, and instants INTEGER microseconds since
//! the Unix epoch in UTC.
//!
//! This crate never sees a raw token: only [`TokenHash`](session_core::TokenHash)es
//! reach it.
//!
//! [`open`]: SqliteSessionStore::open

mod error;
mod open;
mod row;
mod schema;
mod store;

pub use open::{OpenError, SqliteOptions};
pub use store::SqliteSessionStore;
