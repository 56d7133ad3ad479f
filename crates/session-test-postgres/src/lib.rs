//! Real PostgreSQL for tests, with nothing to set up.
//!
//! [`TestDatabase::create`] gives each test a fresh, empty database. The
//! database lives on the server named by `TEST_DATABASE_URL` when that is set
//! (a superuser URL, or one of a user that may create databases, on a server
//! that accepts connections without TLS), and otherwise on a throwaway server
//! this crate starts on first use and shares among the tests of the test
//! binary. [`TestServer`] starts a server of a test's own, for stopping or
//! crashing it, for TLS, or as a primary with a standby to fail over to.
//!
//! A throwaway server is found from the PostgreSQL installation (`initdb`,
//! `pg_ctl` and `postgres` on `PATH`, in `pg_config --bindir` or in
//! `/usr/lib/postgresql/<version>/bin`), listens on a free port on 127.0.0.1,
//! and is stopped and deleted when the test process ends, however it ends.
//! A server that happens to run on the machine is never used. When no server
//! can be had, tests fail with a message naming what to install; they never
//! skip. PostgreSQL 14 or later is needed.
//!
//! [`TestDatabase::dump`] and [`TestDatabase::restore`] take a copy of a
//! database and put it back over the database in use, with the
//! installation's own `pg_dump` and `pg_restore`, as an operator restores a
//! backup.
//!
//! [`PgBouncer`] puts a throwaway PgBouncer in transaction pooling mode in
//! front of a server (Debian's `pgbouncer` package, 1.18 on Debian 12), and
//! [`StallingProxy`] a TCP proxy that can stop forwarding without closing,
//! as a database or network that hangs instead of failing.

mod admin;
mod binaries;
mod certificate;
mod pgbouncer;
mod server;
mod stall;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub use pgbouncer::{PGBOUNCER_SETTINGS, PgBouncer};
pub use server::TestServer;
pub use stall::StallingProxy;

/// The environment variable naming a server to use instead of a throwaway one.
pub const TEST_DATABASE_URL: &str = "TEST_DATABASE_URL";

/// The server [`TestDatabase::create`] uses, set up once per test process.
enum SharedServer {
    /// `TEST_DATABASE_URL`.
    External(String),
    /// Started by this process. Never dropped: its guardian cleans up when the
    /// process exits.
    Throwaway(TestServer),
}

static SHARED: OnceLock<Result<SharedServer, String>> = OnceLock::new();

/// The PgBouncers [`TestDatabase::through_pgbouncer`] uses, by the port of
/// the server each is in front of, started once per test process each.
static BOUNCERS: Mutex<BTreeMap<u16, Arc<PgBouncer>>> = Mutex::new(BTreeMap::new());

/// A copy of a database taken by [`TestDatabase::dump`]; its file is
/// deleted when this value is dropped.
pub struct Dump {
    file: std::path::PathBuf,
}

