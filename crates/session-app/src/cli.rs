//! Command-line interface: `serve` and `migrate` run against the database;
//! the session commands are clients of a running service's HTTP API, so the
//! service's cache stays the single truth.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use uuid::Uuid;

use crate::ConfigError;
use crate::store::{DatabaseUrl, DatabaseUrlParser, PgPoolArgs};
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
    /// `info`, or `warn,session_app=info`).
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
    Serve(ServeArgs),
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
}

/// Where the sessions are stored.
#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// `postgres://…` for PostgreSQL, or `sqlite://PATH` for a SQLite file.
    /// Without it, sessions are kept in the SQLite file `./data/sessions.db`.
    #[arg(long, env = "DATABASE_URL", value_name = "URL", hide_env_values = true,
        value_parser = DatabaseUrlParser)]
    pub database_url: Option<DatabaseUrl>,

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

    /// File of API keys, one per line (several allow rotation). The `/v1`
    /// routes then require `Authorization: Bearer <key>`. A single key can
    /// also be given in the environment variable `SESSION_API_KEY`.
    #[arg(long, env = "SESSION_API_KEY_FILE", value_name = "PATH")]
    pub api_key_file: Option<PathBuf>,

    /// How long in-flight requests may take to finish after SIGTERM or Ctrl-C.
    #[arg(long, env = "SESSION_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,

    /// The session cache: `map` (session-core's sharded hash map, the
    /// default) or `moka`. Both keep every active session and evict nothing;
    /// `map` resolves several times faster and needs under half the memory
    /// per session (docs/BENCHMARKS.md).
    #[arg(long, env = "SESSION_CACHE", value_enum, default_value = "map")]
    pub cache: CacheKind,

    /// With several instances on one PostgreSQL: the most this instance's
    /// cache may lag behind the change log while it reports ready. Every
    /// revocation committed longer ago than this is in force here; past it,
    /// `/readyz` answers 503 with the lag.
    #[arg(long, env = "SESSION_MAX_STALENESS", default_value = "2s", value_parser = humantime::parse_duration)]
    pub max_staleness: Duration,

    /// With several instances on one PostgreSQL: how often the change log
    /// is read when no notification wakes this instance earlier.
    #[arg(long, env = "SESSION_LOG_POLL_INTERVAL", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub log_poll_interval: Duration,

    /// With several instances on one PostgreSQL, a cache miss may be a
    /// session another instance just created, so it reads the store once:
    /// at most this many such reads per second on average. Past the limit a
    /// miss is answered `invalid_token` (and counted in metrics).
    #[arg(long, env = "SESSION_MISS_READS_PER_SECOND", default_value_t = 100.0,
        value_parser = non_negative_rate)]
    pub miss_reads_per_second: f64,

    /// Miss-path store reads allowed at once above the average rate.
    #[arg(long, env = "SESSION_MISS_BURST", default_value_t = 100,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub miss_burst: u32,

    /// Token hashes remembered as unknown to the store, so a repeated
    /// unknown or revoked token costs no further read (0 turns this off).
    #[arg(long, env = "SESSION_NEGATIVE_CACHE_SIZE", default_value_t = 65_536)]
    pub negative_cache_size: usize,

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

/// Which [`SessionCache`](session_core::SessionCache) adapter the service uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CacheKind {
    /// session-core's `MemoryCache`: a sharded `RwLock<HashMap>`.
    Map,
    /// session-cache-moka's `MokaSessionCache`.
    Moka,
}

/// How the session commands reach the service.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Base URL of the running service.
    #[arg(long, env = "SESSION_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: reqwest::Url,

    /// File holding the API key to send (its first line). The environment
    /// variable `SESSION_API_KEY` works too.
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

/// Options of `revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The session to revoke.
    #[arg(value_name = "SESSION_ID")]
    pub id: Uuid,
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
    /// The service.
    #[command(flatten)]
    pub client: ClientArgs,
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

fn non_negative_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= 0.0 => Ok(rate),
        _ => Err("expected a number of reads per second, 0 or more".into()),
    }
}

/// Parses the command line, runs the command, and maps failures to exit
/// codes: 2 for a configuration mistake, 1 for anything else.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
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

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => crate::serve::serve(args).await,
        Command::Migrate(args) => crate::store::migrate(&args).await,
        Command::Create(args) => crate::client::create(args).await,
        Command::Resolve(args) => crate::client::resolve(args).await,
        Command::Revoke(args) => crate::client::revoke(args).await,
        Command::RevokeAll(args) => crate::client::revoke_all(args).await,
        Command::List(args) => crate::client::list(args).await,
    }
}
