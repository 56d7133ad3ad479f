//! Create: sessions per second through `SessionService::create`, on
//! PostgreSQL and on SQLite, against the same single-row INSERT into the
//! same table issued directly through the same driver at the same
//! concurrency.
//!
//! On PostgreSQL it also measures what the change log costs writers: with
//! other instances following it and without, and what sending NOTIFY from
//! the writing transaction (as the triggers did before) would cost.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use hdrhistogram::Histogram;
use session_core::status::ChangeLogStats;
use session_core::{
    AccountId, BackgroundTasks, ClientMetadata, Error as ServiceError, MemoryCache, SessionService,
    SessionToken,
};
use session_postgres::{PgConfig, PgSessionStore};
use session_sqlite::SqliteSessionStore;
use session_test_postgres::{TestDatabase, TestServer};
use tokio_postgres::NoTls;

use crate::Context;
use crate::measure::{Measured, Worker, drive, drive_blocking, histogram, rotation};
use crate::report::{Figure, Row, Section, Target, Unit};

/// Other instances following the change log while the writers create.
const FOLLOWERS: usize = 2;
/// The target: followers may cost writers at most 10%.
const FOLLOWERS_TARGET: f64 = 0.90;
/// The series of the wake-ups each follower received a second.
const WAKE_UPS: &str = "follower wake-ups a second";
/// The series of the change-log reads each follower made a second.
const READS: &str = "follower log reads a second";
/// With followers on, one writer more revokes a session it has just created
/// every [`PROBE_EVERY`], for propagation at saturation.
const PROBE_EVERY: Duration = Duration::from_millis(10);
/// Between two resolves on a follower while waiting for it to refuse a
/// revoked token: the probe's resolution.
const PROBE_POLL: Duration = Duration::from_micros(100);
/// How long one probe's revocation may take to reach a follower before it
/// is counted lost: the followers' staleness bound, past which a ready
/// follower must have applied it.
const PROBE_GIVE_UP: Duration = Duration::from_secs(2);
/// The probe's series: the writing service's revoke call, and from its start
/// to each follower's refusal, in microseconds.
const PROBE_REVOKE: &str = "probe: revoke";
const PROBE_PROPAGATION: &str = "probe: revoke → refused by a follower";
/// Per round, summed over the probes: a session just created that a
/// follower refused once it had caught up, and a revocation a follower had
/// not applied after [`PROBE_GIVE_UP`].
const PROBE_LOST_CREATES: &str = "probe: creates a follower never applied";
const PROBE_LOST_REVOCATIONS: &str = "probe: revocations a follower never applied";
/// Per round, summed over the followers, once they have caught up after the
/// writers stopped: sessions active in the store missing from a follower's
/// cache, and sessions in it the store no longer holds active (as counts:
/// one of each would cancel out, so these are lower bounds).
const CACHE_SHORT: &str = "followers' caches short of the store";
const CACHE_OVER: &str = "followers' caches over the store";

