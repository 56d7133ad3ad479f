//! Several services on one store, kept in step by its change log: two
//! `SessionService`s over one `MemoryStore` behave as two processes over one
//! database. Time is paused, so backoff sleeps and polls pass instantly.

use std::sync::Arc;

use session_core::config::MissPolicy;
use session_core::memory::MemoryStore;
use session_core::port::cache::SessionCache;
use session_core::port::change_log::ChangeLog;
use session_core::port::clock::ManualClock;
use session_core::port::store::SessionStore;
use session_core::{
    BackgroundTasks, ClientMetadata, Error, MemoryCache, SessionService, SessionToken,
};

use crate::gated::{GatedStore, Point};
use session_core::testkit::account;

struct Instance {
    service: SessionService,
    cache: Arc<MemoryCache>,
    /// Drives the miss-read budget; it moves only when a test advances it.
    clock: Arc<ManualClock>,
    /// Follows the change log for as long as the instance lives.
    _tasks: BackgroundTasks,
}

fn instance(store: Arc<dyn SessionStore>, log: Arc<dyn ChangeLog>, policy: MissPolicy) -> Instance {
    let cache = Arc::new(MemoryCache::new());
    let clock = Arc::new(ManualClock::new(session_core::testkit::epoch()));
    let service = SessionService::builder(store, cache.clone())
        .change_log(log)
        .miss_policy(policy)
        .clock(clock.clone())
        .warm_page_size(2)
        .build();
    let tasks = service.start();
    Instance {
        service,
        cache,
        clock,
        _tasks: tasks,
    }
}

