//! Cold start: how long `session-app serve` takes from spawn until `/readyz`
//! answers 200 with a million active sessions to warm, from PostgreSQL and
//! from SQLite, and how much resident memory each cached session costs.
//!
//! The time's floor is reading the same rows through the same driver, paged
//! by id as the warm pages them, without building sessions or a cache or
//! starting a process. The memory's floor is what the data itself occupies:
//! one `Arc<Session>` allocation and one pointer to it in a table per
//! session, with no allocator or table overhead.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use session_core::Session;
use session_postgres::{PgConfig, PgSessionStore};
use session_sqlite::SqliteSessionStore;
use session_test_postgres::TestDatabase;

use crate::Context;
use crate::app::{Launch, Server, ensure_cached};
use crate::report::{Figure, Row, Section, Target, Unit};
use crate::resolve::sessions_label;

/// Rows per page, for the warm (`session-app`'s default `--warm-page-size`) and its floor.
const PAGE: i64 = 10_000;
/// The caches measured, as `session-app --cache` names them.
const CACHES: [&str; 2] = ["map", "moka"];
/// How long after readiness the resident set is read: the warm's
/// temporary pages have been freed by then.
const SETTLE: Duration = Duration::from_millis(250);
const READY_TIMEOUT: Duration = Duration::from_secs(300);

