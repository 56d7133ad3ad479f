//! The compact cache: an exact index of every active session's identity in
//! fixed-size records, beside a bounded cache of whole records.
//!
//! # The index
//!
//! 4,096 segments, chosen by the token hash's first 12 bits, each an
//! independent table of ordered linear probing (`table.rs`) under its own
//! `RwLock`. A slot is 47 bytes, in two arrays: the 8-byte *order word*
//! (hash bits 16 to 79, lowest bit forced to 1 so that 0 marks a free slot),
//! which lookups scan, and a 39-byte record: 7 more hash bytes (bits 80 to
//! 135), the session id and the account id. No per-session allocation.
//!
//! **Exactness.** A lookup matches a slot when the segment, the order word
//! and the 7 stored bytes all equal the token hash's: 12 + 63 + 56 = 131 bits
//! of SHA-256 output. Every token the service issues is stored, so there are
//! no false negatives. A false positive needs a token whose hash agrees with
//! a stored session's on those 131 bits, while its own 256-bit secret is
//! unknown to the guesser: each guess succeeds with probability at most
//! n / 2^131, 3.7 × 10^-32 at n = 10^8 active sessions (an attacker trying a
//! billion tokens a second for a century, 3.2 × 10^18 guesses, succeeds with
//! probability 1.2 × 10^-13). Two real sessions share 131 bits with
//! probability n² / 2^132, 1.8 × 10^-24 at 10^8: if they ever did, the
//! second insert would replace the first's identity, so the first's token
//! would resolve as the second session until one of them is revoked. The
//! issue's bar was "about 10^-31 per guess at 10^8 with 16 bytes" (128 bits);
//! 131 bits clears it by the same cost, since the 12 segment bits are not
//! stored.
//!
//! **Memory.** A table grows by one eighth (at least 4 homes) when one more
//! key would take its load past 0.92, so its load stays between 0.82 and
//! 0.92 (about 0.87 on average over segments at random points of their
//! growth): about 54 bytes a session, never a doubling. Growing copies one
//! segment, 1/4,096 of the index, so no moment holds two indexes' worth;
//! [`prepare`](SessionCache::prepare) sizes each segment for the count it
//! is given (load 0.9) before filling it. An empty segment allocates
//! nothing.
//!
//! **Locks.** One `RwLock` per segment, taken alone by every operation but
//! [`install`](SessionCache::install), which takes all 4,096 write locks in
//! segment order, swaps, and releases them, so a reader sees the old
//! contents or the new ones, never a mix. The count and the slot count are
//! atomics changed while the segment's write lock is held, so with all
//! write locks held the count is exact. The record cache is only ever
//! touched after the index's lock is released: it is not ordered against it.

mod table;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use uuid::Uuid;

use crate::port::cache::{CacheMode, PreparedContents, RecordCache, SessionCache};
use crate::session::{AccountId, Session, SessionId, SessionIdentity};
use crate::token::TokenHash;
use table::{NoRoom, Table};

const SEGMENT_BITS: u32 = 12;
const SEGMENTS: usize = 1 << SEGMENT_BITS;
/// Hash bytes kept in a record beyond the segment and the order word.
const LO_LEN: usize = 7;
/// A record: those bytes, the session id and the account id.
const RECORD_LEN: usize = LO_LEN + 16 + 16;
type Record = [u8; RECORD_LEN];
/// The bytes of one slot: its order word and its record.
const SLOT_BYTES: usize = size_of::<u64>() + RECORD_LEN;
/// A table grows when one more key would take its load past 23/25 = 0.92.
const MAX_LOAD: (usize, usize) = (23, 25);
/// [`prepare`](SessionCache::prepare) sizes tables for a load of 9/10.
const BUILD_LOAD: (usize, usize) = (9, 10);
/// The fewest homes a table grows by.
const MIN_GROWTH: usize = 4;

/// Where a token hash lives in the index and what identifies it there.
struct Key {
    segment: usize,
    /// Bits 16 to 79 of the hash, the lowest forced to 1.
    hi: u64,
    /// Bits 80 to 135.
    lo: [u8; LO_LEN],
}

