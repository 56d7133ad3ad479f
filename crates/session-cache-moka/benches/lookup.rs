//! What a resolve's cache lookup costs in `MokaSessionCache`, as a ratio to
//! session-core's plain sharded hash map (`MemoryCache`) measured in the same
//! run: hits and misses, at 10,000 and 1,000,000 sessions, on one thread and
//! on two threads looking up at once.
//!
//! A third subject, moka's cache used directly with the same configuration,
//! shows what the swappable-generation indirection costs; a last group tries
//! other moka configurations on one-thread hits at the largest size.
//!
//! For scale, the run also times what every resolve does before its lookup:
//! checking and hashing the token text.
//!
//! `SESSION_BENCH_QUICK=1` (set by `cargo xtask bench --quick`) uses 1,000
//! sessions, to check the harness in seconds.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::hint::black_box;
use std::sync::{Arc, Barrier, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use criterion::Criterion;
use moka::policy::EvictionPolicy;
use session_cache_moka::MokaSessionCache;
use session_core::port::cache::SessionCache;
use session_core::testkit::{account, epoch, session_at};
use session_core::token::{TokenHash, TokenHashState};
use session_core::{MemoryCache, Session, SessionToken};

/// Miss keys are cycled from a sample this large: a miss touches only the
/// probed bucket, so more keys would only lengthen setup.
const MISS_KEYS: usize = 1 << 16;

fn main() {
    let quick = std::env::var("SESSION_BENCH_QUICK").is_ok_and(|v| v == "1");
    let sizes: &[usize] = if quick {
        &[1_000]
    } else {
        &[10_000, 1_000_000]
    };
    let mut criterion = Criterion::default().configure_from_args();
    let tally = Tally::default();

    for &size in sizes {
        let sessions: Vec<Arc<Session>> = (0..size)
            .map(|_| Arc::new(session_at(account(), epoch()).1))
            .collect();
        // Creation order is unrelated to where a hash lands in either map, so
        // walking it is a uniformly random walk over the entries.
        let hits: Vec<TokenHash> = sessions.iter().map(|s| s.token_hash).collect();
        let misses: Vec<TokenHash> = (0..MISS_KEYS.min(size))
            .map(|_| SessionToken::generate().hash())
            .collect();

        let plain = MemoryCache::new();
        plain.replace_all(sessions.clone());
        let moka = MokaSessionCache::new();
        moka.replace_all(sessions.clone());
        let unwrapped = Unwrapped::filled(&sessions, EvictionPolicy::lru(), TokenHashState);
        check(&plain, &hits, &misses);
        check(&moka, &hits, &misses);
        check(&unwrapped, &hits, &misses);

        let mut group = criterion.benchmark_group(format!("lookup/{size}"));
        for threads in [1, 2] {
            for (outcome, keys) in [("hit", &hits), ("miss", &misses)] {
                let mut run = |subject: &str, lookup: &dyn Fn(u64) -> Duration| {
                    let id = format!("{subject}/{outcome}/{threads}t");
                    group.bench_function(&id, |b| {
                        b.iter_custom(|iters| {
                            tally.record(&format!("{size}/{id}"), iters, lookup(iters))
                        });
                    });
                };
                run(PLAIN, &|iters| time_lookups(&plain, keys, threads, iters));
                run(MOKA, &|iters| time_lookups(&moka, keys, threads, iters));
                run(UNWRAPPED, &|iters| {
                    time_lookups(&unwrapped, keys, threads, iters)
                });
            }
        }
        group.finish();
        drop((plain, moka));

        if size == sizes[sizes.len() - 1] {
            let tinylfu = Unwrapped::filled(&sessions, EvictionPolicy::tiny_lfu(), TokenHashState);
            let siphash = Unwrapped::filled(&sessions, EvictionPolicy::lru(), RandomState::new());
            check(&tinylfu, &hits, &misses);
            check(&siphash, &hits, &misses);
            let mut group = criterion.benchmark_group(format!("moka-config/{size}"));
            let mut run = |config: &str, lookup: &dyn Fn(u64) -> Duration| {
                group.bench_function(config, |b| {
                    b.iter_custom(|iters| {
                        tally.record(&format!("config/{config}"), iters, lookup(iters))
                    });
                });
            };
            run(LRU_IDENTITY, &|iters| {
                time_lookups(&unwrapped, &hits, 1, iters)
            });
            run(TINYLFU_IDENTITY, &|iters| {
                time_lookups(&tinylfu, &hits, 1, iters)
            });
            run(LRU_SIPHASH, &|iters| {
                time_lookups(&siphash, &hits, 1, iters)
            });
            group.finish();
        }
    }

    let token = SessionToken::generate();
    let text = token.expose_secret();
    criterion.bench_function(HASH_TOKEN, |b| {
        b.iter_custom(|iters| {
            let began = Instant::now();
            for _ in 0..iters {
                black_box(TokenHash::of_token_text(black_box(text)).ok());
            }
            tally.record(HASH_TOKEN, iters, began.elapsed())
        });
    });

    criterion.final_summary();
    tally.report(sizes);
}

const PLAIN: &str = "plain-map";
const MOKA: &str = "moka";
const UNWRAPPED: &str = "moka-unwrapped";
const LRU_IDENTITY: &str = "lru+identity";
const TINYLFU_IDENTITY: &str = "tinylfu+identity";
const LRU_SIPHASH: &str = "lru+siphash";
const HASH_TOKEN: &str = "resolve/hash-token";

/// A cache under measurement: only the lookup matters here.
trait Lookup: Sync {
    fn lookup(&self, hash: &TokenHash) -> Option<Arc<Session>>;
}

impl Lookup for MemoryCache {
    fn lookup(&self, hash: &TokenHash) -> Option<Arc<Session>> {
        self.record(hash)
    }
}

impl Lookup for MokaSessionCache {
    fn lookup(&self, hash: &TokenHash) -> Option<Arc<Session>> {
        self.record(hash)
    }
}

/// moka's cache used directly, configured like `MokaSessionCache`'s
/// generations except for the policy and hasher under test.
struct Unwrapped<S>(moka::sync::Cache<TokenHash, Arc<Session>, S>);

impl<S: BuildHasher + Clone + Send + Sync + 'static> Unwrapped<S> {
    fn filled(sessions: &[Arc<Session>], policy: EvictionPolicy, hasher: S) -> Self {
        let cache = moka::sync::Cache::builder()
            .eviction_policy(policy)
            .initial_capacity(sessions.len())
            .build_with_hasher(hasher);
        for session in sessions {
            cache.insert(session.token_hash, Arc::clone(session));
        }
        cache.run_pending_tasks();
        Self(cache)
    }
}