/// Polls until `condition` holds. Time is paused, so each pause only lets
/// other tasks (and backoff sleeps) run; the bound is on polls, not on time.
async fn until(mut condition: impl FnMut() -> bool, what: &str) {
    for _ in 0..10_000 {
        if condition() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    panic!("never happened: {what}");
}

/// Whether `service` is ready: its cache is current and its store answers.
async fn is_ready(service: &SessionService) -> bool {
    service.status().cache_ready() && service.check_store().await.is_ok()
}

async fn caught_up(instance: &Instance) {
    for _ in 0..10_000 {
        if is_ready(&instance.service).await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    panic!("the instance never caught up with the change log");
}

/// Two instances on one shared `store`, both caught up.
async fn pair_on<S: SessionStore + ChangeLog>(store: Arc<S>) -> (Arc<S>, Instance, Instance) {
    let a = instance(store.clone(), store.clone(), MissPolicy::default());
    let b = instance(store.clone(), store.clone(), MissPolicy::default());
    caught_up(&a).await;
    caught_up(&b).await;
    (store, a, b)
}

async fn pair() -> (Arc<MemoryStore>, Instance, Instance) {
    pair_on(Arc::new(MemoryStore::new())).await
}

/// As [`pair`], over a store whose operations can be paused and whose log
/// can be cut off.
async fn gated_pair() -> (Arc<GatedStore>, Instance, Instance) {
    pair_on(Arc::new(GatedStore::default())).await
}

fn applied(instance: &Instance) -> u64 {
    instance.service.status().change_log_stats.changes_applied
}

#[tokio::test(start_paused = true)]
async fn a_session_created_on_a_resolves_on_b_at_once_and_a_revocation_reaches_b() {
    let (_store, a, b) = pair().await;
    let created = a
        .service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
    // Whether or not B has applied the creation yet, it resolves.
    assert_eq!(
        b.service
            .resolve(created.token.expose_secret())
            .await
            .unwrap(),
        created.session
    );
    a.service.revoke(created.session.id).await.unwrap();
    until(|| b.cache.is_empty(), "B applies the revocation").await;
    assert!(matches!(
        b.service.resolve(created.token.expose_secret()).await,
        Err(Error::InvalidToken)
    ));
}

#[tokio::test(start_paused = true)]
async fn a_revoke_all_of_5000_sessions_on_a_is_rejected_on_b() {
    let (store, a, b) = pair().await;
    let owner = account();
    let mut tokens = Vec::new();
    for _ in 0..5_000 {
        tokens.push(
            a.service
                .create(owner, ClientMetadata::default())
                .await
                .unwrap()
                .token,
        );
    }
    until(|| b.cache.len() == 5_000, "B holds every session").await;
    let before = applied(&b);
    assert_eq!(a.service.revoke_all(owner, None).await.unwrap(), 5_000);
    until(|| applied(&b) > before, "B applies the revoke-all").await;
    assert_eq!(b.cache.len(), 0);
    let reads = b.service.status().change_log_stats.miss_reads;
    for token in &tokens {
        // Far past the read budget, and still "invalid", never "busy": B
        // knows these hashes were revoked without asking the store.
        assert!(matches!(
            b.service.resolve(token.expose_secret()).await,
            Err(Error::InvalidToken)
        ));
    }
    let stats = b.service.status().change_log_stats;
    assert_eq!(
        stats.miss_reads, reads,
        "revoked tokens are answered from the tombstones, with no read: {stats:?}"
    );
    assert!(
        store
            .list_for_account(
                owner,
                session_core::ListScope::Active,
                session_core::PageRequest::default()
            )
            .await
            .unwrap()
            .sessions
            .is_empty()
    );
}

#[tokio::test(start_paused = true)]
async fn a_write_made_directly_in_the_store_is_seen_by_both() {
    let (store, a, b) = pair().await;
    let (token, session) =
        session_core::testkit::session_at(account(), session_core::testkit::epoch());
    let (before_a, before_b) = (applied(&a), applied(&b));
    store.insert(&session).await.unwrap();
    until(
        || applied(&a) > before_a && applied(&b) > before_b,
        "both apply it",
    )
    .await;
    assert_eq!(
        (a.cache.len(), b.cache.len()),
        (1, 1),
        "inserted by the change, not a miss read"
    );
    store
        .revoke(session.id, session_core::testkit::epoch())
        .await
        .unwrap();
    until(|| a.cache.is_empty() && b.cache.is_empty(), "both drop it").await;
    assert!(a.service.resolve(token.expose_secret()).await.is_err());
    assert!(b.service.resolve(token.expose_secret()).await.is_err());
}

/// B cannot read the log for a while: once its lag passes the bound it is
/// not ready, and when the log is back it resumes from its cursor, applies
/// what it missed and is ready again, without loading everything.
#[tokio::test(start_paused = true)]
async fn a_gap_in_reading_the_log_fails_readiness_and_resumes_without_a_reload() {
    let (gated, a, b) = gated_pair().await;
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
    until(|| b.cache.len() == 2, "B holds both").await;
    assert_eq!(b.service.status().change_log_stats.full_loads, 1);

    gated.set_log_down(true);
    // Revoked while no instance can read the log.
    a.service.revoke(doomed.session.id).await.unwrap();
    until(
        || b.service.status().change_log_stats.read_failures >= 1,
        "B tries to read and fails",
    )
    .await;
    let bound = b.service.status().change_log.unwrap().bound;
    b.clock.advance(time::Duration::try_from(bound).unwrap());
    assert!(
        is_ready(&b.service).await,
        "a lag of exactly the bound is still within it"
    );
    b.clock.advance(time::Duration::milliseconds(1));
    let status = b.service.status();
    assert!(!status.cache_ready(), "{status:?}");
    assert!(status.change_log.unwrap().lag.unwrap() > bound);
    // Meanwhile resolves still answer from the cache.
    assert!(b.service.resolve(kept.token.expose_secret()).await.is_ok());

    gated.set_log_down(false);
    caught_up(&b).await;
    let stats = b.service.status().change_log_stats;
    assert!(stats.read_failures >= 1, "{stats:?}");
    assert_eq!(stats.full_loads, 1, "resumed from the cursor, no reload");
    assert!(matches!(
        b.service.resolve(doomed.token.expose_secret()).await,
        Err(Error::InvalidToken)
    ));
    assert!(b.service.resolve(kept.token.expose_secret()).await.is_ok());
}

/// A log pruned past B's cursor while B could not read it: B loads
/// everything again and carries on from the new head.
#[tokio::test(start_paused = true)]
async fn a_cursor_the_log_no_longer_covers_makes_a_full_reload() {
    let (gated, a, b) = gated_pair().await;
    let doomed = a
        .service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
    until(|| b.cache.len() == 1, "B holds it").await;

    gated.set_log_down(true);
    a.service.revoke(doomed.session.id).await.unwrap();
    let kept = a
        .service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
    gated.inner.prune_log();
    gated.set_log_down(false);

    until(
        || b.service.status().change_log_stats.full_loads == 2,
        "B reloads",
    )
    .await;
    caught_up(&b).await;
    assert_eq!(b.cache.len(), 1);
    assert!(
        b.service
            .resolve(doomed.token.expose_secret())
            .await
            .is_err()
    );
    // After the reload B follows the log again.
    a.service.revoke(kept.session.id).await.unwrap();
    until(|| b.cache.is_empty(), "B applies a later revocation").await;
    assert_eq!(b.service.status().change_log_stats.full_loads, 2);
}

/// The store emptied without naming what went (TRUNCATE): every follower
/// loads everything again.
#[tokio::test(start_paused = true)]
async fn a_truncated_store_makes_followers_reload() {
    let (store, a, b) = pair().await;
    let gone = a
        .service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
    until(|| b.cache.len() == 1, "B holds it").await;
    store.truncate();
    until(|| a.cache.is_empty() && b.cache.is_empty(), "both reload").await;
    assert!(b.service.resolve(gone.token.expose_secret()).await.is_err());
    assert_eq!(b.service.status().change_log_stats.full_loads, 2);
    // Applied once, though the entry is read again while later ones follow.
    let kept = a
        .service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
    until(|| b.cache.len() == 1, "B follows on").await;
    assert!(b.service.resolve(kept.token.expose_secret()).await.is_ok());
    assert_eq!(b.service.status().change_log_stats.full_loads, 2);
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_unknown_tokens_stays_within_the_read_budget() {
    let store = Arc::new(MemoryStore::new());
    let policy = MissPolicy {
        reads_per_second: 10.0,
        burst: 5,
        negative_entries: 1_000,
    };
    let b = instance(store.clone(), store.clone(), policy);
    caught_up(&b).await;
    let unknown: Vec<SessionToken> = (0..200).map(|_| SessionToken::generate()).collect();
    for (index, token) in unknown.iter().enumerate() {
        let outcome = b.service.resolve(token.expose_secret()).await;
        if index < 5 {
            assert!(
                matches!(outcome, Err(Error::InvalidToken)),
                "read: {outcome:?}"
            );
        } else {
            // Not read, so not known to be invalid: the client must retry,
            // not log the user out.
            assert!(matches!(outcome, Err(Error::Busy)), "{index}: {outcome:?}");
        }
    }
    let stats = b.service.status().change_log_stats;
    assert_eq!(
        stats.miss_reads, 5,
        "only the burst is read while time stands still"
    );
    assert_eq!(stats.miss_reads_rejected, 195);

    // The tokens that were read are remembered as unknown: no second read,
    // and still invalid with the budget spent.
    for token in &unknown[..5] {
        assert!(matches!(
            b.service.resolve(token.expose_secret()).await,
            Err(Error::InvalidToken)
        ));
    }
    let stats = b.service.status().change_log_stats;
    assert_eq!((stats.miss_reads, stats.negative_hits), (5, 5));

    // A second later the budget has refilled by the rate, up to the burst.
    b.clock.advance(time::Duration::seconds(1));
    for token in &unknown[5..] {
        let _ = b.service.resolve(token.expose_secret()).await;
    }
    assert_eq!(b.service.status().change_log_stats.miss_reads, 10);
    // Malformed tokens never reach the miss path: invalid, budget or not.
    assert!(matches!(
        b.service.resolve("sess_garbage").await,
        Err(Error::InvalidToken)
    ));
    assert_eq!(b.service.status().change_log_stats.miss_reads, 10);
}

/// The miss path reads a session as active, the revocation from another
/// process is applied, and only then does the read's result arrive: it must
/// not enter the cache.
#[tokio::test(start_paused = true)]
async fn a_miss_read_racing_a_revocation_does_not_resurrect() {
    let (gated, a, b) = gated_pair().await;
    let created = a
        .service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
    until(|| b.cache.len() == 1, "B applies the creation").await;
    // As if the creation had not reached B yet.
    b.cache.remove(&created.session.token_hash);

    let gate = gated.arm(Point::Find);
    let resolving = tokio::spawn({
        let service = b.service.clone();
        let token = created.token.expose_secret().to_owned();
        async move { service.resolve(&token).await }
    });
    gate.reached().await;
    let before = applied(&b);
    a.service.revoke(created.session.id).await.unwrap();
    until(|| applied(&b) > before, "B applies the revocation").await;
    gate.release();
    assert!(matches!(resolving.await.unwrap(), Err(Error::InvalidToken)));
    assert_eq!(b.cache.len(), 0, "the stale read stayed out of the cache");
    assert!(
        b.service
            .resolve(created.token.expose_secret())
            .await
            .is_err()
    );
}

/// B's re-warm reads a page, a revocation on A is applied on B, then the page
/// is installed: the revoked session stays out.
#[tokio::test(start_paused = true)]
async fn a_warm_page_read_before_a_revocation_does_not_resurrect() {
    let (gated, a, b) = gated_pair().await;
    let doomed = a
        .service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
    until(|| b.cache.len() == 1, "B holds it").await;

    let gate = gated.arm(Point::FirstPage);
    let warming = tokio::spawn({
        let service = b.service.clone();
        async move { service.warm().await }
    });
    gate.reached().await;
    let before = applied(&b);
    a.service.revoke(doomed.session.id).await.unwrap();
    until(|| applied(&b) > before, "B applies the revocation").await;
    gate.release();
    warming.await.unwrap().unwrap();
    assert_eq!(b.cache.len(), 0);
    assert!(
        b.service
            .resolve(doomed.token.expose_secret())
            .await
            .is_err()
    );
}

/// B's follower reads a creation while the session is active; B revokes
/// it itself before the read's result is applied: it must not come back.
#[tokio::test(start_paused = true)]
async fn a_creation_read_before_a_revocation_does_not_resurrect() {
    let gated = Arc::new(GatedStore::default());
    let store: Arc<dyn SessionStore> = gated.clone();
    let b = instance(store.clone(), gated.clone(), MissPolicy::default());
    caught_up(&b).await;
    let gate = gated.arm(Point::LogEntries);
    let created = b
        .service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
    gate.reached().await;
    b.service.revoke(created.session.id).await.unwrap();
    assert_eq!(b.cache.len(), 0);
    gate.release();
    until(
        || applied(&b) >= 2,
        "B applies the late creation and the revocation",
    )
    .await;
    assert_eq!(b.cache.len(), 0, "the revoked session stayed out");
    assert!(
        b.service
            .resolve(created.token.expose_secret())
            .await
            .is_err()
    );
}

/// A miss-path read and a create on B, each spanning a gap in B's reading of
/// the log during which A revokes the very session: the stale result enters
/// B's cache, and B's first read after the gap takes it out again. Nothing
/// revoked outlives B catching up.
#[tokio::test(start_paused = true)]
async fn reads_and_creates_spanning_a_gap_and_a_revocation_do_not_resurrect() {
    let (gated, a, b) = gated_pair().await;

    // A miss read on B returns a session A revoked while B could not read the log.
    let read_one = a
        .service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
    until(|| b.cache.len() == 1, "B applies the creation").await;
    b.cache.remove(&read_one.session.token_hash);
    gated.set_log_down(true);
    let gate = gated.arm(Point::Find);
    let resolving = tokio::spawn({
        let service = b.service.clone();
        let token = read_one.token.expose_secret().to_owned();
        async move { service.resolve(&token).await }
    });
    gate.reached().await;
    a.service.revoke(read_one.session.id).await.unwrap();
    gate.release();
    assert!(
        resolving.await.unwrap().is_ok(),
        "read before the revocation"
    );

    // A create on B whose account A revokes while B cannot read the log.
    let owner = account();
    let gate = gated.arm(Point::Insert);
    let creating = tokio::spawn({
        let service = b.service.clone();
        async move { service.create(owner, ClientMetadata::default()).await }
    });
    gate.reached().await;
    assert_eq!(a.service.revoke_all(owner, None).await.unwrap(), 1);
    gate.release();
    let created = creating.await.unwrap().unwrap();

    gated.set_log_down(false);
    until(|| b.cache.is_empty(), "B applies both revocations").await;
    caught_up(&b).await;
    for token in [&read_one.token, &created.token] {
        assert!(matches!(
            b.service.resolve(token.expose_secret()).await,
            Err(Error::InvalidToken)
        ));
    }
    assert_eq!(b.service.status().change_log_stats.full_loads, 1);
}
