//! Misses on a follower: a session created on A and resolved on B at once,
//! before B has applied it, so B's cache misses and the resolve waits until
//! B has read the change log past the moment it arrived (a consistent read
//! from the cache). Quiet, and under a flood of random well-formed tokens
//! at B's forward auth, which must not make B read the log more than its
//! bound.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use diesel_async::AsyncPgConnection;
use hdrhistogram::Histogram;
use hyper::StatusCode;
use session_core::SessionToken;
use session_test_postgres::TestDatabase;

use crate::Context;
use crate::api::{Client, LogReads, Metrics, expect};
use crate::app::{Launch, Server};
use crate::measure::{histogram, rotation};
use crate::report::{Figure, Row, Section, Target, Unit};
use crate::steady::{Load, Steady, Tally};

/// Misses may ask a follower for at most one log read every 5 ms
/// (session-core's `MISS_READ_SPACING`).
const MISS_READS_PER_SECOND: f64 = 200.0;
/// The followers' `--log-poll-interval`: session-app's default.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Between two samples: longer than the misses' spacing, so each sample's
/// miss finds no read of the previous sample's still holding it back.
const BETWEEN_SAMPLES: Duration = Duration::from_millis(10);
/// After the flood is switched on, before measuring.
const FLOOD_SETTLE: Duration = Duration::from_millis(100);

struct Plan {
    rounds: usize,
    /// Samples per case per round.
    samples: usize,
    /// Random tokens a second at B's forward auth during the flood.
    flood: f64,
    flood_connections: usize,
}

pub(crate) fn run(ctx: &Context) -> anyhow::Result<Vec<Section>> {
    let plan = if ctx.quick {
        Plan {
            rounds: 1,
            samples: 5,
            flood: 200.0,
            flood_connections: 4,
        }
    } else {
        Plan {
            rounds: 10,
            samples: 50,
            flood: 2_000.0,
            flood_connections: 32,
        }
    };
    let database = TestDatabase::create();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(measure(ctx, database.url(), &plan))
}

/// Misses on one follower under one load, with their floor and the
/// follower's counters over the time they were measured.
struct Misses {
    follower: Client,
    /// Another connection to the follower, for `/metrics`.
    scrape: Client,
    /// Create on A's answer → the follower's 200, microseconds.
    miss: Histogram<u64>,
    /// The point read by hash on the harness's own connection.
    floor: Histogram<u64>,
    /// The follower's answer for the same token once cached.
    hit: Histogram<u64>,
    samples: u64,
    /// Sessions A had created that the follower refused once caught up:
    /// counted and left out of the figures (a harness measures, the tests
    /// assert).
    never_applied: u64,
    /// Over the samples, from the follower's `/metrics`.
    caught_up_active: f64,
    reads: LogReads,
    wake_ups: f64,
    over: Duration,
}

impl Misses {
    async fn new(follower: SocketAddr) -> anyhow::Result<Self> {
        Ok(Self {
            follower: Client::connect(follower).await?,
            scrape: Client::connect(follower).await?,
            miss: histogram(),
            floor: histogram(),
            hit: histogram(),
            samples: 0,
            never_applied: 0,
            caught_up_active: 0.0,
            reads: LogReads::default(),
            wake_ups: 0.0,
            over: Duration::ZERO,
        })
    }

    async fn measure(
        &mut self,
        samples: usize,
        to_a: &mut Client,
        point_reads: &mut AsyncPgConnection,
    ) -> anyhow::Result<()> {
        let before = self.scrape.metrics().await?;
        let began = Instant::now();
        for _ in 0..samples {
            let created = to_a.create().await?;
            let sent = Instant::now();
            let status = self.follower.resolve(&created.token).await?;
            let elapsed = sent.elapsed();
            if status == StatusCode::UNAUTHORIZED {
                self.never_applied += 1;
                tokio::time::sleep(BETWEEN_SAMPLES).await;
                continue;
            }
            expect(status, StatusCode::OK, "a follower resolving a new session")?;
            self.miss.record(micros(elapsed))?;

            let hash = SessionToken::parse(&created.token)
                .context("A created a malformed token")?
                .hash();
            let sent = Instant::now();
            let found = crate::postgres::find_active_by_hash(point_reads, hash.as_bytes()).await?;
            self.floor.record(micros(sent.elapsed()))?;
            anyhow::ensure!(found, "the point read did not find a session A created");

            let sent = Instant::now();
            let status = self.follower.resolve(&created.token).await?;
            self.hit.record(micros(sent.elapsed()))?;
            expect(
                status,
                StatusCode::OK,
                "a follower resolving a cached session",
            )?;
            tokio::time::sleep(BETWEEN_SAMPLES).await;
        }
        self.over += began.elapsed();
        let after = self.scrape.metrics().await?;
        let delta = |series| anyhow::Ok(after.value(series)? - before.value(series)?);
        self.caught_up_active += delta("session_resolves_total{outcome=\"caught_up_active\"}")?;
        self.reads += LogReads::between(&before, &after)?;
        self.wake_ups += delta("session_change_log_wake_ups_total")?;
        self.samples += u64::try_from(samples)?;
        Ok(())
    }

