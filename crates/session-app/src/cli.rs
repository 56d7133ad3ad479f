//! Command-line interface: `serve`, `migrate` and `revoke-idle` run against
//! the database (`revoke-idle` is fleet-wide maintenance, which running
//! instances learn of through PostgreSQL's change log, and a SQLite file's
//! lock refuses while a server holds it); the session commands are clients
//! of a running service's HTTP API, so the service's cache stays the single
//! truth.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use session_core::RevocationReason;
use session_core::port::store::RetentionAction;
use uuid::Uuid;

use crate::ConfigError;
use crate::store::{DatabaseUrl, DatabaseUrlParser, PASSWORD_ENV, PgPoolArgs};
use crate::telemetry::{self, LogFormat};

/// Opaque, revoke-only login sessions: the service and its operator CLI.
#[derive(Debug, Parser)]
#[command(name = "session-app", version, propagate_version = true)]
pub struct Cli {
    /// Log line format.
    #[arg(
        long,
        env = "SESSION_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,

    /// Which log lines to write, in `tracing` filter syntax (for example
    /// `info`, or `warn,session_http=info` for request lines).
    #[arg(long, env = "SESSION_LOG", default_value = "info", global = true)]
    pub log: String,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// A `session-app` command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service.
    Serve(Box<ServeArgs>),
    /// Apply pending database migrations, print what was applied, and exit.
    Migrate(DatabaseArgs),
    /// Create a session for an account and print its token (shown only once).
    Create(CreateArgs),
    /// Resolve a token read from stdin (never from the command line, so it
    /// stays out of shell history and `ps`).
    Resolve(ClientArgs),
    /// Revoke one session.
    Revoke(RevokeArgs),
    /// Revoke every active session of an account, optionally except one.
    RevokeAll(RevokeAllArgs),
    /// List an account's sessions, newest first.
    List(ListArgs),
    /// Revoke sessions not seen for a while, in batches, printing each
    /// batch's count. Works on the database, as `migrate` does: on
    /// PostgreSQL running instances learn of the revocations through the
    /// change log; a SQLite file is refused while a server holds it.
    RevokeIdle(RevokeIdleArgs),
    /// Print session events (created, revoked with its reason) after a
    /// cursor, one a line; with `--follow`, keep waiting for more.
    Events(EventsArgs),
    /// Print the fleet-wide "not before" mark in force and its sweep's
    /// progress; with `--at`, raise it first: every session created before
    /// it is refused by every instance from then on, and revoked in the
    /// background with reason `admin`.
    NotBefore(NotBeforeArgs),
}

/// Where the sessions are stored.
#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// `postgres://…` for PostgreSQL, or `sqlite://PATH` for a SQLite file.
    /// Without it, sessions are kept in the SQLite file `./data/sessions.db`.
    /// Keep a password out of it: every local user can read a command line,
    /// so give the password in `PGPASSWORD` or the whole URL in a file
    /// (`--database-url-file`).
    #[arg(long, env = "DATABASE_URL", value_name = "URL", hide_env_values = true,
        value_parser = DatabaseUrlParser)]
    pub database_url: Option<DatabaseUrl>,

    /// File holding the database URL, for a URL with a password in it (one
    /// trailing line break is ignored). Instead of `--database-url`.
    #[arg(
        long,
        env = "DATABASE_URL_FILE",
        value_name = "PATH",
        conflicts_with = "database_url"
    )]
    pub database_url_file: Option<PathBuf>,

    /// PostgreSQL connection pool settings.
    #[command(flatten)]
    pub pool: PgPoolArgs,
}

