//! One segment of the index: ordered linear probing over fixed-size slots,
//! read without a lock under a sequence number, stored in groups that never
//! move.
//!
//! # The table's rule
//!
//! A key's *home* is `hi × homes / 2^64` (multiply-shift: the hash's bits
//! already are uniform, so they place the key with no further hashing), and
//! the table keeps one rule: every key sits at its home or after it, with
//! every slot in between occupied, and the keys of each run of occupied
//! slots in increasing `hi`. Because the home grows with `hi`, the whole
//! table is then in increasing `hi` order. So:
//!
//! - a lookup scans from the home and stops at an empty slot or a larger
//!   `hi`: a miss costs what a hit does (Amble and Knuth's ordered hash
//!   table, 1974), about 1 + 1/(1 − load) / 2 slots, 8 bytes each;
//! - an insert shifts the rest of its run one slot on, and a removal shifts
//!   the displaced keys after it one slot back: no tombstones;
//! - a rebuild at another size is one pass in slot order.
//!
//! Runs never wrap around: the slots have a tail past the last home for the
//! runs that end there, and a run that would leave the tail makes the table
//! grow.
//!
//! # Storage: groups that never move
//!
//! Slots live in *groups*, allocated one at a time and freed only with the
//! segment (or handed over whole by [`Writer::take_from`]): group `g` holds
//! `512 << g` slots (24 KiB times `2^g`), and a slot's group and place in it
//! are found by arithmetic, no search. The table grows in *steps* of
//! 1/32 of a group (`FIRST_STEP << g` slots), 1/32 to 1/64 of what the
//! segment already holds. Growing adds one step and then uses every slot
//! the steps reach (the homes are set so that homes plus tail fill them):
//! the load falls by a step's share per growth and stays between about
//! 0.89 and 0.92. A group is allocated zeroed at its first step, so the
//! pages no step has reached yet are never written and never resident:
//! memory follows the steps, not the groups. Nothing is freed while the
//! segment grows, so the allocator is left no holes, and since a group
//! never moves or goes away, a reader holding a stale picture of the
//! segment reads stale words, never freed memory.
//!
//! Why whole groups: a lookup finds its slot's memory with one load from
//! the segment's header, whose few lines stay in the processor's caches,
//! and then reads the slots. Groups of small chunks (12 KiB each, the
//! design before this one) put a directory of chunk pointers between the
//! two, about 10 MB at 100 million sessions: more than the caches keep
//! beside the lookups' own lines, so most hits paid one more miss, and a
//! hit at 100 million took 1.55 times a plain hash table's time, against
//! 1.21 now (docs/BENCHMARKS.md). The cost of whole groups: an allocator
//! places a large block at an offset of its choice (jemalloc's
//! `cache_oblivious`, a random cache line of the first page), so each
//! group touches up to one page more than its slots fill, about 1 byte a
//! session at 100 million.
//!
//! A slot is 6 atomic words, 48 bytes: its order word (what lookups
//! compare), then its record of 5 words (the 7 stored hash bytes and a
//! label byte, the session id, the account id). Order word and record side by
//! side: a hit finds its record in the line it matched in (or the next,
//! which the scan's loads already asked for), not in a line of its own that
//! only the match can name, one dependent cache miss fewer. A scan reads
//! 48 bytes a slot instead of 8, but in consecutive lines whose loads the
//! processor issues together.
//!
//! # Reads and writes
//!
//! Writers are serialized by the segment's mutex. Each change happens
//! between [`Writer::begin`] (the sequence number turns odd) and
//! [`Writer::end`] (even again, two more than before). A reader loads the
//! sequence number (Acquire), retries while it is odd, reads the words it
//! needs with Relaxed loads, fences (Acquire) and loads the sequence number
//! again: the same value means no change overlapped its reads, so what it
//! read is one consistent state; otherwise it reads again. This is Boehm's
//! sequence lock ("Can seqlocks get along with programming language memory
//! models?", 2012): the writer's odd store is ordered before its data
//! stores by a Release fence, so a reader whose loads saw any of a change's
//! stores sees the odd or a later number on its second load. A reader takes
//! no lock and writes nothing shared, so lookups of one thread overlap their
//! cache misses and lookups of different threads never contend on a line.
//!
//! # Labels: a refresh in place
//!
//! The record's first word keeps the 7 stored hash bytes in its low 56 bits
//! and a *label* in its top byte, which lookups mask off. A refresh (a warm
//! of a cache that already holds sessions) labels every key it confirms, and
//! every key a write adds meanwhile, with the segment's current label, and
//! then drops the keys that still carry the other one
//! ([`Writer::sweep`]). Changing only a label is one store of one word whose
//! other bits do not change, so it needs no change of the sequence number: a
//! reader sees the word before or after, and masks the label either way.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use super::{Key, MAX_LOAD};

