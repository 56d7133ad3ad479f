//! Real gateways for tests: a throwaway nginx or Caddy in front of an
//! upstream, asking a session service before every request (forward auth),
//! configured exactly as docs/GATEWAYS.md says.
//!
//! [`Gateway::nginx`] and [`Gateway::caddy`] write a configuration from
//! [`nginx_site`] or [`caddy_site`] (the texts the docs show) into a private
//! temporary directory, start the server on a free port on 127.0.0.1, and
//! wait until it accepts connections. The server and its directory are
//! removed when the `Gateway` is dropped or the test process ends, however
//! it ends (a guardian process watches a pipe the kernel closes on exit).
//! When the tests run as root, the server runs as `nobody`.
//!
//! The programs come from the Debian packages `nginx` and `caddy`. A missing
//! one fails the test with a message naming the package; it never skips.
//!
//! [`Prometheus::scraping`] starts a throwaway Prometheus (Debian package
//! `prometheus`) the same way, with the same guardian, scraping the
//! service's `/metrics`.

mod prometheus;

pub use prometheus::Prometheus;

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// The nginx `server` block of docs/GATEWAYS.md: `listen` and `name` are
/// where it serves, `session` and `app` are `host:port` of the session
/// service and of the application behind the gateway.
#[must_use]
pub fn nginx_site(listen: &str, name: &str, session: &str, app: &str) -> String {
    render(include_str!("nginx.conf"), listen, name, session, app)
}

/// The Caddyfile site block of docs/GATEWAYS.md: `site` is its address,
/// `session` and `app` are `host:port` of the session service and of the
/// application behind the gateway.
#[must_use]
pub fn caddy_site(site: &str, session: &str, app: &str) -> String {
    render(include_str!("Caddyfile"), "", site, session, app)
}

fn render(template: &str, listen: &str, name: &str, session: &str, app: &str) -> String {
    template
        .replace("{listen}", listen)
        .replace("{name}", name)
        .replace("{session}", session)
        .replace("{app}", app)
}

/// Which gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// nginx with `auth_request`.
    Nginx,
    /// Caddy with `forward_auth`.
    Caddy,
}

impl Kind {
    fn program(self) -> &'static str {
        match self {
            Self::Nginx => "nginx",
            Self::Caddy => "caddy",
        }
    }
}

/// A running gateway, stopped and deleted when dropped.
#[derive(Debug)]
pub struct Gateway {
    kind: Kind,
    address: SocketAddr,
    root: PathBuf,
    /// Held for its `Drop`, which stops the server and removes its files.
    _guardian: Guardian,
}

impl Gateway {
    /// Starts nginx in front of `app`, asking `session` with `auth_request`.
    ///
    /// # Panics
    ///
    /// If nginx is not installed (the message names the package) or does
    /// not start (the message holds its log).
    #[must_use]
    pub fn nginx(session: SocketAddr, app: SocketAddr) -> Self {
        Self::start(Kind::Nginx, session, app)
    }

    /// Starts Caddy in front of `app`, asking `session` with `forward_auth`.
    ///
    /// # Panics
    ///
    /// As [`nginx`](Self::nginx).
    #[must_use]
    pub fn caddy(session: SocketAddr, app: SocketAddr) -> Self {
        Self::start(Kind::Caddy, session, app)
    }

    /// Which gateway this is.
    #[must_use]
    pub const fn kind(&self) -> Kind {
        self.kind
    }

    /// Where it listens, on 127.0.0.1.
    #[must_use]
    pub const fn address(&self) -> SocketAddr {
        self.address
    }

