//! Throwaway PostgreSQL servers: a private data directory, a loopback port,
//! and a guardian process that stops the server and removes its directory
//! when the test process ends.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use session_test_process::{
    Cleanup, Guardian, ServerUser, Signal, is_running, on_a_free_port, signal_group,
    signal_process, until,
};

use crate::TestDatabase;
use crate::admin;
use crate::binaries::{self, Binaries};
use crate::certificate;

/// A bound on waiting for the server, never a timing assertion.
const MINUTE: Duration = Duration::from_secs(60);

/// A PostgreSQL server of its own for a test, started from scratch and
/// removed when dropped or when the test process ends, whichever comes first.
///
/// Most tests want [`TestDatabase::create`], a fresh database on a server
/// shared by the whole test binary. A `TestServer` is for tests that act on
/// the server itself: stopping it ([`stop`](Self::stop),
/// [`start_again`](Self::start_again)) or crashing it
/// ([`crash`](Self::crash)), connecting over TLS
/// ([`start_with_tls`](Self::start_with_tls)), or failing over from a
/// primary ([`start_primary`](Self::start_primary)) to its standby
/// ([`start_standby`](Self::start_standby), [`promote`](Self::promote)).
///
/// The server listens on a free port on 127.0.0.1 only, trusts every local
/// connection (user `postgres`, no password), and keeps its data in a private
/// temporary directory; durability is switched off for speed. When the tests
/// run as root, it runs as the `postgres` user (or `nobody`).
#[derive(Debug)]
pub struct TestServer {
    root: PathBuf,
    port: u16,
    binaries: Binaries,
    /// Who the server runs as, and so every program run on its data.
    user: ServerUser,
    authority: Option<PathBuf>,
    admin_url: String,
    role: Role,
    /// Held for its `Drop`, which stops the server and removes its files.
    _guardian: Guardian,
}

/// How a server was set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Setup {
    /// Plain connections only.
    Plain,
    /// TLS as well, with a certificate for `localhost`.
    Tls,
    /// Plain connections, and WAL streamed to standbys, which it waits for.
    Primary,
}

/// A server's place in replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Neither streams nor follows.
    Alone,
    /// May be given standbys.
    Primary,
    /// Follows a primary, until promoted.
    Standby,
}

impl TestServer {
    /// Starts a server without TLS.
    ///
    /// # Panics
    ///
    /// If no PostgreSQL installation is found or the server does not start;
    /// the message says what to install or what the server logged.
    #[must_use]
    pub fn start() -> Self {
        Self::launch(Setup::Plain).unwrap_or_else(|err| panic!("{err}"))
    }

    /// Starts a server that also accepts TLS, with a certificate for the name
    /// `localhost` signed by an authority generated for this server alone
    /// ([`authority_certificate`](Self::authority_certificate)). Connections
    /// without TLS are still accepted.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    #[must_use]
    pub fn start_with_tls() -> Self {
        Self::launch(Setup::Tls).unwrap_or_else(|err| panic!("{err}"))
    }

    /// Starts a server that can have standbys ([`start_standby`](Self::start_standby)).
    ///
    /// Replication is synchronous: once a standby is started, a commit is
    /// acknowledged only when the standby has it on disk and applied, so a
    /// failover to it loses no acknowledged write, and what the primary
    /// acknowledged the standby already answers. Until then it works as any
    /// other server. Durability on each server's own disk stays off for
    /// speed: a [`crash`](Self::crash) kills processes, not the machine, so
    /// nothing written is lost with it.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    #[must_use]
    pub fn start_primary() -> Self {
        Self::launch(Setup::Primary).unwrap_or_else(|err| panic!("{err}"))
    }

