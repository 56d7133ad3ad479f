//! The storage port: where sessions are durable, with the pages, rows and
//! errors a store deals in, and [`StoreDecorator`], the one way to wrap a store.

use std::net::IpAddr;

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::SessionLimit;
use crate::session::{
    AccountId, ClientMetadata, Label, RevocationDetails, RevocationReason, Revoker, Session,
    SessionId, SessionIdentity, UserAgent,
};
use crate::token::TokenHash;
use crate::validation::{Field, Reason, ValidationError};
use crate::{AccountPage, ListScope, PageRequest};

/// The most marks one [`SessionStore::record_last_seen`] call carries: one
/// statement each, well under SQLite's 32,766 bound parameters and
/// PostgreSQL's message sizes.
pub const LAST_SEEN_MAX_BATCH: usize = 4096;

/// A boxed error from an adapter, kept as the source of a [`StoreError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Durable storage of sessions.
///
/// Every method is one atomic operation: it either committed when it returns
/// `Ok`, or changed nothing. Implementations must never store a raw token.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a new session.
    ///
    /// # Errors
    ///
    /// [`StoreError::DuplicateTokenHash`] if a session with the same token hash exists.
    async fn insert(&self, session: &Session) -> Result<(), StoreError>;

    /// Stores a new active session unless its account would then hold more
    /// than `limit.max` active sessions, in one transaction serialized per
    /// account: concurrent calls for one account, from any number of
    /// processes, run one after another, so the account never holds more
    /// than `limit.max` active sessions. With
    /// [`LimitPolicy::EvictLeastRecentlySeen`](crate::config::LimitPolicy::EvictLeastRecentlySeen)
    /// it first revokes, with reason [`RevocationReason::LIMIT`] at the new
    /// session's `created_at`, the fewest sessions that make room: those
    /// with the oldest last-seen time ([`record_last_seen`](Self::record_last_seen);
    /// a session never seen counts as seen at its `created_at`), ties broken
    /// by `created_at`, then by id. With
    /// [`Refuse`](crate::config::LimitPolicy::Refuse) it changes nothing
    /// and answers [`LimitedInsert::Refused`]. A failed call changes
    /// nothing, evictions included. Only this method counts: sessions
    /// stored by [`insert`](Self::insert) are counted here, but `insert`
    /// itself checks no limit.
    ///
    /// # Errors
    ///
    /// As [`insert`](Self::insert).
    async fn insert_within_limit(
        &self,
        session: &Session,
        limit: SessionLimit,
    ) -> Result<LimitedInsert, StoreError>;

    /// The active session with this token hash, if there is one.
    async fn find_active_by_hash(&self, hash: &TokenHash) -> Result<Option<Session>, StoreError>;

    /// The session with this id, active or revoked.
    async fn get(&self, id: SessionId) -> Result<Option<Session>, StoreError>;

    /// Revokes one session at `at` for `reason`, by `by` if a key asked,
    /// all stored by the one statement that revokes it. Idempotent: an
    /// already revoked session keeps its first `revoked_at`, reason and
    /// revoker (none, if it was revoked before they were recorded).
    async fn revoke(
        &self,
        id: SessionId,
        at: OffsetDateTime,
        reason: RevocationReason,
        by: Option<Revoker>,
    ) -> Result<RevokeOutcome, StoreError>;

    /// Revokes every active session of `account` at `at` for `reason`, by
    /// `by` if a key asked, except `except` if given, and returns the token
    /// hashes it revoked. Sessions revoked before keep their time, reason
    /// and revoker.
    async fn revoke_all_for_account(
        &self,
        account: AccountId,
        except: Option<SessionId>,
        at: OffsetDateTime,
        reason: RevocationReason,
        by: Option<Revoker>,
    ) -> Result<Vec<TokenHash>, StoreError>;

    /// One page of an account's sessions, newest first (by `created_at`,
    /// then id, both descending), starting after `page.after`: keyset
    /// pagination, so a page costs the same wherever it starts and sessions
    /// created meanwhile (newer than any position) neither shift nor repeat
    /// rows. At most `page.limit` sessions and one more row, to know
    /// whether another page follows, are read: the database does the
    /// bounding. A stored row the domain rejects is left out and reported
    /// in [`AccountPage::rejected`], as [`active_page`](Self::active_page)
    /// does; the page still ends after it.
    ///
    /// `page.after` narrows the account's rows, never widens them: only
    /// rows of `account` are ever read, whatever position is given.
    async fn list_for_account(
        &self,
        account: AccountId,
        scope: ListScope,
        page: PageRequest,
    ) -> Result<AccountPage, StoreError>;

    /// One page of active sessions with ids greater than `after`, in id order,
    /// at most `limit` rows read: keyset pagination for warming a cache with
    /// bounded memory per query. A stored row the domain rejects is left out
    /// and reported in [`ActivePage::rejected`], so one bad row cannot stop
    /// every warm.
    async fn active_page(
        &self,
        after: Option<SessionId>,
        limit: u32,
    ) -> Result<ActivePage, StoreError>;

    /// [`active_page`](Self::active_page), narrowed to what a compact
    /// cache keeps: the same rows, pages and resume points, but each row
    /// only its [`SessionIdentity`] (id, account, token hash), so a store
    /// reads, sends and decodes three columns instead of all. Only those
    /// columns are checked: a row the domain rejects on them is left out
    /// and reported in [`IdentityPage::rejected`]; a row with metadata the
    /// domain rejects is an identity here, and an [`InvalidRow`] where its
    /// whole record is read.
    ///
    /// By default, [`active_page`](Self::active_page)'s rows narrowed, for
    /// a store with no cheaper read.
    async fn active_identity_page(
        &self,
        after: Option<SessionId>,
        limit: u32,
    ) -> Result<IdentityPage, StoreError> {
        let page = self.active_page(after, limit).await?;
        Ok(IdentityPage {
            identities: page.sessions.iter().map(SessionIdentity::from).collect(),
            rejected: page.rejected,
            resume_after: page.resume_after,
        })
    }

    /// Every active session's identity, for a warm of a compact cache, which
    /// needs all of them and no order: sent to `pages` in pages of at most
    /// `page_size` rows (identities and rejected rows), in any order, each
    /// row once. Returns once the last page is sent, or at once if the
    /// receiver is gone; a failure is sent as the last item, possibly after
    /// some pages, and the caller starts over. Rows are checked as in
    /// [`active_identity_page`](Self::active_identity_page).
    ///
    /// By default, [`active_identity_page`](Self::active_identity_page)'s
    /// keyset pages one after another. A store that can read them in one
    /// pass does (PostgreSQL: one binary `COPY`).
    async fn active_identities(
        &self,
        page_size: u32,
        pages: tokio::sync::mpsc::Sender<Result<IdentityPage, StoreError>>,
    ) {
        identities_in_pages(self, page_size, pages).await;
    }

    /// Checks that the store answers.
    async fn health_check(&self) -> Result<(), StoreError>;

    /// Records when sessions were last seen, in one statement: each
    /// session's last-seen time becomes the later of the stored one and the
    /// given one, so it never moves back, and two processes recording the
    /// same session at once both succeed, the latest time winning. Ids of no
    /// stored session are ignored, never an error. A revoked session's time
    /// is still recorded: it was seen then. `seen` is sorted by id with one
    /// entry per session, so concurrent calls lock rows in the same order,
    /// and holds at most [`LAST_SEEN_MAX_BATCH`] entries.
    /// It writes nothing a [`ChangeLog`](super::change_log::ChangeLog) reports.
    async fn record_last_seen(&self, seen: &[SeenAt]) -> Result<(), StoreError>;

    /// When each of `ids` was last seen, as recorded; sessions never
    /// recorded (and unknown ids) are absent. In no particular order.
    async fn last_seen(&self, ids: &[SessionId]) -> Result<Vec<SeenAt>, StoreError>;

    /// The ids of *idle* sessions with ids greater than `after`, in id
    /// order, at most `limit`: active sessions last seen before `cutoff`,
    /// or never seen and created before it. What
    /// [`revoke_idle`](Self::revoke_idle) would revoke, for a dry run.
    async fn idle_sessions(
        &self,
        cutoff: OffsetDateTime,
        after: Option<SessionId>,
        limit: u32,
    ) -> Result<Vec<SessionId>, StoreError>;

    /// Revokes at `at`, for `reason`, the idle sessions (as
    /// [`idle_sessions`](Self::idle_sessions) defines them) with ids
    /// greater than `after`, in id order, at most `limit`, in one
    /// statement that decides idleness as it revokes: a session seen or
    /// revoked by then is left alone. Returns exactly the sessions it
    /// revoked, in id order.
    ///
    /// A store several processes share answers [`Exclusive::Busy`], and
    /// changes nothing, while another process runs a batch of this job:
    /// one worker at a time, so no batch is done twice.
    async fn revoke_idle(
        &self,
        cutoff: OffsetDateTime,
        after: Option<SessionId>,
        limit: u32,
        at: OffsetDateTime,
        reason: RevocationReason,
    ) -> Result<Exclusive<Vec<RevokedSession>>, StoreError>;

    /// Applies `action` to at most `limit` sessions revoked before
    /// `before`, with ids greater than `after`, in id order, in one
    /// statement, and returns their ids in id order. [`RetentionAction::Erase`]
    /// takes only sessions that still hold a user agent or an IP address.
    /// Active sessions are never touched. [`Exclusive::Busy`] as for
    /// [`revoke_idle`](Self::revoke_idle).
    async fn purge_revoked(
        &self,
        before: OffsetDateTime,
        after: Option<SessionId>,
        limit: u32,
        action: RetentionAction,
    ) -> Result<Exclusive<Vec<SessionId>>, StoreError>;

    /// The "not before" mark the store holds, and how far the revocation
    /// of the sessions it marks has gone. A stored mark the domain rejects
    /// (an instant [`stored_instant`] refuses, written by other SQL) reads
    /// as no mark and is reported in [`NotBefore::rejected`], as a rejected
    /// row is by a page: the next [`raise_not_before`](Self::raise_not_before)
    /// replaces it.
    async fn not_before(&self) -> Result<NotBefore, StoreError>;

    /// Raises the stored mark to `at`, in one statement: the mark becomes
    /// the later of the stored one and `at`, so it never moves back, and
    /// concurrent raises end at the latest. A raise that moves the mark
    /// records `by` (the API key that asked, if one did) as the revoker of
    /// the sessions it marks. Returns the mark in force after it. On a store with a change log, a raise that moved the mark is
    /// logged, so every follower applies it
    /// ([`Change::NotBefore`](super::change_log::Change::NotBefore)).
    ///
    /// # Errors
    ///
    /// [`StoreError`] if it did not commit: nothing changed.
    async fn raise_not_before(
        &self,
        at: OffsetDateTime,
        by: Option<Revoker>,
    ) -> Result<OffsetDateTime, StoreError>;

    /// Records that every active session marked by `mark` has been revoked:
    /// [`NotBefore::swept_through`] becomes the later of its stored value
    /// and `mark`, never past the stored mark. Idempotent.
    async fn record_not_before_swept(&self, mark: OffsetDateTime) -> Result<(), StoreError>;

    /// Revokes at `at`, for `reason`, by `by`, the active sessions *marked*
    /// by `mark` (created before it, or with an id minted before it:
    /// [`SessionId::minted_at`]) with ids greater than `after`, in id order,
    /// at most `limit`, in one statement. Returns exactly the sessions it
    /// revoked, in id order. [`Exclusive::Busy`] as for
    /// [`revoke_idle`](Self::revoke_idle).
    async fn revoke_marked(
        &self,
        mark: OffsetDateTime,
        after: Option<SessionId>,
        limit: u32,
        at: OffsetDateTime,
        reason: RevocationReason,
        by: Option<Revoker>,
    ) -> Result<Exclusive<Vec<RevokedSession>>, StoreError>;
}

