//! Opening the database file: directory, connections, pragmas, migrations.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::migration::MigrationSource;
use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel::sqlite::Sqlite;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use session_core::port::store::BoxError;

use crate::error::is_not_a_database;
use crate::lock::{DatabaseLock, lock};
use crate::private;

/// The schema migrations compiled into this crate, from `migrations/sqlite`.
const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");

/// How to open a [`SqliteSessionStore`](crate::SqliteSessionStore).
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    readers: usize,
    busy_timeout: Duration,
    migrate: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            readers: 4,
            busy_timeout: Duration::from_secs(5),
            migrate: true,
        }
    }
}

impl SqliteOptions {
    /// Connections that serve reads in parallel with each other and with the
    /// one writer (default 4, at least 1).
    #[must_use]
    pub fn readers(mut self, connections: usize) -> Self {
        self.readers = connections.max(1);
        self
    }

    /// How long a statement waits for a lock held by another process before it
    /// fails as unavailable (default 5 s). Within one store writes never wait
    /// on each other's locks, and no second store can open the file, so this
    /// only matters when another program (the sqlite3 shell) holds the lock.
    #[must_use]
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Whether to apply pending migrations at open (default `true`). When
    /// `false`, opening a file whose schema is behind fails with
    /// [`OpenError::PendingMigrations`] instead, for operators who migrate as
    /// a separate step.
    #[must_use]
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }
}

/// Why the session database could not be opened. Every variant names the file
/// (or directory) so an operator can find it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The directory holding the file could not be created or synced.
    #[error("cannot create or sync the directory {} for the session database", dir.display())]
    Directory {
        /// The directory.
        dir: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// Another process has the database open: a SQLite file belongs to one
    /// process, because each keeps its own cache and would never see the
    /// other's revocations.
    #[error(
        "the session database {} is in use by {} (it holds {}); only one process may use a SQLite file: stop the other one, or use PostgreSQL to run several instances",
        path.display(),
        holder(*pid),
        lock_file.display()
    )]
    Locked {
        /// The database file.
        path: PathBuf,
        /// The lock file beside it.
        lock_file: PathBuf,
        /// The process holding the lock, if it had recorded its pid yet.
        pid: Option<u32>,
    },
    /// The lock file beside the database could not be created or locked.
    #[error("cannot lock the session database {} through {}", path.display(), lock_file.display())]
    Lock {
        /// The database file.
        path: PathBuf,
        /// The lock file beside it.
        lock_file: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The new database file could not be created.
    #[error("cannot create the session database {}", path.display())]
    Create {
        /// The database file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// SQLite takes file names as UTF-8.
    #[error("the session database path {} is not valid UTF-8", path.display())]
    NonUtf8Path {
        /// The path as given.
        path: PathBuf,
    },
    /// SQLite could not open the file.
    #[error("cannot open the session database {}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: diesel::ConnectionError,
    },
    /// The file exists but is not a SQLite database (or is encrypted or
    /// damaged). It was left untouched.
    #[error(
        "{} is not a SQLite database; it was left untouched. Point the service at another file or move this one away",
        path.display()
    )]
    NotADatabase {
        /// The file.
        path: PathBuf,
    },
    /// The file system does not support SQLite's write-ahead log, which
    /// durability and concurrent reads rely on.
    #[error(
        "the session database {} cannot use write-ahead logging (journal mode stayed `{mode}`); use a local file system",
        path.display()
    )]
    WalUnavailable {
        /// The database file.
        path: PathBuf,
        /// The journal mode SQLite kept.
        mode: String,
    },
    /// Setting up a connection failed.
    #[error("cannot configure the session database {}", path.display())]
    Configure {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: diesel::result::Error,
    },
    /// The file has migrations applied that this build does not know: it was
    /// written by a newer version, and this one cannot safely use it.
    #[error(
        "the session database {} was written by a newer version (unknown schema migrations: {}); upgrade this program or use another file",
        path.display(),
        versions.join(", ")
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// The applied migration versions this build does not know.
        versions: Vec<String>,
    },
    /// The schema is behind and migrating at open was turned off.
    #[error(
        "the session database {} needs schema migrations {} and migrating at open is off",
        path.display(),
        versions.join(", ")
    )]
    PendingMigrations {
        /// The database file.
        path: PathBuf,
        /// The migration versions not yet applied, oldest first.
        versions: Vec<String>,
    },
    /// Applying or checking migrations failed.
    #[error("cannot migrate the session database {}", path.display())]
    Migrate {
        /// The database file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: BoxError,
    },
    /// The task opening the file did not finish (the runtime is shutting down).
    #[error("opening the session database {} was interrupted", path.display())]
    Interrupted {
        /// The database file.
        path: PathBuf,
        /// Why the task did not finish.
        #[source]
        source: tokio::task::JoinError,
    },
}

