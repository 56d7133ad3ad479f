//! The reload race on PostgreSQL: a create whose session is revoked, and
//! whose instance then loads everything again from a head after both, must
//! not put the session back when it returns.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use session_core::port::cache::SessionCache;
use session_core::port::change_log::{ChangeLog, ChangeLogDecorator, LogCursor, LogRead};
use session_core::port::store::{SessionStore, StoreDecorator, StoreError};
use session_core::testkit::account;
use session_core::{ClientMetadata, CompactCache, Error, MemoryCache, Session, SessionService};
use session_postgres::PgConfig;
use session_test_postgres::TestDatabase;
use tokio::sync::{Notify, Semaphore};

use crate::support::{instance_on, migrated_store, ready, until};

/// A PostgreSQL store whose next insert can be held after it commits, and
/// whose change log can be cut off, as a lost connection would.
struct Held {
    inner: Arc<session_postgres::PgSessionStore>,
    hold: std::sync::Mutex<Option<Arc<Gate>>>,
    log_down: AtomicBool,
}

struct Gate {
    reached: Notify,
    release: Semaphore,
}

impl StoreDecorator for Held {
    fn inner_store(&self) -> &dyn SessionStore {
        &*self.inner
    }

    async fn insert(&self, session: &Session) -> Result<(), StoreError> {
        self.inner.insert(session).await?;
        let gate = self.hold.lock().unwrap().take();
        if let Some(gate) = gate {
            gate.reached.notify_one();
            gate.release.acquire().await.unwrap().forget();
        }
        Ok(())
    }
}

impl ChangeLogDecorator for Held {
    fn inner_log(&self) -> &dyn ChangeLog {
        &*self.inner
    }

    async fn read(&self, after: &LogCursor, limit: u32) -> Result<LogRead, StoreError> {
        if self.log_down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the change log is cut off".into()));
        }
        self.inner.read(after, limit).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_straddling_a_revocation_and_a_full_reload_does_not_resurrect() {
    straddle(Arc::new(MemoryCache::new())).await;
}

/// The same with a compact cache, whose reload reads identities.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_straddling_a_revocation_and_a_full_reload_does_not_resurrect_compact() {
    straddle(Arc::new(CompactCache::new())).await;
}

async fn straddle(cache: Arc<dyn SessionCache>) {
    let database = TestDatabase::create();
    let config = PgConfig::from_url(database.url())
        .unwrap()
        .change_retention(Duration::from_secs(1));
    let store = Arc::new(migrated_store(config).await);
    let held = Arc::new(Held {
        inner: Arc::clone(&store),
        hold: std::sync::Mutex::new(None),
        log_down: AtomicBool::new(false),
    });
    let b = SessionService::builder(held.clone(), cache)
        .change_log(held.clone())
        .build();
    let _b_tasks = b.start();
    let a = instance_on(database.url(), "instance_a").await;
    ready(&a).await;
    until("B is ready", || b.status().cache_ready()).await;

    held.log_down.store(true, Ordering::SeqCst);
    let gate = Arc::new(Gate {
        reached: Notify::new(),
        release: Semaphore::new(0),
    });
    *held.hold.lock().unwrap() = Some(Arc::clone(&gate));
    let owner = account();
    let creating = tokio::spawn({
        let b = b.clone();
        async move { b.create(owner, ClientMetadata::default()).await }
    });
    // Committed, and not yet in B's cache; A revokes it.
    gate.reached.notified().await;
    assert_eq!(
        a.service
            .revoke_all(owner, None, session_core::RevocationReason::LOGOUT)
            .await
            .unwrap(),
        1
    );
    // The log pruned past B's cursor: a mark now, and what it saw deleted
    // once it is older than the retention window.
    store.prune().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert!(store.prune().await.unwrap() >= 2);
    held.log_down.store(false, Ordering::SeqCst);
    until("B loads everything again", || {
        b.status().change_log_stats.full_loads == 2
    })
    .await;
    gate.release.add_permits(1);
    let created = creating.await.unwrap().unwrap();
    until("B is ready", || b.status().cache_ready()).await;
    assert!(matches!(
        b.resolve(created.token.expose_secret()).await,
        Err(Error::InvalidToken)
    ));
    assert_eq!(
        b.status().cached_sessions,
        0,
        "the revoked session stayed out"
    );
}