/// The "not before" mark as a store holds it ([`SessionStore::not_before`]).
#[derive(Debug, Default)]
pub struct NotBefore {
    /// The mark: sessions minted before it are invalid. `None` when none
    /// was ever raised (or the stored one was rejected).
    pub mark: Option<OffsetDateTime>,
    /// Who raised the mark to its value, recorded as the revoker of the
    /// sessions it marks.
    pub raised_by: Option<Revoker>,
    /// The mark up to which the sessions it marks have all been revoked
    /// ([`SessionStore::record_not_before_swept`]); `None` if no sweep has
    /// completed.
    pub swept_through: Option<OffsetDateTime>,
    /// A stored value the domain rejects, read as absent.
    pub rejected: Option<InvalidRow>,
}

impl NotBefore {
    /// The mark, when the sessions it marks may not all be revoked yet.
    #[must_use]
    pub fn unswept(&self) -> Option<OffsetDateTime> {
        self.mark
            .filter(|mark| self.swept_through.is_none_or(|swept| swept < *mark))
    }
}

/// The smallest UUIDv7 minted at or after `mark`: every session id below
/// it was minted before the mark (to the millisecond, as
/// [`SessionId::minted_at`] reads it), so stores select marked sessions by
/// an id range.
#[must_use]
pub fn first_id_not_marked(mark: OffsetDateTime) -> Uuid {
    let micros = mark.unix_timestamp_nanos().div_euclid(1_000);
    // Minted in millisecond `ms` is before the mark exactly when
    // `ms * 1000 < micros`: the first unmarked millisecond rounds up.
    let millis = micros.div_euclid(1_000) + i128::from(micros.rem_euclid(1_000) != 0);
    let millis = u128::try_from(millis.clamp(0, (1 << 48) - 1)).unwrap_or(0);
    Uuid::from_u128(millis << 80)
}

