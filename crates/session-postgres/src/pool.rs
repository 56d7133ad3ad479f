//! The connection pool: how connections are opened (with or without TLS),
//! checked before use, and bounded in time.

use std::sync::Arc;

use deadpool::Runtime;
use diesel::ConnectionError;
use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use session_core::StoreError;
use tokio_postgres::NoTls;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::PgConfig;

pub(crate) type Pool = diesel_async::pooled_connection::deadpool::Pool<AsyncPgConnection>;
pub(crate) type Connection = diesel_async::pooled_connection::deadpool::Object<AsyncPgConnection>;
pub(crate) type CheckoutError = diesel_async::pooled_connection::deadpool::PoolError;

/// Opens connections from the parsed settings, with TLS when they ask for it:
/// the pool's, and the change feed's own.
pub(crate) struct Connector {
    postgres: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
}

impl Connector {
    pub(crate) fn new(config: &PgConfig) -> Self {
        let mut postgres = config.postgres.clone();
        if postgres.get_connect_timeout().is_none() {
            // Per address tried; callers bound the whole attempt.
            postgres.connect_timeout(config.connect_timeout);
        }
        Self {
            postgres,
            tls: config
                .tls
                .as_deref()
                .map(|tls| MakeRustlsConnect::new(tls.clone())),
        }
    }

    pub(crate) async fn connect(&self) -> Result<AsyncPgConnection, ConnectionError> {
        let failed = |err: tokio_postgres::Error| ConnectionError::BadConnection(describe(&err));
        match &self.tls {
            None => {
                let (client, connection) = self.postgres.connect(NoTls).await.map_err(failed)?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await
            }
            Some(tls) => {
                let (client, connection) =
                    self.postgres.connect(tls.clone()).await.map_err(failed)?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await
            }
        }
    }
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
    let mut manager_config = ManagerConfig::default();
    // A round-trip before each use finds connections the server closed while
    // they sat in the pool (restart, failover, pg_terminate_backend), so they
    // are replaced instead of failing the caller's operation.
    manager_config.recycling_method = RecyclingMethod::Verified;
    manager_config.custom_setup = Box::new(move |_url| {
        let connector = Arc::clone(&connector);
        Box::pin(async move { connector.connect().await })
    });
    // The URL is unused: the setup above connects from the parsed settings.
    let manager = AsyncDieselConnectionManager::new_with_config(String::new(), manager_config);
    Pool::builder(manager)
        .max_size(config.pool_size)
        .wait_timeout(Some(config.checkout_timeout))
        .create_timeout(Some(config.connect_timeout))
        .recycle_timeout(Some(config.connect_timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|err| StoreError::Failed(Box::new(err)))
}