    pub(crate) fn launch(setup: Setup) -> Result<Self, String> {
        let binaries = binaries::find()?;
        let (root, user, guardian) = private_directory(&binaries)?;
        let fail = |what: &str, err: &dyn std::fmt::Display| {
            format!("session-test-postgres: {what}: {err}")
        };
        let data = root.join("data");
        let initdb = user
            .command(&binaries.initdb)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .current_dir(&root)
            .output()
            .map_err(|err| fail("cannot run initdb", &err))?;
        if !initdb.status.success() {
            return Err(format!(
                "session-test-postgres: initdb failed ({}): {}",
                initdb.status,
                String::from_utf8_lossy(&initdb.stderr).trim()
            ));
        }

        let mut settings = String::from(concat!(
            "\n# session-test-postgres: a throwaway server, fast rather than durable.\n",
            "listen_addresses = '127.0.0.1'\n",
            "unix_socket_directories = ''\n",
            "max_connections = 200\n",
            "fsync = off\n",
            "synchronous_commit = off\n",
            "full_page_writes = off\n",
        ));
        let authority = if setup == Setup::Tls {
            let files = certificate::generate()
                .map_err(|err| fail("cannot generate the TLS certificate", &err))?;
            let write = |name: &str, text: &str, mode: u32| -> Result<PathBuf, String> {
                let path = root.join(name);
                fs::write(&path, text).map_err(|err| fail("cannot write TLS files", &err))?;
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .map_err(|err| fail("cannot restrict TLS files", &err))?;
                user.give(&path)
                    .map_err(|err| fail("cannot hand TLS files to the server user", &err))?;
                Ok(path)
            };
            let certificate = write("server.crt", &files.certificate, 0o644)?;
            // PostgreSQL refuses a key others can read.
            let key = write("server.key", &files.key, 0o600)?;
            let authority = write("authority.crt", &files.authority, 0o644)?;
            settings.push_str(&format!(
                "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
                certificate.display(),
                key.display()
            ));
            Some(authority)
        } else {
            None
        };
        let role = if setup == Setup::Primary {
            settings.push_str(concat!(
                "# A primary: WAL for standbys, and commits that wait for them once\n",
                "# synchronous_standby_names names one (start_standby sets it).\n",
                "wal_level = replica\n",
                "max_wal_senders = 10\n",
                "synchronous_commit = remote_apply\n",
            ));
            append(
                &data.join("pg_hba.conf"),
                "host replication postgres 127.0.0.1/32 trust\n",
            )?;
            Role::Primary
        } else {
            Role::Alone
        };
        append(&data.join("postgresql.conf"), &settings)?;

        Self {
            root,
            port: 0,
            binaries,
            user,
            authority,
            admin_url: String::new(),
            role,
            _guardian: guardian,
        }
        .start_on_a_free_port()
    }

    /// Starts the server on a free port, and fills in the port and the URL.
    fn start_on_a_free_port(mut self) -> Result<Self, String> {
        on_a_free_port(
            |port| {
                self.port = port;
                self.run_pg_ctl_start()
            },
            |err| err.contains("could not bind"),
        )?;
        self.admin_url = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        Ok(self)
    }

    /// Starts a streaming standby of this primary: a copy of its data taken
    /// with `pg_basebackup`, in a private directory of its own, on a free
    /// port, removed as any other server is. It answers reads, refuses
    /// writes, and follows the primary synchronously: from when this
    /// returns, the primary waits for the standby at every commit, so
    /// whatever the primary acknowledged the standby has, and shows. While
    /// the standby is stopped or gone, commits on the primary wait.
    /// [`promote`](Self::promote) makes it the primary.
    ///
    /// # Panics
    ///
    /// If this server was not started with [`start_primary`](Self::start_primary),
    /// if `pg_basebackup` is not installed (the message names the package),
    /// or if the standby does not start or does not catch up within a minute.
    #[must_use]
    pub fn start_standby(&self) -> Self {
        self.launch_standby().unwrap_or_else(|err| panic!("{err}"))
    }

    fn launch_standby(&self) -> Result<Self, String> {
        if self.role != Role::Primary {
            return Err(
                "session-test-postgres: only a server started with TestServer::start_primary \
                 can have a standby"
                    .to_owned(),
            );
        }
        let pg_basebackup = self.binaries.pg_basebackup()?;
        let (root, user, guardian) = private_directory(&self.binaries)?;
        let data = root.join("data");
        let backup = user
            .command(&pg_basebackup)
            .arg("-D")
            .arg(&data)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            // -R: write the connection to the primary and standby.signal;
            // -c fast: checkpoint now rather than at the primary's leisure.
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"])
            .current_dir(&root)
            .stdin(Stdio::null())
            .output()
            .map_err(|err| format!("session-test-postgres: cannot run pg_basebackup: {err}"))?;
        if !backup.status.success() {
            return Err(format!(
                "session-test-postgres: pg_basebackup failed ({}): {}",
                backup.status,
                String::from_utf8_lossy(&backup.stderr).trim()
            ));
        }
        // The copied settings are the primary's. Once promoted, the standby
        // has no standby of its own, and must not wait for one at each
        // commit. Having lost the primary, a standby waits
        // wal_retrieve_retry_interval (5 s by default) before it looks
        // again, and a promotion asked for meanwhile waits with it.
        append(
            &data.join("postgresql.conf"),
            concat!(
                "\n# session-test-postgres: a standby.\n",
                "synchronous_standby_names = ''\n",
                "wal_retrieve_retry_interval = '50ms'\n",
            ),
        )?;
        let standby = Self {
            root,
            port: 0,
            binaries: self.binaries.clone(),
            user,
            authority: None,
            admin_url: String::new(),
            role: Role::Standby,
            _guardian: guardian,
        }
        .start_on_a_free_port()?;
        self.wait_for_a_synchronous_standby()?;
        Ok(standby)
    }

