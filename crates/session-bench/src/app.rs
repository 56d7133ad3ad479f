//! The real service, `session-app serve`, started by session-test-app (the
//! one launcher the tests use too), with what the benchmarks read of it: its
//! readiness and its resident memory.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use session_test_app::App;

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
    app: App,
    pub(crate) address: SocketAddr,
}

impl Server {
    /// Starts the service and returns once it listens; it need not be ready yet.
    pub(crate) fn spawn(app: &Path, launch: Launch<'_>) -> anyhow::Result<Self> {
        let launch = session_test_app::Launch::new(app, launch.database_url)
            .args(["--cache", launch.cache])
            .args(launch.extra)
            .log_filter(launch.log)
            .keep_log_lines(LOG_TAIL);
        let app = App::start(launch)?;
        Ok(Self {
            address: app.address(),
            app,
        })
    }

    /// Waits until `/readyz` answers 200; returns the time from spawn to
    /// that answer and the readiness body.
    pub(crate) async fn wait_ready(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<(Duration, serde_json::Value)> {
        let ready = self.app.wait_ready(timeout).await?;
        Ok((ready.after, ready.body))
    }

    /// The process's resident set size (`VmRSS`), in bytes.
    pub(crate) fn resident_bytes(&self) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/status", self.pid());
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
        self.app.pid()
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
