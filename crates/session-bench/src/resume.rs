//! Resume: a follower of the change log cut off from PostgreSQL while
//! sessions are revoked, measured from the moment the network is back until
//! it is ready again with every revocation applied, against loading every
//! session afresh.
//!
//! The follower is an in-process `SessionService` whose store reaches the
//! database through a TCP proxy that can cut every connection and refuse new
//! ones, as a network partition would. Resuming reads only the log after
//! its cursor; the floor is what it would cost without the log: a full warm
//! of the same sessions by a fresh service, through the same proxy.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use session_core::port::change_log::{ChangeLog, ChangeLogDecorator, LogCursor, LogRead};
use session_core::port::store::{RevokeOutcome, SessionStore, StoreError};
use session_core::{MemoryCache, SessionId, SessionService};
use session_postgres::{PgConfig, PgSessionStore};
use session_test_postgres::TestDatabase;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::Context;
use crate::report::{Figure, Row, Section, Unit};
use crate::resolve::sessions_label;

/// How long the follower may take to be ready before the run fails.
const GIVE_UP: Duration = Duration::from_secs(300);
/// Tasks revoking sessions while the follower is cut off.
const REVOKERS: usize = 4;

struct Plan {
    sessions: usize,
    revoked: usize,
    cut_for: Duration,
}

