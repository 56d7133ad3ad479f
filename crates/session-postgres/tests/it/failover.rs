//! Several hosts in one URL, as libpq takes them: each tried in turn, a
//! standby passed over for the primary, a host that never answers costing
//! only its connect timeout; and two instances riding out a crash of the
//! primary and the promotion of its synchronous standby, every acknowledged
//! write kept and every acknowledged revocation in force on both, including
//! one logged under a transaction id the promoted standby handed out again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use session_core::port::store::{SessionStore, StoreError};
use session_core::testkit::{account, epoch, session_at};
use session_core::{ClientMetadata, Error, NewSession, SessionId};
use session_postgres::{PgConfig, PgSessionStore};
use session_test_postgres::{TestDatabase, TestServer};
use session_test_process::free_port;

use crate::support::{
    Instance, chain, instance_on, is_ready, migrated_store, ready, ready_pair, rejected,
    sql_client, until, within_a_minute,
};

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
    let refused = free_port().unwrap();
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

/// What instance A's writer was told, with when.
#[derive(Default)]
struct Ledger {
    /// Creations acknowledged, oldest first.
    created: Vec<(NewSession, Instant)>,
    /// Revocations acknowledged (revoked, or found revoked by an earlier
    /// attempt that failed after committing).
    revoked: Vec<(SessionId, Instant)>,
    /// Acknowledged sessions a revocation did not find: lost writes.
    lost: Vec<SessionId>,
    /// Operations that failed; each may have committed or not.
    failed: usize,
}

impl Ledger {
    fn revoked_ids(&self) -> HashSet<SessionId> {
        self.revoked.iter().map(|(id, _)| *id).collect()
    }
}