    /// Makes the primary wait for a standby at every commit, and waits
    /// until one is attached as synchronous.
    fn wait_for_a_synchronous_standby(&self) -> Result<(), String> {
        append(
            &self.root.join("data").join("postgresql.conf"),
            "synchronous_standby_names = '*'\n",
        )?;
        admin::query(&self.admin_url, "SELECT pg_reload_conf()")
            .map_err(|err| format!("session-test-postgres: cannot reload the primary: {err}"))?;
        let mut failed = None;
        let streaming = until("a standby streams synchronously", MINUTE, || {
            match admin::query(
                &self.admin_url,
                "SELECT count(*) FROM pg_stat_replication \
                 WHERE state = 'streaming' AND sync_state = 'sync'",
            ) {
                Ok(rows) => rows.first().and_then(|row| row.first()) != Some(&Some("0".to_owned())),
                // Not worth waiting on: stop polling and say so.
                Err(err) => {
                    failed = Some(err);
                    true
                }
            }
        });
        if let Some(err) = failed {
            return Err(format!(
                "session-test-postgres: cannot ask the primary: {err}"
            ));
        }
        streaming.map_err(|err| {
            format!(
                "session-test-postgres: {err}; primary log:\n{}",
                self.log_tail()
            )
        })
    }

    /// Promotes a standby to primary and waits until it accepts writes.
    ///
    /// # Panics
    ///
    /// If `pg_ctl promote` fails, for example because the server is not a standby.
    pub fn promote(&self) {
        let output = self
            .user
            .command(&self.binaries.pg_ctl)
            .args(["promote", "-w", "-t", "60", "-s", "-D"])
            .arg(self.root.join("data"))
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|err| panic!("session-test-postgres: cannot run pg_ctl: {err}"));
        assert!(
            output.status.success(),
            "session-test-postgres: pg_ctl promote failed ({}): {}\nserver log:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            self.log_tail()
        );
    }

    /// Kills the server outright, as a crashed machine would go: SIGKILL to
    /// the postmaster and every process of it at once, so nothing shuts down
    /// cleanly, no connection is told, and commits that were not yet
    /// acknowledged are cut off. Returns once the server is gone. The data
    /// stays; [`start_again`](Self::start_again) would recover it.
    ///
    /// # Panics
    ///
    /// If the server is not running or cannot be killed.
    pub fn crash(&self) {
        let pid_file = self.root.join("data").join("postmaster.pid");
        let pid: u32 = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "session-test-postgres: no running server to crash ({} is missing)",
                    pid_file.display()
                )
            });
        // pg_ctl starts the postmaster as the leader of a process group of
        // its own, which its backends join: kill the group, so that none
        // lives on to finish what it was doing. Should the postmaster not
        // lead a group, its backends exit as soon as they see it gone.
        if let Err(err) =
            signal_group(pid, Signal::Kill).or_else(|_| signal_process(pid, Signal::Kill))
        {
            panic!("session-test-postgres: cannot kill the server (pid {pid}): {err}");
        }
        until("the killed server is gone", MINUTE, || !is_running(pid))
            .unwrap_or_else(|err| panic!("session-test-postgres: {err} (pid {pid})"));
        // Where nothing reaps orphans (some containers' init), the dead
        // postmaster stays a zombie that pg_ctl takes for a running server;
        // without the file, the guardian and start_again see it is gone.
        let _ignored = fs::remove_file(&pid_file);
    }

    /// The last lines of the server's log, for failure messages.
    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.root.join("server.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn run_pg_ctl_start(&self) -> Result<(), String> {
        let log = self.root.join("server.log");
        let output = self
            .user
            .command(&self.binaries.pg_ctl)
            .args(["start", "-w", "-t", "60", "-s", "-D"])
            .arg(self.root.join("data"))
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(format!("-p {}", self.port))
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .output()
            .map_err(|err| format!("session-test-postgres: cannot run pg_ctl: {err}"))?;
        if output.status.success() {
            return Ok(());
        }
        Err(format!(
            "session-test-postgres: the server did not start ({}): {}\nserver log:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            self.log_tail()
        ))
    }

    /// Stops the server (fast shutdown: open connections are closed) and
    /// waits until it is down. The data stays for [`start_again`](Self::start_again).
    ///
    /// # Panics
    ///
    /// If `pg_ctl` cannot stop it.
    pub fn stop(&self) {
        let output = self
            .user
            .command(&self.binaries.pg_ctl)
            .args(["stop", "-m", "fast", "-w", "-s", "-D"])
            .arg(self.root.join("data"))
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|err| panic!("session-test-postgres: cannot run pg_ctl: {err}"));
        assert!(
            output.status.success(),
            "session-test-postgres: pg_ctl stop failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }

    /// Starts a stopped server again, on the same port with the same data.
    ///
    /// # Panics
    ///
    /// If it does not start (for example, another process took the port meanwhile).
    pub fn start_again(&self) {
        self.run_pg_ctl_start()
            .unwrap_or_else(|err| panic!("{err}"));
    }

    /// A fresh, empty database on this server.
    ///
    /// # Panics
    ///
    /// If the server does not create it (a standby creates none: create it
    /// on the primary, and the standby has it too).
    #[must_use]
    pub fn create_database(&self) -> TestDatabase {
        TestDatabase::create_on(&self.admin_url, "the test server")
    }

    /// A superuser URL for the server's `postgres` database.
    #[must_use]
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// The server's private directory: its data, its log (`server.log`) and,
    /// with TLS, its certificates. Removed with the server.
    #[must_use]
    pub fn directory(&self) -> &Path {
        &self.root
    }

    /// The port the server listens on, on 127.0.0.1.
    #[must_use]
    pub const fn port(&self) -> u16 {
        self.port
    }

    /// The PEM file of the authority that signed the server's certificate,
    /// for `sslrootcert`; `None` without TLS.
    #[must_use]
    pub fn authority_certificate(&self) -> Option<&Path> {
        self.authority.as_deref()
    }
}

