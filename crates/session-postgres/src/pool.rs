//! The connection pool: how connections are opened (with or without TLS),
//! checked before use, and bounded in time.

use std::sync::Arc;
use std::time::Duration;

use deadpool::Runtime;
use diesel::ConnectionError;
use diesel::connection::CacheSize;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use session_core::port::store::StoreError;
use tokio_postgres::NoTls;
use tokio_postgres::config::{Host, LoadBalanceHosts};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{PgConfig, Statements};

pub(crate) type Pool = diesel_async::pooled_connection::deadpool::Pool<AsyncPgConnection>;
pub(crate) type Connection = diesel_async::pooled_connection::deadpool::Object<AsyncPgConnection>;
pub(crate) type CheckoutError = diesel_async::pooled_connection::deadpool::PoolError;

/// Opens connections from the parsed settings, with TLS when they ask for it:
/// the pool's, and the change log's own.
///
/// With several hosts it tries them itself, one at a time, each bounded by
/// the connect timeout: the driver would try them too, but bounds only each
/// TCP connect, so a host that accepts connections and then never answers
/// (a stalled server, a paused machine) would use up the whole attempt
/// before the next host was tried. Trying them here also says what happened
/// at each host, where the driver reports only the last.
pub(crate) struct Connector {
    /// One per host, in the URL's order.
    hosts: Vec<HostAttempt>,
    /// Whether each connection starts at a random host (`load_balance_hosts=random`).
    random_start: bool,
    per_host: Duration,
    tls: Option<MakeRustlsConnect>,
    statements: Statements,
}

/// The settings for connecting to one host of the URL (or, when the URL
/// cannot be split, to all of them through the driver).
struct HostAttempt {
    /// `host:port`, to say which host failed and how; empty when this is the
    /// only attempt.
    label: String,
    postgres: tokio_postgres::Config,
    /// How many hosts the attempt tries: each gets the connect timeout.
    hosts: u32,
}

impl Connector {
    pub(crate) fn new(config: &PgConfig) -> Self {
        let mut postgres = config.postgres.clone();
        if postgres.get_connect_timeout().is_none() {
            // Per address tried; `connect` bounds each host's whole attempt.
            postgres.connect_timeout(config.connect_timeout);
        }
        let random_start = postgres.get_load_balance_hosts() == LoadBalanceHosts::Random;
        let hosts = one_per_host(&postgres).unwrap_or_else(|| {
            let count = postgres
                .get_hosts()
                .len()
                .max(postgres.get_hostaddrs().len());
            vec![HostAttempt {
                label: String::new(),
                postgres,
                hosts: u32::try_from(count.max(1)).unwrap_or(u32::MAX),
            }]
        });
        Self {
            hosts,
            random_start,
            per_host: config.connect_timeout,
            tls: config
                .tls
                .as_deref()
                .map(|tls| MakeRustlsConnect::new(tls.clone())),
            statements: config.statements,
        }
    }

    /// How long [`connect`](Self::connect) may take at most: the connect
    /// timeout for each host.
    pub(crate) fn limit(&self) -> Duration {
        self.hosts
            .iter()
            .map(|attempt| self.per_host.saturating_mul(attempt.hosts))
            .fold(Duration::ZERO, Duration::saturating_add)
    }

    /// A connection to the first host, in order, that accepts one.
    pub(crate) async fn connect(&self) -> Result<AsyncPgConnection, ConnectionError> {
        self.first_accepting(|postgres| self.connect_to(postgres))
            .await
    }

    /// A connection of the driver's own, not diesel-async's, to the first
    /// host that accepts one: for what diesel-async cannot send (`COPY`).
    pub(crate) async fn connect_driver(&self) -> Result<DriverConnection, ConnectionError> {
        self.first_accepting(|postgres| self.driver_to(postgres))
            .await
    }

