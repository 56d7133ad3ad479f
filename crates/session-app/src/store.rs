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
use session_core::port::events::EventLog;
use session_core::port::store::SessionStore;
use session_http::{PoolReader, PoolUse};
use session_postgres::{PgConfig, PgSessionStore, Statements};
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

    /// How statements are sent: `cached` (prepared once per connection:
    /// direct connections, or a pooler in session mode) or `per-transaction`
    /// (each call one transaction, nothing left on the server session:
    /// behind a transaction pooler such as PgBouncer with `pool_mode =
    /// transaction`).
    #[arg(long, env = "SESSION_PG_STATEMENTS", default_value = "cached",
        value_parser = ["cached", "per-transaction"])]
    pub pg_statements: String,

    /// A URL straight to PostgreSQL, bypassing a transaction pooler, for
    /// what needs a session of its own: LISTEN for other instances' writes,
    /// and migrations. Its password, if any, as `--database-url`'s. Without
    /// it, behind a pooler, migrations still work and wake-ups fall back to
    /// polling (`/readyz` says `polling`).
    #[arg(long, env = "SESSION_PG_DIRECT_URL", value_parser = DatabaseUrlParser, hide_env_values = true)]
    pub pg_direct_url: Option<DatabaseUrl>,

    /// PostgreSQL's `statement_timeout` for each write (create, revoke,
    /// last-seen marks): past it the write changes nothing and answers 503.
    #[arg(long, env = "SESSION_PG_WRITE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub pg_write_timeout: Duration,

    /// PostgreSQL's `statement_timeout` for each read (lists, the warm, the change log).
    #[arg(long, env = "SESSION_PG_READ_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub pg_read_timeout: Duration,

    /// PostgreSQL's `lock_timeout`: how long a statement waits for a lock
    /// other SQL holds on a session's row or the table before it fails.
    #[arg(long, env = "SESSION_PG_LOCK_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub pg_lock_timeout: Duration,
}

/// An opened store and how to describe it in logs (never with credentials).
pub struct OpenedStore {
    /// The store.
    pub store: Arc<dyn SessionStore>,
    /// Its change log, when other processes may write to it too (PostgreSQL).
    pub change_log: Option<Arc<dyn ChangeLog>>,
    /// Its feed of session events.
    pub events: Arc<dyn EventLog>,
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
                events: store.clone(),
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
                events: store.clone(),
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

/// `session-app revoke-idle`: one round of idle revocation on the
/// database, printing each batch's count.
///
/// It opens the store as `serve` does, without migrating. On PostgreSQL
/// the change log's triggers record each revocation, so running instances
/// drop the sessions within their staleness bound, and each batch takes
/// the job's lock, so it never runs a batch at the same time as an
/// instance's idle revocation. A SQLite file is held by the server that
/// serves it, whose cache no other process could update: opening it fails
/// while a server runs, so stop the server first (its own
/// `--revoke-idle-after` needs no stop).
///
/// # Errors
///
/// A configuration mistake (a limit too short), the database cannot be
/// opened, a batch failed (those before it stand), or another process was
/// running idle revocation.
pub async fn revoke_idle(args: crate::cli::RevokeIdleArgs) -> anyhow::Result<()> {
    use session_core::config::{IdleRevocation, LastSeenSettings};
    use session_core::status::RoundEnd;
    let last_seen = LastSeenSettings {
        flush_interval: args.last_seen_flush_interval,
        ..LastSeenSettings::default()
    };
    let mut idle = IdleRevocation::new(args.older_than, Some(&last_seen)).map_err(|err| {
        ConfigError(format!(
            "--older-than {}: {err} (see --last-seen-flush-interval)",
            humantime::format_duration(args.older_than)
        ))
    })?;
    idle.batch = args.batch_size;
    let opened = open(&args.database, false).await?;
    // No cache to keep: the service only orders the batches. Running
    // instances learn of the revocations from the store.
    let service = session_core::SessionService::builder(
        opened.store,
        Arc::new(session_core::MemoryCache::new()),
    )
    .build();
    let round = service.revoke_idle(&idle, args.dry_run).await;
    let verb = if args.dry_run {
        "would revoke"
    } else {
        "revoked"
    };
    for (index, count) in round.batches.iter().enumerate() {
        println!("batch {}: {verb} {count}", index + 1);
    }
    println!(
        "{}: {verb} {} sessions idle for over {}",
        opened.description,
        round.total(),
        humantime::format_duration(args.older_than)
    );
    match round.end {
        RoundEnd::Complete => Ok(()),
        RoundEnd::Busy => Err(anyhow::anyhow!(
            "stopped: another instance is running idle revocation now; run again later"
        )),
        RoundEnd::Failed(err) => {
            Err(anyhow::Error::new(err)
                .context("stopped at a batch that failed and changed nothing"))
        }
    }
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
    let config = pg_config(url, flag)?;
    let statements = Statements::parse(&pool.pg_statements).unwrap_or_default();
    let config = match &pool.pg_direct_url {
        Some(DatabaseUrl::Postgres(direct)) => config.direct(pg_config(direct, "--pg-direct-url")?),
        Some(DatabaseUrl::Sqlite(_)) => {
            return Err(ConfigError(
                "--pg-direct-url: expected postgres://… or postgresql://…".to_owned(),
            )
            .into());
        }
        None => config,
    };
    let config = config
        .statements(statements)
        .write_timeout(pool.pg_write_timeout)
        .read_timeout(pool.pg_read_timeout)
        .lock_timeout(pool.pg_lock_timeout)
        .pool_size(pool.pg_pool_size as usize)
        .connect_timeout(pool.pg_connect_timeout)
        .checkout_timeout(pool.pg_checkout_timeout)
        .change_retention(pool.pg_change_retention)
        .migration_lock_timeout(pool.pg_migration_lock_timeout)
        .trust_schema_owner(pool.pg_trust_schema_owner)
        .wake_ups(pool.pg_wake_ups);
    let description = format!(
        "postgres (tls: {:?}, wake-ups: {}, statements: {statements}, direct url: {})",
        config.ssl_mode(),
        if pool.pg_wake_ups { "on" } else { "off" },
        if config.has_direct() { "set" } else { "none" },
    );
    let store = PgSessionStore::connect(config)
        .await
        .context("could not connect to PostgreSQL")?;
    Ok((store, description))
}

/// A PostgreSQL URL's settings, with the password from `PGPASSWORD` when
/// it has none (libpq's order). Errors name `flag`, never the URL.
fn pg_config(url: &str, flag: &str) -> Result<PgConfig, ConfigError> {
    let config = PgConfig::from_url(url).map_err(|err| ConfigError(format!("{flag}: {err}")))?;
    if !config.has_password()
        && let Some(password) = std::env::var_os(PASSWORD_ENV).filter(|value| !value.is_empty())
    {
        return Ok(config.password(password.as_encoded_bytes()));
    }
    Ok(config)
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