/// A new private directory for a server, owned by the user the server runs
/// as (`postgres`, or `nobody`, when the tests run as root: PostgreSQL
/// refuses to run as root), with the guardian that stops the server and
/// removes the directory.
fn private_directory(binaries: &Binaries) -> Result<(PathBuf, ServerUser, Guardian), String> {
    let user = ServerUser::unprivileged(&["postgres", "nobody"])
        .map_err(|err| format!("session-test-postgres: {err}"))?;
    let root = user.private_directory("session-test-pg-").map_err(|err| {
        format!("session-test-postgres: cannot create the server's directory: {err}")
    })?;
    // `immediate`: as fast as a crash, but the server still removes its
    // shared memory, which a killed one would leave behind.
    let data = root.join("data");
    let stop = [
        OsStr::new("stop"),
        OsStr::new("-D"),
        data.as_os_str(),
        OsStr::new("-m"),
        OsStr::new("immediate"),
        OsStr::new("-w"),
        OsStr::new("-s"),
    ];
    let cleanup = Cleanup::new().stop(&binaries.pg_ctl, stop).remove(&root);
    // From here on, dropping the guardian (on any early return) cleans up.
    let guardian = Guardian::spawn(&user, cleanup).map_err(|err| {
        let _ignored = fs::remove_dir_all(&root);
        format!("session-test-postgres: {err}")
    })?;
    Ok((root, user, guardian))
}

/// Appends `text` to a configuration file; the file keeps its owner.
fn append(file: &Path, text: &str) -> Result<(), String> {
    fs::OpenOptions::new()
        .append(true)
        .open(file)
        .and_then(|mut conf| conf.write_all(text.as_bytes()))
        .map_err(|err| {
            format!(
                "session-test-postgres: cannot configure the server ({}): {err}",
                file.display()
            )
        })
}
