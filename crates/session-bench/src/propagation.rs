//! Propagation between instances: `session-app` processes on one
//! PostgreSQL; revoke on A, resolve on a follower until it rejects the
//! token. One follower hears the change log's notifications (the default),
//! another has them turned off and learns only when it polls.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use session_test_postgres::TestDatabase;
use tokio_postgres::NoTls;

use crate::Context;
use crate::app::{Launch, Server};
use crate::measure::histogram;
use crate::report::{Figure, Row, Section, Unit};

/// Rounds in a full run; each measures [`WOKEN_PER_ROUND`] revocations
/// reaching the follower that hears notifications and one reaching the
/// follower that only polls (which takes half a poll interval on average).
const ROUNDS: usize = 200;
const WOKEN_PER_ROUND: usize = 5;
/// The followers' `--log-poll-interval`: session-app's default.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Between two resolves on the follower that only polls: its answer changes
/// at most once a poll interval, so spinning would only take CPU from it.
const POLLING_PAUSE: Duration = Duration::from_millis(1);
/// How long one revocation may take to reach a follower before the run fails.
const GIVE_UP: Duration = Duration::from_secs(10);

pub(crate) fn run(ctx: &Context) -> anyhow::Result<Vec<Section>> {
    let rounds = if ctx.quick { 5 } else { ROUNDS };
    let database = TestDatabase::create();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(measure(ctx, database.url(), rounds))
}

/// Revocations reaching one follower: A's own DELETE round trip (the
/// floor) and revoke-on-A to rejected-on-the-follower, in microseconds.
struct Reaching {
    follower: Client,
    /// Pause between two resolves while waiting for the rejection.
    pause: Duration,
    /// The most to wait, at random, before revoking: a follower that only
    /// polls would otherwise be measured at the same phase of its polling
    /// every time, since each measurement ends just after one of its polls.
    spread: Duration,
    rng: fastrand::Rng,
    revoke: Histogram<u64>,
    propagation: Histogram<u64>,
    polls: usize,
}

impl Reaching {
    fn new(follower: Client, pause: Duration, spread: Duration) -> Self {
        Self {
            follower,
            pause,
            spread,
            rng: fastrand::Rng::with_seed(17),
            revoke: histogram(),
            propagation: histogram(),
            polls: 0,
        }
    }

    /// Creates a session on A, waits until the follower accepts it, then
    /// revokes it on A and times until the follower rejects it.
    async fn measure_one(&mut self, to_a: &mut Client) -> anyhow::Result<()> {
        let (token, id) = to_a.create().await?;
        // The follower learns of it (by the log or its miss path) before the
        // clock starts. Polled: past its miss-read budget (100 a second by
        // default, which a full run exceeds) a miss answers 401 without
        // reading the store until the log brings the session.
        let learning = Instant::now();
        loop {
            match self.follower.resolve(&token).await? {
                StatusCode::OK => break,
                StatusCode::UNAUTHORIZED if learning.elapsed() < GIVE_UP => {
                    tokio::time::sleep(self.pause).await;
                }
                other => bail!("a follower resolving a new session: expected 200 OK, got {other}"),
            }
        }

        if !self.spread.is_zero() {
            let spread = u64::try_from(self.spread.as_micros()).unwrap_or(u64::MAX);
            let wait = Duration::from_micros(self.rng.u64(0..spread));
            tokio::time::sleep(wait).await;
        }
        let started = Instant::now();
        let (status, _) = to_a
            .send(Method::DELETE, &format!("/v1/sessions/{id}"), None)
            .await?;
        expect(status, StatusCode::NO_CONTENT, "A revoking")?;
        self.revoke.record(micros(started.elapsed()))?;
        loop {
            self.polls += 1;
            match self.follower.resolve(&token).await? {
                StatusCode::UNAUTHORIZED => break,
                StatusCode::OK if started.elapsed() < GIVE_UP => {
                    tokio::time::sleep(self.pause).await;
                }
                other => bail!("a follower answered {other} for a token revoked on A"),
            }
        }
        self.propagation.record(micros(started.elapsed()))?;
        Ok(())
    }

    fn rows(&self, section: &mut Section, how: &str) {
        let quantile = |histogram: &Histogram<u64>, q: f64| {
            Figure::new(histogram.value_at_quantile(q) as f64, Unit::Microseconds)
        };
        let polls = self.polls as f64 / self.propagation.len().max(1) as f64;
        for (case, q) in [("p50", 0.5), ("p99", 0.99)] {
            let figure = quantile(&self.propagation, q);
            let floor = quantile(&self.revoke, q);
            section.rows.push(
                Row::new(
                    format!("revoke on A → rejected on B, {how}, {case}"),
                    figure,
                    floor,
                    figure.value / floor.value.max(1.0),
                )
                .detail("max", quantile(&self.propagation, 1.0))
                .detail("polls per revocation", Figure::new(polls, Unit::Count)),
            );
        }
    }
}

