//! Throwaway PostgreSQL servers: a private data directory, a loopback port,
//! and a guardian process that removes both when the test process ends.

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use crate::TestDatabase;
use crate::binaries::{self, Binaries};
use crate::certificate;

/// Stops the server and deletes its directory once its standard input closes,
/// which happens when the test process exits for any reason (a panic, an
/// abort, SIGKILL): the kernel closes the pipe's only write end. It ignores
/// the terminal's signals and has its own process group, so Ctrl-C on the
/// test run does not kill it before it has cleaned up.
const GUARDIAN: &str = r#"
trap '' HUP INT TERM
root=$1
shift
cat >/dev/null
"$@" stop -D "$root/data" -m immediate -w -s >/dev/null 2>&1
rm -rf "$root"
"#;

/// A PostgreSQL server of its own for a test, started from scratch and
/// removed when dropped or when the test process ends, whichever comes first.
///
/// Most tests want [`TestDatabase::create`], a fresh database on a server
/// shared by the whole test binary. A `TestServer` is for tests that act on
/// the server itself: stopping it ([`stop`](Self::stop),
/// [`start_again`](Self::start_again)) or connecting over TLS
/// ([`start_with_tls`](Self::start_with_tls)).
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
    runner: Runner,
    authority: Option<PathBuf>,
    admin_url: String,
    /// Held for its `Drop`, which stops the server and removes its files.
    _guardian: Guardian,
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
        Self::launch(false).unwrap_or_else(|err| panic!("{err}"))
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
        Self::launch(true).unwrap_or_else(|err| panic!("{err}"))
    }

    pub(crate) fn launch(tls: bool) -> Result<Self, String> {
        let binaries = binaries::find()?;
        let root = tempfile::Builder::new()
            .prefix("session-test-pg-")
            .tempdir()
            .map_err(|err| {
                format!("session-test-postgres: cannot create a temporary directory: {err}")
            })?
            .keep();
        let runner = match Runner::for_directory(&root) {
            Ok(runner) => runner,
            Err(err) => {
                let _ignored = fs::remove_dir_all(&root);
                return Err(err);
            }
        };
        // From here on, dropping the guardian (on any early return) cleans up.
        let guardian = Guardian::spawn(&root, &runner, &binaries.pg_ctl)?;
        let fail = |what: &str, err: &dyn std::fmt::Display| {
            format!("session-test-postgres: {what}: {err}")
        };
        runner
            .give(&root)
            .map_err(|err| fail("cannot hand the data directory to the server user", &err))?;
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700))
            .map_err(|err| fail("cannot restrict the data directory", &err))?;

        let data = root.join("data");
        let initdb = runner
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
        let authority = if tls {
            let files = certificate::generate()
                .map_err(|err| fail("cannot generate the TLS certificate", &err))?;
            let write = |name: &str, text: &str, mode: u32| -> Result<PathBuf, String> {
                let path = root.join(name);
                fs::write(&path, text).map_err(|err| fail("cannot write TLS files", &err))?;
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .map_err(|err| fail("cannot restrict TLS files", &err))?;
                runner
                    .give(&path)
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
        fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut conf| conf.write_all(settings.as_bytes()))
            .map_err(|err| fail("cannot configure the server", &err))?;

        let mut server = Self {
            root,
            port: 0,
            binaries,
            runner,
            authority,
            admin_url: String::new(),
            _guardian: guardian,
        };
        // Another process may take the port between our probe and the
        // server's bind; a few attempts make that harmless.
        let mut last_error = String::new();
        for _ in 0..5 {
            server.port = free_port().map_err(|err| fail("cannot find a free port", &err))?;
            match server.run_pg_ctl_start() {
                Ok(()) => {
                    server.admin_url =
                        format!("postgres://postgres@127.0.0.1:{}/postgres", server.port);
                    return Ok(server);
                }
                Err(err) if err.contains("could not bind") => last_error = err,
                Err(err) => return Err(err),
            }
        }
        Err(last_error)
    }

    fn run_pg_ctl_start(&self) -> Result<(), String> {
        let log = self.root.join("server.log");
        let output = self
            .runner
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
        let server_log = fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = server_log.lines().rev().take(15).collect();
        Err(format!(
            "session-test-postgres: the server did not start ({}): {}\nserver log:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
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
            .runner
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
    /// If the server does not create it.
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

/// How to run the server's programs: directly, or as an unprivileged user
/// when the tests run as root (PostgreSQL refuses to run as root).
#[derive(Debug, Clone)]
struct Runner {
    prefix: Vec<OsString>,
    owner: Option<(u32, u32)>,
}

impl Runner {
    /// The directory was just created by this process, so its owner is the user we run as.
    fn for_directory(dir: &Path) -> Result<Self, String> {
        let uid = fs::metadata(dir)
            .map_err(|err| {
                format!(
                    "session-test-postgres: cannot read {}: {err}",
                    dir.display()
                )
            })?
            .uid();
        if uid != 0 {
            return Ok(Self {
                prefix: Vec::new(),
                owner: None,
            });
        }
        let (uid, gid) = ["postgres", "nobody"]
            .into_iter()
            .find_map(user_ids)
            .ok_or_else(|| {
                "session-test-postgres: running as root, the server must run as an \
                 unprivileged user, but neither `postgres` nor `nobody` exists"
                    .to_owned()
            })?;
        let setpriv = binaries::on_path("setpriv").ok_or_else(|| {
            "session-test-postgres: running as root, the server must run as an unprivileged \
             user, which needs `setpriv` (util-linux) on PATH"
                .to_owned()
        })?;
        Ok(Self {
            prefix: vec![
                setpriv.into_os_string(),
                format!("--reuid={uid}").into(),
                format!("--regid={gid}").into(),
                "--clear-groups".into(),
            ],
            owner: Some((uid, gid)),
        })
    }

    fn command(&self, program: &Path) -> Command {
        match self.prefix.split_first() {
            None => Command::new(program),
            Some((first, rest)) => {
                let mut command = Command::new(first);
                command.args(rest).arg(program);
                command
            }
        }
    }

    /// Makes the server user own `path`.
    fn give(&self, path: &Path) -> std::io::Result<()> {
        match self.owner {
            Some((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid)),
            None => Ok(()),
        }
    }
}

fn user_ids(user: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let output = Command::new("id").arg(flag).arg(user).output().ok()?;
        if !output.status.success() {
            return None;
        }
        String::from_utf8(output.stdout).ok()?.trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The process that removes the server when the test process goes away.
#[derive(Debug)]
struct Guardian {
    process: Child,
    /// The write end of the guardian's standard input; closing it is the signal.
    pipe: Option<ChildStdin>,
}

impl Guardian {
    fn spawn(root: &Path, runner: &Runner, pg_ctl: &Path) -> Result<Self, String> {
        let mut process = Command::new("sh")
            .arg("-c")
            .arg(GUARDIAN)
            .arg("session-test-postgres-guardian")
            .arg(root)
            .args(&runner.prefix)
            .arg(pg_ctl)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|err| {
                let _ignored = fs::remove_dir_all(root);
                format!("session-test-postgres: cannot start the cleanup process: {err}")
            })?;
        let pipe = process.stdin.take();
        Ok(Self { process, pipe })
    }
}

impl Drop for Guardian {
    fn drop(&mut self) {
        drop(self.pipe.take());
        // Wait, so the server and its files are gone when their owner is.
        let _status = self.process.wait();
    }
}
