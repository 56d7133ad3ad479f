//! Create: sessions per second through `SessionService::create`, on
//! PostgreSQL and on SQLite, against the same single-row INSERT into the
//! same table issued directly through the same driver at the same
//! concurrency.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use session_core::{AccountId, ClientMetadata, MemoryCache, SessionService};
use session_postgres::{PgConfig, PgSessionStore};
use session_sqlite::SqliteSessionStore;
use session_test_postgres::TestDatabase;

use crate::Context;
use crate::measure::{Measured, Worker, drive, drive_blocking, rotation};
use crate::report::{Section, Target};

pub(crate) fn run(ctx: &Context) -> anyhow::Result<Vec<Section>> {
    let plan = if ctx.quick {
        Plan {
            concurrency: 4,
            rounds: 1,
            warmup: Duration::from_millis(100),
            window: Duration::from_millis(300),
        }
    } else {
        Plan {
            concurrency: 16,
            rounds: 5,
            warmup: Duration::from_millis(200),
            window: Duration::from_secs(2),
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut section = Section::new(
        "create",
        "Create",
        "the same single-row INSERT into the same table, issued directly through the same \
         driver at the same concurrency",
    );
    section.note(format!(
        "{} tasks creating back to back; {} interleaved rounds of {:?} per subject (after a \
         {:?} warm-up); ratio = median of per-round subject / floor throughput.",
        plan.concurrency, plan.rounds, plan.window, plan.warmup
    ));
    section.note(
        "PostgreSQL is a throwaway local server (session-test-postgres: fsync and \
         synchronous_commit off), so the figures are CPU and round trips, not a disk. \
         The store's pool has as many connections as there are tasks; the floor gives \
         each task a connection of its own. As in session-app, the service follows the \
         change feed (LISTEN/NOTIFY): each INSERT, the floor's too, fires the trigger that \
         publishes it, and the service also applies its own notifications.",
    );
    section.note(
        "SQLite is a file in the system temporary directory with the store's settings (WAL, \
         synchronous = FULL): every commit waits for the disk. It admits one writer, so the \
         floor's threads share one connection, as the store's writes share its writer.",
    );

    eprintln!("  create: PostgreSQL");
    let database = TestDatabase::create();
    let postgres = runtime.block_on(postgres(database.url(), &plan))?;
    let ratio = postgres.ratio("service", "floor");
    section.rows.push(
        postgres
            .throughput_row(
                format!("PostgreSQL, {} tasks", plan.concurrency),
                "service",
                "floor",
            )
            .target((!ctx.quick).then(|| Target::ratio_at_least(ratio, 0.70))),
    );
    section.rows.push(postgres.throughput_row(
        "PostgreSQL: the floor's INSERT through a pool that verifies each checkout, as the \
         store's does",
        "verified pool",
        "floor",
    ));
    drop(database);

    eprintln!("  create: SQLite");
    let path = ctx.scratch.join("create.db");
    let sqlite = runtime.block_on(sqlite(&path, &plan))?;
    section.rows.push(sqlite.throughput_row(
        format!("SQLite, {} tasks", plan.concurrency),
        "service",
        "floor",
    ));
    Ok(vec![section])
}

struct Plan {
    concurrency: usize,
    rounds: usize,
    warmup: Duration,
    window: Duration,
}

/// A task creating sessions through the service.
struct ServiceCreate {
    service: SessionService,
    account: AccountId,
}

impl Worker for ServiceCreate {
    async fn work(&mut self) -> anyhow::Result<()> {
        self.service
            .create(self.account, ClientMetadata::default())
            .await?;
        Ok(())
    }
}

/// A task issuing the floor's INSERT on a connection of its own.
struct PgInsert {
    connection: AsyncPgConnection,
    rng: fastrand::Rng,
}

impl Worker for PgInsert {
    async fn work(&mut self) -> anyhow::Result<()> {
        crate::postgres::insert_one(&mut self.connection, &mut self.rng).await
    }
}

/// A task issuing the floor's INSERT on a connection from a pool that
/// checks each connection with a round trip before handing it out.
struct PgPooledInsert {
    pool: Pool<AsyncPgConnection>,
    rng: fastrand::Rng,
}

impl Worker for PgPooledInsert {
    async fn work(&mut self) -> anyhow::Result<()> {
        let mut connection = self.pool.get().await?;
        crate::postgres::insert_one(&mut connection, &mut self.rng).await
    }
}

fn accounts(count: usize) -> anyhow::Result<Vec<AccountId>> {
    (0..count)
        .map(|_| Ok(AccountId::new(uuid::Uuid::new_v4())?))
        .collect()
}

async fn postgres(url: &str, plan: &Plan) -> anyhow::Result<Measured> {
    let config = PgConfig::from_url(url)?.pool_size(plan.concurrency);
    let store = Arc::new(PgSessionStore::connect(config).await?);
    store.migrate().await?;
    // As session-app runs on PostgreSQL: following the change log, so each
    // create is also read back from the log and applied to the cache.
    let service = SessionService::builder(store.clone(), Arc::new(MemoryCache::new()))
        .change_log(store)
        .build();
    let follower = tokio::spawn({
        let service = service.clone();
        async move { service.keep_in_sync().await }
    });
    let began = Instant::now();
    while !service.readiness().await.is_ready() {
        anyhow::ensure!(
            began.elapsed() < Duration::from_secs(60),
            "the service did not follow the change log within a minute"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut creators: Vec<ServiceCreate> = accounts(plan.concurrency)?
        .into_iter()
        .map(|account| ServiceCreate {
            service: service.clone(),
            account,
        })
        .collect();
    let mut inserters = Vec::with_capacity(plan.concurrency);
    for seed in 0..plan.concurrency {
        inserters.push(PgInsert {
            connection: crate::postgres::connect(url).await?,
            rng: fastrand::Rng::with_seed(seed as u64),
        });
    }
    let mut manager_config = ManagerConfig::default();
    manager_config.recycling_method = RecyclingMethod::Verified;
    let manager = AsyncDieselConnectionManager::new_with_config(url, manager_config);
    let pool = Pool::builder(manager).max_size(plan.concurrency).build()?;
    let mut pooled: Vec<PgPooledInsert> = (0..plan.concurrency)
        .map(|seed| PgPooledInsert {
            pool: pool.clone(),
            rng: fastrand::Rng::with_seed(1_000 + seed as u64),
        })
        .collect();

    let mut measured = Measured::default();
    for round in 0..plan.rounds {
        for subject in rotation(round, 3) {
            match subject {
                0 => {
                    let (back, throughput) = drive(creators, plan.warmup, plan.window).await?;
                    creators = back;
                    measured.record("service", throughput)?;
                }
                1 => {
                    let (back, throughput) = drive(inserters, plan.warmup, plan.window).await?;
                    inserters = back;
                    measured.record("floor", throughput)?;
                }
                _ => {
                    let (back, throughput) = drive(pooled, plan.warmup, plan.window).await?;
                    pooled = back;
                    measured.record("verified pool", throughput)?;
                }
            }
        }
    }
    follower.abort();
    Ok(measured)
}

async fn sqlite(path: &std::path::Path, plan: &Plan) -> anyhow::Result<Measured> {
    let store = SqliteSessionStore::open(path).await?;
    let service = SessionService::builder(Arc::new(store), Arc::new(MemoryCache::new())).build();
    service.warm().await?;
    let mut creators: Vec<ServiceCreate> = accounts(plan.concurrency)?
        .into_iter()
        .map(|account| ServiceCreate {
            service: service.clone(),
            account,
        })
        .collect();
    let writer = Mutex::new((crate::sqlite::connect(path)?, fastrand::Rng::with_seed(7)));
    let insert = || {
        let mut writer = writer.lock().unwrap_or_else(PoisonError::into_inner);
        let (connection, rng) = &mut *writer;
        crate::sqlite::insert_one(connection, rng)
    };

    let mut measured = Measured::default();
    for round in 0..plan.rounds {
        for subject in rotation(round, 2) {
            if subject == 0 {
                let (back, throughput) = drive(creators, plan.warmup, plan.window).await?;
                creators = back;
                measured.record("service", throughput)?;
            } else {
                // Nothing else runs meanwhile, so blocking this thread stalls no task.
                let throughput =
                    drive_blocking(plan.concurrency, plan.warmup, plan.window, &insert)?;
                measured.record("floor", throughput)?;
            }
        }
    }
    Ok(measured)
}
