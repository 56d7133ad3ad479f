//! The [`SessionStore`] contract. Each function is one case; see
//! [`store_contract_tests!`](crate::store_contract_tests).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use time::Duration;

use super::{account, epoch, session_at, session_minted_at, session_with_metadata};
use crate::MemoryCache;
use crate::config::{LimitPolicy, SessionLimit};
use crate::port::clock::ManualClock;
use crate::port::store::{
    Exclusive, LimitedInsert, RetentionAction, RevokeOutcome, SeenAt, SessionStore, StoreError,
};
use crate::service::{Error, Revocation, SessionService};
use crate::session::{
    AccountId, ClientMetadata, RevocationDetails, RevocationReason, Revoker, Session, SessionId,
    SessionIdentity,
};
use crate::token::TokenHash;
use crate::{AccountPage, ListPosition, ListScope, PageLimit, PageRequest};

/// A stored session is found by its hash and by its id, unchanged.
pub async fn insert_then_find(store: Arc<dyn SessionStore>) {
    let (_, session) = session_at(account(), epoch());
    store.insert(&session).await.unwrap();
    let found = store
        .find_active_by_hash(&session.token_hash)
        .await
        .unwrap();
    assert_eq!(found.as_ref(), Some(&session), "find_active_by_hash");
    assert_eq!(store.get(session.id).await.unwrap(), Some(session), "get");
}

/// Unknown hashes and ids are `None`, not errors.
pub async fn unknown_hash_and_id_are_absent(store: Arc<dyn SessionStore>) {
    let (_, stored) = session_at(account(), epoch());
    store.insert(&stored).await.unwrap();
    let (_, other) = session_at(account(), epoch());
    assert_eq!(
        store.find_active_by_hash(&other.token_hash).await.unwrap(),
        None
    );
    assert_eq!(store.get(other.id).await.unwrap(), None);
}

/// A second session with the same token hash is rejected and the first is untouched.
pub async fn duplicate_token_hash_is_rejected(store: Arc<dyn SessionStore>) {
    let (_, first) = session_at(account(), epoch());
    store.insert(&first).await.unwrap();
    let (_, mut second) = session_at(account(), epoch() + Duration::seconds(1));
    second.token_hash = first.token_hash;
    let err = store.insert(&second).await.unwrap_err();
    assert!(matches!(err, StoreError::DuplicateTokenHash), "got {err:?}");
    assert_eq!(
        store.get(second.id).await.unwrap(),
        None,
        "nothing was written"
    );
    assert_eq!(
        store.find_active_by_hash(&first.token_hash).await.unwrap(),
        Some(first)
    );
}

/// Every metadata field survives storage, including multi-byte text at the byte limits.
pub async fn metadata_round_trips_at_the_limits(store: Arc<dyn SessionStore>) {
    let session = session_with_metadata(account());
    store.insert(&session).await.unwrap();
    assert_eq!(store.get(session.id).await.unwrap(), Some(session));
}

/// Revoking twice revokes once: the first `revoked_at` stays, the session is
/// never found as active again, and it is still readable by id.
pub async fn revoke_is_idempotent_and_hides_the_session(store: Arc<dyn SessionStore>) {
    let (_, session) = session_at(account(), epoch());
    store.insert(&session).await.unwrap();
    let first_at = epoch() + Duration::minutes(1);
    assert_eq!(
        store
            .revoke(session.id, first_at, RevocationReason::LOGOUT, None)
            .await
            .unwrap(),
        RevokeOutcome::Revoked {
            token_hash: session.token_hash
        }
    );
    assert_eq!(
        store
            .revoke(
                session.id,
                first_at + Duration::minutes(1),
                RevocationReason::LOGOUT,
                None
            )
            .await
            .unwrap(),
        RevokeOutcome::AlreadyRevoked {
            token_hash: session.token_hash
        }
    );
    assert_eq!(
        store
            .find_active_by_hash(&session.token_hash)
            .await
            .unwrap(),
        None
    );
    let read = store
        .get(session.id)
        .await
        .unwrap()
        .expect("still readable by id");
    assert_eq!(
        read.revoked_at(),
        Some(first_at),
        "the first revocation time stays"
    );
    assert_eq!(read.revocation_reason(), Some(&RevocationReason::LOGOUT));
    assert_eq!(
        Session {
            revocation: None,
            ..read
        },
        session,
        "nothing else changed"
    );
}

/// Each revoke form stores the reason it is given with the revocation,
/// built-in and caller-defined alike, and a session that stays active has
/// none: the one kept by "everywhere else", and one of another account.
pub async fn revocation_reason_round_trips_for_each_revoke_form(store: Arc<dyn SessionStore>) {
    let at = epoch() + Duration::minutes(1);
    let own = RevocationReason::new("password_change").unwrap();
    let (one, all, all_but, bystander) = (account(), account(), account(), account());
    let mut stored = Vec::new();
    for owner in [one, all, all, all_but, all_but, bystander] {
        let (_, session) = session_at(owner, epoch());
        store.insert(&session).await.unwrap();
        stored.push(session);
    }
    store
        .revoke(stored[0].id, at, own.clone(), None)
        .await
        .unwrap();
    store
        .revoke_all_for_account(all, None, at, RevocationReason::ADMIN, None)
        .await
        .unwrap();
    store
        .revoke_all_for_account(
            all_but,
            Some(stored[4].id),
            at,
            RevocationReason::LIMIT,
            None,
        )
        .await
        .unwrap();

    let expected = [
        Some(own),
        Some(RevocationReason::ADMIN),
        Some(RevocationReason::ADMIN),
        Some(RevocationReason::LIMIT),
        None,
        None,
    ];
    for (session, reason) in stored.iter().zip(expected) {
        let read = store.get(session.id).await.unwrap().expect("stored");
        assert_eq!(
            read.revocation_reason(),
            reason.as_ref(),
            "get {:?}",
            session.id
        );
        assert_eq!(
            read.revoked_at().is_some(),
            reason.is_some(),
            "revoked iff a reason"
        );
        let listed = list_all(&*store, session.account_id, ListScope::IncludeRevoked).await;
        let listed = listed.iter().find(|s| s.id == session.id).expect("listed");
        assert_eq!(
            listed.revocation_reason(),
            reason.as_ref(),
            "list {:?}",
            session.id
        );
    }
    for active in [&stored[4], &stored[5]] {
        let found = store
            .find_active_by_hash(&active.token_hash)
            .await
            .unwrap()
            .expect("still active");
        assert_eq!(found.revocation_reason(), None);
    }
}

/// A revocation is final, reason included: a later revoke, or a revoke-all
/// of its account, leaves the first reason (and time) in place.
pub async fn the_first_revocation_reason_stays(store: Arc<dyn SessionStore>) {
    let owner = account();
    let (_, session) = session_at(owner, epoch());
    store.insert(&session).await.unwrap();
    let first_at = epoch() + Duration::minutes(1);
    store
        .revoke(session.id, first_at, RevocationReason::IDLE, None)
        .await
        .unwrap();
    let later = epoch() + Duration::minutes(2);
    assert_eq!(
        store
            .revoke(session.id, later, RevocationReason::ADMIN, None)
            .await
            .unwrap(),
        RevokeOutcome::AlreadyRevoked {
            token_hash: session.token_hash
        }
    );
    assert!(
        store
            .revoke_all_for_account(owner, None, later, RevocationReason::LIMIT, None)
            .await
            .unwrap()
            .is_empty()
    );
    let read = store.get(session.id).await.unwrap().expect("stored");
    assert_eq!(read.revocation_reason(), Some(&RevocationReason::IDLE));
    assert_eq!(read.revoked_at(), Some(first_at));
}

