//! The memory store: a test double and baseline for the store and change
//! log ports, the one store this crate has. For tests, examples and
//! benchmarks; hosts use it in their own tests in place of a database.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::config::{LimitPolicy, SessionLimit};
use crate::port::change_log::{Change, ChangeLog, LogCursor, LogPage, LogRead, WakeUps};
use crate::port::events::{EventCursor, EventKind, EventLog, EventRead, SessionEvent};
use crate::port::store::{
    ActivePage, Exclusive, LimitedInsert, NotBefore, RetentionAction, RevokeOutcome,
    RevokedSession, SeenAt, SessionStore, StoreError, first_id_not_marked,
};
use crate::session::{AccountId, RevocationDetails, RevocationReason, Revoker, Session, SessionId};
use crate::token::{TokenHash, TokenHashState};
use crate::{AccountPage, ListPosition, ListScope, PageRequest};

/// A [`SessionStore`] in process memory. Not durable: for tests, examples and
/// host applications that swap storage out in their own tests.
///
/// [`set_unavailable`](Self::set_unavailable) makes every call fail as a lost
/// database would, to test how callers handle it. It is also a
/// [`ChangeLog`], so several services sharing one `MemoryStore` behave like
/// several processes sharing one database.
#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<MemoryState>,
    unavailable: AtomicBool,
    log_reads: AtomicU64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            state: Mutex::new(MemoryState {
                sessions: BTreeMap::new(),
                by_hash: HashMap::with_hasher(TokenHashState),
                log: Vec::new(),
                pruned: 0,
                wake: watch::channel(()).0,
                last_seen: HashMap::new(),
                events: Vec::new(),
                events_pruned: 0,
                history: random_history(),
                not_before: None,
                raised_by: None,
                swept_through: None,
            }),
            unavailable: AtomicBool::new(false),
            log_reads: AtomicU64::new(0),
        }
    }
}

#[derive(Debug)]
struct MemoryState {
    /// Ordered by id, so keyset pages fall out of a range scan.
    sessions: BTreeMap<SessionId, Session>,
    by_hash: HashMap<TokenHash, SessionId, TokenHashState>,
    /// The change log: entry `i` is at position `pruned + i + 1`.
    log: Vec<Logged>,
    /// Entries dropped from the front of the log.
    pruned: u64,
    /// Wakes listeners after each write.
    wake: watch::Sender<()>,
    /// When each session was last seen; not a change the log reports.
    last_seen: HashMap<SessionId, OffsetDateTime>,
    /// The events feed: event `i` is at position `events_pruned + i + 1`,
    /// written with the change, under the one lock every write takes.
    events: Vec<SessionEvent>,
    /// Events dropped from the front of the feed.
    events_pruned: u64,
    /// The feed's history id.
    history: u64,
    /// The "not before" mark; only ever raised.
    not_before: Option<OffsetDateTime>,
    /// Who raised it to its value.
    raised_by: Option<Revoker>,
    /// The mark whose sessions have all been revoked.
    swept_through: Option<OffsetDateTime>,
}

/// A random history id for a new feed.
fn random_history() -> u64 {
    let mut bytes = [0; 8];
    getrandom::fill(&mut bytes).expect("the OS CSPRNG is unavailable");
    u64::from_le_bytes(bytes)
}

/// What the log records: hashes and what happened, never the session itself,
/// which a reader looks up as it is when it reads.
#[derive(Debug, Clone)]
enum Logged {
    Created(TokenHash),
    Revoked(Vec<TokenHash>),
    Reload,
    /// The mark was raised; a reader reads the mark as it is then.
    NotBefore,
}

impl MemoryState {
    fn record(&mut self, logged: Logged) {
        self.log.push(logged);
        self.wake.send_replace(());
    }

    /// Refuses a session whose token hash or id is stored already.
    fn check_new(&self, session: &Session) -> Result<(), StoreError> {
        if self.by_hash.contains_key(&session.token_hash) {
            return Err(StoreError::DuplicateTokenHash);
        }
        if self.sessions.contains_key(&session.id) {
            return Err(StoreError::Failed(
                "a session with this id already exists".into(),
            ));
        }
        Ok(())
    }

    /// Stores a session [`check_new`](Self::check_new) accepted.
    fn store_new(&mut self, session: &Session) {
        self.by_hash.insert(session.token_hash, session.id);
        self.sessions.insert(session.id, session.clone());
        // As the change log: a session stored revoked (an import) is no event.
        if session.is_active() {
            self.event(EventKind::Created, session, session.created_at);
            self.record(Logged::Created(session.token_hash));
        }
    }

