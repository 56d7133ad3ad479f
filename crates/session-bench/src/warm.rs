//! The warm at scale: how long a compact cache takes to load 10 million
//! active sessions from PostgreSQL and from SQLite, beside the bare read of
//! the same rows' three columns, and its peak memory beside its steady state.
//!
//! Each warm runs in a child process of this binary, so its resident set is
//! its own. The child connects the store, reads `VmRSS` (start), warms a
//! `SessionService` over a `CompactCache` with `session-app`'s default page
//! of 10,000 rows, then reads `VmHWM` (peak, over the whole child) and
//! `VmRSS` (steady); then warms the same cache again (a reload: the change
//! log no longer covering the cursor), with the high-water mark reset
//! first, and reads both again. The floors run in this process, in the same
//! run:
//!
//! - PostgreSQL: `COPY (SELECT token_hash, id, account_id … WHERE revoked_at
//!   IS NULL) TO STDOUT (FORMAT binary)` through tokio-postgres, the bytes
//!   walked only to count the rows;
//! - SQLite: one `SELECT token_hash, id, account_id … WHERE revoked_at IS
//!   NULL` stepped through every row, each column read as bytes;
//!
//! and beside each, as a detail, the keyset pages of those three columns as
//! the store reads them, without a cache.

use std::path::Path;
use std::pin::Pin;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use diesel::{ExpressionMethods as _, QueryDsl as _};
use diesel_async::RunQueryDsl as _;
use futures_core::Stream;
use session_core::port::store::SessionStore;
use session_core::{CompactCache, SessionService};
use session_postgres::{PgConfig, PgSessionStore, sessions};
use session_sqlite::SqliteSessionStore;
use session_test_postgres::TestDatabase;
use tokio_postgres::NoTls;

use crate::Context;
use crate::report::{Figure, Row, Section, Target, Unit};
use crate::resolve::sessions_label;
use crate::scale::status_bytes;

/// The first argument that makes this binary a warm child.
pub(crate) const CHILD_ARG: &str = "__warm-child";

/// `session-app`'s default `--warm-page-size`.
const PAGE: u32 = 10_000;
/// The targets, for PostgreSQL at 10 million sessions.
const COPY_RATIO_TARGET: f64 = 2.0;
const SECONDS_TARGET: f64 = 10.0;
const PEAK_RATIO_TARGET: f64 = 1.25;

/// What a child reports.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Measured {
    sessions: usize,
    warm_s: f64,
    start: u64,
    peak: u64,
    steady: u64,
    /// A second warm of the same cache (a reload), and its memory, from
    /// the same start.
    reload_s: f64,
    reload_peak: u64,
    reload_steady: u64,
}