/// Revoking an id that was never stored says so and changes nothing.
pub async fn revoke_unknown_id_is_not_found(store: Arc<dyn SessionStore>) {
    let (_, stored) = session_at(account(), epoch());
    store.insert(&stored).await.unwrap();
    assert_eq!(
        store
            .revoke(SessionId::new(), epoch(), RevocationReason::LOGOUT, None)
            .await
            .unwrap(),
        RevokeOutcome::NotFound
    );
    assert_eq!(store.get(stored.id).await.unwrap(), Some(stored));
}

/// Revoke-all returns exactly the hashes of that account's active sessions, and
/// leaves other accounts and earlier revocations alone.
pub async fn revoke_all_revokes_only_that_accounts_active_sessions(store: Arc<dyn SessionStore>) {
    let (target, bystander) = (account(), account());
    let mut expected = BTreeSet::new();
    for i in 0..5 {
        let (_, session) = session_at(target, epoch() + Duration::seconds(i));
        store.insert(&session).await.unwrap();
        expected.insert(session.token_hash);
    }
    let (_, earlier) = session_at(target, epoch());
    store.insert(&earlier).await.unwrap();
    let earlier_at = epoch() + Duration::seconds(30);
    store
        .revoke(earlier.id, earlier_at, RevocationReason::LOGOUT, None)
        .await
        .unwrap();
    let (_, other) = session_at(bystander, epoch());
    store.insert(&other).await.unwrap();

    let at = epoch() + Duration::minutes(5);
    let revoked: BTreeSet<TokenHash> = store
        .revoke_all_for_account(target, None, at, RevocationReason::LOGOUT, None)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(revoked, expected);
    assert!(
        list_all(&*store, target, ListScope::Active)
            .await
            .is_empty()
    );
    for session in list_all(&*store, target, ListScope::IncludeRevoked).await {
        let want = if session.id == earlier.id {
            earlier_at
        } else {
            at
        };
        assert_eq!(session.revoked_at(), Some(want), "{:?}", session.id);
    }
    assert_eq!(
        store.find_active_by_hash(&other.token_hash).await.unwrap(),
        Some(other)
    );
    assert!(
        store
            .revoke_all_for_account(target, None, at, RevocationReason::LOGOUT, None)
            .await
            .unwrap()
            .is_empty(),
        "a second revoke-all finds nothing left"
    );
}

/// "Log out everywhere else": the excepted session stays active.
pub async fn revoke_all_keeps_the_exception(store: Arc<dyn SessionStore>) {
    let target = account();
    let mut sessions = Vec::new();
    for i in 0..4 {
        let (_, session) = session_at(target, epoch() + Duration::seconds(i));
        store.insert(&session).await.unwrap();
        sessions.push(session);
    }
    let keep = sessions[2].clone();
    let revoked: HashSet<TokenHash> = store
        .revoke_all_for_account(
            target,
            Some(keep.id),
            epoch() + Duration::minutes(1),
            RevocationReason::LOGOUT,
            None,
        )
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(revoked.len(), 3);
    assert!(!revoked.contains(&keep.token_hash));
    let active = list_all(&*store, target, ListScope::Active).await;
    assert_eq!(active, vec![keep]);
}

/// Lists are newest first (ties broken by id, newest first) and include revoked
/// sessions only when asked.
pub async fn list_is_newest_first_and_filters_revoked(store: Arc<dyn SessionStore>) {
    let target = account();
    let mut sessions = Vec::new();
    // Inserted out of order, with two sharing a creation time.
    for offset in [3, 1, 4, 1, 5] {
        let (_, session) = session_at(target, epoch() + Duration::seconds(offset));
        store.insert(&session).await.unwrap();
        sessions.push(session);
    }
    let (_, foreign) = session_at(account(), epoch());
    store.insert(&foreign).await.unwrap();
    let revoked_at = epoch() + Duration::minutes(1);
    store
        .revoke(sessions[0].id, revoked_at, RevocationReason::LOGOUT, None)
        .await
        .unwrap();
    sessions[0].revocation =
        RevocationDetails::of(Some(revoked_at), Some(RevocationReason::LOGOUT), None);

    let mut newest_first = sessions.clone();
    newest_first.sort_by_key(|s| std::cmp::Reverse((s.created_at, s.id)));
    let all = list_all(&*store, target, ListScope::IncludeRevoked).await;
    assert_eq!(all, newest_first);
    let active = list_all(&*store, target, ListScope::Active).await;
    let expected: Vec<Session> = newest_first
        .into_iter()
        .filter(Session::is_active)
        .collect();
    assert_eq!(active, expected);
    assert!(
        list_all(&*store, account(), ListScope::IncludeRevoked)
            .await
            .is_empty()
    );
}

/// Every page of an account's sessions, read one default-sized page at a
/// time; asserts the store rejected no row.
async fn list_all(store: &dyn SessionStore, account: AccountId, scope: ListScope) -> Vec<Session> {
    let mut sessions = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_for_account(
                account,
                scope,
                PageRequest {
                    after,
                    limit: PageLimit::DEFAULT,
                },
            )
            .await
            .unwrap();
        assert!(page.rejected.is_empty(), "{:?}", page.rejected);
        sessions.extend(page.sessions);
        match page.next {
            Some(next) => after = Some(next),
            None => return sessions,
        }
    }
}

/// Reads one page, asserting it is within its limit and rejects no row.
async fn page_of(
    store: &dyn SessionStore,
    account: AccountId,
    scope: ListScope,
    after: Option<ListPosition>,
    limit: u32,
) -> AccountPage {
    let limit = PageLimit::new(limit).unwrap();
    let page = store
        .list_for_account(account, scope, PageRequest { after, limit })
        .await
        .unwrap();
    assert!(page.sessions.len() <= limit.get() as usize);
    assert!(page.rejected.is_empty(), "{:?}", page.rejected);
    page
}