    /// Records the revoked events of the sessions `ids` (just revoked, at `at`).
    fn revoked_events(&mut self, ids: &[SessionId], at: OffsetDateTime) {
        for id in ids {
            if let Some(session) = self.sessions.get(id).cloned() {
                let reason = session.revocation_reason().cloned();
                self.event(EventKind::Revoked { reason }, &session, at);
            }
        }
    }

    fn head(&self) -> LogCursor {
        LogCursor::new(0, self.pruned + self.log.len() as u64, Vec::new())
    }

    /// Appends an event about `session` to the feed.
    fn event(&mut self, kind: EventKind, session: &Session, at: OffsetDateTime) {
        let position = self.events_pruned + self.events.len() as u64 + 1;
        self.events.push(SessionEvent {
            position,
            kind,
            session_id: session.id,
            account_id: session.account_id,
            at,
        });
    }

    fn events_head(&self) -> EventCursor {
        EventCursor {
            history: self.history,
            position: self.events_pruned + self.events.len() as u64,
        }
    }
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// While `true`, every operation fails with [`StoreError::Unavailable`] and changes nothing.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
    }

    /// Ends every wake-up listener, as a dropped database connection would.
    pub fn disconnect_subscribers(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.wake = watch::channel(()).0;
    }

    /// Drops the whole change log, as pruning past every reader would.
    pub fn prune_log(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.pruned += state.log.len() as u64;
        state.log.clear();
    }

    /// Empties the store as `TRUNCATE` would: no revocation is logged, only
    /// that every reader must load everything again.
    pub fn truncate(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.sessions.clear();
        state.by_hash.clear();
        state.last_seen.clear();
        state.record(Logged::Reload);
    }

    /// How many times the change log was read.
    pub fn log_reads(&self) -> u64 {
        self.log_reads.load(Ordering::SeqCst)
    }

    fn state(&self) -> Result<MutexGuard<'_, MemoryState>, StoreError> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "the memory store is set unavailable".into(),
            ));
        }
        Ok(self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }
}
#[async_trait]
impl SessionStore for MemoryStore {
    async fn insert(&self, session: &Session) -> Result<(), StoreError> {
        let mut state = self.state()?;
        state.check_new(session)?;
        state.store_new(session);
        Ok(())
    }

    async fn insert_within_limit(
        &self,
        session: &Session,
        limit: SessionLimit,
    ) -> Result<LimitedInsert, StoreError> {
        // One lock over count, evictions and insert: the transaction.
        let mut state = self.state()?;
        state.check_new(session)?;
        let mut active: Vec<(OffsetDateTime, OffsetDateTime, SessionId)> = state
            .sessions
            .values()
            .filter(|s| s.account_id == session.account_id && s.is_active())
            .map(|s| {
                let seen = state.last_seen.get(&s.id).copied();
                (seen.unwrap_or(s.created_at), s.created_at, s.id)
            })
            .collect();
        let max = limit.max.get() as usize;
        let excess = (active.len() + 1).saturating_sub(max);
        if excess > 0 && limit.policy == LimitPolicy::Refuse {
            return Ok(LimitedInsert::Refused);
        }
        active.sort_unstable();
        let mut evicted = Vec::with_capacity(excess);
        let victims: Vec<SessionId> = active[..excess].iter().map(|&(_, _, id)| id).collect();
        for id in &victims {
            if let Some(victim) = state.sessions.get_mut(id) {
                victim.revocation = RevocationDetails::of(
                    Some(session.created_at),
                    Some(RevocationReason::LIMIT),
                    None,
                );
                evicted.push(victim.token_hash);
            }
        }
        state.revoked_events(&victims, session.created_at);
        if !evicted.is_empty() {
            state.record(Logged::Revoked(evicted.clone()));
        }
        state.store_new(session);
        Ok(LimitedInsert::Inserted { evicted })
    }

    async fn find_active_by_hash(&self, hash: &TokenHash) -> Result<Option<Session>, StoreError> {
        let state = self.state()?;
        Ok(state
            .by_hash
            .get(hash)
            .and_then(|id| state.sessions.get(id))
            .filter(|session| session.is_active())
            .cloned())
    }

    async fn get(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        Ok(self.state()?.sessions.get(&id).cloned())
    }

