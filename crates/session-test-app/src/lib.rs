//! The real `session-app` binary, for tests and benchmarks: one way to start
//! it and one way to wait until it is ready.
//!
//! [`App::start`] runs `session-app serve` with the arguments of a [`Launch`]
//! on a free port on 127.0.0.1, captures what it writes, and returns once it
//! listens; [`App::wait_ready`] polls `/readyz` until it answers 200, within
//! a bound, and fails early with the log's tail if the process exits. The
//! process can be killed outright ([`App::kill`], SIGKILL: no shutdown, no
//! flush), stopped ([`App::terminate`], SIGTERM) and started again on the
//! same address with the same arguments ([`App::restart`]).
//!
//! The process is killed when its [`App`] is dropped, and also when the test
//! process ends any other way (a panic that aborts, SIGKILL), by
//! session-test-process's guardian. No environment variable
//! of the caller configures it: every `SESSION_*` and `OTEL_*` variable and
//! `DATABASE_URL` are removed, so what a test states is all the service is given.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use session_test_process::{
    Cleanup, Guardian, ServerProcess, ServerUser, Signal, metric_value, until,
};

/// How long a start may take until the service listens: opening the store
/// (and migrating it) comes first.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a SIGTERM may take to end the process: above the service's own
/// default shutdown timeout (10 s).
const TERMINATE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often `/readyz` is asked, and how long one answer may take.
const READY_POLL: Duration = Duration::from_millis(10);
const READY_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Log lines quoted in an error.
const ERROR_TAIL: usize = 40;