/// An empty slot's order word. Real keys have their lowest bit set
/// ([`Key::of`](super::Key::of)), so none is ever 0.
const EMPTY: u64 = 0;

/// A slot's record: the 7 stored hash bytes (and the label byte above
/// them) as one word, then the session id and the account id, two words
/// each.
pub(super) type Record = [u64; RECORD_WORDS];
/// Words in a record.
pub(super) const RECORD_WORDS: usize = 5;
/// Words in a slot: its order word, then its record.
const SLOT_WORDS: usize = 1 + RECORD_WORDS;
/// Bytes a slot takes.
pub(super) const SLOT_BYTES: usize = 8 * SLOT_WORDS;
/// The stored hash bytes of a record's first word; the label is above them.
const LO_MASK: u64 = (1 << 56) - 1;
/// Where a record's label starts in its first word.
const LABEL_SHIFT: u32 = 56;

/// Slots in group 0's steps.
const FIRST_STEP: usize = 16;
/// Steps in each group; group `g`'s add `FIRST_STEP << g` slots each.
const STEPS_PER_GROUP: usize = 32;
/// Groups: 12 hold 2 million slots a segment, 8.6 billion in all (400 GB
/// of slots), far past any memory.
const GROUPS: usize = 12;
/// Slots in group 0.
const GROUP_SLOTS: usize = FIRST_STEP * STEPS_PER_GROUP;

/// A group's slots, allocated zeroed at its first step.
type GroupSlots = Box<[AtomicU64]>;

/// Where slot `at` is: its group, its index in the group, and the group's
/// slot count.
#[inline]
fn locate(at: usize) -> (usize, usize, usize) {
    let group = (at / GROUP_SLOTS + 1).ilog2() as usize;
    (group, at - group_start(group), GROUP_SLOTS << group)
}

/// The first slot of `group`.
#[inline]
fn group_start(group: usize) -> usize {
    GROUP_SLOTS * ((1 << group) - 1)
}

/// The slots past the last home, for runs that end there.
fn tail(homes: usize) -> usize {
    8 + homes / 256
}

/// The most homes `capacity` slots hold with their tail.
fn homes_within(capacity: usize) -> usize {
    if capacity <= tail(0) {
        return 0;
    }
    let mut homes = (capacity - tail(0)) * 256 / 257;
    while homes + tail(homes) > capacity {
        homes -= 1;
    }
    homes
}

#[inline]
fn home(hi: u64, homes: usize) -> usize {
    // The product is below homes × 2^64, so the shifted value is below
    // `homes` and fits.
    ((u128::from(hi) * homes as u128) >> 64) as usize
}

thread_local! {
    /// A rebuild's keys, copied aside. Kept per thread, so that growing
    /// frees nothing: a buffer allocated and freed at every growth (1.2 MB
    /// at 100 million sessions) can leave holes in the allocator's heap
    /// when small long-lived allocations (the record cache's) land in it
    /// between growths. It holds the largest segment a thread rebuilt,
    /// rounded up to a power of two.
    static REBUILD: RefCell<Vec<(u64, Record)>> = const { RefCell::new(Vec::new()) };
}

/// No room for the key: grow the table and insert again.
#[derive(Debug)]
pub(super) struct NoRoom;

/// A read that overlapped a change: read again.
struct Torn;