/// Options of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The database.
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Address to listen on. Without an API key only a loopback address is allowed.
    #[arg(long, env = "SESSION_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Do not apply pending migrations at start (apply them with `migrate`).
    #[arg(long, env = "SESSION_NO_MIGRATE")]
    pub no_migrate: bool,

    /// File of API keys, one per line (several allow rotation): a bare
    /// `KEY`, which may do anything, or `NAME SCOPES KEY`, with `SCOPES`
    /// `all` or a comma-separated list of `read`, `events` and `write`
    /// (README, "API keys"). The `/v1` routes then require
    /// `Authorization: Bearer <key>`. A single key can also be given in the
    /// environment variable `SESSION_API_KEY`.
    #[arg(long, env = "SESSION_API_KEY_FILE", value_name = "PATH")]
    pub api_key_file: Option<PathBuf>,

    /// How long in-flight requests may take to finish after SIGTERM or Ctrl-C.
    #[arg(long, env = "SESSION_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,

    /// The most a new connection may take to send its first byte. Past it
    /// the connection is closed: clients send their request as soon as
    /// they connect, so a socket still silent by then is not a client
    /// about to speak, and it leaves the pending pool
    /// (`--max-pending-connections`) to others. At most
    /// `--header-read-timeout`, which bounds the whole first head anyway.
    #[arg(long, env = "SESSION_FIRST_BYTE_TIMEOUT", default_value = "2s",
        value_parser = positive_duration)]
    pub first_byte_timeout: Duration,

    /// The most a client may take to send a request head: from the
    /// connection opening, or from the head's first byte on a kept-alive
    /// connection. Past it the connection is closed, so a client that sends
    /// a head slowly (slowloris) holds a place no longer.
    #[arg(long, env = "SESSION_HEADER_READ_TIMEOUT", default_value = "10s",
        value_parser = positive_duration)]
    pub header_read_timeout: Duration,

    /// The most a request may take from the first byte of its head until
    /// its response is ready: reading the head, waiting for a connection
    /// slot, reading the body (a slow upload ends here) and handling it.
    /// A request the service has not answered by then is answered 503
    /// `timeout` and its connection closed; one whose body is still
    /// arriving is closed without an answer. At least `--header-read-timeout`.
    #[arg(long, env = "SESSION_REQUEST_TIMEOUT", default_value = "30s",
        value_parser = positive_duration)]
    pub request_timeout: Duration,

    /// How long a kept-alive connection may wait for its next request
    /// before it is closed (and how long a response may wait for its client
    /// to read it). Keep it longer than the idle timeout of the callers'
    /// connection pools, so they close first and never send on a
    /// connection as it closes.
    #[arg(long, env = "SESSION_IDLE_TIMEOUT", default_value = "120s",
        value_parser = positive_duration)]
    pub idle_timeout: Duration,

    /// Client connections served at once. A connection takes a slot only
    /// once it has sent a whole request head; with every slot taken, the
    /// client waits and takes the slot of a kept-alive connection as soon
    /// as one is idle (which is closed), or of one that closes. With
    /// `--max-pending-connections`, it must fit the open-file limit
    /// (`ulimit -n`): the start fails otherwise.
    #[arg(long, env = "SESSION_MAX_CONNECTIONS", default_value_t = 512,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Connections accepted that hold no slot yet, at once: those that
    /// have not sent a whole request head, and those waiting for a slot.
    /// When it is full, a new connection closes the one that has gone
    /// longest without sending a whole head, so sockets that never speak
    /// cannot keep new clients out.
    #[arg(long, env = "SESSION_MAX_PENDING_CONNECTIONS", default_value_t = 256,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub max_pending_connections: u32,

    /// The session cache: `map` (session-core's sharded hash map, the
    /// default), `moka`, or `compact`. `map` and `moka` keep every active
    /// session's whole record; `map` resolves several times faster and needs
    /// under half the memory per session (docs/BENCHMARKS.md). `compact`
    /// keeps an exact index of every active session's id and account (about
    /// 54 bytes a session) and whole records only in a bounded cache
    /// (`--record-cache-mib`): resolve and forward auth then answer the id
    /// and the account alone (README, "Cache modes").
    #[arg(long, env = "SESSION_CACHE", value_enum, default_value = "map")]
    pub cache: CacheKind,

    /// With `--cache compact`: the most memory, in MiB, the cache of whole
    /// session records may take (each record counted with its text and the
    /// cache's own bookkeeping, about 550 bytes without text). Records past
    /// it are evicted and read from the store when asked for again.
    #[arg(long, env = "SESSION_RECORD_CACHE_MIB", default_value_t = 64)]
    pub record_cache_mib: u64,

    /// With several instances on one PostgreSQL: the most this instance's
    /// cache may lag behind the change log while it reports ready. Every
    /// revocation committed longer ago than this is in force here; past it,
    /// `/readyz` answers 503 with the lag. Also the longest a cache miss
    /// waits for this instance to catch up with the change log before it is
    /// answered 503 `unavailable`.
    #[arg(long, env = "SESSION_MAX_STALENESS", default_value = "2s", value_parser = humantime::parse_duration)]
    pub max_staleness: Duration,

    /// With several instances on one PostgreSQL: how often the change log
    /// is read when no notification wakes this instance earlier.
    #[arg(long, env = "SESSION_LOG_POLL_INTERVAL", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub log_poll_interval: Duration,

    /// Record when each session was last resolved, to the minute, and show
    /// it as `last_seen_at` in `GET` and list answers. Resolves only mark
    /// the session in memory; the marks are written to the database in
    /// batches every `--last-seen-flush-interval`.
    #[arg(long, env = "SESSION_LAST_SEEN")]
    pub last_seen: bool,

    /// With `--last-seen`: how often the marks are written to the database.
    /// `last_seen_at` is up to this much behind.
    #[arg(long, env = "SESSION_LAST_SEEN_FLUSH_INTERVAL", default_value = "10s",
        value_parser = positive_duration)]
    pub last_seen_flush_interval: Duration,

    /// With `--last-seen`: marks held between flushes at most (one per
    /// session per minute, about 24 bytes each). Past it, marks are dropped
    /// and counted in `session_last_seen_marks_dropped_total`.
    #[arg(long, env = "SESSION_LAST_SEEN_QUEUE", default_value_t = 65_536,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub last_seen_queue: u32,

    /// Cap each account's active sessions at this many (off by default).
    /// A login past the cap evicts or is refused, as
    /// `--session-limit-policy` says; concurrent logins on several instances
    /// never leave more. Give every instance on one database the same cap:
    /// one without it creates sessions without counting.
    #[arg(long, env = "SESSION_MAX_SESSIONS_PER_ACCOUNT", value_name = "N")]
    pub max_sessions_per_account: Option<std::num::NonZeroU32>,

    /// With `--max-sessions-per-account`: `evict-least-recently-seen` (the
    /// default) revokes the sessions least recently seen (never-seen ones
    /// by creation time) with reason `limit`, in the login's transaction;
    /// `refuse` answers the login 409 `session_limit_reached` and changes
    /// nothing. Last-seen times count only with `--last-seen`, as flushed.
    #[arg(
        long,
        env = "SESSION_LIMIT_POLICY",
        value_enum,
        default_value = "evict-least-recently-seen",
        requires = "max_sessions_per_account"
    )]
    pub session_limit_policy: LimitPolicyArg,

    /// Refuse every session created before this instant (RFC 3339, such as
    /// `2026-12-06T22:00:00Z`), whatever the database holds, and write it
    /// back to the database's not-before mark at the first warm if that is
    /// earlier. The mark is kept in the database (raise it with `not-before
    /// --at`); this is for when every instance was down while an older
    /// backup was restored, so nothing remembers it. Judged by each session
    /// id's own timestamp (UUIDv7, to the millisecond), with no store read.
    /// Off by default.
    #[arg(long, env = "SESSION_SESSIONS_NOT_BEFORE", value_name = "RFC3339",
        value_parser = parse_instant)]
    pub sessions_not_before: Option<time::OffsetDateTime>,
    /// Revoke active sessions not seen for this long (for example `90d`),
    /// with reason `idle`; never seen: created that long ago. Needs
    /// `--last-seen`, and at least ten times `--last-seen-flush-interval`
    /// plus a minute (the most a stored last-seen time may be behind, which
    /// is added to this). Off by default.
    #[arg(long, env = "SESSION_REVOKE_IDLE_AFTER", value_name = "DURATION",
        value_parser = positive_duration)]
    pub revoke_idle_after: Option<Duration>,

    /// Apply `--retention-action` to revoked sessions revoked longer ago
    /// than this (for example `30d`). Off by default: revoked sessions are
    /// kept, with their user agent and IP address.
    #[arg(long, env = "SESSION_RETAIN_REVOKED_FOR", value_name = "DURATION",
        value_parser = positive_duration)]
    pub retain_revoked_for: Option<Duration>,

    /// With `--retain-revoked-for`: `delete` the revoked sessions, or
    /// `erase` their user agent and IP address and keep the rest (times,
    /// reason, label) for history.
    #[arg(
        long,
        env = "SESSION_RETENTION_ACTION",
        value_enum,
        default_value = "delete"
    )]
    pub retention_action: RetentionActionArg,

    /// How often idle revocation and retention each run a round, the first
    /// at start. With several instances on one PostgreSQL, each batch runs
    /// in one instance at a time.
    #[arg(long, env = "SESSION_MAINTENANCE_INTERVAL", default_value = "10m",
        value_parser = positive_duration)]
    pub maintenance_interval: Duration,
    /// Subscribers of `GET /v1/events` (streams and long-polls) served at
    /// once; past it a subscriber is answered 503 `too_many_subscribers`
    /// with `Retry-After`.
    #[arg(long, env = "SESSION_MAX_EVENT_SUBSCRIBERS", default_value_t = 64)]
    pub max_event_subscribers: u32,

    /// How long events are kept (by their time), for example `7d`: a
    /// subscriber whose cursor is older gets 410 `cursor_expired` and lists
    /// again. Pruned every ten minutes, in batches.
    #[arg(long, env = "SESSION_EVENT_RETENTION", default_value = "7d",
        value_parser = positive_duration)]
    pub event_retention: Duration,

    /// How `/v1/forward-auth` finds the token and names the identity.
    #[command(flatten)]
    pub forward_auth: ForwardAuthArgs,

    /// Rows read per query while warming the cache.
    #[arg(long, env = "SESSION_WARM_PAGE_SIZE", default_value_t = 10_000,
        value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub warm_page_size: u32,

    /// Export traces over OTLP/HTTP (protobuf) to this collector base URL
    /// (`/v1/traces` is appended), for example `http://127.0.0.1:4318`.
    /// Without it, the standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` turns export on; with neither, spans are
    /// not exported.
    /// Parsed at start rather than by clap, whose error would quote the
    /// value (and any credentials in it).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

