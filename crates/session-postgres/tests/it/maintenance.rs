//! Idle revocation and retention on PostgreSQL: one worker at a time
//! through the job's transaction-scoped lock (also through PgBouncer, where
//! a session-level lock would outlive its transaction), two instances
//! whose rounds revoke each session once and whose caches both drop it, and
//! retention that logs nothing for rows no cache holds.

use std::time::Duration;

use session_core::config::{IdleRevocation, LastSeenSettings};
use session_core::port::change_log::{ChangeLog, LogRead};
use session_core::port::store::{Exclusive, RetentionAction, SessionStore};
use session_core::status::RoundEnd;
use session_core::testkit::{account, session_at};
use session_core::{RevocationReason, SessionToken};
use session_postgres::{IDLE_JOB_LOCK, PgConfig, RETENTION_JOB_LOCK, Statements};
use session_test_postgres::TestDatabase;
use time::OffsetDateTime;

use crate::support::{fresh_store, migrated_store, ready_pair, rejected, sql_client, until};

const DAY: Duration = Duration::from_secs(86_400);

fn days_ago(days: i64) -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now - time::Duration::days(days)
        - time::Duration::nanoseconds(i64::from(now.nanosecond() % 1_000))
}

/// Inserts `count` sessions created `days` ago, never seen; their tokens.
async fn old_sessions(store: &dyn SessionStore, count: usize, days: i64) -> Vec<SessionToken> {
    let mut tokens = Vec::new();
    for _ in 0..count {
        let (token, session) = session_at(account(), days_ago(days));
        store.insert(&session).await.unwrap();
        tokens.push(token);
    }
    tokens
}

