//! Choosing and opening the store from the database URL: `--database-url`,
//! or the file `--database-url-file` names, or the default SQLite file; for
//! PostgreSQL, the password from `PGPASSWORD` when the URL has none. Also
//! `migrate`, and the pool readers behind the pool metrics.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use session_core::port::change_log::ChangeLog;
use session_core::port::store::SessionStore;
use session_http::{PoolReader, PoolUse};
use session_postgres::{PgConfig, PgSessionStore};
use session_sqlite::{SqliteOptions, SqliteSessionStore};

use crate::ConfigError;
use crate::cli::DatabaseArgs;
use crate::secret;

/// Where sessions are kept when no database URL is given.
pub const DEFAULT_SQLITE_PATH: &str = "data/sessions.db";

/// The environment variable holding the PostgreSQL password when the URL
/// has none: libpq's name, so the same setting serves `psql` too.
pub const PASSWORD_ENV: &str = "PGPASSWORD";

/// A parsed `--database-url`.
#[derive(Clone)]
pub enum DatabaseUrl {
    /// `postgres://…` or `postgresql://…`.
    Postgres(String),
    /// `sqlite://PATH`: a file, created if missing.
    Sqlite(PathBuf),
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A PostgreSQL URL may hold a password.
        match self {
            Self::Postgres(_) => f.write_str("Postgres(<redacted>)"),
            Self::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
        }
    }
}

impl DatabaseUrl {
    /// Whether the URL holds a password (so it must not be shown or passed
    /// on a command line). A URL the driver cannot read counts as holding one.
    #[must_use]
    pub fn has_password(&self) -> bool {
        match self {
            Self::Postgres(url) => {
                PgConfig::from_url(url).map_or(true, |config| config.has_password())
            }
            Self::Sqlite(_) => false,
        }
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(url.to_owned()))
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(
                    "sqlite:// needs a file path, for example sqlite://data/sessions.db".into(),
                );
            }
            Ok(Self::Sqlite(PathBuf::from(path)))
        } else {
            Err("expected postgres://…, postgresql://… or sqlite://PATH".into())
        }
    }
}

/// Parses `--database-url` without ever repeating it: clap's own errors
/// quote the rejected value, and a database URL may hold a password.
#[derive(Debug, Clone, Copy)]
pub struct DatabaseUrlParser;

impl clap::builder::TypedValueParser for DatabaseUrlParser {
    type Value = DatabaseUrl;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Self::Value, clap::Error> {
        let flag = arg.map_or_else(|| "--database-url".to_owned(), ToString::to_string);
        let refused = |reason: &str| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!(
                    "invalid value for '{flag}' (not shown: it may hold a password): {reason}\n"
                ),
            )
        };
        let text = value.to_str().ok_or_else(|| refused("not valid UTF-8"))?;
        text.parse().map_err(|reason: String| refused(&reason))
    }
}

/// PostgreSQL connection pool settings; ignored for SQLite.
#[derive(Debug, Clone, Args)]
pub struct PgPoolArgs {
    /// Most connections the PostgreSQL pool opens.
    #[arg(long, env = "SESSION_PG_POOL_SIZE", default_value_t = 16,
        value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub pg_pool_size: u32,

    /// How long to wait for a new PostgreSQL connection.
    #[arg(long, env = "SESSION_PG_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub pg_connect_timeout: Duration,

    /// How long a request waits for a free pooled connection before failing as unavailable.
    #[arg(long, env = "SESSION_PG_CHECKOUT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub pg_checkout_timeout: Duration,

    /// How long the change log keeps entries. An instance cut off from the
    /// database for longer loads every session again instead of resuming.
    #[arg(long, env = "SESSION_PG_CHANGE_RETENTION", default_value = "1day", value_parser = humantime::parse_duration)]
    pub pg_change_retention: Duration,

    /// The longest a start waits for the migration lock another process
    /// holds (any role that can connect can take it) before failing.
    #[arg(long, env = "SESSION_PG_MIGRATION_LOCK_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub pg_migration_lock_timeout: Duration,

    /// Migrate into an existing `session` schema another role owns. Off by
    /// default: the schema's owner can change the triggers that log every
    /// change, so it must be trusted as much as this service.
    #[arg(long, env = "SESSION_PG_TRUST_SCHEMA_OWNER")]
    pub pg_trust_schema_owner: bool,

    /// Whether to LISTEN for the change log's notifications, so other
    /// instances' writes arrive at once. `false` behind a pooler that
    /// cannot LISTEN (PgBouncer in transaction pooling mode): changes then
    /// arrive when the log is polled (`--log-poll-interval`).
    #[arg(long, env = "SESSION_PG_WAKE_UPS", default_value_t = true,
        action = clap::ArgAction::Set, value_name = "true|false")]
    pub pg_wake_ups: bool,
}

/// An opened store and how to describe it in logs (never with credentials).
pub struct OpenedStore {
    /// The store.
    pub store: Arc<dyn SessionStore>,
    /// Its change log, when other processes may write to it too (PostgreSQL).
    pub change_log: Option<Arc<dyn ChangeLog>>,
    /// For logs: the backend and, for SQLite, the file.
    pub description: String,
    /// Reads the store's connection pools, for metrics.
    pub pools: PoolReader,
}

