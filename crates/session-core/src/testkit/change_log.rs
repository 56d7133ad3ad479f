//! The [`ChangeLog`] contract, for stores several processes share. Each
//! function is one case; see [`change_log_contract_tests!`](crate::change_log_contract_tests).
//!
//! Every read goes through `read_all`, which checks the invariants any
//! page must keep (no more entries than asked for; a full page moves the
//! cursor; the end of the log reads as empty from the last cursor), so each
//! case checks them too.
//!
//! A case that wrote before taking a head ignores what it wrote before
//! (`Before`): the contract lets a head precede writes already visible, and
//! a reader then reads them again, harmlessly, as the store is now.
//! Everything written after must be there, exactly once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::{account, epoch, session_at, session_with_metadata};
use crate::port::change_log::{Change, ChangeLog, LogCursor, LogRead};
use crate::port::store::{RevokeOutcome, SeenAt, SessionStore};
use crate::session::{AccountId, RevocationDetails, RevocationReason, Session, SessionId};
use crate::token::TokenHash;

/// Fails a case that would otherwise hang; not a measure of speed.
const HANG_GUARD: Duration = Duration::from_secs(30);

/// Every change after `from`, page by page (`limit` entries each), checking
/// each page's invariants. Returns the changes and the cursor after them.
async fn read_all_in_pages(
    log: &Arc<dyn ChangeLog>,
    from: &LogCursor,
    limit: u32,
) -> (Vec<Change>, LogCursor) {
    let mut changes = Vec::new();
    let mut after = from.clone();
    loop {
        let LogRead::Page(page) = log.read(&after, limit).await.expect("read") else {
            panic!("the log expired a cursor it had just given");
        };
        assert!(
            page.entries.len() + page.rejected.len() <= limit as usize,
            "a page over its limit"
        );
        changes.extend(page.entries);
        if !page.more {
            let LogRead::Page(again) = log.read(&page.next, limit).await.expect("read") else {
                panic!("the log expired a cursor it had just given");
            };
            assert!(
                again.entries.is_empty(),
                "the end of the log read again: {:?}",
                again.entries
            );
            return (changes, page.next);
        }
        assert_ne!(page.next, after, "a full page that moved nowhere");
        after = page.next;
    }
}

async fn read_all(log: &Arc<dyn ChangeLog>, from: &LogCursor) -> Vec<Change> {
    read_all_in_pages(log, from, 1_000).await.0
}

/// What a case wrote before taking a position: changes about it may be read
/// again, and are left out before comparing.
#[derive(Default)]
struct Before {
    created: Vec<SessionId>,
    revoked: Vec<TokenHash>,
}

impl Before {
    fn created(sessions: &[&Session]) -> Self {
        Self {
            created: sessions.iter().map(|session| session.id).collect(),
            revoked: Vec::new(),
        }
    }

    fn and_revoked(mut self, hashes: &[TokenHash]) -> Self {
        self.revoked.extend_from_slice(hashes);
        self
    }

    fn strip(&self, changes: Vec<Change>) -> Vec<Change> {
        changes
            .into_iter()
            .filter_map(|change| match change {
                Change::Created(session) if self.created.contains(&session.id) => None,
                Change::Revoked(hashes) => {
                    let hashes: Vec<TokenHash> = hashes
                        .into_iter()
                        .filter(|hash| !self.revoked.contains(hash))
                        .collect();
                    (!hashes.is_empty()).then_some(Change::Revoked(hashes))
                }
                other => Some(other),
            })
            .collect()
    }
}

async fn head(log: &Arc<dyn ChangeLog>) -> LogCursor {
    log.head().await.expect("head")
}

async fn insert(store: &Arc<dyn SessionStore>, account: AccountId) -> Session {
    let (_, session) = session_at(account, epoch());
    store.insert(&session).await.unwrap();
    session
}

/// The token hashes of every revocation among `changes`; fails on anything else.
fn revoked_hashes(changes: Vec<Change>) -> Vec<TokenHash> {
    changes
        .into_iter()
        .flat_map(|change| match change {
            Change::Revoked(hashes) => {
                assert!(!hashes.is_empty(), "an empty revocation was logged");
                hashes
            }
            other => panic!("expected only revocations, found {other:?}"),
        })
        .collect()
}