    async fn revoke(
        &self,
        id: SessionId,
        at: OffsetDateTime,
        reason: RevocationReason,
        by: Option<Revoker>,
    ) -> Result<RevokeOutcome, StoreError> {
        let mut state = self.state()?;
        let outcome = match state.sessions.get_mut(&id) {
            None => RevokeOutcome::NotFound,
            Some(session) if session.revoked_at().is_some() => RevokeOutcome::AlreadyRevoked {
                token_hash: session.token_hash,
            },
            Some(session) => {
                session.revocation = RevocationDetails::of(Some(at), Some(reason), by);
                RevokeOutcome::Revoked {
                    token_hash: session.token_hash,
                }
            }
        };
        if let RevokeOutcome::Revoked { token_hash } = outcome {
            if let Some(session) = state.sessions.get(&id).cloned() {
                let reason = session.revocation_reason().cloned();
                state.event(EventKind::Revoked { reason }, &session, at);
            }
            state.record(Logged::Revoked(vec![token_hash]));
        }
        Ok(outcome)
    }

    async fn revoke_all_for_account(
        &self,
        account: AccountId,
        except: Option<SessionId>,
        at: OffsetDateTime,
        reason: RevocationReason,
        by: Option<Revoker>,
    ) -> Result<Vec<TokenHash>, StoreError> {
        let mut state = self.state()?;
        let revoked: Vec<Session> = state
            .sessions
            .values_mut()
            .filter(|s| s.account_id == account && s.is_active() && Some(s.id) != except)
            .map(|session| {
                session.revocation =
                    RevocationDetails::of(Some(at), Some(reason.clone()), by.clone());
                session.clone()
            })
            .collect();
        for session in &revoked {
            let reason = Some(reason.clone());
            state.event(EventKind::Revoked { reason }, session, at);
        }
        let revoked: Vec<TokenHash> = revoked.iter().map(|session| session.token_hash).collect();
        if !revoked.is_empty() {
            state.record(Logged::Revoked(revoked.clone()));
        }
        Ok(revoked)
    }

    async fn list_for_account(
        &self,
        account: AccountId,
        scope: ListScope,
        page: PageRequest,
    ) -> Result<AccountPage, StoreError> {
        let state = self.state()?;
        let key = |s: &Session| (s.created_at, s.id);
        let before = page.after.map(|after| (after.created_at, after.id));
        let mut sessions: Vec<&Session> = state
            .sessions
            .values()
            .filter(|s| s.account_id == account)
            .filter(|s| scope == ListScope::IncludeRevoked || s.is_active())
            .filter(|s| before.is_none_or(|before| key(s) < before))
            .collect();
        sessions.sort_by_key(|s| std::cmp::Reverse(key(s)));
        Ok(AccountPage::from_rows(
            sessions
                .into_iter()
                .take(page.limit.get() as usize + 1)
                .map(|s| (ListPosition::after(s), Ok(s.clone()))),
            page.limit,
        ))
    }

    async fn active_page(
        &self,
        after: Option<SessionId>,
        limit: u32,
    ) -> Result<ActivePage, StoreError> {
        use std::ops::Bound;
        let state = self.state()?;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let sessions: Vec<Session> = state
            .sessions
            .range((start, Bound::Unbounded))
            .map(|(_, session)| session)
            .filter(|session| session.is_active())
            .take(limit as usize)
            .cloned()
            .collect();
        Ok(ActivePage {
            resume_after: (sessions.len() >= limit as usize)
                .then(|| sessions.last().map(|session| session.id))
                .flatten(),
            sessions,
            rejected: Vec::new(),
        })
    }

    async fn health_check(&self) -> Result<(), StoreError> {
        self.state().map(drop)
    }

    async fn record_last_seen(&self, seen: &[SeenAt]) -> Result<(), StoreError> {
        let mut state = self.state()?;
        for mark in seen {
            if !state.sessions.contains_key(&mark.id) {
                continue;
            }
            let at = state.last_seen.entry(mark.id).or_insert(mark.at);
            *at = (*at).max(mark.at);
        }
        Ok(())
    }

    async fn last_seen(&self, ids: &[SessionId]) -> Result<Vec<SeenAt>, StoreError> {
        let state = self.state()?;
        Ok(ids
            .iter()
            .filter_map(|&id| state.last_seen.get(&id).map(|&at| SeenAt { id, at }))
            .collect())
    }

    async fn idle_sessions(
        &self,
        cutoff: OffsetDateTime,
        after: Option<SessionId>,
        limit: u32,
    ) -> Result<Vec<SessionId>, StoreError> {
        let state = self.state()?;
        Ok(state.idle(cutoff, after, limit))
    }

