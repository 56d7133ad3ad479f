//! Many threads on the same keys, and re-warms racing with writers and
//! readers; every run ends in a state that is checked exactly.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use session_cache_moka::MokaSessionCache;
use session_core::port::cache::SessionCache;
use session_core::testkit::{account, cached, epoch, session_at};
use session_core::token::TokenHash;
use session_core::{Label, Session};

fn sessions(n: usize) -> Vec<Arc<Session>> {
    (0..n)
        .map(|_| cached(session_at(account(), epoch()).1))
        .collect()
}

/// `versions[v][k]`: version `v` of session `k`, all sharing key `k`'s hash.
fn versions(keys: &[Arc<Session>], count: usize) -> Vec<Vec<Arc<Session>>> {
    (0..count)
        .map(|v| {
            keys.iter()
                .map(|session| {
                    let mut copy = (**session).clone();
                    copy.metadata.label = Label::new(format!("v{v}")).ok();
                    Arc::new(copy)
                })
                .collect()
        })
        .collect()
}

#[test]
fn threads_inserting_removing_and_reading_the_same_keys_end_exact() {
    const THREADS: usize = 8;
    const KEYS: usize = 1_000;
    const ROUNDS: usize = 20;
    let cache = Arc::new(MokaSessionCache::new());
    let keys = sessions(KEYS);
    // One version per thread, so a lookup can tell whose insert it sees.
    let versions = Arc::new(versions(&keys, THREADS));
    let start = Arc::new(Barrier::new(THREADS));

    let workers: Vec<_> = (0..THREADS)
        .map(|worker| {
            let (cache, versions, start) = (
                Arc::clone(&cache),
                Arc::clone(&versions),
                Arc::clone(&start),
            );
            thread::spawn(move || {
                start.wait();
                let mine = &versions[worker];
                for round in 0..ROUNDS {
                    for (k, session) in mine.iter().enumerate() {
                        match (k * 7 + worker + round) % 5 {
                            0 | 1 => cache.insert(Arc::clone(session)),
                            2 => cache.remove(&session.token_hash),
                            3 if k % 10 == 0 => {
                                let batch: Vec<TokenHash> = mine[k..(k + 10).min(KEYS)]
                                    .iter()
                                    .map(|s| s.token_hash)
                                    .collect();
                                cache.remove_many(&batch);
                            }
                            _ => {
                                if let Some(found) = cache.record(&session.token_hash) {
                                    assert_eq!(found.token_hash, session.token_hash);
                                    assert!(
                                        versions.iter().any(|v| Arc::ptr_eq(&v[k], &found)),
                                        "key {k}: a value nobody inserted"
                                    );
                                }
                            }
                        }
                    }
                    assert!(cache.len() <= KEYS, "more entries than keys");
                }
                // The last word on each key belongs to one thread: keys with
                // k % 3 == 0 end removed, the others hold that thread's version.
                start.wait();
                for (k, session) in mine.iter().enumerate() {
                    if k % THREADS == worker {
                        if k % 3 == 0 {
                            cache.remove(&session.token_hash);
                        } else {
                            cache.insert(Arc::clone(session));
                        }
                    } else {
                        let _ = cache.get(&session.token_hash);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }

    for k in 0..KEYS {
        let found = cache.record(&keys[k].token_hash);
        if k % 3 == 0 {
            assert!(found.is_none(), "key {k} should be removed");
        } else {
            let expected = &versions[k % THREADS][k];
            assert!(
                found.is_some_and(|found| Arc::ptr_eq(&found, expected)),
                "key {k} should hold thread {}'s version",
                k % THREADS
            );
        }
    }
    assert_eq!(cache.len(), KEYS - KEYS.div_ceil(3));
}

#[test]
fn re_warms_racing_with_writers_and_readers_end_exact() {
    const SHARED: usize = 5_000;
    const ONLY: usize = 2_000;
    const WRITERS: usize = 3;
    const PER_WRITER: usize = 300;
    const RE_WARMS: usize = 12;
    let cache = Arc::new(MokaSessionCache::new());
    let shared = Arc::new(sessions(SHARED));
    let only_a = sessions(ONLY);
    let only_b = sessions(ONLY);
    let set_a: Vec<_> = shared.iter().chain(&only_a).cloned().collect();
    let set_b: Vec<_> = shared.iter().chain(&only_b).cloned().collect();
    let written: Arc<Vec<Vec<Arc<Session>>>> =
        Arc::new((0..WRITERS).map(|_| sessions(PER_WRITER)).collect());
    cache.replace_all(set_a.clone());

    let re_warms_done = Arc::new(AtomicBool::new(false));
    let readers_stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (cache, written, done) = (
                Arc::clone(&cache),
                Arc::clone(&written),
                Arc::clone(&re_warms_done),
            );
            thread::spawn(move || {
                let mine = &written[writer];
                let mut round = 0;
                // Churn while re-warms run: some of these writes land before a
                // swap and are replaced, some after and stay.
                while !done.load(Ordering::Acquire) {
                    for (k, session) in mine.iter().enumerate() {
                        if (k + round) % 2 == 0 {
                            cache.insert(Arc::clone(session));
                        } else if k % 25 == 0 {
                            let batch: Vec<TokenHash> = mine[k..(k + 5).min(PER_WRITER)]
                                .iter()
                                .map(|s| s.token_hash)
                                .collect();
                            cache.remove_many(&batch);
                        } else {
                            cache.remove(&session.token_hash);
                        }
                    }
                    round += 1;
                }
                // Every re-warm has returned: these writes all apply.
                for (k, session) in mine.iter().enumerate() {
                    if k % 2 == 0 {
                        cache.insert(Arc::clone(session));
                    } else {
                        cache.remove(&session.token_hash);
                    }
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2)
        .map(|reader| {
            let (cache, shared, stop) = (
                Arc::clone(&cache),
                Arc::clone(&shared),
                Arc::clone(&readers_stop),
            );
            thread::spawn(move || {
                let mut reads = 0usize;
                while !stop.load(Ordering::Acquire) {
                    for session in shared.iter().skip(reader).step_by(53) {
                        assert!(
                            cache.get(&session.token_hash).is_some(),
                            "a session present before and after every re-warm was missing"
                        );
                        reads += 1;
                    }
                    let len = cache.len();
                    assert!(
                        (SHARED + ONLY..=SHARED + ONLY + WRITERS * PER_WRITER).contains(&len),
                        "len {len} is no state any re-warm or write left"
                    );
                }
                reads
            })
        })
        .collect();

    for round in 0..RE_WARMS {
        let next = if round % 2 == 0 { &set_b } else { &set_a };
        cache.replace_all(next.clone());
    }
    re_warms_done.store(true, Ordering::Release);
    for writer in writers {
        writer.join().unwrap();
    }
    readers_stop.store(true, Ordering::Release);
    for reader in readers {
        assert!(reader.join().unwrap() > 0);
    }

    // RE_WARMS is even, so set A was published last.
    let last = &set_a;
    assert!(last.iter().all(|s| cache.get(&s.token_hash).is_some()));
    assert!(only_b.iter().all(|s| cache.get(&s.token_hash).is_none()));
    for (writer, mine) in written.iter().enumerate() {
        for (k, session) in mine.iter().enumerate() {
            assert_eq!(
                cache.get(&session.token_hash).is_some(),
                k % 2 == 0,
                "writer {writer}, key {k}"
            );
        }
    }
    assert_eq!(cache.len(), last.len() + WRITERS * PER_WRITER / 2);
}

#[test]
fn a_re_warm_is_seen_whole_or_not_at_all() {
    const OLD: usize = 20_000;
    const NEW: usize = 30_000;
    let cache = Arc::new(MokaSessionCache::new());
    let old = Arc::new(sessions(OLD));
    let new = Arc::new(sessions(NEW));
    cache.replace_all(old.to_vec());
    let start = Arc::new(Barrier::new(3));

    let readers: Vec<_> = (0..2)
        .map(|reader| {
            let (cache, old, new, start) = (
                Arc::clone(&cache),
                Arc::clone(&old),
                Arc::clone(&new),
                Arc::clone(&start),
            );
            thread::spawn(move || {
                start.wait();
                // The fill inserts `new` in order, so a cache filled in place
                // would show the first new session long before the last one.
                while cache.get(&new[0].token_hash).is_none() {
                    thread::yield_now();
                }
                assert_eq!(cache.len(), NEW, "count of a partly published re-warm");
                for session in new.iter().rev().skip(reader).step_by(7) {
                    assert!(
                        cache.get(&session.token_hash).is_some(),
                        "the new contents were visible before they were complete"
                    );
                }
                assert!(
                    old.iter().all(|s| cache.get(&s.token_hash).is_none()),
                    "old contents outlived the re-warm"
                );
            })
        })
        .collect();
    start.wait();
    cache.replace_all(new.to_vec());
    for reader in readers {
        reader.join().unwrap();
    }
}