    /// `connect` at the first host, in order, that accepts a connection,
    /// each host's attempt bounded by the connect timeout.
    async fn first_accepting<'a, T, F, Fut>(&'a self, connect: F) -> Result<T, ConnectionError>
    where
        F: Fn(&'a tokio_postgres::Config) -> Fut,
        Fut: Future<Output = Result<T, ConnectionError>>,
    {
        if let [only] = self.hosts.as_slice() {
            let limit = self.per_host.saturating_mul(only.hosts);
            return tokio::time::timeout(limit, connect(&only.postgres))
                .await
                .unwrap_or_else(|_| Err(timed_out(limit)));
        }
        let start = if self.random_start {
            random_index(self.hosts.len())
        } else {
            0
        };
        let mut failures = Vec::new();
        for attempt in self.hosts.iter().cycle().skip(start).take(self.hosts.len()) {
            match tokio::time::timeout(self.per_host, connect(&attempt.postgres)).await {
                Ok(Ok(connection)) => return Ok(connection),
                Ok(Err(err)) => failures.push(format!("{}: {err}", attempt.label)),
                Err(_) => failures.push(format!("{}: {}", attempt.label, timed_out(self.per_host))),
            }
        }
        Err(ConnectionError::BadConnection(format!(
            "no host accepted a connection: {}",
            failures.join("; ")
        )))
    }

    async fn connect_to(
        &self,
        postgres: &tokio_postgres::Config,
    ) -> Result<AsyncPgConnection, ConnectionError> {
        match &self.tls {
            None => {
                let (client, connection) = postgres.connect(NoTls).await.map_err(failed)?;
                self.adopt(client, connection).await
            }
            Some(tls) => {
                let (client, connection) = postgres.connect(tls.clone()).await.map_err(failed)?;
                self.adopt(client, connection).await
            }
        }
    }

    async fn driver_to(
        &self,
        postgres: &tokio_postgres::Config,
    ) -> Result<DriverConnection, ConnectionError> {
        let (client, task) = match &self.tls {
            None => {
                let (client, connection) = postgres.connect(NoTls).await.map_err(failed)?;
                (client, tokio::spawn(async move { drop(connection.await) }))
            }
            Some(tls) => {
                let (client, connection) = postgres.connect(tls.clone()).await.map_err(failed)?;
                (client, tokio::spawn(async move { drop(connection.await) }))
            }
        };
        Ok(DriverConnection { client, task })
    }

    /// The driver's connection as diesel-async's, set up for the statement mode.
    ///
    /// diesel-async's own setup runs two statements, each prepared under a
    /// name in one exchange and run in the next. Through a transaction
    /// pooler the second exchange may reach another server session, where
    /// the name means nothing; per transaction, the setup runs inside one
    /// (its `SET`s, committed, stay: PgBouncer keeps `TimeZone` and
    /// `client_encoding` for its client), and the connection caches no
    /// statement, so each is closed inside the call that prepared it.
    async fn adopt<T>(
        &self,
        client: tokio_postgres::Client,
        mut connection: tokio_postgres::Connection<tokio_postgres::Socket, T>,
    ) -> Result<AsyncPgConnection, ConnectionError>
    where
        T: tokio_postgres::tls::TlsStream + Unpin + Send + 'static,
    {
        if self.statements == Statements::Cached {
            return AsyncPgConnection::try_from_client_and_connection(client, connection).await;
        }
        // The connection is driven here until diesel-async takes it over.
        tokio::select! {
            biased;
            begun = client.batch_execute("BEGIN") => begun.map_err(failed)?,
            ended = &mut connection => {
                return Err(ConnectionError::BadConnection(match ended {
                    Ok(()) => "the server closed the connection".to_owned(),
                    Err(err) => describe(&err),
                }));
            }
        }
        let mut adopted =
            AsyncPgConnection::try_from_client_and_connection(client, connection).await?;
        adopted.set_prepared_statement_cache_size(CacheSize::Disabled);
        adopted
            .batch_execute("COMMIT")
            .await
            .map_err(|err| ConnectionError::BadConnection(describe(&err)))?;
        Ok(adopted)
    }
}

/// A connection of the driver's own: its client, and the task driving it,
/// which ends with it (dropped, the connection closes).
pub(crate) struct DriverConnection {
    pub(crate) client: tokio_postgres::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DriverConnection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn failed(err: tokio_postgres::Error) -> ConnectionError {
    ConnectionError::BadConnection(describe(&err))
}

fn timed_out(limit: Duration) -> ConnectionError {
    ConnectionError::BadConnection(format!("no connection within {limit:?}"))
}

/// `postgres` split into one configuration per host, every other setting
/// kept; `None` when it names at most one host, or when the split cannot be
/// trusted and the driver is left to try the hosts itself: host, address and
/// port lists the driver would refuse, or a setting this function does not
/// know (a newer driver's), which the check against the original finds.
fn one_per_host(postgres: &tokio_postgres::Config) -> Option<Vec<HostAttempt>> {
    let (hosts, addresses, ports) = (
        postgres.get_hosts(),
        postgres.get_hostaddrs(),
        postgres.get_ports(),
    );
    let count = hosts.len().max(addresses.len());
    let lists_agree = (hosts.is_empty() || hosts.len() == count)
        && (addresses.is_empty() || addresses.len() == count)
        && (ports.len() <= 1 || ports.len() == count);
    if count < 2 || !lists_agree {
        return None;
    }
    let mut whole = without_hosts(postgres);
    for i in 0..count {
        add_host(&mut whole, postgres, i);
    }
    for port in ports {
        whole.port(*port);
    }
    if whole != *postgres {
        return None;
    }
    Some(
        (0..count)
            .map(|i| {
                let mut single = without_hosts(postgres);
                add_host(&mut single, postgres, i);
                let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                single.port(port);
                let host = match (hosts.get(i), addresses.get(i)) {
                    (Some(Host::Tcp(name)), _) => name.clone(),
                    (Some(Host::Unix(path)), _) => path.display().to_string(),
                    (None, Some(address)) => address.to_string(),
                    (None, None) => String::new(),
                };
                let label = if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                };
                HostAttempt {
                    label,
                    postgres: single,
                    hosts: 1,
                }
            })
            .collect(),
    )
}