/// Created sessions are read back equal to what was stored: every metadata
/// field, multi-byte text at the byte limits, IPv6.
pub async fn created_sessions_are_read_as_stored(
    store: Arc<dyn SessionStore>,
    log: Arc<dyn ChangeLog>,
) {
    let start = head(&log).await;
    let plain = insert(&store, account()).await;
    let full = session_with_metadata(account());
    store.insert(&full).await.unwrap();
    assert_eq!(
        read_all(&log, &start).await,
        vec![Change::Created(plain), Change::Created(full)]
    );
}

/// Revoking one session logs exactly its hash.
pub async fn a_revocation_is_logged_with_its_hash(
    store: Arc<dyn SessionStore>,
    log: Arc<dyn ChangeLog>,
) {
    let session = insert(&store, account()).await;
    let bystander = insert(&store, account()).await;
    let start = head(&log).await;
    assert_eq!(
        store
            .revoke(session.id, epoch(), RevocationReason::LOGOUT, None)
            .await
            .unwrap(),
        RevokeOutcome::Revoked {
            token_hash: session.token_hash
        }
    );
    assert_eq!(
        Before::created(&[&session, &bystander]).strip(read_all(&log, &start).await),
        vec![Change::Revoked(vec![session.token_hash])]
    );
    assert!(
        store
            .find_active_by_hash(&bystander.token_hash)
            .await
            .unwrap()
            .is_some()
    );
}

