//! The schema's migrations, embedded in the binary, and running them safely
//! from several processes at once.

use diesel::OptionalExtension;
use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::sql_types::BigInt;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use session_core::port::store::{BoxError, StoreError};

use crate::pool::Connection;
use crate::store::PgSessionStore;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

/// The advisory lock that serialises migrators: "session\0" in ASCII. Any
/// process of any version migrating this database takes the same lock.
const MIGRATION_LOCK: i64 = 0x7365_7373_696f_6e00;

impl PgSessionStore {
    /// Brings the `session` schema up to date and returns the names of the
    /// migrations this call applied, oldest first (empty when it was current).
    ///
    /// Safe at every start and from several processes at once: migrators take
    /// turns on a PostgreSQL advisory lock, so each migration runs once, and
    /// each runs in its own transaction. Diesel's bookkeeping table lives in the
    /// `session` schema too, apart from any the host application keeps.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the database cannot be reached;
    /// [`StoreError::Failed`] if a migration fails, in which case that
    /// migration is rolled back and the ones before it stay applied.
    pub async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        // A connection of its own, closed afterwards: it holds a session-level
        // lock and a changed search_path that must not go back to the pool.
        let mut connection = Connection::take(self.connection().await?);
        take_migration_lock(&mut connection, self.migration_lock_timeout).await?;
        if !self.trust_schema_owner {
            refuse_a_schema_owned_by_another_role(&mut connection).await?;
        }
        // Under the lock, because concurrent CREATE SCHEMA IF NOT EXISTS can
        // still collide.
        connection
            .batch_execute("CREATE SCHEMA IF NOT EXISTS session; SET search_path TO session")
            .await
            .map_err(|err| failure("preparing the schema", Box::new(err)))?;

        // A schema written by a newer build may depend on behaviour this one
        // lacks (the SQLite store refuses it too).
        let (newer, _) = schema_versions(&mut connection).await?;
        if !newer.is_empty() {
            return Err(StoreError::Failed(Box::new(SchemaError::Newer(newer))));
        }

        // Diesel's migration harness is synchronous: it runs on a blocking
        // thread, driving the async connection through the runtime's handle.
        let (mut connection, applied) = tokio::task::spawn_blocking(move || {
            let mut harness = AsyncConnectionWrapper::<AsyncPgConnection>::from(connection);
            let applied = run_pending(&mut harness);
            (harness.into_inner(), applied)
        })
        .await
        .map_err(|err| failure("running migrations", Box::new(err)))?;
        let applied = applied?;

        // Closing the connection would release the lock too; unlocking first
        // lets a waiting migrator go on at once.
        advisory(&mut connection, "pg_advisory_unlock").await?;
        for name in &applied {
            tracing::info!(migration = %name, "applied migration");
        }
        Ok(applied)
    }
}

impl PgSessionStore {
    /// Checks, without changing anything, that the `session` schema is
    /// exactly what this build expects: for a service started with
    /// migrations off, which must not serve a schema behind or ahead of it.
    ///
    /// # Errors
    ///
    /// [`StoreError::Failed`] with the versions pending or unknown;
    /// [`StoreError::Unavailable`] if the database cannot be reached.
    pub async fn check_schema(&self) -> Result<(), StoreError> {
        let mut connection = self.connection().await?;
        let (newer, pending) = schema_versions(&mut connection).await?;
        if !newer.is_empty() {
            return Err(StoreError::Failed(Box::new(SchemaError::Newer(newer))));
        }
        if !pending.is_empty() {
            return Err(StoreError::Failed(Box::new(SchemaError::Pending(pending))));
        }
        Ok(())
    }
}

/// Refuses to migrate into an existing `session` schema that another role
/// owns: its owner can replace the triggers and functions that log every
/// change, and so decide what every instance believes.
async fn refuse_a_schema_owned_by_another_role(
    connection: &mut AsyncPgConnection,
) -> Result<(), StoreError> {
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
    .await
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

/// The versions applied that this build does not know, and the versions it
/// knows that are not applied, each oldest first.
async fn schema_versions(
    connection: &mut AsyncPgConnection,
) -> Result<(Vec<String>, Vec<String>), StoreError> {
    #[derive(diesel::QueryableByName)]
    struct Applied {
        #[diesel(sql_type = diesel::sql_types::Text)]
        version: String,
    }
    let known: Vec<String> = MigrationSource::<Pg>::migrations(&MIGRATIONS)
        .map_err(|err| failure("listing this build's migrations", err))?
        .iter()
        .map(|migration| migration.name().version().to_string())
        .collect();
    #[derive(diesel::QueryableByName)]
    struct Present {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        present: bool,
    }
    // Before the first migration neither the schema nor the table exists.
    let Present { present } = diesel::sql_query(
        "SELECT to_regclass('session.__diesel_schema_migrations') IS NOT NULL AS present",
    )
    .get_result(connection)
    .await
    .map_err(|err| failure("looking for the applied migrations", Box::new(err)))?;
    let applied: Vec<Applied> = if present {
        diesel::sql_query(
            "SELECT version::text AS version FROM session.__diesel_schema_migrations ORDER BY 1",
        )
        .load(connection)
        .await
        .map_err(|err| failure("reading the applied migrations", Box::new(err)))?
    } else {
        Vec::new()
    };
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

/// Takes the migration lock, waiting at most `limit`: any role that can
/// connect can take an advisory lock, so an unbounded wait would let it hold
/// every start hostage.
async fn take_migration_lock(
    connection: &mut AsyncPgConnection,
    limit: std::time::Duration,
) -> Result<(), StoreError> {
    #[derive(diesel::QueryableByName)]
    struct Taken {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        taken: bool,
    }
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let Taken { taken } = diesel::sql_query("SELECT pg_try_advisory_lock($1) AS taken")
            .bind::<BigInt, _>(MIGRATION_LOCK)
            .get_result(connection)
            .await
            .map_err(|err| failure("taking the migration lock", Box::new(err)))?;
        if taken {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StoreError::Unavailable(Box::new(LockTimedOut(limit))));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
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

/// Takes or releases the migration lock (`pg_advisory_lock` or `pg_advisory_unlock`).
async fn advisory(
    connection: &mut AsyncPgConnection,
    function: &'static str,
) -> Result<(), StoreError> {
    diesel::sql_query(format!("SELECT {function}($1)"))
        .bind::<BigInt, _>(MIGRATION_LOCK)
        .execute(connection)
        .await
        .map(drop)
        .map_err(|err| failure(function, Box::new(err)))
}

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