/// What only writers touch, under the segment's mutex.
#[derive(Debug, Default)]
struct State {
    len: usize,
    /// Slots in the steps added: the slots written so far.
    capacity: usize,
    /// The label every write gives the keys it stores.
    label: u8,
    /// The refresh running, if any.
    refresh: Option<Refreshing>,
}

/// A refresh running over a segment.
#[derive(Debug)]
struct Refreshing {
    /// Which refresh of the cache.
    epoch: u64,
    /// The keys removed since it began, which it must not store again: its
    /// page may have been read before their removal.
    removed: HashSet<(u64, u64)>,
}

/// A record's label.
#[inline]
fn label_of(first: u64) -> u8 {
    (first >> LABEL_SHIFT) as u8
}

/// A record's first word with `label`.
#[inline]
fn labelled(first: u64, label: u8) -> u64 {
    (first & LO_MASK) | (u64::from(label) << LABEL_SHIFT)
}

/// One segment: see the module documentation.
#[derive(Default)]
#[repr(align(64))]
pub(super) struct Segment {
    /// Odd while a writer changes the segment.
    seq: AtomicU64,
    /// Homes of the table; slots in use are homes plus [`tail`]. 0 when the
    /// segment holds nothing and has never held anything.
    homes: AtomicUsize,
    groups: [OnceLock<GroupSlots>; GROUPS],
    state: Mutex<State>,
}

impl Segment {
    /// The group holding slot `at`, with `at`'s index in it and the group's
    /// slot count; `None` if it is not allocated (only in a torn read).
    #[inline]
    fn group(&self, at: usize) -> Option<(&[AtomicU64], usize, usize)> {
        let (group, index, slots) = locate(at);
        Some((self.groups.get(group)?.get()?, index, slots))
    }

    /// The record of `key`, if the segment holds it: the lock-free read.
    #[inline]
    pub(super) fn find(&self, key: &Key) -> Option<Record> {
        loop {
            let before = self.seq.load(Ordering::Acquire);
            if before & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let found = self.scan(key);
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == before
                && let Ok(found) = found
            {
                return found;
            }
        }
    }

    /// One attempt at [`find`](Self::find): its answer is meaningful only if
    /// no change overlapped it.
    #[inline]
    fn scan(&self, key: &Key) -> Result<Option<Record>, Torn> {
        let homes = self.homes.load(Ordering::Relaxed);
        if homes == 0 {
            return Ok(None);
        }
        let slots = homes + tail(homes);
        let mut at = home(key.hi, homes);
        while at < slots {
            let (group, start, n) = self.group(at).ok_or(Torn)?;
            let end = n.min(start + slots - at);
            for slot in group[start * SLOT_WORDS..end * SLOT_WORDS].chunks_exact(SLOT_WORDS) {
                let here = slot[0].load(Ordering::Relaxed);
                if here == key.hi {
                    if slot[1].load(Ordering::Relaxed) & LO_MASK == key.lo {
                        return Ok(Some(std::array::from_fn(|word| {
                            slot[1 + word].load(Ordering::Relaxed)
                        })));
                    }
                } else if here > key.hi || here == EMPTY {
                    return Ok(None);
                }
            }
            at += n - start;
        }
        Ok(None)
    }

    /// The segment's writer: waits for other writers.
    pub(super) fn lock(&self) -> Writer<'_> {
        Writer {
            segment: self,
            state: self.state.lock().unwrap_or_else(PoisonError::into_inner),
            group: Cell::new((0, 0, &[])),
        }
    }
}

/// A segment's only writer, holding its mutex.
pub(super) struct Writer<'a> {
    segment: &'a Segment,
    state: MutexGuard<'a, State>,
    /// The group last used, with its first slot and the slot past it: the
    /// writer's scans and shifts walk consecutive slots, so finding each
    /// one's group by [`locate`] would cost more than the move itself.
    /// Groups never move, so a group once found stays valid.
    group: Cell<(usize, usize, &'a [AtomicU64])>,
}