/// Paging through an account's sessions while new ones are created between
/// pages yields the sessions that existed at the start exactly once each,
/// newest first, ties on `created_at` ordered by id: the keyset does not
/// shift as OFFSET would. Sessions of other accounts with the same
/// instants never appear.
pub async fn list_pages_have_no_gaps_or_duplicates_while_sessions_are_created(
    store: Arc<dyn SessionStore>,
) {
    let target = account();
    let mut existing = Vec::new();
    // Ties on `created_at`, within the account and with another account.
    for offset in [0, 1, 1, 1, 2, 3, 3, 4, 5] {
        let at = epoch() + Duration::seconds(offset);
        let (_, session) = session_at(target, at);
        store.insert(&session).await.unwrap();
        existing.push(session);
        let (_, foreign) = session_at(account(), at);
        store.insert(&foreign).await.unwrap();
    }
    existing.sort_by_key(|s| std::cmp::Reverse((s.created_at, s.id)));

    let mut seen = Vec::new();
    let mut after = None;
    let mut created = Vec::new();
    for round in 0.. {
        let page = page_of(&*store, target, ListScope::IncludeRevoked, after, 2).await;
        assert!(!page.sessions.is_empty(), "no empty page");
        seen.extend(page.sessions);
        // A login between two pages: newer than any position handed out.
        let (_, new) = session_at(target, epoch() + Duration::minutes(10 + round));
        store.insert(&new).await.unwrap();
        created.push(new);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, existing, "each once, newest first, no gap");
    assert_eq!(created.len(), 5, "pages of 2, 2, 2, 2 and 1");

    // A listing started now sees the new sessions first.
    created.reverse();
    let fresh = list_all(&*store, target, ListScope::IncludeRevoked).await;
    assert_eq!(fresh[..created.len()], created[..]);
    assert_eq!(fresh[created.len()..], existing[..]);
}

/// A page holds at most its limit, up to [`PageLimit::MAX`]; `next` is
/// given exactly when another session follows, so the last page is never
/// empty, and a limit of 1 walks every session.
pub async fn list_pages_are_bounded_by_their_limit(store: Arc<dyn SessionStore>) {
    assert_eq!(PageLimit::new(0), None);
    assert_eq!(PageLimit::new(PageLimit::MAX.get() + 1), None);
    let target = account();
    let total = PageLimit::MAX.get() as usize + 1;
    for i in 0..total {
        let (_, session) = session_at(target, epoch() + Duration::seconds(i as i64));
        store.insert(&session).await.unwrap();
    }
    let scope = ListScope::Active;
    let first = page_of(&*store, target, scope, None, PageLimit::MAX.get()).await;
    assert_eq!(first.sessions.len(), PageLimit::MAX.get() as usize);
    let last = first.sessions.last().unwrap();
    assert_eq!(first.next, Some(ListPosition::after(last)));
    let rest = page_of(&*store, target, scope, first.next, PageLimit::MAX.get()).await;
    assert_eq!(rest.sessions.len(), 1);
    assert_eq!(rest.next, None, "no page follows the last session");

    let exact = page_of(&*store, target, scope, first.next, 1).await;
    assert_eq!(exact.sessions, rest.sessions);
    assert_eq!(exact.next, None, "a full page that ends the list says so");

    let mut after = None;
    let mut walked = 0;
    for _ in 0..4 {
        let page = page_of(&*store, target, scope, after, 1).await;
        assert_eq!(page.sessions.len(), 1);
        walked += 1;
        after = page.next;
    }
    assert_eq!(walked, 4);
    assert!(after.is_some());
}

/// The active scope skips revoked sessions without leaving pages short, and
/// a position, even one taken from another account's session, only narrows
/// the account's list: no other account's session is ever returned.
pub async fn list_pages_filter_revoked_and_stay_in_the_account(store: Arc<dyn SessionStore>) {
    let target = account();
    let mut sessions = Vec::new();
    for i in 0..6 {
        let (_, session) = session_at(target, epoch() + Duration::seconds(i));
        store.insert(&session).await.unwrap();
        sessions.push(session);
    }
    let revoked_at = epoch() + Duration::minutes(1);
    for session in sessions.iter_mut().step_by(2) {
        store
            .revoke(session.id, revoked_at, RevocationReason::LOGOUT, None)
            .await
            .unwrap();
        session.revocation =
            RevocationDetails::of(Some(revoked_at), Some(RevocationReason::LOGOUT), None);
    }
    sessions.reverse();
    let active: Vec<Session> = sessions.iter().filter(|s| s.is_active()).cloned().collect();

    let first = page_of(&*store, target, ListScope::Active, None, 2).await;
    assert_eq!(first.sessions, active[..2]);
    let second = page_of(&*store, target, ListScope::Active, first.next, 2).await;
    assert_eq!(second.sessions, active[2..]);
    assert_eq!(second.next, None);
    assert_eq!(
        list_all(&*store, target, ListScope::IncludeRevoked).await,
        sessions
    );

    // Another account's sessions, older and newer than all of the target's.
    let other = account();
    let (_, older) = session_at(other, epoch() - Duration::seconds(1));
    let (_, newer) = session_at(other, epoch() + Duration::hours(1));
    for foreign in [&older, &newer] {
        store.insert(foreign).await.unwrap();
    }
    let from_foreign = page_of(
        &*store,
        target,
        ListScope::IncludeRevoked,
        Some(ListPosition::after(&newer)),
        PageLimit::MAX.get(),
    )
    .await;
    assert_eq!(
        from_foreign.sessions, sessions,
        "only the target's, all older"
    );
    let past_the_end = page_of(
        &*store,
        target,
        ListScope::IncludeRevoked,
        Some(ListPosition::after(&older)),
        PageLimit::MAX.get(),
    )
    .await;
    assert!(past_the_end.sessions.is_empty());
    assert_eq!(past_the_end.next, None);
}

/// Stores `count` sessions a second apart and revokes every `revoke_every`th
/// (from the first); returns those left active, in creation order.
async fn stored_with_every_nth_revoked(
    store: &dyn SessionStore,
    count: i64,
    revoke_every: i64,
) -> Vec<Session> {
    let mut active = Vec::new();
    for i in 0..count {
        let (_, session) = session_at(account(), epoch() + Duration::seconds(i));
        store.insert(&session).await.unwrap();
        if i % revoke_every == 0 {
            store
                .revoke(
                    session.id,
                    epoch() + Duration::hours(1),
                    RevocationReason::LOGOUT,
                    None,
                )
                .await
                .unwrap();
        } else {
            active.push(session);
        }
    }
    active
}

/// Paging through active sessions yields each active one exactly once, in id
/// order, in pages no longer than asked, and no revoked one.
pub async fn active_pages_cover_every_active_session_once(store: Arc<dyn SessionStore>) {
    const PAGE: u32 = 7;
    let mut active: Vec<SessionId> = stored_with_every_nth_revoked(&*store, 40, 5)
        .await
        .iter()
        .map(|session| session.id)
        .collect();
    active.sort();

    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = store.active_page(after, PAGE).await.unwrap();
        pages += 1;
        let rows = page.sessions;
        assert!(rows.len() <= PAGE as usize, "page of {} rows", rows.len());
        assert!(page.rejected.is_empty());
        assert!(
            rows.iter().all(Session::is_active),
            "a revoked row was paged"
        );
        seen.extend(rows.iter().map(|s| s.id));
        match page.resume_after {
            Some(last) => {
                assert_eq!(rows.len(), PAGE as usize, "a short page that goes on");
                assert_eq!(Some(last), rows.last().map(|s| s.id));
                after = Some(last);
            }
            None => break,
        }
    }
    assert_eq!(seen, active, "every active session once, in id order");
    assert!(pages >= 5, "32 rows at 7 a page take 5 pages, took {pages}");
}