/// A failure to start, watch or stop the service; its text includes the
/// tail of the service's log where that helps.
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// The message as is, so `expect` and `unwrap` print the log's lines, not an escaped string.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// How to start `session-app serve`: the binary, the store, further `serve`
/// arguments and environment, the log filter, and how much log to keep.
#[derive(Debug, Clone)]
pub struct Launch {
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    log_filter: String,
    keep_lines: Option<usize>,
    /// The open-file limit (`ulimit` flags, limit) to run under, if any.
    open_files: Option<(&'static str, u32)>,
    listen_ip: IpAddr,
}

impl Launch {
    /// `program serve --database-url <database_url>`, logging at `info` in
    /// JSON, keeping every log line.
    #[must_use]
    pub fn new(program: impl Into<PathBuf>, database_url: &str) -> Self {
        Self {
            program: program.into(),
            args: vec!["--database-url".into(), database_url.into()],
            envs: Vec::new(),
            log_filter: "info".to_owned(),
            keep_lines: None,
            open_files: None,
            listen_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    /// Listens on a free port of `ip` instead of 127.0.0.1, for tests of
    /// the other loopback addresses (any of 127.0.0.0/8, `::1`).
    #[must_use]
    pub const fn listen_ip(mut self, ip: IpAddr) -> Self {
        self.listen_ip = ip;
        self
    }

    /// Appends `serve` arguments (anything but `--listen`, which the launcher sets).
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for the service.
    #[must_use]
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// `--log`: which lines the service writes, a `tracing` filter. The
    /// line announcing the listening address is always written: the
    /// launcher reads the address from it.
    #[must_use]
    pub fn log_filter(mut self, filter: &str) -> Self {
        filter.clone_into(&mut self.log_filter);
        self
    }

    /// Lowers the service's open-file limit (`ulimit -n`), for tests of what
    /// it does when descriptors run short.
    #[must_use]
    pub const fn open_files(mut self, limit: u32) -> Self {
        self.open_files = Some(("-n", limit));
        self
    }

    /// Lowers only the service's soft open-file limit (`ulimit -Sn`),
    /// leaving the hard limit it may raise the soft one to.
    #[must_use]
    pub const fn soft_open_files(mut self, limit: u32) -> Self {
        self.open_files = Some(("-Sn", limit));
        self
    }

    /// Keeps only the last `lines` log lines (all by default), for a service
    /// that logs every request of a long run.
    #[must_use]
    pub const fn keep_log_lines(mut self, lines: usize) -> Self {
        self.keep_lines = Some(lines);
        self
    }
}

/// What the service wrote (standard error and output), in order.
#[derive(Debug, Default)]
struct Log {
    lines: VecDeque<String>,
    keep: Option<usize>,
}

impl Log {
    fn push(&mut self, line: String) {
        if let Some(keep) = self.keep {
            while self.lines.len() >= keep.max(1) {
                self.lines.pop_front();
            }
        }
        self.lines.push_back(line);
    }

    fn tail(&self, lines: usize) -> String {
        let skip = self.lines.len().saturating_sub(lines);
        let tail: Vec<&str> = self.lines.iter().skip(skip).map(String::as_str).collect();
        tail.join("\n")
    }
}

/// One run of the process.
struct Running {
    /// Killed with its handle, or by its guardian if the test process dies.
    process: ServerProcess,
    spawned: Instant,
    readers: Vec<JoinHandle<()>>,
}

/// A running (or stopped, until [`restart`](Self::restart)ed) `session-app
/// serve`, killed when dropped.
pub struct App {
    launch: Launch,
    address: SocketAddr,
    running: Mutex<Option<Running>>,
    log: Arc<Mutex<Log>>,
    http: reqwest::Client,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("program", &self.launch.program)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// What [`App::wait_ready`] saw.
#[derive(Debug, Clone)]
pub struct Ready {
    /// From just before the process was spawned until `/readyz` answered 200
    /// (including up to one poll interval, 10 ms, of the wait's own delay).
    pub after: Duration,
    /// The body of that answer.
    pub body: serde_json::Value,
}

impl App {
    /// Starts the service on a free port on 127.0.0.1 (or
    /// [`Launch::listen_ip`]) and returns once it
    /// listens (it need not be ready: see [`wait_ready`](Self::wait_ready)).
    ///
    /// # Errors
    ///
    /// If the process cannot be spawned, exits, or does not listen within a
    /// minute; the error quotes its log.
    pub fn start(launch: Launch) -> Result<Self, Error> {
        let log = Arc::new(Mutex::new(Log {
            lines: VecDeque::new(),
            keep: launch.keep_lines,
        }));
        let http = http_client_builder()
            .timeout(READY_REQUEST_TIMEOUT)
            .build()
            .map_err(|err| Error(format!("session-test-app: cannot build a client: {err}")))?;
        let listen = SocketAddr::new(launch.listen_ip, 0).to_string();
        let (running, address) = spawn(&launch, &listen, &log)?;
        Ok(Self {
            launch,
            address,
            running: Mutex::new(Some(running)),
            log,
            http,
        })
    }

    /// The address the service listens on; the same after a restart.
    #[must_use]
    pub const fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://<address><path>`.
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// The running process's id.
    ///
    /// # Panics
    ///
    /// If the process was killed or terminated and not restarted.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.running()
            .as_ref()
            .map(|running| running.process.id())
            .expect("session-test-app: the service is not running")
    }

    /// Every line kept so far, across restarts (all of them unless
    /// [`Launch::keep_log_lines`] said otherwise).
    #[must_use]
    pub fn log(&self) -> String {
        lock(&self.log).tail(usize::MAX)
    }

    /// The value of one sample of the service's `/metrics`: `series` is the
    /// metric's name with its labels as the exposition writes them, such as
    /// `session_resolves_total{outcome="hit"}` (see
    /// [`metric_value`]).
    ///
    /// # Errors
    ///
    /// If `/metrics` does not answer, or holds no such sample; the error
    /// quotes what it holds.
    pub async fn metric(&self, series: &str) -> Result<f64, Error> {
        let exposition = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|err| Error(format!("session-test-app: /metrics did not answer: {err}")))?
            .text()
            .await
            .map_err(|err| Error(format!("session-test-app: /metrics was cut off: {err}")))?;
        metric_value(&exposition, series).ok_or_else(|| {
            Error(format!(
                "session-test-app: no sample {series} in /metrics:\n{exposition}"
            ))
        })
    }

    /// Polls `/readyz` every 10 ms until it answers 200, for at most `timeout`
    /// from the spawn: a bounded wait, not a timing assertion.
    ///
    /// # Errors
    ///
    /// If the process is not running or exits meanwhile, or the bound passes;
    /// the error quotes the service's log.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<Ready, Error> {
        let spawned = self
            .running()
            .as_ref()
            .map(|running| running.spawned)
            .ok_or_else(|| Error("session-test-app: the service is not running".to_owned()))?;
        loop {
            if let Ok(response) = self.http.get(self.url("/readyz")).send().await
                && response.status() == reqwest::StatusCode::OK
                && let Ok(text) = response.text().await
            {
                let after = spawned.elapsed();
                let body = serde_json::from_str(&text).map_err(|err| {
                    Error(format!("session-test-app: /readyz answered no JSON: {err}"))
                })?;
                return Ok(Ready { after, body });
            }
            if let Some(status) = self.exited()? {
                return Err(self.failure(&format!("session-app exited ({status})")));
            }
            if spawned.elapsed() > timeout {
                return Err(self.failure(&format!("session-app was not ready within {timeout:?}")));
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// SIGKILL, and waits until the process is gone: no shutdown, no flush,
    /// as a crash or the OOM killer would end it.
    ///
    /// # Panics
    ///
    /// If the process is not running or cannot be killed.
    pub fn kill(&self) {
        let mut running = self
            .running()
            .take()
            .expect("session-test-app: the service is not running");
        running
            .process
            .kill()
            .unwrap_or_else(|err| panic!("session-test-app: cannot kill session-app: {err}"));
        running.finish();
    }

    /// SIGTERM, and waits (at most 30 s) for the process to exit.
    ///
    /// # Errors
    ///
    /// If it does not exit in time (it is then killed).
    ///
    /// # Panics
    ///
    /// If the process is not running or cannot be signalled.
    pub fn terminate(&self) -> Result<ExitStatus, Error> {
        let mut running = self
            .running()
            .take()
            .expect("session-test-app: the service is not running");
        if let Err(err) = running.process.signal(Signal::Term) {
            panic!(
                "session-test-app: cannot signal session-app (pid {}): {err}",
                running.process.id()
            );
        }
        // Also stops polling if the system cannot say whether it exited.
        let _waited = until("session-app exits", TERMINATE_TIMEOUT, || {
            !matches!(running.process.try_wait(), Ok(None))
        });
        let exited = running.process.try_wait();
        // Killed if it did not exit.
        running.finish();
        match exited {
            Ok(Some(status)) => Ok(status),
            Ok(None) => Err(self.failure(&format!(
                "session-app did not exit within {TERMINATE_TIMEOUT:?} of SIGTERM"
            ))),
            Err(err) => {
                Err(self.failure(&format!("cannot wait for session-app after SIGTERM: {err}")))
            }
        }
    }

    /// Starts the process again, after [`kill`](Self::kill) or
    /// [`terminate`](Self::terminate), with the same arguments on the same
    /// address, and returns once it listens.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start); also if the address was taken meanwhile.
    ///
    /// # Panics
    ///
    /// If the process is still running.
    pub fn restart(&self) -> Result<(), Error> {
        let mut slot = self.running();
        assert!(
            slot.is_none(),
            "session-test-app: restart needs the service stopped first"
        );
        let (running, address) = spawn(&self.launch, &self.address.to_string(), &self.log)?;
        debug_assert_eq!(address, self.address);
        *slot = Some(running);
        Ok(())
    }

    fn running(&self) -> MutexGuard<'_, Option<Running>> {
        lock(&self.running)
    }

    /// The exit status, if the process has exited.
    fn exited(&self) -> Result<Option<ExitStatus>, Error> {
        let mut slot = self.running();
        let running = slot
            .as_mut()
            .ok_or_else(|| Error("session-test-app: the service is not running".to_owned()))?;
        let status = running.process.try_wait().map_err(|err| {
            Error(format!(
                "session-test-app: cannot wait for session-app: {err}"
            ))
        })?;
        if status.is_some()
            && let Some(running) = slot.take()
        {
            running.finish();
        }
        Ok(status)
    }

    fn failure(&self, what: &str) -> Error {
        Error(format!(
            "{what}; its log ends:\n{}",
            lock(&self.log).tail(ERROR_TAIL)
        ))
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(running) = self.running().take() {
            running.finish();
        }
    }
}

impl Running {
    /// Kills the process unless it has exited, reaps it, and collects the
    /// rest of the log.
    fn finish(mut self) {
        let _status = self.process.kill();
        drop(self.process);
        for reader in self.readers.drain(..) {
            let _ignored = reader.join();
        }
    }
}

/// Spawns `session-app serve --listen <listen>` and waits until it says
/// where it listens.
fn spawn(
    launch: &Launch,
    listen: &str,
    log: &Arc<Mutex<Log>>,
) -> Result<(Running, SocketAddr), Error> {
    let mut command = match launch.open_files {
        // The shell lowers the limit, then becomes the service (same pid).
        Some((flags, limit)) => {
            let mut shell = Command::new("sh");
            shell
                .args(["-c", "ulimit $1 \"$2\" && shift 2 && exec \"$@\"", "sh"])
                .arg(flags)
                .arg(limit.to_string())
                .arg(&launch.program);
            shell
        }
        None => Command::new(&launch.program),
    };
    command
        .arg("--log-format")
        .arg("json")
        .arg("--log")
        .arg(format!("{},session_app::serve=info", launch.log_filter))
        .args(["serve", "--listen", listen])
        .args(&launch.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(configures_the_service) {
            command.env_remove(key);
        }
    }
    command.envs(launch.envs.iter().map(|(key, value)| (key, value)));
    // The service may run as root: it is the program under test, not a
    // server it needs.
    let guardian = Guardian::spawn(&ServerUser::current(), Cleanup::new())
        .map_err(|err| Error(format!("session-test-app: {err}")))?;
    let spawned = Instant::now();
    let mut process = ServerProcess::spawn(&mut command, guardian).map_err(|err| {
        Error(format!(
            "session-test-app: cannot run {}: {err} (build it with `cargo build -p session-app`)",
            launch.program.display()
        ))
    })?;
    let (address_tx, address_rx) = mpsc::channel();
    let mut readers = Vec::new();
    if let Some(stderr) = process.take_stderr() {
        readers.push(read_lines(stderr, Arc::clone(log), Some(address_tx)));
    }
    if let Some(stdout) = process.take_stdout() {
        readers.push(read_lines(stdout, Arc::clone(log), None));
    }
    let mut running = Running {
        process,
        spawned,
        readers,
    };
    let failed = |running: Running, what: String| {
        running.finish();
        Error(format!(
            "{what}; its log ends:\n{}",
            lock(log).tail(ERROR_TAIL)
        ))
    };
    loop {
        match address_rx.recv_timeout(Duration::from_millis(20)) {
            Ok(address) => return Ok((running, address)),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(failed(
                    running,
                    "session-app closed its log before it listened".to_owned(),
                ));
            }
        }
        match running.process.try_wait() {
            Ok(Some(status)) => {
                return Err(failed(
                    running,
                    format!("session-app exited ({status}) before it listened"),
                ));
            }
            Ok(None) if spawned.elapsed() < LISTEN_TIMEOUT => {}
            Ok(None) => {
                return Err(failed(
                    running,
                    format!("session-app did not listen within {LISTEN_TIMEOUT:?}"),
                ));
            }
            Err(err) => {
                return Err(failed(
                    running,
                    format!("cannot wait for session-app: {err}"),
                ));
            }
        }
    }
}

/// A client for services on loopback: never through a proxy the environment
/// names, and with a crypto provider for reqwest's rustls (built without one
/// of its own, as session-app builds it, a client would not start).
///
/// # Panics
///
/// If rustls has no safe protocol version for ring, which cannot happen.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports TLS 1.2 and 1.3")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
}

/// Whether the service reads environment variable `key` as configuration.
fn configures_the_service(key: &str) -> bool {
    key.starts_with("SESSION_")
        || key.starts_with("OTEL_")
        || matches!(key, "DATABASE_URL" | "DATABASE_URL_FILE")
        || key.starts_with("PG")
}

/// Copies `stream`'s lines into `log` until it closes; the first that
/// announces the listening address sends it to `address`.
fn read_lines(
    stream: impl Read + Send + 'static,
    log: Arc<Mutex<Log>>,
    mut address: Option<mpsc::Sender<SocketAddr>>,
) -> JoinHandle<()> {
    // Drains the pipe so the service never blocks on a full one.
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Some(sender) = &address
                && let Some(found) = listening_address(&line)
            {
                let _ignored = sender.send(found);
                address = None;
            }
            lock(&log).push(line);
        }
    })
}

/// The address in the service's "listening" log event, a JSON line.
fn listening_address(line: &str) -> Option<SocketAddr> {
    let event: serde_json::Value = serde_json::from_str(line).ok()?;
    let message = event.get("message")?.as_str()?;
    if !message.contains("listening") {
        return None;
    }
    event.get("address")?.as_str()?.parse().ok()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
