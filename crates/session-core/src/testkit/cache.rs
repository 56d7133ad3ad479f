//! The [`SessionCache`] contract. Each function is one case; see
//! [`cache_contract_tests!`](crate::cache_contract_tests).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use super::{account, cached, epoch, session_at};
use crate::port::cache::{CacheMode, SessionCache};
use crate::session::{Label, Session, SessionIdentity};
use crate::token::TokenHash;

fn identity(session: &Session) -> Option<SessionIdentity> {
    Some(SessionIdentity::from(session))
}

/// The record a cache answers for `session`'s hash is `session` itself in
/// full mode, and `session` or nothing in compact mode: never another.
fn assert_record(cache: &dyn SessionCache, session: &Arc<Session>) {
    match (cache.mode(), cache.record(&session.token_hash)) {
        (_, Some(found)) => assert_eq!(&found, session),
        (CacheMode::Compact, None) => {}
        (CacheMode::Full, None) => panic!("a full cache holds every cached session's record"),
    }
}

fn sessions(n: usize) -> Vec<Arc<Session>> {
    (0..n)
        .map(|_| cached(session_at(account(), epoch()).1))
        .collect()
}

/// An inserted session is returned by its hash.
pub fn insert_then_get(cache: Arc<dyn SessionCache>) {
    let session = sessions(1).remove(0);
    cache.insert(Arc::clone(&session));
    assert_eq!(cache.get(&session.token_hash), identity(&session));
    assert_record(&*cache, &session);
    assert_eq!(cache.len(), 1);
}

/// A hash never inserted is absent.
pub fn missing_hash_is_absent(cache: Arc<dyn SessionCache>) {
    cache.insert(sessions(1).remove(0));
    let other = sessions(1).remove(0);
    assert_eq!(cache.get(&other.token_hash), None);
    assert_eq!(cache.record(&other.token_hash), None);
    assert!(!cache.is_empty());
}

/// Inserting the same hash again replaces the entry instead of adding one.
pub fn insert_replaces_the_same_hash(cache: Arc<dyn SessionCache>) {
    let first = sessions(1).remove(0);
    let mut second = (*first).clone();
    second.metadata.label = Label::new("replaced").ok();
    let second = Arc::new(second);
    cache.insert(first);
    cache.insert(Arc::clone(&second));
    assert_eq!(cache.get(&second.token_hash), identity(&second));
    assert_record(&*cache, &second);
    assert_eq!(cache.len(), 1);
}

/// Remove drops one entry; removing a missing hash is a no-op.
pub fn remove_and_remove_missing(cache: Arc<dyn SessionCache>) {
    let all = sessions(3);
    for session in &all {
        cache.insert(Arc::clone(session));
    }
    cache.remove(&all[1].token_hash);
    cache.remove(&all[1].token_hash);
    cache.remove(&sessions(1)[0].token_hash);
    assert_eq!(cache.get(&all[1].token_hash), None);
    assert!(cache.get(&all[0].token_hash).is_some());
    assert!(cache.get(&all[2].token_hash).is_some());
    assert_eq!(cache.len(), 2);
}

/// Remove-many drops exactly the listed hashes, ignoring unknown ones.
pub fn remove_many_drops_exactly_those(cache: Arc<dyn SessionCache>) {
    let all = sessions(100);
    for session in &all {
        cache.insert(Arc::clone(session));
    }
    let mut doomed: Vec<TokenHash> = all.iter().step_by(3).map(|s| s.token_hash).collect();
    doomed.push(sessions(1)[0].token_hash);
    cache.remove_many(&doomed);
    for (i, session) in all.iter().enumerate() {
        assert_eq!(
            cache.get(&session.token_hash).is_some(),
            i % 3 != 0,
            "entry {i}"
        );
    }
    assert_eq!(cache.len(), 100 - 34);
    cache.remove_many(&[]);
    assert_eq!(cache.len(), 66);
}

