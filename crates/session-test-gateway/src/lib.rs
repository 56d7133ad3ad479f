//! Real gateways for tests: a throwaway nginx, Caddy or HAProxy in front of
//! an upstream, asking a session service before every request (forward
//! auth), configured exactly as docs/GATEWAYS.md says.
//!
//! [`Gateway::nginx`], [`Gateway::caddy`] and [`Gateway::haproxy`] write a
//! configuration from [`nginx_site`], [`caddy_site`] or [`haproxy_site`] and
//! [`HAPROXY_LUA`] (the texts the docs show) into a private temporary
//! directory, start the server on a free port on 127.0.0.1, and
//! wait until it accepts connections. The server and its directory are
//! removed when the `Gateway` is dropped or the test process ends, however
//! it ends (session-test-process's guardian). When the tests run as root,
//! the server runs as `nobody`.
//!
//! The programs come from the Debian packages `nginx`, `caddy` and
//! `haproxy` (2.6 or later, built with Lua as Debian's is). A missing
//! one fails the test with a message naming the package; it never skips.
//!
//! [`Prometheus::scraping`] starts a throwaway Prometheus (Debian package
//! `prometheus`) the same way, scraping the service's `/metrics`.

mod prometheus;

pub use prometheus::Prometheus;

use std::fs;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use session_test_process::{Cleanup, Guardian, ServerProcess, ServerUser, on_a_free_port, until};

/// How long a server may take to listen: a bound on waiting, not a timing.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);

/// The nginx `server` block of docs/GATEWAYS.md: `listen` and `name` are
/// where it serves, `session` and `app` are `host:port` of the session
/// service and of the application behind the gateway.
#[must_use]
pub fn nginx_site(listen: &str, name: &str, session: &str, app: &str) -> String {
    render(include_str!("nginx.conf"), listen, name, session, app)
}

/// The nginx `server` block of docs/GATEWAYS.md that passes the events
/// feed (`GET /v1/events`) on to the session service at `session`
/// (`host:port`), unbuffered; `listen` and `name` are where it serves.
#[must_use]
pub fn nginx_events_site(listen: &str, name: &str, session: &str) -> String {
    render(include_str!("nginx_events.conf"), listen, name, session, "")
}

/// The Caddyfile site block of docs/GATEWAYS.md: `site` is its address,
/// `session` and `app` are `host:port` of the session service and of the
/// application behind the gateway.
#[must_use]
pub fn caddy_site(site: &str, session: &str, app: &str) -> String {
    render(include_str!("Caddyfile"), "", site, session, app)
}

/// The HAProxy configuration of docs/GATEWAYS.md: `listen` is its `bind`
/// address, `lua` the path of [`HAPROXY_LUA`], `session` and `app` are
/// `host:port` of the session service and of the application behind the
/// gateway.
#[must_use]
pub fn haproxy_site(listen: &str, lua: &str, session: &str, app: &str) -> String {
    render(include_str!("haproxy.cfg"), listen, "", session, app).replace("{lua}", lua)
}

/// The Lua script [`haproxy_site`] loads: the `lua.session_auth` action,
/// which asks the service with HAProxy's built-in HTTP client and sets the
/// identity headers of its answer, as docs/GATEWAYS.md shows it.
pub const HAPROXY_LUA: &str = include_str!("session_auth.lua");

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
    /// HAProxy with a Lua action calling its built-in HTTP client.
    HAProxy,
}

impl Kind {
    fn program(self) -> &'static str {
        match self {
            Self::Nginx => "nginx",
            Self::Caddy => "caddy",
            Self::HAProxy => "haproxy",
        }
    }
}

/// A running gateway, stopped and deleted when dropped.
#[derive(Debug)]
pub struct Gateway {
    kind: Kind,
    address: SocketAddr,
    server: Server,
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

    /// Starts nginx passing the events feed of `session` on, configured as
    /// [`nginx_events_site`].
    ///
    /// # Panics
    ///
    /// As [`nginx`](Self::nginx).
    #[must_use]
    pub fn nginx_events(session: SocketAddr) -> Self {
        Self::launch(
            Kind::Nginx,
            session,
            session,
            HAPROXY_LUA,
            Some(&|site| site),
        )
    }

