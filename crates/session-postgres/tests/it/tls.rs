//! TLS to a server with a certificate for `localhost` from an authority made
//! for it, each `sslmode` with libpq's meaning.

use std::path::Path;
use std::sync::OnceLock;

use session_core::port::change_log::ChangeLog;
use session_core::port::store::{SessionStore, StoreError};
use session_core::testkit::{account, epoch, session_at};
use session_postgres::{PgConfig, PgSessionStore, SslMode};
use session_test_postgres::{TestDatabase, TestServer};

use crate::support::{chain, sql_client};

/// One TLS server for this module's tests; it is removed when the test process ends.
fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(TestServer::start_with_tls)
}

fn authority() -> &'static Path {
    server()
        .authority_certificate()
        .expect("the server has a TLS authority")
}

fn url(host: &str, database: &TestDatabase, params: &str) -> String {
    format!(
        "postgres://postgres@{host}:{}/{}?{params}",
        server().port(),
        database.name()
    )
}

/// Whether the connections the store holds to `database` are encrypted.
async fn store_uses_tls(database: &TestDatabase) -> bool {
    let admin = sql_client(server().admin_url()).await;
    let row = admin
        .query_one(
            "SELECT count(*), coalesce(bool_and(s.ssl), false) \
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = $1",
            &[&database.name()],
        )
        .await
        .unwrap();
    assert!(row.get::<_, i64>(0) > 0, "the store holds a connection");
    row.get(1)
}

/// Connects, migrates and round-trips a session.
async fn works(url: &str) -> PgSessionStore {
    let store = PgSessionStore::connect(PgConfig::from_url(url).unwrap())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let (_, session) = session_at(account(), epoch());
    store.insert(&session).await.unwrap();
    assert_eq!(store.get(session.id).await.unwrap(), Some(session));
    store
}

async fn refused(url: &str) -> String {
    let err = PgSessionStore::connect(PgConfig::from_url(url).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "got {err:?}");
    chain(&err)
}

/// An authority the server's certificate does not come from.
fn foreign_authority() -> tempfile::NamedTempFile {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let pem = params.self_signed(&key).unwrap().pem();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), pem).unwrap();
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_checks_the_chain_and_the_name() {
    let database = server().create_database();
    let ca = authority().display().to_string();
    let by_name = url(
        "localhost",
        &database,
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    assert_eq!(
        PgConfig::from_url(&by_name).unwrap().ssl_mode(),
        SslMode::VerifyFull
    );
    let _store = works(&by_name).await;
    assert!(store_uses_tls(&database).await);

    // The certificate names localhost, not 127.0.0.1.
    let err = refused(&url(
        "127.0.0.1",
        &database,
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await;
    assert!(err.contains("certificate"), "says why: {err}");
}

/// With several hosts, each host's certificate is checked against that
/// host's name: the certificate names localhost, so as 127.0.0.1 the server
/// is refused and as localhost, the next host, it is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_checks_each_host_by_its_own_name() {
    let database = server().create_database();
    let ca = authority().display().to_string();
    let port = server().port();
    let hosts = |first: &str, second: &str| {
        format!(
            "postgres://postgres@{first}:{port},{second}:{port}/{}\
             ?sslmode=verify-full&sslrootcert={ca}&target_session_attrs=read-write",
            database.name()
        )
    };
    let _store = works(&hosts("127.0.0.1", "localhost")).await;
    assert!(store_uses_tls(&database).await);

    let err = refused(&hosts("127.0.0.1", "127.0.0.1")).await;
    let each = format!(
        "127.0.0.1:{port}: error performing TLS handshake: invalid peer certificate: \
         certificate not valid for name \"127.0.0.1\""
    );
    // The innermost of the chain's layers, each of which repeats its cause.
    let innermost = err
        .rsplit("no host accepted a connection: ")
        .next()
        .unwrap();
    assert_eq!(
        innermost.matches(&each).count(),
        2,
        "each host says why: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_ca_checks_the_chain_but_not_the_name() {
    let database = server().create_database();
    let ca = authority().display().to_string();
    let _store = works(&url(
        "127.0.0.1",
        &database,
        &format!("sslmode=verify-ca&sslrootcert={ca}"),
    ))
    .await;
    assert!(store_uses_tls(&database).await);

    let foreign = foreign_authority();
    let err = refused(&url(
        "127.0.0.1",
        &database,
        &format!("sslmode=verify-ca&sslrootcert={}", foreign.path().display()),
    ))
    .await;
    assert!(err.contains("certificate"), "says why: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_encrypts_without_checking_unless_given_a_root() {
    let database = server().create_database();
    let _store = works(&url("127.0.0.1", &database, "sslmode=require")).await;
    assert!(store_uses_tls(&database).await);

    // As in libpq, a root certificate makes `require` check the chain.
    let foreign = foreign_authority();
    let err = refused(&url(
        "127.0.0.1",
        &database,
        &format!("sslmode=require&sslrootcert={}", foreign.path().display()),
    ))
    .await;
    assert!(err.contains("certificate"), "says why: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_sslmode_tls_is_used_when_the_server_offers_it() {
    let database = server().create_database();
    let _store = works(&url("127.0.0.1", &database, "application_name=tls-test")).await;
    assert!(store_uses_tls(&database).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_stays_in_plain_text() {
    let database = server().create_database();
    let _store = works(&url("127.0.0.1", &database, "sslmode=disable")).await;
    assert!(!store_uses_tls(&database).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_fails_against_a_server_without_tls() {
    let database = TestDatabase::create();
    let err = refused(&format!("{}?sslmode=require", database.url())).await;
    assert!(err.to_lowercase().contains("tls"), "says why: {err}");
}

/// The wake-up listener's own connection uses the pool's TLS settings:
/// verified by name, encrypted, and it wakes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wake_up_listener_uses_the_same_tls() {
    let database = server().create_database();
    let ca = authority().display().to_string();
    let store = works(&url(
        "localhost",
        &database,
        &format!("sslmode=verify-full&sslrootcert={ca}&application_name=tls-change-log"),
    ))
    .await;
    let mut wake_ups = store.wake_ups().await.unwrap();

    let admin = sql_client(server().admin_url()).await;
    let listener_ssl: Vec<bool> = admin
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = $1 AND a.application_name = 'tls-change-log' AND a.query = $2",
            &[
                &database.name(),
                &format!("LISTEN {}", session_postgres::CHANGES_CHANNEL),
            ],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(listener_ssl, [true], "one listener, encrypted");

    let (_, session) = session_at(account(), epoch());
    store.insert(&session).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(60), wake_ups.next())
        .await
        .expect("hung instead of waking")
        .unwrap();
}