pub(crate) fn run(ctx: &Context) -> anyhow::Result<Vec<Section>> {
    let plan = if ctx.quick {
        Plan {
            writers: &[4],
            rounds: 1,
            warmup: Duration::from_millis(50),
            window: Duration::from_millis(200),
        }
    } else {
        Plan {
            writers: &[16, 64],
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
        "Tasks creating back to back; {} interleaved rounds of {:?} per subject (after a \
         {:?} warm-up); ratio = median of per-round subject / floor throughput.",
        plan.rounds, plan.window, plan.warmup
    ));
    section.note(
        "PostgreSQL is a throwaway local server (session-test-postgres: fsync and \
         synchronous_commit off), so the figures are CPU and round trips, not a disk. \
         The store's pool has as many connections as there are writers; the floor gives \
         each task a connection of its own. As in session-app, the writing service follows \
         the change log itself: each INSERT, the floor's too, fires the trigger that logs \
         it; the service's store also sends a NOTIFY after its commits (at once, unless \
         one is in flight: commits meanwhile share the next; only a revocation that \
         overlaps no other notifies from its own commit, never a create), and the service \
         applies its own changes. The tables are \
         emptied (TRUNCATE) before every subject's round, so each writes into a table of \
         the same size.",
    );
    section.note(format!(
        "Followers on: {FOLLOWERS} more in-process `SessionService`s over stores of their \
         own, each following the change log with its background tasks (as other instances \
         would; they share the \
         cores with the writers, as on one machine); off: none. `÷ followers off` is the \
         median per-round ratio to the same writers with followers off; the target is \
         the issue's, ≥ {FOLLOWERS_TARGET:.2}. `not listening`: the followers run with \
         `PgConfig::wake_ups(false)`, reading the log every 500 ms."
    ));
    section.note(format!(
        "A revocation at saturation: in rounds of their own, with {FOLLOWERS} followers \
         listening, one thread more creates a session on the writing service every \
         {PROBE_EVERY:?}, waits until both followers accept it, revokes it and resolves it \
         on each follower every {PROBE_POLL:?} until refused; figure: from the start of the \
         revoke to a follower's refusal, once per follower; floor: the revoke call itself \
         (its commit). `writers ÷ unprobed`: the writers' throughput in those rounds over \
         theirs with followers and no probe. The target is the propagation section's: p99 \
         under {:?}. `never applied`: sessions just created that a follower refused once \
         caught up (a miss waits for a log read that started after it arrived), and \
         revocations a follower had not applied after {PROBE_GIVE_UP:?} (its staleness \
         bound); left out of the figures.",
        crate::propagation::TARGET_P99
    ));
    section.note(
        "`caches short of` / `over the store`: after every round with followers (all four \
         kinds), each follower resolves a random token, a miss that waits for a read of the \
         log that started after the writers stopped; then its cache should hold exactly \
         the store's active sessions. Summed over followers and rounds, shortfall and \
         excess apart (as counts, a lost create and a lost revocation cancel out: lower \
         bounds). Counted, not a failure: the harness measures, the tests assert.",
    );
    section.note(
        "NOTIFY in the writing transaction (as before the 2026-11-30 migration): the INSERT \
         trigger's function (session.log_inserted) replaced, in this bench-only database, \
         by its migrated definition plus a PERFORM pg_notify, as the triggers did before; \
         its floor is the direct INSERT under the same trigger; `÷ as migrated` compares \
         each to the same subject with the migrated trigger. `nobody listening`: the \
         floor's INSERT with that NOTIFY while the writing service's background tasks are \
         stopped, so no connection listens: what sending NOTIFY costs a commit with no \
         listener to signal.",
    );
    section.note(
        "Durable commits: a PostgreSQL server of its own with fsync, synchronous_commit and \
         full_page_writes on (the others' are off), its data on this machine's disk; no \
         service and no listener, only the floor's INSERT with NOTIFY in its transaction \
         and as migrated, in alternating rounds.",
    );
    section.note(
        "SQLite is a file in the system temporary directory with the store's settings (WAL, \
         synchronous = FULL): every commit waits for the disk. It admits one writer, so the \
         floor's threads share one connection, as the store's writes share its writer.",
    );

    let database = TestDatabase::create();
    for (level, &writers) in plan.writers.iter().enumerate() {
        eprintln!("  create: PostgreSQL, {writers} writers");
        let measured = runtime.block_on(postgres(database.url(), writers, level == 0, &plan))?;
        postgres_rows(&mut section, &measured, writers, level == 0, ctx.quick);
    }
    drop(database);

    let writers = plan.writers[0];
    eprintln!("  create: PostgreSQL with durable commits, {writers} tasks");
    let durable = runtime.block_on(durable(writers, &plan))?;
    section.rows.push(durable.throughput_row(
        format!(
            "PostgreSQL, durable commits, {writers} tasks: the floor's INSERT with NOTIFY in \
             its transaction and nobody listening, beside it as migrated"
        ),
        subject::FLOOR_UNHEARD,
        subject::FLOOR,
    ));

    eprintln!("  create: SQLite, {writers} writers");
    let path = ctx.scratch.join("create.db");
    let sqlite = runtime.block_on(sqlite(&path, writers, &plan))?;
    section.rows.push(sqlite.throughput_row(
        format!("SQLite, {writers} tasks"),
        "service",
        "floor",
    ));
    Ok(vec![section])
}

