//! The compact cache: an exact index of every active session's identity in
//! fixed-size records, beside a bounded cache of whole records.
//!
//! # The index
//!
//! 4,096 segments, chosen by the token hash's first 12 bits, each an
//! independent table of ordered linear probing (`segment.rs`). A slot is 48
//! bytes, 6 atomic words: the 8-byte *order word* (hash bits 16 to 79,
//! lowest bit forced to 1 so that 0 marks a free slot), which lookups scan,
//! and a 40-byte record: 7 more hash bytes (bits 80 to 135) and a label
//! byte (for a warm in place, [`Refresh`]), the session id and the account
//! id. No per-session allocation.
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
//! **Memory.** A segment's slots live in groups of doubling size (24 KiB
//! times a power of two) that are allocated zeroed, one at a time, and never
//! move. Growing adds a step of 1/32 to 1/64 of what the segment holds and
//! spreads the keys over every slot the steps reach, so the load stays
//! between about 0.89 and 0.92; the pages of a group no step has reached
//! are never written, so they take no memory. Nothing is freed while the
//! index grows (no holes left in the allocator's heap, no moment with two
//! copies of anything but one segment's keys). About 55 bytes a session.
//! A warm fills the live index in place ([`refresh`](SessionCache::refresh),
//! see [`Refresh`]) page by page, each segment growing as its keys arrive,
//! so a reload holds one index, not two;
//! [`prepare`](SessionCache::prepare) builds apart, sizing each segment for
//! the count it is given (load 0.9) before filling it. An empty segment
//! allocates nothing; its first step is 16 slots (768 bytes) of a 24 KiB
//! group.
//!
//! **Reads and writes.** A lookup takes no lock and writes nothing: it
//! reads the segment under a sequence number and reads again if a write
//! overlapped (`segment.rs` has the protocol and its orderings). Writers
//! take the segment's mutex, so they are serialized per segment.
//! [`install`](SessionCache::install) takes all 4,096 mutexes in segment
//! order, makes every sequence number odd, moves the prepared groups in
//! (copying into groups the live segment already has), then makes every
//! number even: a reader sees the old contents or the new ones, never a
//! mix. Groups are freed only with the cache, since a reader may be reading
//! any of them; so the index keeps the room it grew to even when replaced
//! by fewer sessions. The count and the slot count are atomics changed
//! under the segment's mutex, so with all mutexes held the count is exact.
//! The record cache is only ever touched after the segment's mutex is
//! released: it is not ordered against it.

mod segment;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use uuid::Uuid;

use crate::port::cache::{CacheMode, PreparedContents, RecordCache, SessionCache};
use crate::session::{AccountId, Session, SessionId, SessionIdentity};
use crate::token::TokenHash;
use segment::{NoRoom, Record, SLOT_BYTES, Segment, Writer};

const SEGMENT_BITS: u32 = 12;
const SEGMENTS: usize = 1 << SEGMENT_BITS;
/// Hash bytes kept in a record beyond the segment and the order word.
const LO_LEN: usize = 7;
/// A table grows when one more key would take its load past 23/25 = 0.92.
const MAX_LOAD: (usize, usize) = (23, 25);

/// Where a token hash lives in the index and what identifies it there.
struct Key {
    segment: usize,
    /// Bits 16 to 79 of the hash, the lowest forced to 1.
    hi: u64,
    /// Bits 80 to 135, in a record's first word (its last byte 0).
    lo: u64,
}

impl Key {
    #[inline]
    fn of(hash: &TokenHash) -> Self {
        let bytes = hash.as_bytes();
        let segment = (usize::from(bytes[0]) << 4) | usize::from(bytes[1] >> 4);
        let mut hi = [0; 8];
        hi.copy_from_slice(&bytes[2..10]);
        let mut lo = [0; 8];
        lo[..LO_LEN].copy_from_slice(&bytes[10..10 + LO_LEN]);
        Self {
            segment,
            hi: u64::from_be_bytes(hi) | 1,
            lo: u64::from_le_bytes(lo),
        }
    }
}

/// A session's record in the index: the key's stored bytes, its id, then
/// its account.
fn record_of(key: &Key, id: SessionId, account_id: AccountId) -> Record {
    let words = |uuid: &Uuid| {
        let (high, low) = uuid.as_u64_pair();
        [high, low]
    };
    let [id_high, id_low] = words(id.as_uuid());
    let [account_high, account_low] = words(account_id.as_uuid());
    [key.lo, id_high, id_low, account_high, account_low]
}