/// Options of `/v1/forward-auth`, the check gateways make before each request.
#[derive(Debug, Args)]
pub struct ForwardAuthArgs {
    /// The cookie forward auth reads the token from (after
    /// `Authorization: Bearer`, before `X-Session-Token`).
    #[arg(long, env = "SESSION_FORWARD_AUTH_COOKIE", value_name = "NAME",
        default_value = session_http::DEFAULT_COOKIE)]
    pub forward_auth_cookie: String,

    /// The response header that carries the session id to the gateway.
    #[arg(long, env = "SESSION_FORWARD_AUTH_SESSION_ID_HEADER", value_name = "NAME",
        default_value = session_http::DEFAULT_SESSION_ID_HEADER)]
    pub forward_auth_session_id_header: String,

    /// The response header that carries the account id to the gateway.
    #[arg(long, env = "SESSION_FORWARD_AUTH_ACCOUNT_ID_HEADER", value_name = "NAME",
        default_value = session_http::DEFAULT_ACCOUNT_ID_HEADER)]
    pub forward_auth_account_id_header: String,
}

impl ForwardAuthArgs {
    /// The settings, or which option is wrong.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the option and the rule it breaks.
    pub fn settings(&self) -> Result<session_http::ForwardAuth, ConfigError> {
        session_http::ForwardAuth::new(
            &self.forward_auth_cookie,
            &self.forward_auth_session_id_header,
            &self.forward_auth_account_id_header,
        )
        .map_err(|err| {
            use session_http::InvalidForwardAuth;
            let option = match err {
                InvalidForwardAuth::CookieName => "--forward-auth-cookie",
                InvalidForwardAuth::HeaderName("session id")
                | InvalidForwardAuth::Reserved("session id") => "--forward-auth-session-id-header",
                InvalidForwardAuth::HeaderName(_) | InvalidForwardAuth::Reserved(_) => {
                    "--forward-auth-account-id-header"
                }
                _ => "--forward-auth-session-id-header and --forward-auth-account-id-header",
            };
            ConfigError(format!("{option}: {err}"))
        })
    }
}