/// The answer of a batch only one process may run at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exclusive<T> {
    /// This process ran the batch.
    Done(T),
    /// Another process is running a batch of the same job now: nothing was
    /// done. Try again at the next round.
    Busy,
}

/// A session [`SessionStore::revoke_idle`] revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevokedSession {
    /// Its id.
    pub id: SessionId,
    /// Its token's hash, to drop it from caches.
    pub token_hash: TokenHash,
}

/// What retention does to a revoked session past its age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionAction {
    /// Delete the row (and its last-seen activity).
    Delete,
    /// Keep the row, but erase its user agent and IP address.
    Erase,
}

impl RetentionAction {
    /// The action's name, as flags and logs spell it.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Delete => "delete",
            Self::Erase => "erase",
        }
    }
}

/// A [`SessionStore`] method, as a [`StoreDecorator`] sees each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreOperation {
    /// [`SessionStore::insert`].
    Insert,
    /// [`SessionStore::insert_within_limit`].
    InsertWithinLimit,
    /// [`SessionStore::find_active_by_hash`].
    FindActiveByHash,
    /// [`SessionStore::get`].
    Get,
    /// [`SessionStore::revoke`].
    Revoke,
    /// [`SessionStore::revoke_all_for_account`].
    RevokeAllForAccount,
    /// [`SessionStore::list_for_account`].
    ListForAccount,
    /// [`SessionStore::active_page`].
    ActivePage,
    /// [`SessionStore::active_identity_page`].
    ActiveIdentityPage,
    /// [`SessionStore::active_identities`].
    ActiveIdentities,
    /// [`SessionStore::health_check`].
    HealthCheck,
    /// [`SessionStore::record_last_seen`].
    RecordLastSeen,
    /// [`SessionStore::last_seen`].
    LastSeen,
    /// [`SessionStore::idle_sessions`].
    IdleSessions,
    /// [`SessionStore::revoke_idle`].
    RevokeIdle,
    /// [`SessionStore::purge_revoked`].
    PurgeRevoked,
    /// [`SessionStore::not_before`].
    NotBefore,
    /// [`SessionStore::raise_not_before`].
    RaiseNotBefore,
    /// [`SessionStore::record_not_before_swept`].
    RecordNotBeforeSwept,
    /// [`SessionStore::revoke_marked`].
    RevokeMarked,
}

impl StoreOperation {
    /// Every operation, in declaration order, so `operation as usize` is
    /// its index here: a decorator can keep one slot per operation.
    pub const ALL: [Self; 20] = [
        Self::Insert,
        Self::InsertWithinLimit,
        Self::FindActiveByHash,
        Self::Get,
        Self::Revoke,
        Self::RevokeAllForAccount,
        Self::ListForAccount,
        Self::ActivePage,
        Self::ActiveIdentityPage,
        Self::ActiveIdentities,
        Self::HealthCheck,
        Self::RecordLastSeen,
        Self::LastSeen,
        Self::IdleSessions,
        Self::RevokeIdle,
        Self::PurgeRevoked,
        Self::NotBefore,
        Self::RaiseNotBefore,
        Self::RecordNotBeforeSwept,
        Self::RevokeMarked,
    ];

    /// Whether a committed call may have created or revoked sessions: what
    /// the change log and the events feed record. A decorator that reacts
    /// to those writes keys on this, so a write method added later is not
    /// missed.
    #[must_use]
    pub const fn creates_or_revokes(self) -> bool {
        matches!(
            self,
            Self::Insert
                | Self::InsertWithinLimit
                | Self::Revoke
                | Self::RevokeAllForAccount
                | Self::RevokeIdle
                | Self::RevokeMarked
        )
    }

    /// The method's name. Stable: metrics label store calls with it.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Insert => "insert",
            Self::InsertWithinLimit => "insert_within_limit",
            Self::FindActiveByHash => "find_active_by_hash",
            Self::Get => "get",
            Self::Revoke => "revoke",
            Self::RevokeAllForAccount => "revoke_all_for_account",
            Self::ListForAccount => "list_for_account",
            Self::ActivePage => "active_page",
            Self::ActiveIdentityPage => "active_identity_page",
            Self::ActiveIdentities => "active_identities",
            Self::HealthCheck => "health_check",
            Self::RecordLastSeen => "record_last_seen",
            Self::LastSeen => "last_seen",
            Self::IdleSessions => "idle_sessions",
            Self::RevokeIdle => "revoke_idle",
            Self::PurgeRevoked => "purge_revoked",
            Self::NotBefore => "not_before",
            Self::RaiseNotBefore => "raise_not_before",
            Self::RecordNotBeforeSwept => "record_not_before_swept",
            Self::RevokeMarked => "revoke_marked",
        }
    }
}

