//! Helpers shared by the tests.

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