/// Identity pages are the active pages narrowed: the same rows in the same
/// pages, each the identity of the session the active page holds.
pub async fn identity_pages_are_the_active_pages_narrowed(store: Arc<dyn SessionStore>) {
    const PAGE: u32 = 4;
    stored_with_every_nth_revoked(&*store, 18, 3).await;

    let mut after = None;
    let mut pages = 0;
    loop {
        let whole = store.active_page(after, PAGE).await.unwrap();
        let narrow = store.active_identity_page(after, PAGE).await.unwrap();
        pages += 1;
        assert!(narrow.rejected.is_empty());
        assert_eq!(
            narrow.identities,
            whole
                .sessions
                .iter()
                .map(SessionIdentity::from)
                .collect::<Vec<_>>(),
            "page {pages}"
        );
        assert_eq!(narrow.resume_after, whole.resume_after, "page {pages}");
        match narrow.resume_after {
            Some(last) => after = Some(last),
            None => break,
        }
    }
    assert_eq!(
        pages, 4,
        "12 active rows at 4 a page, and the empty last page"
    );
}

/// The warm's read of every identity brings each active session's identity
/// once, no revoked one, in pages of at most the size asked, and then ends.
pub async fn active_identities_are_each_active_identity_once(store: Arc<dyn SessionStore>) {
    const PAGE: u32 = 4;
    let mut active: Vec<SessionIdentity> = stored_with_every_nth_revoked(&*store, 18, 3)
        .await
        .iter()
        .map(SessionIdentity::from)
        .collect();

    let (sender, mut receiver) = tokio::sync::mpsc::channel(1);
    let reading = tokio::spawn({
        let store = Arc::clone(&store);
        async move { store.active_identities(PAGE, sender).await }
    });
    let mut read = Vec::new();
    while let Some(page) = receiver.recv().await {
        let page = page.expect("no failure");
        assert!(page.rejected.is_empty());
        assert!(
            page.identities.len() <= PAGE as usize,
            "{} rows",
            page.identities.len()
        );
        read.extend(page.identities);
    }
    reading.await.unwrap();
    read.sort_by_key(|identity| identity.id);
    active.sort_by_key(|identity| identity.id);
    assert_eq!(read, active, "every active identity once");
}

/// Many tasks creating and revoking at once leave exactly the expected sessions active.
pub async fn concurrent_creates_and_revokes_end_consistent(store: Arc<dyn SessionStore>) {
    const TASKS: usize = 16;
    const PER_TASK: usize = 20;
    let shared = account();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut kept = Vec::new();
            let mut revoked = Vec::new();
            for i in 0..PER_TASK {
                let (_, session) = session_at(shared, epoch() + Duration::milliseconds(i as i64));
                store.insert(&session).await.unwrap();
                if (task + i) % 2 == 0 {
                    let outcome = store
                        .revoke(session.id, epoch(), RevocationReason::LOGOUT, None)
                        .await
                        .unwrap();
                    assert!(matches!(outcome, RevokeOutcome::Revoked { .. }));
                    revoked.push(session);
                } else {
                    kept.push(session);
                }
            }
            (kept, revoked)
        }));
    }
    let mut kept = Vec::new();
    let mut revoked = Vec::new();
    for task in tasks {
        let (k, r) = task.await.unwrap();
        kept.extend(k);
        revoked.extend(r);
    }
    for session in &kept {
        assert!(
            store
                .find_active_by_hash(&session.token_hash)
                .await
                .unwrap()
                .is_some()
        );
    }
    for session in &revoked {
        assert_eq!(
            store
                .find_active_by_hash(&session.token_hash)
                .await
                .unwrap(),
            None
        );
    }
    let mut active: Vec<SessionId> = list_all(&*store, shared, ListScope::Active)
        .await
        .iter()
        .map(|s| s.id)
        .collect();
    active.sort();
    let mut expected: Vec<SessionId> = kept.iter().map(|s| s.id).collect();
    expected.sort();
    assert_eq!(active, expected);
    let all = list_all(&*store, shared, ListScope::IncludeRevoked).await;
    assert_eq!(all.len(), TASKS * PER_TASK);
}

/// The service over this store: create, resolve, restart (a new service
/// warmed from the same store), revoke, and the revoked token stays rejected.
pub async fn service_round_trip(store: Arc<dyn SessionStore>) {
    let clock = Arc::new(ManualClock::new(epoch()));
    let service = |store: &Arc<dyn SessionStore>| {
        SessionService::builder(Arc::clone(store), Arc::new(MemoryCache::new()))
            .clock(clock.clone())
            .warm_page_size(2)
            .build()
    };
    let first = service(&store);
    first.warm().await.unwrap();
    let owner = account();
    let kept = first
        .create(owner, ClientMetadata::default())
        .await
        .unwrap();
    let gone = first
        .create(owner, ClientMetadata::default())
        .await
        .unwrap();
    let other = first
        .create(owner, ClientMetadata::default())
        .await
        .unwrap();
    assert_eq!(
        first.resolve(kept.token.expose_secret()).await.unwrap(),
        SessionIdentity::from(&*kept.session)
    );

    // Restart: a fresh cache warmed from the same store knows every active session.
    let second = service(&store);
    let report = second.warm().await.unwrap();
    assert_eq!(report.sessions, 3);
    assert_eq!(
        second
            .revoke(gone.session.id, RevocationReason::LOGOUT)
            .await
            .unwrap(),
        Revocation::Revoked
    );
    assert_eq!(
        second
            .revoke(gone.session.id, RevocationReason::LOGOUT)
            .await
            .unwrap(),
        Revocation::AlreadyRevoked
    );
    assert_eq!(
        second
            .revoke_all(owner, Some(kept.session.id), RevocationReason::LOGOUT)
            .await
            .unwrap(),
        1
    );
    assert!(matches!(
        second.resolve(gone.token.expose_secret()).await,
        Err(Error::InvalidToken)
    ));
    assert!(matches!(
        second.resolve(other.token.expose_secret()).await,
        Err(Error::InvalidToken)
    ));
    let identity = second.resolve(kept.token.expose_secret()).await.unwrap();
    assert_eq!(identity, SessionIdentity::from(&*kept.session));
    assert_eq!(second.session(&identity).await.unwrap(), kept.session);

    let third = service(&store);
    assert_eq!(third.warm().await.unwrap().sessions, 1);
    assert!(third.resolve(kept.token.expose_secret()).await.is_ok());
    assert!(third.resolve(gone.token.expose_secret()).await.is_err());
}

/// The health check succeeds on a working store.
pub async fn health_check_answers(store: Arc<dyn SessionStore>) {
    store.health_check().await.unwrap();
}

/// `at` minutes after the test epoch's minute, as last-seen marks are.
fn minute(at: i64) -> time::OffsetDateTime {
    let start = epoch()
        .replace_second(0)
        .unwrap()
        .replace_nanosecond(0)
        .unwrap();
    start + Duration::minutes(at)
}

async fn seen(store: &dyn SessionStore, id: SessionId) -> Option<time::OffsetDateTime> {
    let found = store.last_seen(&[id]).await.unwrap();
    assert!(found.len() <= 1, "one time per session");
    found.first().map(|mark| {
        assert_eq!(mark.id, id);
        mark.at
    })
}

