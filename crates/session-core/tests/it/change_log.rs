//! Several services on one store, kept in step by its change log: two
//! `SessionService`s over one `MemoryStore` behave as two processes over one
//! database. Time is paused, so backoff sleeps and polls pass instantly.

use std::sync::Arc;

use session_core::memory::MemoryStore;
use session_core::port::cache::SessionCache;
use session_core::port::change_log::ChangeLog;
use session_core::port::clock::ManualClock;
use session_core::port::store::SessionStore;
use session_core::status::ResolveOutcome;
use session_core::{
    BackgroundTasks, ClientMetadata, Error, SessionIdentity, SessionService, SessionToken,
};

use crate::gated::{GatedStore, Point};
use session_core::testkit::account;

struct Instance {
    service: SessionService,
    cache: Arc<dyn SessionCache>,
    /// Drives the lag; it moves only when a test advances it.
    clock: Arc<ManualClock>,
    /// Follows the change log for as long as the instance lives.
    _tasks: BackgroundTasks,
}

fn instance(store: Arc<dyn SessionStore>, log: Arc<dyn ChangeLog>) -> Instance {
    let cache = super::cache();
    let clock = Arc::new(ManualClock::new(session_core::testkit::epoch()));
    let service = SessionService::builder(store, cache.clone())
        .change_log(log)
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
    let (a, b) = pair_reading(store.clone(), store.clone()).await;
    (store, a, b)
}

/// Two instances on one shared `store`, B reading its change log through
/// `b_log`, both caught up.
async fn pair_reading<S: SessionStore + ChangeLog>(
    store: Arc<S>,
    b_log: Arc<dyn ChangeLog>,
) -> (Instance, Instance) {
    let a = instance(store.clone(), store.clone());
    let b = instance(store, b_log);
    caught_up(&a).await;
    caught_up(&b).await;
    (a, b)
}

async fn pair() -> (Arc<MemoryStore>, Instance, Instance) {
    pair_on(Arc::new(MemoryStore::new())).await
}

/// As [`pair`], over a store whose operations can be paused and whose log
/// can be cut off.
async fn gated_pair() -> (Arc<GatedStore>, Instance, Instance) {
    pair_on(Arc::new(GatedStore::default())).await
}

