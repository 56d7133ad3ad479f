//! The change feed against PostgreSQL: what the triggers publish, what a
//! subscription does when its connection goes, and several instances
//! following one another through it.

use std::collections::BTreeSet;
use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use session_core::testkit::{account, epoch, session_at};
use session_core::{
    AccountId, Change, ChangeFeed, ChangeSubscription, ClientMetadata, Error, MemoryCache,
    SessionService, SessionStore, SessionToken, StoreError, TokenHash,
};
use session_postgres::{CHANGES_CHANNEL, PgConfig, PgSessionStore};
use session_test_postgres::TestDatabase;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::support::{chain, fresh_store, migrated_store, sql_client};

/// Fails the test instead of hanging it; not a measure of speed.
async fn within_a_minute<T>(operation: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), operation)
        .await
        .expect("hung instead of answering")
}

/// Polls `condition` every few milliseconds until it holds, within a minute.
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    within_a_minute(async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(condition(), "{what}");
}

async fn next(subscription: &mut Box<dyn ChangeSubscription>) -> Change {
    within_a_minute(subscription.next_change()).await.unwrap()
}

/// Inserts a marker session and requires it to be the next change, so
/// nothing else was published before it (changes arrive in commit order).
async fn nothing_else_published(
    store: &PgSessionStore,
    subscription: &mut Box<dyn ChangeSubscription>,
) {
    let (_, marker) = session_at(account(), epoch());
    store.insert(&marker).await.unwrap();
    assert_eq!(next(subscription).await, Change::Created(marker));
}