pub(crate) fn run(ctx: &Context) -> anyhow::Result<Vec<Section>> {
    let plan = if ctx.quick {
        Plan {
            sessions: 5_000,
            revoked: 100,
            cut_for: Duration::from_secs(1),
        }
    } else {
        Plan {
            sessions: 1_000_000,
            revoked: 10_000,
            cut_for: Duration::from_secs(10),
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let database = TestDatabase::create();
    runtime.block_on(measure(database.url(), &plan))
}

async fn measure(url: &str, plan: &Plan) -> anyhow::Result<Vec<Section>> {
    PgSessionStore::connect(PgConfig::from_url(url)?)
        .await?
        .migrate()
        .await?;
    eprintln!("  resume: loading {} sessions", plan.sessions);
    crate::postgres::bulk_load(url, plan.sessions).await?;
    let proxy = Proxy::start(url).await?;

    eprintln!("  resume: the follower loads them");
    let follower_store = Arc::new(PgSessionStore::connect(PgConfig::from_url(&proxy.url)?).await?);
    let log = Arc::new(WatchedLog::new(follower_store.clone()));
    let follower = SessionService::builder(follower_store, Arc::new(MemoryCache::new()))
        .change_log(log.clone())
        .build();
    let following = follower.start();
    until_ready(&follower, plan.sessions, "of starting").await?;

    eprintln!(
        "  resume: cut off for {:?} while {} sessions are revoked",
        plan.cut_for, plan.revoked
    );
    proxy.cut();
    let cut_at = Instant::now();
    revoke(url, plan).await?;
    let revoking = cut_at.elapsed();
    tokio::time::sleep(plan.cut_for.saturating_sub(revoking)).await;
    let lagging = !follower
        .status()
        .change_log
        .is_some_and(|lag| lag.within_bound());
    let remaining = plan.sessions - plan.revoked;
    anyhow::ensure!(
        follower.status().cached_sessions == plan.sessions,
        "the follower applied revocations while cut off: it holds {} sessions",
        follower.status().cached_sessions
    );
    proxy.restore();
    let restored_at = Instant::now();
    let ready_at = until_ready(&follower, remaining, "of the network's return").await?;
    let cut_off = restored_at - cut_at;
    let resumed_at = log
        .resumed_at()
        .context("no read of the log succeeded after the network came back")?;
    let stats = follower.status().change_log_stats;
    if stats.full_loads != 1 {
        bail!(
            "the follower loaded every session again instead of resuming: {} full loads",
            stats.full_loads
        );
    }
    let first_load = follower
        .status()
        .last_warm
        .context("the follower reports no warm")?
        .elapsed;
    drop(following);
    drop(follower);

    eprintln!("  resume: the floor, a fresh service warming through the same proxy");
    let fresh = SessionService::builder(
        Arc::new(PgSessionStore::connect(PgConfig::from_url(&proxy.url)?).await?),
        Arc::new(MemoryCache::new()),
    )
    .build();
    let began = Instant::now();
    let warmed = fresh.warm().await?;
    let floor = began.elapsed();
    anyhow::ensure!(
        warmed.sessions == remaining,
        "the fresh service warmed {} sessions, expected {remaining}",
        warmed.sessions
    );
    drop(fresh);

    let seconds = |duration: Duration| Figure::new(duration.as_secs_f64(), Unit::Seconds);
    let floor_figure = seconds(floor);
    let ratio = |duration: Duration| duration.as_secs_f64() / floor.as_secs_f64();
    let resuming = ready_at - restored_at;
    let catching_up = ready_at.saturating_duration_since(resumed_at);
    let mut section = Section::new(
        "resume",
        "A follower resuming after a network partition",
        format!(
            "a full warm of the same {} (those still active) by a fresh service through the \
             same proxy (`SessionService::warm`), in this run",
            sessions_label(remaining)
        ),
    );
    section.note(format!(
        "An in-process `SessionService` follows the change log of a database holding {}, \
         all active (bulk-loaded), through a TCP proxy. The proxy then cuts every \
         connection and refuses new ones for {:.1?} while {} sessions are revoked one by one \
         ({REVOKERS} tasks on the store directly, done {:.1?} into the cut), and lets \
         connections through again.",
        sessions_label(plan.sessions),
        cut_off,
        count(plan.revoked as u64),
        revoking
    ));
    section.note(
        "Ready: `status().cache_ready()` and `check_store()` (store reachable, lag within the \
         2 s bound) and the \
         cache holds exactly the sessions still active, polled every millisecond. The \
         follower retries a failed read after 250 ms, doubling to 5 s, so after a long cut \
         it finds the network back only at its next retry: the first row includes that \
         wait, the second starts at the first read of the log that succeeded.",
    );
    section.note(format!(
        "It resumed from its cursor: {} full load (the first), {} failed reads of the log \
         retried from the same position; {} past its staleness bound when the network came \
         back. Its first load of all {} took {:.2?}.",
        stats.full_loads,
        stats.read_failures,
        if lagging { "it was" } else { "it was not yet" },
        sessions_label(plan.sessions),
        first_load
    ));
    section.rows.push(
        Row::new(
            "network back → ready, every revocation applied",
            seconds(resuming),
            floor_figure,
            ratio(resuming),
        )
        .detail(
            "waiting for the retry",
            seconds(resumed_at.saturating_duration_since(restored_at)),
        )
        .detail("full loads", count(stats.full_loads)),
    );
    section.rows.push(
        Row::new(
            "first read after the cut → ready (catching up)",
            seconds(catching_up),
            floor_figure,
            ratio(catching_up),
        )
        .detail("revocations applied", count(plan.revoked as u64)),
    );
    Ok(vec![section])
}

fn count(value: u64) -> Figure {
    Figure::new(value as f64, Unit::Count)
}

/// Polls every millisecond until the follower holds exactly `sessions` and
/// is ready; returns when it was.
async fn until_ready(
    follower: &SessionService,
    sessions: usize,
    what: &str,
) -> anyhow::Result<Instant> {
    let began = Instant::now();
    loop {
        // The count first: readiness costs a round trip to the database.
        if follower.status().cached_sessions == sessions
            && follower.status().cache_ready()
            && follower.check_store().await.is_ok()
        {
            return Ok(Instant::now());
        }
        if began.elapsed() >= GIVE_UP {
            bail!(
                "the follower was not ready with {sessions} sessions within {GIVE_UP:?} {what} \
                 (it holds {})",
                follower.status().cached_sessions
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Revokes `plan.revoked` of the bulk-loaded sessions, spread evenly over
/// them, each in its own statement, from [`REVOKERS`] tasks.
async fn revoke(url: &str, plan: &Plan) -> anyhow::Result<()> {
    let store =
        Arc::new(PgSessionStore::connect(PgConfig::from_url(url)?.pool_size(REVOKERS)).await?);
    let every = plan.sessions / plan.revoked;
    let ids: Vec<SessionId> = (0..plan.revoked)
        .map(|k| crate::postgres::bulk_loaded_id(1 + k * every))
        .collect();
    let mut tasks = Vec::new();
    for chunk in ids.chunks(ids.len().div_ceil(REVOKERS)) {
        let (store, chunk) = (store.clone(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            for id in chunk {
                let outcome = store
                    .revoke(
                        id,
                        time::OffsetDateTime::now_utc(),
                        session_core::RevocationReason::LOGOUT,
                        None,
                    )
                    .await?;
                anyhow::ensure!(
                    matches!(outcome, RevokeOutcome::Revoked { .. }),
                    "revoking {id}: {outcome:?}"
                );
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// The follower's change log, noting when a read first succeeded after
/// failing: the start of catching up once the network is back.
struct WatchedLog {
    log: Arc<PgSessionStore>,
    failing: AtomicBool,
    resumed_at: Mutex<Option<Instant>>,
}

impl WatchedLog {
    fn new(log: Arc<PgSessionStore>) -> Self {
        Self {
            log,
            failing: AtomicBool::new(false),
            resumed_at: Mutex::new(None),
        }
    }

    /// When the first read that succeeded after a failed one began.
    fn resumed_at(&self) -> Option<Instant> {
        *self
            .resumed_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl ChangeLogDecorator for WatchedLog {
    fn inner_log(&self) -> &dyn ChangeLog {
        &*self.log
    }

    async fn read(&self, after: &LogCursor, limit: u32) -> Result<LogRead, StoreError> {
        let began = Instant::now();
        let read = self.log.read(after, limit).await;
        if read.is_err() {
            self.failing.store(true, Ordering::SeqCst);
        } else if self.failing.swap(false, Ordering::SeqCst) {
            *self
                .resumed_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(began);
        }
        read
    }
}

/// A TCP proxy to the database that can cut every connection and refuse
/// new ones (a network partition) until restored.
struct Proxy {
    /// The database URL through the proxy.
    url: String,
    cut: Arc<AtomicBool>,
    forwarding: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accepting: JoinHandle<()>,
}

impl Proxy {
    async fn start(url: &str) -> anyhow::Result<Self> {
        let target: tokio_postgres::Config = url.parse()?;
        let (Some(tokio_postgres::config::Host::Tcp(host)), Some(&port)) =
            (target.get_hosts().first(), target.get_ports().first())
        else {
            bail!("the benchmark's database must be reached over TCP");
        };
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let proxied = url.replacen(
            &format!("{host}:{port}"),
            &format!("127.0.0.1:{}", listener.local_addr()?.port()),
            1,
        );
        anyhow::ensure!(
            proxied != url,
            "could not point the database URL at the proxy"
        );
        let cut = Arc::new(AtomicBool::new(false));
        let forwarding = Arc::new(Mutex::new(Vec::new()));
        let accepting = tokio::spawn({
            let (host, cut, forwarding) = (host.clone(), cut.clone(), forwarding.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        continue;
                    }
                    let Ok(server) = TcpStream::connect((host.as_str(), port)).await else {
                        continue;
                    };
                    let _ = (client.set_nodelay(true), server.set_nodelay(true));
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let mut tasks = forwarding.lock().unwrap_or_else(PoisonError::into_inner);
                    tasks.push(tokio::spawn(forward(client_read, server_write)));
                    tasks.push(tokio::spawn(forward(server_read, client_write)));
                }
            }
        });
        Ok(Self {
            url: proxied,
            cut,
            forwarding,
            accepting,
        })
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for task in self
            .forwarding
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.cut();
    }
}

async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
) {
    let mut buffer = vec![0; 64 * 1024];
    while let Ok(read) = from.read(&mut buffer).await {
        if read == 0 || to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