/// Every setting of `postgres` but its hosts, addresses and ports.
fn without_hosts(postgres: &tokio_postgres::Config) -> tokio_postgres::Config {
    let mut copy = tokio_postgres::Config::new();
    if let Some(user) = postgres.get_user() {
        copy.user(user);
    }
    if let Some(password) = postgres.get_password() {
        copy.password(password);
    }
    if let Some(dbname) = postgres.get_dbname() {
        copy.dbname(dbname);
    }
    if let Some(options) = postgres.get_options() {
        copy.options(options);
    }
    if let Some(name) = postgres.get_application_name() {
        copy.application_name(name);
    }
    if let Some(timeout) = postgres.get_connect_timeout() {
        copy.connect_timeout(*timeout);
    }
    if let Some(timeout) = postgres.get_tcp_user_timeout() {
        copy.tcp_user_timeout(*timeout);
    }
    if let Some(interval) = postgres.get_keepalives_interval() {
        copy.keepalives_interval(interval);
    }
    if let Some(retries) = postgres.get_keepalives_retries() {
        copy.keepalives_retries(retries);
    }
    copy.ssl_mode(postgres.get_ssl_mode())
        .ssl_negotiation(postgres.get_ssl_negotiation())
        .keepalives(postgres.get_keepalives())
        .keepalives_idle(postgres.get_keepalives_idle())
        .target_session_attrs(postgres.get_target_session_attrs())
        .channel_binding(postgres.get_channel_binding())
        .load_balance_hosts(postgres.get_load_balance_hosts());
    copy
}

/// Adds the `i`th host of `from` (its name, its address, or both) to `to`.
fn add_host(to: &mut tokio_postgres::Config, from: &tokio_postgres::Config, i: usize) {
    match from.get_hosts().get(i) {
        Some(Host::Tcp(name)) => {
            to.host(name);
        }
        Some(Host::Unix(path)) => {
            to.host_path(path);
        }
        None => {}
    }
    if let Some(address) = from.get_hostaddrs().get(i) {
        to.hostaddr(*address);
    }
}

/// A random number below `count` (at least 1), from the operating system's
/// generator, which `Uuid::new_v4` draws on.
fn random_index(count: usize) -> usize {
    let random = uuid::Uuid::new_v4().as_u128();
    usize::try_from(random % count.max(1) as u128).unwrap_or(0)
}

/// The driver's error with its causes, which say what failed (refused, TLS,
/// authentication); none of them contains the password.
pub(crate) fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Builds the pool on `connector`. Opens no connection: the first checkout does.
pub(crate) fn build(config: &PgConfig, connector: Arc<Connector>) -> Result<Pool, StoreError> {
    let connect_limit = connector.limit();
    let mut manager_config = ManagerConfig::default();
    // The store's checkout makes a round trip before each use (it sets the
    // call's timeouts), which finds connections the server closed while they
    // sat in the pool; the pool itself only drops those it knows are broken.
    manager_config.recycling_method = RecyclingMethod::Fast;
    manager_config.custom_setup = Box::new(move |_url| {
        let connector = Arc::clone(&connector);
        Box::pin(async move { connector.connect().await })
    });
    // The URL is unused: the setup above connects from the parsed settings.
    let manager = AsyncDieselConnectionManager::new_with_config(String::new(), manager_config);
    Pool::builder(manager)
        .max_size(config.pool_size)
        .wait_timeout(Some(config.checkout_timeout))
        .create_timeout(Some(connect_limit))
        .recycle_timeout(Some(config.connect_timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|err| StoreError::Failed(Box::new(err)))
}
