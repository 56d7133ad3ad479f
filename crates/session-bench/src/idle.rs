//! Idle revocation's cost: one round over sessions that are all idle (never
//! seen, created before the cutoff), through the store's own `revoke_idle`
//! in batches of 1,000 (session-core's `MAINTENANCE_BATCH`), on PostgreSQL
//! and on SQLite, per million sessions.
//!
//! The floor is one bare `UPDATE … WHERE revoked_at IS NULL` setting the
//! same columns on a copy of the same rows, with the same triggers: the
//! least a database does to revoke them all, in one statement and with no
//! batching, no idleness check and no lock.

use std::path::Path;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection as _;
use session_core::RevocationReason;
use session_core::config::MAINTENANCE_BATCH;
use session_core::port::store::{Exclusive, SessionStore};
use session_postgres::{PgConfig, PgSessionStore};
use session_sqlite::SqliteSessionStore;
use session_test_postgres::TestDatabase;
use time::OffsetDateTime;
use tokio_postgres::NoTls;

use crate::Context;
use crate::report::{Figure, Row, Section, Unit};
use crate::resolve::sessions_label;

pub(crate) fn run(ctx: &Context) -> anyhow::Result<Vec<Section>> {
    let sessions = if ctx.quick { 2_000 } else { 1_000_000 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut section = Section::new(
        "idle",
        "Idle revocation per million sessions",
        "one bare UPDATE … WHERE revoked_at IS NULL of the same rows, setting the same \
         columns, with the same triggers",
    );
    section.note(format!(
        "{} loaded in bulk, all idle (never seen, created before the cutoff), then one round \
         of `revoke_idle` in batches of {MAINTENANCE_BATCH} (each one statement: on PostgreSQL \
         with the job's advisory lock and the change log's triggers), timed from the first \
         batch to the last; the floor revokes a copy of the rows in one statement. Both \
         scaled to a million sessions. Store calls: one per batch, and one that comes back \
         short.",
        sessions_label(sessions)
    ));

    eprintln!("  idle: PostgreSQL, loading {sessions} sessions twice");
    let (job, floor) = runtime.block_on(async {
        let job = TestDatabase::create();
        let copy = TestDatabase::create();
        for database in [&job, &copy] {
            PgSessionStore::connect(PgConfig::from_url(database.url())?)
                .await?
                .migrate()
                .await?;
            crate::postgres::bulk_load(database.url(), sessions).await?;
        }
        let store = PgSessionStore::connect(PgConfig::from_url(job.url())?).await?;
        let job_round = round(&store, sessions).await?;
        let floor = postgres_floor(copy.url(), sessions).await?;
        anyhow::Ok((job_round, floor))
    })?;
    row(&mut section, "PostgreSQL", sessions, job, floor);

    eprintln!("  idle: SQLite, loading {sessions} sessions twice");
    let job_path = ctx.scratch.join("idle-job.db");
    let floor_path = ctx.scratch.join("idle-floor.db");
    let (job, floor) = runtime.block_on(async {
        for path in [&job_path, &floor_path] {
            drop(SqliteSessionStore::open(path).await?);
            crate::sqlite::bulk_load(path, crate::sqlite::random_hashes(sessions, 17))?;
        }
        let store = SqliteSessionStore::open(&job_path).await?;
        let job_round = round(&store, sessions).await?;
        drop(store);
        anyhow::Ok((job_round, sqlite_floor(&floor_path, sessions)?))
    })?;
    row(&mut section, "SQLite", sessions, job, floor);
    Ok(vec![section])
}

/// What a round took, and in how many store calls.
struct Round {
    took: Duration,
    calls: usize,
}

/// One round over a store whose sessions are all idle a day from now.
async fn round(store: &dyn SessionStore, sessions: usize) -> anyhow::Result<Round> {
    let now = OffsetDateTime::now_utc();
    let cutoff = now + time::Duration::days(1);
    let began = Instant::now();
    let (mut after, mut revoked, mut calls) = (None, 0, 0);
    loop {
        calls += 1;
        let Exclusive::Done(batch) = store
            .revoke_idle(
                cutoff,
                after,
                MAINTENANCE_BATCH,
                now,
                RevocationReason::IDLE,
            )
            .await?
        else {
            anyhow::bail!("no other process runs the job, yet it was busy");
        };
        revoked += batch.len();
        if batch.len() < MAINTENANCE_BATCH as usize {
            break;
        }
        after = batch.last().map(|session| session.id);
    }
    let took = began.elapsed();
    anyhow::ensure!(revoked == sessions, "revoked {revoked} of {sessions}");
    Ok(Round { took, calls })
}

async fn postgres_floor(url: &str, sessions: usize) -> anyhow::Result<Duration> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    let driver = tokio::spawn(connection);
    let began = Instant::now();
    let revoked = client
        .execute(
            "UPDATE session.sessions SET revoked_at = now(), revocation_reason = 'idle' \
             WHERE revoked_at IS NULL",
            &[],
        )
        .await?;
    let took = began.elapsed();
    anyhow::ensure!(usize::try_from(revoked)? == sessions, "revoked {revoked}");
    drop(client);
    driver.await??;
    Ok(took)
}

fn sqlite_floor(path: &Path, sessions: usize) -> anyhow::Result<Duration> {
    use diesel::RunQueryDsl as _;
    let mut connection = crate::sqlite::connect(path)?;
    connection.batch_execute("SELECT 1")?;
    let now = OffsetDateTime::now_utc().unix_timestamp() * 1_000_000;
    let began = Instant::now();
    let revoked = diesel::sql_query(format!(
        "UPDATE sessions SET revoked_at = {now}, revocation_reason = 'idle' \
         WHERE revoked_at IS NULL"
    ))
    .execute(&mut connection)?;
    let took = began.elapsed();
    anyhow::ensure!(revoked == sessions, "revoked {revoked}");
    Ok(took)
}

fn row(section: &mut Section, store: &str, sessions: usize, job: Round, floor: Duration) {
    let per_million = 1e6 / sessions as f64;
    let figure = Figure::new(job.took.as_secs_f64() * per_million, Unit::Seconds);
    let floor = Figure::new(floor.as_secs_f64() * per_million, Unit::Seconds);
    let per_call = job.took.as_secs_f64() * 1e6 / job.calls as f64;
    section.rows.push(
        Row::new(
            format!("{store}: a round over idle sessions"),
            figure,
            floor,
            figure.value / floor.value,
        )
        .detail(
            "store calls per million",
            Figure::new((job.calls as f64 * per_million).round(), Unit::Count),
        )
        .detail("per call", Figure::new(per_call, Unit::Microseconds)),
    );
}