/// Which [`SessionCache`](session_core::port::cache::SessionCache) adapter the service uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CacheKind {
    /// session-core's `MemoryCache`: a sharded `RwLock<HashMap>`.
    Map,
    /// session-cache-moka's `MokaSessionCache`.
    Moka,
    /// session-core's `CompactCache`, with session-cache-moka's
    /// `MokaRecordCache` of whole records.
    Compact,
}

/// An RFC 3339 instant, such as `2026-12-06T22:00:00Z`.
fn parse_instant(text: &str) -> Result<time::OffsetDateTime, String> {
    humantime::parse_rfc3339_weak(text)
        .map(time::OffsetDateTime::from)
        .map_err(|err| format!("{err}: expected an RFC 3339 instant such as 2026-12-06T22:00:00Z"))
}

/// What a login past `--max-sessions-per-account` does: session-core's
/// [`LimitPolicy`](session_core::config::LimitPolicy), spelled for the
/// command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LimitPolicyArg {
    /// Revoke the least recently seen sessions to make room.
    EvictLeastRecentlySeen,
    /// Refuse the login.
    Refuse,
}

impl From<LimitPolicyArg> for session_core::config::LimitPolicy {
    fn from(policy: LimitPolicyArg) -> Self {
        match policy {
            LimitPolicyArg::EvictLeastRecentlySeen => Self::EvictLeastRecentlySeen,
            LimitPolicyArg::Refuse => Self::Refuse,
        }
    }
}