    async fn revoke_idle(
        &self,
        cutoff: OffsetDateTime,
        after: Option<SessionId>,
        limit: u32,
        at: OffsetDateTime,
        reason: RevocationReason,
    ) -> Result<Exclusive<Vec<RevokedSession>>, StoreError> {
        // One lock over the choice and the revocation: one statement.
        let mut state = self.state()?;
        let revoked: Vec<RevokedSession> = state
            .idle(cutoff, after, limit)
            .into_iter()
            .filter_map(|id| {
                let session = state.sessions.get_mut(&id)?;
                session.revocation = RevocationDetails::of(Some(at), Some(reason.clone()), None);
                Some(RevokedSession {
                    id,
                    token_hash: session.token_hash,
                })
            })
            .collect();
        let ids: Vec<SessionId> = revoked.iter().map(|session| session.id).collect();
        state.revoked_events(&ids, at);
        if !revoked.is_empty() {
            state.record(Logged::Revoked(
                revoked.iter().map(|session| session.token_hash).collect(),
            ));
        }
        Ok(Exclusive::Done(revoked))
    }

    async fn not_before(&self) -> Result<NotBefore, StoreError> {
        let state = self.state()?;
        Ok(NotBefore {
            mark: state.not_before,
            raised_by: state.raised_by.clone(),
            swept_through: state.swept_through,
            rejected: None,
        })
    }

    async fn raise_not_before(
        &self,
        at: OffsetDateTime,
        by: Option<Revoker>,
    ) -> Result<OffsetDateTime, StoreError> {
        let mut state = self.state()?;
        match state.not_before {
            Some(mark) if mark >= at => Ok(mark),
            _ => {
                state.not_before = Some(at);
                state.raised_by = by;
                state.record(Logged::NotBefore);
                Ok(at)
            }
        }
    }

    async fn record_not_before_swept(&self, mark: OffsetDateTime) -> Result<(), StoreError> {
        let mut state = self.state()?;
        let mark = state.not_before.map_or(mark, |stored| stored.min(mark));
        state.swept_through = Some(state.swept_through.map_or(mark, |swept| swept.max(mark)));
        Ok(())
    }

    async fn revoke_marked(
        &self,
        mark: OffsetDateTime,
        after: Option<SessionId>,
        limit: u32,
        at: OffsetDateTime,
        reason: RevocationReason,
        by: Option<Revoker>,
    ) -> Result<Exclusive<Vec<RevokedSession>>, StoreError> {
        let first_unmarked = first_id_not_marked(mark);
        let mut state = self.state()?;
        let chosen: Vec<SessionId> = state
            .sessions
            .range((
                after.map_or(Bound::Unbounded, Bound::Excluded),
                Bound::Unbounded,
            ))
            .filter(|(id, s)| {
                s.is_active() && (s.created_at < mark || *id.as_uuid() < first_unmarked)
            })
            .take(limit as usize)
            .map(|(&id, _)| id)
            .collect();
        let revoked: Vec<RevokedSession> = chosen
            .iter()
            .filter_map(|id| {
                let session = state.sessions.get_mut(id)?;
                session.revocation =
                    RevocationDetails::of(Some(at), Some(reason.clone()), by.clone());
                Some(RevokedSession {
                    id: *id,
                    token_hash: session.token_hash,
                })
            })
            .collect();
        state.revoked_events(&chosen, at);
        if !revoked.is_empty() {
            state.record(Logged::Revoked(
                revoked.iter().map(|session| session.token_hash).collect(),
            ));
        }
        Ok(Exclusive::Done(revoked))
    }

    async fn purge_revoked(
        &self,
        before: OffsetDateTime,
        after: Option<SessionId>,
        limit: u32,
        action: RetentionAction,
    ) -> Result<Exclusive<Vec<SessionId>>, StoreError> {
        let mut state = self.state()?;
        let chosen: Vec<SessionId> = state
            .sessions
            .range((
                after.map_or(Bound::Unbounded, Bound::Excluded),
                Bound::Unbounded,
            ))
            .filter(|(_, s)| s.revoked_at().is_some_and(|revoked| revoked < before))
            .filter(|(_, s)| {
                action == RetentionAction::Delete
                    || s.metadata.user_agent.is_some()
                    || s.metadata.ip.is_some()
            })
            .take(limit as usize)
            .map(|(&id, _)| id)
            .collect();
        for id in &chosen {
            match action {
                RetentionAction::Delete => {
                    if let Some(session) = state.sessions.remove(id) {
                        state.by_hash.remove(&session.token_hash);
                    }
                    state.last_seen.remove(id);
                }
                RetentionAction::Erase => {
                    if let Some(session) = state.sessions.get_mut(id) {
                        session.metadata.user_agent = None;
                        session.metadata.ip = None;
                    }
                }
            }
        }
        // A revoked session was in no cache: nothing for the change log.
        Ok(Exclusive::Done(chosen))
    }
}

