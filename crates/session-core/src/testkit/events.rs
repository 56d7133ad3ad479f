//! The [`EventLog`] contract: the events feed every store keeps. Each
//! function is one case; see [`event_log_contract_tests!`](crate::event_log_contract_tests).
//!
//! Every case takes its starting cursor from [`EventLog::sequence`] after
//! its own setup, so it holds for a store that writes events with each
//! write and for one that sequences them later alike.

use std::sync::Arc;

use time::Duration;

use super::{account, epoch, session_at};
use crate::port::events::{EventCursor, EventKind, EventLog, EventRead, SessionEvent};
use crate::port::store::SessionStore;
use crate::session::{RevocationDetails, RevocationReason, Session, SessionId};

/// Every event after `from`, `limit` at a time, after a sequencing step;
/// checks that each page is within its limit and that positions follow
/// one another.
async fn read_all(log: &Arc<dyn EventLog>, from: EventCursor, limit: u32) -> Vec<SessionEvent> {
    log.sequence().await.expect("sequence");
    let mut events: Vec<SessionEvent> = Vec::new();
    let mut after = from;
    loop {
        let EventRead::Page { events: page, next } = log.read(after, limit).await.expect("read")
        else {
            panic!("the feed refused a cursor it had just given");
        };
        assert!(page.len() <= limit as usize, "a page over its limit");
        let mut previous = after.position;
        for event in &page {
            assert_eq!(
                event.position,
                previous + 1,
                "a gap or a duplicate in the feed"
            );
            previous = event.position;
        }
        let done = page.is_empty();
        events.extend(page);
        if done {
            assert_eq!(next, after, "an empty page moved the cursor");
            return events;
        }
        assert_eq!(next.position, events.last().map_or(0, |e| e.position));
        after = next;
    }
}

fn revoked(reason: &str) -> EventKind {
    EventKind::Revoked {
        reason: Some(RevocationReason::new(reason).expect("a valid reason")),
    }
}

fn summary(events: &[SessionEvent]) -> Vec<(EventKind, SessionId)> {
    events
        .iter()
        .map(|event| (event.kind.clone(), event.session_id))
        .collect()
}

async fn created(store: &Arc<dyn SessionStore>, minutes: i64) -> Session {
    let (_, session) = session_at(account(), epoch() + Duration::minutes(minutes));
    store.insert(&session).await.expect("insert");
    session
}

/// Creations and revocations are events in commit order, each with the
/// session's id, account, time and (revoked) reason.
pub async fn events_follow_writes_in_commit_order(
    store: Arc<dyn SessionStore>,
    log: Arc<dyn EventLog>,
) {
    let from = log.sequence().await.expect("sequence");
    let first = created(&store, 0).await;
    let second = created(&store, 1).await;
    let at = epoch() + Duration::minutes(2);
    store
        .revoke(first.id, at, RevocationReason::LOGOUT, None)
        .await
        .expect("revoke");
    let events = read_all(&log, from, 100).await;
    assert_eq!(
        summary(&events),
        vec![
            (EventKind::Created, first.id),
            (EventKind::Created, second.id),
            (revoked("logout"), first.id),
        ]
    );
    assert_eq!(events[0].account_id, first.account_id);
    assert_eq!(events[0].at, first.created_at);
    assert_eq!(events[1].at, second.created_at);
    assert_eq!(events[2].at, at);
    assert_eq!(events[2].account_id, first.account_id);
    assert_eq!(log.head().await.expect("head").position, events[2].position);
}

/// A reader that resumes after any event it read gets exactly the events
/// after it, however it pages.
pub async fn resuming_after_any_event_has_no_gap_or_duplicate(
    store: Arc<dyn SessionStore>,
    log: Arc<dyn EventLog>,
) {
    let from = log.sequence().await.expect("sequence");
    for minute in 0..5 {
        let session = created(&store, minute).await;
        if minute % 2 == 0 {
            let at = epoch() + Duration::minutes(minute);
            store
                .revoke(session.id, at, RevocationReason::ADMIN, None)
                .await
                .expect("revoke");
        }
    }
    let all = read_all(&log, from, 100).await;
    assert_eq!(all.len(), 8);
    assert_eq!(read_all(&log, from, 3).await, all, "paged reads differ");
    for (index, event) in all.iter().enumerate() {
        let resumed = EventCursor {
            history: from.history,
            position: event.position,
        };
        assert_eq!(read_all(&log, resumed, 2).await, all[index + 1..]);
    }
}

