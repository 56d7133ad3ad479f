//! The schema's migrations, embedded in the binary, and running them safely
//! from several processes at once.

use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::sql_types::BigInt;
use diesel::{Connection as _, OptionalExtension};
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use session_core::port::store::{BoxError, StoreError};

use crate::call::Work;
use crate::store::PgSessionStore;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

/// The advisory lock that serialises migrators: "session\0" in ASCII. Any
/// process of any version migrating this database takes the same lock.
const MIGRATION_LOCK: i64 = 0x7365_7373_696f_6e00;

/// The synchronous view of a connection diesel's migration harness drives.
type Harness = AsyncConnectionWrapper<AsyncPgConnection>;

impl PgSessionStore {
    /// Brings the `session` schema up to date and returns the names of the
    /// migrations this call applied, oldest first (empty when it was current).
    ///
    /// Safe at every start and from several processes at once: migrators take
    /// turns on a PostgreSQL advisory lock, so each migration runs once. The
    /// whole run is one transaction, on a connection of its own (to the
    /// direct URL when one is set), holding the lock for the transaction
    /// (`pg_advisory_xact_lock`) and the schema on its `search_path` with
    /// `SET LOCAL`: both end with it, so a transaction pooler, which hands
    /// each transaction any server session, keeps them for exactly as long
    /// as they are needed, and leaves nothing behind. Each migration runs in
    /// a savepoint of its own. Diesel's bookkeeping table lives in the
    /// `session` schema too, apart from any the host application keeps.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the database cannot be reached;
    /// [`StoreError::Failed`] if a migration fails, in which case that
    /// migration is rolled back and the ones before it stay applied.
    pub async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        let limit = self.direct.limit();
        let connection = match tokio::time::timeout(limit, self.direct.connect()).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(err)) => {
                return Err(StoreError::Unavailable(Box::new(MigrationError {
                    step: "connecting",
                    source: Box::new(err),
                })));
            }
            Err(_) => {
                return Err(StoreError::Unavailable(Box::new(MigrationError {
                    step: "connecting",
                    source: format!("no connection within {limit:?}").into(),
                })));
            }
        };
        let (lock_limit, trust) = (self.migration_lock_timeout, self.trust_schema_owner);
        // Diesel's migration harness is synchronous: it runs on a blocking
        // thread, driving the async connection through the runtime's handle.
        let applied = tokio::task::spawn_blocking(move || {
            let mut harness = Harness::from(connection);
            let mut failed = None;
            let committed = harness.transaction(|harness| {
                migrate_in(harness, lock_limit, trust).map(|run| match run {
                    Ok(applied) => applied,
                    // Keep the migrations applied before the one that
                    // failed (its savepoint is rolled back), as separate
                    // transactions would.
                    Err(err) => {
                        failed = Some(err);
                        Vec::new()
                    }
                })
            });
            match (committed, failed) {
                (Err(abort), _) => Err(StoreError::from(abort)),
                (Ok(_), Some(err)) => Err(err),
                (Ok(applied), None) => Ok(applied),
            }
        })
        .await
        .map_err(|err| failure("running migrations", Box::new(err)))??;
        for name in &applied {
            tracing::info!(migration = %name, "applied migration");
        }
        Ok(applied)
    }

    /// Checks, without changing anything, that the `session` schema is
    /// exactly what this build expects: for a service started with
    /// migrations off, which must not serve a schema behind or ahead of it.
    ///
    /// # Errors
    ///
    /// [`StoreError::Failed`] with the versions pending or unknown;
    /// [`StoreError::Unavailable`] if the database cannot be reached.
    pub async fn check_schema(&self) -> Result<(), StoreError> {
        use diesel_async::RunQueryDsl as _;
        let mut connection = self.connection(Work::Read).await?;
        let statement = async {
            let Present { present } = diesel::sql_query(MIGRATIONS_TABLE_PRESENT)
                .get_result(&mut connection)
                .await?;
            if !present {
                return Ok(Vec::new());
            }
            diesel::sql_query(APPLIED_VERSIONS)
                .load::<Applied>(&mut connection)
                .await
        };
        let outcome = self.bounded(Work::Read, statement).await;
        let applied = self
            .finish("reading the applied migrations", outcome, connection)
            .await?;
        let (newer, pending) = compare_versions(applied)?;
        if !newer.is_empty() {
            return Err(StoreError::Failed(Box::new(SchemaError::Newer(newer))));
        }
        if !pending.is_empty() {
            return Err(StoreError::Failed(Box::new(SchemaError::Pending(pending))));
        }
        Ok(())
    }
}

