//! The change-log port: how one process learns of writes that other
//! processes committed to a shared store.
//!
//! The store keeps a log of every change to its set of active sessions,
//! written in the same transaction as the change. A follower reads it from a
//! [`LogCursor`], and each read returns only entries no earlier read from
//! that cursor returned, so after a lost connection it resumes exactly where
//! it stopped; only a cursor the log no longer covers costs a full load.
//! Wake-ups ([`WakeUps`]) only say "the log may have grown": they carry
//! nothing a follower applies, so whoever can send one can at most cause an
//! extra read.

use async_trait::async_trait;

use super::store::{InvalidRow, StoreError};
use crate::session::Session;
use crate::token::TokenHash;

/// Where a reader is in a [`ChangeLog`]: which entries it has been given.
///
/// Opaque to the service: only the log that issued it gives its parts a
/// meaning. It says: every entry up to [`through`](Self::through) has been
/// read, except those of the writers (transactions) listed in
/// [`open`](Self::open), each read only up to its own mark, and those of
/// every writer from [`open_from`](Self::open_from) on. A log whose
/// writers commit out of order (PostgreSQL: a sequence number is taken at
/// insert, visibility comes at commit) lists there the writers that were
/// still open at the read, so their entries, committed later below
/// `through`, are still found, and nothing else is read twice.
///
/// The *epoch* names one unbroken history of the log: a log whose positions
/// could be handed out again (PostgreSQL after a restart or a promotion may
/// reuse transaction ids) starts a new epoch, and expires every cursor of an
/// older one. The default is before every entry of epoch 0.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LogCursor {
    epoch: u64,
    through: u64,
    open: Vec<OpenWriter>,
    open_from: u64,
}

impl Default for LogCursor {
    fn default() -> Self {
        Self::new(0, 0, Vec::new())
    }
}

/// A writer a [`LogCursor`] still waits for: its id, and the position up to
/// which its entries have been read (0: none yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpenWriter {
    /// The writer's id (PostgreSQL: its top-level transaction id).
    pub id: u64,
    /// Its entries up to this position have been read.
    pub read_through: u64,
}

impl LogCursor {
    /// A cursor of `epoch` that has read every entry up to `through`, except
    /// those of the writers in `open` past each one's `read_through`.
    #[must_use]
    pub fn new(epoch: u64, through: u64, mut open: Vec<OpenWriter>) -> Self {
        open.sort_unstable();
        open.dedup_by_key(|writer| writer.id);
        Self {
            epoch,
            through,
            open,
            open_from: u64::MAX,
        }
    }

    /// The same cursor, also waiting for every writer whose id is at least
    /// `id`, none of whose entries it has read: writers a log cannot list
    /// (PostgreSQL's snapshot lists only open transactions below its
    /// `xmax`; one with a higher id may already be writing).
    #[must_use]
    pub const fn with_open_from(mut self, id: u64) -> Self {
        self.open_from = id;
        self
    }

    /// The history this cursor belongs to.
    #[must_use]
    pub const fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Every entry up to here has been read, but those of [`open`](Self::open) writers.
    #[must_use]
    pub const fn through(&self) -> u64 {
        self.through
    }

    /// Writers whose entries up to [`through`](Self::through) may still come, in id order.
    #[must_use]
    pub fn open(&self) -> &[OpenWriter] {
        &self.open
    }

    /// Every writer with an id at least this is waited for as well, none of
    /// its entries read; `u64::MAX` when there is no such bound.
    #[must_use]
    pub const fn open_from(&self) -> u64 {
        self.open_from
    }
}

/// A change to the set of active sessions, as the store reports it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A session is active (new, or changed by other SQL): read from the
    /// store's sessions, never from the text of a notification.
    Created(Session),
    /// Sessions stopped being active.
    Revoked(Vec<TokenHash>),
    /// The store lost changes the log cannot describe (a truncated table):
    /// every cache must be loaded again.
    Reload,
    /// The store's "not before" mark was raised: the mark in force, read
    /// from the store's mark in the same read, never from the text of a
    /// notification. Followers raise theirs to it.
    NotBefore(time::OffsetDateTime),
}

/// The result of one [`ChangeLog::read`].
#[derive(Debug, Default)]
pub struct LogPage {
    /// Entries the cursor had not been given, in an order that keeps each
    /// session's changes in the order they committed.
    pub entries: Vec<Change>,
    /// Where the next read starts: every entry visible to this read is
    /// either in [`entries`](Self::entries) or was given before, unless
    /// [`more`](Self::more).
    pub next: LogCursor,
    /// The page was full: more entries may follow at once.
    pub more: bool,
    /// Entries whose session row the domain rejects (written by other SQL
    /// or under an older schema), left out of `entries`.
    pub rejected: Vec<InvalidRow>,
    /// The store's "not before" mark as of this read (`None`: none
    /// stored), read in the same statement: a follower holding a later one
    /// (the store restored from an older copy) writes its own back.
    pub not_before: Option<time::OffsetDateTime>,
}

/// What a [`ChangeLog::read`] found.
#[derive(Debug)]
pub enum LogRead {
    /// The entries after the cursor.
    Page(LogPage),
    /// The log no longer holds every entry after the cursor (pruned past
    /// it, emptied, or of another epoch): the reader must load everything
    /// again and continue from a fresh [`ChangeLog::head`].
    Expired,
}

