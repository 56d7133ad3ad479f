//! A store in a temporary directory that lives exactly as long as the store.

use std::path::{Path, PathBuf};

use session_core::port::events::{EventCursor, EventLog, EventRead};
use session_core::port::store::{SessionStore, StoreDecorator, StoreError};
use session_sqlite::{SqliteOptions, SqliteSessionStore};
use tempfile::TempDir;

/// A fresh directory and the database path inside it (not yet created).
pub(crate) fn temp_db() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("sessions.db");
    (dir, path)
}

/// A [`SqliteSessionStore`] on a file in its own temporary directory, removed
/// after the store is closed.
pub(crate) struct TempStore {
    // Declared first: fields drop in order, so the store closes its
    // connections before the directory is removed.
    pub(crate) store: SqliteSessionStore,
    _dir: TempDir,
}

impl TempStore {
    /// Opens a store on a new file with default options.
    pub(crate) async fn new() -> Self {
        Self::with(SqliteOptions::default()).await
    }

    /// Opens a store on a new file with `options`.
    pub(crate) async fn with(options: SqliteOptions) -> Self {
        let (dir, path) = temp_db();
        let store = SqliteSessionStore::open_with(&path, options)
            .await
            .expect("opening a new file");
        Self { store, _dir: dir }
    }

    /// The database file.
    pub(crate) fn path(&self) -> &Path {
        self.store.path()
    }
}

impl StoreDecorator for TempStore {
    fn inner_store(&self) -> &dyn SessionStore {
        &self.store
    }
}

#[async_trait::async_trait]
impl EventLog for TempStore {
    async fn head(&self) -> Result<EventCursor, StoreError> {
        self.store.head().await
    }

    async fn read(&self, after: EventCursor, limit: u32) -> Result<EventRead, StoreError> {
        EventLog::read(&self.store, after, limit).await
    }

    async fn prune(&self, before: time::OffsetDateTime, batch: u32) -> Result<u64, StoreError> {
        self.store.prune(before, batch).await
    }
}
