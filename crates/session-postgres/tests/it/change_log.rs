//! The change log against PostgreSQL: what the triggers log, what a reader
//! may take as final, what a notification may do (wake, nothing else), and
//! several instances following one another through it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use session_core::port::change_log::{Change, ChangeLog, LogCursor, LogRead};
use session_core::port::events::{self as feed, EventCursor, EventRead};
use session_core::port::store::{Exclusive, RetentionAction, SeenAt, SessionStore, StoreError};
use session_core::testkit::{account, epoch, session_at};
use session_core::token::TokenHash;
use session_core::{AccountId, ClientMetadata, SessionToken};
use session_postgres::{CHANGES_CHANNEL, PgConfig, PgSessionStore};
use session_test_postgres::TestDatabase;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{
    Instance, chain, fresh_store, instance_configured, instance_on, is_ready, migrated_store,
    ready, ready_pair, rejected, sql_client, until, within_a_minute,
};

/// Every change after `from`, and the cursor the reads reached.
async fn read_all(store: &PgSessionStore, from: &LogCursor) -> (Vec<Change>, LogCursor) {
    let mut changes = Vec::new();
    let mut after = from.clone();
    loop {
        let LogRead::Page(page) = store.read(&after, 1_000).await.unwrap() else {
            panic!("the log expired a live cursor");
        };
        changes.extend(page.entries);
        after = page.next;
        if !page.more {
            return (changes, after);
        }
    }
}

pub(crate) async fn changes_since(store: &PgSessionStore, from: &LogCursor) -> Vec<Change> {
    read_all(store, from).await.0
}

fn revoked_hashes(changes: Vec<Change>) -> BTreeSet<TokenHash> {
    let mut hashes = BTreeSet::new();
    for change in changes {
        let Change::Revoked(revoked) = change else {
            panic!("expected only revocations, found {change:?}");
        };
        for hash in revoked {
            assert!(hashes.insert(hash), "{hash:?} logged twice");
        }
    }
    hashes
}

/// Inserts active sessions for `owner` in one statement, as a process other
/// than the store (or a bulk import) would, and returns their tokens.
async fn insert_directly(url: &str, owner: AccountId, count: usize) -> Vec<SessionToken> {
    let client = sql_client(url).await;
    let tokens: Vec<SessionToken> = (0..count).map(|_| SessionToken::generate()).collect();
    let ids: Vec<String> = (0..count)
        .map(|_| session_core::SessionId::new().to_string())
        .collect();
    let hashes: Vec<Vec<u8>> = tokens
        .iter()
        .map(|t| t.hash().as_bytes().to_vec())
        .collect();
    client
        .execute(
            "INSERT INTO session.sessions (id, account_id, token_hash, created_at) \
             SELECT id::uuid, $2::text::uuid, hash, now() \
             FROM unnest($1::text[], $3::bytea[]) AS t(id, hash)",
            &[&ids, &owner.to_string(), &hashes],
        )
        .await
        .unwrap();
    tokens
}

/// The backend process ids of the connections listening on the channel,
/// for the connections whose `application_name` is `name`.
async fn listener_pids(url: &str, name: &str) -> Vec<i32> {
    sql_client(url)
        .await
        .query(
            "SELECT pid FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = $1 \
               AND query = $2",
            &[&name, &format!("LISTEN {CHANGES_CHANNEL}")],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_or_failed_write_logs_nothing() {
    let (database, store) = fresh_store().await;
    let active = {
        let (_, session) = session_at(account(), epoch());
        store.insert(&session).await.unwrap();
        session
    };
    let start = store.head().await.unwrap();

    // An insert and a revocation, both rolled back.
    let client = sql_client(database.url()).await;
    let (_, never) = session_at(account(), epoch());
    client
        .batch_execute(&format!(
            "BEGIN; \
             INSERT INTO session.sessions (id, account_id, token_hash, created_at) \
                 VALUES ('{}', '{}', '\\x{}', now()); \
             UPDATE session.sessions SET revoked_at = now() WHERE id = '{}'; \
             ROLLBACK",
            never.id,
            never.account_id,
            hex(never.token_hash.as_bytes()),
            active.id,
        ))
        .await
        .unwrap();
    // A transaction whose last statement fails commits nothing.
    let failed = client
        .batch_execute(&format!(
            "BEGIN; \
             UPDATE session.sessions SET revoked_at = now() WHERE id = '{}'; \
             INSERT INTO session.sessions (id, account_id, token_hash, created_at) \
                 VALUES ('{}', '{}', '\\x00', now()); \
             COMMIT",
            active.id, never.id, never.account_id,
        ))
        .await;
    assert!(failed.is_err(), "the 1-byte hash is rejected");
    client.batch_execute("ROLLBACK").await.unwrap();
    // A store insert that fails (a repeated hash) logs nothing either.
    let (_, mut duplicate) = session_at(account(), epoch());
    duplicate.token_hash = active.token_hash;
    assert!(matches!(
        store.insert(&duplicate).await,
        Err(StoreError::DuplicateTokenHash)
    ));

    assert_eq!(changes_since(&store, &start).await, Vec::new());
    assert_eq!(store.get(never.id).await.unwrap(), None);
    assert!(store.get(active.id).await.unwrap().unwrap().is_active());
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Entries of a transaction that commits late, behind a reader that already
/// read a later transaction's entries, are still read, once; and the
/// reader never reads again what it was given while that transaction was
/// open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_committing_transaction_is_read_once_and_holds_nothing_back() {
    let (database, store) = fresh_store().await;
    let start = store.head().await.unwrap();
    let (_, early) = session_at(account(), epoch());
    let (_, late) = session_at(account(), epoch());
    // The earlier transaction takes its number first and commits last.
    let slow = sql_client(database.url()).await;
    slow.batch_execute(&format!(
        "BEGIN; INSERT INTO session.sessions (id, account_id, token_hash, created_at) \
         VALUES ('{}', '{}', '\\x{}', now())",
        early.id,
        early.account_id,
        hex(early.token_hash.as_bytes()),
    ))
    .await
    .unwrap();
    store.insert(&late).await.unwrap();

    let (changes, next) = read_all(&store, &start).await;
    assert_eq!(changes, vec![Change::Created(late.clone())]);
    let (_, later) = session_at(account(), epoch());
    store.insert(&later).await.unwrap();
    let (changes, next) = read_all(&store, &next).await;
    assert_eq!(
        changes,
        vec![Change::Created(later)],
        "what was read while the transaction was open is not read again"
    );
    slow.batch_execute("COMMIT").await.unwrap();
    let (changes, next) = read_all(&store, &next).await;
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(
        matches!(&changes[0], Change::Created(session) if session.id == early.id),
        "the late commit was read: {changes:?}"
    );
    assert_eq!(read_all(&store, &next).await.0, Vec::new());
}

/// A transaction that took its id after the newest one to complete is
/// neither visible to a read nor in its snapshot's open list (PostgreSQL
/// lists only ids below the snapshot's xmax): its entries, numbered below
/// ones the read returned, are still read once it commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_past_the_snapshots_xmax_is_still_read() {
    let (database, store) = fresh_store().await;
    let start = store.head().await.unwrap();
    let insert = |session: &session_core::Session| {
        format!(
            "INSERT INTO session.sessions (id, account_id, token_hash, created_at) \
             VALUES ('{}', '{}', '\\x{}', now())",
            session.id,
            session.account_id,
            hex(session.token_hash.as_bytes()),
        )
    };
    let (_, unlisted) = session_at(account(), epoch());
    let (_, first) = session_at(account(), epoch());
    let (one, two) = (
        sql_client(database.url()).await,
        sql_client(database.url()).await,
    );
    // One takes an id, then two; two's entry is numbered first, one's
    // second, and one commits: two's id is past every completed one.
    one.batch_execute("BEGIN; SELECT pg_current_xact_id()")
        .await
        .unwrap();
    two.batch_execute("BEGIN; SELECT pg_current_xact_id()")
        .await
        .unwrap();
    two.batch_execute(&insert(&unlisted)).await.unwrap();
    one.batch_execute(&insert(&first)).await.unwrap();
    one.batch_execute("COMMIT").await.unwrap();

    let created = |changes: Vec<Change>| -> Vec<session_core::SessionId> {
        changes
            .into_iter()
            .map(|change| match change {
                Change::Created(session) => session.id,
                other => panic!("expected only creations, found {other:?}"),
            })
            .collect()
    };
    let (changes, next) = read_all(&store, &start).await;
    assert_eq!(created(changes), vec![first.id]);
    two.batch_execute("COMMIT").await.unwrap();
    let (changes, next) = read_all(&store, &next).await;
    assert_eq!(created(changes), vec![unlisted.id], "read once committed");
    assert_eq!(read_all(&store, &next).await.0, Vec::new());
}

/// 5,000 revoked in one statement are logged whole, each hash once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_all_of_5000_is_logged_whole() {
    const SESSIONS: usize = 5_000;
    let (database, store) = fresh_store().await;
    let owner = account();
    insert_directly(database.url(), owner, SESSIONS).await;
    let start = store.head().await.unwrap();
    let revoked: BTreeSet<TokenHash> = store
        .revoke_all_for_account(
            owner,
            None,
            epoch(),
            session_core::RevocationReason::LOGOUT,
            None,
        )
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(revoked.len(), SESSIONS);
    assert_eq!(revoked_hashes(changes_since(&store, &start).await), revoked);
}