/// Revoking every session of an account is one event per session revoked,
/// each with the reason; the exception, other accounts and sessions
/// revoked before are not events.
pub async fn revoke_all_is_one_event_per_session_with_its_reason(
    store: Arc<dyn SessionStore>,
    log: Arc<dyn EventLog>,
) {
    let owner = account();
    let mut sessions = Vec::new();
    for minute in 0..4 {
        let (_, session) = session_at(owner, epoch() + Duration::minutes(minute));
        store.insert(&session).await.expect("insert");
        sessions.push(session);
    }
    let bystander = created(&store, 0).await;
    store
        .revoke(sessions[0].id, epoch(), RevocationReason::LOGOUT, None)
        .await
        .expect("revoke");
    let from = log.sequence().await.expect("sequence");
    let at = epoch() + Duration::hours(1);
    let reason = RevocationReason::new("password_change").expect("a valid reason");
    store
        .revoke_all_for_account(owner, Some(sessions[3].id), at, reason, None)
        .await
        .expect("revoke all");
    let mut events = read_all(&log, from, 100).await;
    events.sort_by_key(|event| event.session_id);
    let mut expected = vec![
        (revoked("password_change"), sessions[1].id),
        (revoked("password_change"), sessions[2].id),
    ];
    expected.sort_by_key(|(_, id)| *id);
    assert_eq!(summary(&events), expected);
    assert!(events.iter().all(|e| e.at == at && e.account_id == owner));
    assert!(events.iter().all(|e| e.session_id != bystander.id));
}

/// A write that changes nothing (revoking a revoked session, a revoke-all
/// with nothing active) is no event; nor is a session stored already
/// revoked.
pub async fn writes_that_change_nothing_are_no_events(
    store: Arc<dyn SessionStore>,
    log: Arc<dyn EventLog>,
) {
    let session = created(&store, 0).await;
    store
        .revoke(session.id, epoch(), RevocationReason::LOGOUT, None)
        .await
        .expect("revoke");
    let from = log.sequence().await.expect("sequence");
    store
        .revoke(session.id, epoch(), RevocationReason::ADMIN, None)
        .await
        .expect("revoke again");
    store
        .revoke_all_for_account(
            session.account_id,
            None,
            epoch(),
            RevocationReason::ADMIN,
            None,
        )
        .await
        .expect("revoke all");
    let (_, mut imported) = session_at(account(), epoch());
    imported.revocation = RevocationDetails::of(Some(epoch()), Some(RevocationReason::ADMIN), None);
    store.insert(&imported).await.expect("insert revoked");
    assert_eq!(read_all(&log, from, 100).await, Vec::new());
    assert_eq!(log.head().await.expect("head"), from);
}

/// Pruning deletes the oldest events older than the bound, in batches,
/// and a cursor before the last one deleted is gone; one at it or after
/// still reads on.
pub async fn a_cursor_before_pruned_events_is_gone(
    store: Arc<dyn SessionStore>,
    log: Arc<dyn EventLog>,
) {
    let from = log.sequence().await.expect("sequence");
    for minute in [0, 1, 2, 60] {
        created(&store, minute).await;
    }
    let all = read_all(&log, from, 100).await;
    let bound = epoch() + Duration::minutes(30);
    assert_eq!(log.prune(bound, 2).await.expect("prune"), 2);
    assert_eq!(log.prune(bound, 2).await.expect("prune"), 1);
    assert_eq!(log.prune(bound, 2).await.expect("prune"), 0);
    let at = |position| EventCursor {
        history: from.history,
        position,
    };
    assert!(matches!(
        log.read(from, 10).await.expect("read"),
        EventRead::Gone
    ));
    assert!(matches!(
        log.read(at(all[1].position), 10).await.expect("read"),
        EventRead::Gone
    ));
    assert_eq!(read_all(&log, at(all[2].position), 10).await, all[3..]);
}

/// A cursor the feed never gave (another history, a position past the
/// head) is gone, never answered with other events.
pub async fn a_cursor_of_another_history_or_past_the_head_is_gone(
    store: Arc<dyn SessionStore>,
    log: Arc<dyn EventLog>,
    other: Arc<dyn EventLog>,
) {
    created(&store, 0).await;
    let head = log.sequence().await.expect("sequence");
    let theirs = other.sequence().await.expect("sequence");
    assert_ne!(head.history, theirs.history, "two feeds share a history");
    for cursor in [
        EventCursor {
            history: theirs.history,
            position: 0,
        },
        EventCursor {
            history: head.history,
            position: head.position + 1,
        },
    ] {
        assert!(matches!(
            log.read(cursor, 10).await.expect("read"),
            EventRead::Gone
        ));
    }
}