/// A recorded last-seen time only moves forward: an older one never
/// overwrites a newer one, in the same batch's store or a later call.
pub async fn last_seen_never_moves_back(store: Arc<dyn SessionStore>) {
    let (_, session) = session_at(account(), epoch());
    store.insert(&session).await.unwrap();
    assert_eq!(seen(&*store, session.id).await, None, "never seen yet");
    let mark = |at| {
        [SeenAt {
            id: session.id,
            at: minute(at),
        }]
    };
    store.record_last_seen(&mark(5)).await.unwrap();
    assert_eq!(seen(&*store, session.id).await, Some(minute(5)));
    store.record_last_seen(&mark(3)).await.unwrap();
    assert_eq!(
        seen(&*store, session.id).await,
        Some(minute(5)),
        "older ignored"
    );
    store.record_last_seen(&mark(9)).await.unwrap();
    assert_eq!(seen(&*store, session.id).await, Some(minute(9)));
    store.record_last_seen(&[]).await.unwrap();
    assert_eq!(seen(&*store, session.id).await, Some(minute(9)));
}

/// Ids of no stored session are ignored, without failing the batch: the
/// known sessions in it are recorded. A revoked session is recorded too.
pub async fn last_seen_ignores_unknown_ids_and_keeps_revoked_ones(store: Arc<dyn SessionStore>) {
    let owner = account();
    let (_, active) = session_at(owner, epoch());
    let (_, revoked) = session_at(owner, epoch());
    store.insert(&active).await.unwrap();
    store.insert(&revoked).await.unwrap();
    store
        .revoke(revoked.id, epoch(), RevocationReason::LOGOUT, None)
        .await
        .unwrap();
    let unknown = SessionId::new();
    let mut batch = vec![
        SeenAt {
            id: active.id,
            at: minute(1),
        },
        SeenAt {
            id: revoked.id,
            at: minute(2),
        },
        SeenAt {
            id: unknown,
            at: minute(3),
        },
    ];
    batch.sort_by_key(|mark| mark.id);
    store.record_last_seen(&batch).await.unwrap();
    let mut found = store
        .last_seen(&[active.id, revoked.id, unknown])
        .await
        .unwrap();
    found.sort_by_key(|mark| mark.id);
    let mut expected = vec![
        SeenAt {
            id: active.id,
            at: minute(1),
        },
        SeenAt {
            id: revoked.id,
            at: minute(2),
        },
    ];
    expected.sort_by_key(|mark| mark.id);
    assert_eq!(found, expected);
}

/// Recording the same sessions from several callers at once (as several
/// processes flushing overlapping batches do) never fails, and the latest
/// time of each session wins.
pub async fn concurrent_last_seen_batches_never_conflict(store: Arc<dyn SessionStore>) {
    const SESSIONS: usize = 20;
    const ROUNDS: i64 = 10;
    let owner = account();
    let mut ids = Vec::new();
    for _ in 0..SESSIONS {
        let (_, session) = session_at(owner, epoch());
        store.insert(&session).await.unwrap();
        ids.push(session.id);
    }
    ids.sort();
    let ids = Arc::new(ids);
    let tasks: Vec<_> = (0..4_i64)
        .map(|writer| {
            let store = Arc::clone(&store);
            let ids = Arc::clone(&ids);
            tokio::spawn(async move {
                for round in 0..ROUNDS {
                    // Every writer covers every session, each with its own times.
                    let batch: Vec<SeenAt> = ids
                        .iter()
                        .map(|&id| SeenAt {
                            id,
                            at: minute(round * 4 + writer),
                        })
                        .collect();
                    store.record_last_seen(&batch).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let found = store.last_seen(&ids).await.unwrap();
    assert_eq!(found.len(), SESSIONS);
    let latest = minute((ROUNDS - 1) * 4 + 3);
    assert!(found.iter().all(|mark| mark.at == latest), "{found:?}");
}

/// A limit of `max` with `policy`.
fn limit(max: u32, policy: LimitPolicy) -> SessionLimit {
    SessionLimit {
        max: std::num::NonZeroU32::new(max).unwrap(),
        policy,
    }
}

/// The ids of an account's active sessions, sorted.
async fn active_ids(store: &dyn SessionStore, account: AccountId) -> BTreeSet<SessionId> {
    list_all(store, account, ListScope::Active)
        .await
        .iter()
        .map(|session| session.id)
        .collect()
}

/// Inserts within a limit that evicts, expecting the insert to succeed.
async fn insert_evicting(
    store: &dyn SessionStore,
    session: &Session,
    max: u32,
) -> BTreeSet<TokenHash> {
    match store
        .insert_within_limit(session, limit(max, LimitPolicy::EvictLeastRecentlySeen))
        .await
        .unwrap()
    {
        LimitedInsert::Inserted { evicted } => evicted.into_iter().collect(),
        LimitedInsert::Refused => panic!("an evicting limit never refuses"),
    }
}

/// Under an evicting limit an account never holds more than `max` active
/// sessions: each insert past it revokes exactly as many as make room
/// (none before), the newest stay, and other accounts are untouched.
pub async fn a_limited_insert_keeps_the_account_at_its_cap(store: Arc<dyn SessionStore>) {
    let (owner, bystander) = (account(), account());
    let (_, other) = session_at(bystander, epoch());
    store.insert(&other).await.unwrap();
    let mut created = Vec::new();
    for step in 0..6 {
        let (_, session) = session_at(owner, epoch() + Duration::seconds(step));
        let evicted = insert_evicting(&*store, &session, 3).await;
        created.push(session);
        let expected: BTreeSet<TokenHash> = if created.len() > 3 {
            [created[created.len() - 4].token_hash].into()
        } else {
            BTreeSet::new()
        };
        assert_eq!(
            evicted, expected,
            "step {step}: exactly the oldest makes room"
        );
        let active = active_ids(&*store, owner).await;
        assert_eq!(active.len(), created.len().min(3), "step {step}");
    }
    let newest: BTreeSet<SessionId> = created[3..].iter().map(|s| s.id).collect();
    assert_eq!(active_ids(&*store, owner).await, newest);
    assert_eq!(active_ids(&*store, bystander).await, [other.id].into());
}

/// Sessions are evicted least recently seen first: a session never seen
/// counts as seen when created, ties go to the older creation, then to the
/// lower id. Each evicted session is revoked with reason `limit` at the new
/// session's creation time, and nothing else about it changes.
pub async fn a_limited_insert_evicts_the_least_recently_seen_first(store: Arc<dyn SessionStore>) {
    let owner = account();
    // Created at minutes 0, 1, 2, and two more at minute 3 (a tie, broken by id).
    let mut sessions = Vec::new();
    for at in [0, 1, 2, 3, 3] {
        let (_, session) = session_at(owner, minute(at));
        store.insert(&session).await.unwrap();
        sessions.push(session);
    }
    let [first, second, third, tied_a, tied_b] = <[Session; 5]>::try_from(sessions).unwrap();
    let (low, high) = if tied_a.id < tied_b.id {
        (tied_a, tied_b)
    } else {
        (tied_b, tied_a)
    };
    // Seen: the first at 10, the third at 4 (so the third counts at 4, the
    // second at 1 as never seen, the tied pair at 3).
    store
        .record_last_seen(&{
            let mut marks = vec![
                SeenAt {
                    id: first.id,
                    at: minute(10),
                },
                SeenAt {
                    id: third.id,
                    at: minute(4),
                },
            ];
            marks.sort_by_key(|mark| mark.id);
            marks
        })
        .await
        .unwrap();
    // Order of eviction: second (1), low (3, lower id), high (3), third (4), first (10).
    let expected = [&second, &low, &high, &third, &first];
    for (step, victim) in expected.iter().enumerate() {
        let (_, newcomer) = session_at(owner, minute(20 + step as i64));
        // The newcomers are seen at once, so they are never the oldest.
        let evicted = insert_evicting(&*store, &newcomer, 5).await;
        store
            .record_last_seen(&[SeenAt {
                id: newcomer.id,
                at: minute(30),
            }])
            .await
            .unwrap();
        assert_eq!(evicted, [victim.token_hash].into(), "step {step}");
        let revoked = store.get(victim.id).await.unwrap().unwrap();
        assert_eq!(
            revoked.revoked_at(),
            Some(newcomer.created_at),
            "step {step}"
        );
        assert_eq!(revoked.revocation_reason(), Some(&RevocationReason::LIMIT));
        assert_eq!(
            Session {
                revocation: None,
                ..revoked
            },
            **victim,
            "nothing else changed"
        );
    }
}

/// A refusing limit refuses the insert that would pass it and changes
/// nothing; it counts only active sessions, so a revocation makes room.
pub async fn a_refused_insert_changes_nothing(store: Arc<dyn SessionStore>) {
    let owner = account();
    let refuse = limit(2, LimitPolicy::Refuse);
    let mut kept = Vec::new();
    for step in 0..2 {
        let (_, session) = session_at(owner, epoch() + Duration::seconds(step));
        assert_eq!(
            store.insert_within_limit(&session, refuse).await.unwrap(),
            LimitedInsert::Inserted {
                evicted: Vec::new()
            }
        );
        kept.push(session);
    }
    let (_, refused) = session_at(owner, epoch() + Duration::seconds(5));
    assert_eq!(
        store.insert_within_limit(&refused, refuse).await.unwrap(),
        LimitedInsert::Refused
    );
    assert_eq!(store.get(refused.id).await.unwrap(), None, "not stored");
    for session in &kept {
        assert_eq!(
            store.get(session.id).await.unwrap().as_ref(),
            Some(session),
            "untouched"
        );
    }
    store
        .revoke(
            kept[0].id,
            epoch() + Duration::seconds(6),
            RevocationReason::LOGOUT,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        store.insert_within_limit(&refused, refuse).await.unwrap(),
        LimitedInsert::Inserted {
            evicted: Vec::new()
        },
        "a revoked session does not count"
    );
}

/// A limited insert that fails (a duplicate token hash) changes nothing:
/// the eviction it would have made is undone with it.
pub async fn a_failed_limited_insert_evicts_nothing(store: Arc<dyn SessionStore>) {
    let owner = account();
    let (_, held) = session_at(owner, epoch());
    store.insert(&held).await.unwrap();
    let (_, mut clash) = session_at(owner, epoch() + Duration::seconds(1));
    clash.token_hash = held.token_hash;
    let err = store
        .insert_within_limit(&clash, limit(1, LimitPolicy::EvictLeastRecentlySeen))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::DuplicateTokenHash), "got {err:?}");
    assert_eq!(store.get(held.id).await.unwrap(), Some(held), "not evicted");
    assert_eq!(store.get(clash.id).await.unwrap(), None);
}

/// Concurrent limited inserts for one account end with exactly `max`
/// active sessions, every insert having succeeded.
pub async fn concurrent_limited_inserts_end_at_the_cap(store: Arc<dyn SessionStore>) {
    let owner = account();
    let inserts = (0..16).map(|step| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let (_, session) = session_at(owner, epoch() + Duration::milliseconds(step));
            insert_evicting(&*store, &session, 4).await;
        })
    });
    for insert in inserts.collect::<Vec<_>>() {
        insert.await.unwrap();
    }
    assert_eq!(active_ids(&*store, owner).await.len(), 4);
    assert_eq!(
        list_all(&*store, owner, ListScope::IncludeRevoked)
            .await
            .len(),
        16
    );
}