// `ALL` is in declaration order, as its doc promises.
const _: () = {
    let mut index = 0;
    while index < StoreOperation::ALL.len() {
        assert!(StoreOperation::ALL[index] as usize == index);
        index += 1;
    }
};

/// A store that wraps another and changes only part of what it does: the
/// one way to decorate a [`SessionStore`] (metrics, test doubles).
///
/// Every `StoreDecorator` is a `SessionStore`: each port method runs this
/// trait's method of the same name, which forwards to
/// [`inner_store`](Self::inner_store) unless overridden, inside
/// [`around`](Self::around). So a decorator writes only what it changes:
/// `around` to act on every call (time it, count it), a method to change
/// that one (fail it, pause in it). A new port method is added here once,
/// with its forwarding default, rather than in every decorator.
///
/// Override a method with `async fn`, calling the wrapped store itself:
/// `SessionStore`'s method of the same name, on the decorator, would run
/// `around` and this method again, without end.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// use session_core::{RevocationReason, Revoker, SessionId};
/// use session_core::memory::MemoryStore;
/// use session_core::port::store::{
///     RevokeOutcome, SessionStore, StoreDecorator, StoreError, StoreOperation,
/// };
/// use time::OffsetDateTime;
///
/// /// Counts failed calls, and refuses every revocation.
/// struct NoRevocations {
///     inner: MemoryStore,
///     failures: AtomicU64,
/// }
///
/// impl StoreDecorator for NoRevocations {
///     fn inner_store(&self) -> &dyn SessionStore {
///         &self.inner
///     }
///
///     async fn around<T: Send>(
///         &self,
///         _: StoreOperation,
///         call: impl Future<Output = Result<T, StoreError>> + Send,
///     ) -> Result<T, StoreError> {
///         let result = call.await;
///         if result.is_err() {
///             self.failures.fetch_add(1, Ordering::Relaxed);
///         }
///         result
///     }
///
///     async fn revoke(
///         &self,
///         _: SessionId,
///         _: OffsetDateTime,
///         _: RevocationReason,
///         _: Option<Revoker>,
///     ) -> Result<RevokeOutcome, StoreError> {
///         Err(StoreError::Failed("revocations are refused here".into()))
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let decorated = NoRevocations {
///     inner: MemoryStore::new(),
///     failures: AtomicU64::new(0),
/// };
/// let store: &dyn SessionStore = &decorated;
/// let revoked = store
///     .revoke(SessionId::new(), OffsetDateTime::now_utc(), RevocationReason::LOGOUT, None)
///     .await;
/// assert!(revoked.is_err());
/// assert_eq!(decorated.failures.load(Ordering::Relaxed), 1, "counted in `around`");
/// # });
/// ```
///
/// Both traits name the port's methods, so where both are in scope a call
/// on the decorator's own type is ambiguous: call it through
/// `dyn SessionStore`, as above, or as `SessionStore::revoke(&decorated, ..)`.
pub trait StoreDecorator: Send + Sync + 'static {
    /// The store every call not overridden goes to.
    fn inner_store(&self) -> &dyn SessionStore;

    /// Runs each call: `call` is this trait's method for `operation`, not
    /// yet polled. By default, just that call.
    fn around<T: Send>(
        &self,
        operation: StoreOperation,
        call: impl Future<Output = Result<T, StoreError>> + Send,
    ) -> impl Future<Output = Result<T, StoreError>> + Send {
        let _ = operation;
        call
    }

    /// [`SessionStore::insert`], forwarded by default.
    fn insert<'a>(
        &'a self,
        session: &'a Session,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a {
        self.inner_store().insert(session)
    }

    /// [`SessionStore::insert_within_limit`], forwarded by default.
    fn insert_within_limit<'a>(
        &'a self,
        session: &'a Session,
        limit: SessionLimit,
    ) -> impl Future<Output = Result<LimitedInsert, StoreError>> + Send + 'a {
        self.inner_store().insert_within_limit(session, limit)
    }

    /// [`SessionStore::find_active_by_hash`], forwarded by default.
    fn find_active_by_hash<'a>(
        &'a self,
        hash: &'a TokenHash,
    ) -> impl Future<Output = Result<Option<Session>, StoreError>> + Send + 'a {
        self.inner_store().find_active_by_hash(hash)
    }

    /// [`SessionStore::get`], forwarded by default.
    fn get(
        &self,
        id: SessionId,
    ) -> impl Future<Output = Result<Option<Session>, StoreError>> + Send {
        self.inner_store().get(id)
    }

    /// [`SessionStore::revoke`], forwarded by default.
    fn revoke(
        &self,
        id: SessionId,
        at: OffsetDateTime,
        reason: RevocationReason,
        by: Option<Revoker>,
    ) -> impl Future<Output = Result<RevokeOutcome, StoreError>> + Send {
        self.inner_store().revoke(id, at, reason, by)
    }

    /// [`SessionStore::revoke_all_for_account`], forwarded by default.
    fn revoke_all_for_account(
        &self,
        account: AccountId,
        except: Option<SessionId>,
        at: OffsetDateTime,
        reason: RevocationReason,
        by: Option<Revoker>,
    ) -> impl Future<Output = Result<Vec<TokenHash>, StoreError>> + Send {
        self.inner_store()
            .revoke_all_for_account(account, except, at, reason, by)
    }

    /// [`SessionStore::list_for_account`], forwarded by default.
    fn list_for_account(
        &self,
        account: AccountId,
        scope: ListScope,
        page: PageRequest,
    ) -> impl Future<Output = Result<AccountPage, StoreError>> + Send {
        self.inner_store().list_for_account(account, scope, page)
    }

    /// [`SessionStore::active_page`], forwarded by default.
    fn active_page(
        &self,
        after: Option<SessionId>,
        limit: u32,
    ) -> impl Future<Output = Result<ActivePage, StoreError>> + Send {
        self.inner_store().active_page(after, limit)
    }

    /// [`SessionStore::active_identity_page`], forwarded by default.
    fn active_identity_page(
        &self,
        after: Option<SessionId>,
        limit: u32,
    ) -> impl Future<Output = Result<IdentityPage, StoreError>> + Send {
        self.inner_store().active_identity_page(after, limit)
    }

    /// [`SessionStore::active_identities`], forwarded by default.
    fn active_identities(
        &self,
        page_size: u32,
        pages: tokio::sync::mpsc::Sender<Result<IdentityPage, StoreError>>,
    ) -> impl Future<Output = ()> + Send {
        self.inner_store().active_identities(page_size, pages)
    }

    /// [`SessionStore::health_check`], forwarded by default.
    fn health_check(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.inner_store().health_check()
    }

    /// [`SessionStore::record_last_seen`], forwarded by default.
    fn record_last_seen<'a>(
        &'a self,
        seen: &'a [SeenAt],
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a {
        self.inner_store().record_last_seen(seen)
    }

    /// [`SessionStore::last_seen`], forwarded by default.
    fn last_seen<'a>(
        &'a self,
        ids: &'a [SessionId],
    ) -> impl Future<Output = Result<Vec<SeenAt>, StoreError>> + Send + 'a {
        self.inner_store().last_seen(ids)
    }

    /// [`SessionStore::idle_sessions`], forwarded by default.
    fn idle_sessions(
        &self,
        cutoff: OffsetDateTime,
        after: Option<SessionId>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<SessionId>, StoreError>> + Send {
        self.inner_store().idle_sessions(cutoff, after, limit)
    }

    /// [`SessionStore::revoke_idle`], forwarded by default.
    fn revoke_idle(
        &self,
        cutoff: OffsetDateTime,
        after: Option<SessionId>,
        limit: u32,
        at: OffsetDateTime,
        reason: RevocationReason,
    ) -> impl Future<Output = Result<Exclusive<Vec<RevokedSession>>, StoreError>> + Send {
        self.inner_store()
            .revoke_idle(cutoff, after, limit, at, reason)
    }

    /// [`SessionStore::purge_revoked`], forwarded by default.
    fn purge_revoked(
        &self,
        before: OffsetDateTime,
        after: Option<SessionId>,
        limit: u32,
        action: RetentionAction,
    ) -> impl Future<Output = Result<Exclusive<Vec<SessionId>>, StoreError>> + Send {
        self.inner_store()
            .purge_revoked(before, after, limit, action)
    }

    /// [`SessionStore::not_before`], forwarded by default.
    fn not_before(&self) -> impl Future<Output = Result<NotBefore, StoreError>> + Send {
        self.inner_store().not_before()
    }

    /// [`SessionStore::raise_not_before`], forwarded by default.
    fn raise_not_before(
        &self,
        at: OffsetDateTime,
        by: Option<Revoker>,
    ) -> impl Future<Output = Result<OffsetDateTime, StoreError>> + Send {
        self.inner_store().raise_not_before(at, by)
    }

    /// [`SessionStore::record_not_before_swept`], forwarded by default.
    fn record_not_before_swept(
        &self,
        mark: OffsetDateTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.inner_store().record_not_before_swept(mark)
    }

    /// [`SessionStore::revoke_marked`], forwarded by default.
    fn revoke_marked(
        &self,
        mark: OffsetDateTime,
        after: Option<SessionId>,
        limit: u32,
        at: OffsetDateTime,
        reason: RevocationReason,
        by: Option<Revoker>,
    ) -> impl Future<Output = Result<Exclusive<Vec<RevokedSession>>, StoreError>> + Send {
        self.inner_store()
            .revoke_marked(mark, after, limit, at, reason, by)
    }
}