    /// Starts nginx passing the events feed of `session` on, configured as
    /// [`nginx_events_site`] rewritten by `edit`: for checking that a test
    /// tells the documented configuration from a broken one.
    ///
    /// # Panics
    ///
    /// As [`nginx`](Self::nginx).
    #[must_use]
    pub fn nginx_events_edited(session: SocketAddr, edit: &dyn Fn(String) -> String) -> Self {
        Self::launch(Kind::Nginx, session, session, HAPROXY_LUA, Some(edit))
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

    /// Starts HAProxy in front of `app`, asking `session` from the Lua
    /// action of [`HAPROXY_LUA`].
    ///
    /// # Panics
    ///
    /// As [`nginx`](Self::nginx).
    #[must_use]
    pub fn haproxy(session: SocketAddr, app: SocketAddr) -> Self {
        Self::start(Kind::HAProxy, session, app)
    }

    /// Starts HAProxy configured as [`haproxy`](Self::haproxy), but loading
    /// `lua` instead of [`HAPROXY_LUA`]: for checking what the
    /// configuration does when the script misbehaves.
    ///
    /// # Panics
    ///
    /// As [`nginx`](Self::nginx).
    #[must_use]
    pub fn haproxy_with_lua(session: SocketAddr, app: SocketAddr, lua: &str) -> Self {
        Self::launch(Kind::HAProxy, session, app, lua, None)
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
        self.server.log()
    }

    fn start(kind: Kind, session: SocketAddr, app: SocketAddr) -> Self {
        Self::launch(kind, session, app, HAPROXY_LUA, None)
    }

    /// Starts `kind`; `lua` is the script HAProxy loads; with `events`,
    /// nginx serves [`nginx_events_site`], rewritten by it, instead of the
    /// forward-auth site.
    fn launch(
        kind: Kind,
        session: SocketAddr,
        app: SocketAddr,
        lua: &str,
        events: Option<&dyn Fn(String) -> String>,
    ) -> Self {
        let program = session_test_process::find_program(kind.program()).unwrap_or_else(|| {
            panic!(
                "session-test-gateway: `{0}` is not installed (looked on PATH, in /usr/sbin and \
                 /usr/bin). Install the Debian package `{0}`: `apt-get install {0}`.",
                kind.program()
            )
        });
        on_a_free_port(
            |port| {
                let address = SocketAddr::from(([127, 0, 0, 1], port));
                let server = Server::start(&program, "session-test-gateway-", address, |root| {
                    let (config, args) = match kind {
                        Kind::Nginx => (
                            if let Some(edit) = events {
                                nginx_events_config(root, port, session, edit)
                            } else {
                                nginx_config(root, port, session, app)
                            },
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
                        Kind::HAProxy => {
                            fs::write(root.join(HAPROXY_LUA_FILE), lua)?;
                            (
                                haproxy_config(root, port, session, app),
                                vec![
                                    // Foreground, and only this file.
                                    "-db".into(),
                                    "-f".into(),
                                    root.join("gateway.conf").display().to_string(),
                                ],
                            )
                        }
                    };
                    fs::write(root.join("gateway.conf"), config)?;
                    Ok(args)
                })?;
                Ok(Self {
                    kind,
                    address,
                    server,
                })
            },
            |err| err.contains(ADDRESS_IN_USE),
        )
        .unwrap_or_else(|err| panic!("{err}"))
    }
}

/// A whole nginx configuration: the documented site inside the settings a
/// server of its own needs (foreground, one process, every file in `root`).
fn nginx_config(root: &Path, port: u16, session: SocketAddr, app: SocketAddr) -> String {
    let site = nginx_site(
        &format!("127.0.0.1:{port}"),
        "_",
        &session.to_string(),
        &app.to_string(),
    );
    nginx_server(root, &site)
}

/// [`nginx_config`] with the documented events site, rewritten by `edit`.
fn nginx_events_config(
    root: &Path,
    port: u16,
    session: SocketAddr,
    edit: &dyn Fn(String) -> String,
) -> String {
    let site = nginx_events_site(&format!("127.0.0.1:{port}"), "_", &session.to_string());
    nginx_server(root, &edit(site))
}

/// `site` inside the settings an nginx of its own needs.
fn nginx_server(root: &Path, site: &str) -> String {
    let root = root.display();
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

/// The file name of [`HAPROXY_LUA`] beside the configuration.
const HAPROXY_LUA_FILE: &str = "session_auth.lua";

/// A whole HAProxy configuration: the documented one after the settings a
/// server of its own needs (one thread, its log on its output, the
/// timeouts every HAProxy configuration sets). HAProxy merges the two
/// `global` sections.
fn haproxy_config(root: &Path, port: u16, session: SocketAddr, app: SocketAddr) -> String {
    let site = haproxy_site(
        &format!("127.0.0.1:{port}"),
        &root.join(HAPROXY_LUA_FILE).display().to_string(),
        &session.to_string(),
        &app.to_string(),
    );
    format!(
        "global\n    nbthread 1\n    log stderr format raw local0 info\ndefaults\n    mode \
         http\n    log global\n    option httplog\n    timeout connect 5s\n    timeout client \
         30s\n    timeout server 30s\n{site}"
    )
}

/// What nginx, Caddy, HAProxy and Prometheus all log when their port was taken.
pub(crate) const ADDRESS_IN_USE: &str = "already in use";

/// A server of this crate: its private directory and its process, both
/// removed when dropped or when the test process ends.
#[derive(Debug)]
pub(crate) struct Server {
    root: PathBuf,
    /// Its guardian removes `root` once the process is gone.
    _process: ServerProcess,
}

impl Server {
    /// Makes a private directory (named from `prefix`) for the server's
    /// user, lets `prepare` write the server's files there and return its
    /// arguments, runs `program` with them in that directory, its home,
    /// and waits until it listens on `address`.
    ///
    /// The server runs as `nobody` when the tests run as root: it needs no
    /// privilege and must not have it. Its environment points its home and
    /// data at the directory, so nothing is written elsewhere.
    pub(crate) fn start(
        program: &Path,
        prefix: &str,
        address: SocketAddr,
        prepare: impl FnOnce(&Path) -> io::Result<Vec<String>>,
    ) -> Result<Self, String> {
        let fail = |what: &str, err: &dyn std::fmt::Display| {
            format!("session-test-gateway: {what}: {err}")
        };
        let user =
            ServerUser::unprivileged(&["nobody"]).map_err(|err| fail("no server user", &err))?;
        let root = user
            .private_directory(prefix)
            .map_err(|err| fail("cannot create a directory", &err))?;
        let guardian = Guardian::spawn(&user, Cleanup::new().remove(&root)).map_err(|err| {
            let _ignored = fs::remove_dir_all(&root);
            fail("cannot guard the server", &err)
        })?;
        // From here on, dropping the guardian (on any early return) removes the directory.
        let args = prepare(&root).map_err(|err| fail("cannot write the configuration", &err))?;
        user.give(&root)
            .map_err(|err| fail("cannot hand the directory to the server user", &err))?;
        let output = fs::File::create(root.join("server.log"))
            .and_then(|log| Ok((log.try_clone()?, log)))
            .map_err(|err| fail("cannot create the log", &err))?;
        let mut command = user.command(program);
        command
            .args(args)
            .env("HOME", &root)
            .env("XDG_DATA_HOME", root.join("data"))
            .env("XDG_CONFIG_HOME", root.join("config"))
            .current_dir(&root)
            .stdin(Stdio::null())
            .stdout(output.0)
            .stderr(output.1);
        let mut process = ServerProcess::spawn(&mut command, guardian)
            .map_err(|err| fail(&format!("cannot run {}", program.display()), &err))?;
        let mut exited = false;
        let listening = until(
            &format!("{} listens on {address}", program.display()),
            LISTEN_TIMEOUT,
            || {
                if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                    return true;
                }
                exited = process.try_wait().is_ok_and(|status| status.is_some());
                exited
            },
        );
        let server = Self {
            root,
            _process: process,
        };
        match listening {
            Ok(()) if !exited => Ok(server),
            Ok(()) => Err(format!(
                "session-test-gateway: {} exited before it listened on {address}; its log:\n{}",
                program.display(),
                server.log()
            )),
            Err(err) => Err(format!(
                "session-test-gateway: {err}; its log:\n{}",
                server.log()
            )),
        }
    }

    /// What the server logged so far: its output, and nginx's error log (a
    /// file of its own, since the server runs as another user than the one
    /// who opened the output when the tests run as root).
    pub(crate) fn log(&self) -> String {
        ["server.log", "error.log"]
            .iter()
            .filter_map(|name| fs::read_to_string(self.root.join(name)).ok())
            .collect::<Vec<_>>()
            .join("\n")
    }
}