/// Collects revocations until `expected` hashes arrived; anything else fails.
async fn all_revoked(
    subscription: &mut Box<dyn ChangeSubscription>,
    expected: &BTreeSet<TokenHash>,
) {
    let mut seen = BTreeSet::new();
    while seen.len() < expected.len() {
        let Change::Revoked(hashes) = next(subscription).await else {
            panic!("a creation arrived among the revocations");
        };
        for hash in hashes {
            assert!(expected.contains(&hash), "{hash:?} was not revoked");
            assert!(seen.insert(hash), "{hash:?} arrived twice");
        }
    }
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

/// A plain LISTEN client on the channel, to see the payloads themselves.
struct RawListener {
    _client: tokio_postgres::Client,
    payloads: mpsc::UnboundedReceiver<String>,
}

impl RawListener {
    async fn start(url: &str) -> Self {
        let (client, mut connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
        let (sender, payloads) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(message)) = poll_fn(|cx| connection.poll_message(cx)).await {
                if let AsyncMessage::Notification(notification) = message {
                    let _ = sender.send(notification.payload().to_owned());
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {CHANGES_CHANNEL}"))
            .await
            .unwrap();
        Self {
            _client: client,
            payloads,
        }
    }

    async fn next(&mut self) -> String {
        within_a_minute(self.payloads.recv())
            .await
            .expect("the listener stopped")
    }
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

fn with_param(url: &str, param: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{param}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_or_failed_write_publishes_nothing() {
    let (database, store) = fresh_store().await;
    let active = {
        let (_, session) = session_at(account(), epoch());
        store.insert(&session).await.unwrap();
        session
    };
    let mut subscription = store.subscribe().await.unwrap();

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
    // A store insert that fails (a repeated hash) publishes nothing either.
    let (_, mut duplicate) = session_at(account(), epoch());
    duplicate.token_hash = active.token_hash;
    assert!(matches!(
        store.insert(&duplicate).await,
        Err(StoreError::DuplicateTokenHash)
    ));

    nothing_else_published(&store, &mut subscription).await;
    assert_eq!(store.get(never.id).await.unwrap(), None);
    assert!(store.get(active.id).await.unwrap().unwrap().is_active());
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// 5,000 revoked in one statement arrive complete, and no payload comes
/// near PostgreSQL's 8000-byte limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_all_of_5000_arrives_whole_in_small_payloads() {
    const SESSIONS: usize = 5_000;
    let (database, store) = fresh_store().await;
    let owner = account();
    insert_directly(database.url(), owner, SESSIONS).await;
    let mut subscription = store.subscribe().await.unwrap();
    let mut raw = RawListener::start(database.url()).await;

    let revoked: BTreeSet<TokenHash> = store
        .revoke_all_for_account(owner, None, epoch())
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(revoked.len(), SESSIONS);
    all_revoked(&mut subscription, &revoked).await;
    nothing_else_published(&store, &mut subscription).await;

    let (mut hashes, mut largest, mut payloads) = (0, 0, 0);
    while hashes < SESSIONS {
        let payload = raw.next().await;
        let json: serde_json::Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(json["v"], 1);
        assert_eq!(json["op"], "revoked");
        hashes += json["token_hashes"].as_array().unwrap().len();
        largest = largest.max(payload.len());
        payloads += 1;
    }
    assert_eq!(hashes, SESSIONS);
    assert!(largest < 8_000, "a payload of {largest} bytes");
    assert!(payloads > 1, "one revoke-all, several notifications");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_that_cannot_be_decoded_ends_the_subscription() {
    let (database, store) = fresh_store().await;
    let client = sql_client(database.url()).await;
    let (_, session) = session_at(account(), epoch());
    let created = |label: &str| {
        format!(
            r#"{{"v": 1, "op": "created", "id": "{}", "account_id": "{}", "token_hash": "{}", "created_at_us": 0, "user_agent": null, "ip": null, "label": "{label}"}}"#,
            session.id,
            session.account_id,
            hex(session.token_hash.as_bytes()),
        )
    };
    let bad_label = created("hunter2\\u0007");
    let cases = [
        ("not json: hunter2", "syntax"),
        (r#"{"v": 2, "op": "created", "hunter2": 1}"#, "version 2"),
        (r#"{"v": 1, "op": "renamed", "hunter2": 1}"#, "shape"),
        (
            r#"{"v": 1, "op": "revoked", "token_hashes": ["hunter2"]}"#,
            "token_hashes",
        ),
        (bad_label.as_str(), "label"),
    ];
    for (payload, says) in cases {
        let mut subscription = store.subscribe().await.unwrap();
        client
            .execute("SELECT pg_notify($1, $2)", &[&CHANGES_CHANNEL, &payload])
            .await
            .unwrap();
        let err = within_a_minute(subscription.next_change())
            .await
            .unwrap_err();
        let text = chain(&err);
        assert!(matches!(err, StoreError::Failed(_)), "{payload}: {err:?}");
        assert!(text.contains(says), "{payload}: says why: {text}");
        assert!(
            text.contains(&format!("{} bytes", payload.len())),
            "{payload}: gives the length: {text}"
        );
        assert!(!text.contains("hunter2"), "echoes the payload: {text}");
        let err = within_a_minute(subscription.next_change())
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Unavailable(_)),
            "ended for good: {err:?}"
        );
    }
    // The same shape, well formed, is a change.
    let mut subscription = store.subscribe().await.unwrap();
    client
        .execute(
            "SELECT pg_notify($1, $2)",
            &[&CHANGES_CHANNEL, &created("laptop")],
        )
        .await
        .unwrap();
    let Change::Created(decoded) = next(&mut subscription).await else {
        panic!("not a creation");
    };
    assert_eq!(decoded.id, session.id);
    assert_eq!(decoded.metadata.label.unwrap().as_str(), "laptop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_listener_fails_at_once_and_a_new_subscription_works() {
    let database = TestDatabase::create();
    let url = with_param(database.url(), "application_name=terminated");
    let store = migrated_store(PgConfig::from_url(&url).unwrap()).await;
    let mut subscription = store.subscribe().await.unwrap();
    let pids = listener_pids(database.url(), "terminated").await;
    assert_eq!(pids.len(), 1, "one listening connection: {pids:?}");
    let terminated: bool = sql_client(database.url())
        .await
        .query_one("SELECT pg_terminate_backend($1)", &[&pids[0]])
        .await
        .unwrap()
        .get(0);
    assert!(terminated);

    let err = within_a_minute(subscription.next_change())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "got {err:?}");
    let err = within_a_minute(subscription.next_change())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable(_)),
        "and again: {err:?}"
    );
    drop(subscription);

    // The pool was not involved, and subscribing again delivers again.
    store.health_check().await.unwrap();
    let mut subscription = store.subscribe().await.unwrap();
    nothing_else_published(&store, &mut subscription).await;
}

/// A proxy that can stop forwarding without closing anything: a peer that
/// vanished, as a dead host or a dropped route looks from this side.
struct FreezingProxy {
    port: u16,
    frozen: Arc<AtomicBool>,
}

impl FreezingProxy {
    async fn start(host: String, target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&frozen);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect((host.as_str(), target)).await.unwrap();
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(forward(client_read, server_write, Arc::clone(&flag)));
                tokio::spawn(forward(server_read, client_write, Arc::clone(&flag)));
            }
        });
        Self { port, frozen }
    }

    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_whose_server_went_silent_fails_after_the_heartbeat() {
    let database = TestDatabase::create();
    let target: tokio_postgres::Config = database.url().parse().unwrap();
    let host = match &target.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(host) => host.clone(),
        other => panic!("a TCP host, not {other:?}"),
    };
    let port = target.get_ports()[0];
    let proxy = FreezingProxy::start(host.clone(), port).await;
    let url = database.url().replacen(
        &format!("{host}:{port}"),
        &format!("127.0.0.1:{}", proxy.port),
        1,
    );
    assert_ne!(url, database.url(), "the URL goes through the proxy");
    let config = PgConfig::from_url(&url)
        .unwrap()
        .feed_heartbeat(Duration::from_millis(50))
        .connect_timeout(Duration::from_millis(500));
    let store = migrated_store(config).await;

    let mut subscription = store.subscribe().await.unwrap();
    // Quiet for many heartbeats: the checks pass and the call keeps waiting.
    assert!(
        tokio::time::timeout(Duration::from_millis(400), subscription.next_change())
            .await
            .is_err(),
        "a quiet, healthy connection is kept"
    );
    let (_, session) = session_at(account(), epoch());
    store.insert(&session).await.unwrap();
    assert_eq!(next(&mut subscription).await, Change::Created(session));

    proxy.freeze();
    let err = within_a_minute(subscription.next_change())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "got {err:?}");
    assert!(chain(&err).contains("did not answer"), "{}", chain(&err));
}