/// A log of committed changes to the active sessions, for stores several
/// processes share.
///
/// Stores without one (SQLite, the memory store by default) are used by one
/// process, whose own writes keep its cache complete.
#[async_trait]
pub trait ChangeLog: Send + Sync + 'static {
    /// Where a reader about to load every active session starts: every
    /// change not yet visible when this returns is after it. Changes
    /// already visible may be after it too; reading them again is harmless,
    /// since a creation is read as the store holds it then.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the store cannot be reached.
    async fn head(&self) -> Result<LogCursor, StoreError>;

    /// At most `limit` entries `after` has not been given, with the cursor
    /// to read from next. Must be one consistent read, so a write committing
    /// meanwhile is either in the page or after [`LogPage::next`]. However
    /// long another writer stays open, a read returns each entry once and
    /// its page is at most `limit` entries.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the store cannot be read; nothing is consumed, so
    /// reading again from the same cursor loses nothing.
    async fn read(&self, after: &LogCursor, limit: u32) -> Result<LogRead, StoreError>;

    /// Starts listening for hints that the log grew.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the store cannot be reached.
    async fn wake_ups(&self) -> Result<Box<dyn WakeUps>, StoreError>;

    /// Drops entries older than the store's retention window, without
    /// blocking writers. Returns how many went. Readers whose position was
    /// among them get [`LogRead::Expired`].
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the store cannot be written.
    async fn prune(&self) -> Result<u64, StoreError>;
}

/// A [`ChangeLog`] method, as a [`ChangeLogDecorator`] sees each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeLogOperation {
    /// [`ChangeLog::head`].
    Head,
    /// [`ChangeLog::read`].
    Read,
    /// [`ChangeLog::wake_ups`].
    WakeUps,
    /// [`ChangeLog::prune`].
    Prune,
}

impl ChangeLogOperation {
    /// Every operation, in declaration order, so `operation as usize` is
    /// its index here: a decorator can keep one slot per operation.
    pub const ALL: [Self; 4] = [Self::Head, Self::Read, Self::WakeUps, Self::Prune];

    /// The method's name after `log_`, so no name is also a
    /// [`StoreOperation`](super::store::StoreOperation)'s and one label can name
    /// the calls of both ports. Stable: metrics label change-log calls with it.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Head => "log_head",
            Self::Read => "log_read",
            Self::WakeUps => "log_wake_ups",
            Self::Prune => "log_prune",
        }
    }
}

// `ALL` is in declaration order, as its doc promises.
const _: () = {
    let mut index = 0;
    while index < ChangeLogOperation::ALL.len() {
        assert!(ChangeLogOperation::ALL[index] as usize == index);
        index += 1;
    }
};

/// A change log that wraps another and changes only part of what it does:
/// the one way to decorate a [`ChangeLog`], as
/// [`StoreDecorator`](super::store::StoreDecorator) is for the store.
///
/// Every `ChangeLogDecorator` is a `ChangeLog`: each port method runs this
/// trait's method of the same name, which forwards to
/// [`inner_log`](Self::inner_log) unless overridden, inside
/// [`around`](Self::around). Override a method with `async fn`, calling
/// the wrapped log itself, as a `StoreDecorator` does.
pub trait ChangeLogDecorator: Send + Sync + 'static {
    /// The log every call not overridden goes to.
    fn inner_log(&self) -> &dyn ChangeLog;

    /// Runs each call: `call` is this trait's method for `operation`, not
    /// yet polled. By default, just that call.
    fn around<T: Send>(
        &self,
        operation: ChangeLogOperation,
        call: impl Future<Output = Result<T, StoreError>> + Send,
    ) -> impl Future<Output = Result<T, StoreError>> + Send {
        let _ = operation;
        call
    }

    /// [`ChangeLog::head`], forwarded by default.
    fn head(&self) -> impl Future<Output = Result<LogCursor, StoreError>> + Send {
        self.inner_log().head()
    }

    /// [`ChangeLog::read`], forwarded by default.
    fn read<'a>(
        &'a self,
        after: &'a LogCursor,
        limit: u32,
    ) -> impl Future<Output = Result<LogRead, StoreError>> + Send + 'a {
        self.inner_log().read(after, limit)
    }

    /// [`ChangeLog::wake_ups`], forwarded by default.
    fn wake_ups(&self) -> impl Future<Output = Result<Box<dyn WakeUps>, StoreError>> + Send {
        self.inner_log().wake_ups()
    }

    /// [`ChangeLog::prune`], forwarded by default.
    fn prune(&self) -> impl Future<Output = Result<u64, StoreError>> + Send {
        self.inner_log().prune()
    }
}

#[async_trait]
impl<D: ChangeLogDecorator> ChangeLog for D {
    async fn head(&self) -> Result<LogCursor, StoreError> {
        let call = ChangeLogDecorator::head(self);
        self.around(ChangeLogOperation::Head, call).await
    }

    async fn read(&self, after: &LogCursor, limit: u32) -> Result<LogRead, StoreError> {
        let call = ChangeLogDecorator::read(self, after, limit);
        self.around(ChangeLogOperation::Read, call).await
    }

    async fn wake_ups(&self) -> Result<Box<dyn WakeUps>, StoreError> {
        let call = ChangeLogDecorator::wake_ups(self);
        self.around(ChangeLogOperation::WakeUps, call).await
    }

    async fn prune(&self) -> Result<u64, StoreError> {
        let call = ChangeLogDecorator::prune(self);
        self.around(ChangeLogOperation::Prune, call).await
    }
}

/// Hints that a [`ChangeLog`] may have grown. A hint is never trusted for
/// more than that: it carries nothing to apply.
#[async_trait]
pub trait WakeUps: Send {
    /// Waits for the next hint; hints that arrived meanwhile count as one.
    /// Must be cancel-safe.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] once the source is lost; listen again.
    async fn next(&mut self) -> Result<(), StoreError>;

    /// Whether hints can come at all: `false` for a source that never
    /// yields (wake-ups turned off), so the service reports that it polls.
    fn delivers(&self) -> bool {
        true
    }
}