/// The subjects measured on PostgreSQL, as their series are named.
mod subject {
    pub(super) const OFF: &str = "followers off";
    pub(super) const ON: &str = "followers on";
    pub(super) const ON_POLLING: &str = "followers on, not listening";
    pub(super) const ON_PROBED: &str = "followers on, a revocation timed";
    pub(super) const FLOOR: &str = "floor";
    pub(super) const VERIFIED_POOL: &str = "verified pool";
    pub(super) const OFF_IN_TX: &str = "followers off, NOTIFY in the writing transaction";
    pub(super) const ON_IN_TX: &str = "followers on, NOTIFY in the writing transaction";
    pub(super) const FLOOR_IN_TX: &str = "floor, NOTIFY in the writing transaction";
    pub(super) const FLOOR_UNHEARD: &str =
        "floor, NOTIFY in the writing transaction, nobody listening";
}

fn postgres_rows(
    section: &mut Section,
    measured: &Measured,
    writers: usize,
    first: bool,
    quick: bool,
) {
    use subject::{
        FLOOR, FLOOR_IN_TX, FLOOR_UNHEARD, OFF, OFF_IN_TX, ON, ON_IN_TX, ON_POLLING, ON_PROBED,
        VERIFIED_POOL,
    };
    let targets = !quick;
    let relative = |subject, of| Figure::new(measured.ratio(subject, of), Unit::Ratio);
    let off = measured.ratio(OFF, FLOOR);
    section.rows.push(
        measured
            .throughput_row(
                format!("PostgreSQL, {writers} writers, followers off"),
                OFF,
                FLOOR,
            )
            .target((targets && first).then(|| Target::ratio_at_least(off, 0.70))),
    );
    let with_followers = measured.ratio(ON, OFF);
    section.rows.push(
        measured
            .throughput_row(
                format!("PostgreSQL, {writers} writers, {FOLLOWERS} followers"),
                ON,
                FLOOR,
            )
            .target(targets.then(|| {
                Target::relative_at_least(with_followers, FOLLOWERS_TARGET, "followers off")
            }))
            .detail("÷ followers off", relative(ON, OFF))
            .detail(
                "wake-ups per follower",
                Figure::new(measured.median(WAKE_UPS), Unit::PerSecond),
            )
            .detail(
                "log reads per follower",
                Figure::new(measured.median(READS), Unit::PerSecond),
            )
            .detail(
                "caches short of the store, all rounds with followers",
                Figure::new(measured.sum(CACHE_SHORT), Unit::Count),
            )
            .detail(
                "caches over the store, all rounds with followers",
                Figure::new(measured.sum(CACHE_OVER), Unit::Count),
            ),
    );
    let goal = Figure::new(
        crate::propagation::TARGET_P99.as_secs_f64() * 1e6,
        Unit::Microseconds,
    );
    for (name, q) in [("p50", 0.5), ("p99", 0.99)] {
        let figure = measured.latency_at(PROBE_PROPAGATION, q);
        let floor = measured.latency_at(PROBE_REVOKE, q);
        section.rows.push(
            Row::new(
                format!(
                    "PostgreSQL, {writers} writers, {FOLLOWERS} followers: a revocation → \
                     refused by a follower, {name}"
                ),
                figure,
                floor,
                figure.value / floor.value.max(1.0),
            )
            .target((targets && q == 0.99).then(|| Target::below(figure, goal)))
            .detail("max", measured.latency_at(PROBE_PROPAGATION, 1.0))
            .detail(
                "followers reached",
                Figure::new(
                    measured.latency_count(PROBE_PROPAGATION) as f64,
                    Unit::Count,
                ),
            )
            .detail("writers ÷ unprobed", relative(ON_PROBED, ON))
            .detail(
                "creates never applied",
                Figure::new(measured.sum(PROBE_LOST_CREATES), Unit::Count),
            )
            .detail(
                "revocations never applied",
                Figure::new(measured.sum(PROBE_LOST_REVOCATIONS), Unit::Count),
            ),
        );
    }
    section.rows.push(
        measured
            .throughput_row(
                format!("PostgreSQL, {writers} writers, {FOLLOWERS} followers not listening"),
                ON_POLLING,
                FLOOR,
            )
            .detail("÷ followers off", relative(ON_POLLING, OFF)),
    );
    if first {
        section.rows.push(measured.throughput_row(
            format!(
                "PostgreSQL, {writers} tasks: the floor's INSERT through a pool that verifies \
                 each checkout, as the store's does"
            ),
            VERIFIED_POOL,
            FLOOR,
        ));
    }
    section.rows.push(
        measured
            .throughput_row(
                format!(
                    "PostgreSQL, {writers} writers, followers off, NOTIFY in the writing \
                     transaction (as before)"
                ),
                OFF_IN_TX,
                FLOOR_IN_TX,
            )
            .detail("÷ as migrated", relative(OFF_IN_TX, OFF)),
    );
    section.rows.push(
        measured
            .throughput_row(
                format!(
                    "PostgreSQL, {writers} writers, {FOLLOWERS} followers, NOTIFY in the \
                     writing transaction (as before)"
                ),
                ON_IN_TX,
                FLOOR_IN_TX,
            )
            .detail("÷ followers off", relative(ON_IN_TX, OFF_IN_TX))
            .detail("÷ as migrated", relative(ON_IN_TX, ON)),
    );
    section.rows.push(measured.throughput_row(
        format!(
            "PostgreSQL, {writers} tasks: the floor's INSERT with NOTIFY in its transaction, \
             beside it as migrated"
        ),
        FLOOR_IN_TX,
        FLOOR,
    ));
    section.rows.push(measured.throughput_row(
        format!(
            "PostgreSQL, {writers} tasks: the floor's INSERT with NOTIFY in its transaction \
             and nobody listening, beside it as migrated"
        ),
        FLOOR_UNHEARD,
        FLOOR,
    ));
}

