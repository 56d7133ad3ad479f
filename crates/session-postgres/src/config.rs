//! Connection settings: the database URL, its TLS mode, the pool's limits,
//! how statements reach the server (directly or through a transaction
//! pooler), and the bounds on each statement.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use tokio_postgres::config::TargetSessionAttrs;

use crate::tls::{self, Roots};

/// How connections use TLS, as libpq's `sslmode` URL parameter spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, without checking its certificate; plain
    /// otherwise. libpq's default, and ours when the URL has no `sslmode`.
    /// `sslmode=allow` is read as this too.
    Prefer,
    /// TLS always, without checking the server's certificate, unless
    /// `sslrootcert` is given, which makes it check as [`SslMode::VerifyCa`]
    /// does (as libpq does).
    Require,
    /// TLS always, and the server's certificate must chain to a root from the
    /// `sslrootcert` file, which this mode requires; the host name is not checked.
    VerifyCa,
    /// As [`SslMode::VerifyCa`], and the certificate must also name the host connected to.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "disable" => Self::Disable,
            "allow" | "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }

    const fn name(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the store sends its statements: the one setting that must match what
/// is between the service and PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Statements {
    /// Each connection prepares a statement once, under a name, and runs it
    /// again by that name: one round trip a statement. Needs every message
    /// of a connection to reach the same server session, so a direct
    /// connection, or a pooler in session mode. The default.
    #[default]
    Cached,
    /// Every store call is one transaction (`BEGIN`, the statement,
    /// `COMMIT`), its statement prepared and closed inside it, and nothing
    /// is left on the server session between calls: for a transaction
    /// pooler (PgBouncer with `pool_mode = transaction` before 1.21, which
    /// hands each transaction any server connection), at two more round
    /// trips a call. A direct connection works this way too, only slower.
    PerTransaction,
}

impl Statements {
    /// Parses `cached` or `per-transaction`.
    #[must_use]
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "cached" => Some(Self::Cached),
            "per-transaction" => Some(Self::PerTransaction),
            _ => None,
        }
    }

    /// The setting's name, as [`parse`](Self::parse) reads it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Cached => "cached",
            Self::PerTransaction => "per-transaction",
        }
    }
}

impl fmt::Display for Statements {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A database URL that cannot be used.
///
/// Never holds text from the URL other than the `sslrootcert` path: a URL
/// mistyped with an unencoded `?`, `#` or `/` in its password puts part of
/// that password where a parameter's name or value would be, so the messages
/// name parameters only from libpq's own list.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Only the URL form is accepted, not libpq's `key=value` form.
    #[error("the database URL must start with postgres:// or postgresql://")]
    NotAUrl,
    /// The driver rejected the URL (an unknown parameter, a bad port, ...);
    /// what it said, reduced to names libpq defines.
    #[error("invalid database URL: {0}")]
    Invalid(String),
    /// `target_session_attrs` asks for a server the store cannot use.
    #[error(
        "invalid target_session_attrs: expected any or read-write \
         (the store writes, so with several hosts use read-write to find the primary)"
    )]
    TargetSessionAttrs,
    /// `sslmode` has a value libpq does not define.
    #[error("invalid sslmode: expected disable, allow, prefer, require, verify-ca or verify-full")]
    SslMode,
    /// The `sslrootcert` file cannot be read as PEM certificates.
    #[error("cannot read root certificates from {path}: {reason}")]
    RootCertificateFile {
        /// The file named by `sslrootcert`.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// No usable root certificate was found to verify the server against.
    #[error(
        "no usable root certificate in {0}: set sslrootcert to a PEM file with the server's CA"
    )]
    NoRootCertificates(String),
    /// `sslmode=verify-ca` without `sslrootcert`: it checks the chain but not
    /// the host name, so with the system's public roots any publicly trusted
    /// certificate, for any name, would be accepted. libpq refuses it too.
    #[error(
        "sslmode=verify-ca needs sslrootcert=<PEM file with the database's CA>: it does not check \
         the host name, so the system's public roots would accept any publicly trusted \
         certificate for any name. Give the CA file, or use sslmode=verify-full"
    )]
    VerifyCaWithoutRoots,
    /// `sslrootcert=system` with a mode below `verify-full`: public roots only
    /// authenticate a server together with its host name (libpq 16 refuses
    /// this as well).
    #[error(
        "sslrootcert=system needs sslmode=verify-full (sslmode={0} was given): the system's \
         public roots authenticate a server only together with its host name"
    )]
    SystemRootsBelowVerifyFull(SslMode),
    /// rustls refused the TLS settings.
    #[error("cannot set up TLS: {0}")]
    Tls(#[source] rustls::Error),
}

