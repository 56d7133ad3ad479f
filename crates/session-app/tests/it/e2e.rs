//! End to end: the real binary on a free loopback port (started by
//! session-test-app), driven over HTTP and through its own CLI, with its log
//! output captured.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use session_test_app::{App, Launch};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_session-app");
pub(crate) const KEY: &str = "e2e-api-key-0123456789abcdef";

/// How long a start may take to become ready: a bound, not a timing assertion.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A client for the test servers (see [`session_test_app::http_client_builder`]).
pub(crate) fn http_client() -> reqwest::Client {
    session_test_app::http_client_builder().build().unwrap()
}

/// A running `session-app serve`, with the API key its requests carry.
pub(crate) struct Server {
    app: App,
    pub(crate) address: SocketAddr,
    http: reqwest::Client,
    key: Option<String>,
}

/// How to start a server.
#[derive(Default)]
pub(crate) struct Options {
    pub(crate) database_url: String,
    pub(crate) api_key: Option<String>,
    pub(crate) extra: Vec<String>,
    /// The process's soft open-file limit only (`ulimit -Sn`), below a
    /// hard limit it may raise it to.
    pub(crate) soft_open_files: Option<u32>,
}

impl Server {
    /// Starts the binary and waits until it listens (not until it is ready).
    pub(crate) fn start(options: Options) -> Self {
        let mut launch = Launch::new(BIN, &options.database_url).args(&options.extra);
        if let Some(limit) = options.soft_open_files {
            launch = launch.soft_open_files(limit);
        }
        if let Some(key) = &options.api_key {
            launch = launch.env("SESSION_API_KEY", key);
        }
        let app = App::start(launch).expect("start session-app");
        Self {
            address: app.address(),
            app,
            http: http_client(),
            key: options.api_key,
        }
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.app.pid()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        self.app.url(path)
    }

    /// The value of one sample of `/metrics`, such as
    /// `session_resolves_total{outcome="hit"}`.
    pub(crate) async fn metric(&self, series: &str) -> f64 {
        self.app.metric(series).await.unwrap()
    }

    /// Everything the process logged so far, across restarts.
    pub(crate) fn log(&self) -> String {
        self.app.log()
    }

    /// Waits until `/readyz` answers 200, within a bound.
    pub(crate) async fn wait_ready(&self) {
        self.app
            .wait_ready(READY_TIMEOUT)
            .await
            .expect("session-app never became ready");
    }

    /// Sends a request with the server's API key, returning status and JSON body.
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub(crate) async fn create(&self, account: Uuid) -> (String, String) {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/v1/sessions",
                Some(json!({ "account_id": account })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        (
            body["token"].as_str().unwrap().to_owned(),
            body["session"]["id"].as_str().unwrap().to_owned(),
        )
    }

    pub(crate) async fn resolve(&self, token: &str) -> u16 {
        self.call(
            reqwest::Method::POST,
            "/v1/sessions/resolve",
            Some(json!({ "token": token })),
        )
        .await
        .0
    }

    pub(crate) async fn revoke(&self, id: &str) -> u16 {
        self.call(reqwest::Method::DELETE, &format!("/v1/sessions/{id}"), None)
            .await
            .0
    }

    /// SIGKILL: no shutdown, no flush.
    pub(crate) fn kill_hard(self) {
        self.app.kill();
    }

    /// SIGKILL, keeping the server to [`restart`](Self::restart).
    pub(crate) fn kill(&self) {
        self.app.kill();
    }

    /// Starts the killed server again, same arguments, same address.
    pub(crate) fn restart(&self) {
        self.app.restart().expect("restart session-app");
    }

    /// SIGTERM, then waits for the exit status.
    pub(crate) fn terminate(self) -> ExitStatus {
        self.app.terminate().expect("session-app exits on SIGTERM")
    }

    /// [`terminate`](Self::terminate), and everything the process logged.
    pub(crate) fn terminate_with_log(self) -> (ExitStatus, String) {
        let status = self.app.terminate().expect("session-app exits on SIGTERM");
        (status, self.app.log())
    }
}

/// Waits until the clock is past the millisecond the RFC 3339 `mark` falls
/// in: a session id holds its creation to the millisecond, so one minted in
/// the mark's own millisecond counts as created before it.
pub(crate) fn past_the_marks_millisecond(mark: &str) {
    let mark =
        time::OffsetDateTime::parse(mark, &time::format_description::well_known::Rfc3339).unwrap();
    let next = mark.unix_timestamp_nanos().div_euclid(1_000_000) * 1_000_000 + 1_000_000;
    while time::OffsetDateTime::now_utc().unix_timestamp_nanos() < next {
        std::thread::yield_now();
    }
}

/// Asserts that none of `tokens` appears anywhere in `log`.
pub(crate) fn assert_no_tokens(log: &str, tokens: &[String]) {
    assert!(!log.is_empty(), "no log captured");
    for token in tokens {
        // The random body alone: the prefix is not secret.
        assert!(!log.contains(&token[5..]), "a raw token reached the log");
    }
}

/// Runs the CLI with `args`, feeding `stdin`; returns status, stdout, stderr.
pub(crate) fn cli(
    args: &[&str],
    env: &[(&str, &str)],
    stdin: &str,
) -> (ExitStatus, String, String) {
    let mut command = Command::new(BIN);
    // The caller's OpenTelemetry settings would turn trace export on.
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|key| key.starts_with("OTEL_")) {
            command.env_remove(key);
        }
    }
    let mut child = command
        .args(args)
        .env_remove("SESSION_API_KEY")
        .env_remove("SESSION_API_KEY_FILE")
        .env_remove("SESSION_SERVER")
        .env_remove("SESSION_CA_FILE")
        .env_remove("DATABASE_URL")
        .env_remove("DATABASE_URL_FILE")
        .env_remove("PGPASSWORD")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status,
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

pub(crate) fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("sessions.db").display())
}

pub(crate) fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// The real binary, keyless, on a SQLite file in a directory of its own
/// (returned: keep it while the server runs), with `extra` arguments,
/// once it reports ready.
pub(crate) async fn ready_on_sqlite(extra: &[&str]) -> (Server, tempfile::TempDir) {
    let dir = temp_dir();
    let server = Server::start(Options {
        database_url: sqlite_url(dir.path()),
        extra: extra.iter().map(|arg| (*arg).to_owned()).collect(),
        ..Options::default()
    });
    server.wait_ready().await;
    (server, dir)
}