impl<'a> Writer<'a> {
    /// Readers will read again until [`end`](Self::end).
    pub(super) fn begin(&self) {
        let seq = self.segment.seq.load(Ordering::Relaxed);
        debug_assert!(seq & 1 == 0, "a change inside a change");
        self.segment.seq.store(seq + 1, Ordering::Relaxed);
        fence(Ordering::Release);
    }

    /// The change is complete: readers may use what they read from here on.
    pub(super) fn end(&self) {
        let seq = self.segment.seq.load(Ordering::Relaxed);
        self.segment.seq.store(seq + 1, Ordering::Release);
    }

    /// Keys held (appended, before [`order`](Self::order)).
    pub(super) fn len(&self) -> usize {
        self.state.len
    }

    /// Slots the steps added: what the segment has written, whatever its
    /// groups' size.
    pub(super) fn capacity(&self) -> usize {
        self.state.capacity
    }

    fn homes(&self) -> usize {
        self.segment.homes.load(Ordering::Relaxed)
    }

    fn slots(&self) -> usize {
        let homes = self.homes();
        if homes == 0 { 0 } else { homes + tail(homes) }
    }

    #[inline]
    fn words(&self, at: usize) -> (&'a AtomicU64, &'a [AtomicU64]) {
        let (mut first, mut end, mut group) = self.group.get();
        if at < first || at >= end {
            let Some((found, index, slots)) = self.segment.group(at) else {
                panic!("slot {at} is below the homes and tail, so its group is allocated");
            };
            (first, end, group) = (at - index, at - index + slots, found);
            self.group.set((first, end, group));
        }
        let (hi, record) = group[(at - first) * SLOT_WORDS..][..SLOT_WORDS].split_at(1);
        (&hi[0], record)
    }

    fn hi(&self, at: usize) -> u64 {
        self.words(at).0.load(Ordering::Relaxed)
    }

    fn lo(&self, at: usize) -> u64 {
        self.words(at).1[0].load(Ordering::Relaxed) & LO_MASK
    }

    fn read(&self, at: usize) -> (u64, Record) {
        let (hi, record) = self.words(at);
        (
            hi.load(Ordering::Relaxed),
            std::array::from_fn(|word| record[word].load(Ordering::Relaxed)),
        )
    }

    fn write(&self, at: usize, hi: u64, record: &Record) {
        let (hi_word, words) = self.words(at);
        hi_word.store(hi, Ordering::Relaxed);
        for (word, value) in words.iter().zip(record) {
            word.store(*value, Ordering::Relaxed);
        }
    }

    /// The slot holding `key`, if any.
    fn position(&self, key: &Key) -> Option<usize> {
        let slots = self.slots();
        if slots == 0 {
            return None;
        }
        let mut at = home(key.hi, self.homes());
        while at < slots {
            let here = self.hi(at);
            if here == key.hi {
                if self.lo(at) == key.lo {
                    return Some(at);
                }
            } else if here > key.hi || here == EMPTY {
                return None;
            }
            at += 1;
        }
        None
    }

    /// Whether one more key would take the load past its bound.
    pub(super) fn is_full(&self) -> bool {
        (self.state.len + 1) * MAX_LOAD.1 > self.homes() * MAX_LOAD.0
    }

    /// Adds `key` with `record` (whose first word is `key.lo`), or replaces
    /// the record of the same key. `Ok(true)` when added.
    ///
    /// # Errors
    ///
    /// [`NoRoom`] when the run it joins would leave the slots; nothing is
    /// changed.
    pub(super) fn insert(&mut self, key: &Key, record: &Record) -> Result<bool, NoRoom> {
        let slots = self.slots();
        if slots == 0 {
            return Err(NoRoom);
        }
        let mut record = *record;
        record[0] = labelled(record[0], self.state.label);
        let record = &record;
        let mut at = home(key.hi, self.homes());
        loop {
            if at >= slots {
                return Err(NoRoom);
            }
            let here = self.hi(at);
            if here == EMPTY || here > key.hi {
                break;
            }
            if here == key.hi && self.lo(at) == key.lo {
                let (_, words) = self.words(at);
                let same_identity = words[1..]
                    .iter()
                    .zip(&record[1..])
                    .all(|(word, value)| word.load(Ordering::Relaxed) == *value);
                if same_identity {
                    // Only the label can differ: one word whose other bits
                    // stay, which readers mask, so no change to announce.
                    words[0].store(record[0], Ordering::Relaxed);
                } else {
                    self.begin();
                    self.write(at, key.hi, record);
                    self.end();
                }
                return Ok(false);
            }
            at += 1;
        }
        // The rest of the run moves one slot on, into the first free one.
        let mut free = at;
        while self.hi(free) != EMPTY {
            free += 1;
            if free >= slots {
                return Err(NoRoom);
            }
        }
        self.begin();
        for to in (at + 1..=free).rev() {
            let (hi, moved) = self.read(to - 1);
            self.write(to, hi, &moved);
        }
        self.write(at, key.hi, record);
        self.end();
        self.state.len += 1;
        Ok(true)
    }