#[async_trait]
impl<D: StoreDecorator> SessionStore for D {
    async fn insert(&self, session: &Session) -> Result<(), StoreError> {
        let call = StoreDecorator::insert(self, session);
        self.around(StoreOperation::Insert, call).await
    }

    async fn insert_within_limit(
        &self,
        session: &Session,
        limit: SessionLimit,
    ) -> Result<LimitedInsert, StoreError> {
        let call = StoreDecorator::insert_within_limit(self, session, limit);
        self.around(StoreOperation::InsertWithinLimit, call).await
    }

    async fn find_active_by_hash(&self, hash: &TokenHash) -> Result<Option<Session>, StoreError> {
        let call = StoreDecorator::find_active_by_hash(self, hash);
        self.around(StoreOperation::FindActiveByHash, call).await
    }

    async fn get(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        let call = StoreDecorator::get(self, id);
        self.around(StoreOperation::Get, call).await
    }

    async fn revoke(
        &self,
        id: SessionId,
        at: OffsetDateTime,
        reason: RevocationReason,
        by: Option<Revoker>,
    ) -> Result<RevokeOutcome, StoreError> {
        let call = StoreDecorator::revoke(self, id, at, reason, by);
        self.around(StoreOperation::Revoke, call).await
    }

    async fn revoke_all_for_account(
        &self,
        account: AccountId,
        except: Option<SessionId>,
        at: OffsetDateTime,
        reason: RevocationReason,
        by: Option<Revoker>,
    ) -> Result<Vec<TokenHash>, StoreError> {
        let call = StoreDecorator::revoke_all_for_account(self, account, except, at, reason, by);
        self.around(StoreOperation::RevokeAllForAccount, call).await
    }

    async fn list_for_account(
        &self,
        account: AccountId,
        scope: ListScope,
        page: PageRequest,
    ) -> Result<AccountPage, StoreError> {
        let call = StoreDecorator::list_for_account(self, account, scope, page);
        self.around(StoreOperation::ListForAccount, call).await
    }

    async fn active_page(
        &self,
        after: Option<SessionId>,
        limit: u32,
    ) -> Result<ActivePage, StoreError> {
        let call = StoreDecorator::active_page(self, after, limit);
        self.around(StoreOperation::ActivePage, call).await
    }