/// As if in another process: a second store on the same database hears the
/// first one's writes, and the other way round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_store_hears_the_first_ones_writes() {
    let (database, first) = fresh_store().await;
    let second = migrated_store(PgConfig::from_url(database.url()).unwrap()).await;
    let mut hears_first = second.subscribe().await.unwrap();
    let mut hears_second = first.subscribe().await.unwrap();

    let owner = account();
    let (_, one) = session_at(owner, epoch());
    let (_, two) = session_at(owner, epoch());
    first.insert(&one).await.unwrap();
    second.insert(&two).await.unwrap();
    first.revoke(one.id, epoch()).await.unwrap();
    second
        .revoke_all_for_account(owner, None, epoch())
        .await
        .unwrap();
    let expected = [
        Change::Created(one.clone()),
        Change::Created(two.clone()),
        Change::Revoked(vec![one.token_hash]),
        Change::Revoked(vec![two.token_hash]),
    ];
    for subscription in [&mut hears_first, &mut hears_second] {
        for change in &expected {
            assert_eq!(&next(subscription).await, change);
        }
    }
}

struct Instance {
    service: SessionService,
    store: Arc<PgSessionStore>,
}

/// A service over a store of its own, following the feed, as a process would.
async fn instance(database: &TestDatabase, name: &str) -> Instance {
    let url = with_param(database.url(), &format!("application_name={name}"));
    let store = Arc::new(migrated_store(PgConfig::from_url(&url).unwrap()).await);
    let service = SessionService::builder(store.clone(), Arc::new(MemoryCache::new()))
        .change_feed(store.clone())
        .build();
    tokio::spawn({
        let service = service.clone();
        async move { service.keep_in_sync().await }
    });
    Instance { service, store }
}

