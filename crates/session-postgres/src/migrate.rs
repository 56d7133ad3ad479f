//! The schema's migrations, embedded in the binary, and running them safely
//! from several processes at once.

use diesel::pg::Pg;
use diesel::sql_types::BigInt;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use session_core::StoreError;

use crate::error::Internal;
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
        advisory(&mut connection, "pg_advisory_lock").await?;
        // Under the lock, because concurrent CREATE SCHEMA IF NOT EXISTS can
        // still collide.
        connection
            .batch_execute("CREATE SCHEMA IF NOT EXISTS session; SET search_path TO session")
            .await
            .map_err(|err| unreachable_or_failed("prepare the session schema", err))?;

        // Diesel's migration harness is synchronous: it runs on a blocking
        // thread, driving the async connection through the runtime's handle.
        let (connection, applied) = tokio::task::spawn_blocking(move || {
            let mut harness = AsyncConnectionWrapper::<AsyncPgConnection>::from(connection);
            let applied = run_pending(&mut harness);
            (harness.into_inner(), applied)
        })
        .await
        .map_err(|err| StoreError::Failed(Box::new(Internal(format!("migration task: {err}")))))?;
        let applied = applied?;

        let mut connection = connection;
        // Closing the connection would release the lock too; unlocking first
        // lets a waiting migrator go on at once.
        advisory(&mut connection, "pg_advisory_unlock").await?;
        for name in &applied {
            tracing::info!(migration = %name, "applied migration");
        }
        Ok(applied)
    }
}

fn run_pending(harness: &mut impl MigrationHarness<Pg>) -> Result<Vec<String>, StoreError> {
    let failed = |err: Box<dyn std::error::Error + Send + Sync>| match err
        .downcast::<diesel::result::Error>()
    {
        Ok(err) => unreachable_or_failed("run migrations", *err),
        Err(err) => StoreError::Failed(Box::new(Internal(format!("run migrations: {err}")))),
    };
    let pending = harness.pending_migrations(MIGRATIONS).map_err(failed)?;
    let names = pending.iter().map(|m| m.name().to_string()).collect();
    harness.run_migrations(&pending).map_err(failed)?;
    Ok(names)
}

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
        .map_err(|err| unreachable_or_failed(function, err))
}

/// Lost connections are retryable; anything else during a migration is not.
fn unreachable_or_failed(step: &'static str, err: diesel::result::Error) -> StoreError {
    use diesel::result::{DatabaseErrorKind, Error};
    let message = Internal(format!("{step}: {err}"));
    match err {
        Error::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        ) => StoreError::Unavailable(Box::new(message)),
        _ => StoreError::Failed(Box::new(message)),
    }
}