/// Each revoke form stores who revoked with the revocation, and keeps the
/// first: a key's name, or none when no key asked. An eviction for the
/// limit records none.
pub async fn the_revoker_round_trips_and_the_first_stays(store: Arc<dyn SessionStore>) {
    let at = epoch() + Duration::minutes(1);
    let writer = Revoker::new("writer").unwrap();
    let ops = Revoker::new("ops").unwrap();
    let (one, all, anonymous) = (account(), account(), account());
    let mut stored = Vec::new();
    for owner in [one, all, all, anonymous] {
        let (_, session) = session_at(owner, epoch());
        store.insert(&session).await.unwrap();
        stored.push(session);
    }
    store
        .revoke(
            stored[0].id,
            at,
            RevocationReason::LOGOUT,
            Some(writer.clone()),
        )
        .await
        .unwrap();
    store
        .revoke_all_for_account(all, None, at, RevocationReason::ADMIN, Some(ops.clone()))
        .await
        .unwrap();
    store
        .revoke(stored[3].id, at, RevocationReason::LOGOUT, None)
        .await
        .unwrap();
    // Again, by another: the first revoker stays.
    store
        .revoke(stored[0].id, at, RevocationReason::ADMIN, Some(ops.clone()))
        .await
        .unwrap();
    let by = async |id| store.get(id).await.unwrap().unwrap().revoked_by().cloned();
    assert_eq!(by(stored[0].id).await, Some(writer));
    assert_eq!(by(stored[1].id).await, Some(ops.clone()));
    assert_eq!(by(stored[2].id).await, Some(ops));
    assert_eq!(by(stored[3].id).await, None);

    let (_, held) = session_at(one, epoch());
    store.insert(&held).await.unwrap();
    let (_, newcomer) = session_at(one, epoch() + Duration::seconds(1));
    insert_evicting(&*store, &newcomer, 1).await;
    assert_eq!(by(held.id).await, None, "an eviction is no key's");
    assert_eq!(
        list_all(&*store, one, ListScope::IncludeRevoked)
            .await
            .iter()
            .find(|session| session.id == stored[0].id)
            .and_then(|session| session.revoked_by().cloned()),
        Some(Revoker::new("writer").unwrap()),
        "lists show it too"
    );
}

/// Every id a store's idle batches of `limit` take, walking as the job does.
async fn idle_walk(
    store: &dyn SessionStore,
    cutoff: time::OffsetDateTime,
    limit: u32,
) -> Vec<Vec<SessionId>> {
    let mut batches = Vec::new();
    let mut after = None;
    loop {
        let batch = store.idle_sessions(cutoff, after, limit).await.unwrap();
        assert!(batch.len() <= limit as usize, "a batch is bounded");
        assert!(batch.is_sorted(), "in id order");
        let done = batch.len() < limit as usize;
        after = batch.last().copied();
        batches.push(batch);
        if done {
            return batches;
        }
    }
}

