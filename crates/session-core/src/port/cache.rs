//! The cache port: the in-memory projection of every active session.
//!
//! Two kinds of cache implement it. A *full* cache ([`CacheMode::Full`],
//! [`MemoryCache`](crate::MemoryCache)) holds every active session's whole
//! record. A *compact* cache ([`CacheMode::Compact`],
//! [`CompactCache`](crate::CompactCache)) holds an exact index of every
//! active session's [`SessionIdentity`] and only a bounded number of whole
//! records, in a [`RecordCache`] that may evict. Membership is exact in both:
//! what [`SessionCache::get`] answers is the set of active sessions.

use std::any::Any;
use std::sync::Arc;

use crate::session::{Session, SessionIdentity};
use crate::token::TokenHash;

/// What a cache holds beyond each active session's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// Every cached session's whole record: [`SessionCache::record`] answers
    /// for every session [`SessionCache::get`] finds.
    Full,
    /// An index of identities, and whole records for only some sessions:
    /// [`SessionCache::record`] may answer `None` for a cached session, and
    /// its record is then read from the store.
    Compact,
}

impl CacheMode {
    /// The mode's name, as `--cache` spells it and metrics label it.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Compact => "compact",
        }
    }
}

/// The complete in-memory projection of active sessions, keyed by token hash.
///
/// Synchronous on purpose: a lookup never awaits. A cache holds every active
/// session's identity and evicts none by itself (no time-to-live, no size
/// bound), because a miss in [`get`](Self::get) means "no such active
/// session" and an evicted entry would log a user out. Whole records
/// ([`record`](Self::record)) are another matter: a compact cache keeps a
/// bounded number and may evict them, since a record not held is read from
/// the store, never taken for "not found".
pub trait SessionCache: Send + Sync + 'static {
    /// The identity of the active session with this token hash, if cached:
    /// the membership test every resolve makes.
    fn get(&self, hash: &TokenHash) -> Option<SessionIdentity>;

    /// The whole record of the cached session with this token hash, when the
    /// cache holds it. `None` when the session is not cached, and, in a
    /// [`CacheMode::Compact`] cache, also when its record is not held: never
    /// a record of a session [`get`](Self::get) does not find.
    fn record(&self, hash: &TokenHash) -> Option<Arc<Session>>;

    /// Offers a cached session's record read from the store, after
    /// [`record`](Self::record) answered `None` for it. A compact cache may
    /// keep it, but never over a record it already holds (that one came from
    /// a write and may be newer than the read); a full cache, which already
    /// holds every record, ignores it.
    fn keep_record(&self, session: Arc<Session>) {
        drop(session);
    }

    /// Whether [`record`](Self::record) answers for every cached session.
    fn mode(&self) -> CacheMode;

    /// Adds a session, replacing any entry with the same token hash.
    fn insert(&self, session: Arc<Session>);

    /// Drops the session with this token hash, if cached.
    fn remove(&self, hash: &TokenHash);

    /// Drops every session with one of these token hashes.
    fn remove_many(&self, hashes: &[TokenHash]);

    /// Starts empty contents apart from the live ones: readers do not see
    /// them, and they can be filled and changed, until
    /// [`install`](Self::install).
    ///
    /// A warm fills them page by page as the store reads, so it never holds
    /// every session it read in any other form; building apart from the
    /// install lets a caller build without holding its own locks.
    fn prepare_empty(&self) -> Box<dyn PreparedContents>;

    /// Starts the contents of a warm of this cache, which may already hold
    /// sessions. By default they are built apart, as
    /// [`prepare_empty`](Self::prepare_empty)'s: the warm holds two copies
    /// until [`install`](Self::install).
    ///
    /// A cache may instead refresh its live contents in place, so a warm
    /// costs no second copy, if it keeps, until the install: every session
    /// it held or a write inserted since stays answered, unless removed; a
    /// session given to the contents is answered only if it was not removed
    /// since the refresh began (the warm may have read it before); removing
    /// from the contents removes from the live cache. The install then drops
    /// every session neither given to the contents nor inserted since the
    /// refresh began. Dropped without an install, the contents leave the
    /// live cache holding what it held and what they were given.
    /// [`CompactCache`](crate::CompactCache) refreshes in place.
    fn refresh(&self) -> Box<dyn PreparedContents> {
        self.prepare_empty()
    }

    /// Builds contents holding exactly `sessions` (the last wins for a
    /// repeated hash), apart from the live ones, as
    /// [`prepare_empty`](Self::prepare_empty) filled with them.
    fn prepare(&self, sessions: Vec<Arc<Session>>) -> Box<dyn PreparedContents> {
        let mut contents = self.prepare_empty();
        for session in sessions {
            contents.insert(session);
        }
        contents
    }

    /// Makes contents from [`prepare`](Self::prepare) the live contents, at
    /// once: concurrent readers see either the old contents or the new ones,
    /// never a mix. A write that overlaps the install may apply to either;
    /// callers that must keep it order their writes against the install.
    ///
    /// # Panics
    ///
    /// If `contents` was prepared by a cache of another type.
    fn install(&self, contents: Box<dyn PreparedContents>);

    /// Replaces the whole contents with `sessions`: prepare, then install.
    fn replace_all(&self, sessions: Vec<Arc<Session>>) {
        self.install(self.prepare(sessions));
    }

    /// The exact number of cached sessions.
    fn len(&self) -> usize;

    /// Whether the cache holds no session.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes the cache occupies, in its tables and the records it holds,
    /// as allocated (the allocator's own rounding and bookkeeping are not
    /// counted), when the cache can tell cheaply; `None` otherwise. Read at
    /// every metrics scrape, so it must not walk the entries.
    fn bytes(&self) -> Option<usize> {
        None
    }
}