/// Opens the store the arguments name, applying migrations if asked.
///
/// # Errors
///
/// The database cannot be reached or opened, or a migration failed.
pub async fn open(args: &DatabaseArgs, migrate: bool) -> anyhow::Result<OpenedStore> {
    match database_url(args)? {
        DatabaseUrl::Sqlite(path) => {
            let store = open_sqlite(&path, migrate).await?;
            for version in store.migrations_applied() {
                tracing::info!(version, "applied migration");
            }
            let store = Arc::new(store);
            let pools = Arc::clone(&store);
            Ok(OpenedStore {
                description: format!("sqlite:{}", path.display()),
                pools: Arc::new(move || {
                    let status = pools.pool_status();
                    vec![
                        pool_use("sqlite_readers", status.readers),
                        pool_use("sqlite_writer", status.writer),
                    ]
                }),
                store,
                // One process owns a SQLite file: its own writes keep its cache complete.
                change_log: None,
            })
        }
        DatabaseUrl::Postgres(url) => {
            let (store, description) = connect_postgres(&url, args).await?;
            if migrate {
                for version in migrate_postgres(&store).await? {
                    tracing::info!(version, "applied migration");
                }
            } else {
                // As the SQLite store does: never serve a schema behind or
                // ahead of this build.
                store
                    .check_schema()
                    .await
                    .context("the PostgreSQL schema cannot be used as it is")?;
            }
            let store = Arc::new(store);
            let pools = Arc::clone(&store);
            Ok(OpenedStore {
                pools: Arc::new(move || {
                    let status = pools.pool_status();
                    vec![PoolUse {
                        pool: "postgres",
                        max: status.max,
                        open: status.open,
                        in_use: status.in_use,
                        waiting: status.waiting,
                    }]
                }),
                store: store.clone(),
                // Other instances and host backends may write to the same database.
                change_log: Some(store),
                description,
            })
        }
    }
}

const fn pool_use(pool: &'static str, status: session_sqlite::PoolStatus) -> PoolUse {
    PoolUse {
        pool,
        max: status.max,
        open: status.open,
        in_use: status.in_use,
        waiting: status.waiting,
    }
}

/// `session-app migrate`: applies pending migrations and prints what it did.
///
/// # Errors
///
/// The database cannot be reached or a migration failed.
pub async fn migrate(args: &DatabaseArgs) -> anyhow::Result<()> {
    let (target, applied) = match database_url(args)? {
        DatabaseUrl::Sqlite(path) => {
            let store = open_sqlite(&path, true).await?;
            (
                format!("sqlite:{}", path.display()),
                store.migrations_applied().to_vec(),
            )
        }
        DatabaseUrl::Postgres(url) => {
            let (store, description) = connect_postgres(&url, args).await?;
            (description, migrate_postgres(&store).await?)
        }
    };
    report_migrations(&target, &applied);
    Ok(())
}

fn report_migrations(target: &str, applied: &[String]) {
    if applied.is_empty() {
        println!("{target}: schema already up to date");
    }
    for version in applied {
        println!("{target}: applied {version}");
    }
}

/// The database URL from `--database-url`, or the file `--database-url-file`
/// names, or the default SQLite file.
fn database_url(args: &DatabaseArgs) -> Result<DatabaseUrl, ConfigError> {
    if let Some(path) = &args.database_url_file {
        const FLAG: &str = "--database-url-file";
        return secret::read_single(path, FLAG)?
            .parse()
            .map_err(|reason: String| ConfigError(format!("{FLAG} {}: {reason}", path.display())));
    }
    Ok(args
        .database_url
        .clone()
        .unwrap_or_else(|| DatabaseUrl::Sqlite(PathBuf::from(DEFAULT_SQLITE_PATH))))
}

/// Connects to PostgreSQL; the description names host and database, never credentials.
async fn connect_postgres(
    url: &str,
    args: &DatabaseArgs,
) -> anyhow::Result<(PgSessionStore, String)> {
    let pool = &args.pool;
    let flag = if args.database_url_file.is_some() {
        "--database-url-file"
    } else {
        "--database-url"
    };
    let mut config =
        PgConfig::from_url(url).map_err(|err| ConfigError(format!("{flag}: {err}")))?;
    // libpq's order: a password in the URL, then the environment's.
    if !config.has_password()
        && let Some(password) = std::env::var_os(PASSWORD_ENV).filter(|value| !value.is_empty())
    {
        config = config.password(password.as_encoded_bytes());
    }
    let config = config
        .pool_size(pool.pg_pool_size as usize)
        .connect_timeout(pool.pg_connect_timeout)
        .checkout_timeout(pool.pg_checkout_timeout)
        .change_retention(pool.pg_change_retention)
        .migration_lock_timeout(pool.pg_migration_lock_timeout)
        .trust_schema_owner(pool.pg_trust_schema_owner)
        .wake_ups(pool.pg_wake_ups);
    let description = format!(
        "postgres (tls: {:?}, wake-ups: {})",
        config.ssl_mode(),
        if pool.pg_wake_ups { "on" } else { "off" }
    );
    let store = PgSessionStore::connect(config)
        .await
        .context("could not connect to PostgreSQL")?;
    Ok((store, description))
}

async fn migrate_postgres(store: &PgSessionStore) -> anyhow::Result<Vec<String>> {
    store
        .migrate()
        .await
        .context("could not apply the PostgreSQL migrations")
}

async fn open_sqlite(path: &std::path::Path, migrate: bool) -> anyhow::Result<SqliteSessionStore> {
    let options = SqliteOptions::default().migrate(migrate);
    // The error names the file; its source says what SQLite reported.
    Ok(SqliteSessionStore::open_with(path, options).await?)
}