/// Where to connect and how: the parsed database URL with its TLS settings,
/// and the connection pool's size and timeouts.
///
/// Built from a libpq-style URL, for example
/// `postgres://app:secret@db.internal:5432/app?sslmode=verify-full&sslrootcert=/etc/ssl/db-ca.pem`.
/// Every parameter tokio-postgres knows is honoured (`connect_timeout`,
/// `keepalives_idle`, `tcp_user_timeout`, `application_name`, ...), plus
/// `sslmode` (all of libpq's values) and `sslrootcert` (a PEM file, or
/// `system` for the operating system's roots).
///
/// Without `sslmode` the connection uses TLS when the server offers it and
/// checks nothing (`prefer`, libpq's default). The rules on roots follow
/// libpq's: `verify-ca` needs an `sslrootcert` file, since it does not check
/// the host name and public roots would then accept any public certificate;
/// `sslrootcert=system` implies `verify-full` and is refused with any weaker
/// mode; `require` with an `sslrootcert` file checks the chain as
/// `verify-ca` does. One difference: `verify-full` without `sslrootcert`
/// uses the system's roots (libpq would look for `~/.postgresql/root.crt`).
///
/// **Several hosts**, as libpq takes them, for failover:
/// `postgres://app@db-a:5432,db-b:5432/app?target_session_attrs=read-write`.
/// Each new connection tries the hosts in order (from a random one with
/// `load_balance_hosts=random`) and keeps the first that accepts it; with
/// `target_session_attrs=read-write` a server that does not accept writes (a
/// standby) is passed over, so after a failover connections go to whichever
/// host was promoted. `target_session_attrs` may be `any` (the default) or
/// `read-write`; the store writes, so libpq's read-only and standby values
/// are refused. Each host gets the whole [`connect_timeout`](Self::connect_timeout),
/// so one that does not answer cannot keep the next from being tried; a
/// connection that fails everywhere says what happened at each host. With
/// `verify-full`, each host's certificate must name that host.
#[derive(Clone)]
pub struct PgConfig {
    pub(crate) postgres: tokio_postgres::Config,
    pub(crate) ssl_mode: SslMode,
    /// `None` exactly when `ssl_mode` is `Disable`.
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    pub(crate) pool_size: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) checkout_timeout: Duration,
    pub(crate) change_log_heartbeat: Duration,
    pub(crate) change_retention: Duration,
    pub(crate) migration_lock_timeout: Duration,
    pub(crate) trust_schema_owner: bool,
    pub(crate) wake_ups: bool,
    pub(crate) statements: Statements,
    pub(crate) write_timeout: Duration,
    pub(crate) read_timeout: Duration,
    pub(crate) lock_timeout: Duration,
    /// Where what needs a session of its own goes (LISTEN, migrations):
    /// `None` for the same place as everything else.
    pub(crate) direct: Option<Box<PgConfig>>,
}

impl PgConfig {
    /// The default number of pooled connections.
    pub const DEFAULT_POOL_SIZE: usize = 10;
    /// The default limit for opening one connection.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// The default limit for obtaining a working connection from the pool.
    pub const DEFAULT_CHECKOUT_TIMEOUT: Duration = Duration::from_secs(10);
    /// The default silence after which the change log's listener checks its connection.
    pub const DEFAULT_CHANGE_LOG_HEARTBEAT: Duration = Duration::from_secs(15);
    /// The default age after which change-log entries may be pruned: a day.
    pub const DEFAULT_CHANGE_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
    /// The default longest wait for the migration lock another process holds.
    pub const DEFAULT_MIGRATION_LOCK_TIMEOUT: Duration = Duration::from_secs(60);
    /// The default `statement_timeout` of a write.
    pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
    /// The default `statement_timeout` of a read.
    pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(5);
    /// The default `lock_timeout` of every statement.
    pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(2);
    /// Idle time before the first TCP keepalive probe, when the URL sets no
    /// `keepalives_idle` (the kernel's own default is two hours).
    pub const DEFAULT_KEEPALIVES_IDLE: Duration = Duration::from_secs(30);
    /// Time between TCP keepalive probes, when the URL sets no `keepalives_interval`.
    pub const DEFAULT_KEEPALIVES_INTERVAL: Duration = Duration::from_secs(10);
    /// Unanswered keepalive probes before the connection is dropped, when the
    /// URL sets no `keepalives_count`.
    pub const DEFAULT_KEEPALIVES_COUNT: u32 = 3;
    /// How long sent data may go unacknowledged before the kernel drops the
    /// connection, when the URL sets no `tcp_user_timeout`.
    pub const DEFAULT_TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

