//! Resolve and forward auth over HTTP: requests per second and latency of
//! `POST /v1/sessions/resolve` and of `GET /v1/forward-auth` (the token in
//! `Authorization: Bearer`, as a gateway forwards it) on the real release
//! binary, at fixed concurrency, against the same server's `GET /healthz`:
//! the same HTTP stack, middleware and connection with no session work, the
//! most any route of this server can do.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{AUTHORIZATION, HeaderValue};
use hyper::{Method, StatusCode};
use session_core::SessionToken;
use session_sqlite::SqliteSessionStore;

use crate::Context;
use crate::app::{Launch, Server, ensure_cached};
use crate::load::{self, Requests};
use crate::measure::{Measured, cpu_time};
use crate::report::{Figure, Row, Section, Target, Unit};
use crate::resolve::sessions_label;

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
        "Resolve over HTTP",
        "the same server's GET /healthz at the same concurrency",
    );
    section.note(format!(
        "`session-app serve` ({} build) on SQLite with {}, `--cache map`, `--log warn` (no \
         per-request log lines), on a free loopback port.",
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
         {:?} per subject after a {:?} warm-up; ratio = median of per-round resolve / healthz \
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
        "the same server's GET /healthz at the same concurrency",
    );
    forward.note(
        "`GET /v1/forward-auth` with `Authorization: Bearer <token>`, as a gateway forwards a \
         client's request, on the server, sessions and load generator of \"Resolve over HTTP\", \
         measured in the same run, interleaved with its floor the same way. A 200 carries the \
         identity headers and the resolve JSON.",
    );
    let top = plan.concurrency.iter().copied().max().unwrap_or(1);
    runtime.block_on(async {
        let mut server = Server::spawn(&ctx.app, quiet)?;
        let (_, readiness) = server.wait_ready(Duration::from_secs(120)).await?;
        ensure_cached(&readiness, plan.sessions)?;
        for &connections in plan.concurrency {
            eprintln!("  resolve over HTTP: {connections} connections");
            let measured =
                measure(&server, &plan, connections, ("resolve", &resolve), &healthz).await?;
            let ratio = measured.ratio("resolve", "healthz");
            let target =
                (!ctx.quick && connections == 64).then(|| Target::ratio_at_least(ratio, 0.85));
            section
                .rows
                .push(row(&measured, "resolve", connections_label(connections)).target(target));
        }
        eprintln!("  forward auth over HTTP: {top} connections");
        let measured = measure(
            &server,
            &plan,
            top,
            ("forward-auth", &forward_auth),
            &healthz,
        )
        .await?;
        forward
            .rows
            .push(row(&measured, "forward-auth", connections_label(top)));
        drop(server);

        if plan.with_logging {
            eprintln!("  resolve over HTTP: {top} connections, logging every request");
            let logging = Launch {
                log: "info",
                ..quiet
            };
            let mut server = Server::spawn(&ctx.app, logging)?;
            server.wait_ready(Duration::from_secs(120)).await?;
            let measured = measure(&server, &plan, top, ("resolve", &resolve), &healthz).await?;
            section.rows.push(row(
                &measured,
                "resolve",
                format!(
                    "{}, `--log info` (a JSON line per request)",
                    connections_label(top)
                ),
            ));
            section.note(
                "The `--log info` row writes a JSON log line per request (the default level) \
                 to a pipe this harness drains; its floor logs too.",
            );
        }
        anyhow::Ok(())
    })?;
    Ok(vec![section, forward])
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
fn row(measured: &Measured, subject: &str, case: String) -> Row {
    let micros = |series: &str| Figure::new(measured.median(series), Unit::Microseconds);
    measured
        .throughput_row(case, subject, "healthz")
        .detail("server CPU/req", micros(&format!("{subject}/server-cpu")))
        .detail("floor server CPU/req", micros("healthz/server-cpu"))
        .detail("client CPU/req", micros(&format!("{subject}/client-cpu")))
        .detail("floor client CPU/req", micros("healthz/client-cpu"))
}

async fn measure(
    server: &Server,
    plan: &Plan,
    connections: usize,
    (name, requests): (&'static str, &Requests),
    healthz: &Requests,
) -> anyhow::Result<Measured> {
    let mut measured = Measured::default();
    for round in 0..plan.rounds {
        for subject in crate::measure::rotation(round, 2) {
            let (series, requests) = if subject == 0 {
                ("healthz", healthz)
            } else {
                (name, requests)
            };
            let (server_before, own_before) =
                (cpu_time(server.pid())?, cpu_time(std::process::id())?);
            let (throughput, answered) = load::run(
                server.address,
                requests,
                connections,
                plan.warmup,
                plan.window,
            )
            .await?;
            let per_request = |before: Duration, after: Duration| {
                #[allow(clippy::cast_precision_loss)]
                let micros = (after - before).as_secs_f64() * 1e6 / answered.max(1) as f64;
                micros
            };
            measured.record_value(
                &format!("{series}/server-cpu"),
                per_request(server_before, cpu_time(server.pid())?),
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
