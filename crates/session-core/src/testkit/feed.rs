//! The [`ChangeFeed`] contract, for stores several processes share. Each
//! function is one case; see [`feed_contract_tests!`](crate::feed_contract_tests).
//!
//! "Nothing else was published" is checked without waiting for silence: a
//! marker session is inserted and must be the very next change, since
//! changes arrive in commit order.

#![allow(clippy::missing_panics_doc)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::{account, epoch, session_at, session_with_metadata};
use crate::feed::{Change, ChangeFeed, ChangeSubscription};
use crate::session::{AccountId, Session, SessionId};
use crate::store::{RevokeOutcome, SessionStore};
use crate::token::TokenHash;

/// Fails a case that would otherwise hang; not a measure of speed.
const HANG_GUARD: Duration = Duration::from_secs(30);

type Subscription = Box<dyn ChangeSubscription>;

async fn subscribe(feed: &Arc<dyn ChangeFeed>) -> Subscription {
    feed.subscribe().await.expect("subscribe")
}

/// The next change, which must come.
async fn next(subscription: &mut Subscription) -> Change {
    tokio::time::timeout(HANG_GUARD, subscription.next_change())
        .await
        .unwrap_or_else(|_| panic!("no change arrived within {HANG_GUARD:?}"))
        .expect("next_change")
}

/// Collects revocations until `expected` hashes arrived; any creation, or a
/// hash outside `expected` or seen twice, fails the case.
async fn revoked(subscription: &mut Subscription, expected: &BTreeSet<TokenHash>) {
    let mut seen = BTreeSet::new();
    while seen.len() < expected.len() {
        match next(subscription).await {
            Change::Revoked(hashes) => {
                assert!(!hashes.is_empty(), "an empty revocation was published");
                for hash in hashes {
                    assert!(expected.contains(&hash), "{hash:?} was not revoked");
                    assert!(seen.insert(hash), "{hash:?} was published twice");
                }
            }
            Change::Created(session) => panic!("unexpected creation of {:?}", session.id),
        }
    }
}

/// Inserts a marker session and requires it to be the next change: nothing
/// else was published before it.
async fn nothing_else_published(store: &Arc<dyn SessionStore>, subscription: &mut Subscription) {
    let (_, marker) = session_at(account(), epoch());
    store.insert(&marker).await.unwrap();
    assert_eq!(
        next(subscription).await,
        Change::Created(marker),
        "something else was published first"
    );
}

async fn insert(store: &Arc<dyn SessionStore>, account: AccountId) -> Session {
    let (_, session) = session_at(account, epoch());
    store.insert(&session).await.unwrap();
    session
}

/// Created sessions arrive equal to what was stored and what the store
/// returns: every metadata field, multi-byte text at the byte limits, IPv6.
pub async fn created_sessions_arrive_as_stored(
    store: Arc<dyn SessionStore>,
    feed: Arc<dyn ChangeFeed>,
) {
    let mut subscription = subscribe(&feed).await;
    let plain = insert(&store, account()).await;
    let full = session_with_metadata(account());
    store.insert(&full).await.unwrap();

    assert_eq!(
        next(&mut subscription).await,
        Change::Created(plain.clone())
    );
    assert_eq!(next(&mut subscription).await, Change::Created(full.clone()));
    assert_eq!(store.get(plain.id).await.unwrap(), Some(plain));
    assert_eq!(store.get(full.id).await.unwrap(), Some(full));
}

/// Revoking one session publishes exactly its hash.
pub async fn a_revocation_arrives_with_its_hash(
    store: Arc<dyn SessionStore>,
    feed: Arc<dyn ChangeFeed>,
) {
    let session = insert(&store, account()).await;
    let bystander = insert(&store, account()).await;
    let mut subscription = subscribe(&feed).await;
    assert_eq!(
        store.revoke(session.id, epoch()).await.unwrap(),
        RevokeOutcome::Revoked {
            token_hash: session.token_hash
        }
    );
    assert_eq!(
        next(&mut subscription).await,
        Change::Revoked(vec![session.token_hash])
    );
    nothing_else_published(&store, &mut subscription).await;
    assert!(
        store
            .find_active_by_hash(&bystander.token_hash)
            .await
            .unwrap()
            .is_some()
    );
}

/// A revoke-all larger than any one notification arrives complete, with
/// exactly the hashes it revoked: not the exception, not another account's,
/// not one revoked earlier.
pub async fn revoke_all_arrives_with_exactly_the_revoked_hashes(
    store: Arc<dyn SessionStore>,
    feed: Arc<dyn ChangeFeed>,
) {
    const SESSIONS: usize = 250;
    let target = account();
    let mut sessions = Vec::new();
    for _ in 0..SESSIONS {
        sessions.push(insert(&store, target).await);
    }
    let kept = sessions.pop().unwrap();
    let earlier = sessions.pop().unwrap();
    store.revoke(earlier.id, epoch()).await.unwrap();
    let bystander = insert(&store, account()).await;

    let mut subscription = subscribe(&feed).await;
    let returned: BTreeSet<TokenHash> = store
        .revoke_all_for_account(target, Some(kept.id), epoch())
        .await
        .unwrap()
        .into_iter()
        .collect();
    let expected: BTreeSet<TokenHash> = sessions.iter().map(|s| s.token_hash).collect();
    assert_eq!(returned, expected, "the store's own answer");
    revoked(&mut subscription, &expected).await;
    nothing_else_published(&store, &mut subscription).await;
    for active in [&kept, &bystander] {
        assert!(
            store
                .find_active_by_hash(&active.token_hash)
                .await
                .unwrap()
                .is_some()
        );
    }
}

