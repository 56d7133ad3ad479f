//! A throwaway Prometheus server that scrapes given targets every second,
//! run by the same guardian as the gateways.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use crate::{Guardian, Runner, find, wait_until_listening};

/// A running Prometheus, stopped and deleted when dropped. Its storage,
/// configuration and log live in a private temporary directory.
#[derive(Debug)]
pub struct Prometheus {
    address: SocketAddr,
    root: PathBuf,
    /// Held for its `Drop`, which stops the server and removes its files.
    _guardian: Guardian,
}

impl Prometheus {
    /// Starts Prometheus on a free port of 127.0.0.1, scraping `/metrics`
    /// of every target (job `session`) every second, and waits until it
    /// accepts connections.
    ///
    /// # Panics
    ///
    /// If Prometheus is not installed (the message names the Debian
    /// package `prometheus`) or does not start (the message holds its log).
    #[must_use]
    pub fn scraping(targets: &[SocketAddr]) -> Self {
        let program = find("prometheus").unwrap_or_else(|| {
            panic!(
                "session-test-gateway: `prometheus` is not installed (looked on PATH, in \
                 /usr/sbin and /usr/bin). Install the Debian package `prometheus`: \
                 `apt-get install prometheus`."
            )
        });
        // Another process may take the port between the probe and the
        // server's bind; a few attempts make that harmless.
        let mut last = String::new();
        for _ in 0..5 {
            match Self::launch(&program, targets) {
                Ok(server) => return server,
                Err(err) if err.contains("address already in use") => last = err,
                Err(err) => panic!("{err}"),
            }
        }
        panic!("{last}");
    }

    /// Where its HTTP API listens, on 127.0.0.1.
    #[must_use]
    pub const fn address(&self) -> SocketAddr {
        self.address
    }

    /// What the server logged so far, for failure messages.
    #[must_use]
    pub fn log(&self) -> String {
        fs::read_to_string(self.root.join("server.log")).unwrap_or_default()
    }

    fn launch(program: &Path, targets: &[SocketAddr]) -> Result<Self, String> {
        let root = tempfile::Builder::new()
            .prefix("session-test-prometheus-")
            .tempdir()
            .map_err(|err| format!("session-test-gateway: cannot create a directory: {err}"))?
            .keep();
        let runner = Runner::for_directory(&root)?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|err| format!("session-test-gateway: cannot find a free port: {err}"))?
            .port();
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let fail = |what: &str, err: &dyn std::fmt::Display| {
            let _ignored = fs::remove_dir_all(&root);
            format!("session-test-gateway: {what}: {err}")
        };
        if let Err(err) = fs::write(root.join("prometheus.yml"), config(targets)) {
            return Err(fail("cannot write the configuration", &err));
        }
        if let Err(err) = fs::create_dir(root.join("data")) {
            return Err(fail("cannot create the storage directory", &err));
        }
        if let Err(err) = runner.give(&root) {
            return Err(fail("cannot hand the directory to the server user", &err));
        }
        let args = [
            format!("--config.file={}", root.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", root.join("data").display()),
            format!("--web.listen-address={address}"),
            "--log.level=info".to_owned(),
        ];
        let guardian = Guardian::spawn(&root, &runner, program, &args)?;
        let server = Self {
            address,
            root,
            _guardian: guardian,
        };
        wait_until_listening("prometheus", address, &server.root, || server.log())?;
        Ok(server)
    }
}

/// Scrapes every target's `/metrics` each second, as job `session`.
fn config(targets: &[SocketAddr]) -> String {
    let targets = targets
        .iter()
        .map(|target| format!("'{target}'"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1m\n\
         scrape_configs:\n  - job_name: session\n    metrics_path: /metrics\n    \
         static_configs:\n      - targets: [{targets}]\n"
    )
}