fn holder(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("another process (pid {pid})"),
        None => "another process".to_owned(),
    }
}

/// Connections to a database that is ready for use.
pub(crate) struct Opened {
    /// Held for as long as the writer connection lives.
    pub(crate) lock: DatabaseLock,
    pub(crate) writer: SqliteConnection,
    pub(crate) readers: Vec<SqliteConnection>,
    pub(crate) migrations_applied: Vec<String>,
}

/// Does the blocking work of opening; runs on the blocking pool.
pub(crate) fn open_blocking(path: &Path, options: &SqliteOptions) -> Result<Opened, OpenError> {
    let url = connection_url(path)?;
    let parent = parent_dir(path);
    let created_dirs = create_dir_all(&parent)?;
    // Before SQLite opens the file: a second process must not even run the
    // migrations the first may be running.
    let lock = lock(path)?;
    let is_new_file = !path.exists();
    if is_new_file {
        // Created here rather than by SQLite, which would use 0644 less the
        // umask; its -wal and -shm files then take this file's mode.
        private::create_file(path).map_err(|source| OpenError::Create {
            path: path.to_path_buf(),
            source,
        })?;
    }

    let mut writer = connect(path, &url, options.busy_timeout)?;
    // The first statement that reads the file: a file that is not a database
    // fails here, before anything is written to it.
    enable_wal(path, &mut writer)?;
    // FULL: in WAL mode every commit fsyncs the log before it returns, so an
    // acknowledged write survives power loss; NORMAL would sync only at
    // checkpoints and could lose the last commits. `fullfsync` makes that
    // fsync reach the platter on macOS and is ignored elsewhere.
    writer
        .batch_execute("PRAGMA synchronous = FULL; PRAGMA fullfsync = ON;")
        .map_err(|source| configure_error(path, source))?;
    let migrations_applied = migrate(path, &mut writer, options.migrate)?;

    // A new file, and new directories, exist after power loss only once the
    // directories that name them are synced.
    if is_new_file {
        sync_dir(&parent)?;
    }
    for dir in &created_dirs {
        sync_dir(&parent_dir(dir))?;
    }

    let readers = (0..options.readers)
        .map(|_| {
            let mut reader = connect(path, &url, options.busy_timeout)?;
            // Readers never write: a bug that tried would fail instead of
            // bypassing the single writer.
            reader
                .batch_execute("PRAGMA query_only = ON;")
                .map_err(|source| configure_error(path, source))?;
            Ok(reader)
        })
        .collect::<Result<Vec<_>, OpenError>>()?;

    Ok(Opened {
        lock,
        writer,
        readers,
        migrations_applied,
    })
}

/// The versions of the migrations compiled into this build, oldest first.
pub(crate) fn known_migrations() -> Result<Vec<String>, BoxError> {
    let mut versions: Vec<String> = MigrationSource::<Sqlite>::migrations(&MIGRATIONS)?
        .iter()
        .map(|migration| migration.name().version().to_string())
        .collect();
    versions.sort();
    Ok(versions)
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Creates `dir` and any missing ancestors, private to this user; returns
/// the ones it created.
fn create_dir_all(dir: &Path) -> Result<Vec<PathBuf>, OpenError> {
    let missing: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|ancestor| !ancestor.as_os_str().is_empty() && !ancestor.exists())
        .map(Path::to_path_buf)
        .collect();
    private::create_dir_all(dir, &missing).map_err(|source| OpenError::Directory {
        dir: dir.to_path_buf(),
        source,
    })?;
    Ok(missing)
}

fn sync_dir(dir: &Path) -> Result<(), OpenError> {
    // Directories can be opened and synced like files only on Unix; elsewhere
    // the file system orders directory updates itself.
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|source| OpenError::Directory {
            dir: dir.to_path_buf(),
            source,
        })?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// The name to hand SQLite. diesel opens with URI names enabled, so a relative