async fn ready(instance: &Instance) {
    within_a_minute(async {
        while !instance.service.readiness().await.is_ready() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

fn applied(instance: &Instance) -> u64 {
    instance.service.sync_stats().changes_applied
}

async fn rejected(instance: &Instance, token: &SessionToken) -> bool {
    matches!(
        instance.service.resolve(token.expose_secret()).await,
        Err(Error::InvalidToken)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_follow_each_other_through_the_database() {
    let database = TestDatabase::create();
    let a = instance(&database, "instance_a").await;
    let b = instance(&database, "instance_b").await;
    ready(&a).await;
    ready(&b).await;

    // Created on A: resolves on B, and reaches B's cache through the feed.
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
        created.session
    );
    until("B applies the creation", || {
        b.service.cached_sessions() == 1
    })
    .await;

    // Revoked on A: rejected by B once B applied it.
    let before = applied(&b);
    a.service.revoke(created.session.id).await.unwrap();
    until("B applies the revocation", || applied(&b) > before).await;
    assert!(rejected(&b, &created.token).await);

    // 5,000 written by a third process: both hear them; revoked on A, every
    // one is rejected by B.
    let owner = account();
    let tokens = insert_directly(database.url(), owner, 5_000).await;
    until("both hold the 5,000", || {
        a.service.cached_sessions() == 5_000 && b.service.cached_sessions() == 5_000
    })
    .await;
    assert!(b.service.resolve(tokens[0].expose_secret()).await.is_ok());
    assert_eq!(a.service.revoke_all(owner, None).await.unwrap(), 5_000);
    until("B drops the 5,000", || b.service.cached_sessions() == 0).await;
    for token in &tokens {
        assert!(rejected(&b, token).await);
    }
    assert_eq!(b.service.sync_stats().resyncs, 0);

    // B's listener is terminated: B resynchronises, and a revocation made
    // meanwhile holds on B.
    let kept = a
        .service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
    let doomed = a
        .service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
    until("B holds both", || b.service.cached_sessions() == 2).await;
    let pids = listener_pids(database.url(), "instance_b").await;
    assert_eq!(pids.len(), 1, "B listens on one connection: {pids:?}");
    sql_client(database.url())
        .await
        .execute("SELECT pg_terminate_backend($1)", &[&pids[0]])
        .await
        .unwrap();
    a.service.revoke(doomed.session.id).await.unwrap();
    until("B notices the loss", || b.service.sync_stats().resyncs == 1).await;
    ready(&b).await;
    assert!(rejected(&b, &doomed.token).await);
    assert!(b.service.resolve(kept.token.expose_secret()).await.is_ok());
    assert!(a.store.health_check().await.is_ok());
}

/// TRUNCATE says nothing of which sessions went: the subscription ends, and
/// a service following the feed loads everything again.
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
    let mut subscription = follower.store.subscribe().await.unwrap();

    sql_client(database.url())
        .await
        .batch_execute("TRUNCATE session.sessions")
        .await
        .unwrap();
    let err = within_a_minute(subscription.next_change())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "got {err:?}");
    assert!(
        chain(&err).contains("truncated"),
        "says why: {}",
        chain(&err)
    );
    until("the follower resynchronises", || {
        follower.service.sync_stats().resyncs >= 1
    })
    .await;
    ready(&follower).await;
    assert_eq!(follower.service.cached_sessions(), 0);
    assert!(rejected(&follower, &created.token).await);
}
