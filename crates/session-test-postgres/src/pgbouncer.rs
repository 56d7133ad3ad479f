//! A throwaway PgBouncer in transaction pooling mode in front of a test
//! server, started from Debian's `pgbouncer` package as the server is from
//! its PostgreSQL.

use std::fs;
use std::process::Stdio;
use std::time::Duration;

use session_test_process::{
    Cleanup, Guardian, ServerProcess, ServerUser, find_program, on_a_free_port, until,
};

use crate::{TestDatabase, admin};

/// The settings the tests run PgBouncer with, as docs and README quote
/// them: transaction pooling, fewer server connections than clients so
/// every transaction may get another one, and every client logged in as
/// the server's superuser.
pub const PGBOUNCER_SETTINGS: &str = "\
pool_mode = transaction
default_pool_size = 8
max_client_conn = 1000
ignore_startup_parameters = extra_float_digits
auth_type = any
";

/// PgBouncer 1.18 (Debian 12) in transaction pooling mode in front of a
/// PostgreSQL server, on a free port of 127.0.0.1, removed when dropped or
/// when the test process ends, however it ends. When the tests run as
/// root, it runs as `postgres` (or `nobody`).
#[derive(Debug)]
pub struct PgBouncer {
    port: u16,
    /// Held for its `Drop`, which kills PgBouncer and removes its directory.
    _process: ServerProcess,
}

impl PgBouncer {
    /// Starts PgBouncer in front of the PostgreSQL server listening on
    /// `server_port` of 127.0.0.1, passing every database through as the
    /// user `postgres`.
    ///
    /// # Panics
    ///
    /// If `pgbouncer` is not installed (the message names the Debian
    /// package) or does not start within a minute.
    #[must_use]
    pub fn start(server_port: u16) -> Self {
        Self::launch(server_port).unwrap_or_else(|err| panic!("{err}"))
    }

    fn launch(server_port: u16) -> Result<Self, String> {
        let program = find_program("pgbouncer").ok_or_else(|| {
            "session-test-postgres: pgbouncer is not installed; the tests run the service behind \
             it in transaction pooling mode. Install it (Debian/Ubuntu: `apt-get install \
             pgbouncer`; `cargo xtask prerequisites` does it as root)"
                .to_owned()
        })?;
        let user = ServerUser::unprivileged(&["postgres", "nobody"])
            .map_err(|err| format!("session-test-postgres: {err}"))?;
        let (process, port) = on_a_free_port(
            |port| {
                let root = user
                    .private_directory("session-test-pgbouncer-")
                    .map_err(|err| {
                        format!("session-test-postgres: cannot create PgBouncer's directory: {err}")
                    })?;
                // From here on, dropping the guardian (on any early return) cleans up.
                let guardian =
                    Guardian::spawn(&user, Cleanup::new().remove(&root)).map_err(|err| {
                        let _ignored = fs::remove_dir_all(&root);
                        format!("session-test-postgres: {err}")
                    })?;
                let config = root.join("pgbouncer.ini");
                let log = root.join("pgbouncer.log");
                fs::write(
                    &config,
                    format!(
                        "[databases]\n* = host=127.0.0.1 port={server_port} user=postgres\n\n\
                         [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
                         unix_socket_dir =\nlogfile = {}\n{PGBOUNCER_SETTINGS}",
                        log.display()
                    ),
                )
                .and_then(|()| user.give(&config))
                .map_err(|err| {
                    format!("session-test-postgres: cannot write pgbouncer.ini: {err}")
                })?;
                let mut process = ServerProcess::spawn(
                    user.command(&program)
                        .arg(&config)
                        .current_dir(&root)
                        .stdin(Stdio::null())
                        // It logs to its file; a pipe nobody read would fill and stop it.
                        .stdout(Stdio::null())
                        .stderr(Stdio::null()),
                    guardian,
                )
                .map_err(|err| format!("session-test-postgres: cannot start pgbouncer: {err}"))?;
                let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
                let mut exited = false;
                let answered = until("PgBouncer answers", Duration::from_secs(60), || {
                    exited = process.try_wait().ok().flatten().is_some();
                    exited || admin::query(&url, "SELECT 1").is_ok()
                });
                if exited || answered.is_err() {
                    let logged = fs::read_to_string(&log).unwrap_or_default();
                    return Err(format!(
                        "session-test-postgres: pgbouncer did not start; its log:\n{logged}"
                    ));
                }
                Ok((process, port))
            },
            |err| err.contains("Address already in use"),
        )?;
        Ok(Self {
            port,
            _process: process,
        })
    }

    /// The port PgBouncer listens on, on 127.0.0.1.
    #[must_use]
    pub const fn port(&self) -> u16 {
        self.port
    }

    /// A URL for `database` through PgBouncer.
    #[must_use]
    pub fn url(&self, database: &TestDatabase) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{}",
            self.port,
            database.name()
        )
    }
}