/// Revokes `session` in `store` directly, as another process would.
async fn revoke_in(store: &dyn SessionStore, session: &session_core::Session) {
    store
        .revoke(
            session.id,
            session_core::testkit::epoch(),
            session_core::RevocationReason::LOGOUT,
            None,
        )
        .await
        .unwrap();
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
    // Whether or not B has applied the creation yet, it resolves, and its
    // whole record is one call away.
    let identity = b
        .service
        .resolve(created.token.expose_secret())
        .await
        .unwrap();
    assert_eq!(identity, SessionIdentity::from(&*created.session));
    assert_eq!(b.service.session(&identity).await.unwrap(), created.session);
    a.service
        .revoke(created.session.id, session_core::RevocationReason::LOGOUT)
        .await
        .unwrap();
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
    assert_eq!(
        a.service
            .revoke_all(owner, None, session_core::RevocationReason::LOGOUT)
            .await
            .unwrap(),
        5_000
    );
    until(|| applied(&b) > before, "B applies the revoke-all").await;
    assert_eq!(b.cache.len(), 0);
    let waits = b.service.status().change_log_stats.miss_waits;
    for token in &tokens {
        // B knows these hashes were revoked: no waiting for the log.
        assert!(matches!(
            b.service.resolve(token.expose_secret()).await,
            Err(Error::InvalidToken)
        ));
    }
    let stats = b.service.status().change_log_stats;
    assert_eq!(
        stats.miss_waits, waits,
        "revoked tokens are answered from the tombstones, with no wait: {stats:?}"
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
    revoke_in(store.as_ref(), &session).await;
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
    a.service
        .revoke(doomed.session.id, session_core::RevocationReason::LOGOUT)
        .await
        .unwrap();
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
    a.service
        .revoke(doomed.session.id, session_core::RevocationReason::LOGOUT)
        .await
        .unwrap();
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
    a.service
        .revoke(kept.session.id, session_core::RevocationReason::LOGOUT)
        .await
        .unwrap();
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

/// Misses share log reads: 200 unknown tokens at once cost one or two
/// reads, not 200; one after another, misses ask for at most one read every
/// 5 ms. Every answer is exact: "invalid", never "busy".
#[tokio::test(start_paused = true)]
async fn a_flood_of_unknown_tokens_shares_a_bounded_number_of_log_reads() {
    let store = Arc::new(MemoryStore::new());
    let b = instance(store.clone(), store.clone());
    caught_up(&b).await;
    let unknown: Vec<SessionToken> = (0..200).map(|_| SessionToken::generate()).collect();
    let reads = store.log_reads();
    let resolves: Vec<_> = unknown
        .iter()
        .map(|token| {
            let service = b.service.clone();
            let token = token.expose_secret().to_owned();
            tokio::spawn(async move { service.resolve(&token).await })
        })
        .collect();
    for resolve in resolves {
        assert!(matches!(resolve.await.unwrap(), Err(Error::InvalidToken)));
    }
    let shared = store.log_reads() - reads;
    assert!(
        (1..=2).contains(&shared),
        "200 concurrent misses made {shared} log reads"
    );

    // Found absent: sent again, they are answered at once.
    let reads = store.log_reads();
    for token in &unknown {
        assert!(matches!(
            b.service.resolve(token.expose_secret()).await,
            Err(Error::InvalidToken)
        ));
    }
    assert_eq!(store.log_reads(), reads);

    let started = tokio::time::Instant::now();
    let unknown: Vec<SessionToken> = (0..200).map(|_| SessionToken::generate()).collect();
    for token in &unknown {
        assert!(matches!(
            b.service.resolve(token.expose_secret()).await,
            Err(Error::InvalidToken)
        ));
    }
    let (made, took) = (store.log_reads() - reads, started.elapsed());
    assert_eq!(
        made, 200,
        "each miss one after another needs a read of its own"
    );
    assert!(
        took >= std::time::Duration::from_millis(5 * 199),
        "200 reads in {took:?}: more than 200 a second"
    );
    assert_eq!(b.service.status().change_log_stats.miss_waits, 400);
    // Malformed tokens never reach the miss path.
    assert!(matches!(
        b.service.resolve("sess_garbage").await,
        Err(Error::InvalidToken)
    ));
    assert_eq!(store.log_reads() - reads, 200);
}

/// A session created on A and not yet read by B's follower: a miss on B
/// waits for a read that started after it, and finds the session.
#[tokio::test(start_paused = true)]
async fn a_miss_waits_for_the_log_and_finds_a_session_created_elsewhere() {
    let gated = Arc::new(GatedStore::default());
    let b = instance(gated.clone(), gated.clone());
    caught_up(&b).await;
    // B's follower reads a creation another process made, and stops before
    // applying it.
    let gate = gated.arm(Point::LogEntries);
    let (token, session) =
        session_core::testkit::session_at(account(), session_core::testkit::epoch());
    gated.inner.insert(&session).await.unwrap();
    gate.reached().await;
    assert_eq!(b.cache.len(), 0, "B has not applied the creation");
    let resolving = tokio::spawn({
        let service = b.service.clone();
        let token = token.expose_secret().to_owned();
        async move { service.resolve(&token).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(!resolving.is_finished(), "the miss waits for the log");
    gate.release();
    let identity = resolving.await.unwrap().unwrap();
    assert_eq!(identity, SessionIdentity::from(&session));
    assert_eq!(*b.service.session(&identity).await.unwrap(), session);
    assert_eq!(
        b.service
            .status()
            .resolves
            .get(ResolveOutcome::CaughtUpActive),
        1
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
    a.service
        .revoke(doomed.session.id, session_core::RevocationReason::LOGOUT)
        .await
        .unwrap();
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
    let b = instance(store.clone(), gated.clone());
    caught_up(&b).await;
    let gate = gated.arm(Point::LogEntries);
    let created = b
        .service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
    gate.reached().await;
    b.service
        .revoke(created.session.id, session_core::RevocationReason::LOGOUT)
        .await
        .unwrap();
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

/// With B cut off from the log, starts a create on B, holds it after its
/// insert committed, and has A revoke its account: B has seen neither.
/// Returns the held create's gate and its task.
async fn create_on_b_revoked_on_a_unseen(
    gated: &GatedStore,
    a: &Instance,
    b: &Instance,
) -> (
    Arc<crate::gated::Gate>,
    tokio::task::JoinHandle<Result<session_core::NewSession, Error>>,
) {
    gated.set_log_down(true);
    let owner = account();
    let gate = gated.arm(Point::Insert);
    let creating = tokio::spawn({
        let service = b.service.clone();
        async move { service.create(owner, ClientMetadata::default()).await }
    });
    gate.reached().await;
    assert_eq!(
        a.service
            .revoke_all(owner, None, session_core::RevocationReason::LOGOUT)
            .await
            .unwrap(),
        1
    );
    (gate, creating)
}

/// A create on B whose account A revokes while B cannot read the log: the
/// result enters B's cache, and B's first read after the gap takes it out
/// again. Nothing revoked outlives B catching up.
#[tokio::test(start_paused = true)]
async fn a_create_spanning_a_gap_and_a_revocation_does_not_resurrect() {
    let (gated, a, b) = gated_pair().await;
    let (gate, creating) = create_on_b_revoked_on_a_unseen(&gated, &a, &b).await;
    gate.release();
    let created = creating.await.unwrap().unwrap();

    gated.set_log_down(false);
    until(|| b.cache.is_empty(), "B applies the revocation").await;
    caught_up(&b).await;
    assert!(matches!(
        b.service.resolve(created.token.expose_secret()).await,
        Err(Error::InvalidToken)
    ));
    assert_eq!(b.service.status().change_log_stats.full_loads, 1);
}

/// The reload race: a create on B commits, A revokes the session, and the
/// log is pruned past B's cursor before B reads either entry, so B loads
/// everything again from a head after both, and will never read that
/// revocation. The create returns only after the reload began: it must not
/// put the session back.
#[tokio::test(start_paused = true)]
async fn a_create_straddling_a_revocation_and_a_full_reload_does_not_resurrect() {
    let (gated, a, b) = gated_pair().await;
    let (gate, creating) = create_on_b_revoked_on_a_unseen(&gated, &a, &b).await;
    gated.inner.prune_log();
    gated.set_log_down(false);
    until(
        || b.service.status().change_log_stats.full_loads == 2,
        "B loads everything again",
    )
    .await;
    gate.release();
    let created = creating.await.unwrap().unwrap();
    caught_up(&b).await;
    assert_eq!(b.cache.len(), 0, "the revoked session stayed out");
    assert!(matches!(
        b.service.resolve(created.token.expose_secret()).await,
        Err(Error::InvalidToken)
    ));
}

/// A change that follows another within milliseconds (a revoke just after
/// its create) is read at once: a wake-up during or just after a read
/// starts the next read when that one ends, never after a fixed gap.
#[tokio::test(start_paused = true)]
async fn a_change_right_after_another_is_read_without_a_gap() {
    let (_store, a, b) = pair().await;
    let created = a
        .service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
    until(|| b.cache.len() == 1, "B applies the creation").await;
    let revoked_at = tokio::time::Instant::now();
    a.service
        .revoke(created.session.id, session_core::RevocationReason::LOGOUT)
        .await
        .unwrap();
    until(|| b.cache.is_empty(), "B applies the revocation").await;
    let took = revoked_at.elapsed();
    assert!(
        took < std::time::Duration::from_millis(5),
        "a revocation right after its creation waited {took:?} (time is paused: no scheduling noise)"
    );
}

/// A log whose every read answers `read_takes` (virtual time) after it
/// started, with the entries as of its start, as a database's statement
/// would; it notes when each read started.
struct SlowLog {
    inner: Arc<MemoryStore>,
    read_takes: std::time::Duration,
    started: std::sync::Mutex<Vec<tokio::time::Instant>>,
}

impl SlowLog {
    /// Reads started so far.
    fn reads(&self) -> usize {
        self.started.lock().unwrap().len()
    }

    /// When read `index` (from 0) started.
    fn read_started(&self, index: usize) -> Option<tokio::time::Instant> {
        self.started.lock().unwrap().get(index).copied()
    }
}

impl session_core::port::change_log::ChangeLogDecorator for SlowLog {
    fn inner_log(&self) -> &dyn ChangeLog {
        self.inner.as_ref()
    }

    async fn read(
        &self,
        after: &session_core::port::change_log::LogCursor,
        limit: u32,
    ) -> Result<session_core::port::change_log::LogRead, session_core::port::store::StoreError>
    {
        self.started
            .lock()
            .unwrap()
            .push(tokio::time::Instant::now());
        let read = self.inner.read(after, limit).await;
        tokio::time::sleep(self.read_takes).await;
        read
    }
}

/// A on a store; B on the same store, reading its log through a
/// [`SlowLog`], its reads from starting up ended.
async fn pair_with_slow_log(read_takes: std::time::Duration) -> (Arc<SlowLog>, Instance, Instance) {
    let store = Arc::new(MemoryStore::new());
    let slow = Arc::new(SlowLog {
        inner: store.clone(),
        read_takes,
        started: std::sync::Mutex::default(),
    });
    let (a, b) = pair_reading(store, slow.clone()).await;
    // B reports ready while a read from its start-up may still be in
    // flight: let it end, so no test begins inside one.
    tokio::time::sleep(2 * read_takes).await;
    (slow, a, b)
}

/// Waits, without letting time pass, until B's read after the first
/// `reads` starts. Only call it when a read is due at once: while this
/// spins, paused time cannot advance, so a read in flight never ends and
/// one waiting on a timer never starts.
async fn next_read_starts(log: &SlowLog, reads: usize) {
    while log.reads() == reads {
        tokio::task::yield_now().await;
    }
}

fn log_reads(instance: &Instance) -> u64 {
    instance.service.status().change_log_stats.reads
}

/// At saturation, when wake-ups come faster than reads end, a follower
/// pauses before each woken read for as long as the entries the last read
/// brought buy (a quarter of a millisecond each, at most 50 ms), and still
/// applies every change. Without the pause it would read back to back, 100
/// times a second here.
#[tokio::test(start_paused = true)]
async fn wake_ups_at_saturation_space_a_followers_reads() {
    let read_takes = std::time::Duration::from_millis(10);
    let (_store, a, b) = pair_with_slow_log(read_takes).await;
    let reads_before = log_reads(&b);
    let started = tokio::time::Instant::now();
    let mut created = 0_usize;
    // 10,000 creates a second for one second, each waking B: ten in each
    // millisecond, the timer's resolution.
    while started.elapsed() < std::time::Duration::from_secs(1) {
        for _ in 0..10 {
            a.service
                .create(account(), ClientMetadata::default())
                .await
                .unwrap();
            created += 1;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let reads = log_reads(&b) - reads_before;
    // A read every 60 ms (10 ms reading, 50 ms paused), and a poll or two.
    assert!(
        (14..=20).contains(&reads),
        "B read its log {reads} times in a second of saturating writes"
    );
    until(|| b.cache.len() == created, "B applies every creation").await;
}

/// Under light traffic nothing pauses: with reads of a millisecond, a
/// create, then its revocation while B reads the creation, every 10 ms
/// (200 writes a second): each revocation is read as soon as the read in
/// flight ends. A pause of a quarter millisecond for the creation's one
/// entry would be a whole one: tokio rounds deadlines up to its next
/// millisecond.
#[tokio::test(start_paused = true)]
async fn at_200_writes_a_second_a_revocation_is_read_at_once() {
    let read_takes = std::time::Duration::from_millis(1);
    let (log, a, b) = pair_with_slow_log(read_takes).await;
    let mut slowest = std::time::Duration::ZERO;
    for _ in 0..100 {
        let reads = log.reads();
        let created = a
            .service
            .create(account(), ClientMetadata::default())
            .await
            .unwrap();
        // B's read of the creation starts; no time passes meanwhile.
        next_read_starts(&log, reads).await;
        let revoked_at = tokio::time::Instant::now();
        a.service
            .revoke(created.session.id, session_core::RevocationReason::LOGOUT)
            .await
            .unwrap();
        until(|| log.reads() > reads + 1, "B reads the revocation").await;
        until(
            || b.cache.get(&created.session.token_hash).is_none(),
            "B applies the revocation",
        )
        .await;
        let next = log
            .read_started(reads + 1)
            .expect("a read after the creation's");
        slowest = slowest.max(next - revoked_at);
        tokio::time::sleep(std::time::Duration::from_millis(8)).await;
    }
    assert_eq!(
        slowest, read_takes,
        "a revocation at 200 writes a second waited past the read in flight \
         (time is paused: no scheduling noise)"
    );
}

/// A miss whose token a read already in flight revokes is answered when
/// that read is applied: revoked is final, so it waits for no read that
/// started after it. Here B reads a creation and its revocation, made by
/// another process, in one read of 10 ms, and the miss arrives as that read
/// starts.
#[tokio::test(start_paused = true)]
async fn a_miss_ends_when_a_read_in_flight_revokes_its_token() {
    let read_takes = std::time::Duration::from_millis(10);
    let (log, _a, b) = pair_with_slow_log(read_takes).await;
    let reads = log.reads();
    let (token, session) =
        session_core::testkit::session_at(account(), session_core::testkit::epoch());
    // The memory store answers at once: B runs only once this task waits,
    // so both writes' wake-ups wake it once and its read finds both.
    log.inner.insert(&session).await.unwrap();
    revoke_in(log.inner.as_ref(), &session).await;
    next_read_starts(&log, reads).await;
    let asked_at = tokio::time::Instant::now();
    let answer = b.service.resolve(token.expose_secret()).await;
    assert!(matches!(answer, Err(Error::InvalidToken)), "{answer:?}");
    assert_eq!(
        asked_at.elapsed(),
        read_takes,
        "the miss waited past the read that revoked its token (time is paused)"
    );
    assert_eq!(
        b.service
            .status()
            .resolves
            .get(ResolveOutcome::CaughtUpInactive),
        1
    );
}

/// A miss just after a read woken by a wake-up starts its own read at
/// once: only the reads misses start are spaced (5 ms), from each other.
#[tokio::test(start_paused = true)]
async fn a_miss_right_after_a_woken_read_reads_at_once() {
    let read_takes = std::time::Duration::from_millis(1);
    let (log, a, b) = pair_with_slow_log(read_takes).await;
    let reads = log.reads();
    a.service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
    next_read_starts(&log, reads).await;
    // The woken read has ended; the next 5 ms slot from its start is 3 ms away.
    tokio::time::sleep(2 * read_takes).await;
    assert_eq!(log.reads(), reads + 1);
    let asked_at = tokio::time::Instant::now();
    let answer = b
        .service
        .resolve(SessionToken::generate().expose_secret())
        .await;
    assert!(matches!(answer, Err(Error::InvalidToken)), "{answer:?}");
    assert_eq!(
        asked_at.elapsed(),
        read_takes,
        "a miss waited for a slot no other miss had taken (time is paused)"
    );
}