    /// Parses a `postgres://` or `postgresql://` URL and loads the root
    /// certificates its TLS mode needs.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] if the URL is malformed, names an unknown parameter,
    /// `sslmode` or `target_session_attrs`, or its root certificates cannot
    /// be loaded.
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        let (driver_url, own) = split_own_params(url)?;
        let mut postgres = tokio_postgres::Config::from_str(&driver_url)
            .map_err(|err| ConfigError::Invalid(driver_reason(&err)))?;
        check_host_names(&postgres)?;
        socket_defaults(&mut postgres, &driver_url);
        if let Some(value) = own.target_session_attrs {
            postgres.target_session_attrs(match value.as_str() {
                "any" => TargetSessionAttrs::Any,
                "read-write" => TargetSessionAttrs::ReadWrite,
                _ => return Err(ConfigError::TargetSessionAttrs),
            });
        }
        let system_roots = own.root_cert.as_deref() == Some("system");
        let ssl_mode = match own.ssl_mode {
            Some(value) => SslMode::parse(&value).ok_or(ConfigError::SslMode)?,
            // As libpq 16: asking for the system's roots asks for verify-full.
            None if system_roots => SslMode::VerifyFull,
            None => SslMode::Prefer,
        };
        if system_roots && ssl_mode != SslMode::VerifyFull {
            return Err(ConfigError::SystemRootsBelowVerifyFull(ssl_mode));
        }
        if ssl_mode == SslMode::VerifyCa && own.root_cert.is_none() {
            return Err(ConfigError::VerifyCaWithoutRoots);
        }
        let roots_given = own.root_cert.is_some();
        let roots = match own.root_cert.as_deref() {
            None | Some("system") => Roots::System,
            Some(path) => Roots::File(PathBuf::from(path)),
        };
        let (driver_mode, verification) = match ssl_mode {
            SslMode::Disable => (tokio_postgres::config::SslMode::Disable, None),
            SslMode::Prefer => (
                tokio_postgres::config::SslMode::Prefer,
                Some(tls::Verification::None),
            ),
            // libpq: given root certificates, `require` verifies the chain.
            SslMode::Require if roots_given => (
                tokio_postgres::config::SslMode::Require,
                Some(tls::Verification::Chain(roots)),
            ),
            SslMode::Require => (
                tokio_postgres::config::SslMode::Require,
                Some(tls::Verification::None),
            ),
            SslMode::VerifyCa => (
                tokio_postgres::config::SslMode::Require,
                Some(tls::Verification::Chain(roots)),
            ),
            SslMode::VerifyFull => (
                tokio_postgres::config::SslMode::Require,
                Some(tls::Verification::ChainAndName(roots)),
            ),
        };
        postgres.ssl_mode(driver_mode);
        let tls = verification
            .map(|verification| tls::client_config(&verification).map(Arc::new))
            .transpose()?;
        Ok(Self {
            postgres,
            ssl_mode,
            tls,
            pool_size: Self::DEFAULT_POOL_SIZE,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            checkout_timeout: Self::DEFAULT_CHECKOUT_TIMEOUT,
            change_log_heartbeat: Self::DEFAULT_CHANGE_LOG_HEARTBEAT,
            change_retention: Self::DEFAULT_CHANGE_RETENTION,
            migration_lock_timeout: Self::DEFAULT_MIGRATION_LOCK_TIMEOUT,
            trust_schema_owner: false,
            wake_ups: true,
            statements: Statements::Cached,
            write_timeout: Self::DEFAULT_WRITE_TIMEOUT,
            read_timeout: Self::DEFAULT_READ_TIMEOUT,
            lock_timeout: Self::DEFAULT_LOCK_TIMEOUT,
            direct: None,
        })
    }

    /// Sets how statements are sent (default [`Statements::Cached`]);
    /// [`Statements::PerTransaction`] behind a transaction pooler.
    #[must_use]
    pub fn statements(mut self, statements: Statements) -> Self {
        self.statements = statements;
        self
    }

    /// Sets where what needs a server session of its own goes, when the
    /// main URL reaches a transaction pooler: the LISTEN of the change log's
    /// wake-ups, and migrations. `direct` is parsed from another URL with
    /// [`from_url`](Self::from_url) (its own TLS settings and password);
    /// only its connection settings are used, never its pool or timeouts.
    /// Without one, both use the main URL: migrations take a lock that
    /// survives transaction pooling, and wake-ups are probed and fall back
    /// to polling when LISTEN does not deliver.
    #[must_use]
    pub fn direct(mut self, direct: Self) -> Self {
        self.direct = Some(Box::new(direct.statements(Statements::Cached)));
        self
    }

    /// Sets PostgreSQL's `statement_timeout` for each write (insert,
    /// revocations, last-seen marks, pruning; default 5 s, at least 1 ms).
    /// A write past it is cancelled by the server, changes nothing, and
    /// fails as unavailable. The store also stops waiting for an answer at
    /// this plus a second, and closes the connection: a server or network
    /// gone silent cannot send the cancellation.
    #[must_use]
    pub fn write_timeout(mut self, limit: Duration) -> Self {
        self.write_timeout = limit.max(Duration::from_millis(1));
        self
    }

    /// Sets PostgreSQL's `statement_timeout` for each read (lookups, lists,
    /// the warm's pages, the change log; default 5 s, at least 1 ms), with
    /// the same client-side bound as [`write_timeout`](Self::write_timeout).
    #[must_use]
    pub fn read_timeout(mut self, limit: Duration) -> Self {
        self.read_timeout = limit.max(Duration::from_millis(1));
        self
    }

    /// Sets PostgreSQL's `lock_timeout` for each statement (default 2 s, at
    /// least 1 ms): how long a write waits for a row or table lock other SQL
    /// holds (an operator's open transaction, a `LOCK TABLE`) before it
    /// fails as unavailable, rather than queueing every other write behind
    /// it up to the statement timeout.
    #[must_use]
    pub fn lock_timeout(mut self, limit: Duration) -> Self {
        self.lock_timeout = limit.max(Duration::from_millis(1));
        self
    }

    /// Sets how many connections the pool keeps at most (at least 1).
    #[must_use]
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// Sets the limit for opening one connection: TCP connect, TLS handshake
    /// and authentication. With several hosts, each host tried gets this long.
    /// Also bounds the liveness check of a pooled connection.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the limit for obtaining a working connection, waiting for a free
    /// one and replacing broken ones included. When it passes, the operation
    /// fails as unavailable instead of waiting on.
    #[must_use]
    pub fn checkout_timeout(mut self, timeout: Duration) -> Self {
        self.checkout_timeout = timeout;
        self
    }

    /// Sets how long the change log's listening connection may stay silent before a
    /// round trip checks it (at least 10 ms). A connection that died without
    /// closing (a host or network gone) delivers nothing and reports no
    /// error; the check finds it, so a stale cache is noticed within this
    /// time plus the connect timeout rather than TCP's hours.
    #[must_use]
    pub fn change_log_heartbeat(mut self, every: Duration) -> Self {
        self.change_log_heartbeat = every.max(Duration::from_millis(10));
        self
    }

    /// Sets the longest wait for the migration lock (default a minute):
    /// any role that can connect can take the advisory lock migrators share,
    /// and a start must not wait on it for ever.
    #[must_use]
    pub fn migration_lock_timeout(mut self, limit: Duration) -> Self {
        self.migration_lock_timeout = limit;
        self
    }

    /// Lets [`migrate`](crate::PgSessionStore::migrate) use an existing
    /// `session` schema owned by another role (default: refused, since its
    /// owner can change the triggers that log every change).
    #[must_use]
    pub fn trust_schema_owner(mut self, trust: bool) -> Self {
        self.trust_schema_owner = trust;
        self
    }

    /// Sets how long change-log entries are kept (default a day, at least a
    /// second). A follower that cannot read the log for longer than this
    /// loads every session again instead of resuming.
    #[must_use]
    pub fn change_retention(mut self, keep: Duration) -> Self {
        self.change_retention = keep.max(Duration::from_secs(1));
        self
    }

    /// Sets whether followers of the change log listen for its
    /// notifications (default on). Off, no LISTEN connection is opened and
    /// followers learn of changes only when they poll: for a server reached
    /// through a pooler that cannot LISTEN, such as PgBouncer in transaction
    /// pooling mode. The triggers still notify; nobody hears it.
    #[must_use]
    pub fn wake_ups(mut self, listen: bool) -> Self {
        self.wake_ups = listen;
        self
    }

    /// Sets the password, replacing any the URL held: for a password kept
    /// out of the URL (libpq's `PGPASSWORD`, a password file), so it need
    /// not appear in a command line or a URL that may be logged.
    #[must_use]
    pub fn password(mut self, password: impl AsRef<[u8]>) -> Self {
        self.postgres.password(password);
        self
    }

    /// How statements are sent.
    #[must_use]
    pub const fn statements_mode(&self) -> Statements {
        self.statements
    }

    /// Whether a direct URL is set for what needs a session of its own.
    #[must_use]
    pub const fn has_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Whether a password is set, by the URL or [`password`](Self::password).
    #[must_use]
    pub fn has_password(&self) -> bool {
        self.postgres.get_password().is_some()
    }

    /// The URL's TLS mode.
    #[must_use]
    pub const fn ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }
}