    /// Drops `key`; `true` when it was there. While a refresh runs, the key
    /// is remembered whether it was there or not, so the refresh does not
    /// store it again.
    pub(super) fn remove(&mut self, key: &Key) -> bool {
        if let Some(refresh) = self.state.refresh.as_mut() {
            refresh.removed.insert((key.hi, key.lo));
        }
        let Some(at) = self.position(key) else {
            return false;
        };
        let slots = self.slots();
        let homes = self.homes();
        // Every key after it that is not at its home moves one slot back.
        let mut end = at + 1;
        while end < slots {
            let hi = self.hi(end);
            if hi == EMPTY || home(hi, homes) == end {
                break;
            }
            end += 1;
        }
        self.begin();
        for to in at..end - 1 {
            let (hi, moved) = self.read(to + 1);
            self.write(to, hi, &moved);
        }
        self.write(end - 1, EMPTY, &[0; RECORD_WORDS]);
        self.end();
        self.state.len -= 1;
        true
    }

    /// Starts refresh `epoch`: writes label their keys `label` from here on,
    /// and removals are remembered. If an earlier refresh was abandoned,
    /// keys it labelled `label` are first labelled `confirmed` again: only
    /// this refresh may confirm a key.
    pub(super) fn begin_refresh(&mut self, epoch: u64, label: u8, confirmed: u8, relabel: bool) {
        if relabel {
            self.relabel(label, confirmed);
        }
        self.state.label = label;
        self.state.refresh = Some(Refreshing {
            epoch,
            removed: HashSet::new(),
        });
    }

    /// Whether refresh `epoch` may store `key`: it is still the refresh
    /// running here, and the key was not removed since it began.
    pub(super) fn refresh_may_store(&self, epoch: u64, key: &Key) -> bool {
        self.state.refresh.as_ref().is_some_and(|refresh| {
            refresh.epoch == epoch && !refresh.removed.contains(&(key.hi, key.lo))
        })
    }

    /// Ends the refresh running here, if any; writes label their keys
    /// `label` from here on.
    pub(super) fn end_refresh(&mut self, label: u8) {
        self.state.label = label;
        self.state.refresh = None;
    }

    /// Gives every key labelled `from` the label `to`.
    fn relabel(&self, from: u8, to: u8) {
        for at in 0..self.slots() {
            let (hi, words) = self.words(at);
            if hi.load(Ordering::Relaxed) == EMPTY {
                continue;
            }
            let first = words[0].load(Ordering::Relaxed);
            if label_of(first) == from {
                words[0].store(labelled(first, to), Ordering::Relaxed);
            }
        }
    }

    /// Drops every key not labelled `keep`, in one pass that places the
    /// others again. Returns the keys dropped and the slots added (only if
    /// a run would not fit, as in [`grow`](Self::grow)).
    pub(super) fn sweep(&mut self, keep: u8) -> (usize, usize) {
        let before = self.state.capacity;
        let slots = self.slots();
        REBUILD.with_borrow_mut(|keys| {
            keys.clear();
            for at in 0..slots {
                let (hi, record) = self.read(at);
                if hi != EMPTY && label_of(record[0]) == keep {
                    keys.push((hi, record));
                }
            }
            let dropped = self.state.len - keys.len();
            if dropped == 0 {
                return (0, 0);
            }
            self.place_all(keys);
            (dropped, self.state.capacity - before)
        })
    }

