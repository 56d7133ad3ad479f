//! The real service: `session-app serve` as a child process on a free
//! loopback port, its readiness and its resident memory.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hyper::StatusCode;

/// Log lines kept for an error message when the service fails.
const LOG_TAIL: usize = 40;

/// How a service is started.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Launch<'a> {
    pub(crate) database_url: &'a str,
    /// `--cache`: `map` or `moka`.
    pub(crate) cache: &'a str,
    /// `--log`: a `tracing` filter.
    pub(crate) log: &'a str,
    /// Further `serve` arguments.
    pub(crate) extra: &'a [&'a str],
}

/// A running `session-app serve`, killed when dropped.
pub(crate) struct Server {
    child: Child,
    pub(crate) address: SocketAddr,
    /// Just before the process was spawned.
    pub(crate) spawned: Instant,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Server {
    /// Spawns the service; it is neither listening nor ready yet.
    pub(crate) fn spawn(app: &Path, launch: Launch<'_>) -> anyhow::Result<Self> {
        // The port is free now; nothing else on this machine races for it
        // in the moment until the service binds it.
        let address = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let mut command = Command::new(app);
        command
            .args(["--log-format", "json", "--log", launch.log, "serve"])
            .args(["--listen", &address.to_string()])
            .args(["--database-url", launch.database_url])
            .args(["--cache", launch.cache])
            .args(launch.extra)
            .env_remove("SESSION_API_KEY")
            .env_remove("SESSION_API_KEY_FILE")
            .env_remove("DATABASE_URL")
            .env_remove("SESSION_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let spawned = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("could not start {}", app.display()))?;
        let log = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL)));
        if let Some(stderr) = child.stderr.take() {
            let sink = Arc::clone(&log);
            // Drains the log so the service never blocks on a full pipe.
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let mut tail = sink.lock().unwrap_or_else(PoisonError::into_inner);
                    if tail.len() == LOG_TAIL {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            });
        }
        Ok(Self {
            child,
            address,
            spawned,
            log,
        })
    }

    /// Polls `/readyz` every 10 ms until it answers 200; returns the time
    /// from spawn to that answer and the readiness body.
    pub(crate) async fn wait_ready(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<(Duration, serde_json::Value)> {
        loop {
            if let Ok((status, body)) = crate::load::get(self.address, "/readyz").await
                && status == StatusCode::OK
            {
                let elapsed = self.spawned.elapsed();
                return Ok((elapsed, serde_json::from_slice(&body)?));
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("session-app exited ({status}):\n{}", self.log_tail());
            }
            if self.spawned.elapsed() > timeout {
                bail!(
                    "session-app was not ready within {timeout:?}:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The process's resident set size (`VmRSS`), in bytes.
    pub(crate) fn resident_bytes(&self) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kib| kib.trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .with_context(|| format!("no VmRSS line in {path}"))
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let tail = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        tail.iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fails unless `/readyz` says the cache holds exactly `sessions`.
pub(crate) fn ensure_cached(readiness: &serde_json::Value, sessions: usize) -> anyhow::Result<()> {
    let cached = readiness["checks"]["cache"]["sessions"].as_u64();
    anyhow::ensure!(
        cached == u64::try_from(sessions).ok(),
        "the service cached {cached:?} sessions, expected {sessions}: {readiness}"
    );
    Ok(())
}