pub(crate) fn run(ctx: &Context) -> anyhow::Result<Vec<Section>> {
    let sessions = if ctx.quick { 2_000 } else { 1_000_000 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut section = Section::new(
        "cold_start",
        "Cold start",
        "time: reading every active row through the same driver, in the warm's pages of \
         10,000, in this process; memory: one Arc<Session> and one pointer to it per session",
    );
    section.note(format!(
        "From spawning `session-app serve` ({} build, `--log warn`) until `/readyz` answers \
         200 (polled every 10 ms) with {} in the database, all active: process start, \
         connecting, checking migrations, and the warm. One start per row.",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        sessions_label(sessions)
    ));
    section.note(format!(
        "Memory per session: (VmRSS with the sessions − VmRSS of the same binary and cache \
         ready on an empty database) / sessions, both read {SETTLE:?} after readiness. The \
         floor, {} B, is size_of Session ({} B) + the Arc's counts (16 B) + a pointer (8 B): \
         a table needs no other key, since each session holds its token hash.",
        memory_floor(),
        std::mem::size_of::<Session>()
    ));

    eprintln!("  cold start: PostgreSQL, loading {sessions} sessions");
    let database = TestDatabase::create();
    let url = database.url().to_owned();
    let backend = Backend {
        name: "PostgreSQL",
        database_url: url.clone(),
    };
    runtime.block_on(async {
        PgSessionStore::connect(PgConfig::from_url(&url)?)
            .await?
            .migrate()
            .await?;
        let empty = backend.start_empty(ctx).await?;
        crate::postgres::bulk_load(&url, sessions).await?;
        let floor = {
            let began = Instant::now();
            let read = crate::postgres::read_active(&url, PAGE).await?;
            anyhow::ensure!(read == sessions, "read {read} rows, loaded {sessions}");
            began.elapsed()
        };
        let started = backend.start_loaded(ctx, sessions).await?;
        backend.rows(&mut section, ctx, sessions, floor, &empty, &started);
        anyhow::Ok(())
    })?;
    drop(database);

    eprintln!("  cold start: SQLite, loading {sessions} sessions");
    let path = ctx.scratch.join("cold-start.db");
    let backend = Backend {
        name: "SQLite",
        database_url: format!("sqlite://{}", path.display()),
    };
    runtime.block_on(async {
        drop(SqliteSessionStore::open(&path).await?);
        let empty = backend.start_empty(ctx).await?;
        crate::sqlite::bulk_load(&path, crate::sqlite::random_hashes(sessions, 11))?;
        let floor = sqlite_floor(&path, sessions)?;
        let started = backend.start_loaded(ctx, sessions).await?;
        backend.rows(&mut section, ctx, sessions, floor, &empty, &started);
        anyhow::Ok(())
    })?;
    Ok(vec![section])
}

fn sqlite_floor(path: &Path, sessions: usize) -> anyhow::Result<Duration> {
    let began = Instant::now();
    let read = crate::sqlite::read_active(path, PAGE)?;
    anyhow::ensure!(read == sessions, "read {read} rows, loaded {sessions}");
    Ok(began.elapsed())
}

/// Bytes one cached session needs at the very least.
fn memory_floor() -> usize {
    std::mem::size_of::<Session>()
        + 2 * std::mem::size_of::<usize>()
        + std::mem::size_of::<Arc<Session>>()
}

/// One start of the service, per cache.
struct Started {
    cache: &'static str,
    ready_after: Duration,
    resident: u64,
}

struct Backend {
    name: &'static str,
    database_url: String,
}

impl Backend {
    async fn start(
        &self,
        ctx: &Context,
        cache: &'static str,
        sessions: usize,
    ) -> anyhow::Result<Started> {
        let launch = Launch {
            database_url: &self.database_url,
            cache,
            log: "warn",
            extra: &[],
        };
        let mut server = Server::spawn(&ctx.app, launch)?;
        let (ready_after, readiness) = server.wait_ready(READY_TIMEOUT).await?;
        ensure_cached(&readiness, sessions)?;
        tokio::time::sleep(SETTLE).await;
        Ok(Started {
            cache,
            ready_after,
            resident: server.resident_bytes()?,
        })
    }

    async fn start_empty(&self, ctx: &Context) -> anyhow::Result<Vec<Started>> {
        let mut started = Vec::new();
        for cache in CACHES {
            started.push(self.start(ctx, cache, 0).await?);
        }
        Ok(started)
    }

    async fn start_loaded(&self, ctx: &Context, sessions: usize) -> anyhow::Result<Vec<Started>> {
        let mut started = Vec::new();
        for cache in CACHES {
            eprintln!("  cold start: {}, --cache {cache}", self.name);
            started.push(self.start(ctx, cache, sessions).await?);
        }
        Ok(started)
    }

    fn rows(
        &self,
        section: &mut Section,
        ctx: &Context,
        sessions: usize,
        floor: Duration,
        empty: &[Started],
        loaded: &[Started],
    ) {
        let targets = !ctx.quick;
        for start in loaded {
            let Some(baseline) = empty.iter().find(|e| e.cache == start.cache) else {
                continue;
            };
            let ready = Figure::new(start.ready_after.as_secs_f64(), Unit::Seconds);
            let floor_figure = Figure::new(floor.as_secs_f64(), Unit::Seconds);
            let is_default = start.cache == "map";
            let time_target = (targets && is_default && self.name == "PostgreSQL")
                .then(|| Target::below(ready, Figure::new(5.0, Unit::Seconds)));
            section.rows.push(
                Row::new(
                    format!("{}, {}: spawn → ready", self.name, start.cache),
                    ready,
                    floor_figure,
                    ready.value / floor_figure.value,
                )
                .target(time_target)
                .detail(
                    "empty database",
                    Figure::new(baseline.ready_after.as_secs_f64(), Unit::Seconds),
                ),
            );
            let per_session =
                start.resident.saturating_sub(baseline.resident) as f64 / sessions as f64;
            let memory_floor = memory_floor() as f64;
            let per_session = Figure::new(per_session, Unit::Bytes);
            let memory_target = (targets && is_default)
                .then(|| Target::below(per_session, Figure::new(250.0, Unit::Bytes)));
            let resident = |bytes: u64| Figure::new(bytes as f64, Unit::Bytes);
            section.rows.push(
                Row::new(
                    format!(
                        "{}, {}: resident memory per session",
                        self.name, start.cache
                    ),
                    per_session,
                    Figure::new(memory_floor, Unit::Bytes),
                    per_session.value / memory_floor,
                )
                .target(memory_target)
                .detail("VmRSS", resident(start.resident))
                .detail("empty", resident(baseline.resident)),
            );
        }
    }
}