/// Idle means active and last seen before the cutoff, or never seen and
/// created before it: a session seen since is spared, however old, and a
/// revoked one keeps its first time and reason. The statement revokes
/// exactly what the dry run finds, for reason `idle`, and answers it.
pub async fn revoke_idle_takes_the_unseen_by_creation_and_spares_the_seen(
    store: Arc<dyn SessionStore>,
) {
    let owner = account();
    let cutoff = minute(60);
    let (_, never_seen_old) = session_at(owner, minute(10));
    let (_, seen_before_cutoff) = session_at(owner, minute(10));
    let (_, seen_after_cutoff) = session_at(owner, minute(10));
    let (_, never_seen_new) = session_at(owner, minute(70));
    let (_, revoked_old) = session_at(owner, minute(10));
    for session in [
        &never_seen_old,
        &seen_before_cutoff,
        &seen_after_cutoff,
        &never_seen_new,
        &revoked_old,
    ] {
        store.insert(session).await.unwrap();
    }
    store
        .revoke(revoked_old.id, minute(20), RevocationReason::ADMIN, None)
        .await
        .unwrap();
    let mut marks = vec![
        SeenAt {
            id: seen_before_cutoff.id,
            at: minute(59),
        },
        SeenAt {
            id: seen_after_cutoff.id,
            at: minute(60),
        },
    ];
    marks.sort_by_key(|mark| mark.id);
    store.record_last_seen(&marks).await.unwrap();

    let mut idle = vec![never_seen_old.id, seen_before_cutoff.id];
    idle.sort();
    assert_eq!(idle_walk(&*store, cutoff, 10).await, vec![idle.clone()]);
    let revoked = store
        .revoke_idle(cutoff, None, 10, minute(80), RevocationReason::IDLE)
        .await
        .unwrap();
    let Exclusive::Done(revoked) = revoked else {
        panic!("a store no other process shares is never busy");
    };
    assert_eq!(
        revoked.iter().map(|s| s.id).collect::<Vec<_>>(),
        idle,
        "exactly the idle sessions, in id order"
    );
    for session in &revoked {
        let stored = store.get(session.id).await.unwrap().unwrap();
        assert_eq!(session.token_hash, stored.token_hash);
        assert_eq!(stored.revoked_at(), Some(minute(80)));
        assert_eq!(stored.revocation_reason(), Some(&RevocationReason::IDLE));
        assert_eq!(
            store.find_active_by_hash(&stored.token_hash).await.unwrap(),
            None
        );
    }
    for spared in [&seen_after_cutoff, &never_seen_new] {
        assert!(store.get(spared.id).await.unwrap().unwrap().is_active());
    }
    let untouched = store.get(revoked_old.id).await.unwrap().unwrap();
    assert_eq!(untouched.revoked_at(), Some(minute(20)));
    assert_eq!(
        untouched.revocation_reason(),
        Some(&RevocationReason::ADMIN)
    );
    assert_eq!(
        store
            .revoke_idle(cutoff, None, 10, minute(81), RevocationReason::IDLE)
            .await
            .unwrap(),
        Exclusive::Done(Vec::new()),
        "nothing idle is left"
    );
}

/// Idle batches hold at most their limit and resume after the last id
/// taken: a walk revokes every idle session once.
pub async fn revoke_idle_batches_are_bounded_and_resume_after(store: Arc<dyn SessionStore>) {
    let owner = account();
    let mut idle = Vec::new();
    for _ in 0..5 {
        let (_, session) = session_at(owner, minute(1));
        store.insert(&session).await.unwrap();
        idle.push(session.id);
    }
    idle.sort();
    let batches: Vec<Vec<SessionId>> = idle_walk(&*store, minute(2), 2).await;
    assert_eq!(batches.concat(), idle, "the dry run finds each once");
    assert_eq!(batches.len(), 3);
    let mut after = None;
    let mut taken = Vec::new();
    loop {
        let Exclusive::Done(batch) = store
            .revoke_idle(minute(2), after, 2, minute(3), RevocationReason::IDLE)
            .await
            .unwrap()
        else {
            panic!("never busy");
        };
        assert!(batch.len() <= 2, "bounded: {batch:?}");
        taken.extend(batch.iter().map(|s| s.id));
        if batch.len() < 2 {
            break;
        }
        after = batch.last().map(|s| s.id);
    }
    assert_eq!(taken, idle, "each revoked once, in id order");
}

/// Retention takes revoked sessions older than its cutoff, never active
/// ones or newer revocations. `Erase` keeps the row, its revocation and its
/// label, and clears the user agent and IP address (a second pass finds
/// nothing left to erase); `Delete` removes the row and its activity.
pub async fn purge_revoked_erases_or_deletes_only_old_revocations(store: Arc<dyn SessionStore>) {
    let owner = account();
    let old = session_with_metadata(owner);
    let recent = session_with_metadata(owner);
    let active = session_with_metadata(owner);
    for session in [&old, &recent, &active] {
        store.insert(session).await.unwrap();
    }
    store
        .revoke(old.id, minute(10), RevocationReason::LOGOUT, None)
        .await
        .unwrap();
    store
        .revoke(recent.id, minute(30), RevocationReason::LOGOUT, None)
        .await
        .unwrap();
    store
        .record_last_seen(&[SeenAt {
            id: old.id,
            at: minute(5),
        }])
        .await
        .unwrap();
    let before = minute(20);

    let erased = store
        .purge_revoked(before, None, 10, RetentionAction::Erase)
        .await
        .unwrap();
    assert_eq!(erased, Exclusive::Done(vec![old.id]));
    let stored = store.get(old.id).await.unwrap().unwrap();
    assert_eq!(stored.metadata.user_agent, None);
    assert_eq!(stored.metadata.ip, None);
    assert_eq!(stored.metadata.label, old.metadata.label, "the label stays");
    assert_eq!(stored.revoked_at(), Some(minute(10)));
    assert_eq!(stored.revocation_reason(), Some(&RevocationReason::LOGOUT));
    for untouched in [&recent, &active] {
        let stored = store.get(untouched.id).await.unwrap().unwrap();
        assert_eq!(stored.metadata, untouched.metadata);
    }
    assert_eq!(
        store
            .purge_revoked(before, None, 10, RetentionAction::Erase)
            .await
            .unwrap(),
        Exclusive::Done(Vec::new()),
        "nothing left to erase"
    );

    let deleted = store
        .purge_revoked(before, None, 10, RetentionAction::Delete)
        .await
        .unwrap();
    assert_eq!(deleted, Exclusive::Done(vec![old.id]));
    assert_eq!(store.get(old.id).await.unwrap(), None);
    assert_eq!(
        seen(&*store, old.id).await,
        None,
        "its activity goes with it"
    );
    assert!(store.get(recent.id).await.unwrap().is_some());
    assert!(store.get(active.id).await.unwrap().unwrap().is_active());
}