/// path that happens to start with `file:` (or is `:memory:`) would not name a
/// file; anchoring relative paths at `./` keeps every path a plain file name.
fn connection_url(path: &Path) -> Result<String, OpenError> {
    let text = path.to_str().ok_or_else(|| OpenError::NonUtf8Path {
        path: path.to_path_buf(),
    })?;
    Ok(if path.is_absolute() {
        text.to_owned()
    } else {
        format!("./{text}")
    })
}

fn connect(path: &Path, url: &str, busy_timeout: Duration) -> Result<SqliteConnection, OpenError> {
    let mut conn = SqliteConnection::establish(url).map_err(|source| OpenError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let millis = u32::try_from(busy_timeout.as_millis()).unwrap_or(u32::MAX);
    conn.batch_execute(&format!("PRAGMA busy_timeout = {millis};"))
        .map_err(|source| configure_error(path, source))?;
    Ok(conn)
}

#[derive(QueryableByName)]
struct JournalMode {
    #[diesel(sql_type = Text)]
    journal_mode: String,
}

fn enable_wal(path: &Path, conn: &mut SqliteConnection) -> Result<(), OpenError> {
    // WAL is stored in the file, so this is a no-op after the first open. SQLite
    // answers with the mode it ended up in rather than failing when it cannot
    // switch, so the answer is checked.
    let JournalMode { journal_mode } = diesel::sql_query("PRAGMA journal_mode = WAL")
        .get_result(conn)
        .map_err(|source| configure_error(path, source))?;
    if journal_mode.eq_ignore_ascii_case("wal") {
        Ok(())
    } else {
        Err(OpenError::WalUnavailable {
            path: path.to_path_buf(),
            mode: journal_mode,
        })
    }
}

fn configure_error(path: &Path, source: diesel::result::Error) -> OpenError {
    if is_not_a_database(&source) {
        OpenError::NotADatabase {
            path: path.to_path_buf(),
        }
    } else {
        OpenError::Configure {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Why migrating stopped, inside the migration transaction.
enum MigrateFailure {
    Sqlite(diesel::result::Error),
    Migration(BoxError),
    Newer(Vec<String>),
    Pending(Vec<String>),
}

impl From<diesel::result::Error> for MigrateFailure {
    fn from(err: diesel::result::Error) -> Self {
        Self::Sqlite(err)
    }
}

/// Checks the schema version and applies pending migrations; returns the
/// versions it applied, oldest first.
fn migrate(
    path: &Path,
    conn: &mut SqliteConnection,
    apply: bool,
) -> Result<Vec<String>, OpenError> {
    // One IMMEDIATE transaction around check and apply. The lock file already
    // keeps other stores out; this still makes a program that takes no lock
    // (an older version, the sqlite3 shell) take turns with the migration.
    // Each migration's own transaction nests inside as a savepoint.
    let outcome = conn.immediate_transaction(|conn| {
        let known: BTreeSet<String> = known_migrations()
            .map_err(MigrateFailure::Migration)?
            .into_iter()
            .collect();
        let unknown: Vec<String> = conn
            .applied_migrations()
            .map_err(MigrateFailure::Migration)?
            .iter()
            .map(ToString::to_string)
            .filter(|version| !known.contains(version))
            .collect();
        if !unknown.is_empty() {
            let mut unknown = unknown;
            unknown.sort();
            return Err(MigrateFailure::Newer(unknown));
        }
        let pending: Vec<String> = conn
            .pending_migrations(MIGRATIONS)
            .map_err(MigrateFailure::Migration)?
            .iter()
            .map(|migration| migration.name().version().to_string())
            .collect();
        if pending.is_empty() {
            return Ok(pending);
        }
        if !apply {
            return Err(MigrateFailure::Pending(pending));
        }
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map_err(MigrateFailure::Migration)?;
        Ok(applied.iter().map(ToString::to_string).collect())
    });
    let path = path.to_path_buf();
    outcome.map_err(|failure| match failure {
        MigrateFailure::Sqlite(source) if is_not_a_database(&source) => {
            OpenError::NotADatabase { path }
        }
        MigrateFailure::Sqlite(source) => OpenError::Migrate {
            path,
            source: Box::new(source),
        },
        MigrateFailure::Migration(source) => OpenError::Migrate { path, source },
        MigrateFailure::Newer(versions) => OpenError::NewerSchema { path, versions },
        MigrateFailure::Pending(versions) => OpenError::PendingMigrations { path, versions },
    })
}
