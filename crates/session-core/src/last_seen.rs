//! Last-seen activity: when each session was last resolved, to the minute,
//! marked on the resolve path without a lock, an await, an allocation or a
//! syscall, and written to the store in batches by a background flush.
//!
//! The resolve path reads the current minute from an atomic (the flush
//! refreshes it from the [`Clock`](crate::port::clock::Clock), so no clock is read per
//! resolve) and checks one slot of a fixed table of atomics, indexed by bits
//! of the session id, that remembers "this session was marked in minute M".
//! Only a session not yet marked this minute pushes `(id, minute)` into a
//! bounded queue (`std::sync::mpsc::sync_channel`, a preallocated lock-free
//! array); a full queue drops the mark and counts it. Two sessions sharing a
//! slot only cost an extra mark each, never a lost one, unless they also
//! share the 32-bit tag kept beside the minute (2^-32 of such pairs), which
//! costs one minute's mark.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::sync::{Mutex, PoisonError};

use time::OffsetDateTime;

use crate::config::LastSeenSettings;
use crate::port::store::{LAST_SEEN_MAX_BATCH as MAX_BATCH, SeenAt};
use crate::session::SessionId;
use crate::status::LastSeenStats;

/// Slots in the table of marks made this minute: as many as the queue holds
/// marks, rounded up to a power of two, within these bounds (32 KiB to 8 MiB).
const MIN_SLOTS: usize = 1 << 12;
const MAX_SLOTS: usize = 1 << 20;

/// The marks of one service: the resolve-side table and queue, and the
/// flush-side batch kept after a failure.
pub(crate) struct LastSeenMarks {
    /// Minutes since 1970-01-01T00:00Z, as the clock last told the flush.
    minute: AtomicU32,
    /// Per slot: the minute (high 32 bits) and the tag of the session
    /// (low 32 bits) marked last.
    slots: Box<[AtomicU64]>,
    /// How far the id's mixed bits shift right to index `slots`.
    slot_shift: u32,
    queue: SyncSender<(SessionId, u32)>,
    /// The flush side: the receiving end and what a failed flush kept.
    flush: Mutex<FlushState>,
    capacity: usize,
    flushed: AtomicU64,
    dropped: AtomicU64,
    flush_failures: AtomicU64,
}

struct FlushState {
    received: Receiver<(SessionId, u32)>,
    /// Sorted by id, one entry per session: a batch whose store call failed.
    kept: Vec<(SessionId, u32)>,
}

impl LastSeenMarks {
    pub(crate) fn new(settings: LastSeenSettings, now: OffsetDateTime) -> Self {
        let capacity = settings.queue_capacity.max(1);
        let (queue, received) = sync_channel(capacity);
        let slots = capacity.next_power_of_two().clamp(MIN_SLOTS, MAX_SLOTS);
        Self {
            minute: AtomicU32::new(minute_of(now)),
            slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            slot_shift: 64 - slots.trailing_zeros(),
            queue,
            flush: Mutex::new(FlushState {
                received,
                kept: Vec::new(),
            }),
            capacity,
            flushed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            flush_failures: AtomicU64::new(0),
        }
    }

