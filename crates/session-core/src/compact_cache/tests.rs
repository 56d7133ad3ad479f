//! The table's rule and a segment's answers against a model, over random
//! operations, with keys crowded on purpose (few distinct order words, tiny
//! tables) so runs are long, meet the tail and tie; and lock-free readers
//! racing writers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use proptest::prelude::*;
use uuid::Uuid;

use super::segment::{RECORD_WORDS, Record, Segment};
use super::{CompactCache, Key, insert_growing};
use crate::port::cache::{PreparedContents, SessionCache};
use crate::session::{AccountId, Session, SessionId, SessionIdentity};
use crate::token::TokenHash;

#[derive(Debug, Clone)]
enum Op {
    Insert(u8, u8, u8),
    Remove(u8, u8),
}

/// Keys from a small space: `hi` one of a few values spread over the whole
/// range (so homes land everywhere, the end included) and `lo` one of a few.
fn key(hi: u8, lo: u8) -> Key {
    Key {
        segment: 0,
        hi: (u64::from(hi) << 56) | (u64::from(hi) << 3) | 1,
        lo: u64::from(lo) + 1,
    }
}

/// A record for `key` whose other words all hold `value`.
fn record(key: &Key, value: u64) -> Record {
    let mut record = [value; RECORD_WORDS];
    record[0] = key.lo;
    record
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (any::<u8>(), 0..3u8, any::<u8>()).prop_map(|(h, l, v)| Op::Insert(h, l, v)),
        2 => (any::<u8>(), 0..3u8).prop_map(|(h, l)| Op::Remove(h, l)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_segment_answers_as_a_map_does(ops in prop::collection::vec(op(), 1..400)) {
        let segment = Segment::default();
        let mut model: HashMap<(u8, u8), u8> = HashMap::new();
        for op in ops {
            let mut writer = segment.lock();
            match op {
                Op::Insert(hi, lo, value) => {
                    let key = key(hi, lo);
                    let (added, _) =
                        insert_growing(&mut writer, &key, &record(&key, u64::from(value)));
                    prop_assert_eq!(added, model.insert((hi, lo), value).is_none());
                }
                Op::Remove(hi, lo) => {
                    prop_assert_eq!(writer.remove(&key(hi, lo)), model.remove(&(hi, lo)).is_some());
                }
            }
            writer.check();
            prop_assert_eq!(writer.len(), model.len());
        }
        for hi in 0..=255u8 {
            for lo in 0..3u8 {
                let key = key(hi, lo);
                let found = segment.find(&key).map(|record| record[1] as u8);
                prop_assert_eq!(found, model.get(&(hi, lo)).copied());
            }
        }
    }
}

/// Keys spread like hash output: a multiplicative scramble of `i`.
fn spread(i: u64) -> Key {
    Key {
        segment: 0,
        hi: i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        lo: i % 251 + 1,
    }
}

#[test]
fn growth_keeps_every_key_and_the_load_in_bounds() {
    let segment = Segment::default();
    let keys: Vec<Key> = (0..20_000u64).map(spread).collect();
    let mut writer = segment.lock();
    for (i, key) in keys.iter().enumerate() {
        insert_growing(&mut writer, key, &record(key, i as u64));
        if i > 1_000 {
            let load = writer.len() as f64 / writer.table_homes() as f64;
            assert!((0.85..=0.921).contains(&load), "load {load} at {i}");
            // Homes and tail fill the steps: the tail is 8 + 1/256 of them.
            let used = writer.table_homes() as f64 / writer.capacity() as f64;
            assert!(used > 0.98, "{used} of the slots the steps added are homes");
        }
    }
    writer.check();
    drop(writer);
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(segment.find(key), Some(record(key, i as u64)));
    }
    let mut writer = segment.lock();
    for key in &keys[..10_000] {
        assert!(writer.remove(key));
    }
    writer.check();
    drop(writer);
    assert!(keys[..10_000].iter().all(|key| segment.find(key).is_none()));
    assert!(keys[10_000..].iter().all(|key| segment.find(key).is_some()));
}