/// Replace-all leaves exactly the new contents.
pub fn replace_all_swaps_the_contents(cache: Arc<dyn SessionCache>) {
    let old = sessions(50);
    let new = sessions(70);
    for session in &old {
        cache.insert(Arc::clone(session));
    }
    let kept = Arc::clone(&old[0]);
    let mut replacement = new.clone();
    replacement.push(Arc::clone(&kept));
    cache.replace_all(replacement);
    assert_eq!(cache.len(), 71);
    assert!(old[1..].iter().all(|s| cache.get(&s.token_hash).is_none()));
    assert!(new.iter().all(|s| cache.get(&s.token_hash).is_some()));
    assert_eq!(cache.get(&kept.token_hash), identity(&kept));
    cache.replace_all(Vec::new());
    assert!(cache.is_empty());
}

/// While the contents are replaced by a set that shares entries with the old
/// one, readers never miss a shared entry and never see a count that is
/// neither the old size nor the new one.
pub fn replace_all_is_never_seen_half_done(cache: Arc<dyn SessionCache>) {
    const SIZE: usize = 20_000;
    let shared = sessions(SIZE);
    let extra = sessions(SIZE / 2);
    let small = shared.clone();
    let mut large = shared.clone();
    large.extend(extra);
    cache.replace_all(small.clone());

    while_readers_check(
        &cache,
        &shared,
        |cache, session| {
            assert!(
                cache.get(&session.token_hash).is_some(),
                "a session in both the old and new contents was missing"
            );
            let len = cache.len();
            assert!(
                len == SIZE || len == SIZE + SIZE / 2,
                "len {len} mid-replace"
            );
        },
        || {
            for round in 0..20 {
                cache.replace_all(if round % 2 == 0 {
                    large.clone()
                } else {
                    small.clone()
                });
            }
        },
    );
    assert_eq!(cache.len(), SIZE);
}

/// Runs `change` while two threads look up every 97th of `sessions` (each
/// from its own start) again and again, `check`ing each, and asserts they
/// read throughout.
fn while_readers_check(
    cache: &Arc<dyn SessionCache>,
    sessions: &[Arc<Session>],
    check: fn(&dyn SessionCache, &Session),
    change: impl FnOnce(),
) {
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|reader| {
            let (cache, stop, sessions) = (Arc::clone(cache), Arc::clone(&stop), sessions.to_vec());
            thread::spawn(move || {
                let mut reads = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    for session in sessions.iter().skip(reader).step_by(97) {
                        check(&*cache, session);
                        reads += 1;
                    }
                }
                reads
            })
        })
        .collect();
    change();
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        assert!(reader.join().unwrap() > 0);
    }
}

/// The count is exact immediately after many inserts and removals.
pub fn len_is_exact_after_bulk_inserts(cache: Arc<dyn SessionCache>) {
    let all = sessions(10_000);
    for (i, session) in all.iter().enumerate() {
        cache.insert(Arc::clone(session));
        if i % 1_000 == 999 {
            assert_eq!(cache.len(), i + 1);
        }
    }
    let hashes: Vec<TokenHash> = all[..2_500].iter().map(|s| s.token_hash).collect();
    cache.remove_many(&hashes);
    assert_eq!(cache.len(), 7_500);
}