struct Plan {
    /// Concurrent writers, one level after the other.
    writers: &'static [usize],
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

/// The writers, the floor, and what each subject needs around it.
struct Bench {
    url: String,
    admin: tokio_postgres::Client,
    trigger: Trigger,
    /// The writing service: as session-app runs, it follows the log too.
    service: SessionService,
    /// The writing service's background tasks, which follow the change
    /// log; stopped while nobody may listen.
    following: Option<BackgroundTasks>,
    followers: Vec<(SessionService, BackgroundTasks)>,
}

impl Bench {
    async fn start(url: &str, writers: usize) -> anyhow::Result<Self> {
        let store =
            Arc::new(PgSessionStore::connect(PgConfig::from_url(url)?.pool_size(writers)).await?);
        store.migrate().await?;
        let admin = admin(url).await?;
        let trigger = Trigger::read(&admin).await?;
        let service = SessionService::builder(store.clone(), Arc::new(MemoryCache::new()))
            .change_log(store)
            .build();
        let following = Some(service.start());
        ready(&service, "the writing service").await?;
        Ok(Self {
            url: url.to_owned(),
            admin,
            trigger,
            service,
            following,
            followers: Vec::new(),
        })
    }

    /// Sets the scene for one subject's round: empty tables, the trigger
    /// with or without NOTIFY, and the followers, listening or not, if any.
    async fn prepare(&mut self, subject: &str) -> anyhow::Result<()> {
        use subject::{FLOOR_IN_TX, FLOOR_UNHEARD, OFF_IN_TX, ON, ON_IN_TX, ON_POLLING, ON_PROBED};
        for (follower, following) in self.followers.drain(..) {
            stop(following).await;
            drop(follower);
        }
        let unheard = subject == FLOOR_UNHEARD;
        if unheard && let Some(following) = self.following.take() {
            stop(following).await;
        }
        empty_tables(&self.admin).await?;
        if unheard {
            until_nobody_listens(&self.admin).await?;
        } else {
            if self.following.is_none() {
                self.following = Some(self.service.start());
            }
            // The writer loads everything again (an empty table) before the round.
            session_test_process::until_async(
                "the writing service empties its cache",
                Duration::from_secs(60),
                async || self.service.status().cached_sessions == 0,
            )
            .await?;
            ready(&self.service, "the writing service").await?;
        }
        let in_transaction = [OFF_IN_TX, ON_IN_TX, FLOOR_IN_TX, FLOOR_UNHEARD].contains(&subject);
        self.trigger.notify(&self.admin, in_transaction).await?;
        let listening = match subject {
            ON | ON_IN_TX | ON_PROBED => true,
            ON_POLLING => false,
            _ => return Ok(()),
        };
        for _ in 0..FOLLOWERS {
            // A follower needs a connection to read with and one to listen on.
            let config = PgConfig::from_url(&self.url)?
                .pool_size(2)
                .wake_ups(listening);
            let store = Arc::new(PgSessionStore::connect(config).await?);
            let follower = SessionService::builder(store.clone(), Arc::new(MemoryCache::new()))
                .change_log(store)
                .build();
            let following = follower.start();
            self.followers.push((follower, following));
        }
        for (follower, _) in &self.followers {
            ready(follower, "a follower").await?;
        }
        Ok(())
    }

