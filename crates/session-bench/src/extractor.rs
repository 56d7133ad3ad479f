//! The embedded extractor: what `CurrentSession` adds to a request of a host
//! backend built on axum.
//!
//! The subject is an axum `Router` whose handler takes `CurrentSession` (or
//! `Option<CurrentSession>`) from a `SessionAuth` in its state; the floor is
//! the same router with the same handler body and no extractor, sent the
//! same requests (so building the request, routing, the handler's future
//! and the response are on both sides). The difference is the extractor:
//! finding the token in the headers, parsing it, SHA-256, the cache lookup,
//! and the rejection response when there is no session.
//!
//! Requests are driven in process through `tower::Service::call`, in batches
//! inside one `block_on` of a current-thread Tokio runtime, with no socket:
//! over loopback, HTTP parsing would dwarf both sides.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{HeaderName, HeaderValue, Request, header};
use session_axum::{CurrentSession, SessionAuth};
use session_core::memory::MemoryStore;
use session_core::port::cache::SessionCache;
use session_core::{
    AccountId, ClientMetadata, MemoryCache, Session, SessionId, SessionService, SessionToken,
};
use tower::Service as _;

use crate::Context;
use crate::measure::{Rounds, rotation};
use crate::report::{Figure, Row, Section, Unit};
use crate::resolve::sessions_label;

const SESSIONS: usize = 100_000;
const QUICK_SESSIONS: usize = 1_000;

/// What each case sends, and which route answers it.
struct Case {
    name: &'static str,
    path: &'static str,
    /// The header carrying the token, per session.
    headers: Vec<(HeaderName, HeaderValue)>,
}

pub(crate) fn run(ctx: &Context) -> anyhow::Result<Vec<Section>> {
    let size = if ctx.quick { QUICK_SESSIONS } else { SESSIONS };
    let (rounds, batch) = if ctx.quick { (3, 2_000) } else { (11, 100_000) };
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    eprintln!("  extractor: {size} sessions");

    let cache = Arc::new(MemoryCache::new());
    let service = SessionService::builder(Arc::new(MemoryStore::new()), cache.clone()).build();
    runtime.block_on(service.warm())?;
    let mut tokens = Vec::with_capacity(size);
    let mut sessions = Vec::with_capacity(size);
    let created_at = time::OffsetDateTime::now_utc();
    for _ in 0..size {
        let token = SessionToken::generate();
        sessions.push(Arc::new(Session {
            id: SessionId::new(),
            account_id: AccountId::new(uuid::Uuid::new_v4())?,
            token_hash: token.hash(),
            created_at,
            revocation: None,
            metadata: ClientMetadata::default(),
        }));
        tokens.push(token);
    }
    cache.replace_all(sessions);
    let mut rng = fastrand::Rng::with_seed(0x5e55_a7e5);
    rng.shuffle(&mut tokens);

    let auth = SessionAuth::builder(service).build();
    let cookie = auth.cookie().name().to_owned();
    let subject: Router = Router::new()
        .route("/required", get(required))
        .route("/optional", get(optional))
        .with_state(auth);
    let floor: Router = Router::new()
        .route("/required", get(no_extractor))
        .route("/optional", get(no_extractor));

    let value = |text: String| HeaderValue::try_from(text).expect("ASCII");
    let cases = [
        Case {
            name: "hit, Bearer",
            path: "/required",
            headers: tokens
                .iter()
                .map(|t| {
                    let bearer = value(format!("Bearer {}", t.expose_secret()));
                    (header::AUTHORIZATION, bearer)
                })
                .collect(),
        },
        Case {
            name: "hit, cookie among 3",
            path: "/required",
            headers: tokens
                .iter()
                .map(|t| {
                    let cookies = format!(
                        "theme=dark; {cookie}={}; _ga=GA1.1.123456789.1700000000",
                        t.expose_secret()
                    );
                    (header::COOKIE, value(cookies))
                })
                .collect(),
        },
        Case {
            name: "unknown token, 401",
            path: "/required",
            headers: (0..size.min(1 << 16))
                .map(|_| {
                    let unknown = SessionToken::generate();
                    (
                        header::AUTHORIZATION,
                        value(format!("Bearer {}", unknown.expose_secret())),
                    )
                })
                .collect(),
        },
        Case {
            name: "no token, optional",
            path: "/optional",
            headers: vec![(header::ACCEPT, HeaderValue::from_static("*/*"))],
        },
    ];

    for (case, status) in cases.iter().zip([200, 200, 401, 200]) {
        let got = runtime.block_on(answer(&subject, case));
        anyhow::ensure!(
            got == status,
            "{}: the extractor answered {got}, not {status}",
            case.name
        );
        let got = runtime.block_on(answer(&floor, case));
        anyhow::ensure!(got == 200, "{}: the floor answered {got}", case.name);
    }

    let mut measured = Rounds::default();
    let subjects = [("subject", &subject), ("floor", &floor)];
    for round in 0..rounds {
        for case in &cases {
            for index in rotation(round, subjects.len()) {
                let (side, router) = subjects[index];
                let ns = runtime.block_on(drive(router, case, batch));
                measured.record(&format!("{}/{side}", case.name), ns);
            }
        }
    }

    let mut section = Section::new(
        "extractor",
        "The embedded extractor per request",
        "the same axum router and handler with no extractor, sent the same requests",
    );
    section.note(format!(
        "Median ns per request over {rounds} interleaved rounds of {batch} requests, driven \
         in process (`tower::Service::call`, no socket), {}, tokens in random order; \
         ratio = median of per-round subject / floor.",
        sessions_label(size)
    ));
    section.note(
        "`CurrentSession` from `SessionAuth` in the router's state, over session-core's \
         `MemoryCache`; the 401 case builds the RFC 6750 rejection response.",
    );
    for case in &cases {
        let subject = format!("{}/subject", case.name);
        let floor = format!("{}/floor", case.name);
        section.rows.push(Row::new(
            case.name,
            nanos(measured.median(&subject)),
            nanos(measured.median(&floor)),
            measured.ratio(&subject, &floor),
        ));
    }
    Ok(vec![section])
}

async fn required(CurrentSession(session): CurrentSession) -> &'static str {
    black_box(&session);
    "ok"
}

async fn optional(session: Option<CurrentSession>) -> &'static str {
    black_box(&session);
    "ok"
}

async fn no_extractor() -> &'static str {
    "ok"
}

/// The status `router` answers to the first request of `case`.
async fn answer(router: &Router, case: &Case) -> u16 {
    let (name, value) = &case.headers[0];
    let request = Request::get(case.path)
        .header(name, value)
        .body(Body::empty())
        .expect("a request");
    let response = router.clone().call(request).await.expect("infallible");
    response.status().as_u16()
}

/// Sends `batch` requests of `case` through `router`; ns per request.
async fn drive(router: &Router, case: &Case, batch: usize) -> f64 {
    let mut router = router.clone();
    let uri: http::Uri = case.path.parse().expect("a path");
    let started = Instant::now();
    for i in 0..batch {
        let (name, value) = &case.headers[i % case.headers.len()];
        let mut request = Request::new(Body::empty());
        *request.uri_mut() = uri.clone();
        request.headers_mut().insert(name.clone(), value.clone());
        let response = router.call(request).await.expect("infallible");
        black_box(response);
    }
    started.elapsed().as_nanos() as f64 / batch as f64
}

fn nanos(value: f64) -> Figure {
    Figure::new(value, Unit::Nanoseconds)
}