/// A failure inside the migration transaction: it is rolled back.
#[derive(Debug)]
enum Abort {
    Store(StoreError),
    Database(diesel::result::Error),
}

impl From<diesel::result::Error> for Abort {
    fn from(err: diesel::result::Error) -> Self {
        Self::Database(err)
    }
}

impl From<StoreError> for Abort {
    fn from(err: StoreError) -> Self {
        Self::Store(err)
    }
}

impl From<Abort> for StoreError {
    fn from(abort: Abort) -> Self {
        match abort {
            Abort::Store(err) => err,
            Abort::Database(err) => failure("ending the migration transaction", Box::new(err)),
        }
    }
}

/// The migration run inside its transaction: lock, checks, pending
/// migrations. `Ok(Err(_))` is a migration that failed after others were
/// applied: the transaction commits them.
fn migrate_in(
    harness: &mut Harness,
    lock_limit: std::time::Duration,
    trust_schema_owner: bool,
) -> Result<Result<Vec<String>, StoreError>, Abort> {
    use diesel::connection::SimpleConnection as _;
    take_migration_lock(harness, lock_limit)?;
    if !trust_schema_owner {
        refuse_a_schema_owned_by_another_role(harness)?;
    }
    // Under the lock, because concurrent CREATE SCHEMA IF NOT EXISTS can
    // still collide.
    harness
        .batch_execute("CREATE SCHEMA IF NOT EXISTS session; SET LOCAL search_path TO session")
        .map_err(|err| failure("preparing the schema", Box::new(err)))?;
    // A schema written by a newer build may depend on behaviour this one
    // lacks (the SQLite store refuses it too).
    let (newer, _) = compare_versions(applied_versions(harness)?)?;
    if !newer.is_empty() {
        return Err(StoreError::Failed(Box::new(SchemaError::Newer(newer))).into());
    }
    Ok(run_pending(harness))
}

/// Refuses to migrate into an existing `session` schema that another role
/// owns: its owner can replace the triggers and functions that log every
/// change, and so decide what every instance believes.
fn refuse_a_schema_owned_by_another_role(connection: &mut Harness) -> Result<(), StoreError> {
    use diesel::RunQueryDsl as _;
    #[derive(diesel::QueryableByName)]
    struct Owner {
        #[diesel(sql_type = diesel::sql_types::Text)]
        owner: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        current: String,
    }
    let owner: Option<Owner> = diesel::sql_query(
        "SELECT pg_get_userbyid(nspowner)::text AS owner, current_user::text AS current \
         FROM pg_namespace WHERE nspname = 'session'",
    )
    .get_result(connection)
    .optional()
    .map_err(|err| failure("reading the schema's owner", Box::new(err)))?;
    match owner {
        Some(Owner { owner, current }) if owner != current => {
            Err(StoreError::Failed(Box::new(SchemaError::ForeignOwner {
                owner,
                current,
            })))
        }
        _ => Ok(()),
    }
}

/// A schema this build must not serve.
#[derive(Debug, thiserror::Error)]
enum SchemaError {
    #[error(
        "the schema `session` is owned by role `{owner}`, not `{current}`, which migrates: \
         its owner can change the triggers that log every change. Migrate as `{owner}`, or \
         trust it explicitly (PgConfig::trust_schema_owner, --pg-trust-schema-owner)"
    )]
    ForeignOwner { owner: String, current: String },
    #[error(
        "the session schema was migrated by a newer version (unknown migrations: {}); \
         upgrade this program",
        .0.join(", ")
    )]
    Newer(Vec<String>),
    #[error(
        "the session schema needs migrations {} and migrating at start is off; \
         run `session-app migrate` first",
        .0.join(", ")
    )]
    Pending(Vec<String>),
}

/// Whether diesel's bookkeeping table exists: before the first migration
/// neither the schema nor the table does.
const MIGRATIONS_TABLE_PRESENT: &str =
    "SELECT to_regclass('session.__diesel_schema_migrations') IS NOT NULL AS present";