impl Drop for Dump {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// Runs the client program `name` of the installation the throwaway server
/// comes from, with `args`, and panics with its error output if it fails.
fn run_client(name: &str, what: &str, args: &[&str]) {
    let program = binaries::find()
        .and_then(|binaries| binaries.client(name, what))
        .unwrap_or_else(|err| panic!("{err}"));
    let output = std::process::Command::new(&program)
        .args(args)
        .env_remove("PGPASSWORD")
        .output()
        .unwrap_or_else(|err| panic!("session-test-postgres: cannot run {name}: {err}"));
    assert!(
        output.status.success(),
        "session-test-postgres: {name} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// A fresh, empty database for one test, dropped (with any connections still
/// open to it) when this value is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
    admin_url: String,
}

impl TestDatabase {
    /// Creates a database on the shared server, starting that server if this
    /// is the first database of the process. Usable from synchronous and
    /// asynchronous tests alike.
    ///
    /// # Panics
    ///
    /// If no server can be had or it does not create the database; the
    /// message says why and what to install or set.
    #[must_use]
    pub fn create() -> Self {
        let shared = SHARED.get_or_init(|| match std::env::var(TEST_DATABASE_URL) {
            Ok(url) if !url.is_empty() => Ok(SharedServer::External(url)),
            _ => TestServer::launch(server::Setup::Plain).map(SharedServer::Throwaway),
        });
        match shared {
            Ok(SharedServer::External(url)) => {
                Self::create_on(url, "the server at TEST_DATABASE_URL")
            }
            Ok(SharedServer::Throwaway(server)) => server.create_database(),
            Err(err) => panic!("{err}"),
        }
    }

    pub(crate) fn create_on(admin_url: &str, server: &str) -> Self {
        // Unique across processes sharing one server; a plain identifier, so
        // it needs no quoting.
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        if let Err(err) = admin::query(admin_url, &format!("CREATE DATABASE {name}")) {
            panic!("session-test-postgres: cannot create a database on {server}: {err}");
        }
        Self {
            url: with_database(admin_url, &name),
            name,
            admin_url: admin_url.to_owned(),
        }
    }

    /// A URL for the database, as the code under test would be configured with.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A URL for the database through a PgBouncer in transaction pooling
    /// mode ([`PGBOUNCER_SETTINGS`]), one per server, shared by the test
    /// process and started on first use in front of this database's server
    /// (which must listen on 127.0.0.1).
    ///
    /// # Panics
    ///
    /// If PgBouncer is not installed or does not start.
    #[must_use]
    pub fn through_pgbouncer(&self) -> String {
        let port = self
            .url
            .parse::<tokio_postgres::Config>()
            .ok()
            .and_then(|config| config.get_ports().first().copied())
            .unwrap_or(5432);
        let bouncer = Arc::clone(
            BOUNCERS
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(port)
                .or_insert_with(|| Arc::new(PgBouncer::start(port))),
        );
        bouncer.url(self)
    }

    /// A copy of the database as it is now, taken by `pg_dump` (custom
    /// format), as an operator takes a backup, to [`restore`](Self::restore)
    /// later. Blocks while `pg_dump` runs.
    ///
    /// # Panics
    ///
    /// If `pg_dump` is not installed beside the server programs, or fails.
    #[must_use]
    pub fn dump(&self) -> Dump {
        let file = std::env::temp_dir().join(format!(
            "session-test-dump-{}.pgdump",
            uuid::Uuid::new_v4().simple()
        ));
        let dump = Dump { file };
        let file = dump.file.to_string_lossy().into_owned();
        run_client(
            "pg_dump",
            "takes a copy of a database",
            &["--format=custom", "--file", &file, "--dbname", &self.url],
        );
        dump
    }

    /// Restores `dump` over the database while it is in use, as an operator
    /// restores a backup into the running server: `pg_restore --clean
    /// --if-exists --single-transaction`, which drops every object the dump
    /// holds and creates it again with the dump's rows, in one transaction.
    /// Blocks while `pg_restore` runs.
    ///
    /// # Panics
    ///
    /// If `pg_restore` is not installed beside the server programs, or fails.
    pub fn restore(&self, dump: &Dump) {
        let file = dump.file.to_string_lossy().into_owned();
        run_client(
            "pg_restore",
            "restores a copy of a database",
            &[
                "--clean",
                "--if-exists",
                "--single-transaction",
                "--exit-on-error",
                "--dbname",
                &self.url,
                &file,
            ],
        );
    }

    /// The database's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A URL with the same rights for the server's maintenance database, for
    /// administrative statements that must not run inside the test database.
    #[must_use]
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// Ends every connection to this database from the server side, as an
    /// administrator or a failover would, and waits until they are gone.
    /// Returns how many it ended.
    ///
    /// # Panics
    ///
    /// If the server cannot be asked to.
    pub fn terminate_connections(&self) -> usize {
        let wait_ms = Duration::from_secs(10).as_millis();
        let rows = admin::query(
            &self.admin_url,
            &format!(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, {wait_ms})) \
                 FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
                self.name
            ),
        )
        .unwrap_or_else(|err| panic!("session-test-postgres: cannot end connections: {err}"));
        rows.first()
            .and_then(|row| row.first().cloned().flatten())
            .and_then(|count| count.parse().ok())
            .unwrap_or_else(|| panic!("session-test-postgres: unexpected answer {rows:?}"))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Best effort: the server may already be stopped or gone.
        let _ignored = admin::query(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// `url` with its database (the path) replaced by `name`, keeping the query.
fn with_database(url: &str, name: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let query = tail.find('?').map_or("", |i| &tail[i..]);
    format!("{}{authority}/{name}{query}", &url[..scheme_end])
}