    async fn active_identity_page(
        &self,
        after: Option<SessionId>,
        limit: u32,
    ) -> Result<IdentityPage, StoreError> {
        let call = StoreDecorator::active_identity_page(self, after, limit);
        self.around(StoreOperation::ActiveIdentityPage, call).await
    }

    async fn active_identities(
        &self,
        page_size: u32,
        pages: tokio::sync::mpsc::Sender<Result<IdentityPage, StoreError>>,
    ) {
        let call = async {
            StoreDecorator::active_identities(self, page_size, pages).await;
            Ok(())
        };
        // The call itself cannot fail: a failure travels in its pages.
        let _: Result<(), StoreError> = self.around(StoreOperation::ActiveIdentities, call).await;
    }

    async fn health_check(&self) -> Result<(), StoreError> {
        let call = StoreDecorator::health_check(self);
        self.around(StoreOperation::HealthCheck, call).await
    }

    async fn record_last_seen(&self, seen: &[SeenAt]) -> Result<(), StoreError> {
        let call = StoreDecorator::record_last_seen(self, seen);
        self.around(StoreOperation::RecordLastSeen, call).await
    }

    async fn last_seen(&self, ids: &[SessionId]) -> Result<Vec<SeenAt>, StoreError> {
        let call = StoreDecorator::last_seen(self, ids);
        self.around(StoreOperation::LastSeen, call).await
    }

    async fn idle_sessions(
        &self,
        cutoff: OffsetDateTime,
        after: Option<SessionId>,
        limit: u32,
    ) -> Result<Vec<SessionId>, StoreError> {
        let call = StoreDecorator::idle_sessions(self, cutoff, after, limit);
        self.around(StoreOperation::IdleSessions, call).await
    }

    async fn revoke_idle(
        &self,
        cutoff: OffsetDateTime,
        after: Option<SessionId>,
        limit: u32,
        at: OffsetDateTime,
        reason: RevocationReason,
    ) -> Result<Exclusive<Vec<RevokedSession>>, StoreError> {
        let call = StoreDecorator::revoke_idle(self, cutoff, after, limit, at, reason);
        self.around(StoreOperation::RevokeIdle, call).await
    }

    async fn purge_revoked(
        &self,
        before: OffsetDateTime,
        after: Option<SessionId>,
        limit: u32,
        action: RetentionAction,
    ) -> Result<Exclusive<Vec<SessionId>>, StoreError> {
        let call = StoreDecorator::purge_revoked(self, before, after, limit, action);
        self.around(StoreOperation::PurgeRevoked, call).await
    }

    async fn not_before(&self) -> Result<NotBefore, StoreError> {
        let call = StoreDecorator::not_before(self);
        self.around(StoreOperation::NotBefore, call).await
    }

    async fn raise_not_before(
        &self,
        at: OffsetDateTime,
        by: Option<Revoker>,
    ) -> Result<OffsetDateTime, StoreError> {
        let call = StoreDecorator::raise_not_before(self, at, by);
        self.around(StoreOperation::RaiseNotBefore, call).await
    }

    async fn record_not_before_swept(&self, mark: OffsetDateTime) -> Result<(), StoreError> {
        let call = StoreDecorator::record_not_before_swept(self, mark);
        self.around(StoreOperation::RecordNotBeforeSwept, call)
            .await
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
        let call = StoreDecorator::revoke_marked(self, mark, after, limit, at, reason, by);
        self.around(StoreOperation::RevokeMarked, call).await
    }
}

/// When a session was last seen (resolved), to the minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenAt {
    /// The session.
    pub id: SessionId,
    /// The start of the minute it was last seen in.
    pub at: OffsetDateTime,
}

/// One page of [`SessionStore::active_page`].
#[derive(Debug, Default)]
pub struct ActivePage {
    /// The active sessions read, in id order.
    pub sessions: Vec<Session>,
    /// Rows read that the domain rejects, left out of `sessions`.
    pub rejected: Vec<InvalidRow>,
    /// The id of the last row read, valid or not, when the page was full:
    /// the next page starts after it. `None` at the end.
    pub resume_after: Option<SessionId>,
}

/// [`SessionStore::active_identities`] as `store`'s
/// [`active_identity_page`](SessionStore::active_identity_page) pages, one
/// after another: the default, for a decorator that overrides the pages to
/// keep seeing them.
pub async fn identities_in_pages<S: SessionStore + ?Sized>(
    store: &S,
    page_size: u32,
    pages: tokio::sync::mpsc::Sender<Result<IdentityPage, StoreError>>,
) {
    send_keyset_pages(
        |after| store.active_identity_page(after, page_size),
        |page| page.resume_after,
        pages,
    )
    .await;
}

/// Sends `read`'s pages, from the start, each resumed after the one before
/// (`resume_after`), to `pages`: until the last page or the first failure
/// (sent too), or until the receiver is gone.
pub(crate) async fn send_keyset_pages<P, Read, Page>(
    mut read: Read,
    resume_after: impl Fn(&P) -> Option<SessionId>,
    pages: tokio::sync::mpsc::Sender<Result<P, StoreError>>,
) where
    Read: FnMut(Option<SessionId>) -> Page,
    Page: Future<Output = Result<P, StoreError>>,
{
    let mut after = None;
    loop {
        let page = read(after).await;
        let next = page.as_ref().ok().and_then(&resume_after);
        let failed = page.is_err();
        if pages.send(page).await.is_err() || failed {
            return;
        }
        match next {
            Some(next) => after = Some(next),
            None => return,
        }
    }
}

/// One page of [`SessionStore::active_identity_page`].
#[derive(Debug, Default)]
pub struct IdentityPage {
    /// The identities of the active sessions read, in id order.
    pub identities: Vec<SessionIdentity>,
    /// Rows read whose id, account or token hash the domain rejects, left
    /// out of `identities`.
    pub rejected: Vec<InvalidRow>,
    /// As [`ActivePage::resume_after`]: the id of the last row read, valid
    /// or not, when the page was full; `None` at the end.
    pub resume_after: Option<SessionId>,
}