/// What retention does to a revoked session past its age.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RetentionActionArg {
    /// Delete the row and its last-seen activity.
    Delete,
    /// Erase the user agent and IP address; keep the row.
    Erase,
}

impl From<RetentionActionArg> for RetentionAction {
    fn from(action: RetentionActionArg) -> Self {
        match action {
            RetentionActionArg::Delete => Self::Delete,
            RetentionActionArg::Erase => Self::Erase,
        }
    }
}

/// Options of `revoke-idle`.
#[derive(Debug, Args)]
pub struct RevokeIdleArgs {
    /// Revoke active sessions not seen for this long (for example `90d`);
    /// never seen: created that long ago. At least ten times
    /// `--last-seen-flush-interval` plus a minute, which is added to it.
    #[arg(long, value_name = "DURATION", value_parser = positive_duration)]
    pub older_than: Duration,

    /// Print how many sessions each batch would revoke, and revoke none.
    #[arg(long)]
    pub dry_run: bool,

    /// The running instances' `--last-seen-flush-interval`: their
    /// last-seen times may be this much (and a minute) behind.
    #[arg(long, env = "SESSION_LAST_SEEN_FLUSH_INTERVAL", default_value = "10s",
        value_parser = positive_duration)]
    pub last_seen_flush_interval: Duration,

    /// Sessions revoked per statement.
    #[arg(long, default_value_t = session_core::config::MAINTENANCE_BATCH,
        value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,

    /// The database.
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// How the session commands reach the service.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Base URL of the running service: `https://…`, or `http://…` to a
    /// loopback address (`127.0.0.1`, `[::1]`, `localhost`). A path is kept
    /// as a prefix of the API's (`https://gw.example/sessions-api`). With an API key,
    /// plain `http://` to any other host is refused: the key would cross the
    /// network in clear text. Requests to loopback never go through a proxy;
    /// others honour `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY`.
    #[arg(long, env = "SESSION_SERVER", default_value = "http://127.0.0.1:8080",
        hide_env_values = true, value_parser = ServerUrlParser)]
    pub server: reqwest::Url,

    /// PEM file of certificate authorities to trust for an `https://`
    /// server, in addition to the system's (for a private CA).
    #[arg(long, env = "SESSION_CA_FILE", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,

    /// File holding the API key to send: the key of its first line, bare or
    /// named as the service's key file has it. The environment variable
    /// `SESSION_API_KEY` works too.
    #[arg(long, env = "SESSION_API_KEY_FILE", value_name = "PATH")]
    pub api_key_file: Option<PathBuf>,

    /// Print the service's JSON response instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Options of `create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The account to create a session for.
    #[arg(long, value_name = "UUID")]
    pub account: Uuid,
    /// A label for the session, such as a device name.
    #[arg(long)]
    pub label: Option<String>,
    /// The client's user agent.
    #[arg(long)]
    pub user_agent: Option<String>,
    /// The client's IP address.
    #[arg(long)]
    pub ip: Option<std::net::IpAddr>,
    /// The service.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// A revocation reason as the service checks it, so a bad one is refused
