//! End to end: the real binary on a free loopback port, driven over HTTP
//! and through its own CLI, with its log output captured.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_session-app");
pub(crate) const KEY: &str = "e2e-api-key-0123456789abcdef";

/// A client for the test servers: plain HTTP to loopback, never through a
/// proxy the environment names. reqwest is built with rustls and no crypto
/// provider of its own (the CLI brings its configuration), so a client
/// built without one would not start.
pub(crate) fn http_client() -> reqwest::Client {
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .build()
        .unwrap()
}

/// A running `session-app serve`.
pub(crate) struct Server {
    child: Child,
    pub(crate) address: SocketAddr,
    log: Arc<Mutex<String>>,
    http: reqwest::Client,
    key: Option<String>,
}

/// How to start a server.
#[derive(Default)]
pub(crate) struct Options {
    pub(crate) database_url: String,
    pub(crate) api_key: Option<String>,
    pub(crate) extra: Vec<String>,
}

impl Server {
    /// Starts the binary and waits until it listens (not until it is ready).
    pub(crate) fn start(options: Options) -> Self {
        let mut command = Command::new(BIN);
        command
            .args([
                "--log-format",
                "json",
                "--log",
                "info",
                "serve",
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--database-url", &options.database_url])
            .args(&options.extra)
            .env_remove("SESSION_API_KEY")
            .env_remove("SESSION_API_KEY_FILE")
            .env_remove("DATABASE_URL")
            .env_remove("DATABASE_URL_FILE")
            .env_remove("PGPASSWORD")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(key) = &options.api_key {
            command.env("SESSION_API_KEY", key);
        }
        let mut child = command.spawn().expect("start session-app");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (address_tx, address_rx) = mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(event) = serde_json::from_str::<Value>(&line)
                    && let Some(address) = event["address"].as_str()
                {
                    let _ = address_tx.send(address.parse::<SocketAddr>().unwrap());
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let address = match address_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(address) => address,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "session-app did not start listening:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        Self {
            child,
            address,
            log,
            http: http_client(),
            key: options.api_key,
        }
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Everything the process logged so far.
    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Polls readiness until it answers 200; a bounded number of tries, not a timing assertion.
    pub(crate) async fn wait_ready(&self) {
        for _ in 0..600 {
            if let Ok(response) = self.http.get(self.url("/readyz")).send().await
                && response.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("session-app never became ready:\n{}", self.log());
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
    pub(crate) fn kill_hard(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits for the exit status.
    pub(crate) fn terminate(mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    let mut child = Command::new(BIN)
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
