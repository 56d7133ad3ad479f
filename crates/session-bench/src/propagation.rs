//! Propagation between instances: two `session-app` processes on one
//! PostgreSQL; revoke on A, resolve on B until B rejects the token.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use session_test_postgres::TestDatabase;

use crate::Context;
use crate::app::{Launch, Server};
use crate::measure::histogram;
use crate::report::{Figure, Row, Section, Unit};

/// Revocations measured in a full run.
const REVOCATIONS: usize = 1_000;
/// How long one revocation may take to reach B before the run fails.
const GIVE_UP: Duration = Duration::from_secs(10);

pub(crate) fn run(ctx: &Context) -> anyhow::Result<Vec<Section>> {
    let revocations = if ctx.quick { 20 } else { REVOCATIONS };
    let database = TestDatabase::create();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(measure(ctx, database.url(), revocations))
}

async fn measure(ctx: &Context, url: &str, revocations: usize) -> anyhow::Result<Vec<Section>> {
    let launch = Launch {
        database_url: url,
        cache: "map",
        log: "warn",
    };
    let mut a = Server::spawn(&ctx.app, launch)?;
    let mut b = Server::spawn(&ctx.app, launch)?;
    a.wait_ready(Duration::from_secs(60)).await?;
    b.wait_ready(Duration::from_secs(60)).await?;
    let mut to_a = Client::connect(a.address).await?;
    let mut to_b = Client::connect(b.address).await?;

    // Microseconds: A's revoke alone (the floor), and revoke-on-A to rejected-on-B.
    let mut revoke = histogram();
    let mut propagation = histogram();
    let mut polls = 0usize;
    for _ in 0..revocations {
        let (token, id) = to_a.create().await?;
        // B learns of it (by the feed or its miss path) before the clock
        // starts. Polled: past B's miss-read budget (100 a second by
        // default, which a full run exceeds) a miss answers 401 without
        // reading the store until the feed brings the session.
        let learning = Instant::now();
        loop {
            match to_b.resolve(&token).await? {
                StatusCode::OK => break,
                StatusCode::UNAUTHORIZED if learning.elapsed() < GIVE_UP => {}
                other => bail!("B resolving a new session: expected 200 OK, got {other}"),
            }
        }

        let started = Instant::now();
        let (status, _) = to_a
            .send(Method::DELETE, &format!("/v1/sessions/{id}"), None)
            .await?;
        expect(status, StatusCode::NO_CONTENT, "A revoking")?;
        revoke.record(micros(started.elapsed()))?;
        loop {
            polls += 1;
            match to_b.resolve(&token).await? {
                StatusCode::UNAUTHORIZED => break,
                StatusCode::OK if started.elapsed() < GIVE_UP => {}
                other => bail!("B answered {other} for a token revoked on A"),
            }
        }
        propagation.record(micros(started.elapsed()))?;
    }
    drop((a, b));

    let quantile = |histogram: &hdrhistogram::Histogram<u64>, q: f64| {
        Figure::new(histogram.value_at_quantile(q) as f64, Unit::Microseconds)
    };
    let mut section = Section::new(
        "propagation",
        "Revocation propagation between two instances on one PostgreSQL",
        "A's own DELETE round trip (its commit)",
    );
    section.note(format!(
        "{revocations} sessions, each created on A and resolved on B, then revoked on A while \
         B is polled over a keep-alive connection until it answers 401. Clock from sending the \
         DELETE to A to B's first 401; it includes A's commit, the NOTIFY, B applying it and \
         one resolve round trip. {:.1} polls per revocation on average.",
        polls as f64 / revocations as f64
    ));
    section.note(
        "Both services and PostgreSQL (throwaway, loopback, durability as initdb sets it) share \
         the machine's cores with the client.",
    );
    for (case, q) in [("p50", 0.5), ("p99", 0.99)] {
        let figure = quantile(&propagation, q);
        let floor = quantile(&revoke, q);
        section.rows.push(
            Row::new(
                format!("revoke on A → rejected on B, {case}"),
                figure,
                floor,
                figure.value / floor.value.max(1.0),
            )
            .detail("max", quantile(&propagation, 1.0)),
        );
    }
    Ok(vec![section])
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
