//! Last-seen activity: when each session was last resolved, to the minute,
//! marked on the resolve path without a lock, an await, an allocation or a
//! syscall, and written to the store in batches by a background flush.
//!
//! The resolve path reads the current minute from an atomic (the flush
//! refreshes it from the [`Clock`](crate::port::clock::Clock), so no clock is read per
//! resolve) and looks in one bucket of a fixed table of atomics, chosen by a
//! keyed hash of the session id, for "this session was marked in minute M".
//! Only a session not yet marked this minute pushes `(id, minute)` into a
//! bounded queue (`std::sync::mpsc::sync_channel`, a preallocated lock-free
//! array); a full queue drops the mark and counts it.
//!
//! Sessions that share a bucket must not be able to crowd others out of the
//! queue. A direct-mapped table (one slot per bucket) let two sessions that
//! share a slot evict each other's mark on every resolve, so resolving them
//! alternately queued a mark per resolve and filled the queue each interval,
//! and any other session resolved meanwhile lost its mark. So:
//!
//! - A bucket holds [`WAYS`] sessions' marks (one cache line), and a mark
//!   only takes the way of a session marked in an earlier minute: sessions
//!   marked this minute are never evicted, so resolving them again costs
//!   nothing however they alternate.
//! - When every way holds another session marked this minute, the mark is
//!   queued without being remembered, within an overflow budget of
//!   [`OVERFLOW_BUDGET`] marks per bucket and minute; past it, it is dropped
//!   and counted. So a bucket queues at most `WAYS + OVERFLOW_BUDGET` marks a
//!   minute, whatever is resolved: crowded sessions cost their own bucket,
//!   never the queue room of the others.
//! - The bucket and the tag come from the id through a multiply-shift hash
//!   keyed per process from the OS's random source, so no one can choose or
//!   compute sessions that share a bucket with another's, offline or by
//!   reading ids.
//!
//! Two sessions with the same bucket and 32-bit tag (2^-32 of such pairs)
//! are taken for one, which costs one minute's mark.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::sync::{Mutex, PoisonError};

use time::OffsetDateTime;

use crate::config::LastSeenSettings;
use crate::port::store::{LAST_SEEN_MAX_BATCH as MAX_BATCH, SeenAt};
use crate::session::SessionId;
use crate::status::LastSeenStats;

/// Sessions a bucket remembers: with its overflow word, one 64-byte line.
const WAYS: usize = 7;
/// Marks a full bucket may still queue in one minute, unremembered.
const OVERFLOW_BUDGET: u32 = 32;
/// Buckets in the table: one for every four marks the queue holds, rounded
/// up to a power of two, within these bounds (64 KiB to 16 MiB): room for
/// about 1.75 times as many sessions a minute as the queue holds marks.
const MIN_BUCKETS: usize = 1 << 10;
const MAX_BUCKETS: usize = 1 << 18;

/// One bucket: per way, the minute (high 32 bits) and tag (low 32 bits) of
/// the session marked there last; then the minute and the count of marks
/// queued past the ways in it.
#[repr(align(64))]
struct Bucket {
    ways: [AtomicU64; WAYS],
    overflow: AtomicU64,
}