/// Entries older than the retention window are pruned, and a cursor among
/// them expires; emptying the log by hand expires every cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_or_emptying_the_log_expires_the_cursors_it_passed() {
    let database = TestDatabase::create();
    let config = PgConfig::from_url(database.url())
        .unwrap()
        .change_retention(Duration::from_secs(1));
    let store = migrated_store(config).await;
    let old = store.head().await.unwrap();
    store
        .insert(&session_at(account(), epoch()).1)
        .await
        .unwrap();
    assert_eq!(store.prune().await.unwrap(), 0, "nothing is old yet");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(store.prune().await.unwrap(), 1);
    assert!(matches!(
        store.read(&old, 100).await.unwrap(),
        LogRead::Expired
    ));

    let fresh = store.head().await.unwrap();
    let (_, session) = session_at(account(), epoch());
    store.insert(&session).await.unwrap();
    assert_eq!(
        changes_since(&store, &fresh).await,
        vec![Change::Created(session)]
    );
    sql_client(database.url())
        .await
        .batch_execute("TRUNCATE session.changes")
        .await
        .unwrap();
    assert!(matches!(
        store.read(&fresh, 100).await.unwrap(),
        LogRead::Expired
    ));
}

/// A proxy that can stop forwarding without closing anything (a peer that
/// vanished, as a dead host looks from this side), or cut every connection
/// and refuse new ones (a network partition) until restored.
struct Proxy {
    port: u16,
    frozen: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
    forwarding: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(host: String, target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicBool::new(false));
        let forwarding = Arc::new(std::sync::Mutex::new(Vec::new()));
        tokio::spawn({
            let (frozen, cut, forwarding) = (frozen.clone(), cut.clone(), forwarding.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        continue;
                    }
                    let server = TcpStream::connect((host.as_str(), target)).await.unwrap();
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let mut tasks = forwarding.lock().unwrap();
                    tasks.push(tokio::spawn(forward(
                        client_read,
                        server_write,
                        frozen.clone(),
                    )));
                    tasks.push(tokio::spawn(forward(
                        server_read,
                        client_write,
                        frozen.clone(),
                    )));
                }
            }
        });
        Self {
            port,
            frozen,
            cut,
            forwarding,
        }
    }

    /// The database URL through the proxy.
    fn url(&self, database: &TestDatabase) -> String {
        let target: tokio_postgres::Config = database.url().parse().unwrap();
        let tokio_postgres::config::Host::Tcp(host) = &target.get_hosts()[0] else {
            panic!("the test server listens on TCP");
        };
        let port = target.get_ports()[0];
        let url = database.url().replacen(
            &format!("{host}:{port}"),
            &format!("127.0.0.1:{}", self.port),
            1,
        );
        assert_ne!(url, database.url(), "the URL goes through the proxy");
        url
    }

    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for task in self.forwarding.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buffer = vec![0; 16 * 1024];
    while let Ok(read) = from.read(&mut buffer).await {
        if read == 0 {
            return;
        }
        if frozen.load(Ordering::SeqCst) {
            // Hold both sockets open and say nothing, for ever.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

async fn test_server_proxy(database: &TestDatabase) -> Proxy {
    let target: tokio_postgres::Config = database.url().parse().unwrap();
    let tokio_postgres::config::Host::Tcp(host) = &target.get_hosts()[0] else {
        panic!("the test server listens on TCP");
    };
    Proxy::start(host.clone(), target.get_ports()[0]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wake_up_listener_whose_server_went_silent_fails_after_the_heartbeat() {
    let database = TestDatabase::create();
    let proxy = test_server_proxy(&database).await;
    let config = PgConfig::from_url(&proxy.url(&database))
        .unwrap()
        .change_log_heartbeat(Duration::from_millis(50))
        .connect_timeout(Duration::from_millis(500));
    let store = migrated_store(config).await;

    let mut wake_ups = store.wake_ups().await.unwrap();
    // Quiet for many heartbeats: the checks pass and the call keeps waiting.
    assert!(
        tokio::time::timeout(Duration::from_millis(400), wake_ups.next())
            .await
            .is_err(),
        "a quiet, healthy connection is kept"
    );
    store
        .insert(&session_at(account(), epoch()).1)
        .await
        .unwrap();
    within_a_minute(wake_ups.next()).await.unwrap();

    proxy.freeze();
    let err = within_a_minute(wake_ups.next()).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "got {err:?}");
    // The probe cannot be sent through the frozen network, or is sent and
    // never arrives.
    let text = chain(&err);
    assert!(
        text.contains("wake-up probe") || text.contains("did not arrive"),
        "{text}"
    );
}

async fn instance(database: &TestDatabase, name: &str) -> Instance {
    instance_on(database.url(), name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_follow_each_other_through_the_database() {
    let database = TestDatabase::create();
    let (a, b) = ready_pair(database.url()).await;

    // Created on A: resolves on B, and reaches B's cache through the log.
    let created = a
        .service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
    assert_eq!(
        b.service
            .resolve(created.token.expose_secret())
            .await
            .unwrap(),
        session_core::SessionIdentity::from(&*created.session)
    );
    until("B applies the creation", || {
        b.service.status().cached_sessions == 1
    })
    .await;

    // Revoked on A: rejected by B once B applied it (the cache held it
    // from the miss read, and perhaps the log's creation is applied later).
    a.service
        .revoke(created.session.id, session_core::RevocationReason::LOGOUT)
        .await
        .unwrap();
    until("B applies the revocation", || {
        b.service.status().cached_sessions == 0
    })
    .await;
    assert!(rejected(&b, &created.token).await);

    // 5,000 written by a third process: both see them; revoked on A, every
    // one is rejected by B.
    let owner = account();
    let tokens = insert_directly(database.url(), owner, 5_000).await;
    until("both hold the 5,000", || {
        a.service.status().cached_sessions == 5_000 && b.service.status().cached_sessions == 5_000
    })
    .await;
    assert!(b.service.resolve(tokens[0].expose_secret()).await.is_ok());
    assert_eq!(
        a.service
            .revoke_all(owner, None, session_core::RevocationReason::LOGOUT)
            .await
            .unwrap(),
        5_000
    );
    until("B drops the 5,000", || {
        b.service.status().cached_sessions == 0
    })
    .await;
    for token in &tokens {
        assert!(rejected(&b, token).await);
    }

    // B's wake-up listener is terminated: B keeps following by polling.
    let pids = listener_pids(database.url(), "instance_b").await;
    assert_eq!(pids.len(), 1, "B listens on one connection: {pids:?}");
    sql_client(database.url())
        .await
        .execute("SELECT pg_terminate_backend($1)", &[&pids[0]])
        .await
        .unwrap();
    let doomed = a
        .service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
    until("B holds it", || b.service.status().cached_sessions == 1).await;
    a.service
        .revoke(doomed.session.id, session_core::RevocationReason::LOGOUT)
        .await
        .unwrap();
    until("B drops it", || b.service.status().cached_sessions == 0).await;
    assert!(rejected(&b, &doomed.token).await);
    let stats = b.service.status().change_log_stats;
    assert_eq!((stats.full_loads, stats.read_failures), (1, 0), "{stats:?}");
    assert!(a.store.health_check().await.is_ok());
}

/// Behind a pooler that cannot LISTEN (PgBouncer in transaction mode),
/// wake-ups are turned off: the follower opens no listening connection and
/// still applies a revocation, when it next polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_without_wake_ups_applies_revocations_by_polling() {
    let database = TestDatabase::create();
    let a = instance(&database, "instance_a").await;
    let b = instance_configured(database.url(), "instance_b", |config| {
        config.wake_ups(false)
    })
    .await;
    ready(&a).await;
    ready(&b).await;

    let doomed = a
        .service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
    until("B applies the creation", || {
        b.service.status().cached_sessions == 1
    })
    .await;
    a.service
        .revoke(doomed.session.id, session_core::RevocationReason::LOGOUT)
        .await
        .unwrap();
    until("B applies the revocation", || {
        b.service.status().cached_sessions == 0
    })
    .await;
    assert!(rejected(&b, &doomed.token).await);

    // A, with wake-ups on, listens by now, so B would have too.
    let a_listens = listener_pids(database.url(), "instance_a").await;
    assert_eq!(
        a_listens.len(),
        1,
        "A listens on one connection: {a_listens:?}"
    );
    let b_listens = listener_pids(database.url(), "instance_b").await;
    assert!(b_listens.is_empty(), "B listens nowhere: {b_listens:?}");
    let stats = b.service.status().change_log_stats;
    assert_eq!(stats.wake_ups, 0, "{stats:?}");
    assert_eq!((stats.full_loads, stats.read_failures), (1, 0), "{stats:?}");
}

/// A revocation whose transaction took its id before, and committed after,
/// a creation B has already applied, still reaches B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_committing_revocation_reaches_a_follower() {
    let database = TestDatabase::create();
    let (a, b) = ready_pair(database.url()).await;
    let doomed = a
        .service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
    until("B holds it", || b.service.status().cached_sessions == 1).await;

    let slow = sql_client(database.url()).await;
    slow.batch_execute(&format!(
        "BEGIN; UPDATE session.sessions SET revoked_at = now() WHERE id = '{}'",
        doomed.session.id
    ))
    .await
    .unwrap();
    let later = a
        .service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
    until("B applies the later creation", || {
        b.service.status().cached_sessions == 2
    })
    .await;
    assert!(b.service.resolve(later.token.expose_secret()).await.is_ok());
    slow.batch_execute("COMMIT").await.unwrap();
    until("B applies the late revocation", || {
        b.service.status().cached_sessions == 1
    })
    .await;
    assert!(rejected(&b, &doomed.token).await);
}

/// A role with no grant at all can NOTIFY the channel: whatever it sends,
/// with any payload, nothing enters a cache, no instance reloads, and the
/// instance stays ready through a flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_from_a_role_without_grants_mints_nothing() {
    let database = TestDatabase::create();
    let b = instance(&database, "instance_b").await;
    ready(&b).await;
    let victim = b
        .service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();

    let role = format!("intruder_{}", database.name());
    sql_client(database.url())
        .await
        .batch_execute(&format!("CREATE ROLE {role} LOGIN"))
        .await
        .unwrap();
    let mut config: tokio_postgres::Config = database.url().parse().unwrap();
    config.user(&role);
    let (intruder, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    assert!(
        intruder
            .query("SELECT 1 FROM session.sessions", &[])
            .await
            .is_err(),
        "the intruder has no grant on the schema"
    );

    // The payload that used to mint a session: a made-up token's hash for
    // the victim's account.
    let made_up = SessionToken::generate();
    let forged = format!(
        r#"{{"v": 1, "op": "created", "id": "{}", "account_id": "{}", "token_hash": "{}", "created_at_us": 0, "user_agent": null, "ip": null, "label": null}}"#,
        session_core::SessionId::new(),
        victim.session.account_id,
        hex(made_up.hash().as_bytes()),
    );
    let truncated = r#"{"v": 1, "op": "truncated"}"#.to_owned();
    let revoked = format!(
        r#"{{"v": 1, "op": "revoked", "token_hashes": ["{}"]}}"#,
        hex(victim.session.token_hash.as_bytes())
    );
    for payload in [forged, truncated, revoked, "x".to_owned(), String::new()] {
        intruder
            .execute("SELECT pg_notify($1, $2)", &[&CHANGES_CHANNEL, &payload])
            .await
            .unwrap();
    }
    until("B wakes up", || {
        b.service.status().change_log_stats.wake_ups >= 1
    })
    .await;
    // A flood, while B must stay ready throughout.
    let flood = tokio::spawn(async move {
        for _ in 0..500 {
            intruder
                .execute("SELECT pg_notify($1, 'x')", &[&CHANGES_CHANNEL])
                .await
                .unwrap();
        }
    });
    while !flood.is_finished() {
        assert!(is_ready(&b).await);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    flood.await.unwrap();

    assert!(rejected(&b, &made_up).await, "the made-up token is unknown");
    assert!(
        b.service
            .resolve(victim.token.expose_secret())
            .await
            .is_ok()
    );
    assert_eq!(b.service.status().cached_sessions, 1);
    let stats = b.service.status().change_log_stats;
    assert_eq!(stats.full_loads, 1, "no reload: {stats:?}");
    assert!(is_ready(&b).await);
}

/// B loses every connection to the database for ten seconds while 10,000
/// sessions are revoked: it reports not ready once past its staleness
/// bound, and when the network is back it resumes from its cursor, every
/// revocation in force, without loading everything again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cut_off_for_ten_seconds_resumes_from_its_cursor() {
    const SESSIONS: usize = 10_000;
    let database = TestDatabase::create();
    let proxy = test_server_proxy(&database).await;
    let a = instance(&database, "instance_a").await;
    let b = instance_on(&proxy.url(&database), "instance_b").await;
    ready(&a).await;
    ready(&b).await;
    let owner = account();
    let tokens = insert_directly(database.url(), owner, SESSIONS).await;
    let kept = a
        .service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
    until("B holds them all", || {
        b.service.status().cached_sessions == SESSIONS + 1
    })
    .await;

    proxy.cut();
    assert_eq!(
        a.service
            .revoke_all(owner, None, session_core::RevocationReason::LOGOUT)
            .await
            .unwrap(),
        SESSIONS
    );
    until("B is not ready past its bound", || {
        !b.service.status().change_log.unwrap().within_bound()
    })
    .await;
    assert!(!is_ready(&b).await);
    // Resolves keep answering from the cache meanwhile.
    assert!(b.service.resolve(kept.token.expose_secret()).await.is_ok());
    tokio::time::sleep(Duration::from_secs(10)).await;
    proxy.restore();

    ready(&b).await;
    assert_eq!(b.service.status().cached_sessions, 1);
    for token in tokens.iter().step_by(97) {
        assert!(rejected(&b, token).await);
    }
    assert!(b.service.resolve(kept.token.expose_secret()).await.is_ok());
    let stats = b.service.status().change_log_stats;
    assert_eq!(stats.full_loads, 1, "resumed, not reloaded: {stats:?}");
    assert!(stats.read_failures >= 1, "{stats:?}");
}

/// A row the domain rejects, stored by other SQL under an older schema that
/// lacked the check, is skipped and counted; the rows beside it are applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_row_is_skipped_beside_good_ones() {
    let database = TestDatabase::create();
    let b = instance(&database, "instance_b").await;
    ready(&b).await;
    let admin = sql_client(database.url()).await;
    let refused = admin
        .batch_execute(&format!(
            "INSERT INTO session.sessions (id, account_id, token_hash, created_at, label) \
             VALUES ('{}', '{}', '\\x{}', now(), E'two\\nlines')",
            session_core::SessionId::new(),
            account(),
            hex(SessionToken::generate().hash().as_bytes()),
        ))
        .await;
    assert!(refused.is_err(), "the schema refuses what the domain does");
    admin
        .batch_execute(
            "ALTER TABLE session.sessions DISABLE TRIGGER sessions_domain_rules_inserted",
        )
        .await
        .unwrap();
    let good: Vec<SessionToken> = (0..2).map(|_| SessionToken::generate()).collect();
    let rows = [
        (
            session_core::SessionId::new(),
            hex(good[0].hash().as_bytes()),
            "'laptop'",
        ),
        (
            session_core::SessionId::new(),
            hex(SessionToken::generate().hash().as_bytes()),
            "E'two\\nlines'",
        ),
        (
            session_core::SessionId::new(),
            hex(good[1].hash().as_bytes()),
            "NULL",
        ),
    ];
    let values: Vec<String> = rows
        .iter()
        .map(|(id, hash, label)| format!("('{id}', '{}', '\\x{hash}', now(), {label})", account()))
        .collect();
    admin
        .batch_execute(&format!(
            "INSERT INTO session.sessions (id, account_id, token_hash, created_at, label) VALUES {}",
            values.join(", ")
        ))
        .await
        .unwrap();
    until("B applies the good rows", || {
        b.service.status().cached_sessions == 2
    })
    .await;
    until("and counts the poison one", || {
        b.service.status().change_log_stats.rows_skipped == 1
    })
    .await;
    ready(&b).await;
    for token in &good {
        assert!(b.service.resolve(token.expose_secret()).await.is_ok());
    }
    // An instance started now meets it in its warm, and skips it too.
    let c = instance(&database, "instance_c").await;
    ready(&c).await;
    assert_eq!(c.service.status().cached_sessions, 2);
    assert!(c.service.status().change_log_stats.rows_skipped >= 1);
}

/// TRUNCATE says nothing of which sessions went: followers load everything again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_table_makes_followers_load_everything_again() {
    let database = TestDatabase::create();
    let follower = instance(&database, "follower").await;
    ready(&follower).await;
    let created = follower
        .service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
    sql_client(database.url())
        .await
        .batch_execute("TRUNCATE session.sessions")
        .await
        .unwrap();
    until("the follower reloads", || {
        follower.service.status().change_log_stats.full_loads == 2
    })
    .await;
    ready(&follower).await;
    assert_eq!(follower.service.status().cached_sessions, 0);
    assert!(rejected(&follower, &created.token).await);
}

/// A restarted server may hand out again transaction ids of transactions
/// whose abort never reached the disk, which a reader's cursor may have
/// passed: a restart starts a new epoch, and every earlier position expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_expires_every_position() {
    let server = session_test_postgres::TestServer::start();
    let database = server.create_database();
    let store = migrated_store(PgConfig::from_url(database.url()).unwrap()).await;
    let before = store.head().await.unwrap();
    assert!(matches!(
        store.read(&before, 10).await.unwrap(),
        LogRead::Page(_)
    ));
    tokio::task::block_in_place(|| {
        server.stop();
        server.start_again();
    });
    let after = within_a_minute(async {
        loop {
            match store.head().await {
                Ok(head) => return head,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await;
    assert_ne!(after.epoch(), before.epoch());
    assert!(matches!(
        store.read(&before, 10).await.unwrap(),
        LogRead::Expired
    ));
    assert!(matches!(
        store.read(&after, 10).await.unwrap(),
        LogRead::Page(_)
    ));
}

/// The grants docs/ARCHITECTURE.md states are enough: a role that holds
/// only them (the schema migrated by its owner) creates, revokes, follows
/// the log, listens and prunes. The list is read from the document itself,
/// so the document cannot drift from what is tested.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_grants_are_enough_to_serve() {
    let (database, _owner) = fresh_store().await;
    let url = role_with_documented_grants(&database, "service").await;
    let store = Arc::new(
        PgSessionStore::connect(
            PgConfig::from_url(&url)
                .unwrap()
                .change_retention(Duration::from_secs(1)),
        )
        .await
        .unwrap(),
    );
    store.check_schema().await.unwrap();
    let start = store.head().await.unwrap();
    let mut wake_ups = store.wake_ups().await.unwrap();
    let (_, session) = session_at(account(), epoch());
    store.insert(&session).await.unwrap();
    within_a_minute(wake_ups.next()).await.unwrap();
    let seen = [SeenAt {
        id: session.id,
        at: epoch(),
    }];
    store.record_last_seen(&seen).await.unwrap();
    store.record_last_seen(&seen).await.unwrap();
    assert_eq!(store.last_seen(&[session.id]).await.unwrap(), seen);
    store
        .revoke(
            session.id,
            epoch(),
            session_core::RevocationReason::LOGOUT,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        changes_since(&store, &start).await,
        vec![Change::Revoked(vec![session.token_hash])],
        "the creation is left out: the session is revoked by now"
    );
    // Pruning marks what is visible now, and deletes it once the mark is
    // older than the retention window.
    assert_eq!(store.prune().await.unwrap(), 0);
    // The events feed: sequenced, read and pruned with these grants alone.
    let from = EventCursor {
        position: 0,
        ..feed::EventLog::head(&*store).await.unwrap()
    };
    let head = feed::EventLog::sequence(&*store).await.unwrap();
    assert_eq!(head.position, 2, "created, then revoked");
    let EventRead::Page { events, .. } = feed::EventLog::read(&*store, from, 10).await.unwrap()
    else {
        panic!("the feed refused its own start");
    };
    assert_eq!(events.len(), 2);
    assert_eq!(
        feed::EventLog::prune(&*store, epoch() + Duration::from_secs(1), 10)
            .await
            .unwrap(),
        2
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(store.prune().await.unwrap(), 2);
    // Idle revocation, then retention's erase and delete.
    let (_, idle) = session_at(account(), epoch());
    store.insert(&idle).await.unwrap();
    let later = epoch() + time::Duration::days(1);
    let revoked = store
        .revoke_idle(later, None, 10, later, session_core::RevocationReason::IDLE)
        .await
        .unwrap();
    assert!(matches!(revoked, Exclusive::Done(ref sessions) if sessions.len() == 1));
    let after = later + time::Duration::days(1);
    for action in [RetentionAction::Erase, RetentionAction::Delete] {
        store.purge_revoked(after, None, 10, action).await.unwrap();
    }
    assert_eq!(store.get(idle.id).await.unwrap(), None);
}

/// A read of the log that stalls on the server (here behind a lock another
/// transaction holds) fails within the checkout timeout instead of stalling
/// the follower, and the next read, on a fresh connection, works once the
/// stall ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_read_fails_within_the_checkout_timeout() {
    let database = TestDatabase::create();
    let config = PgConfig::from_url(database.url())
        .unwrap()
        .checkout_timeout(Duration::from_millis(500));
    let store = migrated_store(config).await;
    let start = store.head().await.unwrap();
    let holder = sql_client(database.url()).await;
    holder
        .batch_execute("BEGIN; LOCK TABLE session.changes IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), store.read(&start, 10))
        .await
        .expect("the read stalled with the lock")
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "got {err:?}");
    assert!(chain(&err).contains("did not finish"), "{}", chain(&err));
    holder.batch_execute("ROLLBACK").await.unwrap();
    assert!(matches!(
        store.read(&start, 10).await.unwrap(),
        LogRead::Page(_)
    ));
}

/// A connection listening on the log's channel and on `probe`, and each
/// notification it hears: the channel and the sending backend's pid.
async fn listener(
    url: &str,
    probe: &str,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<(String, i32)>,
) {
    let (client, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (sender, heard) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            if let Ok(tokio_postgres::AsyncMessage::Notification(note)) = message {
                let _closed = sender.send((note.channel().to_owned(), note.process_id()));
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {CHANGES_CHANNEL}; LISTEN {probe}"))
        .await
        .unwrap();
    (client, heard)
}

/// The next notification `heard`, within a minute.
async fn next_heard(
    heard: &mut tokio::sync::mpsc::UnboundedReceiver<(String, i32)>,
) -> (String, i32) {
    within_a_minute(heard.recv())
        .await
        .expect("the listener ended")
}

/// Asserts that nothing was heard on the log's channel before now: a
/// `NOTIFY probe` sent now arrives first (a session hears notifications in
/// the order their transactions committed).
async fn nothing_heard(
    prober: &tokio_postgres::Client,
    heard: &mut tokio::sync::mpsc::UnboundedReceiver<(String, i32)>,
    what: &str,
) {
    prober.batch_execute("NOTIFY probe").await.unwrap();
    assert_eq!(next_heard(heard).await.0, "probe", "{what}");
}

/// The inserts of `sessions`, as SQL other than the store's.
fn insert_sql(sessions: &[&session_core::Session]) -> String {
    let values: Vec<String> = sessions
        .iter()
        .map(|session| {
            format!(
                "('{}', '{}', '\\x{}', now())",
                session.id,
                session.account_id,
                hex(session.token_hash.as_bytes())
            )
        })
        .collect();
    format!(
        "INSERT INTO session.sessions (id, account_id, token_hash, created_at) VALUES {}",
        values.join(", ")
    )
}

/// A transaction whose connection sets `session.wake_at_commit` to `on`
/// sends one `NOTIFY session_changes`, from its own backend, when it commits
/// a log entry that takes something away: none before the commit, one
/// however many entries, none if it rolls back, logs nothing or only
/// creates. Other SQL (the setting unset or `off`) wakes no one; readers
/// find its writes when they poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_asking_for_it_wakes_readers_once_at_its_commit() {
    let (database, _store) = fresh_store().await;
    let (prober, mut heard) = listener(database.url(), "probe").await;
    let writer = sql_client(database.url()).await;
    let writer_pid: i32 = writer
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let sessions: Vec<_> = (0..4).map(|_| session_at(account(), epoch()).1).collect();

    let (_, created) = session_at(account(), epoch());
    let (_, rolled_back) = session_at(account(), epoch());
    let revoke_all = "UPDATE session.sessions SET revoked_at = now() WHERE revoked_at IS NULL";
    let silent = [
        (insert_sql(&[&sessions[0]]), "a write without the setting"),
        (
            format!(
                "SET session.wake_at_commit = off; {}",
                insert_sql(&[&sessions[1]])
            ),
            "a write with the setting off",
        ),
        (
            format!(
                "SET session.wake_at_commit = on; {}",
                insert_sql(&[&created])
            ),
            "a creation alone",
        ),
    ];
    for (sql, what) in &silent {
        writer.batch_execute(sql).await.unwrap();
        nothing_heard(&prober, &mut heard, what).await;
    }

    writer
        .batch_execute(&format!(
            "BEGIN; SET LOCAL session.wake_at_commit = on; {}; {revoke_all}",
            insert_sql(&[&sessions[2], &sessions[3]]),
        ))
        .await
        .unwrap();
    nothing_heard(&prober, &mut heard, "before the commit").await;
    writer.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        next_heard(&mut heard).await,
        (CHANGES_CHANNEL.to_owned(), writer_pid),
        "at the commit, from the writing backend"
    );
    nothing_heard(&prober, &mut heard, "once for seven entries").await;

    let silent = [
        (
            format!(
                "BEGIN; SET LOCAL session.wake_at_commit = on; {}; {revoke_all}; ROLLBACK",
                insert_sql(&[&rolled_back])
            ),
            "a revocation rolled back",
        ),
        (
            format!("SET session.wake_at_commit = on; {revoke_all}"),
            "a write that logged nothing",
        ),
    ];
    for (sql, what) in &silent {
        writer.batch_execute(sql).await.unwrap();
        nothing_heard(&prober, &mut heard, what).await;
    }
}

/// The store's revocation that finds no other write that may revoke in
/// flight wakes readers from its own commit; one that overlaps another,
/// and every create, is announced after its commit by the store's `NOTIFY`,
/// a statement of its own (a notifying commit holds a server-wide lock
/// across its WAL flush, so only writes that overlap none notify from their
/// commits, and creates, the bulk of writes, never do).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_revocation_wakes_readers_at_its_commit_and_others_after_theirs() {
    let (database, store) = fresh_store().await;
    let store = Arc::new(store);
    let (_prober, mut heard) = listener(database.url(), "probe").await;
    let observer = sql_client(database.url()).await;
    // What the backend that sent the next notification ran last.
    let mut sent_by = async || -> String {
        let (channel, pid) = next_heard(&mut heard).await;
        assert_eq!(channel, CHANGES_CHANNEL);
        observer
            .query_one("SELECT query FROM pg_stat_activity WHERE pid = $1", &[&pid])
            .await
            .unwrap()
            .get(0)
    };
    let logout = || session_core::RevocationReason::LOGOUT;
    let sessions: Vec<_> = (0..3).map(|_| session_at(account(), epoch()).1).collect();
    for session in &sessions {
        store.insert(session).await.unwrap();
        let sender = sent_by().await;
        assert_eq!(sender, format!("NOTIFY {CHANGES_CHANNEL}"), "a create");
    }

    store
        .revoke(sessions[0].id, epoch(), logout(), None)
        .await
        .unwrap();
    let sender = sent_by().await;
    assert!(
        sender.starts_with("WITH revoked AS (UPDATE"),
        "a lone revocation: {sender}"
    );

    // A revocation held in flight behind a row lock, and another meanwhile.
    let blocker = sql_client(database.url()).await;
    blocker
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM session.sessions WHERE id = '{}' FOR UPDATE",
            sessions[1].id
        ))
        .await
        .unwrap();
    let held = tokio::spawn({
        let store = Arc::clone(&store);
        let id = sessions[1].id;
        async move { store.revoke(id, epoch(), logout(), None).await }
    });
    session_test_process::until_async(
        "the revocation waits for the lock",
        Duration::from_secs(60),
        async || {
            observer
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE wait_event_type = 'Lock' AND datname = current_database()",
                    &[],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
                == 1
        },
    )
    .await
    .unwrap();
    store
        .revoke(sessions[2].id, epoch(), logout(), None)
        .await
        .unwrap();
    let sender = sent_by().await;
    assert_eq!(
        sender,
        format!("NOTIFY {CHANGES_CHANNEL}"),
        "an overlapping revocation"
    );

    blocker.batch_execute("ROLLBACK").await.unwrap();
    within_a_minute(held).await.unwrap().unwrap();
    let sender = sent_by().await;
    assert!(
        sender.starts_with("WITH revoked AS (UPDATE"),
        "the held revocation, alone when it began: {sender}"
    );
}

