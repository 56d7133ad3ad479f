//! One segment's table: ordered linear probing over fixed-size records.
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
//! Runs never wrap around: the arrays have a tail past the last home for
//! the runs that end there, and a run that would leave the tail makes the
//! table grow.

use super::{Key, LO_LEN, Record};

/// An empty slot's `hi`. Real keys have their lowest bit set
/// ([`Key::of`](super::Key::of)), so none is ever 0.
const EMPTY: u64 = 0;

/// No room for the key: grow the table and insert again.
#[derive(Debug)]
pub(super) struct NoRoom;

#[derive(Default)]
pub(super) struct Table {
    /// Each slot's key order word, [`EMPTY`] if free: what lookups scan,
    /// dense so that a scan reads eight slots a cache line.
    his: Box<[u64]>,
    /// Each slot's record: the rest of its key and its value.
    records: Box<[Record]>,
    /// How many slots a home may be: the arrays hold this plus the tail.
    homes: usize,
    len: usize,
}

/// The slots past the last home, for runs that end there.
fn tail(homes: usize) -> usize {
    8 + homes / 256
}

impl Table {
    /// A table of `homes` homes and its tail; no allocation for 0.
    pub(super) fn with_homes(homes: usize) -> Self {
        let slots = if homes == 0 { 0 } else { homes + tail(homes) };
        Self {
            his: vec![EMPTY; slots].into_boxed_slice(),
            records: vec![[0; super::RECORD_LEN]; slots].into_boxed_slice(),
            homes,
            len: 0,
        }
    }

    #[cfg(test)]
    pub(super) const fn len(&self) -> usize {
        self.len
    }

    pub(super) fn homes(&self) -> usize {
        self.homes
    }

    /// The slots allocated, tail included.
    pub(super) fn slots(&self) -> usize {
        self.his.len()
    }

    #[inline]
    fn home(&self, hi: u64) -> usize {
        // The product is below homes × 2^64, so the shifted value is below
        // `homes` and fits.
        ((u128::from(hi) * self.homes as u128) >> 64) as usize
    }

    #[inline]
    fn lo_at(&self, at: usize) -> &[u8] {
        &self.records[at][..LO_LEN]
    }

    /// The slot holding `key`, if any.
    #[inline]
    pub(super) fn find(&self, key: &Key) -> Option<usize> {
        let mut at = self.home(key.hi);
        loop {
            let here = *self.his.get(at)?;
            if here == key.hi {
                if self.lo_at(at) == key.lo {
                    return Some(at);
                }
            } else if here > key.hi || here == EMPTY {
                return None;
            }
            at += 1;
        }
    }

    pub(super) fn record(&self, at: usize) -> &Record {
        &self.records[at]
    }

    /// Whether one more key would take the load past its bound.
    pub(super) fn is_full(&self) -> bool {
        (self.len + 1) * super::MAX_LOAD.1 > self.homes * super::MAX_LOAD.0
    }

    /// Adds `key` with `value`, or replaces the value of the same key.
    /// `Ok(true)` when added.
    ///
    /// # Errors
    ///
    /// [`NoRoom`] when the run it joins would leave the arrays; nothing is
    /// changed.
    pub(super) fn insert(&mut self, key: &Key, value: &[u8; 32]) -> Result<bool, NoRoom> {
        let mut at = self.home(key.hi);
        loop {
            let Some(&here) = self.his.get(at) else {
                return Err(NoRoom);
            };
            if here == EMPTY || here > key.hi {
                break;
            }
            if here == key.hi && self.lo_at(at) == key.lo {
                self.records[at][LO_LEN..].copy_from_slice(value);
                return Ok(false);
            }
            at += 1;
        }
        if self.his[at] != EMPTY {
            // The rest of the run moves one slot on, into the first free one.
            let free = self.his[at..]
                .iter()
                .position(|&hi| hi == EMPTY)
                .ok_or(NoRoom)?;
            let end = at + free;
            self.his.copy_within(at..end, at + 1);
            self.records.copy_within(at..end, at + 1);
        }
        self.his[at] = key.hi;
        self.records[at] = super::record(key, value);
        self.len += 1;
        Ok(true)
    }

    /// Drops `key`; `true` when it was there.
    pub(super) fn remove(&mut self, key: &Key) -> bool {
        let Some(at) = self.find(key) else {
            return false;
        };
        // Every key after it that is not at its home moves one slot back.
        let mut end = at + 1;
        while end < self.slots() {
            let hi = self.his[end];
            if hi == EMPTY || self.home(hi) == end {
                break;
            }
            end += 1;
        }
        self.his.copy_within(at + 1..end, at);
        self.records.copy_within(at + 1..end, at);
        self.his[end - 1] = EMPTY;
        self.len -= 1;
        true
    }

    /// The same keys in a table of at least `homes` homes (more only if a
    /// run would leave the new tail, which takes a run far longer than the
    /// load makes likely).
    pub(super) fn rebuilt(&self, mut homes: usize) -> Self {
        loop {
            let mut next = Self::with_homes(homes);
            if next.place_in_order(self) {
                return next;
            }
            homes += homes / 8 + 1;
        }
    }

    /// Places `from`'s keys, which are in increasing `hi` in slot order,
    /// each at its home or just after the one before: the table's rule
    /// holds by construction. `false` if a key would land past the arrays.
    fn place_in_order(&mut self, from: &Self) -> bool {
        let mut next = 0;
        for (at, &hi) in from.his.iter().enumerate() {
            if hi == EMPTY {
                continue;
            }
            let to = self.home(hi).max(next);
            if to >= self.slots() {
                return false;
            }
            self.his[to] = hi;
            self.records[to] = from.records[at];
            next = to + 1;
        }
        self.len = from.len;
        true
    }

    /// Checks the table's rule; for tests.
    #[cfg(test)]
    pub(super) fn check(&self) {
        let mut count = 0;
        let mut previous = 0;
        for (at, &hi) in self.his.iter().enumerate() {
            if hi == EMPTY {
                continue;
            }
            count += 1;
            let home = self.home(hi);
            assert!(home <= at, "slot {at} before its home {home}");
            assert!(
                self.his[home..at].iter().all(|&h| h != EMPTY),
                "a gap between slot {at} and its home {home}"
            );
            assert!(hi >= previous, "slot {at} out of order");
            previous = hi;
        }
        assert_eq!(count, self.len);
    }
}
