//! The bare-stack floor for the HTTP benchmarks: what a user would write
//! without this project, an axum 0.8 router with the service's routes and
//! no middleware served by `axum::serve(listener, router)`, in a process of
//! its own built with the same profile as the harness (this binary, started
//! with `--floor-server`).
//!
//! It does no session work: `/healthz` is a constant body; resolve parses
//! `{"token"}` with axum's `Json` and answers a constant session of the
//! service's shape; forward auth answers 200 with constant identity headers
//! and that body. So what the service costs beyond it is everything the
//! service adds: its own connection handling (limits, timeouts, admission,
//! draining unread bodies), what wraps its requests (request ids, spans,
//! logs, metrics, checks) and the session work itself.

use std::io::{BufRead as _, Write as _};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};

use anyhow::{Context as _, bail};
use axum::Json;
use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::{any, get, post};
use serde::Deserialize;
use tokio::net::TcpListener;

/// The argument that makes this binary the floor server.
pub(crate) const FLOOR_SERVER_ARG: &str = "--floor-server";

/// What the service answers a resolve with, for one session (211 bytes).
const SESSION_JSON: &str = concat!(
    r#"{"session":{"id":"019ad0e4-7c51-7a3e-9b0e-4f6a2d1c8e35","#,
    r#""account_id":"0b6f1d4e-6a3c-4c1f-9d7e-2f1a5c9e8b70","#,
    r#""created_at":"2026-11-24T02:41:07.123456Z","revoked_at":null,"#,
    r#""user_agent":null,"ip":null,"label":null}}"#
);

/// The resolve body, parsed as the service's handler parses it (one field).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    #[expect(dead_code, reason = "parsed, as the service parses it; never read")]
    token: String,
}

fn router() -> Router {
    let json = [(CONTENT_TYPE, "application/json")];
    Router::new()
        .route("/healthz", get(|| async { r#"{"status":"ok"}"# }))
        .route(
            "/v1/sessions/resolve",
            post(move |Json(_): Json<ResolveBody>| async move { (json, SESSION_JSON) }),
        )
        .route(
            "/v1/forward-auth",
            any(move || async move {
                (
                    [
                        (CONTENT_TYPE, "application/json"),
                        (
                            axum::http::HeaderName::from_static("x-session-id"),
                            "019ad0e4-7c51-7a3e-9b0e-4f6a2d1c8e35",
                        ),
                        (
                            axum::http::HeaderName::from_static("x-account-id"),
                            "0b6f1d4e-6a3c-4c1f-9d7e-2f1a5c9e8b70",
                        ),
                    ],
                    SESSION_JSON,
                )
            }),
        )
}

/// Runs the floor server on a free loopback port: prints `listening on
/// ADDRESS` on stdout, and exits when stdin closes (the harness holds it, so
/// the server goes with the harness however that ends).
pub(crate) fn serve() -> anyhow::Result<()> {
    // The service's runtime: Tokio's multi-threaded default.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        let app = router();
        let stdin_closed = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().lock().read_until(0, &mut sink);
        });
        tokio::select! {
            served = std::future::IntoFuture::into_future(axum::serve(listener, app)) => served?,
            _ = stdin_closed => {}
        }
        anyhow::Ok(())
    })
}

/// The floor server as a child process, killed when dropped.
pub(crate) struct FloorServer {
    child: Child,
    _stdout: ChildStdout,
    pub(crate) address: SocketAddr,
}

impl FloorServer {
    /// Starts this binary as the floor server and reads its address.
    pub(crate) fn spawn() -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg(FLOOR_SERVER_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("could not start the floor server")?;
        let mut stdout = std::io::BufReader::new(child.stdout.take().context("no stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let Some(address) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            bail!("the floor server did not start: {line:?}");
        };
        let address = address.parse()?;
        Ok(Self {
            child,
            _stdout: stdout.into_inner(),
            address,
        })
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for FloorServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