/// A database URL for a new login role, `<name>_<database>` (roles are the
/// server's, not the database's), that holds exactly the grants of
/// docs/ARCHITECTURE.md.
pub(crate) async fn role_with_documented_grants(database: &TestDatabase, name: &str) -> String {
    let role = format!("{name}_{}", database.name());
    let grants = documented_grants(&role);
    sql_client(database.url())
        .await
        .batch_execute(&format!("CREATE ROLE {role} LOGIN; {grants}"))
        .await
        .unwrap();
    let url = database.url().replacen("postgres@", &format!("{role}@"), 1);
    assert_ne!(url, database.url(), "the URL names the new role");
    url
}

/// The `GRANT` statements of docs/ARCHITECTURE.md's grants block (the
/// ```sql block after "**Grants.**"), granted to `role` instead of `app`,
/// comments dropped.
fn documented_grants(role: &str) -> String {
    const DOC: &str = include_str!("../../../../docs/ARCHITECTURE.md");
    let after = DOC
        .split("**Grants.**")
        .nth(1)
        .expect("docs/ARCHITECTURE.md has a **Grants.** paragraph");
    let block = after
        .split("```sql\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the grants paragraph has a ```sql block");
    let grants: Vec<String> = block
        .lines()
        .map(|line| line.split("--").next().unwrap_or_default().trim())
        .filter(|line| !line.is_empty())
        .map(|line| {
            assert!(
                line.starts_with("GRANT ") && line.ends_with(" TO app;"),
                "each line of the grants block is one `GRANT … TO app;`: {line}"
            );
            line.replace(" TO app;", &format!(" TO {role};"))
        })
        .collect();
    assert!(grants.len() >= 5, "the grants block lists every grant");
    grants.join("\n")
}