/// Retention batches hold at most their limit and resume after the last id.
pub async fn purge_revoked_batches_are_bounded(store: Arc<dyn SessionStore>) {
    let owner = account();
    let mut revoked = Vec::new();
    for _ in 0..3 {
        let (_, session) = session_at(owner, minute(1));
        store.insert(&session).await.unwrap();
        store
            .revoke(session.id, minute(2), RevocationReason::LOGOUT, None)
            .await
            .unwrap();
        revoked.push(session.id);
    }
    revoked.sort();
    let first = store
        .purge_revoked(minute(3), None, 2, RetentionAction::Delete)
        .await
        .unwrap();
    assert_eq!(first, Exclusive::Done(revoked[..2].to_vec()));
    let rest = store
        .purge_revoked(minute(3), Some(revoked[1]), 2, RetentionAction::Delete)
        .await
        .unwrap();
    assert_eq!(rest, Exclusive::Done(revoked[2..].to_vec()));
}

/// A raise moves the mark only forward, to the microsecond, and records
/// who moved it; a lower one changes nothing and answers the mark in force.
pub async fn the_not_before_mark_only_rises(store: Arc<dyn SessionStore>) {
    let none = store.not_before().await.unwrap();
    assert_eq!((none.mark, none.swept_through), (None, None));
    let mark = epoch();
    let desk = Revoker::new("incident_desk").unwrap();
    assert_eq!(
        store
            .raise_not_before(mark, Some(desk.clone()))
            .await
            .unwrap(),
        mark
    );
    let lower = store
        .raise_not_before(
            mark - Duration::hours(1),
            Some(Revoker::new("other").unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(lower, mark, "a lower raise answers the mark in force");
    let stored = store.not_before().await.unwrap();
    assert_eq!(stored.mark, Some(mark));
    assert_eq!(
        stored.raised_by,
        Some(desk),
        "a raise that moved nothing records nothing"
    );
    assert!(stored.rejected.is_none());
    let higher = mark + Duration::microseconds(1);
    assert_eq!(store.raise_not_before(higher, None).await.unwrap(), higher);
    let stored = store.not_before().await.unwrap();
    assert_eq!((stored.mark, stored.raised_by), (Some(higher), None));
}

/// Raises from many callers at once end at the latest of them.
pub async fn concurrent_not_before_raises_end_at_the_latest(store: Arc<dyn SessionStore>) {
    let raises = (0..16_i64).map(|step| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            // Out of order, so later raises do not simply come last.
            let at = epoch() + Duration::seconds((step * 7) % 16);
            store.raise_not_before(at, None).await.unwrap()
        })
    });
    let answers: Vec<_> = futures_join(raises).await;
    let latest = epoch() + Duration::seconds(15);
    assert!(answers.iter().all(|answer| *answer <= latest));
    assert_eq!(store.not_before().await.unwrap().mark, Some(latest));
}

async fn futures_join<T: Send + 'static>(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut answers = Vec::new();
    for task in tasks.collect::<Vec<_>>() {
        answers.push(task.await.unwrap());
    }
    answers
}

/// The sweep's batch: active sessions created before the mark, or whose
/// id was minted before it, in id order, bounded, resumable after an id,
/// revoked with the reason and revoker given; never a session of the mark
/// or after it, nor one revoked before.
pub async fn revoke_marked_takes_the_sessions_created_or_minted_before_the_mark(
    store: Arc<dyn SessionStore>,
) {
    let mark = epoch() + Duration::hours(1);
    let owner = account();
    let mut marked = Vec::new();
    for _ in 0..3 {
        let (_, session) = session_minted_at(owner, epoch());
        store.insert(&session).await.unwrap();
        marked.push(session.id);
    }
    // Minted before the mark, though its row says later: marked.
    let (_, mut minted_early) = session_minted_at(owner, epoch());
    minted_early.created_at = mark + Duration::hours(1);
    store.insert(&minted_early).await.unwrap();
    marked.push(minted_early.id);
    marked.sort();
    // Ids keep milliseconds: one minted in the mark's own millisecond
    // counts as before a mark with microseconds past it.
    let (_, after_mark) = session_minted_at(owner, mark + Duration::milliseconds(1));
    store.insert(&after_mark).await.unwrap();
    let (_, revoked_before) = session_minted_at(owner, epoch());
    store.insert(&revoked_before).await.unwrap();
    store
        .revoke(revoked_before.id, epoch(), RevocationReason::LOGOUT, None)
        .await
        .unwrap();

    let at = mark + Duration::minutes(5);
    let desk = Revoker::new("incident_desk").unwrap();
    let first = store
        .revoke_marked(
            mark,
            None,
            3,
            at,
            RevocationReason::ADMIN,
            Some(desk.clone()),
        )
        .await
        .unwrap();
    let Exclusive::Done(first) = first else {
        panic!("no other worker runs here")
    };
    assert_eq!(first.iter().map(|s| s.id).collect::<Vec<_>>(), marked[..3]);
    let rest = store
        .revoke_marked(
            mark,
            Some(marked[2]),
            3,
            at,
            RevocationReason::ADMIN,
            Some(desk.clone()),
        )
        .await
        .unwrap();
    let Exclusive::Done(rest) = rest else {
        panic!("no other worker runs here")
    };
    assert_eq!(rest.iter().map(|s| s.id).collect::<Vec<_>>(), marked[3..]);
    for id in &marked {
        let session = store.get(*id).await.unwrap().unwrap();
        assert_eq!(session.revoked_at(), Some(at));
        assert_eq!(session.revocation_reason(), Some(&RevocationReason::ADMIN));
        assert_eq!(session.revoked_by(), Some(&desk));
        assert!(
            first
                .iter()
                .chain(&rest)
                .any(|s| s.id == *id && s.token_hash == session.token_hash)
        );
    }
    assert!(store.get(after_mark.id).await.unwrap().unwrap().is_active());
    let kept = store.get(revoked_before.id).await.unwrap().unwrap();
    assert_eq!(kept.revoked_at(), Some(epoch()));
    assert_eq!(kept.revocation_reason(), Some(&RevocationReason::LOGOUT));
    let none = store
        .revoke_marked(mark, None, 3, at, RevocationReason::ADMIN, None)
        .await
        .unwrap();
    assert_eq!(none, Exclusive::Done(Vec::new()));
}

/// The swept point moves forward only, and never past the stored mark:
/// a raise past it leaves the new mark to sweep.
pub async fn the_not_before_sweep_is_recorded_up_to_the_mark(store: Arc<dyn SessionStore>) {
    let mark = epoch();
    store.raise_not_before(mark, None).await.unwrap();
    assert_eq!(store.not_before().await.unwrap().unswept(), Some(mark));
    store.record_not_before_swept(mark).await.unwrap();
    let stored = store.not_before().await.unwrap();
    assert_eq!((stored.swept_through, stored.unswept()), (Some(mark), None));
    store
        .record_not_before_swept(mark - Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(store.not_before().await.unwrap().swept_through, Some(mark));
    let later = mark + Duration::hours(1);
    store.raise_not_before(later, None).await.unwrap();
    assert_eq!(store.not_before().await.unwrap().unswept(), Some(later));
    store
        .record_not_before_swept(later + Duration::hours(1))
        .await
        .unwrap();
    let stored = store.not_before().await.unwrap();
    assert_eq!(stored.swept_through, Some(later), "never past the mark");
}
