//! The HTTP stack over the real release binary: requests per second and
//! latency of `GET /healthz`, `POST /v1/sessions/resolve` and `GET
//! /v1/forward-auth` (the token in `Authorization: Bearer`, as a gateway
//! forwards it) at fixed concurrency, each beside the same route of a bare
//! axum server with no middleware and no session work (`floor.rs`), measured
//! in the same run, in alternating rounds, with the same load generator.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{AUTHORIZATION, HeaderValue};
use hyper::{Method, StatusCode};
use session_core::SessionToken;
use session_sqlite::SqliteSessionStore;

use crate::Context;
use crate::app::{Launch, Server, ensure_cached};
use crate::floor::FloorServer;
use crate::load::{self, Requests};
use crate::measure::{Measured, cpu_time};
use crate::report::{Figure, Row, Section, Target, Unit};
use crate::resolve::sessions_label;

/// The targets, as fractions of the bare-stack floor's throughput
/// at the highest concurrency: `/healthz` and resolve with `--log warn`,
/// and resolve at the default `--log info`.
const HEALTHZ_TARGET: f64 = 0.90;
const RESOLVE_TARGET: f64 = 0.85;
const RESOLVE_LOGGING_TARGET: f64 = 0.70;

struct Plan {
    sessions: usize,
    concurrency: &'static [usize],
    rounds: usize,
    warmup: Duration,
    window: Duration,
    /// Also measure with per-request logging on, at the highest concurrency.
    with_logging: bool,
}