    fn per_second(&self, count: f64) -> Figure {
        Figure::new(
            count / self.over.as_secs_f64().max(f64::MIN_POSITIVE),
            Unit::PerSecond,
        )
    }

    fn rows(&self, section: &mut Section, case: &str, flood: Option<&Tally>) {
        let quantile = |histogram: &Histogram<u64>, q: f64| {
            Figure::new(histogram.value_at_quantile(q) as f64, Unit::Microseconds)
        };
        let missed = (1000.0 * self.caught_up_active / self.samples.max(1) as f64).round() / 10.0;
        for (name, q) in [("p50", 0.5), ("p99", 0.99)] {
            let figure = quantile(&self.miss, q);
            let floor = quantile(&self.floor, q);
            let mut row = Row::new(
                format!("{case}, {name}"),
                figure,
                floor,
                figure.value / floor.value.max(1.0),
            )
            .detail("hit on B", quantile(&self.hit, q))
            .detail("max", quantile(&self.miss, 1.0))
            .detail("missed (%)", Figure::new(missed, Unit::Count))
            .detail(
                "never applied",
                Figure::new(self.never_applied as f64, Unit::Count),
            )
            .detail("B's log reads", self.per_second(self.reads.reads))
            .detail(
                "mean read",
                Figure::new(self.reads.mean_micros(), Unit::Microseconds),
            );
            if let Some(flood) = flood {
                row = row
                    .detail("flood", Figure::new(flood.per_second(), Unit::PerSecond))
                    .detail(format!("flood's 401 {name}"), quantile(&flood.latency, q));
            }
            section.rows.push(row);
        }
    }
}