/// The versions applied, oldest first.
const APPLIED_VERSIONS: &str =
    "SELECT version::text AS version FROM session.__diesel_schema_migrations ORDER BY 1";

#[derive(diesel::QueryableByName)]
struct Present {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    present: bool,
}

#[derive(diesel::QueryableByName)]
struct Applied {
    #[diesel(sql_type = diesel::sql_types::Text)]
    version: String,
}

/// The versions applied, read inside the migration transaction.
fn applied_versions(connection: &mut Harness) -> Result<Vec<Applied>, StoreError> {
    use diesel::RunQueryDsl as _;
    let Present { present } = diesel::sql_query(MIGRATIONS_TABLE_PRESENT)
        .get_result(connection)
        .map_err(|err| failure("looking for the applied migrations", Box::new(err)))?;
    if !present {
        return Ok(Vec::new());
    }
    diesel::sql_query(APPLIED_VERSIONS)
        .load(connection)
        .map_err(|err| failure("reading the applied migrations", Box::new(err)))
}

/// The versions applied that this build does not know, and the versions it
/// knows that are not applied, each oldest first.
fn compare_versions(applied: Vec<Applied>) -> Result<(Vec<String>, Vec<String>), StoreError> {
    let known: Vec<String> = MigrationSource::<Pg>::migrations(&MIGRATIONS)
        .map_err(|err| failure("listing this build's migrations", err))?
        .iter()
        .map(|migration| migration.name().version().to_string())
        .collect();
    let applied: Vec<String> = applied.into_iter().map(|row| row.version).collect();
    let newer = applied
        .iter()
        .filter(|version| !known.contains(version))
        .cloned()
        .collect();
    let pending = known
        .into_iter()
        .filter(|version| !applied.contains(version))
        .collect();
    Ok((newer, pending))
}

fn run_pending(harness: &mut impl MigrationHarness<Pg>) -> Result<Vec<String>, StoreError> {
    let pending = harness
        .pending_migrations(MIGRATIONS)
        .map_err(|err| failure("listing pending migrations", err))?;
    let names = pending.iter().map(|m| m.name().to_string()).collect();
    harness
        .run_migrations(&pending)
        .map_err(|err| failure("running migrations", err))?;
    Ok(names)
}

/// Takes the migration lock for the transaction, waiting at most `limit`:
/// any role that can connect can take an advisory lock, so an unbounded
/// wait would let it hold every start hostage.
fn take_migration_lock(
    connection: &mut Harness,
    limit: std::time::Duration,
) -> Result<(), StoreError> {
    use diesel::RunQueryDsl as _;
    #[derive(diesel::QueryableByName)]
    struct Taken {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        taken: bool,
    }
    let deadline = std::time::Instant::now() + limit;
    loop {
        let Taken { taken } = diesel::sql_query("SELECT pg_try_advisory_xact_lock($1) AS taken")
            .bind::<BigInt, _>(MIGRATION_LOCK)
            .get_result(connection)
            .map_err(|err| failure("taking the migration lock", Box::new(err)))?;
        if taken {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(StoreError::Unavailable(Box::new(LockTimedOut(limit))));
        }
        // A blocking thread of the migration's own.
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Another session held the migration lock for longer than the wait allowed.
#[derive(Debug, thiserror::Error)]
#[error(
    "another session has held the migration lock for over {0:?} (PostgreSQL advisory lock \
     {MIGRATION_LOCK}; find its holder with `SELECT pid FROM pg_locks WHERE locktype = \
     'advisory' AND classid = 1936028531 AND objid = 1768910336`)"
)]
struct LockTimedOut(std::time::Duration);

/// A step of a migration run that failed.
#[derive(Debug, thiserror::Error)]
#[error("migrating the session schema failed while {step}")]
struct MigrationError {
    step: &'static str,
    #[source]
    source: BoxError,
}

/// A lost connection is retryable; anything else during a migration is not.
fn failure(step: &'static str, source: BoxError) -> StoreError {
    use diesel::result::{DatabaseErrorKind, Error};
    let lost = matches!(
        source.downcast_ref::<Error>(),
        Some(Error::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        ))
    );
    let error = Box::new(MigrationError { step, source });
    if lost {
        StoreError::Unavailable(error)
    } else {
        StoreError::Failed(error)
    }
}