impl MemoryState {
    /// Active sessions after `after`, in id order, last seen (or, never
    /// seen, created) before `cutoff`: at most `limit`.
    fn idle(&self, cutoff: OffsetDateTime, after: Option<SessionId>, limit: u32) -> Vec<SessionId> {
        self.sessions
            .range((
                after.map_or(Bound::Unbounded, Bound::Excluded),
                Bound::Unbounded,
            ))
            .filter(|(_, s)| s.is_active())
            .filter(|(id, s)| *self.last_seen.get(id).unwrap_or(&s.created_at) < cutoff)
            .take(limit as usize)
            .map(|(&id, _)| id)
            .collect()
    }
}

#[async_trait]
impl ChangeLog for MemoryStore {
    async fn head(&self) -> Result<LogCursor, StoreError> {
        Ok(self.state()?.head())
    }

    async fn read(&self, after: &LogCursor, limit: u32) -> Result<LogRead, StoreError> {
        self.log_reads.fetch_add(1, Ordering::SeqCst);
        let state = self.state()?;
        // One writer at a time: entries are visible in the order they are
        // numbered, so no writer is ever open and the cursor is one number.
        let next = after.through();
        if next < state.pruned || after.epoch() != 0 || !after.open().is_empty() {
            return Ok(LogRead::Expired);
        }
        let first = usize::try_from(next - state.pruned).unwrap_or(usize::MAX);
        let limit = limit.max(1) as usize;
        let mut page = LogPage {
            next: after.clone(),
            ..LogPage::default()
        };
        let mut through = next;
        for (offset, logged) in state.log.iter().enumerate().skip(first).take(limit) {
            through = state.pruned + offset as u64 + 1;
            let change = match logged {
                Logged::Created(hash) => {
                    // As the store is now: a session revoked since is not created.
                    match state
                        .by_hash
                        .get(hash)
                        .and_then(|id| state.sessions.get(id))
                    {
                        Some(session) if session.is_active() => Change::Created(session.clone()),
                        _ => continue,
                    }
                }
                Logged::Revoked(hashes) => Change::Revoked(hashes.clone()),
                Logged::Reload => Change::Reload,
                // The mark as it is now, as a creation is read.
                Logged::NotBefore => match state.not_before {
                    Some(mark) => Change::NotBefore(mark),
                    None => continue,
                },
            };
            page.entries.push(change);
        }
        page.next = LogCursor::new(0, through, Vec::new());
        page.not_before = state.not_before;
        page.more = state.log.len().saturating_sub(first) > limit;
        Ok(LogRead::Page(page))
    }

    async fn wake_ups(&self) -> Result<Box<dyn WakeUps>, StoreError> {
        let mut receiver = self.state()?.wake.subscribe();
        receiver.mark_unchanged();
        Ok(Box::new(MemoryWakeUps { receiver }))
    }

    async fn prune(&self) -> Result<u64, StoreError> {
        // The memory log keeps everything until `prune_log` is called.
        self.state().map(|_| 0)
    }
}

#[async_trait]
impl EventLog for MemoryStore {
    async fn head(&self) -> Result<EventCursor, StoreError> {
        Ok(self.state()?.events_head())
    }

    async fn read(&self, after: EventCursor, limit: u32) -> Result<EventRead, StoreError> {
        let state = self.state()?;
        let head = state.events_head();
        if after.history != state.history
            || after.position < state.events_pruned
            || after.position > head.position
        {
            return Ok(EventRead::Gone);
        }
        let first = usize::try_from(after.position - state.events_pruned).unwrap_or(usize::MAX);
        let events: Vec<SessionEvent> = state
            .events
            .iter()
            .skip(first)
            .take(limit.max(1) as usize)
            .cloned()
            .collect();
        let next = events.last().map_or(after, |last| EventCursor {
            history: state.history,
            position: last.position,
        });
        Ok(EventRead::Page { events, next })
    }

    async fn prune(&self, before: OffsetDateTime, batch: u32) -> Result<u64, StoreError> {
        let mut state = self.state()?;
        let gone = state
            .events
            .iter()
            .take(batch as usize)
            .take_while(|event| event.at < before)
            .count();
        state.events.drain(..gone);
        state.events_pruned += gone as u64;
        Ok(gone as u64)
    }
}

struct MemoryWakeUps {
    receiver: watch::Receiver<()>,
}

#[async_trait]
impl WakeUps for MemoryWakeUps {
    async fn next(&mut self) -> Result<(), StoreError> {
        self.receiver
            .changed()
            .await
            .map_err(|_| StoreError::Unavailable("the memory store stopped listening".into()))
    }
}