/// A revoke-all is logged with exactly the hashes it revoked: not the
/// exception, not another account's, not one revoked earlier.
pub async fn revoke_all_is_logged_with_exactly_the_revoked_hashes(
    store: Arc<dyn SessionStore>,
    log: Arc<dyn ChangeLog>,
) {
    const SESSIONS: usize = 250;
    let target = account();
    let mut sessions = Vec::new();
    for _ in 0..SESSIONS {
        sessions.push(insert(&store, target).await);
    }
    let kept = sessions.pop().unwrap();
    let earlier = sessions.pop().unwrap();
    store
        .revoke(earlier.id, epoch(), RevocationReason::LOGOUT, None)
        .await
        .unwrap();
    let bystander = insert(&store, account()).await;

    let start = head(&log).await;
    let returned: BTreeSet<TokenHash> = store
        .revoke_all_for_account(
            target,
            Some(kept.id),
            epoch(),
            RevocationReason::LOGOUT,
            None,
        )
        .await
        .unwrap()
        .into_iter()
        .collect();
    let expected: BTreeSet<TokenHash> = sessions.iter().map(|s| s.token_hash).collect();
    assert_eq!(returned, expected, "the store's own answer");
    let mut before: Vec<&Session> = sessions.iter().collect();
    before.extend([&kept, &earlier, &bystander]);
    let logged = revoked_hashes(
        Before::created(&before)
            .and_revoked(&[earlier.token_hash])
            .strip(read_all(&log, &start).await),
    );
    assert_eq!(logged.len(), expected.len(), "each hash logged once");
    assert_eq!(logged.into_iter().collect::<BTreeSet<_>>(), expected);
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

/// Writes that change nothing log nothing: revoking a revoked session, a
/// revoke-all that finds no active session, revoking an unknown id.
pub async fn writes_that_change_nothing_log_nothing(
    store: Arc<dyn SessionStore>,
    log: Arc<dyn ChangeLog>,
) {
    let owner = account();
    let session = insert(&store, owner).await;
    store
        .revoke(session.id, epoch(), RevocationReason::LOGOUT, None)
        .await
        .unwrap();
    let start = head(&log).await;

    assert_eq!(
        store
            .revoke(session.id, epoch(), RevocationReason::LOGOUT, None)
            .await
            .unwrap(),
        RevokeOutcome::AlreadyRevoked {
            token_hash: session.token_hash
        }
    );
    assert!(
        store
            .revoke_all_for_account(owner, None, epoch(), RevocationReason::LOGOUT, None)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .revoke(SessionId::new(), epoch(), RevocationReason::LOGOUT, None)
            .await
            .unwrap(),
        RevokeOutcome::NotFound
    );
    assert_eq!(
        Before::created(&[&session])
            .and_revoked(&[session.token_hash])
            .strip(read_all(&log, &start).await),
        Vec::new()
    );
}

/// Entries are read in the order their writes committed; a creation is
/// reported as the session is when the log is read, so one revoked since
/// is not reported active.
pub async fn entries_are_in_commit_order_and_creations_read_as_they_are_now(
    store: Arc<dyn SessionStore>,
    log: Arc<dyn ChangeLog>,
) {
    let start = head(&log).await;
    let a = insert(&store, account()).await;
    let b = insert(&store, account()).await;
    store
        .revoke(a.id, epoch(), RevocationReason::LOGOUT, None)
        .await
        .unwrap();
    let c = insert(&store, account()).await;
    let changes = read_all(&log, &start).await;
    assert_eq!(
        changes,
        vec![
            Change::Created(b),
            Change::Revoked(vec![a.token_hash]),
            Change::Created(c),
        ],
        "a's creation is left out: a is revoked by now"
    );
}

/// Reading from a head finds every write made after it, and reading from
/// the cursor a read ended at finds every write made after that read, and
/// nothing it already returned.
pub async fn reads_from_a_head_or_a_later_cursor_find_every_later_write(
    store: Arc<dyn SessionStore>,
    log: Arc<dyn ChangeLog>,
) {
    let earlier = insert(&store, account()).await;
    let start = head(&log).await;
    let later = insert(&store, account()).await;
    let (changes, next) = read_all_in_pages(&log, &start, 1_000).await;
    assert_eq!(
        Before::created(&[&earlier]).strip(changes),
        vec![Change::Created(later.clone())]
    );
    let last = insert(&store, account()).await;
    assert_eq!(read_all(&log, &next).await, vec![Change::Created(last)]);
}

/// A read consumes nothing: reading again from the same position returns
/// the same entries, so a reader that failed half-way loses nothing.
pub async fn reading_again_returns_the_same_entries(
    store: Arc<dyn SessionStore>,
    log: Arc<dyn ChangeLog>,
) {
    let start = head(&log).await;
    let session = insert(&store, account()).await;
    let first = read_all(&log, &start).await;
    assert_eq!(first, vec![Change::Created(session)]);
    assert_eq!(read_all(&log, &start).await, first);
}

/// Small pages cover the log exactly once, in order.
pub async fn pages_cover_the_log_exactly_once(
    store: Arc<dyn SessionStore>,
    log: Arc<dyn ChangeLog>,
) {
    let start = head(&log).await;
    let mut expected = Vec::new();
    for _ in 0..25 {
        expected.push(Change::Created(insert(&store, account()).await));
    }
    let (changes, _) = read_all_in_pages(&log, &start, 7).await;
    assert_eq!(changes, expected);
}

/// A session stored already revoked was never active: no creation is logged.
pub async fn a_session_stored_revoked_logs_no_creation(
    store: Arc<dyn SessionStore>,
    log: Arc<dyn ChangeLog>,
) {
    let start = head(&log).await;
    let (_, mut revoked) = session_at(account(), epoch());
    revoked.revocation = RevocationDetails::of(Some(epoch()), None, None);
    store.insert(&revoked).await.unwrap();
    let marker = insert(&store, account()).await;
    assert_eq!(
        read_all(&log, &start).await,
        vec![Change::Created(marker)],
        "the revoked session is not logged as created"
    );
}

/// A write wakes a listener; the wake-up is a hint and the log says what changed.
pub async fn a_write_wakes_a_listener(store: Arc<dyn SessionStore>, log: Arc<dyn ChangeLog>) {
    let mut wake_ups = log.wake_ups().await.expect("wake_ups");
    insert(&store, account()).await;
    tokio::time::timeout(HANG_GUARD, wake_ups.next())
        .await
        .unwrap_or_else(|_| panic!("no wake-up within {HANG_GUARD:?}"))
        .expect("wake-up");
}

/// Recording when sessions were last seen is not a change to the set of
/// active sessions: it logs nothing, so no follower reads or reloads for it.
pub async fn recording_last_seen_logs_nothing(
    store: Arc<dyn SessionStore>,
    log: Arc<dyn ChangeLog>,
) {
    let session = insert(&store, account()).await;
    let start = head(&log).await;
    store
        .record_last_seen(&[SeenAt {
            id: session.id,
            at: epoch(),
        }])
        .await
        .unwrap();
    let later = SeenAt {
        id: session.id,
        at: epoch() + time::Duration::minutes(1),
    };
    store.record_last_seen(&[later]).await.unwrap();
    assert_eq!(store.last_seen(&[session.id]).await.unwrap(), vec![later]);
    assert_eq!(
        Before::created(&[&session]).strip(read_all(&log, &start).await),
        Vec::new()
    );
}