/// before any request.
fn parse_reason(text: &str) -> Result<RevocationReason, String> {
    RevocationReason::new(text).map_err(|err| err.reason.to_string())
}

/// Options of `revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The session to revoke.
    #[arg(value_name = "SESSION_ID")]
    pub id: Uuid,
    /// Why: `logout` (the default), `admin`, `idle`, `limit`, or a reason of
    /// your own flow, a lowercase identifier of at most 32 bytes (a letter,
    /// then letters, digits or `_`), such as `password_change`.
    #[arg(long, value_name = "REASON", value_parser = parse_reason)]
    pub reason: Option<RevocationReason>,
    /// The service.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Options of `revoke-all`.
#[derive(Debug, Args)]
pub struct RevokeAllArgs {
    /// The account whose sessions to revoke.
    #[arg(long, value_name = "UUID")]
    pub account: Uuid,
    /// A session to keep.
    #[arg(long, value_name = "SESSION_ID")]
    pub except: Option<Uuid>,
    /// Why, as `revoke --reason` takes it (default `logout`).
    #[arg(long, value_name = "REASON", value_parser = parse_reason)]
    pub reason: Option<RevocationReason>,
    /// The service.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Options of `not-before`.
#[derive(Debug, Args)]
pub struct NotBeforeArgs {
    /// Raise the mark to this time (RFC 3339, such as
    /// `2026-12-06T22:00:00Z`, not in the future), or to `now` by the
    /// service's clock. Without it, only print the mark in force.
    #[arg(long, value_name = "RFC3339|now", value_parser = parse_mark)]
    pub at: Option<MarkAt>,
    /// The service.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// The time `not-before --at` raises the mark to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkAt {
    /// Now, by the service's clock.
    Now,
    /// This instant.
    At(time::OffsetDateTime),
}

/// `now`, or an RFC 3339 instant.
fn parse_mark(text: &str) -> Result<MarkAt, String> {
    if text == "now" {
        return Ok(MarkAt::Now);
    }
    parse_instant(text).map(MarkAt::At)
}

/// Options of `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The account whose sessions to list.
    #[arg(long, value_name = "UUID")]
    pub account: Uuid,
    /// Include revoked sessions.
    #[arg(long)]
    pub include_revoked: bool,
    /// The service.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Options of `events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Start after this event id (the first column of a printed event);
    /// without it, from now.
    #[arg(long, value_name = "EVENT_ID")]
    pub after: Option<String>,
    /// Keep following the feed until interrupted.
    #[arg(long)]
    pub follow: bool,
    /// The service.
    #[command(flatten)]
    pub client: ClientArgs,
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        Ok(_) => Err("expected a duration above zero".into()),
        Err(err) => Err(err.to_string()),
    }
}

/// Parses `--server` without repeating it (clap's own errors quote the
/// value), refusing what the client cannot use or must not send: a URL
/// with a user name or password in it would be printed in error messages.
#[derive(Debug, Clone, Copy)]
pub struct ServerUrlParser;

impl clap::builder::TypedValueParser for ServerUrlParser {
    type Value = reqwest::Url;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Self::Value, clap::Error> {
        let flag = arg.map_or_else(|| "--server".to_owned(), ToString::to_string);
        let refused = |reason: &str| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid value for '{flag}' (not shown): {reason}\n"),
            )
        };
        let url = value
            .to_str()
            .and_then(|text| reqwest::Url::parse(text).ok())
            .ok_or_else(|| refused("expected a URL such as https://sessions.internal:8080"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(refused("expected an http:// or https:// URL with a host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refused(
                "a user name or password does not belong in the URL: give the API key in \
                 --api-key-file or SESSION_API_KEY",
            ));
        }
        Ok(with_trailing_slash(url))
    }
}

