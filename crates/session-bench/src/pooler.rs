//! Behind PgBouncer: the latency of a create and of a miss through
//! PgBouncer 1.18 in transaction pooling mode (statements per transaction),
//! beside the same on a direct connection, with statements cached (the
//! default) and per transaction (what the pooler costs, and what the mode
//! costs alone).

use std::sync::Arc;
use std::time::{Duration, Instant};

use session_core::{AccountId, ClientMetadata, MemoryCache, SessionService, SessionToken};
use session_postgres::{PgConfig, PgSessionStore, Statements};
use session_test_postgres::TestDatabase;

use crate::Context;
use crate::measure::histogram;
use crate::report::{Figure, Row, Section, Unit};

/// One way of reaching PostgreSQL.
struct Subject {
    case: &'static str,
    through_pgbouncer: bool,
    statements: Statements,
}

const SUBJECTS: [Subject; 3] = [
    Subject {
        case: "direct, cached statements (default)",
        through_pgbouncer: false,
        statements: Statements::Cached,
    },
    Subject {
        case: "direct, per-transaction statements",
        through_pgbouncer: false,
        statements: Statements::PerTransaction,
    },
    Subject {
        case: "PgBouncer (transaction mode), per-transaction statements",
        through_pgbouncer: true,
        statements: Statements::PerTransaction,
    },
];

pub(crate) fn run(ctx: &Context) -> anyhow::Result<Vec<Section>> {
    let calls = if ctx.quick { 50 } else { 2_000 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut section = Section::new(
        "pooler",
        "Behind PgBouncer: create and miss latency",
        "the same call on a direct connection with cached statements (the default)",
    );
    section.note(format!(
        "One task calling `SessionService::create`, then `resolve` of a well-formed token \
         no one was given (a miss: it waits for a read of the change log), {calls} times \
         each, one call at a time, on a throwaway local PostgreSQL; p50 and p99 in µs. \
         PgBouncer 1.18 from Debian, `pool_mode = transaction`, on the same machine: one \
         more hop for each round trip. Per transaction, a call is `BEGIN` with its \
         timeouts, the statement prepared and run, and `COMMIT`: two round trips more."
    ));
    let mut floors: Option<(f64, f64)> = None;
    for subject in &SUBJECTS {
        let (create, miss) = runtime.block_on(measure(subject, calls))?;
        let p50 = |h: &hdrhistogram::Histogram<u64>| h.value_at_quantile(0.5) as f64;
        let p99 = |h: &hdrhistogram::Histogram<u64>| h.value_at_quantile(0.99) as f64;
        let (create_floor, miss_floor) = *floors.get_or_insert((p50(&create), p50(&miss)));
        let micros = |value| Figure::new(value, Unit::Microseconds);
        section.rows.push(
            Row::new(
                format!("create: {}", subject.case),
                micros(p50(&create)),
                micros(create_floor),
                p50(&create) / create_floor,
            )
            .detail("p99", micros(p99(&create))),
        );
        section.rows.push(
            Row::new(
                format!("miss: {}", subject.case),
                micros(p50(&miss)),
                micros(miss_floor),
                p50(&miss) / miss_floor,
            )
            .detail("p99", micros(p99(&miss))),
        );
    }
    Ok(vec![section])
}

/// Create and miss latencies, in µs, through `subject`.
async fn measure(
    subject: &Subject,
    calls: usize,
) -> anyhow::Result<(hdrhistogram::Histogram<u64>, hdrhistogram::Histogram<u64>)> {
    let database = TestDatabase::create();
    let direct = PgConfig::from_url(database.url())?;
    let config = if subject.through_pgbouncer {
        PgConfig::from_url(&database.through_pgbouncer())?.direct(direct)
    } else {
        direct
    }
    .statements(subject.statements);
    let store = Arc::new(PgSessionStore::connect(config).await?);
    store.migrate().await?;
    let service = SessionService::builder(store.clone(), Arc::new(MemoryCache::new()))
        .change_log(store)
        .build();
    let _tasks = service.start();
    let began = Instant::now();
    while !service.status().cache_ready() {
        anyhow::ensure!(began.elapsed() < Duration::from_secs(60), "never ready");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let account = AccountId::new(uuid::Uuid::now_v7())?;
    let mut create = histogram();
    let mut miss = histogram();
    for _ in 0..calls {
        let started = Instant::now();
        service.create(account, ClientMetadata::default()).await?;
        create.record(micros(started.elapsed()))?;
        let stranger = SessionToken::generate();
        let started = Instant::now();
        let _refused = service.resolve(stranger.expose_secret()).await;
        miss.record(micros(started.elapsed()))?;
    }
    Ok((create, miss))
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}