/// Threads inserting, removing and reading the same keys end in exactly the
/// state their last operations leave.
pub fn concurrent_writers_end_in_the_expected_state(cache: Arc<dyn SessionCache>) {
    const THREADS: usize = 8;
    const KEYS: usize = 2_000;
    let keys = Arc::new(sessions(KEYS));
    let workers: Vec<_> = (0..THREADS)
        .map(|worker| {
            let (cache, keys) = (Arc::clone(&cache), Arc::clone(&keys));
            thread::spawn(move || {
                // Every thread churns every key at once.
                for round in 0..5 {
                    for (k, session) in keys.iter().enumerate() {
                        match (k + worker + round) % 3 {
                            0 => cache.insert(Arc::clone(session)),
                            1 => cache.remove(&session.token_hash),
                            _ => {
                                if let Some(found) = cache.get(&session.token_hash) {
                                    assert_eq!(Some(found), identity(session));
                                }
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    // Then settle concurrently, each thread deciding its own share of the
    // keys (even keys in, odd keys out) while reading everyone's.
    let settlers: Vec<_> = (0..THREADS)
        .map(|worker| {
            let (cache, keys) = (Arc::clone(&cache), Arc::clone(&keys));
            thread::spawn(move || {
                for (k, session) in keys.iter().enumerate() {
                    if k % THREADS != worker {
                        let _ = cache.get(&session.token_hash);
                    } else if k % 2 == 0 {
                        cache.insert(Arc::clone(session));
                    } else {
                        cache.remove(&session.token_hash);
                    }
                }
            })
        })
        .collect();
    for settler in settlers {
        settler.join().unwrap();
    }
    for (k, session) in keys.iter().enumerate() {
        assert_eq!(
            cache.get(&session.token_hash).is_some(),
            k % 2 == 0,
            "key {k}"
        );
    }
    assert_eq!(cache.len(), KEYS / 2);
}

/// Prepared contents are unseen until installed, take changes meanwhile,
/// and once installed are exactly what was prepared and changed.
pub fn prepared_contents_are_unseen_until_installed(cache: Arc<dyn SessionCache>) {
    let live = sessions(2);
    cache.replace_all(live.clone());
    let next = sessions(3);
    let mut contents = cache.prepare(next.clone());
    let late = sessions(1).remove(0);
    contents.insert(Arc::clone(&late));
    contents.remove(&next[1].token_hash);
    contents.remove(&sessions(1)[0].token_hash);

    assert_eq!(cache.len(), 2, "not installed yet");
    assert!(cache.get(&live[0].token_hash).is_some());
    assert!(cache.get(&next[0].token_hash).is_none());
    assert!(cache.get(&late.token_hash).is_none());

    cache.install(contents);
    assert_eq!(cache.len(), 3);
    assert!(cache.get(&live[0].token_hash).is_none());
    for present in [&next[0], &next[2], &late] {
        assert_eq!(cache.get(&present.token_hash), identity(present));
    }
    assert!(cache.get(&next[1].token_hash).is_none());
}

/// A warm's contents ([`SessionCache::refresh`]), as a warm uses them: the
/// live cache answers as before meanwhile, a session removed during the
/// refresh stays gone even when the warm, which read it earlier, gives it
/// again, and once the writes made meanwhile are replayed and the contents
/// installed, the cache holds exactly what the warm gave and the writes
/// added, less what they removed.
pub fn a_refresh_answers_throughout_and_ends_with_what_it_was_given(cache: Arc<dyn SessionCache>) {
    let [kept, revoked, stale, created] = <[Arc<Session>; 4]>::try_from(sessions(4))
        .unwrap_or_else(|_| unreachable!("four sessions"));
    for session in [&kept, &revoked, &stale] {
        cache.insert(Arc::clone(session));
    }
    let mut contents = cache.refresh();
    contents.insert(Arc::clone(&kept));
    // Writes while the warm reads: a revocation of a session its page
    // still holds, and a create.
    cache.remove(&revoked.token_hash);
    cache.insert(Arc::clone(&created));
    contents.insert(Arc::clone(&revoked));

    assert_eq!(cache.get(&kept.token_hash), identity(&kept));
    assert_eq!(
        cache.get(&revoked.token_hash),
        None,
        "a session removed during the refresh came back"
    );
    assert_eq!(
        cache.get(&stale.token_hash),
        identity(&stale),
        "until the install"
    );
    assert_eq!(cache.get(&created.token_hash), identity(&created));

    // The warm replays what it journaled, then installs.
    contents.insert(Arc::clone(&created));
    contents.remove(&revoked.token_hash);
    cache.install(contents);
    assert_eq!(cache.get(&kept.token_hash), identity(&kept));
    assert_eq!(cache.get(&created.token_hash), identity(&created));
    assert_eq!(cache.get(&revoked.token_hash), None);
    assert_eq!(cache.get(&stale.token_hash), None, "not read by the warm");
    assert_eq!(cache.len(), 2);
}

/// A refresh dropped before its install (a warm that failed) leaves every
/// session the cache held, and confirms nothing: the next refresh's install
/// drops what that one does not give, even what the dropped one gave.
pub fn a_dropped_refresh_leaves_the_cache_and_confirms_nothing(cache: Arc<dyn SessionCache>) {
    let all = sessions(3);
    for session in &all[..2] {
        cache.insert(Arc::clone(session));
    }
    let mut failed = cache.refresh();
    failed.insert(Arc::clone(&all[0]));
    failed.insert(Arc::clone(&all[2]));
    drop(failed);
    assert_eq!(cache.get(&all[0].token_hash), identity(&all[0]));
    assert_eq!(cache.get(&all[1].token_hash), identity(&all[1]));
    let len = cache.len();
    assert!(
        len == 2 || (len == 3 && cache.get(&all[2].token_hash).is_some()),
        "len {len}"
    );

    let mut next = cache.refresh();
    next.insert(Arc::clone(&all[1]));
    cache.install(next);
    assert_eq!(cache.get(&all[0].token_hash), None);
    assert_eq!(cache.get(&all[1].token_hash), identity(&all[1]));
    assert_eq!(cache.get(&all[2].token_hash), None);
    assert_eq!(cache.len(), 1);
}

/// While a refresh confirms most sessions and drops the rest, readers never
/// miss a session it keeps.
pub fn a_refresh_never_hides_a_session_it_keeps(cache: Arc<dyn SessionCache>) {
    const SIZE: usize = 20_000;
    let kept = sessions(SIZE);
    let dropped = sessions(SIZE / 4);
    for session in kept.iter().chain(&dropped) {
        cache.insert(Arc::clone(session));
    }
    while_readers_check(
        &cache,
        &kept,
        |cache, session| {
            assert_eq!(
                cache.get(&session.token_hash),
                identity(session),
                "a session the refresh keeps was missing or wrong"
            );
        },
        || {
            for _ in 0..3 {
                let mut contents = cache.refresh();
                for session in &kept {
                    contents.insert(Arc::clone(session));
                }
                cache.install(contents);
            }
        },
    );
    assert_eq!(cache.len(), SIZE);
    assert!(
        dropped
            .iter()
            .all(|session| cache.get(&session.token_hash).is_none())
    );
}

/// A record is answered only for a session the cache holds: never after its
/// removal, nor after contents without it are installed, even one offered
/// with [`SessionCache::keep_record`] while it was cached.
pub fn records_are_only_of_cached_sessions(cache: Arc<dyn SessionCache>) {
    let all = sessions(3);
    for session in &all {
        cache.insert(Arc::clone(session));
        cache.keep_record(Arc::clone(session));
        assert_record(&*cache, session);
    }
    cache.remove(&all[0].token_hash);
    assert_eq!(cache.record(&all[0].token_hash), None);
    cache.remove_many(&[all[1].token_hash]);
    assert_eq!(cache.record(&all[1].token_hash), None);
    // Offered after its removal (a store read racing a revocation).
    cache.keep_record(Arc::clone(&all[1]));
    assert_eq!(cache.record(&all[1].token_hash), None);
    assert_eq!(cache.get(&all[1].token_hash), None);
    cache.replace_all(sessions(2));
    assert_eq!(cache.record(&all[2].token_hash), None);
    assert_eq!(cache.len(), 2);
}

/// A record read from the store and offered later cannot replace one a
/// write put there (the write's may be newer: a rewritten label).
pub fn a_kept_record_never_replaces_a_written_one(cache: Arc<dyn SessionCache>) {
    let old = sessions(1).remove(0);
    let mut new = (*old).clone();
    new.metadata.label = Label::new("renamed").ok();
    let new = Arc::new(new);
    cache.insert(Arc::clone(&new));
    cache.keep_record(Arc::clone(&old));
    assert_record(&*cache, &new);
    assert_eq!(cache.get(&old.token_hash), identity(&new));
}

/// When a cache reports its bytes, they grow with what it holds (at least
/// the 32 bytes of each identity) and do not grow when the contents are
/// replaced by fewer. They need not shrink: `CompactCache` keeps the chunks
/// it grew, since a lock-free reader may still be reading them.
pub fn bytes_follow_the_contents(cache: Arc<dyn SessionCache>) {
    let Some(empty) = cache.bytes() else {
        return;
    };
    let all = sessions(2_000);
    for session in &all {
        cache.insert(Arc::clone(session));
    }
    let full = cache.bytes().expect("reported once, reported always");
    assert!(
        full >= empty + all.len() * 32,
        "{full} bytes for {} sessions, {empty} empty",
        all.len()
    );
    cache.replace_all(all[..10].to_vec());
    let fewer = cache.bytes().expect("reported once, reported always");
    assert!(
        fewer <= full,
        "{fewer} bytes after replacing {full} by fewer"
    );
}