impl Key {
    #[inline]
    fn of(hash: &TokenHash) -> Self {
        let bytes = hash.as_bytes();
        let segment = (usize::from(bytes[0]) << 4) | usize::from(bytes[1] >> 4);
        let mut hi = [0; 8];
        hi.copy_from_slice(&bytes[2..10]);
        let mut lo = [0; LO_LEN];
        lo.copy_from_slice(&bytes[10..10 + LO_LEN]);
        Self {
            segment,
            hi: u64::from_be_bytes(hi) | 1,
            lo,
        }
    }
}

fn record(key: &Key, value: &[u8; 32]) -> Record {
    let mut record = [0; RECORD_LEN];
    record[..LO_LEN].copy_from_slice(&key.lo);
    record[LO_LEN..].copy_from_slice(value);
    record
}

/// A session's value in the index: its id, then its account.
fn value_of(session: &Session) -> [u8; 32] {
    let mut value = [0; 32];
    value[..16].copy_from_slice(session.id.as_uuid().as_bytes());
    value[16..].copy_from_slice(session.account_id.as_uuid().as_bytes());
    value
}

fn identity(record: &Record, hash: &TokenHash) -> SessionIdentity {
    let uuid_at = |at: usize| {
        let mut bytes = [0; 16];
        bytes.copy_from_slice(&record[at..at + 16]);
        Uuid::from_bytes(bytes)
    };
    SessionIdentity {
        id: SessionId::from_uuid(uuid_at(LO_LEN)),
        // Stored from an `AccountId`, so never nil.
        account_id: AccountId::from_checked(uuid_at(LO_LEN + 16)),
        token_hash: *hash,
    }
}

/// The homes a table needs to hold `count` keys at the build load.
fn homes_for(count: usize) -> usize {
    if count == 0 {
        0
    } else {
        count * BUILD_LOAD.1 / BUILD_LOAD.0 + MIN_GROWTH
    }
}

/// Inserts into a table, growing it first when it is full or the key's run
/// has no room. Returns whether the key was added and how many slots the
/// table gained.
fn insert_growing(table: &mut Table, key: &Key, value: &[u8; 32]) -> (bool, usize) {
    let before = table.slots();
    if table.is_full() {
        grow(table);
    }
    let added = loop {
        match table.insert(key, value) {
            Ok(added) => break added,
            Err(NoRoom) => grow(table),
        }
    };
    // Tables only grow.
    (added, table.slots() - before)
}

fn grow(table: &mut Table) {
    let homes = table.homes();
    *table = table.rebuilt(homes + (homes / 8).max(MIN_GROWTH));
}

/// A [`SessionCache`] of [`CacheMode::Compact`]: an exact index of every
/// active session's [`SessionIdentity`] in 47 bytes a slot (about 54 bytes
/// a session), and, optionally, a bounded [`RecordCache`] of whole records.
///
/// Resolving a token needs only the index; the whole record
/// ([`SessionService::session`](crate::SessionService::session)) comes from
/// the record cache when it holds it, else from the store. Choose it over
/// [`MemoryCache`](crate::MemoryCache) (about 200 bytes a session) when the
/// active sessions would not fit in memory with their metadata. See the
/// module source for the layout, the 131 bits a lookup compares and why
/// they make a false match infeasible, the growth and the locks.
pub struct CompactCache {
    segments: Box<[RwLock<Table>]>,
    /// The exact count, changed under the segment's write lock.
    len: AtomicUsize,
    /// Slots allocated over every segment, for [`SessionCache::bytes`].
    slots: AtomicUsize,
    records: Option<Arc<dyn RecordCache>>,
}