pub(crate) fn run(ctx: &Context) -> anyhow::Result<Vec<Section>> {
    let plan = if ctx.quick {
        Plan {
            sessions: 1_000,
            concurrency: &[4],
            rounds: 1,
            warmup: Duration::from_millis(100),
            window: Duration::from_millis(300),
            with_logging: false,
        }
    } else {
        Plan {
            sessions: 100_000,
            concurrency: &[1, 16, 64],
            rounds: 5,
            warmup: Duration::from_millis(200),
            window: Duration::from_secs(1),
            with_logging: true,
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    eprintln!("  resolve over HTTP: loading {} sessions", plan.sessions);
    let path = ctx.scratch.join("http.db");
    // Creates and migrates the file; the store is closed again before the service opens it.
    drop(runtime.block_on(SqliteSessionStore::open(&path))?);
    let tokens: Vec<SessionToken> = (0..plan.sessions)
        .map(|_| SessionToken::generate())
        .collect();
    crate::sqlite::bulk_load(&path, tokens.iter().map(SessionToken::hash))?;
    let mut bearers: Vec<HeaderValue> = tokens
        .iter()
        .map(|token| HeaderValue::from_str(&format!("Bearer {}", token.expose_secret())))
        .collect::<Result<_, _>>()?;
    fastrand::Rng::with_seed(18).shuffle(&mut bearers);
    let mut bodies: Vec<Bytes> = tokens
        .iter()
        .map(|token| Bytes::from(serde_json::json!({ "token": token.expose_secret() }).to_string()))
        .collect();
    drop(tokens);
    fastrand::Rng::with_seed(17).shuffle(&mut bodies);
    let resolve = Requests {
        method: Method::POST,
        path: "/v1/sessions/resolve",
        bodies: Arc::from(bodies),
        header: None,
        expect: StatusCode::OK,
    };
    let forward_auth = Requests {
        header: Some((AUTHORIZATION, Arc::from(bearers))),
        ..Requests::get("/v1/forward-auth")
    };
    let healthz = Requests::get("/healthz");
    let database_url = format!("sqlite://{}", path.display());

    let mut section = Section::new(
        "resolve_http",
        "The HTTP stack against its bare-stack floor",
        "the same route of a plain `axum::serve(listener, router)` with no middleware \
         and no session work, in the same run",
    );
    section.note(format!(
        "`session-app serve` ({} build) on SQLite with {}, `--cache map`, `--log warn` (no \
         per-request log lines) unless the row says otherwise, on a free loopback port. The \
         floor is this harness's `--floor-server`: the same routes on a bare axum router \
         served by `axum::serve`, what a user would write without this project, answering \
         `/healthz` with a constant body, resolve by parsing `{{\"token\"}}` with axum's \
         `Json` and answering a constant 211-byte session, forward auth with constant \
         identity headers and that body.",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        sessions_label(plan.sessions)
    ));
    section.note(format!(
        "The load generator is this harness: hyper HTTP/1.1 clients, one keep-alive \
         connection per simulated client sending its next request as soon as the answer is \
         read; resolves cycle through every token in random order. It shares the machine's \
         {} cores with the server, so both figures include its cost. {} interleaved rounds of \
         {:?} per subject after a {:?} warm-up; ratio = median of per-round service / floor \
         throughput; latency percentiles over every round.",
        ctx.cpus, plan.rounds, plan.window, plan.warmup
    ));

    let quiet = Launch {
        database_url: &database_url,
        cache: "map",
        log: "warn",
        extra: &[],
    };
    let mut forward = Section::new(
        "forward_auth_http",
        "Forward auth over HTTP",
        "the bare axum server's forward-auth route: constant identity headers and body",
    );
    forward.note(
        "`GET /v1/forward-auth` with `Authorization: Bearer <token>`, as a gateway forwards a \
         client's request, on the server, sessions and load generator of the section above, \
         measured in the same run, interleaved with its floor the same way. A 200 carries the \
         identity headers and the resolve JSON.",
    );
    let top = plan.concurrency.iter().copied().max().unwrap_or(1);
    let full = !ctx.quick;
    runtime.block_on(async {
        let floor = FloorServer::spawn()?;
        let floor_at = |requests| Endpoint {
            address: floor.address,
            pid: floor.pid(),
            requests,
        };
        let mut server = Server::spawn(&ctx.app, quiet)?;
        let (_, readiness) = server.wait_ready(Duration::from_secs(120)).await?;
        ensure_cached(&readiness, plan.sessions)?;
        let service_at = |server: &Server, requests| Endpoint {
            address: server.address,
            pid: server.pid(),
            requests,
        };

        eprintln!("  /healthz over HTTP: {top} connections");
        let measured = measure(
            &plan,
            top,
            service_at(&server, &healthz),
            floor_at(&healthz),
        )
        .await?;
        let target =
            full.then(|| Target::ratio_at_least(measured.ratio(SERVICE, FLOOR), HEALTHZ_TARGET));
        section
            .rows
            .push(row(&measured, format!("`/healthz`, {}", connections_label(top))).target(target));
        for &connections in plan.concurrency {
            eprintln!("  resolve over HTTP: {connections} connections");
            let measured = measure(
                &plan,
                connections,
                service_at(&server, &resolve),
                floor_at(&resolve),
            )
            .await?;
            let target = (full && connections == top)
                .then(|| Target::ratio_at_least(measured.ratio(SERVICE, FLOOR), RESOLVE_TARGET));
            section.rows.push(
                row(
                    &measured,
                    format!("resolve, {}", connections_label(connections)),
                )
                .target(target),
            );
        }
        eprintln!("  forward auth over HTTP: {top} connections");
        let measured = measure(
            &plan,
            top,
            service_at(&server, &forward_auth),
            floor_at(&forward_auth),
        )
        .await?;
        forward.rows.push(row(
            &measured,
            format!("forward auth, {}", connections_label(top)),
        ));
        drop(server);

        if plan.with_logging {
            eprintln!("  resolve over HTTP: {top} connections, logging every request");
            let logging = Launch {
                log: "info",
                ..quiet
            };
            let mut server = Server::spawn(&ctx.app, logging)?;
            server.wait_ready(Duration::from_secs(120)).await?;
            let measured = measure(
                &plan,
                top,
                service_at(&server, &resolve),
                floor_at(&resolve),
            )
            .await?;
            let target = full.then(|| {
                Target::ratio_at_least(measured.ratio(SERVICE, FLOOR), RESOLVE_LOGGING_TARGET)
            });
            section.rows.push(
                row(
                    &measured,
                    format!(
                        "resolve, {}, `--log info` (a line per request)",
                        connections_label(top)
                    ),
                )
                .target(target),
            );
            section.note(
                "The `--log info` row writes a JSON log line per request (the default level; \
                 JSON as the launcher asks) to \
                 a pipe this harness drains; the floor logs nothing.",
            );
        }
        anyhow::Ok(())
    })?;
    Ok(vec![section, forward])
}

/// The two series every measurement has.
const SERVICE: &str = "service";
const FLOOR: &str = "floor";

/// A server and what to send it.
struct Endpoint<'a> {
    address: SocketAddr,
    pid: u32,
    requests: &'a Requests,
}

fn connections_label(connections: usize) -> String {
    if connections == 1 {
        "1 connection".to_owned()
    } else {
        format!("{connections} connections")
    }
}

/// Throughput and latency beside the floor's, and where the CPU time went:
/// per request answered, in the server and in this load generator.
fn row(measured: &Measured, case: String) -> Row {
    let micros = |series: &str| Figure::new(measured.median(series), Unit::Microseconds);
    measured
        .throughput_row(case, SERVICE, FLOOR)
        .detail("server CPU/req", micros("service/server-cpu"))
        .detail("floor server CPU/req", micros("floor/server-cpu"))
        .detail("client CPU/req", micros("service/client-cpu"))
        .detail("floor client CPU/req", micros("floor/client-cpu"))
}

/// The service and the floor under the same load, in alternating rounds.
async fn measure(
    plan: &Plan,
    connections: usize,
    service: Endpoint<'_>,
    floor: Endpoint<'_>,
) -> anyhow::Result<Measured> {
    let mut measured = Measured::default();
    for round in 0..plan.rounds {
        for subject in crate::measure::rotation(round, 2) {
            let (series, endpoint) = if subject == 0 {
                (FLOOR, &floor)
            } else {
                (SERVICE, &service)
            };
            let (server_before, own_before) =
                (cpu_time(endpoint.pid)?, cpu_time(std::process::id())?);
            let (throughput, answered) = load::run(
                endpoint.address,
                endpoint.requests,
                connections,
                plan.warmup,
                plan.window,
            )
            .await?;
            let per_request = |before: Duration, after: Duration| {
                (after - before).as_secs_f64() * 1e6 / answered.max(1) as f64
            };
            measured.record_value(
                &format!("{series}/server-cpu"),
                per_request(server_before, cpu_time(endpoint.pid)?),
            );
            measured.record_value(
                &format!("{series}/client-cpu"),
                per_request(own_before, cpu_time(std::process::id())?),
            );
            measured.record(series, throughput)?;
        }
    }
    Ok(measured)
}