    /// Stores `key` after the keys already held, out of order, adding a
    /// step when every slot is taken: for a segment built apart, which
    /// nobody reads, and nothing but this writes, until
    /// [`order`](Self::order). An append touches one slot, where an insert
    /// in order shifts the rest of its run (about 50 slots at load 0.9).
    pub(super) fn append(&mut self, key: &Key, record: &Record) {
        debug_assert_eq!(self.homes(), 0, "appends only to a segment not yet ordered");
        if self.state.len == self.state.capacity {
            self.add_step();
        }
        let mut record = *record;
        record[0] = labelled(record[0], self.state.label);
        self.write(self.state.len, key.hi, &record);
        self.state.len += 1;
    }

    /// Orders the keys [`append`](Self::append) stored: one sort, then one
    /// placement over homes that keep the load within its bound (the last
    /// of a repeated key kept). Returns the slots added.
    pub(super) fn order(&mut self) -> usize {
        let before = self.state.capacity;
        let appended = self.state.len;
        if appended == 0 {
            return 0;
        }
        REBUILD.with_borrow_mut(|keys| {
            keys.clear();
            keys.reserve(appended.next_power_of_two());
            for at in 0..appended {
                keys.push(self.read(at));
            }
            // Stable: equal keys stay in the order they came, and the last
            // of each is kept.
            keys.sort_by_key(|(hi, record)| (*hi, record[0] & LO_MASK));
            keys.reverse();
            keys.dedup_by_key(|(hi, record)| (*hi, record[0] & LO_MASK));
            keys.reverse();
            while keys.len() * MAX_LOAD.1 > homes_within(self.state.capacity) * MAX_LOAD.0 {
                self.add_step();
            }
            self.place_all(keys);
        });
        self.state.capacity - before
    }

    /// Adds the next step, allocating its group's slots at the group's
    /// first step: zeroed, so pages no step has reached stay untouched.
    fn add_step(&mut self) {
        let (group, ..) = locate(self.state.capacity);
        self.segment.groups[group]
            .get_or_init(|| bytemuck::zeroed_slice_box((GROUP_SLOTS << group) * SLOT_WORDS));
        self.state.capacity += FIRST_STEP << group;
    }

    /// Adds steps until the homes can pass both their count and
    /// `min_homes` (a step is enough unless `min_homes` asks for more),
    /// and places every key again over homes that fill the steps. Returns
    /// the slots added.
    pub(super) fn grow(&mut self, min_homes: usize) -> usize {
        let before = self.state.capacity;
        let target = min_homes.max(self.homes() + 1);
        while homes_within(self.state.capacity) < target {
            self.add_step();
        }
        let slots = self.slots();
        REBUILD.with_borrow_mut(|keys| {
            keys.clear();
            // Powers of two: the buffer is reallocated a few times in the
            // thread's life, not at every growth of a larger segment.
            keys.reserve(self.state.len.next_power_of_two());
            for at in 0..slots {
                let (hi, record) = self.read(at);
                if hi != EMPTY {
                    keys.push((hi, record));
                }
            }
            self.place_all(keys);
        });
        self.state.capacity - before
    }

    /// Places `keys` (sorted, as [`place_in_order`](Self::place_in_order)
    /// takes them) as the segment's only keys, in one change. Placing can
    /// only fail for a run far longer than the load makes likely; then one
    /// more step and again.
    fn place_all(&mut self, keys: &[(u64, Record)]) {
        self.begin();
        while !self.place_in_order(keys) {
            self.add_step();
        }
        self.end();
        self.state.len = keys.len();
    }