    /// Marks `id` seen in the current minute: two atomic loads when it was
    /// already marked this minute; a store and a queue push otherwise.
    #[inline]
    pub(crate) fn mark(&self, id: SessionId) {
        let minute = self.minute.load(Ordering::Relaxed);
        let mixed = mix(id);
        // The top bits index the table; the low 32 bits are the tag.
        let slot = &self.slots[(mixed >> self.slot_shift) as usize];
        let want = (u64::from(minute) << 32) | (mixed & 0xffff_ffff);
        if slot.load(Ordering::Relaxed) == want {
            return;
        }
        slot.store(want, Ordering::Relaxed);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.queue.try_send((id, minute))
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sets the current minute from `now`. Never moves it back, so a clock
    /// stepped backwards cannot make marks older than ones already made.
    pub(crate) fn set_now(&self, now: OffsetDateTime) {
        self.minute.fetch_max(minute_of(now), Ordering::Relaxed);
    }

    /// Takes the next batch to write: what a failed flush kept, then queued
    /// marks, merged per session (the latest minute wins), sorted by id, at
    /// most [`MAX_BATCH`]. Empty when nothing waits.
    pub(crate) fn take_batch(&self) -> Vec<(SessionId, u32)> {
        let mut state = self.flush.lock().unwrap_or_else(PoisonError::into_inner);
        let mut batch = std::mem::take(&mut state.kept);
        while batch.len() < MAX_BATCH {
            match state.received.try_recv() {
                Ok(mark) => batch.push(mark),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        merge(&mut batch);
        batch
    }

    /// A flush of `batch` failed: keep it for the next flush, merged with
    /// anything kept since, dropping (and counting) what exceeds the queue's
    /// capacity, so memory stays bounded however long the store is down.
    pub(crate) fn keep(&self, mut batch: Vec<(SessionId, u32)>) {
        self.flush_failures.fetch_add(1, Ordering::Relaxed);
        let mut state = self.flush.lock().unwrap_or_else(PoisonError::into_inner);
        batch.append(&mut state.kept);
        merge(&mut batch);
        let limit = self.capacity.min(MAX_BATCH);
        if batch.len() > limit {
            self.dropped
                .fetch_add((batch.len() - limit) as u64, Ordering::Relaxed);
            batch.truncate(limit);
        }
        state.kept = batch;
    }

    pub(crate) fn flushed(&self, marks: usize) {
        self.flushed.fetch_add(marks as u64, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> LastSeenStats {
        LastSeenStats {
            flushed: self.flushed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            flush_failures: self.flush_failures.load(Ordering::Relaxed),
        }
    }
}

/// Sorts by id and keeps one mark per session, the latest.
fn merge(batch: &mut Vec<(SessionId, u32)>) {
    batch.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    batch.dedup_by_key(|mark| mark.0);
}

/// The marks of a batch as the store takes them: the start of each minute.
pub(crate) fn to_seen(batch: &[(SessionId, u32)]) -> Vec<SeenAt> {
    batch
        .iter()
        .map(|&(id, minute)| SeenAt {
            id,
            at: OffsetDateTime::UNIX_EPOCH + time::Duration::minutes(i64::from(minute)),
        })
        .collect()
}

/// Whole minutes since the Unix epoch (0 before it; saturates in 10136).
fn minute_of(at: OffsetDateTime) -> u32 {
    u32::try_from(at.unix_timestamp().div_euclid(60).max(0)).unwrap_or(u32::MAX)
}

/// Spreads the id's bits (a multiply-xorshift), so ids that differ only in
/// their timestamp or only in their random bits still land apart.
fn mix(id: SessionId) -> u64 {
    let bits = id.as_uuid().as_u128();
    // Truncating casts on purpose: the two halves are folded together.
    let folded = (bits as u64) ^ ((bits >> 64) as u64);
    let mixed = folded.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    mixed ^ (mixed >> 29)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_minute(minute: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::minutes(minute)
    }

    #[test]
    fn a_session_is_queued_once_per_minute() {
        let marks = LastSeenMarks::new(LastSeenSettings::default(), at_minute(100));
        let id = SessionId::new();
        for _ in 0..50 {
            marks.mark(id);
        }
        assert_eq!(marks.take_batch(), vec![(id, 100)]);
        marks.mark(id);
        assert!(marks.take_batch().is_empty(), "still the same minute");
        marks.set_now(at_minute(101));
        marks.mark(id);
        assert_eq!(marks.take_batch(), vec![(id, 101)]);
    }

    #[test]
    fn the_minute_never_moves_back() {
        let marks = LastSeenMarks::new(LastSeenSettings::default(), at_minute(100));
        marks.set_now(at_minute(90));
        let id = SessionId::new();
        marks.mark(id);
        assert_eq!(marks.take_batch(), vec![(id, 100)]);
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let settings = LastSeenSettings {
            queue_capacity: 3,
            ..LastSeenSettings::default()
        };
        let marks = LastSeenMarks::new(settings, at_minute(5));
        let ids: Vec<SessionId> = (0..5).map(|_| SessionId::new()).collect();
        for &id in &ids {
            marks.mark(id);
        }
        assert_eq!(marks.stats().dropped, 2);
        assert_eq!(marks.take_batch().len(), 3);
    }

    #[test]
    fn a_kept_batch_is_merged_and_bounded() {
        let settings = LastSeenSettings {
            queue_capacity: 2,
            ..LastSeenSettings::default()
        };
        let marks = LastSeenMarks::new(settings, at_minute(5));
        let (a, b, c) = (SessionId::new(), SessionId::new(), SessionId::new());
        marks.keep(vec![(a, 5), (b, 5)]);
        marks.keep(vec![(a, 6), (c, 6)]);
        let kept = marks.take_batch();
        assert_eq!(kept.len(), 2, "bounded by the capacity");
        assert_eq!(marks.stats().dropped, 1);
        assert_eq!(marks.stats().flush_failures, 2);
        if let Some(&(_, minute)) = kept.iter().find(|mark| mark.0 == a) {
            assert_eq!(minute, 6, "the latest mark of a session wins");
        }
        assert!(
            kept.windows(2).all(|pair| pair[0].0 < pair[1].0),
            "sorted by id"
        );
    }
}
