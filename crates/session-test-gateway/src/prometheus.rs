//! A throwaway Prometheus server that scrapes given targets every second,
//! started the same way as the gateways.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;

use session_test_process::on_a_free_port;

use crate::{ADDRESS_IN_USE, Server};

/// A running Prometheus, stopped and deleted when dropped. Its storage,
/// configuration and log live in a private temporary directory.
#[derive(Debug)]
pub struct Prometheus {
    address: SocketAddr,
    server: Server,
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
        let program = session_test_process::find_program("prometheus").unwrap_or_else(|| {
            panic!(
                "session-test-gateway: `prometheus` is not installed (looked on PATH, in \
                 /usr/sbin and /usr/bin). Install the Debian package `prometheus`: \
                 `apt-get install prometheus`."
            )
        });
        on_a_free_port(
            |port| Self::launch(&program, port, targets),
            |err| err.contains(ADDRESS_IN_USE),
        )
        .unwrap_or_else(|err| panic!("{err}"))
    }

    /// Where its HTTP API listens, on 127.0.0.1.
    #[must_use]
    pub const fn address(&self) -> SocketAddr {
        self.address
    }

    /// What the server logged so far, for failure messages.
    #[must_use]
    pub fn log(&self) -> String {
        self.server.log()
    }

    fn launch(program: &Path, port: u16, targets: &[SocketAddr]) -> Result<Self, String> {
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let server = Server::start(program, "session-test-prometheus-", address, |root| {
            fs::write(root.join("prometheus.yml"), config(targets))?;
            fs::create_dir(root.join("data"))?;
            Ok(vec![
                format!("--config.file={}", root.join("prometheus.yml").display()),
                format!("--storage.tsdb.path={}", root.join("data").display()),
                format!("--web.listen-address={address}"),
                "--log.level=info".to_owned(),
            ])
        })?;
        Ok(Self { address, server })
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