    /// Checks the followers of `subject`'s round followed without failing,
    /// and, when woken by each commit, applied what the writers created.
    ///
    /// Then compares each follower's cache with the store once it has
    /// caught up: a miss waits for a read of the log that started after it
    /// arrived, after the writers stopped, so the cache should hold exactly
    /// the store's active sessions. Returns (sessions short, sessions over),
    /// summed over the followers. Not a failure: the harness measures, the
    /// tests assert.
    async fn check_followers(&self, subject: &str) -> anyhow::Result<(u64, u64)> {
        let mut short = 0;
        let mut over = 0;
        if self.followers.is_empty() {
            return Ok((short, over));
        }
        let active: i64 = self
            .admin
            .query_one(
                "SELECT count(*) FROM session.sessions WHERE revoked_at IS NULL",
                &[],
            )
            .await?
            .get(0);
        let active = u64::try_from(active)?;
        for (follower, _) in &self.followers {
            let stats = follower.status().change_log_stats;
            anyhow::ensure!(
                stats.read_failures == 0
                    && (![subject::ON, subject::ON_PROBED].contains(&subject)
                        || stats.changes_applied > 0),
                "a follower did not follow the writers ({subject}): {stats:?}"
            );
            let nobody = SessionToken::generate();
            match follower.resolve(nobody.expose_secret()).await {
                Err(ServiceError::InvalidToken) => {}
                other => anyhow::bail!(
                    "a follower catching up ({subject}): expected an invalid token, got {:?}",
                    other.map(|_| "a session")
                ),
            }
            let cached = follower.status().cached_sessions as u64;
            short += active.saturating_sub(cached);
            over += cached.saturating_sub(active);
        }
        Ok((short, over))
    }

    /// A counter of the followers' (wake-ups received, log reads), per follower.
    fn per_follower(&self, count: impl Fn(ChangeLogStats) -> u64) -> f64 {
        let total: u64 = self
            .followers
            .iter()
            .map(|(follower, _)| count(follower.status().change_log_stats))
            .sum();
        total as f64 / self.followers.len().max(1) as f64
    }
}

/// Propagation at saturation: while the writers create, one thread more
/// creates a session on the writing service every [`PROBE_EVERY`], waits
/// until both followers accept it (a miss on a follower waits for its log
/// read), revokes it and times until each follower refuses it, polling
/// every [`PROBE_POLL`]. A thread of its own, sleeping between polls, so it
/// can poll more finely than the runtime's 1 ms timer without spinning.
struct Probe {
    thread: std::thread::JoinHandle<anyhow::Result<Probed>>,
}

/// What a probe measured in one round.
struct Probed {
    revoke: Histogram<u64>,
    propagation: Histogram<u64>,
    lost_creates: u64,
    lost_revocations: u64,
}

impl Probe {
    fn start(bench: &Bench, plan: &Plan) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Handle::current();
        let writer = bench.service.clone();
        let followers: Vec<SessionService> = bench
            .followers
            .iter()
            .map(|(follower, _)| follower.clone())
            .collect();
        let account = AccountId::new(uuid::Uuid::new_v4())?;
        // The same window as the writers' throughput.
        let from = Instant::now() + plan.warmup;
        let until = from + plan.window;
        let thread = std::thread::Builder::new()
            .name("create-probe".to_owned())
            .spawn(move || {
                let mut probed = Probed {
                    revoke: histogram(),
                    propagation: histogram(),
                    lost_creates: 0,
                    lost_revocations: 0,
                };
                while Instant::now() + PROBE_EVERY < until {
                    std::thread::sleep(PROBE_EVERY);
                    let created =
                        runtime.block_on(writer.create(account, ClientMetadata::default()))?;
                    let token = created.token.expose_secret();
                    // A miss waits for the follower's log up to a read that
                    // started after it: refused now, the create is lost to it.
                    let mut learned = true;
                    for follower in &followers {
                        match runtime.block_on(follower.resolve(token)) {
                            Ok(_) => {}
                            Err(ServiceError::InvalidToken) => {
                                probed.lost_creates += 1;
                                learned = false;
                            }
                            Err(err) => {
                                return Err(anyhow::Error::new(err)
                                    .context("a follower resolving a session just created"));
                            }
                        }
                    }
                    if !learned {
                        continue;
                    }
                    let started = Instant::now();
                    runtime.block_on(
                        writer.revoke(created.session.id, session_core::RevocationReason::LOGOUT),
                    )?;
                    let revoked = started.elapsed();
                    let mut reached = Vec::with_capacity(followers.len());
                    let mut waiting: Vec<&SessionService> = followers.iter().collect();
                    while !waiting.is_empty() {
                        let mut still = Vec::with_capacity(waiting.len());
                        for follower in waiting {
                            match runtime.block_on(follower.resolve(token)) {
                                Ok(_) => still.push(follower),
                                Err(ServiceError::InvalidToken) => reached.push(started.elapsed()),
                                Err(err) => {
                                    return Err(anyhow::Error::new(err)
                                        .context("a follower resolving a revoked session"));
                                }
                            }
                        }
                        waiting = still;
                        if started.elapsed() >= PROBE_GIVE_UP {
                            probed.lost_revocations += waiting.len() as u64;
                            break;
                        }
                        if !waiting.is_empty() {
                            std::thread::sleep(PROBE_POLL);
                        }
                    }
                    if started >= from {
                        probed.revoke.saturating_record(micros(revoked));
                        for elapsed in reached {
                            probed.propagation.saturating_record(micros(elapsed));
                        }
                    }
                }
                Ok(probed)
            })?;
        Ok(Self { thread })
    }