/// Creates sessions through `instance` until `stop`, and revokes the oldest
/// acknowledged ones, one for every two created; a failed revocation is
/// tried again. Counts acknowledged operations in `acknowledged`.
async fn write_until(instance: &Instance, stop: &AtomicBool, acknowledged: &AtomicUsize) -> Ledger {
    let service = &instance.service;
    let mut ledger = Ledger::default();
    let mut next_to_revoke = 0;
    while !stop.load(Ordering::SeqCst) {
        let mut failed = false;
        match service.create(account(), ClientMetadata::default()).await {
            Ok(created) => {
                ledger.created.push((created, Instant::now()));
                acknowledged.fetch_add(1, Ordering::SeqCst);
            }
            Err(_) => failed = true,
        }
        if ledger.created.len() > 2 * next_to_revoke {
            let id = ledger.created[next_to_revoke].0.session.id;
            match service
                .revoke(id, session_core::RevocationReason::LOGOUT)
                .await
            {
                Ok(_) => {
                    ledger.revoked.push((id, Instant::now()));
                    acknowledged.fetch_add(1, Ordering::SeqCst);
                    next_to_revoke += 1;
                }
                Err(Error::NotFound) => {
                    ledger.lost.push(id);
                    next_to_revoke += 1;
                }
                Err(_) => failed = true,
            }
        }
        if failed {
            ledger.failed += 1;
            // The database is out of reach: no need to spin.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    ledger
}

/// Waits until `instance` has read the whole change log in a read that
/// started after `since`: everything committed before `since` is applied.
async fn caught_up_since(instance: &Instance, since: Instant) {
    until("the instance reads the log to its end", || {
        instance
            .service
            .status()
            .change_log
            .and_then(|lag| lag.lag)
            .is_some_and(|lag| lag < since.elapsed())
    })
    .await;
}

/// Samples both instances' readiness every 10 ms until `stop`, and returns
/// for each when it was first and last seen not ready, if ever.
async fn watch_readiness(
    instances: [Arc<Instance>; 2],
    stop: Arc<AtomicBool>,
) -> [Option<(Instant, Instant)>; 2] {
    let mut not_ready = [None; 2];
    while !stop.load(Ordering::SeqCst) {
        for (instance, span) in instances.iter().zip(&mut not_ready) {
            if !is_ready(instance).await {
                let now = Instant::now();
                *span = Some(span.map_or((now, now), |(first, _)| (first, now)));
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    not_ready
}

/// Instances A and B share a primary with a synchronous standby, reached
/// through a URL naming both. While A creates and revokes sessions, the
/// primary is killed and the standby promoted. Afterwards every write A was
/// told succeeded is in the database, every revocation it was told of is in
/// force on A and on B, both caches hold exactly the database's active
/// sessions, and both followed the log across the promotion from their
/// cursors, without loading everything again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_ride_out_a_primary_crash_and_a_promotion() {
    let primary = TestServer::start_primary();
    let standby = primary.start_standby();
    let database = primary.create_database();
    let hosts = |first: &TestServer, second: &TestServer| {
        format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{}?target_session_attrs=read-write",
            first.port(),
            second.port(),
            database.name()
        )
    };
    let url = hosts(&primary, &standby);
    // Migrated through the primary, as instance_on does, before anything fails.
    let a = Arc::new(instance_on(&url, "instance_a").await);
    let b = Arc::new(instance_on(&url, "instance_b").await);
    ready(&a).await;
    ready(&b).await;

    // read-write passes over a standby named first.
    let standby_first = PgSessionStore::connect(
        PgConfig::from_url(&hosts(&standby, &primary))
            .unwrap()
            .connect_timeout(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    standby_first
        .insert(&session_at(account(), epoch()).1)
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn({
        let (a, stop, acknowledged) = (a.clone(), stop.clone(), acknowledged.clone());
        async move { write_until(&a, &stop, &acknowledged).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    // B holds every session acknowledged before this point, so a revocation
    // of one of them that B later honours came to B through the log.
    let cached_by_b = Instant::now();
    caught_up_since(&b, cached_by_b).await;

    let watch_stop = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch_readiness([a.clone(), b.clone()], watch_stop.clone()));
    tokio::task::block_in_place(|| primary.crash());
    // From here, whatever is acknowledged went through the standby.
    let crashed_at = Instant::now();
    let acknowledged_at_crash = acknowledged.load(Ordering::SeqCst);
    // As an orchestrator would, take a moment to decide: meanwhile every
    // connection is refused by the first host and turned away by the
    // second, which does not accept writes yet.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let promotion_asked_at = Instant::now();
    tokio::task::block_in_place(|| standby.promote());
    let promoted_in = promotion_asked_at.elapsed();
    // Both follow the new primary: each has read its log to the end.
    caught_up_since(&a, promotion_asked_at).await;
    caught_up_since(&b, promotion_asked_at).await;
    let followed_after = promotion_asked_at.elapsed();

    // Writes go on through the new primary.
    within_a_minute(async {
        while acknowledged.load(Ordering::SeqCst) < acknowledged_at_crash + 20 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let ledger = writer.await.unwrap();
    let stopped_at = Instant::now();
    ready(&a).await;
    ready(&b).await;
    caught_up_since(&a, stopped_at).await;
    caught_up_since(&b, stopped_at).await;
    watch_stop.store(true, Ordering::SeqCst);
    let not_ready = watcher.await.unwrap();

    let first_write_after = ledger
        .created
        .iter()
        .map(|(_, at)| *at)
        .chain(ledger.revoked.iter().map(|(_, at)| *at))
        .filter(|at| *at > promotion_asked_at)
        .min()
        .map(|at| at - promotion_asked_at);
    eprintln!(
        "failover: promotion asked for 1 s after the kill, done in {promoted_in:?}; \
         after the request, first write acknowledged in {first_write_after:?}, A and B read \
         the new primary's log to its end in {followed_after:?}; not ready (A, B) from..to \
         after the kill: {:?}; {} operations acknowledged, {} failed",
        not_ready.map(|span| span.map(|(from, to)| (from - crashed_at, to - crashed_at))),
        acknowledged.load(Ordering::SeqCst),
        ledger.failed,
    );

    assert_eq!(
        ledger.lost,
        Vec::<SessionId>::new(),
        "acknowledged, then gone"
    );
    let revoked = ledger.revoked_ids();
    for (created, _) in &ledger.created {
        let id = created.session.id;
        let stored = a.store.get(id).await.unwrap();
        let stored = stored.unwrap_or_else(|| panic!("acknowledged session {id} is lost"));
        if revoked.contains(&id) {
            assert!(
                !stored.is_active(),
                "acknowledged revocation of {id} is lost"
            );
            // Refused, exactly: "invalid", never "busy", though B reloaded
            // and so keeps no tombstones of these.
            for (name, instance) in [("A", &a), ("B", &b)] {
                let answer = instance
                    .service
                    .resolve(created.token.expose_secret())
                    .await;
                assert!(
                    matches!(answer, Err(Error::InvalidToken)),
                    "{name} accepts revoked {id}: {answer:?}"
                );
            }
        } else {
            assert!(stored.is_active(), "{id} was never revoked");
            let token = created.token.expose_secret();
            assert_eq!(a.service.resolve(token).await.unwrap().id, id);
            assert_eq!(b.service.resolve(token).await.unwrap().id, id);
        }
    }
    // Nothing is held that the database no longer has active, and nothing
    // active is missing, including what was written but never acknowledged.
    let promoted = format!(
        "postgres://postgres@127.0.0.1:{}/{}",
        standby.port(),
        database.name()
    );
    let active: i64 = sql_client(&promoted)
        .await
        .query_one(
            "SELECT count(*) FROM session.sessions WHERE revoked_at IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let active = usize::try_from(active).unwrap();
    assert_eq!(a.service.status().cached_sessions, active);
    assert_eq!(b.service.status().cached_sessions, active);

    let created_at: HashMap<SessionId, Instant> = ledger
        .created
        .iter()
        .map(|(created, at)| (created.session.id, *at))
        .collect();
    let held_by_b_then_revoked_after_promotion = |(id, revoked_at): &&(SessionId, Instant)| {
        created_at[id] < cached_by_b && *revoked_at > promotion_asked_at
    };
    let followed_across = ledger
        .revoked
        .iter()
        .filter(held_by_b_then_revoked_after_promotion)
        .count();
    assert!(
        followed_across > 0,
        "no session B held before the crash was revoked after the promotion"
    );
    // A promotion starts a new epoch of the log: transaction ids the old
    // primary used may be handed out again, so every cursor of the old
    // epoch expires and each instance loads everything once more.
    for (name, instance) in [("A", &a), ("B", &b)] {
        let stats = instance.service.status().change_log_stats;
        assert_eq!(
            stats.full_loads, 2,
            "{name} reloaded once, after the promotion: {stats:?}"
        );
    }
}

/// A follower's cursor can pass a transaction id the standby never heard of,
/// and after promotion the new primary hands that id out again, here to a
/// revocation: the promotion's new epoch expires the cursor, so the follower
/// reloads rather than skip it.
///
/// Commits under synchronous replication reach the standby before they are
/// acknowledged, but an abort is never waited for. A transaction that took
/// an id and rolled back (here an insert refused as a duplicate) moves
/// `pg_snapshot_xmin` past its id on the primary at once, and a follower
/// settles past it; if the primary then dies before that abort's WAL is
/// streamed, the promoted standby's next id is the aborted one. The standby
/// is stopped here to hold that window open; in production it is the last
/// moments before a crash, and the aborted transaction may be in any
/// database of the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_behind_a_reused_transaction_id_reaches_followers() {
    let primary = TestServer::start_primary();
    let standby = primary.start_standby();
    let database = primary.create_database();
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{}?target_session_attrs=read-write",
        primary.port(),
        standby.port(),
        database.name()
    );
    let (a, b) = ready_pair(&url).await;
    let doomed = a
        .service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
    until("B holds it", || b.service.status().cached_sessions == 1).await;

    tokio::task::block_in_place(|| standby.stop());
    let (_, mut duplicate) = session_at(account(), epoch());
    duplicate.token_hash = doomed.session.token_hash;
    assert!(matches!(
        a.store.insert(&duplicate).await,
        Err(StoreError::DuplicateTokenHash)
    ));
    caught_up_since(&b, Instant::now()).await;
    tokio::task::block_in_place(|| {
        primary.crash();
        standby.start_again();
        standby.promote();
    });

    a.service
        .revoke(doomed.session.id, session_core::RevocationReason::LOGOUT)
        .await
        .unwrap();
    caught_up_since(&b, Instant::now()).await;
    assert!(
        rejected(&b, &doomed.token).await,
        "B still accepts a session revoked after the failover"
    );
    assert_eq!(b.service.status().change_log_stats.full_loads, 2);
}