/// Writes that change nothing publish nothing: revoking a revoked session, a
/// revoke-all that finds no active session, revoking an unknown id.
pub async fn writes_that_change_nothing_publish_nothing(
    store: Arc<dyn SessionStore>,
    feed: Arc<dyn ChangeFeed>,
) {
    let owner = account();
    let session = insert(&store, owner).await;
    store.revoke(session.id, epoch()).await.unwrap();
    let mut subscription = subscribe(&feed).await;

    assert_eq!(
        store.revoke(session.id, epoch()).await.unwrap(),
        RevokeOutcome::AlreadyRevoked
    );
    assert!(
        store
            .revoke_all_for_account(owner, None, epoch())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.revoke(SessionId::new(), epoch()).await.unwrap(),
        RevokeOutcome::NotFound
    );
    nothing_else_published(&store, &mut subscription).await;
}

/// Changes arrive in the order their writes committed.
pub async fn changes_arrive_in_commit_order(
    store: Arc<dyn SessionStore>,
    feed: Arc<dyn ChangeFeed>,
) {
    let (first_owner, second_owner) = (account(), account());
    let mut subscription = subscribe(&feed).await;
    let a = insert(&store, first_owner).await;
    let b = insert(&store, second_owner).await;
    store.revoke(a.id, epoch()).await.unwrap();
    let c = insert(&store, second_owner).await;
    let d = insert(&store, first_owner).await;
    store
        .revoke_all_for_account(second_owner, None, epoch())
        .await
        .unwrap();
    store.revoke(d.id, epoch()).await.unwrap();

    assert_eq!(next(&mut subscription).await, Change::Created(a.clone()));
    assert_eq!(next(&mut subscription).await, Change::Created(b.clone()));
    assert_eq!(
        next(&mut subscription).await,
        Change::Revoked(vec![a.token_hash])
    );
    assert_eq!(next(&mut subscription).await, Change::Created(c.clone()));
    assert_eq!(next(&mut subscription).await, Change::Created(d.clone()));
    revoked(
        &mut subscription,
        &BTreeSet::from([b.token_hash, c.token_hash]),
    )
    .await;
    assert_eq!(
        next(&mut subscription).await,
        Change::Revoked(vec![d.token_hash])
    );
    nothing_else_published(&store, &mut subscription).await;
}

/// A subscription hears only what commits after it was made: a session
/// created before it is not delivered.
pub async fn a_subscription_after_a_write_does_not_deliver_it(
    store: Arc<dyn SessionStore>,
    feed: Arc<dyn ChangeFeed>,
) {
    let before = insert(&store, account()).await;
    let mut subscription = subscribe(&feed).await;
    let after = insert(&store, account()).await;
    let change = next(&mut subscription).await;
    assert_ne!(change, Change::Created(before), "an earlier write arrived");
    assert_eq!(change, Change::Created(after));
}

/// Every subscription receives every change, as every process must.
pub async fn every_subscription_receives_every_change(
    store: Arc<dyn SessionStore>,
    feed: Arc<dyn ChangeFeed>,
) {
    let mut first = subscribe(&feed).await;
    let mut second = subscribe(&feed).await;
    let session = insert(&store, account()).await;
    store.revoke(session.id, epoch()).await.unwrap();
    for subscription in [&mut first, &mut second] {
        assert_eq!(next(subscription).await, Change::Created(session.clone()));
        assert_eq!(
            next(subscription).await,
            Change::Revoked(vec![session.token_hash])
        );
    }
}

/// `next_change` is cancel-safe: calls dropped before they return, whether
/// or not a change was on its way, lose nothing and reorder nothing.
pub async fn a_dropped_next_change_loses_nothing(
    store: Arc<dyn SessionStore>,
    feed: Arc<dyn ChangeFeed>,
) {
    const WRITES: usize = 40;
    let mut subscription = subscribe(&feed).await;
    // Nothing was written, so nothing can arrive: the call is dropped waiting.
    assert!(
        tokio::time::timeout(Duration::from_millis(20), subscription.next_change())
            .await
            .is_err(),
        "a change arrived with nothing written"
    );

    let writer = tokio::spawn({
        let store = Arc::clone(&store);
        async move {
            let mut written = Vec::new();
            for _ in 0..WRITES {
                written.push(insert(&store, account()).await);
                tokio::task::yield_now().await;
            }
            written
        }
    });
    let mut received = Vec::new();
    let reading = async {
        while received.len() < WRITES {
            // Most calls are cut short, some while a change is arriving.
            if let Ok(change) =
                tokio::time::timeout(Duration::from_micros(200), subscription.next_change()).await
            {
                received.push(change.expect("next_change"));
            }
        }
    };
    tokio::time::timeout(HANG_GUARD, reading)
        .await
        .unwrap_or_else(|_| panic!("changes went missing: {} arrived", received.len()));
    let written: Vec<Change> = writer
        .await
        .unwrap()
        .into_iter()
        .map(Change::Created)
        .collect();
    assert_eq!(received, written);
}

/// A session stored already revoked (an import, say) is not announced as a
/// creation: listeners would otherwise cache a revoked session.
pub async fn a_session_stored_revoked_publishes_no_creation(
    store: Arc<dyn SessionStore>,
    feed: Arc<dyn ChangeFeed>,
) {
    let mut subscription = subscribe(&feed).await;
    let (_, mut revoked) = session_at(account(), epoch());
    revoked.revoked_at = Some(epoch());
    store.insert(&revoked).await.unwrap();
    nothing_else_published(&store, &mut subscription).await;
}