    fn finish(self, measured: &mut Measured) -> anyhow::Result<()> {
        let probed = self
            .thread
            .join()
            .map_err(|_| anyhow::anyhow!("the create probe's thread panicked"))??;
        measured.record_latency(PROBE_REVOKE, &probed.revoke)?;
        measured.record_latency(PROBE_PROPAGATION, &probed.propagation)?;
        measured.record_value(PROBE_LOST_CREATES, probed.lost_creates as f64);
        measured.record_value(PROBE_LOST_REVOCATIONS, probed.lost_revocations as f64);
        Ok(())
    }
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The INSERT trigger's function, `session.log_inserted`, as migrated (it
/// only logs; the writing store asks for the wake-up) and as it
/// was before (it also sent NOTIFY from the writing transaction), and which
/// of the two the database has now: the probe that shows what waking from
/// inside the transaction cost.
struct Trigger {
    migrated: String,
    in_transaction: String,
    notifying: bool,
}

impl Trigger {
    async fn read(admin: &tokio_postgres::Client) -> anyhow::Result<Self> {
        let migrated: String = admin
            .query_one(
                "SELECT pg_get_functiondef('session.log_inserted()'::regprocedure)",
                &[],
            )
            .await?
            .get(0);
        let end = "RETURN NULL;";
        anyhow::ensure!(
            !migrated.contains("pg_notify") && migrated.matches(end).count() == 1,
            "session.log_inserted is no longer a log without NOTIFY ending in one `{end}`: \
             update this benchmark's probe:\n{migrated}"
        );
        Ok(Self {
            in_transaction: migrated.replace(
                end,
                &format!("PERFORM pg_notify('session_changes', ''); {end}"),
            ),
            migrated,
            notifying: false,
        })
    }