/// Shows where it connects, never the password.
impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConfig")
            .field("hosts", &self.postgres.get_hosts())
            .field("ports", &self.postgres.get_ports())
            .field("user", &self.postgres.get_user())
            .field("dbname", &self.postgres.get_dbname())
            .field(
                "target_session_attrs",
                &self.postgres.get_target_session_attrs(),
            )
            .field("ssl_mode", &self.ssl_mode)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("checkout_timeout", &self.checkout_timeout)
            .field("change_log_heartbeat", &self.change_log_heartbeat)
            .field("change_retention", &self.change_retention)
            .field("migration_lock_timeout", &self.migration_lock_timeout)
            .field("trust_schema_owner", &self.trust_schema_owner)
            .field("wake_ups", &self.wake_ups)
            .field("statements", &self.statements)
            .field("write_timeout", &self.write_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("lock_timeout", &self.lock_timeout)
            .field("direct", &self.direct)
            .finish_non_exhaustive()
    }
}

/// Every connection parameter libpq defines: the only parameter names an
/// error may show, since any other name in a URL may be a piece of a
/// password whose reserved characters were not percent-encoded.
const LIBPQ_PARAMETERS: &[&str] = &[
    "application_name",
    "channel_binding",
    "client_encoding",
    "connect_timeout",
    "dbname",
    "fallback_application_name",
    "gssdelegation",
    "gssencmode",
    "gsslib",
    "host",
    "hostaddr",
    "keepalives",
    "keepalives_count",
    "keepalives_idle",
    "keepalives_interval",
    "load_balance_hosts",
    "max_protocol_version",
    "min_protocol_version",
    "options",
    "passfile",
    "password",
    "port",
    "replication",
    "require_auth",
    "requirepeer",
    "requiressl",
    "service",
    "sslcert",
    "sslcertmode",
    "sslcompression",
    "sslcrl",
    "sslcrldir",
    "sslkey",
    "sslmode",
    "sslnegotiation",
    "sslpassword",
    "sslrootcert",
    "sslsni",
    "ssl_max_protocol_version",
    "ssl_min_protocol_version",
    "target_session_attrs",
    "tcp_user_timeout",
    "user",
];