async fn try_lock(client: &tokio_postgres::Client, key: i64) -> bool {
    client
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&key])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_busy_and_changes_nothing_while_another_holds_the_jobs_lock() {
    let (database, store) = fresh_store().await;
    old_sessions(&store, 2, 100).await;
    let cutoff = days_ago(90);
    let holder = sql_client(database.url()).await;
    holder.batch_execute("BEGIN").await.unwrap();
    assert!(try_lock(&holder, IDLE_JOB_LOCK).await);

    let busy = store
        .revoke_idle(cutoff, None, 10, days_ago(0), RevocationReason::IDLE)
        .await
        .unwrap();
    assert_eq!(busy, Exclusive::Busy);
    assert_eq!(
        store.idle_sessions(cutoff, None, 10).await.unwrap().len(),
        2
    );
    // The other job's lock is another: retention runs.
    assert_eq!(
        store
            .purge_revoked(cutoff, None, 10, RetentionAction::Delete)
            .await
            .unwrap(),
        Exclusive::Done(Vec::new())
    );

    holder.batch_execute("COMMIT").await.unwrap();
    let Exclusive::Done(revoked) = store
        .revoke_idle(cutoff, None, 10, days_ago(0), RevocationReason::IDLE)
        .await
        .unwrap()
    else {
        panic!("the lock is free again");
    };
    assert_eq!(revoked.len(), 2);

    holder.batch_execute("BEGIN").await.unwrap();
    assert!(try_lock(&holder, RETENTION_JOB_LOCK).await);
    assert_eq!(
        store
            .purge_revoked(days_ago(-1), None, 10, RetentionAction::Delete)
            .await
            .unwrap(),
        Exclusive::Busy
    );
    holder.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_pgbouncer_the_jobs_lock_ends_with_its_statement() {
    let database = TestDatabase::create();
    let store = migrated_store(
        PgConfig::from_url(&database.through_pgbouncer())
            .unwrap()
            .statements(Statements::PerTransaction)
            .direct(PgConfig::from_url(database.url()).unwrap()),
    )
    .await;
    old_sessions(&store, 3, 100).await;
    let cutoff = days_ago(90);
    let mut revoked = 0;
    let mut after = None;
    loop {
        let Exclusive::Done(batch) = store
            .revoke_idle(cutoff, after, 2, days_ago(0), RevocationReason::IDLE)
            .await
            .unwrap()
        else {
            panic!("no one else runs the job: the lock of an earlier batch was kept");
        };
        revoked += batch.len();
        if batch.len() < 2 {
            break;
        }
        after = batch.last().map(|session| session.id);
    }
    assert_eq!(revoked, 3);
    // A session-level lock would still be held by the server session
    // PgBouncer handed the batches.
    let direct = sql_client(database.url()).await;
    assert!(try_lock(&direct, IDLE_JOB_LOCK).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_revoke_each_idle_session_once_and_both_stop_resolving_it() {
    let database = TestDatabase::create();
    let (a, b) = ready_pair(database.url()).await;
    let idle_tokens = old_sessions(&*a.store, 40, 100).await;
    let (recent_token, recent) = session_at(account(), days_ago(1));
    a.store.insert(&recent).await.unwrap();
    until("both instances hold every session", || {
        a.service.status().cached_sessions == 41 && b.service.status().cached_sessions == 41
    })
    .await;

    let mut idle = IdleRevocation::new(90 * DAY, Some(&LastSeenSettings::default())).unwrap();
    idle.batch = 3;
    let (round_a, round_b) = tokio::join!(
        a.service.revoke_idle(&idle, false),
        b.service.revoke_idle(&idle, false)
    );
    for round in [&round_a, &round_b] {
        assert!(
            matches!(round.end, RoundEnd::Complete | RoundEnd::Busy),
            "{:?}",
            round.end
        );
    }
    // A busy round leaves the rest to the other: run again until done.
    let mut total = round_a.total() + round_b.total();
    loop {
        let round = a.service.revoke_idle(&idle, false).await;
        total += round.total();
        if matches!(round.end, RoundEnd::Complete) {
            break;
        }
    }
    assert_eq!(total, 40, "each idle session revoked, and counted, once");

    until("both instances drop every idle session", || {
        a.service.status().cached_sessions == 1 && b.service.status().cached_sessions == 1
    })
    .await;
    for token in &idle_tokens {
        assert!(rejected(&a, token).await && rejected(&b, token).await);
    }
    assert!(
        b.service
            .resolve(recent_token.expose_secret())
            .await
            .is_ok()
    );
    let stored = a.store.get(recent.id).await.unwrap().unwrap();
    assert!(stored.is_active());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_logs_nothing_and_a_deleted_session_stays_out_of_every_cache() {
    let database = TestDatabase::create();
    let (a, b) = ready_pair(database.url()).await;
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let (token, mut session) = session_at(account(), days_ago(100));
        session.metadata.ip = Some("192.0.2.1".parse().unwrap());
        a.store.insert(&session).await.unwrap();
        tokens.push(token);
    }
    for token in &tokens {
        a.service
            .revoke(
                a.store
                    .find_active_by_hash(&token.hash())
                    .await
                    .unwrap()
                    .unwrap()
                    .id,
                RevocationReason::LOGOUT,
            )
            .await
            .unwrap();
    }
    let head = a.store.head().await.unwrap();
    let before = days_ago(-1);
    for action in [RetentionAction::Erase, RetentionAction::Delete] {
        let taken = a
            .store
            .purge_revoked(before, None, 10, action)
            .await
            .unwrap();
        assert!(
            matches!(taken, Exclusive::Done(ref ids) if ids.len() == 2),
            "{taken:?}"
        );
    }
    let LogRead::Page(page) = a.store.read(&head, 100).await.unwrap() else {
        panic!("the log was not pruned");
    };
    assert!(
        page.entries.is_empty() && page.rejected.is_empty(),
        "erasing and deleting revoked rows logs nothing"
    );
    // A full reload does not bring them back either.
    b.service.warm().await.unwrap();
    for token in &tokens {
        assert!(rejected(&a, token).await && rejected(&b, token).await);
    }
}