#[test]
fn a_segment_taken_from_another_holds_exactly_its_keys() {
    let (live, smaller, larger) = (Segment::default(), Segment::default(), Segment::default());
    let fill = |segment: &Segment, keys: std::ops::Range<u64>| {
        let mut writer = segment.lock();
        for i in keys {
            let key = spread(i);
            insert_growing(&mut writer, &key, &record(&key, i));
        }
    };
    fill(&live, 0..3_000);
    // Fewer slots than the live segment: its extra slots are cleared.
    fill(&smaller, 5_000..5_100);
    // More, over more groups: the live segment copies into the groups it
    // has (the last of them only partly used) and adopts the rest.
    fill(&larger, 10_000..30_000);
    for (mut from, keys) in [(smaller, 5_000..5_100), (larger, 10_000..30_000)] {
        let mut writer = live.lock();
        writer.begin();
        assert_eq!(writer.take_from(&mut from), keys.clone().count());
        writer.end();
        writer.check();
        drop(writer);
        for i in 0..30_000 {
            let expected = keys.contains(&i).then(|| record(&spread(i), i));
            assert_eq!(live.find(&spread(i)), expected, "key {i}");
        }
    }
}

/// Readers run while a writer inserts, removes and grows the same segment.
/// Keys that stay put must always be found with their own record; keys
/// never inserted must never be; keys that come and go must be found with
/// their own record or not at all. A torn read would show as a record
/// mixing two keys' words, or as a stable key missing mid-shift.
#[test]
fn lock_free_readers_see_whole_records_and_stable_keys_throughout() {
    const STABLE: u64 = 2_000;
    const CHURN: u64 = 6_000;
    let segment = Segment::default();
    {
        let mut writer = segment.lock();
        for i in 0..STABLE {
            let key = spread(i);
            insert_growing(&mut writer, &key, &record(&key, i));
        }
    }
    let done = AtomicBool::new(false);
    thread::scope(|scope| {
        let readers: Vec<_> = (0..2)
            .map(|reader| {
                let (segment, done) = (&segment, &done);
                scope.spawn(move || {
                    let mut lookups = 0u64;
                    let mut i = reader;
                    while !done.load(Ordering::Relaxed) || lookups < 100_000 {
                        i = (i + 7) % (STABLE + CHURN + 1_000);
                        let key = spread(i);
                        let found = segment.find(&key);
                        if i < STABLE {
                            assert_eq!(found, Some(record(&key, i)), "stable key {i}");
                        } else if i < STABLE + CHURN {
                            if let Some(found) = found {
                                assert_eq!(found, record(&key, i), "churning key {i}");
                            }
                        } else {
                            assert_eq!(found, None, "key {i} was never inserted");
                        }
                        lookups += 1;
                    }
                    lookups
                })
            })
            .collect();
        // Grows the segment several times over, then empties the churn and
        // fills it again: every path that moves slots.
        for round in 0..3 {
            for i in STABLE..STABLE + CHURN {
                let key = spread(i);
                let mut writer = segment.lock();
                insert_growing(&mut writer, &key, &record(&key, i));
            }
            for i in (STABLE..STABLE + CHURN).filter(|i| i % 3 != round) {
                assert!(segment.lock().remove(&spread(i)));
            }
            for i in (STABLE..STABLE + CHURN).filter(|i| i % 3 == round) {
                assert!(segment.lock().remove(&spread(i)));
            }
        }
        done.store(true, Ordering::Relaxed);
        for reader in readers {
            assert!(reader.join().expect("a reader panicked") >= 100_000);
        }
    });
    segment.lock().check();
}

/// A step of a warm in place, or a write beside it, on keys of one segment.
#[derive(Debug, Clone)]
enum RefreshOp {
    /// A write stores the key (a create).
    Write(u8, u8),
    /// A write removes the key (a revocation).
    Remove(u8, u8),
    /// A warm starts.
    Begin,
    /// The warm's page holds the key.
    Give(u8, u8),
    /// The warm installs.
    Install,
    /// The warm fails.
    Abandon,
}

fn refresh_op() -> impl Strategy<Value = RefreshOp> {
    let key = || (0..24u8, 0..2u8);
    prop_oneof![
        4 => key().prop_map(|(h, l)| RefreshOp::Write(h, l)),
        3 => key().prop_map(|(h, l)| RefreshOp::Remove(h, l)),
        1 => Just(RefreshOp::Begin),
        6 => key().prop_map(|(h, l)| RefreshOp::Give(h, l)),
        1 => Just(RefreshOp::Install),
        1 => Just(RefreshOp::Abandon),
    ]
}