/// The "not before" mark as a store reads it, in microseconds since
/// 1970-01-01T00:00:00Z (UTC), any value, as [`StoredSession::created_at`].
#[derive(Debug, Clone, Default)]
pub struct StoredNotBefore {
    /// `mark`; `None` when no mark was ever raised.
    pub mark: Option<i64>,
    /// `swept_through`; `None` until a sweep completes.
    pub swept_through: Option<i64>,
    /// `raised_by`'s bytes, UTF-8 or not.
    pub raised_by: Option<Vec<u8>>,
}

impl StoredNotBefore {
    /// The mark as the domain reads it: an instant [`stored_instant`]
    /// refuses is no mark, reported as an [`InvalidRow`] of `table`; a
    /// rejected `swept_through` is no sweep, so the sweep runs again, and a
    /// rejected `raised_by` no revoker.
    #[must_use]
    pub fn into_not_before(self, table: &'static str) -> NotBefore {
        let mut read = NotBefore::default();
        if let Some(micros) = self.mark {
            match stored_instant(micros) {
                Some(mark) => read.mark = Some(mark),
                None => {
                    let reason = ValidationError::new(Field::NotBefore, Reason::InstantOutOfRange);
                    read.rejected = Some(InvalidRow::new(table, "mark", RowId::Only, reason));
                }
            }
        }
        read.swept_through = self.swept_through.and_then(stored_instant);
        read.raised_by = self
            .raised_by
            .and_then(|bytes| text(bytes, Field::RevokedBy).and_then(Revoker::new).ok());
        read
    }
}

/// A stored row's identity columns, as a store decodes them for
/// [`SessionStore::active_identity_page`], in raw forms any stored value
/// fits.
#[derive(Debug, Clone)]
pub struct StoredIdentity {
    /// `id`.
    pub id: Uuid,
    /// `account_id`.
    pub account_id: Uuid,
    /// `token_hash`, of any length; valid only at 32 bytes.
    pub token_hash: Vec<u8>,
}

impl StoredIdentity {
    /// The identity, if the domain accepts its columns: an account id that
    /// is not nil and a 32-byte token hash ([`StoredSession::into_session`]
    /// checks them here too).
    ///
    /// # Errors
    ///
    /// [`InvalidRow`] naming `table`, the first rejected column (account,
    /// then hash) and the row, never the value.
    pub fn into_identity(self, table: &'static str) -> Result<SessionIdentity, InvalidRow> {
        let id = SessionId::from_uuid(self.id);
        let account_id = AccountId::new(self.account_id)
            .map_err(|err| InvalidRow::new(table, "account_id", RowId::Session(id), err))?;
        let token_hash = TokenHash::try_from(self.token_hash.as_slice())
            .map_err(|err| InvalidRow::new(table, "token_hash", RowId::Session(id), err))?;
        Ok(SessionIdentity {
            id,
            account_id,
            token_hash,
        })
    }
}

/// A stored row that does not make a valid [`Session`], written by other SQL
/// or under an older schema. Names the table, the column and the row, never
/// the stored value, which may be hostile.
#[derive(Debug, thiserror::Error)]
#[error("stored row {row} of {table} has an invalid {column}: {reason}")]
pub struct InvalidRow {
    /// The table (or log) the row is in.
    pub table: &'static str,
    /// The column whose value the domain rejects.
    pub column: &'static str,
    /// The row's session id, when it could be read.
    pub row: RowId,
    /// Why the value is rejected.
    #[source]
    pub reason: BoxError,
}

/// Which row an [`InvalidRow`] is: its session id, if that could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowId {
    /// The row's session id.
    Session(SessionId),
    /// The id itself is unreadable.
    Unknown,
    /// The table's one row (the "not before" mark's).
    Only,
}

impl std::fmt::Display for RowId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Session(id) => write!(f, "{id}"),
            Self::Unknown => f.write_str("with an unreadable id"),
            Self::Only => f.write_str("(the only one)"),
        }
    }
}

impl InvalidRow {
    /// `column` of the row with id `row` in `table` holds a value the domain rejects.
    pub fn new(
        table: &'static str,
        column: &'static str,
        row: RowId,
        reason: impl Into<BoxError>,
    ) -> Self {
        Self {
            table,
            column,
            row,
            reason: reason.into(),
        }
    }
}

impl From<InvalidRow> for StoreError {
    fn from(invalid: InvalidRow) -> Self {
        Self::Failed(Box::new(invalid))
    }
}

/// The earliest instant a stored row may hold, 0001-01-01T00:00:00Z, in
/// microseconds since 1970-01-01T00:00:00Z (UTC). See [`stored_instant`].
pub const EARLIEST_STORED_MICROS: i64 = -62_135_596_800_000_000;

/// The latest instant a stored row may hold, 9999-12-31T23:59:59.999999Z,
/// in microseconds since 1970-01-01T00:00:00Z (UTC). See [`stored_instant`].
pub const LATEST_STORED_MICROS: i64 = 253_402_300_799_999_999;

/// The instant `micros` microseconds after 1970-01-01T00:00:00Z, in UTC, if
/// the domain accepts it: from [`EARLIEST_STORED_MICROS`] to
/// [`LATEST_STORED_MICROS`], both included. The one conversion of a stored
/// instant; `None` for any other value, a store's infinities included.
///
/// The range is years 0001 to 9999: every instant the API can write as
/// RFC 3339 (whose years have four digits) and that common clients can
/// read back (Python's and .NET's date types start at year 1; PostgreSQL
/// spells year 0 "1 BC"). PostgreSQL's schema refuses instants outside it
/// (migration `2026-12-06-000002_finite_times`).
#[must_use]
pub fn stored_instant(micros: i64) -> Option<OffsetDateTime> {
    if !(EARLIEST_STORED_MICROS..=LATEST_STORED_MICROS).contains(&micros) {
        return None;
    }
    // In range, so the product fits and `time` holds the instant.
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000).ok()
}