/// The marks of one service: the resolve-side table and queue, and the
/// flush-side batch kept after a failure.
pub(crate) struct LastSeenMarks {
    /// Minutes since 1970-01-01T00:00Z, as the clock last told the flush.
    minute: AtomicU32,
    buckets: Box<[Bucket]>,
    /// How far the id's mixed bits shift right to index `buckets`.
    bucket_shift: u32,
    /// The hash's keys: an offset, and an odd multiplier.
    key: (u64, u64),
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
        let buckets = capacity
            .div_ceil(4)
            .next_power_of_two()
            .clamp(MIN_BUCKETS, MAX_BUCKETS);
        let mut key = [0; 16];
        getrandom::fill(&mut key).expect("the OS CSPRNG is unavailable");
        let (offset, multiplier) = key.split_at(8);
        let word = |bytes: &[u8]| u64::from_le_bytes(bytes.try_into().expect("8 bytes"));
        Self {
            minute: AtomicU32::new(minute_of(now)),
            buckets: (0..buckets)
                .map(|_| Bucket {
                    ways: std::array::from_fn(|_| AtomicU64::new(0)),
                    overflow: AtomicU64::new(0),
                })
                .collect(),
            bucket_shift: 64 - buckets.trailing_zeros(),
            key: (word(offset), word(multiplier) | 1),
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

    /// Marks `id` seen in the current minute: a load of the minute and of
    /// at most [`WAYS`] words of one cache line when it was already marked
    /// this minute; a compare-and-swap and a queue push otherwise.
    #[inline]
    pub(crate) fn mark(&self, id: SessionId) {
        let minute = self.minute.load(Ordering::Relaxed);
        let mixed = self.mix(id);
        // The top bits choose the bucket; the low 32 bits are the tag.
        let bucket = &self.buckets[(mixed >> self.bucket_shift) as usize];
        let want = (u64::from(minute) << 32) | (mixed & 0xffff_ffff);
        if bucket
            .ways
            .iter()
            .any(|way| way.load(Ordering::Relaxed) == want)
        {
            return;
        }
        // Take the way of a session marked in an earlier minute. Another
        // mark may take it first: then try the next.
        for way in &bucket.ways {
            let held = way.load(Ordering::Relaxed);
            if held >> 32 != u64::from(minute)
                && way
                    .compare_exchange(held, want, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                self.queue(id, minute);
                return;
            }
        }
        // Every way holds another session marked this minute.
        let queued = bucket
            .overflow
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                let count = if held >> 32 == u64::from(minute) {
                    held & 0xffff_ffff
                } else {
                    0
                };
                (count < u64::from(OVERFLOW_BUDGET))
                    .then_some((u64::from(minute) << 32) | (count + 1))
            });
        if queued.is_ok() {
            self.queue(id, minute);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn queue(&self, id: SessionId, minute: u32) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.queue.try_send((id, minute))
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The id's bits through a multiply-shift hash keyed for this process
    /// (Dietzfelbinger's: for a random odd multiplier, two given ids land
    /// in one bucket with probability about 2 / buckets), with the high
    /// bits folded into the low ones for the tag.
    fn mix(&self, id: SessionId) -> u64 {
        let bits = id.as_uuid().as_u128();
        // Truncating casts on purpose: the two halves are folded together.
        let folded = (bits as u64) ^ ((bits >> 64) as u64);
        let mixed = (folded ^ self.key.0).wrapping_mul(self.key.1);
        mixed ^ (mixed >> 29)
    }

    #[cfg(test)]
    fn slot_of(&self, id: SessionId) -> u64 {
        self.mix(id) >> self.bucket_shift
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

    /// Sessions the table files together (found here by its own hash, as
    /// someone holding many sessions could hope to) resolved over and over,
    /// in turn: their own marks are queued once a minute, and a session
    /// resolved meanwhile still finds room in the queue.
    #[test]
    fn sessions_sharing_a_slot_cannot_crowd_others_out_of_the_queue() {
        let settings = LastSeenSettings {
            queue_capacity: 64,
            ..LastSeenSettings::default()
        };
        let marks = LastSeenMarks::new(settings, at_minute(100));
        let first = SessionId::new();
        let crowd: Vec<SessionId> = std::iter::once(first)
            .chain(
                std::iter::repeat_with(SessionId::new)
                    .filter(|id| marks.slot_of(*id) == marks.slot_of(first))
                    .take(9),
            )
            .collect();
        for _ in 0..1_000 {
            for &id in &crowd[..2] {
                marks.mark(id);
            }
        }
        assert_eq!(marks.take_batch().len(), 2, "two sessions, two marks");
        assert_eq!(marks.stats().dropped, 0);
        for _ in 0..1_000 {
            for &id in &crowd {
                marks.mark(id);
            }
        }
        let victim = std::iter::repeat_with(SessionId::new)
            .find(|id| marks.slot_of(*id) != marks.slot_of(first))
            .unwrap();
        marks.mark(victim);
        let batch = marks.take_batch();
        assert!(
            batch.contains(&(victim, 100)),
            "the victim's mark was dropped"
        );
        for id in &crowd[2..] {
            assert!(batch.contains(&(*id, 100)), "each of the crowd is marked");
        }
    }
}