fn identity(record: &Record, hash: &TokenHash) -> SessionIdentity {
    SessionIdentity {
        id: SessionId::from_uuid(Uuid::from_u64_pair(record[1], record[2])),
        // Stored from an `AccountId`, so never nil.
        account_id: AccountId::from_checked(Uuid::from_u64_pair(record[3], record[4])),
        token_hash: *hash,
    }
}

/// Inserts into a segment, growing it first when it is full or the key's
/// run has no room. Returns whether the key was added and how many slots
/// the segment gained.
fn insert_growing(writer: &mut Writer<'_>, key: &Key, record: &Record) -> (bool, usize) {
    let mut grown = 0;
    if writer.is_full() {
        grown += writer.grow(0);
    }
    loop {
        match writer.insert(key, record) {
            Ok(added) => return (added, grown),
            Err(NoRoom) => grown += writer.grow(0),
        }
    }
}

/// A [`SessionCache`] of [`CacheMode::Compact`]: an exact index of every
/// active session's [`SessionIdentity`] in 48 bytes a slot (about 53 bytes
/// a session), read without a lock, and, optionally, a bounded
/// [`RecordCache`] of whole records.
///
/// Resolving a token needs only the index; the whole record
/// ([`SessionService::session`](crate::SessionService::session)) comes from
/// the record cache when it holds it, else from the store. Choose it over
/// [`MemoryCache`](crate::MemoryCache) (about 180 bytes a session) when the
/// active sessions would not fit in memory with their metadata. See the
/// module source for the layout, the 131 bits a lookup compares and why
/// they make a false match infeasible, the growth and the read protocol.
pub struct CompactCache {
    index: Arc<Index>,
    records: Option<Arc<dyn RecordCache>>,
}

/// The index, shared with a [`Refresh`] running over it.
struct Index {
    segments: Box<[Segment]>,
    /// The exact count, changed under the segment's write lock.
    len: AtomicUsize,
    /// Slots the segments' steps added, for [`SessionCache::bytes`]: the
    /// slots written, not the groups' address space, whose pages no step
    /// reached take no memory.
    slots: AtomicUsize,
    /// Which refresh runs, and the label of confirmed keys.
    refresh: Mutex<RefreshState>,
}

/// The index's refreshes; see [`CompactCache::refresh`].
#[derive(Debug, Default)]
struct RefreshState {
    /// The label of keys the last completed refresh confirmed (or that a
    /// write stored outside a refresh): 0 or 1.
    confirmed: u8,
    /// The epoch of the refresh running, if one is.
    running: Option<u64>,
    /// The epoch of the latest refresh begun.
    epoch: u64,
    /// A refresh was dropped before its install: keys may carry the label
    /// the next one will use.
    abandoned: bool,
}

impl std::fmt::Debug for CompactCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompactCache")
            .field("len", &SessionCache::len(self))
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
            index: Arc::new(Index {
                segments: (0..SEGMENTS).map(|_| Segment::default()).collect(),
                len: AtomicUsize::new(0),
                slots: AtomicUsize::new(0),
                refresh: Mutex::new(RefreshState::default()),
            }),
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
}

impl Index {
    fn segment(&self, key: &Key) -> &Segment {
        &self.segments[key.segment]
    }

    fn insert(&self, identity: &SessionIdentity) {
        let key = Key::of(&identity.token_hash);
        self.insert_locked(&mut self.segment(&key).lock(), &key, identity);
    }

    /// Inserts into the segment `writer` holds, keeping the counts.
    fn insert_locked(&self, writer: &mut Writer<'_>, key: &Key, identity: &SessionIdentity) {
        let record = record_of(key, identity.id, identity.account_id);
        let (added, grown) = insert_growing(writer, key, &record);
        if added {
            self.len.fetch_add(1, Ordering::AcqRel);
        }
        if grown != 0 {
            self.slots.fetch_add(grown, Ordering::Relaxed);
        }
    }