/// A cache's next contents, built by [`SessionCache::prepare`] and not yet
/// visible to readers.
pub trait PreparedContents: Send {
    /// Adds a session, replacing any with the same token hash.
    fn insert(&mut self, session: Arc<Session>);

    /// Adds an active session known by its identity alone, replacing any
    /// with the same token hash: what a warm reads for a
    /// [`CacheMode::Compact`] cache, whose index holds no more.
    ///
    /// No default, so a wrapper of contents cannot drop it by accident.
    ///
    /// # Panics
    ///
    /// May panic in contents of a [`CacheMode::Full`] cache, which must
    /// hold whole records: a warm gives those only whole sessions.
    fn insert_identity(&mut self, identity: SessionIdentity);

    /// Drops the session with this token hash, if present.
    fn remove(&mut self, hash: &TokenHash);

    /// The contents as [`Any`], for the cache that prepared them to take
    /// its own type back in [`SessionCache::install`].
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

/// A bounded cache of whole session records, beside a compact cache's index
/// ([`CompactCache::with_records`](crate::CompactCache::with_records)).
///
/// Unlike [`SessionCache`], it may evict whatever it likes, whenever it
/// likes: the index decides whether a session is active, and a record not
/// held here is read from the store. It is asked only about sessions the
/// index holds, so a record it keeps after its session was revoked is never
/// handed out. Implemented outside this crate on a cache library
/// (session-cache-moka's `MokaRecordCache`).
pub trait RecordCache: Send + Sync + 'static {
    /// The record with this token hash, if held.
    fn get(&self, hash: &TokenHash) -> Option<Arc<Session>>;

    /// Holds `session`, replacing a record with the same token hash: a
    /// write's record, the newest there is.
    fn insert(&self, session: Arc<Session>);

    /// Holds `session` unless a record with the same token hash is held: a
    /// record read from the store, which a write applied meanwhile may have
    /// superseded.
    fn insert_if_absent(&self, session: Arc<Session>);

    /// Drops the record with this token hash, if held.
    fn remove(&self, hash: &TokenHash);

    /// Drops every record (after the index's contents were replaced).
    fn clear(&self);

    /// The bytes the held records occupy, as the cache estimates them.
    fn bytes(&self) -> usize;
}