/// A token hash in segment 0 whose order word is crowded among few values
/// spread over the range, so runs are long and meet the tail.
fn crowded(hi: u8, lo: u8) -> TokenHash {
    let mut bytes = [0; 32];
    bytes[2] = hi.wrapping_mul(11);
    bytes[9] = hi;
    bytes[10] = lo;
    TokenHash::from_bytes(bytes)
}

fn identity_of(hi: u8, lo: u8) -> SessionIdentity {
    let n = u128::from(hi) << 8 | u128::from(lo);
    SessionIdentity {
        id: SessionId::from_uuid(Uuid::from_u128(n + 1)),
        account_id: AccountId::from_checked(Uuid::from_u128(n + 1_000)),
        token_hash: crowded(hi, lo),
    }
}

/// The warm running in the model.
struct ModelWarm {
    contents: Box<dyn PreparedContents>,
    /// Whether it runs in place (the cache held sessions when it began),
    /// so what it is given shows at once.
    in_place: bool,
    /// Keys given, written and removed since it began.
    given: HashSet<(u8, u8)>,
    written: HashSet<(u8, u8)>,
    removed: HashSet<(u8, u8)>,
}

fn session_of(hi: u8, lo: u8) -> Arc<Session> {
    let identity = identity_of(hi, lo);
    let (_, mut session) = crate::testkit::session_at(identity.account_id, crate::testkit::epoch());
    session.id = identity.id;
    session.token_hash = identity.token_hash;
    Arc::new(session)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Warms, in place or (into an empty cache) apart, completed or
    /// abandoned, beside writes and with the writes replayed at the install
    /// as the service does, against a model: a removal during a warm wins
    /// over the warm's page, an install keeps exactly what the warm gave or
    /// a write stored since it began, less what was removed since, and a
    /// warm in place shows what it is given at once.
    #[test]
    fn a_refresh_answers_as_the_model_does(ops in prop::collection::vec(refresh_op(), 1..300)) {
        let cache = CompactCache::new();
        let mut live: HashSet<(u8, u8)> = HashSet::new();
        let mut warm: Option<ModelWarm> = None;
        for op in ops {
            match op {
                RefreshOp::Write(h, l) => {
                    // A revoked session's token is never issued again.
                    if warm.as_ref().is_some_and(|warm| warm.removed.contains(&(h, l))) {
                        continue;
                    }
                    cache.insert(session_of(h, l));
                    live.insert((h, l));
                    if let Some(warm) = warm.as_mut() {
                        warm.written.insert((h, l));
                    }
                }
                RefreshOp::Remove(h, l) => {
                    cache.remove(&crowded(h, l));
                    live.remove(&(h, l));
                    if let Some(warm) = warm.as_mut() {
                        warm.removed.insert((h, l));
                    }
                }
                RefreshOp::Begin => {
                    if warm.is_none() {
                        warm = Some(ModelWarm {
                            in_place: !live.is_empty(),
                            contents: cache.refresh(),
                            given: HashSet::new(),
                            written: HashSet::new(),
                            removed: HashSet::new(),
                        });
                    }
                }
                RefreshOp::Give(h, l) => {
                    if let Some(warm) = warm.as_mut() {
                        warm.contents.insert_identity(identity_of(h, l));
                        warm.given.insert((h, l));
                        if warm.in_place && !warm.removed.contains(&(h, l)) {
                            live.insert((h, l));
                        }
                    }
                }
                RefreshOp::Install => {
                    if let Some(mut warm) = warm.take() {
                        for &(h, l) in &warm.written {
                            warm.contents.insert(session_of(h, l));
                        }
                        for &(h, l) in &warm.removed {
                            warm.contents.remove(&crowded(h, l));
                        }
                        cache.install(warm.contents);
                        live = warm.given.union(&warm.written).copied().collect();
                        live.retain(|key| !warm.removed.contains(key));
                    }
                }
                RefreshOp::Abandon => {
                    warm = None;
                }
            }
            cache.index.segments[0].lock().check();
            prop_assert_eq!(cache.len(), live.len());
            for hi in 0..24u8 {
                for lo in 0..2u8 {
                    let found = cache.get(&crowded(hi, lo));
                    prop_assert_eq!(found, live.contains(&(hi, lo)).then(|| identity_of(hi, lo)));
                }
            }
        }
    }
}