impl<S: BuildHasher + Clone + Send + Sync + 'static> Lookup for Unwrapped<S> {
    fn lookup(&self, hash: &TokenHash) -> Option<Arc<Session>> {
        self.0.get(hash)
    }
}

/// Makes sure a subject answers as the benchmark assumes before timing it.
fn check(cache: &impl Lookup, hits: &[TokenHash], misses: &[TokenHash]) {
    assert!(
        hits.iter().all(|hash| cache.lookup(hash).is_some()),
        "a hit key missed"
    );
    assert!(
        misses.iter().all(|hash| cache.lookup(hash).is_none()),
        "a miss key hit"
    );
}

/// Wall time for `threads` threads each doing `iters` lookups at once, walking
/// `keys` from different starting points. With two threads the figure is the
/// time per lookup while both look up in parallel.
fn time_lookups(cache: &impl Lookup, keys: &[TokenHash], threads: usize, iters: u64) -> Duration {
    if threads == 1 {
        return walk(cache, keys, 0, iters);
    }
    let start = Barrier::new(threads);
    thread::scope(|scope| {
        let walkers: Vec<_> = (0..threads)
            .map(|t| {
                let start = &start;
                scope.spawn(move || {
                    start.wait();
                    walk(cache, keys, t * keys.len() / threads, iters)
                })
            })
            .collect();
        walkers
            .into_iter()
            .map(|walker| walker.join().unwrap_or_default())
            .max()
            .unwrap_or_default()
    })
}

fn walk(cache: &impl Lookup, keys: &[TokenHash], mut at: usize, iters: u64) -> Duration {
    let began = Instant::now();
    for _ in 0..iters {
        black_box(cache.lookup(black_box(&keys[at])));
        at += 1;
        if at == keys.len() {
            at = 0;
        }
    }
    began.elapsed()
}

/// Total time and lookups per benchmark across every sample criterion takes,
/// so the run can end with ratios computed from its own measurements.
#[derive(Default)]
struct Tally(Mutex<BTreeMap<String, (Duration, u64)>>);

impl Tally {
    fn record(&self, id: &str, iters: u64, elapsed: Duration) -> Duration {
        let mut totals = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let total = totals.entry(id.to_owned()).or_default();
        total.0 += elapsed;
        total.1 += iters;
        elapsed
    }

    fn nanos(&self, id: &str) -> Option<f64> {
        let totals = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let &(elapsed, iters) = totals.get(id)?;
        (iters > 0).then(|| elapsed.as_nanos() as f64 / iters as f64)
    }

    fn report(&self, sizes: &[usize]) {
        println!();
        println!("Lookup time per call, mean over every sample; ratio = subject / {PLAIN}");
        println!(
            "{:>9} {:>4} {:>7} {:>12} {:>12} {:>7} {:>16} {:>7}",
            "sessions", "", "threads", PLAIN, MOKA, "ratio", UNWRAPPED, "ratio"
        );
        for &size in sizes {
            for outcome in ["hit", "miss"] {
                for threads in [1, 2] {
                    let at = |subject: &str| {
                        self.nanos(&format!("{size}/{subject}/{outcome}/{threads}t"))
                    };
                    let (Some(plain), Some(moka), Some(unwrapped)) =
                        (at(PLAIN), at(MOKA), at(UNWRAPPED))
                    else {
                        continue;
                    };
                    println!(
                        "{size:>9} {outcome:>4} {threads:>7} {plain:>10.1}ns {moka:>10.1}ns {:>6.2}x {unwrapped:>14.1}ns {:>6.2}x",
                        moka / plain,
                        unwrapped / plain,
                    );
                }
            }
        }
        if let Some(baseline) = self.nanos(&format!("config/{LRU_IDENTITY}")) {
            println!();
            println!(
                "moka configurations, one-thread hits at {} sessions; ratio = config / {LRU_IDENTITY}",
                sizes[sizes.len() - 1]
            );
            for config in [LRU_IDENTITY, TINYLFU_IDENTITY, LRU_SIPHASH] {
                if let Some(nanos) = self.nanos(&format!("config/{config}")) {
                    println!("{config:>18} {nanos:>8.1}ns {:>6.2}x", nanos / baseline);
                }
            }
        }
        if let Some(nanos) = self.nanos(HASH_TOKEN) {
            println!();
            println!("Checking and hashing a token before each lookup: {nanos:.1}ns");
        }
    }
}