impl std::fmt::Debug for CompactCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompactCache")
            .field("len", &self.len())
            .field("records", &self.records.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for CompactCache {
    fn default() -> Self {
        Self::new()
    }
}

impl CompactCache {
    /// An empty index with no record cache: every
    /// [`SessionService::session`](crate::SessionService::session) call
    /// reads the store.
    #[must_use]
    pub fn new() -> Self {
        Self {
            segments: (0..SEGMENTS).map(|_| RwLock::default()).collect(),
            len: AtomicUsize::new(0),
            slots: AtomicUsize::new(0),
            records: None,
        }
    }

    /// Keeps whole records in `records` (bounded; it may evict): those of
    /// sessions created or changed while the service runs, and those read
    /// from the store for [`SessionService::session`](crate::SessionService::session).
    #[must_use]
    pub fn with_records(mut self, records: Arc<dyn RecordCache>) -> Self {
        self.records = Some(records);
        self
    }

    fn segment(&self, key: &Key) -> &RwLock<Table> {
        &self.segments[key.segment]
    }

    fn index_insert(&self, session: &Session) {
        let key = Key::of(&session.token_hash);
        let mut table = self
            .segment(&key)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let (added, grown) = insert_growing(&mut table, &key, &value_of(session));
        if added {
            self.len.fetch_add(1, Ordering::AcqRel);
        }
        if grown != 0 {
            self.slots.fetch_add(grown, Ordering::Relaxed);
        }
    }

    fn index_remove(&self, hash: &TokenHash) {
        let key = Key::of(hash);
        let mut table = self
            .segment(&key)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if table.remove(&key) {
            self.len.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl SessionCache for CompactCache {
    #[inline]
    fn get(&self, hash: &TokenHash) -> Option<SessionIdentity> {
        let key = Key::of(hash);
        let table = self
            .segment(&key)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let at = table.find(&key)?;
        Some(identity(table.record(at), hash))
    }

    fn record(&self, hash: &TokenHash) -> Option<Arc<Session>> {
        let records = self.records.as_ref()?;
        // The record cache may still hold a revoked session's record: only
        // a member's is handed out.
        self.get(hash)?;
        records.get(hash)
    }

    fn keep_record(&self, session: Arc<Session>) {
        if let Some(records) = &self.records {
            records.insert_if_absent(session);
        }
    }

    fn mode(&self) -> CacheMode {
        CacheMode::Compact
    }

    fn insert(&self, session: Arc<Session>) {
        self.index_insert(&session);
        if let Some(records) = &self.records {
            records.insert(session);
        }
    }

    fn remove(&self, hash: &TokenHash) {
        self.index_remove(hash);
        if let Some(records) = &self.records {
            records.remove(hash);
        }
    }

    fn remove_many(&self, hashes: &[TokenHash]) {
        for hash in hashes {
            self.remove(hash);
        }
    }

    fn prepare(&self, sessions: Vec<Arc<Session>>) -> Box<dyn PreparedContents> {
        let mut counts = vec![0usize; SEGMENTS];
        for session in &sessions {
            counts[Key::of(&session.token_hash).segment] += 1;
        }
        let mut prepared = PreparedIndex {
            tables: counts
                .iter()
                .map(|&n| Table::with_homes(homes_for(n)))
                .collect(),
            len: 0,
        };
        drop(counts);
        for session in sessions {
            prepared.insert(session);
        }
        Box::new(prepared)
    }

    fn install(&self, contents: Box<dyn PreparedContents>) {
        let Ok(prepared) = contents.into_any().downcast::<PreparedIndex>() else {
            panic!("CompactCache::install: the contents were prepared by another cache type");
        };
        let PreparedIndex { mut tables, len } = *prepared;
        let slots = tables.iter().map(Table::slots).sum();
        let mut guards: Vec<_> = self
            .segments
            .iter()
            .map(|segment| segment.write().unwrap_or_else(PoisonError::into_inner))
            .collect();
        for (guard, table) in guards.iter_mut().zip(tables.iter_mut()) {
            std::mem::swap(&mut **guard, table);
        }
        self.len.store(len, Ordering::Release);
        self.slots.store(slots, Ordering::Relaxed);
        drop(guards);
        // Records of the old contents may be stale (a session's metadata
        // rewritten while the contents were rebuilt): read them again.
        if let Some(records) = &self.records {
            records.clear();
        }
        // The old tables are freed here, outside the locks.
        drop(tables);
    }

    fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    fn bytes(&self) -> Option<usize> {
        let index = size_of_val(&*self.segments) + self.slots.load(Ordering::Relaxed) * SLOT_BYTES;
        Some(index + self.records.as_ref().map_or(0, |records| records.bytes()))
    }
}

/// [`CompactCache`]'s next contents: its tables, built apart.
struct PreparedIndex {
    tables: Vec<Table>,
    len: usize,
}

impl PreparedContents for PreparedIndex {
    fn insert(&mut self, session: Arc<Session>) {
        let key = Key::of(&session.token_hash);
        let (added, _) = insert_growing(&mut self.tables[key.segment], &key, &value_of(&session));
        self.len += usize::from(added);
    }

    fn remove(&mut self, hash: &TokenHash) {
        let key = Key::of(hash);
        self.len -= usize::from(self.tables[key.segment].remove(&key));
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

#[cfg(test)]
mod tests;