/// Keepalives and a TCP user timeout for a URL that sets none, so a
/// connection whose peer went silent (a host or network gone, a stalled
/// proxy) is dropped by the kernel within a minute rather than hours. What
/// the URL sets is kept, `keepalives=0` included.
fn socket_defaults(postgres: &mut tokio_postgres::Config, url: &str) {
    let query = url.split_once('?').map_or("", |(_, query)| query);
    let given = |name: &str| {
        query
            .split('&')
            .any(|pair| pair.split_once('=').map_or(pair, |(key, _)| key) == name)
    };
    if !given("keepalives_idle") {
        postgres.keepalives_idle(PgConfig::DEFAULT_KEEPALIVES_IDLE);
    }
    if !given("keepalives_interval") {
        postgres.keepalives_interval(PgConfig::DEFAULT_KEEPALIVES_INTERVAL);
    }
    // libpq's `keepalives_count` is the driver's `keepalives_retries`.
    if !given("keepalives_retries") && !given("keepalives_count") {
        postgres.keepalives_retries(PgConfig::DEFAULT_KEEPALIVES_COUNT);
    }
    if !given("tcp_user_timeout") {
        postgres.tcp_user_timeout(PgConfig::DEFAULT_TCP_USER_TIMEOUT);
    }
}

/// What the driver found wrong with a URL, without repeating any of it: its
/// messages quote an unknown parameter's name and the character it stumbled
/// on, either of which may come from a password.
fn driver_reason(err: &tokio_postgres::Error) -> String {
    let cause = std::error::Error::source(err).map(ToString::to_string);
    let cause = cause.as_deref().unwrap_or_default();
    let named = |prefix: &str| {
        cause
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix('`'))
            .and_then(|name| LIBPQ_PARAMETERS.iter().find(|known| **known == name))
    };
    if let Some(name) = named("invalid value for option `") {
        format!("invalid value for parameter {name}")
    } else if let Some(name) = named("unknown option `") {
        format!("parameter {name} is not supported")
    } else if cause.starts_with("unknown option `") {
        "a parameter libpq does not define (its name is not shown: in a malformed URL it may \
         be part of the password)"
            .to_owned()
    } else {
        "it cannot be parsed (not shown: it may hold a password); percent-encode `@`, `:`, \
         `/`, `?`, `#` and `%` in the user name and password"
            .to_owned()
    }
}