    /// Installs the function as migrated, or sending NOTIFY as it did before.
    async fn notify(
        &mut self,
        admin: &tokio_postgres::Client,
        notifying: bool,
    ) -> anyhow::Result<()> {
        if notifying != self.notifying {
            let definition = if notifying {
                &self.in_transaction
            } else {
                &self.migrated
            };
            admin.batch_execute(definition).await?;
            self.notifying = notifying;
        }
        Ok(())
    }
}

/// A plain client of the database, for DDL.
async fn admin(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (admin, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(admin)
}

/// Empties the sessions and the log.
async fn empty_tables(admin: &tokio_postgres::Client) -> anyhow::Result<()> {
    // A read of the log locks the log and the sessions in either order: in
    // the order its statement names them while it is parsed, the sessions
    // first when its plan is checked before it runs (a CTE's tables are
    // locked after the main query's). So emptying both can deadlock with a
    // reader whichever order it locks them in; PostgreSQL then cancels one
    // of the two, and when that is this, it tries again.
    const ATTEMPTS: usize = 5;
    let mut attempt = 1;
    loop {
        let emptied = admin
            .batch_execute(
                "BEGIN; \
                 LOCK TABLE session.changes, session.sessions IN ACCESS EXCLUSIVE MODE; \
                 TRUNCATE session.sessions, session.changes; \
                 COMMIT",
            )
            .await;
        match emptied {
            Ok(()) => return Ok(()),
            Err(err)
                if attempt < ATTEMPTS
                    && err.code()
                        == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED) =>
            {
                admin.batch_execute("ROLLBACK").await?;
                attempt += 1;
            }
            Err(err) => return Err(err.into()),
        }
    }
}

/// Stops a service's background tasks and waits until they have ended,
/// closing their connections (the listening one too).
async fn stop(following: BackgroundTasks) {
    // Nothing to flush: last-seen activity is off.
    let _ = following.shutdown().await;
}

/// Waits until no connection of the database listens for the change log's
/// wake-ups (a closed connection's server process ends a moment later).
async fn until_nobody_listens(admin: &tokio_postgres::Client) -> anyhow::Result<()> {
    let began = Instant::now();
    loop {
        let listening = crate::postgres::listening(admin).await?;
        if listening == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            began.elapsed() < Duration::from_secs(10),
            "{listening} connections still listen"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn ready(service: &SessionService, who: &str) -> anyhow::Result<()> {
    let began = Instant::now();
    while !(service.status().cache_ready() && service.check_store().await.is_ok()) {
        anyhow::ensure!(
            began.elapsed() < Duration::from_secs(60),
            "{who} did not follow the change log within a minute"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

async fn postgres(
    url: &str,
    writers: usize,
    with_verified_pool: bool,
    plan: &Plan,
) -> anyhow::Result<Measured> {
    use subject::{
        FLOOR, FLOOR_IN_TX, FLOOR_UNHEARD, OFF, OFF_IN_TX, ON, ON_IN_TX, ON_POLLING, ON_PROBED,
        VERIFIED_POOL,
    };
    let mut bench = Bench::start(url, writers).await?;
    let mut creators: Vec<ServiceCreate> = accounts(writers)?
        .into_iter()
        .map(|account| ServiceCreate {
            service: bench.service.clone(),
            account,
        })
        .collect();
    let mut inserters = Vec::with_capacity(writers);
    for seed in 0..writers {
        inserters.push(PgInsert {
            connection: crate::postgres::connect(url).await?,
            rng: fastrand::Rng::with_seed(seed as u64),
        });
    }
    let mut pooled = Vec::new();
    if with_verified_pool {
        let mut manager_config = ManagerConfig::default();
        manager_config.recycling_method = RecyclingMethod::Verified;
        let manager = AsyncDieselConnectionManager::new_with_config(url, manager_config);
        let pool = Pool::builder(manager).max_size(writers).build()?;
        pooled = (0..writers)
            .map(|seed| PgPooledInsert {
                pool: pool.clone(),
                rng: fastrand::Rng::with_seed(1_000 + seed as u64),
            })
            .collect();
    }
    let mut subjects = vec![
        OFF,
        ON,
        ON_POLLING,
        ON_PROBED,
        FLOOR,
        OFF_IN_TX,
        ON_IN_TX,
        FLOOR_IN_TX,
        FLOOR_UNHEARD,
    ];
    if with_verified_pool {
        subjects.push(VERIFIED_POOL);
    }

    let mut measured = Measured::default();
    for round in 0..plan.rounds {
        for index in rotation(round, subjects.len()) {
            let subject = subjects[index];
            bench
                .prepare(subject)
                .await
                .with_context(|| format!("preparing {subject}"))?;
            let throughput = match subject {
                FLOOR | FLOOR_IN_TX | FLOOR_UNHEARD => {
                    let (back, throughput) = drive(inserters, plan.warmup, plan.window).await?;
                    inserters = back;
                    throughput
                }
                VERIFIED_POOL => {
                    let (back, throughput) = drive(pooled, plan.warmup, plan.window).await?;
                    pooled = back;
                    throughput
                }
                ON_PROBED => {
                    let probe = Probe::start(&bench, plan)?;
                    let (back, throughput) = drive(creators, plan.warmup, plan.window).await?;
                    creators = back;
                    probe.finish(&mut measured)?;
                    throughput
                }
                _ => {
                    let (back, throughput) = drive(creators, plan.warmup, plan.window).await?;
                    creators = back;
                    throughput
                }
            };
            let (short, over) = bench.check_followers(subject).await?;
            measured.record_value(CACHE_SHORT, short as f64);
            measured.record_value(CACHE_OVER, over as f64);
            if subject == ON {
                let over = (plan.warmup + plan.window).as_secs_f64();
                let wake_ups = bench.per_follower(|stats| stats.wake_ups);
                measured.record_value(WAKE_UPS, wake_ups / over);
                let reads = bench.per_follower(|stats| stats.reads);
                measured.record_value(READS, reads / over);
            }
            measured.record(subject, throughput)?;
        }
    }
    Ok(measured)
}

/// The floor's INSERT with NOTIFY in its transaction and as migrated, nobody listening, on a
/// server of its own whose commits wait for the disk, as a production
/// server's do: a transaction that sent NOTIFY holds PostgreSQL's global
/// notify lock until its commit is flushed.
async fn durable(writers: usize, plan: &Plan) -> anyhow::Result<Measured> {
    use subject::{FLOOR, FLOOR_UNHEARD};
    let server = tokio::task::spawn_blocking(TestServer::start).await?;
    let settings = admin(server.admin_url()).await?;
    // One statement at a time: ALTER SYSTEM refuses a transaction block.
    for setting in ["fsync", "synchronous_commit", "full_page_writes"] {
        settings
            .batch_execute(&format!("ALTER SYSTEM SET {setting} = on"))
            .await?;
    }
    settings.batch_execute("SELECT pg_reload_conf()").await?;
    let database = tokio::task::spawn_blocking(move || {
        let database = server.create_database();
        (server, database)
    })
    .await?;
    let (_server, database) = database;
    let url = database.url();
    PgSessionStore::connect(PgConfig::from_url(url)?)
        .await?
        .migrate()
        .await?;
    let admin = admin(url).await?;
    for setting in ["fsync", "synchronous_commit"] {
        let value: String = admin
            .query_one(&format!("SHOW {setting}"), &[])
            .await?
            .get(0);
        anyhow::ensure!(value == "on", "{setting} is {value} after the reload");
    }
    let mut trigger = Trigger::read(&admin).await?;
    let mut inserters = Vec::with_capacity(writers);
    for seed in 0..writers {
        inserters.push(PgInsert {
            connection: crate::postgres::connect(url).await?,
            rng: fastrand::Rng::with_seed(seed as u64),
        });
    }
    let subjects = [FLOOR_UNHEARD, FLOOR];
    let mut measured = Measured::default();
    for round in 0..plan.rounds {
        for index in rotation(round, subjects.len()) {
            let subject = subjects[index];
            empty_tables(&admin).await?;
            trigger.notify(&admin, subject == FLOOR_UNHEARD).await?;
            let (back, throughput) = drive(inserters, plan.warmup, plan.window).await?;
            inserters = back;
            measured.record(subject, throughput)?;
        }
    }
    drop(inserters);
    drop(admin);
    drop(settings);
    Ok(measured)
}

async fn sqlite(path: &std::path::Path, writers: usize, plan: &Plan) -> anyhow::Result<Measured> {
    let store = SqliteSessionStore::open(path).await?;
    let service = SessionService::builder(Arc::new(store), Arc::new(MemoryCache::new())).build();
    service.warm().await?;
    let mut creators: Vec<ServiceCreate> = accounts(writers)?
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
                let throughput = drive_blocking(writers, plan.warmup, plan.window, &insert)?;
                measured.record("floor", throughput)?;
            }
        }
    }
    Ok(measured)
}