/// Transactions held open past the log's retention, as an application left
/// "idle in transaction" would, hold nothing back: one that only took an id
/// (holding the cluster's oldest snapshot), one that has written a session
/// and not committed. Around them, sessions are created and revoked and the
/// log is pruned, round after round: both instances stay ready and caught
/// up, a read returns only what it has not returned, nothing is loaded
/// again, and the held write arrives when it commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_held_open_past_the_retention_hold_nothing_back() {
    const RETENTION: Duration = Duration::from_secs(1);
    let database = TestDatabase::create();
    migrated_store(PgConfig::from_url(database.url()).unwrap()).await;
    let a = instance_configured(database.url(), "instance_a", |config| {
        config.change_retention(RETENTION)
    })
    .await;
    let b = instance_on(database.url(), "instance_b").await;
    ready(&a).await;
    ready(&b).await;

    let idle = sql_client(database.url()).await;
    idle.batch_execute("BEGIN; SELECT pg_current_xact_id();")
        .await
        .unwrap();
    let (held_token, held) = session_at(account(), epoch());
    let writer = sql_client(database.url()).await;
    writer
        .batch_execute(&format!(
            "BEGIN; INSERT INTO session.sessions (id, account_id, token_hash, created_at) \
             VALUES ('{}', '{}', '\\x{}', now())",
            held.id,
            held.account_id,
            hex(held.token_hash.as_bytes()),
        ))
        .await
        .unwrap();

    let mut cursor = a.store.head().await.unwrap();
    let mut pruned = 0;
    for round in 0..4 {
        let mut revoked = Vec::new();
        for _ in 0..50 {
            let created = a
                .service
                .create(account(), ClientMetadata::default())
                .await
                .unwrap();
            a.service
                .revoke(created.session.id, session_core::RevocationReason::LOGOUT)
                .await
                .unwrap();
            revoked.push(created.token);
        }
        // Each read from where the last ended finds this round's entries
        // and nothing older, however long the transactions stay open.
        let (changes, next) = read_all(&a.store, &cursor).await;
        assert_eq!(
            revoked_hashes(changes).len(),
            50,
            "round {round}: this round's revocations, each once"
        );
        cursor = next;
        // A miss waits for a read of the log that started after it: once
        // answered, every revocation above is applied on B.
        assert!(rejected(&b, &SessionToken::generate()).await);
        for token in &revoked {
            assert!(rejected(&b, token).await, "round {round}");
        }
        tokio::time::sleep(RETENTION + Duration::from_millis(100)).await;
        pruned += a.store.prune().await.unwrap();
        assert!(is_ready(&a).await && is_ready(&b).await, "round {round}");
    }
    assert!(
        pruned >= 200,
        "entries of earlier rounds were pruned: {pruned}"
    );
    assert!(matches!(
        a.store.read(&cursor, 10).await.unwrap(),
        LogRead::Page(_)
    ));

    writer.batch_execute("COMMIT").await.unwrap();
    let found = within_a_minute(async {
        loop {
            if let Ok(session) = b.service.resolve(held_token.expose_secret()).await {
                return session;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(found.id, held.id);
    idle.batch_execute("COMMIT").await.unwrap();
    for instance in [&a, &b] {
        let stats = instance.service.status().change_log_stats;
        assert_eq!(stats.full_loads, 1, "no reload: {stats:?}");
    }
}

/// An instance restarted after thousands of revocations it never saw (so
/// it keeps no tombstones of them) answers every revoked token "invalid" as
/// soon as it is ready: never "retry".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_every_revoked_token_is_invalid_at_once() {
    const SESSIONS: usize = 3_000;
    let database = TestDatabase::create();
    let owner = AccountId::new(uuid::Uuid::new_v4()).unwrap();
    let a = instance_on(database.url(), "instance_a").await;
    ready(&a).await;
    let tokens = insert_directly(database.url(), owner, SESSIONS).await;
    assert_eq!(
        a.service
            .revoke_all(owner, None, session_core::RevocationReason::LOGOUT)
            .await
            .unwrap(),
        SESSIONS
    );
    let restarted = instance_on(database.url(), "restarted").await;
    ready(&restarted).await;
    // As the browsers of logged-out users would: all at once, then again.
    for pass in ["first", "again"] {
        let mut answers = tokio::task::JoinSet::new();
        for token in &tokens {
            let service = restarted.service.clone();
            let token = token.expose_secret().to_owned();
            answers.spawn(async move { service.resolve(&token).await });
        }
        while let Some(answer) = answers.join_next().await {
            let answer = answer.unwrap();
            assert!(
                matches!(answer, Err(session_core::Error::InvalidToken)),
                "{pass}: {answer:?}"
            );
        }
    }
    let stats = restarted.service.status().change_log_stats;
    assert!(
        stats.reads < SESSIONS as u64 / 10,
        "misses shared their log reads: {stats:?}"
    );
    assert_eq!(
        stats.miss_waits, SESSIONS as u64,
        "a token found absent is not waited for again: {stats:?}"
    );
}

/// A dump restored over the database while instances run (`pg_restore
/// --clean`) puts back an older log, whose numbering new entries then
/// repeat below a running follower's cursor. The follower still reads
/// them: the read takes every entry of a transaction newer than the
/// cursor's `open_from`, whatever its number (the `late` part of
/// `READ_LOG`), and transaction ids never repeat within a cluster. So a
/// revocation committed after the restore reaches it, and it keeps its
/// cache rather than loading the restored rows, which would accept again
/// a session revoked after the dump was taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_after_a_restore_of_an_older_dump_reaches_a_follower() {
    let database = TestDatabase::create();
    let (a, b) = ready_pair(database.url()).await;
    let kept = a
        .service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
    let revoked_since = a
        .service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
    until("B holds both", || b.service.status().cached_sessions == 2).await;
    let dump = tokio::task::block_in_place(|| database.dump());

    // The log's numbering moves well past the dump's.
    a.service
        .revoke(
            revoked_since.session.id,
            session_core::RevocationReason::LOGOUT,
        )
        .await
        .unwrap();
    for _ in 0..20 {
        let other = a
            .service
            .create(account(), ClientMetadata::default())
            .await
            .unwrap();
        a.service
            .revoke(other.session.id, session_core::RevocationReason::LOGOUT)
            .await
            .unwrap();
    }
    // B holds the newest entry's session once it has read the whole log.
    a.service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
    let passed = a.store.head().await.unwrap().through();
    until("B follows past the dump", || {
        b.service.status().cached_sessions == 2
    })
    .await;
    assert!(rejected(&b, &revoked_since.token).await);

    tokio::task::block_in_place(|| database.restore(&dump));
    a.service
        .revoke(kept.session.id, session_core::RevocationReason::LOGOUT)
        .await
        .unwrap();
    let after = a.store.head().await.unwrap().through();
    assert!(
        after < passed,
        "the restored log numbers again below {passed}: {after}"
    );
    within_a_minute(async {
        while !rejected(&b, &kept.token).await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    ready(&b).await;
    assert!(
        rejected(&b, &revoked_since.token).await,
        "revoked before the restore: still refused, though the restored row is active"
    );
    assert_eq!(b.service.status().change_log_stats.full_loads, 1);
}

/// A log whose rows and numbering were put back from an older copy by
/// other SQL, with the table kept, numbers new entries below a cursor that
/// passed it: the cursor still reads them, as entries of transactions newer
/// than it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_numbered_again_below_the_cursor_are_still_read() {
    let (database, store) = fresh_store().await;
    let start = store.head().await.unwrap();
    let (_, doomed) = session_at(account(), epoch());
    store.insert(&doomed).await.unwrap();
    for _ in 0..3 {
        store
            .insert(&session_at(account(), epoch()).1)
            .await
            .unwrap();
    }
    let (_, passed) = read_all(&store, &start).await;
    let client = sql_client(database.url()).await;
    client
        .batch_execute(&format!(
            "DELETE FROM session.changes WHERE seq > {0};
             SELECT setval('session.changes_seq_seq', {0});",
            start.through().max(1)
        ))
        .await
        .unwrap();
    store
        .revoke(
            doomed.id,
            epoch(),
            session_core::RevocationReason::LOGOUT,
            None,
        )
        .await
        .unwrap();
    let changes = changes_since(&store, &passed).await;
    assert_eq!(
        changes,
        [Change::Revoked(vec![doomed.token_hash])],
        "read below the cursor's number"
    );
}

/// The change log's reads keep their connection between reads, so the
/// reader's timeouts are not set again each time: when the server closes
/// it (a restart, a failover, `pg_terminate_backend`), the next read still
/// succeeds, on a new connection, whether the driver has noticed the close
/// yet or the read finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_read_after_its_kept_connection_was_closed_succeeds() {
    let (database, store) = fresh_store().await;
    let sql = sql_client(database.url()).await;
    let mut cursor = store.head().await.unwrap();
    for round in 0..6 {
        let (_, session) = session_at(account(), epoch());
        store.insert(&session).await.unwrap();
        // Reads until the insert is read: the reader's connection is kept.
        let mut found = false;
        for _ in 0..50 {
            let LogRead::Page(page) = store.read(&cursor, 100).await.unwrap() else {
                panic!("the log covers the cursor");
            };
            cursor = page.next;
            found |= !page.entries.is_empty();
            if found {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(found, "round {round}: the insert was read");
        sql.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
        // Every other round reads at once, before the driver may have
        // seen the close; the others after it has.
        if round % 2 == 1 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            matches!(store.read(&cursor, 100).await, Ok(LogRead::Page(_))),
            "round {round}: a read after the close failed"
        );
    }
}
