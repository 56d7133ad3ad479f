//! Helpers shared by the tests.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use session_core::{
    BackgroundTasks, Error, MemoryCache, SessionService, SessionServiceBuilder, SessionToken,
};
use session_postgres::{PgConfig, PgSessionStore};
use session_test_postgres::TestDatabase;
use tokio_postgres::NoTls;

/// A store on `url`, migrated.
pub(crate) async fn migrated_store(config: PgConfig) -> PgSessionStore {
    let store = PgSessionStore::connect(config).await.unwrap();
    store.migrate().await.unwrap();
    store
}

/// A migrated store on a fresh database of the shared server.
pub(crate) async fn fresh_store() -> (TestDatabase, PgSessionStore) {
    let database = TestDatabase::create();
    let store = migrated_store(PgConfig::from_url(database.url()).unwrap()).await;
    (database, store)
}

/// A plain SQL client, to look at what the store wrote or to write what it never would.
pub(crate) async fn sql_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// The whole error chain as text, to check what an error tells a person.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Fails the test instead of hanging it; not a measure of speed.
pub(crate) async fn within_a_minute<T>(operation: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), operation)
        .await
        .expect("hung instead of answering")
}

/// Polls `condition` every few milliseconds until it holds, within a minute.
pub(crate) async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    session_test_process::until_async(what, Duration::from_secs(60), async || condition())
        .await
        .unwrap();
}

/// `url` with `param` added to its query.
pub(crate) fn with_param(url: &str, param: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{param}")
}

/// One process of several sharing a database: a service and its store.
pub(crate) struct Instance {
    pub(crate) service: SessionService,
    pub(crate) store: Arc<PgSessionStore>,
    /// Follows the change log for as long as the instance lives.
    _tasks: BackgroundTasks,
}

/// A service over a store of its own, following the log, as a process would.
pub(crate) async fn instance_on(url: &str, name: &str) -> Instance {
    instance_configured(url, name, |config| config).await
}

/// As [`instance_on`], with the store's settings adjusted by `configure`.
pub(crate) async fn instance_configured(
    url: &str,
    name: &str,
    configure: impl FnOnce(PgConfig) -> PgConfig,
) -> Instance {
    instance_built(url, name, configure, |builder| builder).await
}

/// As [`instance_configured`], with the service's settings adjusted by `build`.
pub(crate) async fn instance_built(
    url: &str,
    name: &str,
    configure: impl FnOnce(PgConfig) -> PgConfig,
    build: impl FnOnce(SessionServiceBuilder) -> SessionServiceBuilder,
) -> Instance {
    let url = with_param(url, &format!("application_name={name}"));
    let config = configure(
        PgConfig::from_url(&url)
            .unwrap()
            .connect_timeout(Duration::from_secs(1))
            .checkout_timeout(Duration::from_secs(2)),
    );
    let store = Arc::new(migrated_store(config).await);
    let service = build(
        SessionService::builder(store.clone(), Arc::new(MemoryCache::new()))
            .change_log(store.clone()),
    )
    .build();
    let tasks = service.start();
    Instance {
        service,
        store,
        _tasks: tasks,
    }
}

/// Two instances on `url`, named `instance_a` and `instance_b`, both ready.
pub(crate) async fn ready_pair(url: &str) -> (Instance, Instance) {
    let a = instance_on(url, "instance_a").await;
    let b = instance_on(url, "instance_b").await;
    ready(&a).await;
    ready(&b).await;
    (a, b)
}

/// Whether the instance is ready: its cache is current and its store answers.
pub(crate) async fn is_ready(instance: &Instance) -> bool {
    instance.service.status().cache_ready() && instance.service.check_store().await.is_ok()
}

/// Waits, within a minute, until the instance reports ready.
pub(crate) async fn ready(instance: &Instance) {
    within_a_minute(async {
        while !is_ready(instance).await {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// Whether the instance answers `token` as invalid.
pub(crate) async fn rejected(instance: &Instance, token: &SessionToken) -> bool {
    matches!(
        instance.service.resolve(token.expose_secret()).await,
        Err(Error::InvalidToken)
    )
}