async fn measure(ctx: &Context, url: &str, rounds: usize) -> anyhow::Result<Vec<Section>> {
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
    let poll_interval = format!("{}ms", POLL_INTERVAL.as_millis());
    let follower = |wake_ups| {
        [
            "--pg-wake-ups",
            wake_ups,
            "--log-poll-interval",
            &poll_interval,
        ]
    };
    let mut a = server(&[])?;
    let mut woken = server(&follower("true"))?;
    let mut polling = server(&follower("false"))?;
    for server in [&mut a, &mut woken, &mut polling] {
        server.wait_ready(Duration::from_secs(60)).await?;
    }
    let listening = listening_connections(url).await?;
    anyhow::ensure!(
        listening == 2,
        "expected A and the woken follower to LISTEN, and the polling one not to: \
         {listening} connections listen"
    );
    let mut to_a = Client::connect(a.address).await?;
    let mut by_wake_ups = Reaching::new(
        Client::connect(woken.address).await?,
        Duration::ZERO,
        Duration::ZERO,
    );
    let mut by_polling = Reaching::new(
        Client::connect(polling.address).await?,
        POLLING_PAUSE,
        POLL_INTERVAL,
    );

    // Interleaved, so background load hits both followers alike.
    for _ in 0..rounds {
        for _ in 0..WOKEN_PER_ROUND {
            by_wake_ups.measure_one(&mut to_a).await?;
        }
        by_polling.measure_one(&mut to_a).await?;
    }
    drop((a, woken, polling));

    let mut section = Section::new(
        "propagation",
        "Revocation propagation between instances on one PostgreSQL",
        "A's own DELETE round trip (its commit), for the same revocations",
    );
    section.note(format!(
        "Three `session-app serve` processes on one database: A, and two followers B, one \
         woken by the change log's NOTIFY (the default), one with `--pg-wake-ups false`, \
         reading the log only every `--log-poll-interval` ({POLL_INTERVAL:?}, the default). \
         {rounds} rounds of {WOKEN_PER_ROUND} revocations reaching the woken follower and \
         one reaching the polling one."
    ));
    section.note(
        "Each session is created on A and resolved on its follower, then revoked on A while \
         the follower is polled over a keep-alive connection until it answers 401 (the \
         polling follower with a 1 ms pause between resolves, so a resolution of 1 ms, and \
         after a random wait of up to one poll interval before the revocation, so it falls \
         at a random point of the follower's polling). Clock from sending the DELETE to A to the first 401; it includes A's commit, the \
         follower's wake-up or poll, its read of the log and one resolve round trip.",
    );
    section.note(
        "All services and PostgreSQL (throwaway, loopback, durability off) share the \
         machine's cores with the client.",
    );
    by_wake_ups.rows(&mut section, "woken by NOTIFY");
    by_polling.rows(&mut section, "polling alone");
    Ok(vec![section])
}

/// Connections of the database listening for the change log's wake-ups.
async fn listening_connections(url: &str) -> anyhow::Result<i64> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    let driver = tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND query = $1",
            &[&format!("LISTEN {}", session_postgres::CHANGES_CHANNEL)],
        )
        .await?;
    drop(client);
    driver.await??;
    Ok(row.get(0))
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

fn expect(status: StatusCode, want: StatusCode, what: &str) -> anyhow::Result<()> {
    if status != want {
        bail!("{what}: expected {want}, got {status}");
    }
    Ok(())
}

/// One keep-alive HTTP/1.1 connection to a service.
struct Client {
    sender: SendRequest<Full<Bytes>>,
    address: SocketAddr,
}

impl Client {
    async fn connect(address: SocketAddr) -> anyhow::Result<Self> {
        Ok(Self {
            sender: crate::load::connect(address).await?,
            address,
        })
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.address.to_string());
        let body = match body {
            Some(body) => {
                request = request.header(hyper::header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(body.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        self.sender.ready().await?;
        let response = self.sender.send_request(request.body(body)?).await?;
        let status = response.status();
        Ok((status, response.into_body().collect().await?.to_bytes()))
    }

    async fn create(&mut self) -> anyhow::Result<(String, String)> {
        let account = uuid::Uuid::new_v4();
        let body = serde_json::json!({ "account_id": account.to_string() });
        let (status, bytes) = self.send(Method::POST, "/v1/sessions", Some(body)).await?;
        expect(status, StatusCode::CREATED, "A creating a session")?;
        let created: serde_json::Value = serde_json::from_slice(&bytes)?;
        let field = |pointer: &str| {
            created
                .pointer(pointer)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
                .with_context(|| format!("no {pointer} in the creation response"))
        };
        Ok((field("/token")?, field("/session/id")?))
    }

    async fn resolve(&mut self, token: &str) -> anyhow::Result<StatusCode> {
        let body = serde_json::json!({ "token": token });
        Ok(self
            .send(Method::POST, "/v1/sessions/resolve", Some(body))
            .await?
            .0)
    }
}