    /// What the server logged so far, for failure messages.
    #[must_use]
    pub fn log(&self) -> String {
        // Its output, and nginx's error log (a file of its own, since the
        // server may run as another user than the one who opened the output).
        ["server.log", "error.log"]
            .iter()
            .filter_map(|name| fs::read_to_string(self.root.join(name)).ok())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn start(kind: Kind, session: SocketAddr, app: SocketAddr) -> Self {
        let program = find(kind.program()).unwrap_or_else(|| {
            panic!(
                "session-test-gateway: `{0}` is not installed (looked on PATH, in /usr/sbin and \
                 /usr/bin). Install the Debian package `{0}`: `apt-get install {0}`.",
                kind.program()
            )
        });
        // Another process may take the port between the probe and the
        // server's bind; a few attempts make that harmless.
        let mut last = String::new();
        for _ in 0..5 {
            match Self::launch(kind, &program, session, app) {
                Ok(gateway) => return gateway,
                Err(err) if err.contains("in use") => last = err,
                Err(err) => panic!("{err}"),
            }
        }
        panic!("{last}");
    }

    fn launch(
        kind: Kind,
        program: &Path,
        session: SocketAddr,
        app: SocketAddr,
    ) -> Result<Self, String> {
        let root = tempfile::Builder::new()
            .prefix("session-test-gateway-")
            .tempdir()
            .map_err(|err| format!("session-test-gateway: cannot create a directory: {err}"))?
            .keep();
        let runner = Runner::for_directory(&root)?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|err| format!("session-test-gateway: cannot find a free port: {err}"))?
            .port();
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let (config, args) = match kind {
            Kind::Nginx => (
                nginx_config(&root, port, session, app),
                vec![
                    "-p".into(),
                    root.display().to_string(),
                    "-c".into(),
                    root.join("gateway.conf").display().to_string(),
                    "-e".into(),
                    root.join("error.log").display().to_string(),
                ],
            ),
            Kind::Caddy => (
                caddy_config(port, session, app),
                vec![
                    "run".into(),
                    "--adapter".into(),
                    "caddyfile".into(),
                    "--config".into(),
                    root.join("gateway.conf").display().to_string(),
                ],
            ),
        };
        let fail = |what: &str, err: &dyn std::fmt::Display| {
            let _ignored = fs::remove_dir_all(&root);
            format!("session-test-gateway: {what}: {err}")
        };
        if let Err(err) = fs::write(root.join("gateway.conf"), config) {
            return Err(fail("cannot write the configuration", &err));
        }
        if let Err(err) = runner.give(&root) {
            return Err(fail("cannot hand the directory to the server user", &err));
        }
        let guardian = Guardian::spawn(&root, &runner, program, &args)?;
        let gateway = Self {
            kind,
            address,
            root,
            _guardian: guardian,
        };
        wait_until_listening(gateway.kind.program(), address, &gateway.root, || {
            gateway.log()
        })?;
        Ok(gateway)
    }
}

/// A whole nginx configuration: the documented site inside the settings a
/// server of its own needs (foreground, one process, every file in `root`).
fn nginx_config(root: &Path, port: u16, session: SocketAddr, app: SocketAddr) -> String {
    let root = root.display();
    let site = nginx_site(
        &format!("127.0.0.1:{port}"),
        "_",
        &session.to_string(),
        &app.to_string(),
    );
    format!(
        "daemon off;\nmaster_process off;\npid {root}/nginx.pid;\nerror_log {root}/error.log \
         info;\nevents {{ worker_connections 64; }}\nhttp {{\n    access_log off;\n    \
         client_body_temp_path {root}/client_body;\n    proxy_temp_path {root}/proxy;\n    \
         fastcgi_temp_path {root}/fastcgi;\n    uwsgi_temp_path {root}/uwsgi;\n    \
         scgi_temp_path {root}/scgi;\n{site}}}\n"
    )
}

/// A whole Caddyfile: the documented site, served on one port of
/// 127.0.0.1 for any name, with no admin endpoint and no certificates.
fn caddy_config(port: u16, session: SocketAddr, app: SocketAddr) -> String {
    let site = caddy_site(
        &format!("http://:{port}"),
        &session.to_string(),
        &app.to_string(),
    );
    format!(
        "{{\n\tadmin off\n\tauto_https off\n\tdefault_bind 127.0.0.1\n}}\n\
         {site}"
    )
}

/// A program on `PATH`, or in the system folders Debian installs servers
/// to (`/usr/sbin` is not on an ordinary user's `PATH`).
pub(crate) fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.metadata().is_ok_and(|meta| meta.is_file()))
}