async fn measure(ctx: &Context, url: &str, plan: &Plan) -> anyhow::Result<Vec<Section>> {
    let server = |extra: &[&str]| {
        Server::spawn(
            &ctx.app,
            Launch {
                database_url: url,
                cache: "map",
                log: "warn",
                extra,
            },
        )
    };
    let mut a = server(&[])?;
    let mut woken = server(&[])?;
    let mut polling = server(&["--pg-wake-ups", "false"])?;
    for server in [&mut a, &mut woken, &mut polling] {
        server.wait_ready(Duration::from_secs(60)).await?;
    }
    let listening = crate::postgres::listening_connections(url).await?;
    anyhow::ensure!(
        listening == 2,
        "expected A and the woken follower to LISTEN, on one connection each (the events \
         feed is woken through the follower's), and the polling one not to: \
         {listening} connections listen"
    );
    let mut to_a = Client::connect(a.address).await?;
    let mut point_reads = crate::postgres::connect(url).await?;
    let mut quiet = Misses::new(woken.address).await?;
    let mut quiet_polling = Misses::new(polling.address).await?;
    let mut flooded = Misses::new(woken.address).await?;
    let mut flood = Steady::start(
        woken.address,
        Load::RandomTokens,
        plan.flood,
        plan.flood_connections,
    )?;

    // Interleaved, so background load from elsewhere hits every case alike.
    for round in 0..plan.rounds {
        for case in rotation(round, 3) {
            match case {
                0 => {
                    quiet
                        .measure(plan.samples, &mut to_a, &mut point_reads)
                        .await?
                }
                1 => {
                    quiet_polling
                        .measure(plan.samples, &mut to_a, &mut point_reads)
                        .await?;
                }
                _ => {
                    flood.set(true);
                    tokio::time::sleep(FLOOD_SETTLE).await;
                    let measured = flooded
                        .measure(plan.samples, &mut to_a, &mut point_reads)
                        .await;
                    flood.set(false);
                    measured?;
                }
            }
        }
    }
    let flood = flood.finish()?;
    let rejected = final_rejected(&mut flooded.scrape).await?;
    drop((a, woken, polling));
    anyhow::ensure!(
        rejected >= flood.answered as f64,
        "B counted {rejected} caught-up rejections, fewer than the flood's {} random tokens",
        flood.answered
    );

    let mut section = Section::new(
        "miss",
        "A cache miss on a follower: a session created on A, resolved on B at once",
        "the point read a service without a cache makes for every token: one `SELECT … FROM \
         session.sessions WHERE token_hash = $1 AND revoked_at IS NULL` (the store's \
         statement, by the unique index on the hash) on a connection of its own, for the \
         same session, right after the miss",
    );
    section.note(format!(
        "Three `session-app serve` processes on one database: A, B following the change \
         log woken by its NOTIFY (the default), and B' with `--pg-wake-ups false`, reading \
         the log every {POLL_INTERVAL:?} or when a miss asks. A session is created on A; as \
         soon as A has answered, B resolves it over a keep-alive connection (clock from \
         sending the resolve to B's 200). B has not applied the create yet, so the resolve \
         misses its cache and waits until a read of the log that started after it arrived \
         has been applied, then finds the session. `missed` is the share of these resolves \
         B counted as `caught_up_active` (the rest found the session already cached); \
         `never applied`, those B refused once caught up, left out of the figures. \
         {} rounds of {} samples per case, cases in turn, {BETWEEN_SAMPLES:?} between \
         samples.",
        plan.rounds, plan.samples
    ));
    section.note(
        "The floor is what a user would write without us, and the least work that decides \
         what the miss decides (is this hash an active session now): one point read, on a \
         warm connection, from the harness. It leaves out the HTTP round trip the figure \
         includes (`hit on B`: the same resolve on B once the session is cached, B's round \
         trip with no database work), so the ratio slightly overstates what the miss adds; \
         the HTTP hit alone would leave out the database the miss must consult, and \
         overstate it more.",
    );
    section.note(format!(
        "Flood: meanwhile `GET /v1/forward-auth` with a freshly generated well-formed token \
         belonging to no session, {:.0} a second over {} keep-alive connections from a \
         thread of their own (achieved {:.0}/s); each is a miss that waits for a read and \
         is answered 401. `B's log reads` is B's `session_change_log_reads_total` over the \
         samples' time: misses ask for at most {MISS_READS_PER_SECOND:.0} reads a second, \
         and each wake-up or poll may add one; `mean read` is what one took, from B's \
         `session_store_call_duration_seconds{{operation=\"log_read\"}}` (sum over count).",
        plan.flood,
        plan.flood_connections,
        flood.per_second()
    ));
    section.note(
        "All services, PostgreSQL (throwaway, loopback, durability off) and the clients \
         share the machine's cores.",
    );
    quiet.rows(&mut section, "miss on B, woken by NOTIFY", None);
    quiet_polling.rows(&mut section, "miss on B', polling alone", None);
    flooded.rows(
        &mut section,
        &format!(
            "miss on B, woken by NOTIFY, {:.0} random tokens/s",
            plan.flood
        ),
        Some(&flood),
    );

    // The reads' bound during the flood: what misses may ask for, plus one
    // read per wake-up and per poll.
    let bound = MISS_READS_PER_SECOND
        + flooded.per_second(flooded.wake_ups).value
        + 1.0 / POLL_INTERVAL.as_secs_f64();
    let reads = flooded.per_second(flooded.reads.reads);
    let ratio = reads.value / bound;
    section.rows.push(
        Row::new(
            format!(
                "B's change-log reads a second during the flood (floor column: their bound, \
                 {MISS_READS_PER_SECOND:.0} + B's wake-ups + polls a second)"
            ),
            reads,
            Figure::new(bound, Unit::PerSecond),
            ratio,
        )
        .target((!ctx.quick).then(|| Target::ratio_at_most(ratio, 1.0)))
        .detail("B's wake-ups", flooded.per_second(flooded.wake_ups))
        .detail("quiet", quiet.per_second(quiet.reads.reads)),
    );
    Ok(vec![section])
}

/// B's count of misses answered 401 once caught up, at the end.
async fn final_rejected(scrape: &mut Client) -> anyhow::Result<f64> {
    let metrics: Metrics = scrape.metrics().await?;
    metrics.value("session_resolves_total{outcome=\"caught_up_inactive\"}")
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}