/// Refuses a host name no host has. The driver ends the credentials at the
/// first `@`, so a password with an unencoded `@` leaves its tail in the
/// host name, which connection errors and logs then show.
fn check_host_names(config: &tokio_postgres::Config) -> Result<(), ConfigError> {
    let plausible = |name: &str| {
        name.bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b".-_:%[]".contains(&byte))
    };
    for host in config.get_hosts() {
        if let tokio_postgres::config::Host::Tcp(name) = host
            && !plausible(name)
        {
            return Err(ConfigError::Invalid(
                "a host name holds characters no host name has (not shown: it may hold part of \
                 the password); percent-encode `@`, `:`, `/`, `?`, `#` and `%` in the user name \
                 and password"
                    .to_owned(),
            ));
        }
    }
    Ok(())
}

/// The URL parameters read here rather than by the driver, decoded.
#[derive(Default)]
struct OwnParams {
    ssl_mode: Option<String>,
    root_cert: Option<String>,
    target_session_attrs: Option<String>,
}

/// Takes `sslmode`, `sslrootcert` and `target_session_attrs` out of the
/// URL's query: tokio-postgres knows neither `verify-ca`/`verify-full` nor
/// root certificates, and would accept a `target_session_attrs` the store
/// cannot work with, so they are handled here. The rest of the URL, hosts
/// and ports included, is left to the driver as it was.
fn split_own_params(url: &str) -> Result<(String, OwnParams), ConfigError> {
    let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    else {
        return Err(ConfigError::NotAUrl);
    };
    // As the driver reads it: the credentials run to the first `@`, so a `?`
    // before it is part of the password, not the start of the query.
    let authority = url.len() - rest.len() + rest.find('@').map_or(0, |at| at + 1);
    let Some(query_start) = url[authority..].find('?').map(|at| authority + at) else {
        return Ok((url.to_owned(), OwnParams::default()));
    };
    let (base, query) = (&url[..query_start], &url[query_start + 1..]);
    let mut params = OwnParams::default();
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = || percent_decode_str(value).decode_utf8_lossy().into_owned();
        match key {
            "sslmode" => params.ssl_mode = Some(decoded()),
            "sslrootcert" => params.root_cert = Some(decoded()),
            "target_session_attrs" => params.target_session_attrs = Some(decoded()),
            _ => kept.push(pair),
        }
    }
    let driver_url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((driver_url, params))
}
