//! The embedded default session store: sessions in one SQLite file, for a
//! service that runs without a database server.
//!
//! [`SqliteSessionStore`] implements session-core's
//! [`SessionStore`](session_core::port::store::SessionStore) with diesel's SQLite backend.
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
//! # One store per file
//!
//! A store owns its file: at open it takes an exclusive advisory lock on
//! `<file>.lock` beside it (writing its pid there for the message below) and
//! holds it until it is dropped. A second store on the same file, in this
//! process or another, fails at once with [`OpenError::Locked`], naming the
//! file and the holder's pid. This is what lets the service treat a cache
//! miss as final: no other store can write sessions it would not see. The
//! kernel drops the lock when the process exits, even on a crash; the lock
//! file stays behind and is harmless.
//!
//! # Files
//!
//! What the store creates is private to its user, whatever the umask:
//! missing directories 0700, and the database, its `-wal` and `-shm` (to
//! which SQLite copies the database's mode) and the lock file 0600. Files and
//! directories that already exist keep their modes.
//!
//! # Concurrency
//!
//! One writer connection behind an async mutex serialises writes inside the
//! process, so they never meet SQLite's "database is locked"; a pool of
//! read-only connections serves reads, which the write-ahead log lets run
//! while a write is in progress. `busy_timeout` only matters when a program
//! that is not a store (the sqlite3 shell, a backup) holds SQLite's lock; if
//! it runs out, the call fails with the retryable
//! [`StoreError::Unavailable`](session_core::port::store::StoreError::Unavailable).
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
//! This crate never sees a raw token: only [`TokenHash`](session_core::token::TokenHash)es
//! reach it.
//!
//! [`open`]: SqliteSessionStore::open

mod error;
mod events;
mod lock;
mod open;
mod private;
mod row;
mod schema;
mod store;

pub use open::{OpenError, SqliteOptions};
pub use store::{PoolStatus, SqlitePoolStatus, SqliteSessionStore};

/// The row decoding, for the fuzz targets in `fuzz/`: not an API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use row::{RawText, SessionRow};

/// The diesel view of the sessions table, for the benchmark harness: not an API.
#[cfg(feature = "schema")]
#[doc(hidden)]
pub use schema::sessions;