    fn remove(&self, hash: &TokenHash) {
        let key = Key::of(hash);
        if self.segment(&key).lock().remove(&key) {
            self.len.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn refresh_state(&self) -> MutexGuard<'_, RefreshState> {
        self.refresh.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SessionCache for CompactCache {
    #[inline]
    fn get(&self, hash: &TokenHash) -> Option<SessionIdentity> {
        let key = Key::of(hash);
        let record = self.index.segment(&key).find(&key)?;
        Some(identity(&record, hash))
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
        self.index.insert(&SessionIdentity::from(&*session));
        if let Some(records) = &self.records {
            records.insert(session);
        }
    }

    fn remove(&self, hash: &TokenHash) {
        self.index.remove(hash);
        if let Some(records) = &self.records {
            records.remove(hash);
        }
    }

    fn remove_many(&self, hashes: &[TokenHash]) {
        for hash in hashes {
            self.remove(hash);
        }
    }

    fn prepare_empty(&self) -> Box<dyn PreparedContents> {
        Box::new(PreparedIndex::empty())
    }

    /// Refreshes the live index in place when it holds sessions (a
    /// reload): keys the warm confirms, or writes store, meanwhile are
    /// labelled, and the install drops the others (the module source has
    /// the rules). Of an empty index (the first warm), or if a refresh is
    /// running already, the contents are built apart, as
    /// [`prepare_empty`](SessionCache::prepare_empty)'s.
    fn refresh(&self) -> Box<dyn PreparedContents> {
        let mut state = self.index.refresh_state();
        // Empty (the first warm): nothing to keep answering, so the index is
        // built apart, where keys are appended unordered and each segment
        // sorted once, instead of inserted in order one by one.
        if state.running.is_some() || self.index.len.load(Ordering::Acquire) == 0 {
            drop(state);
            return self.prepare_empty();
        }
        state.epoch += 1;
        let epoch = state.epoch;
        let label = state.confirmed ^ 1;
        for segment in &*self.index.segments {
            segment
                .lock()
                .begin_refresh(epoch, label, state.confirmed, state.abandoned);
        }
        state.abandoned = false;
        state.running = Some(epoch);
        drop(state);
        Box::new(Refresh {
            index: Arc::clone(&self.index),
            epoch,
            label,
            installed: false,
        })
    }

    fn install(&self, contents: Box<dyn PreparedContents>) {
        let contents = match contents.into_any().downcast::<Refresh>() {
            Ok(mut refresh) => {
                if refresh.complete() {
                    self.clear_records();
                }
                return;
            }
            Err(contents) => contents,
        };
        let Ok(prepared) = contents.downcast::<PreparedIndex>() else {
            panic!("CompactCache::install: the contents were prepared by another cache type");
        };
        let mut prepared = *prepared;
        prepared.order();
        let PreparedIndex {
            mut segments, len, ..
        } = prepared;
        // A refresh running is superseded: these contents replace every key.
        let mut refresh = self.index.refresh_state();
        *refresh = RefreshState {
            epoch: refresh.epoch,
            ..RefreshState::default()
        };
        let mut writers: Vec<Writer<'_>> = self.index.segments.iter().map(Segment::lock).collect();
        // Every segment odd before any changes, every one even only after
        // all changed: a reader sees the old contents or the new ones.
        for writer in &writers {
            writer.begin();
        }
        for (writer, from) in writers.iter_mut().zip(segments.iter_mut()) {
            writer.take_from(from);
        }
        for writer in &writers {
            writer.end();
        }
        let slots = writers.iter().map(Writer::capacity).sum();
        self.index.len.store(len, Ordering::Release);
        self.index.slots.store(slots, Ordering::Relaxed);
        drop(writers);
        drop(refresh);
        self.clear_records();
        // Groups copied from are freed here, outside the locks.
        drop(segments);
    }

    fn len(&self) -> usize {
        self.index.len.load(Ordering::Acquire)
    }

    fn bytes(&self) -> Option<usize> {
        let index = size_of_val(&*self.index.segments)
            + self.index.slots.load(Ordering::Relaxed) * SLOT_BYTES;
        Some(index + self.records.as_ref().map_or(0, |records| records.bytes()))
    }
}

impl CompactCache {
    /// After the contents were replaced or refreshed: records of the old
    /// contents may be stale (a session's metadata rewritten meanwhile), so
    /// they are read again.
    fn clear_records(&self) {
        if let Some(records) = &self.records {
            records.clear();
        }
    }
}

/// A warm of [`CompactCache`] in place ([`SessionCache::refresh`]): the live
/// index is its contents, so a warm of a cache that already holds every
/// session costs no second index.
///
/// From its start, every key a write stores gets the refresh's label, and
/// every key removed is remembered. The warm's inserts label the keys they
/// confirm, and skip a key removed since the start: the page holding it may
/// have been read before the removal. [`install`](SessionCache::install)
/// then drops, segment by segment, every key without the label: neither
/// read by the warm nor written since it began, so not active as of the
/// warm. Until then, lookups answer from the live index as before, plus
/// what the warm confirmed.
///
/// Dropped without an install (the warm failed or was cancelled), the index
/// keeps every key: each was active when stored or read and is removed by
/// the revocations that follow. The next refresh first takes this one's
/// label off the keys it gave it, since only a refresh that completes may
/// confirm a key. Labels alternate between two values.
struct Refresh {
    index: Arc<Index>,
    epoch: u64,
    label: u8,
    installed: bool,
}

impl Refresh {
    /// Drops every key the refresh did not confirm and ends it; `false`
    /// when contents installed since it began superseded it.
    fn complete(&mut self) -> bool {
        self.installed = true;
        let mut state = self.index.refresh_state();
        if state.running != Some(self.epoch) {
            return false;
        }
        for segment in &*self.index.segments {
            let mut writer = segment.lock();
            let (dropped, grown) = writer.sweep(self.label);
            writer.end_refresh(self.label);
            if dropped != 0 {
                self.index.len.fetch_sub(dropped, Ordering::AcqRel);
            }
            if grown != 0 {
                self.index.slots.fetch_add(grown, Ordering::Relaxed);
            }
        }
        state.confirmed = self.label;
        state.running = None;
        true
    }
}

impl Drop for Refresh {
    fn drop(&mut self) {
        if self.installed {
            return;
        }
        let mut state = self.index.refresh_state();
        if state.running != Some(self.epoch) {
            return;
        }
        for segment in &*self.index.segments {
            segment.lock().end_refresh(state.confirmed);
        }
        state.running = None;
        state.abandoned = true;
    }
}

impl PreparedContents for Refresh {
    fn insert(&mut self, session: Arc<Session>) {
        self.insert_identity(SessionIdentity::from(&*session));
    }

    fn insert_identity(&mut self, identity: SessionIdentity) {
        let key = Key::of(&identity.token_hash);
        let mut writer = self.index.segment(&key).lock();
        if writer.refresh_may_store(self.epoch, &key) {
            self.index.insert_locked(&mut writer, &key, &identity);
        }
    }

    fn remove(&mut self, hash: &TokenHash) {
        self.index.remove(hash);
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

/// [`CompactCache`]'s next contents: its segments, built apart.
///
/// Built in two phases, since nobody reads them before the install: until
/// the first removal, keys are appended to their segment out of order (each
/// segment adding a step when full, never rebuilding); the first removal,
/// or the install, orders every segment once (a sort and one placement),
/// and later changes go in order. Inserting in order one by one shifts
/// about 50 slots a key at load 0.9 and rebuilds a segment at each step
/// it adds: a warm of 10 million spent most of its time there.
struct PreparedIndex {
    segments: Box<[Segment]>,
    /// Keys held; while unordered, keys appended (a repeated key counted
    /// each time).
    len: usize,
    /// Whether keys are still appended out of order.
    appending: bool,
}

impl PreparedIndex {
    /// No segment allocates before its first key; each grows in steps.
    fn empty() -> Self {
        Self {
            segments: (0..SEGMENTS).map(|_| Segment::default()).collect(),
            len: 0,
            appending: true,
        }
    }

    /// Orders the segments, if keys were appended, and ends the appending.
    fn order(&mut self) {
        if !std::mem::take(&mut self.appending) {
            return;
        }
        self.len = 0;
        for segment in &*self.segments {
            let mut writer = segment.lock();
            writer.order();
            self.len += writer.len();
        }
    }
}

impl PreparedContents for PreparedIndex {
    fn insert(&mut self, session: Arc<Session>) {
        self.insert_identity(SessionIdentity::from(&*session));
    }

    fn insert_identity(&mut self, identity: SessionIdentity) {
        let key = Key::of(&identity.token_hash);
        let record = record_of(&key, identity.id, identity.account_id);
        let mut writer = self.segments[key.segment].lock();
        if self.appending {
            writer.append(&key, &record);
            self.len += 1;
        } else {
            let (added, _) = insert_growing(&mut writer, &key, &record);
            self.len += usize::from(added);
        }
    }

    fn remove(&mut self, hash: &TokenHash) {
        self.order();
        let key = Key::of(hash);
        self.len -= usize::from(self.segments[key.segment].lock().remove(&key));
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

#[cfg(test)]
mod tests;