    /// Clears the slots and places `keys`, in increasing `hi`, each at its
    /// home or just after the one before, over homes that fill the steps:
    /// the table's rule holds by construction. `false` if a key would land
    /// past the slots (then the slots are left cleared). Inside a change.
    fn place_in_order(&self, keys: &[(u64, Record)]) -> bool {
        let homes = homes_within(self.state.capacity);
        let slots = homes + tail(homes);
        for at in 0..slots {
            self.write(at, EMPTY, &[0; RECORD_WORDS]);
        }
        let mut next = 0;
        for (hi, record) in keys {
            let to = home(*hi, homes).max(next);
            if to >= slots {
                for at in 0..slots {
                    self.write(at, EMPTY, &[0; RECORD_WORDS]);
                }
                return false;
            }
            self.write(to, *hi, record);
            next = to + 1;
        }
        self.segment.homes.store(homes, Ordering::Relaxed);
        true
    }

    /// Makes this segment hold exactly what `from` holds, inside a change
    /// the caller began: groups this one lacks are taken from `from`
    /// whole, the others copied into. Returns how many keys `from` held.
    pub(super) fn take_from(&mut self, from: &mut Segment) -> usize {
        let from_state = from.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        let (len, from_capacity, from_label) =
            (from_state.len, from_state.capacity, from_state.label);
        let from_homes = *from.homes.get_mut();
        let capacity = from_capacity.max(self.state.capacity);
        for (group, (ours, theirs)) in self.segment.groups.iter().zip(&mut from.groups).enumerate()
        {
            let start = group_start(group);
            if start >= capacity {
                break;
            }
            let theirs = theirs.take();
            let Some(ours) = ours.get() else {
                let Some(theirs) = theirs else {
                    unreachable!("group {group} is below {capacity} slots, so one side has it");
                };
                assert!(ours.set(theirs).is_ok(), "group {group} is free");
                continue;
            };
            // Only the slots either side has written: the rest are still
            // zero, and untouched. `from` has written none of this group
            // when it lacks it.
            let used = (capacity - start).min(GROUP_SLOTS << group) * SLOT_WORDS;
            let given = from_capacity.saturating_sub(start) * SLOT_WORDS;
            let (copied, cleared) = ours[..used].split_at(given.min(used));
            if let Some(theirs) = &theirs {
                for (word, value) in copied.iter().zip(theirs.iter()) {
                    word.store(value.load(Ordering::Relaxed), Ordering::Relaxed);
                }
            }
            for word in cleared {
                word.store(EMPTY, Ordering::Relaxed);
            }
        }
        self.state.capacity = capacity;
        self.segment.homes.store(from_homes, Ordering::Relaxed);
        self.state.len = len;
        // Every key is `from`'s now, with its label; a refresh running here
        // is superseded.
        self.state.label = from_label;
        self.state.refresh = None;
        len
    }

    /// Checks the table's rule; for tests.
    #[cfg(test)]
    pub(super) fn check(&self) {
        let mut count = 0;
        let mut previous = 0;
        let homes = self.homes();
        let slots = self.slots();
        assert!(slots <= self.state.capacity);
        for at in 0..slots {
            let hi = self.hi(at);
            if hi == EMPTY {
                continue;
            }
            count += 1;
            let home = home(hi, homes);
            assert!(home <= at, "slot {at} before its home {home}");
            assert!(
                (home..at).all(|h| self.hi(h) != EMPTY),
                "a gap between slot {at} and its home {home}"
            );
            assert!(hi >= previous, "slot {at} out of order");
            previous = hi;
        }
        assert_eq!(count, self.state.len);
    }

    /// Homes of the table; for tests.
    #[cfg(test)]
    pub(super) fn table_homes(&self) -> usize {
        self.homes()
    }
}

#[cfg(test)]
mod layout {
    use super::{GROUP_SLOTS, GROUPS, locate};

    #[test]
    fn consecutive_slots_fill_each_group_then_the_next() {
        let mut expected = (0, 0);
        let end = GROUP_SLOTS * ((1 << 8) - 1);
        for at in 0..end {
            let (group, index, slots) = locate(at);
            assert_eq!((group, index), expected, "slot {at}");
            assert_eq!(slots, GROUP_SLOTS << group);
            expected.1 += 1;
            if expected.1 == slots {
                expected = (group + 1, 0);
            }
        }
        assert_eq!(expected, (8, 0));
        assert!(expected.0 < GROUPS);
    }
}