/// A session as a store holds it, column for column, before the domain has
/// checked it: each column in a raw form any stored value decodes into, so
/// a value the domain rejects reaches [`into_session`](Self::into_session)
/// instead of failing the read that met it. Both stores turn their rows
/// into this and call `into_session`, the one place a stored row is checked.
#[derive(Debug, Clone)]
pub struct StoredSession {
    /// `id`.
    pub id: Uuid,
    /// `account_id`.
    pub account_id: Uuid,
    /// `token_hash`, of any length; valid only at 32 bytes.
    pub token_hash: Vec<u8>,
    /// `created_at`, in microseconds since 1970-01-01T00:00:00Z (UTC), any
    /// value; a store maps its infinities to values outside
    /// [`stored_instant`]'s range, such as `i64::MIN` and `i64::MAX`.
    pub created_at: i64,
    /// `revoked_at`, as `created_at`.
    pub revoked_at: Option<i64>,
    /// `user_agent`'s bytes, UTF-8 or not.
    pub user_agent: Option<Vec<u8>>,
    /// `ip`.
    pub ip: Option<IpAddr>,
    /// `label`'s bytes, UTF-8 or not.
    pub label: Option<Vec<u8>>,
    /// `revocation_reason`'s bytes, UTF-8 or not; null for an active
    /// session and for one revoked before reasons were recorded.
    pub revocation_reason: Option<Vec<u8>>,
    /// `revoked_by`'s bytes, UTF-8 or not; null for an active session and
    /// for a revocation no key made.
    pub revoked_by: Option<Vec<u8>>,
}

impl StoredSession {
    /// The session, if the domain accepts every column: a valid account id
    /// (not nil), a 32-byte token hash, instants [`stored_instant`] accepts,
    /// user agent and label text that is UTF-8 and that
    /// [`UserAgent::new`] and [`Label::new`] accept, and a revocation
    /// reason that [`RevocationReason::new`] accepts and a revoker that
    /// [`Revoker::new`] accepts, each on a revoked session only (a revoked
    /// session without one reads as `None`).
    ///
    /// # Errors
    ///
    /// [`InvalidRow`] naming `table`, the first rejected column (in the
    /// order above) and the row, never the value.
    pub fn into_session(self, table: &'static str) -> Result<Session, InvalidRow> {
        let id = SessionId::from_uuid(self.id);
        let invalid = |column, reason: ValidationError| {
            InvalidRow::new(table, column, RowId::Session(id), reason)
        };
        let instant = |micros, field| {
            stored_instant(micros).ok_or(ValidationError::new(field, Reason::InstantOutOfRange))
        };
        let SessionIdentity {
            account_id,
            token_hash,
            ..
        } = StoredIdentity {
            id: self.id,
            account_id: self.account_id,
            token_hash: self.token_hash,
        }
        .into_identity(table)?;
        let created_at =
            instant(self.created_at, Field::CreatedAt).map_err(|err| invalid("created_at", err))?;
        let revoked_at = self
            .revoked_at
            .map(|micros| instant(micros, Field::RevokedAt))
            .transpose()
            .map_err(|err| invalid("revoked_at", err))?;
        let user_agent = self
            .user_agent
            .map(|bytes| text(bytes, Field::UserAgent).and_then(UserAgent::new))
            .transpose()
            .map_err(|err| invalid("user_agent", err))?;
        let label = self
            .label
            .map(|bytes| text(bytes, Field::Label).and_then(Label::new))
            .transpose()
            .map_err(|err| invalid("label", err))?;
        let revocation_reason = self
            .revocation_reason
            .map(|bytes| {
                if revoked_at.is_none() {
                    return Err(ValidationError::new(
                        Field::RevocationReason,
                        Reason::ReasonWithoutRevocation,
                    ));
                }
                text(bytes, Field::RevocationReason).and_then(RevocationReason::new)
            })
            .transpose()
            .map_err(|err| invalid("revocation_reason", err))?;
        let revoked_by = self
            .revoked_by
            .map(|bytes| {
                if revoked_at.is_none() {
                    return Err(ValidationError::new(
                        Field::RevokedBy,
                        Reason::ReasonWithoutRevocation,
                    ));
                }
                text(bytes, Field::RevokedBy).and_then(Revoker::new)
            })
            .transpose()
            .map_err(|err| invalid("revoked_by", err))?;
        Ok(Session {
            id,
            account_id,
            token_hash,
            created_at,
            revocation: RevocationDetails::of(revoked_at, revocation_reason, revoked_by),
            metadata: ClientMetadata {
                user_agent,
                // As `parse_ip` does for clients: an IPv4 client seen
                // through an IPv6 socket is an IPv4 client.
                ip: self.ip.map(|ip| ip.to_canonical()),
                label,
            },
        })
    }
}

/// Stored bytes as text, if they are UTF-8.
fn text(bytes: Vec<u8>, field: Field) -> Result<String, ValidationError> {
    String::from_utf8(bytes).map_err(|_| ValidationError::new(field, Reason::NotUtf8))
}

/// What [`SessionStore::insert_within_limit`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitedInsert {
    /// The session is stored; `evicted` are the token hashes of the
    /// sessions revoked to make room for it (empty if there was room), to
    /// drop them from caches.
    Inserted {
        /// The hashes of the sessions revoked with reason
        /// [`RevocationReason::LIMIT`], in no particular order.
        evicted: Vec<TokenHash>,
    },
    /// The account holds its limit and the policy refuses: nothing changed.
    Refused,
}

/// What revoking one session did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// The session was active and is revoked now.
    Revoked {
        /// The hash of the revoked session's token, to drop it from caches.
        token_hash: TokenHash,
    },
    /// The session had already been revoked; nothing changed.
    AlreadyRevoked {
        /// The hash of its token, so a cache that still holds it (it never
        /// should) can drop it.
        token_hash: TokenHash,
    },
    /// No session has this id.
    NotFound,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A session with the same token hash already exists.
    #[error("a session with this token hash already exists")]
    DuplicateTokenHash,
    /// The store cannot be reached right now (connection lost, pool exhausted,
    /// server down). Nothing was changed; retrying later may succeed.
    #[error("session store unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The store answered but the operation failed for a reason retrying will
    /// not fix (a constraint, a corrupt row, a bug).
    #[error("session store failed: {0}")]
    Failed(#[source] BoxError),
}

impl StoreError {
    /// Whether retrying the same operation later may succeed.
    #[must_use]
    pub const fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}
