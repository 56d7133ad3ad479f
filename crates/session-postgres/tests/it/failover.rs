//! Several hosts in one URL, as libpq takes them: each tried in turn, and a
//! host that never answers costing only its connect timeout.

use std::time::Duration;

use session_core::testkit::{account, epoch, session_at};
use session_core::{SessionStore, StoreError};
use session_postgres::{PgConfig, PgSessionStore};
use session_test_postgres::TestDatabase;

use crate::support::{chain, migrated_store, within_a_minute};

/// A loopback port nothing listens on: connections to it are refused.
fn refusing_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A loopback port that accepts connections and never says a word, as a
/// stalled server or a paused machine behind a live kernel does; until the
/// returned task is aborted.
async fn silent_port() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (port, task)
}

/// The port of the server a test database lives on.
fn port_of(database: &TestDatabase) -> u16 {
    let config: tokio_postgres::Config = database.url().parse().unwrap();
    config.get_ports()[0]
}

/// The driver alone would spend the whole attempt waiting on the first
/// host; each host gets the connect timeout, and the second is reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_never_answers_does_not_keep_the_next_from_being_tried() {
    let database = TestDatabase::create();
    let (silent, listener) = silent_port().await;
    let url = format!(
        "postgres://postgres@127.0.0.1:{silent},127.0.0.1:{}/{}?target_session_attrs=read-write",
        port_of(&database),
        database.name()
    );
    let config = PgConfig::from_url(&url)
        .unwrap()
        .connect_timeout(Duration::from_millis(500))
        .checkout_timeout(Duration::from_secs(5));
    let store = within_a_minute(migrated_store(config)).await;
    let (_, session) = session_at(account(), epoch());
    store.insert(&session).await.unwrap();
    listener.abort();
}

/// When no host takes the connection, the error says what each one did, and
/// every other setting of the URL survived splitting it by host (were one
/// lost, the hosts would be tried by the driver and reported as one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_no_host_accepts_says_what_each_host_did() {
    let refused = refusing_port();
    let (silent, listener) = silent_port().await;
    let url = format!(
        "postgres://postgres:hunter2@127.0.0.1:{refused},127.0.0.1:{silent}/none\
         ?application_name=failover&connect_timeout=5&keepalives_idle=30&keepalives_interval=5\
         &keepalives_retries=3&tcp_user_timeout=10&channel_binding=prefer\
         &options=-c%20statement_timeout%3D0&target_session_attrs=read-write"
    );
    let config = PgConfig::from_url(&url)
        .unwrap()
        .connect_timeout(Duration::from_millis(300))
        .checkout_timeout(Duration::from_secs(5));
    let err = within_a_minute(PgSessionStore::connect(config))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "got {err:?}");
    let text = chain(&err);
    let refused_at = text
        .find(&format!("127.0.0.1:{refused}: "))
        .unwrap_or_else(|| panic!("names the refusing host: {text}"));
    assert!(text[refused_at..].contains("refused"), "{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{silent}: no connection within 300ms")),
        "names the silent host: {text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
    listener.abort();
}