/// Starts the server and, once its standard input closes (when the test
/// process exits for any reason, or the `Gateway` is dropped), kills it and
/// deletes its directory. It ignores the terminal's signals and has its own
/// process group, so Ctrl-C on the test run does not kill it before it has
/// cleaned up. The server's own environment points its home and data at the
/// directory, so nothing is written elsewhere.
const GUARDIAN: &str = r#"
trap '' HUP INT TERM
root=$1
shift
HOME=$root XDG_DATA_HOME=$root/data XDG_CONFIG_HOME=$root/config "$@" </dev/null >>"$root/server.log" 2>&1 &
child=$!
echo "$child" >"$root/pid"
cat >/dev/null
kill -s KILL "$child" 2>/dev/null
wait "$child" 2>/dev/null
rm -rf "$root"
"#;

/// The process that owns the server and removes it when the test process goes away.
#[derive(Debug)]
pub(crate) struct Guardian {
    process: Child,
    /// The write end of the guardian's standard input; closing it is the signal.
    pipe: Option<ChildStdin>,
}

impl Guardian {
    pub(crate) fn spawn(
        root: &Path,
        runner: &Runner,
        program: &Path,
        args: &[String],
    ) -> Result<Self, String> {
        let mut process = Command::new("sh")
            .arg("-c")
            .arg(GUARDIAN)
            .arg("session-test-gateway-guardian")
            .arg(root)
            .args(&runner.prefix)
            .arg(program)
            .args(args)
            .current_dir(root)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|err| {
                let _ignored = fs::remove_dir_all(root);
                format!("session-test-gateway: cannot start the server: {err}")
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

/// How to run the server: directly, or as `nobody` when the tests run as
/// root (a gateway under test needs no privilege, and must not have it).
#[derive(Debug)]
pub(crate) struct Runner {
    prefix: Vec<String>,
    owner: Option<(u32, u32)>,
}

impl Runner {
    /// The directory was just created by this process, so its owner is the user we run as.
    pub(crate) fn for_directory(dir: &Path) -> Result<Self, String> {
        let uid = fs::metadata(dir)
            .map_err(|err| format!("session-test-gateway: cannot read {}: {err}", dir.display()))?
            .uid();
        if uid != 0 {
            return Ok(Self {
                prefix: Vec::new(),
                owner: None,
            });
        }
        let (uid, gid) = user_ids("nobody").ok_or_else(|| {
            "session-test-gateway: running as root, the gateway must run as an unprivileged \
             user, but `nobody` does not exist"
                .to_owned()
        })?;
        let setpriv = find("setpriv").ok_or_else(|| {
            "session-test-gateway: running as root, the gateway must run as an unprivileged \
             user, which needs `setpriv` (Debian package `util-linux`)"
                .to_owned()
        })?;
        Ok(Self {
            prefix: vec![
                setpriv.display().to_string(),
                format!("--reuid={uid}"),
                format!("--regid={gid}"),
                "--clear-groups".to_owned(),
            ],
            owner: Some((uid, gid)),
        })
    }

    /// Makes the server user own `dir` and everything in it, readable by it alone.
    pub(crate) fn give(&self, dir: &Path) -> std::io::Result<()> {
        if let Some((uid, gid)) = self.owner {
            for entry in fs::read_dir(dir)? {
                std::os::unix::fs::chown(entry?.path(), Some(uid), Some(gid))?;
            }
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
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

/// Waits until `address` accepts connections, or the server started in
/// `root` (its pid in `root/pid`) has exited, or 30 s have passed; the
/// error names `program` and carries its `log`.
pub(crate) fn wait_until_listening(
    program: &str,
    address: SocketAddr,
    root: &Path,
    log: impl Fn() -> String,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        let exited = fs::read_to_string(root.join("pid"))
            .ok()
            .and_then(|pid| pid.trim().parse::<u32>().ok())
            .is_some_and(|pid| !is_running(pid));
        if exited || Instant::now() > deadline {
            return Err(format!(
                "session-test-gateway: {program} did not start listening on {address}; its log:\n{}",
                log()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` still runs: a zombie, dead but not yet reaped, does not.
pub(crate) fn is_running(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}