/// `url` with a path that ends in `/`, so the API's paths are resolved
/// below it (RFC 3986 §5.2: `v1/sessions` against `/sessions-api` replaces
/// the last segment, against `/sessions-api/` appends): a service behind a
/// proxy under a path prefix is reached there, written either way.
fn with_trailing_slash(mut url: reqwest::Url) -> reqwest::Url {
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url
}

/// Parses the command line, runs the command, and maps failures to exit
/// codes: 2 for a configuration mistake, 1 for anything else.
#[must_use]
pub fn main() -> ExitCode {
    // reqwest is built with rustls and no crypto provider of its own, so
    // every client in the process (the CLI's, the OTLP exporter's) uses
    // this one; the workspace's TLS is ring throughout. It fails only if a
    // provider is already installed, which is as good.
    let _already = rustls::crypto::ring::default_provider().install_default();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    // Only the service exports spans; the client commands just log.
    let otlp = match &cli.command {
        Command::Serve(args) => telemetry::OtlpEndpoint::configured(args.otlp_endpoint.as_deref()),
        _ => Ok(None),
    };
    let telemetry = match otlp.and_then(|otlp| telemetry::init(cli.log_format, &cli.log, otlp)) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    if password_on_command_line(&matches, &cli.command) {
        tracing::warn!(
            "the --database-url on the command line holds a password, which every local user \
             can read in the process list; give it in {PASSWORD_ENV} or --database-url-file instead"
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: could not start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(cli.command));
    // The last spans are flushed (within a bound) once the server has stopped.
    drop(runtime);
    drop(telemetry);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.is::<ConfigError>() => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether `--database-url` came from the command line (not the
/// environment) with a password in it.
fn password_on_command_line(matches: &ArgMatches, command: &Command) -> bool {
    let database = match command {
        Command::Serve(args) => &args.database,
        Command::Migrate(args) => args,
        Command::RevokeIdle(args) => &args.database,
        _ => return false,
    };
    matches.subcommand().is_some_and(|(_, matches)| {
        matches.value_source("database_url") == Some(ValueSource::CommandLine)
    }) && database
        .database_url
        .as_ref()
        .is_some_and(DatabaseUrl::has_password)
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => crate::serve::serve(*args).await,
        Command::Migrate(args) => crate::store::migrate(&args).await,
        Command::Create(args) => crate::client::create(args).await,
        Command::Resolve(args) => crate::client::resolve(args).await,
        Command::Revoke(args) => crate::client::revoke(args).await,
        Command::RevokeAll(args) => crate::client::revoke_all(args).await,
        Command::List(args) => crate::client::list(args).await,
        Command::RevokeIdle(args) => crate::store::revoke_idle(args).await,
        Command::Events(args) => crate::client::events(args).await,
        Command::NotBefore(args) => crate::client::not_before(args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instant_is_rfc3339_or_refused_saying_so() {
        assert_eq!(
            parse_instant("2026-12-06T22:00:00Z").unwrap(),
            time::macros::datetime!(2026-12-06 22:00:00 UTC)
        );
        assert_eq!(
            parse_instant("2026-12-06T22:00:00.250Z").unwrap(),
            time::macros::datetime!(2026-12-06 22:00:00.25 UTC)
        );
        for bad in ["yesterday", "2026-12-06", ""] {
            let err = parse_instant(bad).unwrap_err();
            assert!(err.contains("RFC 3339"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_mark_is_now_or_an_instant() {
        assert_eq!(parse_mark("now").unwrap(), MarkAt::Now);
        assert_eq!(
            parse_mark("2026-12-06T22:00:00Z").unwrap(),
            MarkAt::At(time::macros::datetime!(2026-12-06 22:00:00 UTC))
        );
        for bad in ["Now", "yesterday", ""] {
            assert!(parse_mark(bad).is_err(), "{bad:?}");
        }
    }
}