pub(crate) fn run(ctx: &Context) -> anyhow::Result<Vec<Section>> {
    let sessions = if ctx.quick { 20_000 } else { 10_000_000 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut section = Section::new(
        "warm",
        "The warm at scale",
        "time: the bare read of the same rows' token_hash, id and account_id (PostgreSQL: a \
         binary COPY; SQLite: one SELECT stepped through); memory: the steady state",
    );
    section.note(format!(
        "A compact cache warmed from {}, all active, in a child process \
         (`SessionService::warm`, pages of 10,000 rows); peak: (VmHWM − VmRSS before the warm) \
         against (VmRSS after it − VmRSS before it). The floors and the keyset detail run in \
         the parent, in the same run, one read each.",
        sessions_label(sessions)
    ));

    eprintln!("  warm: PostgreSQL, loading {sessions} sessions");
    let database = TestDatabase::create();
    let url = database.url().to_owned();
    runtime.block_on(async {
        PgSessionStore::connect(PgConfig::from_url(&url)?)
            .await?
            .migrate()
            .await?;
        crate::postgres::bulk_load(&url, sessions).await?;
        anyhow::Ok(())
    })?;
    let (copy, copied) = runtime.block_on(postgres_copy(&url))?;
    anyhow::ensure!(
        copied == sessions,
        "COPY read {copied} rows, loaded {sessions}"
    );
    let keyset = runtime.block_on(postgres_keyset(&url))?;
    let measured = warm_child("postgres", &url, sessions)?;
    rows(
        &mut section,
        ctx,
        "PostgreSQL",
        &measured,
        copy,
        "COPY",
        keyset,
    );
    drop(database);

    eprintln!("  warm: SQLite, loading {sessions} sessions");
    let path = ctx.scratch.join("warm.db");
    runtime.block_on(async {
        drop(SqliteSessionStore::open(&path).await?);
        anyhow::Ok(())
    })?;
    crate::sqlite::bulk_load(&path, crate::sqlite::random_hashes(sessions, 13))?;
    let (select, selected) = sqlite_select(&path)?;
    anyhow::ensure!(
        selected == sessions,
        "SELECT read {selected} rows, loaded {sessions}"
    );
    let keyset = sqlite_keyset(&path, &runtime)?;
    let measured = warm_child("sqlite", path.to_str().context("a UTF-8 path")?, sessions)?;
    rows(
        &mut section,
        ctx,
        "SQLite",
        &measured,
        select,
        "SELECT",
        keyset,
    );
    Ok(vec![section])
}

fn rows(
    section: &mut Section,
    ctx: &Context,
    store: &str,
    m: &Measured,
    floor: Duration,
    floor_name: &str,
    keyset: Duration,
) {
    let label = format!("{store}, {}", sessions_label(m.sessions));
    let seconds = |s: f64| Figure::new(s, Unit::Seconds);
    let warm = seconds(m.warm_s);
    let floor = seconds(floor.as_secs_f64());
    let ratio = warm.value / floor.value;
    let targets = !ctx.quick && store == "PostgreSQL";
    section.rows.push(
        Row::new(
            format!("{label}: warm against a bare {floor_name}"),
            warm,
            floor,
            ratio,
        )
        .target(targets.then(|| Target::ratio_at_most(ratio, COPY_RATIO_TARGET)))
        .detail("keyset pages, no cache", seconds(keyset.as_secs_f64())),
    );
    if targets {
        section.rows.push(
            Row::new(format!("{label}: warm, absolute"), warm, floor, ratio)
                .target(Some(Target::below(warm, seconds(SECONDS_TARGET)))),
        );
    }
    let steady = m.steady.saturating_sub(m.start) as f64;
    let peak = m.peak.saturating_sub(m.start) as f64;
    let bytes = |b: f64| Figure::new(b, Unit::Bytes);
    section.rows.push(
        Row::new(
            format!("{label}: peak during the warm"),
            bytes(peak),
            bytes(steady),
            peak / steady,
        )
        .target((!ctx.quick).then(|| Target::ratio_at_most(peak / steady, PEAK_RATIO_TARGET)))
        .detail("per session, steady", bytes(steady / m.sessions as f64)),
    );
    // A reload warms the cache again while it holds every session: in
    // place, with no second index.
    let reload_steady = m.reload_steady.saturating_sub(m.start) as f64;
    let reload_peak = m.reload_peak.saturating_sub(m.start) as f64;
    section.rows.push(
        Row::new(
            format!("{label}: peak during a reload"),
            bytes(reload_peak),
            bytes(reload_steady),
            reload_peak / reload_steady,
        )
        .target(
            (!ctx.quick)
                .then(|| Target::ratio_at_most(reload_peak / reload_steady, PEAK_RATIO_TARGET)),
        )
        .detail("reload", seconds(m.reload_s)),
    );
}

/// Runs a warm child and reads what it measured.
fn warm_child(store: &str, at: &str, sessions: usize) -> anyhow::Result<Measured> {
    eprintln!("  warm: {store}, warming {sessions} sessions");
    let output = Command::new(std::env::current_exe()?)
        .args([CHILD_ARG, store, at, &sessions.to_string()])
        .output()
        .context("running a warm child")?;
    if !output.status.success() {
        bail!(
            "the {store} warm child failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .last()
        .context("the warm child printed nothing")?;
    Ok(serde_json::from_str(line)?)
}

/// The child: warms a compact cache from one store and prints a JSON line.
pub(crate) fn child(args: &[String]) -> anyhow::Result<()> {
    let [store, at, sessions] = args else {
        bail!("a warm child takes a store, its URL or path, and a session count");
    };
    let sessions: usize = sessions.parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let measured = runtime.block_on(async {
        let store: Arc<dyn SessionStore> = match store.as_str() {
            "postgres" => Arc::new(PgSessionStore::connect(PgConfig::from_url(at)?).await?),
            "sqlite" => Arc::new(SqliteSessionStore::open(at).await?),
            other => bail!("no store {other:?}"),
        };
        store.health_check().await?;
        let service = SessionService::builder(store, Arc::new(CompactCache::new()))
            .warm_page_size(PAGE)
            .build();
        let start = status_bytes("VmRSS:")?;
        let began = Instant::now();
        let report = service.warm().await?;
        let warm_s = began.elapsed().as_secs_f64();
        let peak = status_bytes("VmHWM:")?;
        let steady = status_bytes("VmRSS:")?;
        anyhow::ensure!(
            report.sessions == sessions,
            "warmed {} sessions, loaded {sessions}",
            report.sessions
        );
        // The high-water mark from here on (Linux's clear_refs, "5").
        std::fs::write("/proc/self/clear_refs", "5").context("resetting VmHWM")?;
        let began = Instant::now();
        let report = service.warm().await?;
        let reload_s = began.elapsed().as_secs_f64();
        let reload_peak = status_bytes("VmHWM:")?;
        let reload_steady = status_bytes("VmRSS:")?;
        anyhow::ensure!(report.sessions == sessions, "reloaded {}", report.sessions);
        // The service, and so the cache, lives until here.
        drop(service);
        anyhow::Ok(Measured {
            sessions,
            warm_s,
            start,
            peak,
            steady,
            reload_s,
            reload_peak,
            reload_steady,
        })
    })?;
    println!("{}", serde_json::to_string(&measured)?);
    Ok(())
}

/// The three columns a compact cache keeps, of every active row.
const IDENTITIES: &str =
    "SELECT token_hash, id, account_id FROM session.sessions WHERE revoked_at IS NULL";

/// The bare binary COPY of every active row's identity columns, received
/// whole; returns how long it took and how many rows it held.
async fn postgres_copy(url: &str) -> anyhow::Result<(Duration, usize)> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    let driver = tokio::spawn(connection);
    let began = Instant::now();
    let stream = client
        .copy_out(&format!("COPY ({IDENTITIES}) TO STDOUT (FORMAT binary)"))
        .await?;
    let mut stream = std::pin::pin!(stream);
    let mut rows = CopyRows::default();
    while let Some(chunk) = std::future::poll_fn(|cx| Pin::as_mut(&mut stream).poll_next(cx)).await
    {
        rows.feed(&chunk?)?;
    }
    let elapsed = began.elapsed();
    drop(client);
    driver.await??;
    Ok((elapsed, rows.rows))
}

/// Counts the tuples of a binary COPY stream fed in chunks: after the
/// 19-byte header, each tuple is a 16-bit field count and, per field, a
/// 32-bit length and that many bytes; a count of −1 ends the stream.
#[derive(Default)]
struct CopyRows {
    /// Bytes kept from the last chunk: a tuple split across chunks.
    pending: Vec<u8>,
    header_read: bool,
    rows: usize,
}

impl CopyRows {
    fn feed(&mut self, chunk: &[u8]) -> anyhow::Result<()> {
        self.pending.extend_from_slice(chunk);
        let mut at = 0;
        if !self.header_read {
            if self.pending.len() < 19 {
                return Ok(());
            }
            at = 19;
            self.header_read = true;
        }
        let data = &self.pending;
        while let Some(count) = data.get(at..at + 2) {
            let count = i16::from_be_bytes([count[0], count[1]]);
            if count < 0 {
                at += 2;
                break;
            }
            let mut end = at + 2;
            let mut whole = true;
            for _ in 0..count {
                let Some(length) = data.get(end..end + 4) else {
                    whole = false;
                    break;
                };
                let length = i32::from_be_bytes([length[0], length[1], length[2], length[3]]);
                end += 4 + usize::try_from(length.max(0))?;
                if end > data.len() {
                    whole = false;
                    break;
                }
            }
            if !whole {
                break;
            }
            at = end;
            self.rows += 1;
        }
        self.pending.drain(..at);
        Ok(())
    }
}

/// The same rows' identity columns in keyset pages of [`PAGE`], as the
/// store's `active_identity_page` reads them, decoded, without a cache.
async fn postgres_keyset(url: &str) -> anyhow::Result<Duration> {
    let mut connection = crate::postgres::connect(url).await?;
    let began = Instant::now();
    let mut after: Option<uuid::Uuid> = None;
    loop {
        let page = sessions::table
            .filter(sessions::revoked_at.is_null())
            .order(sessions::id.asc())
            .limit(i64::from(PAGE))
            .select((sessions::id, sessions::account_id, sessions::token_hash));
        let rows: Vec<(uuid::Uuid, uuid::Uuid, Vec<u8>)> = match after {
            None => page.load(&mut connection).await?,
            Some(after) => {
                page.filter(sessions::id.gt(after))
                    .load(&mut connection)
                    .await?
            }
        };
        match rows.last() {
            Some(last) if rows.len() == PAGE as usize => after = Some(last.0),
            _ => return Ok(began.elapsed()),
        }
    }
}

/// One SELECT of every active row's identity columns, stepped through;
/// returns how long it took and how many rows it read.
fn sqlite_select(path: &Path) -> anyhow::Result<(Duration, usize)> {
    use session_sqlite::sessions as table;
    let mut connection = crate::sqlite::connect(path)?;
    let began = Instant::now();
    let mut rows = 0;
    let query = table::table.filter(table::revoked_at.is_null()).select((
        table::token_hash,
        table::id,
        table::account_id,
    ));
    for row in
        diesel::RunQueryDsl::load_iter::<(Vec<u8>, Vec<u8>, Vec<u8>), _>(query, &mut connection)?
    {
        std::hint::black_box(row?);
        rows += 1;
    }
    Ok((began.elapsed(), rows))
}

/// The store's own keyset pages of identities, timed without a cache.
fn sqlite_keyset(path: &Path, runtime: &tokio::runtime::Runtime) -> anyhow::Result<Duration> {
    runtime.block_on(async {
        let store = SqliteSessionStore::open(path).await?;
        let began = Instant::now();
        let mut after = None;
        loop {
            let page = store.active_identity_page(after, PAGE).await?;
            match page.resume_after {
                Some(last) => after = Some(last),
                None => return Ok(began.elapsed()),
            }
        }
    })
}
