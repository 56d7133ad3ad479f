//! Resolve in process, and how its cost grows with the number of sessions.
//!
//! The subject is `SessionService::resolve` with a cache hit, a miss (a
//! well-formed token nobody was given) and a malformed token (a wrong
//! checksum: the costliest way to be malformed). Its floor is what any
//! resolve must do at least: SHA-256 of the same token text and a lookup in
//! a `std::collections::HashMap` (default hasher) of the same size holding
//! `Arc<Session>`, cloning the `Arc` on a hit as resolve does. The floor of
//! a malformed token is the SHA-256 alone, which rejecting it must beat.
//!
//! Tokens are looked up in a random order over the whole set, so at a
//! million sessions most lookups miss the CPU caches for subject and floor
//! alike: the realistic worst case.
//!
//! With last-seen activity on (`--last-seen`), two more subjects over the
//! `map` cache: *marked*, where every session of the batch was already
//! resolved this minute (the common case: two atomic loads more), and *new
//! minute*, where the minute has just turned, so every resolve of the batch
//! is its session's first this minute and pushes a mark into the queue (the
//! steady state's worst minute). The queue is flushed between rounds,
//! outside the timing.
//!
//! `resolve` is an `async fn` that never suspends without a change log; a
//! whole batch of calls runs inside one `block_on` of a current-thread Tokio
//! runtime, so the figure is the call itself, not a runtime's scheduling.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use session_cache_moka::MokaSessionCache;
use session_core::config::LastSeenSettings;
use session_core::memory::MemoryStore;
use session_core::port::cache::SessionCache;
use session_core::port::clock::ManualClock;
use session_core::token::{TOKEN_LEN, TokenHash};
use session_core::{
    AccountId, ClientMetadata, MemoryCache, Session, SessionId, SessionService, SessionToken,
};
use sha2::{Digest, Sha256};

use crate::Context;
use crate::measure::{Rounds, rotation};
use crate::report::{Figure, Row, Section, Target, Unit};

/// Sizes measured; the in-process table shows the smallest and the largest,
/// the scaling table all of them.
const SIZES: &[usize] = &[10_000, 100_000, 1_000_000];
const QUICK_SIZES: &[usize] = &[1_000];
/// Distinct unknown and malformed tokens cycled through.
const SAMPLE: usize = 1 << 16;

/// The caches measured, as `session-app --cache` names them.
const CACHES: [&str; 2] = ["map", "moka"];

/// The last-seen subjects (over the `map` cache) and how the table names them.
const LAST_SEEN: [(&str, &str); 2] = [
    ("seen-marked", "on, marked this minute"),
    ("seen-new-minute", "on, first this minute"),
];

pub(crate) fn run(ctx: &Context) -> anyhow::Result<Vec<Section>> {
    let sizes = if ctx.quick { QUICK_SIZES } else { SIZES };
    let (rounds, batch) = if ctx.quick { (3, 5_000) } else { (11, 100_000) };
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let mut measured = Vec::new();
    for &size in sizes {
        eprintln!("  resolve in process: {size} sessions");
        let bench = Bench::new(size, &runtime)?;
        measured.push((size, bench.measure(&runtime, rounds, batch)));
    }

    let mut in_process = Section::new(
        "resolve",
        "Resolve in process",
        "SHA-256 of the same token text + lookup in a std HashMap (SipHash) of the same size; \
         for a malformed token, the SHA-256 alone",
    );
    in_process.note(format!(
        "Median ns per call over {rounds} interleaved rounds of {batch} calls, tokens in random \
         order; ratio = median of per-round subject / floor."
    ));
    in_process.note(
        "`map` is session-core's `MemoryCache` (the service default), `moka` is \
         `MokaSessionCache`. Calls run in batches inside one current-thread Tokio `block_on`.",
    );
    let shown: Vec<usize> = [sizes[0], sizes[sizes.len() - 1]]
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for (size, rounds) in measured.iter().filter(|(size, _)| shown.contains(size)) {
        let label = sessions_label(*size);
        for cache in CACHES {
            let ratio = rounds.ratio(&format!("hit/{cache}"), "hit/floor");
            let target = (!ctx.quick && cache == "map" && *size == 1_000_000)
                .then(|| Target::ratio_at_most(ratio, 2.0));
            in_process.rows.push(
                Row::new(
                    format!("hit, {cache}, {label}"),
                    nanos(rounds.median(&format!("hit/{cache}"))),
                    nanos(rounds.median("hit/floor")),
                    ratio,
                )
                .target(target),
            );
        }
        for cache in CACHES {
            in_process.rows.push(Row::new(
                format!("miss, {cache}, {label}"),
                nanos(rounds.median(&format!("miss/{cache}"))),
                nanos(rounds.median("miss/floor")),
                rounds.ratio(&format!("miss/{cache}"), "miss/floor"),
            ));
        }
        for (subject, case) in LAST_SEEN {
            let series = format!("hit/{subject}");
            in_process.rows.push(
                Row::new(
                    format!("hit, map, last-seen {case}, {label}"),
                    nanos(rounds.median(&series)),
                    nanos(rounds.median("hit/floor")),
                    rounds.ratio(&series, "hit/floor"),
                )
                .detail(
                    "over map",
                    Figure::new(rounds.ratio(&series, "hit/map"), Unit::Ratio),
                ),
            );
        }
        in_process.rows.push(Row::new(
            format!("malformed, {label}"),
            nanos(rounds.median("malformed/map")),
            nanos(rounds.median("malformed/floor")),
            rounds.ratio("malformed/map", "malformed/floor"),
        ));
    }

    let mut scaling = Section::new(
        "scaling",
        "Resolve cost as sessions grow",
        "the in-process floor at the same size",
    );
    scaling.note(
        "Cache hits, measured as in the in-process table. `growth` is the figure over the \
         same subject's figure at the smallest size.",
    );
    let smallest = &measured[0].1;
    for (size, rounds) in &measured {
        for subject in ["floor", "map", "moka"] {
            let series = format!("hit/{subject}");
            let figure = rounds.median(&series);
            let (floor, ratio) = if subject == "floor" {
                (figure, 1.0)
            } else {
                (
                    rounds.median("hit/floor"),
                    rounds.ratio(&series, "hit/floor"),
                )
            };
            scaling.rows.push(
                Row::new(
                    format!("{subject}, {}", sessions_label(*size)),
                    nanos(figure),
                    nanos(floor),
                    ratio,
                )
                .detail(
                    "growth",
                    Figure::new(figure / smallest.median(&series), Unit::Ratio),
                ),
            );
        }
    }
    Ok(vec![in_process, scaling])
}

fn nanos(value: f64) -> Figure {
    Figure::new(value, Unit::Nanoseconds)
}

/// `1000000` as `1M sessions`.
pub(crate) fn sessions_label(size: usize) -> String {
    match size {
        n if n >= 1_000_000 && n.is_multiple_of(1_000_000) => {
            format!("{}M sessions", n / 1_000_000)
        }
        n if n >= 1_000 && n.is_multiple_of(1_000) => format!("{}k sessions", n / 1_000),
        n => format!("{n} sessions"),
    }
}

/// Token texts stored back to back, so a million of them are one allocation.
pub(crate) struct TokenTexts(Vec<u8>);

impl TokenTexts {
    pub(crate) fn with_capacity(count: usize) -> Self {
        Self(Vec::with_capacity(count * TOKEN_LEN))
    }

    /// Room for `count` texts, touched, so that it is resident before a
    /// measurement of the process's memory starts.
    pub(crate) fn touched(count: usize) -> Self {
        let mut bytes = Vec::with_capacity(count * TOKEN_LEN);
        bytes.resize(count * TOKEN_LEN, b'x');
        bytes.clear();
        Self(bytes)
    }

    pub(crate) fn push(&mut self, text: &str) {
        debug_assert_eq!(text.len(), TOKEN_LEN);
        self.0.extend_from_slice(text.as_bytes());
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len() / TOKEN_LEN
    }

    pub(crate) fn get(&self, index: usize) -> &str {
        let bytes = &self.0[index * TOKEN_LEN..(index + 1) * TOKEN_LEN];
        // Only ASCII token texts are ever pushed.
        std::str::from_utf8(bytes).unwrap_or_default()
    }
}

/// One size's sessions, the floor's map and a service per cache.
struct Bench {
    hits: TokenTexts,
    /// A random permutation of the hit indexes: the lookup order.
    order: Vec<u32>,
    misses: TokenTexts,
    malformed: TokenTexts,
    floor: HashMap<TokenHash, Arc<Session>>,
    services: Vec<(&'static str, SessionService)>,
    /// Services with last-seen activity on, over the `map` cache, each with
    /// the clock its flush reads the minute from.
    last_seen: Vec<(&'static str, SessionService, Arc<ManualClock>)>,
}

impl Bench {
    fn new(size: usize, runtime: &tokio::runtime::Runtime) -> anyhow::Result<Self> {
        let mut hits = TokenTexts::with_capacity(size);
        let mut sessions = Vec::with_capacity(size);
        let created_at = time::OffsetDateTime::now_utc();
        for _ in 0..size {
            let token = SessionToken::generate();
            hits.push(token.expose_secret());
            sessions.push(Arc::new(Session {
                id: SessionId::new(),
                account_id: AccountId::new(uuid::Uuid::new_v4())?,
                token_hash: token.hash(),
                created_at,
                revocation: None,
                metadata: ClientMetadata::default(),
            }));
        }
        let mut misses = TokenTexts::with_capacity(SAMPLE);
        let mut malformed = TokenTexts::with_capacity(SAMPLE);
        for _ in 0..SAMPLE {
            let token = SessionToken::generate();
            misses.push(token.expose_secret());
            // The last checksum character changed: every check passes but the last.
            let mut text = token.expose_secret().to_owned();
            let last = if text.ends_with('0') { "1" } else { "0" };
            text.replace_range(TOKEN_LEN - 1.., last);
            malformed.push(&text);
        }
        let mut rng = fastrand::Rng::with_seed(0x5e55_1011);
        let mut order: Vec<u32> = (0..u32::try_from(size)?).collect();
        rng.shuffle(&mut order);

        let floor: HashMap<TokenHash, Arc<Session>> = sessions
            .iter()
            .map(|session| (session.token_hash, Arc::clone(session)))
            .collect();
        let mut services = Vec::new();
        for name in CACHES {
            let cache: Arc<dyn SessionCache> = match name {
                "map" => Arc::new(MemoryCache::new()),
                _ => Arc::new(MokaSessionCache::new()),
            };
            let service =
                SessionService::builder(Arc::new(MemoryStore::new()), Arc::clone(&cache)).build();
            // An empty store warms at once; the cache is then given every
            // session the way a warm installs them, without a store copy of
            // a million sessions.
            runtime.block_on(service.warm())?;
            cache.replace_all(sessions.clone());
            services.push((name, service));
        }
        let mut last_seen = Vec::new();
        for (name, _) in LAST_SEEN {
            let cache = Arc::new(MemoryCache::new());
            let clock = Arc::new(ManualClock::new(created_at));
            let service = SessionService::builder(Arc::new(MemoryStore::new()), cache.clone())
                .clock(clock.clone())
                .last_seen(LastSeenSettings {
                    // Room for a whole batch of first marks between flushes.
                    queue_capacity: 1 << 17,
                    ..LastSeenSettings::default()
                })
                .build();
            runtime.block_on(service.warm())?;
            cache.replace_all(sessions.clone());
            last_seen.push((name, service, clock));
        }
        let bench = Self {
            hits,
            order,
            misses,
            malformed,
            floor,
            services,
            last_seen,
        };
        bench.check(runtime)?;
        Ok(bench)
    }

    /// Makes sure every subject answers as the measurement assumes.
    fn check(&self, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
        for (name, service) in &self.services {
            runtime.block_on(async {
                for i in (0..self.hits.len()).step_by(97) {
                    anyhow::ensure!(
                        service.resolve(self.hits.get(i)).await.is_ok(),
                        "{name}: a known token did not resolve"
                    );
                }
                for i in (0..self.misses.len()).step_by(97) {
                    anyhow::ensure!(
                        service.resolve(self.misses.get(i)).await.is_err(),
                        "{name}: an unknown token resolved"
                    );
                    anyhow::ensure!(
                        service.resolve(self.malformed.get(i)).await.is_err(),
                        "{name}: a malformed token resolved"
                    );
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Interleaved rounds of every case; ns per call per round.
    fn measure(&self, runtime: &tokio::runtime::Runtime, rounds: usize, batch: usize) -> Rounds {
        let mut results = Rounds::default();
        let mut at = 0usize;
        for round in 0..rounds {
            let start = at;
            for case in rotation(round, 3) {
                match case {
                    0 => {
                        let nanos = self.floor_hits(start, batch);
                        results.record("hit/floor", nanos);
                        for (name, service) in &self.services {
                            let nanos = self.resolve_hits(runtime, service, start, batch);
                            results.record(&format!("hit/{name}"), nanos);
                        }
                        for (name, service, clock) in &self.last_seen {
                            if *name == "seen-marked" {
                                // Untimed: mark this batch's sessions in this minute.
                                self.resolve_hits(runtime, service, start, batch);
                            } else {
                                clock.advance(time::Duration::minutes(1));
                            }
                            // Untimed: empties the queue and takes the clock's minute.
                            let _ = runtime.block_on(service.flush_last_seen());
                            let nanos = self.resolve_hits(runtime, service, start, batch);
                            results.record(&format!("hit/{name}"), nanos);
                        }
                    }
                    1 => {
                        let nanos = self.floor_misses(start, batch);
                        results.record("miss/floor", nanos);
                        for (name, service) in &self.services {
                            let nanos = resolve_all(runtime, service, &self.misses, start, batch);
                            results.record(&format!("miss/{name}"), nanos);
                        }
                    }
                    _ => {
                        let nanos = sha256_only(&self.malformed, start, batch);
                        results.record("malformed/floor", nanos);
                        let service = &self.services[0].1;
                        let nanos = resolve_all(runtime, service, &self.malformed, start, batch);
                        results.record("malformed/map", nanos);
                    }
                }
            }
            at = (at + batch) % self.order.len();
        }
        results
    }

    fn floor_hits(&self, start: usize, batch: usize) -> f64 {
        let began = Instant::now();
        for step in 0..batch {
            let index = self.order[(start + step) % self.order.len()] as usize;
            let text = black_box(self.hits.get(index));
            let hash = TokenHash::from_bytes(Sha256::digest(text.as_bytes()).into());
            black_box(self.floor.get(&hash).cloned());
        }
        per_call(began, batch)
    }

    fn floor_misses(&self, start: usize, batch: usize) -> f64 {
        let began = Instant::now();
        for step in 0..batch {
            let text = black_box(self.misses.get((start + step) % self.misses.len()));
            let hash = TokenHash::from_bytes(Sha256::digest(text.as_bytes()).into());
            black_box(self.floor.get(&hash).cloned());
        }
        per_call(began, batch)
    }

    fn resolve_hits(
        &self,
        runtime: &tokio::runtime::Runtime,
        service: &SessionService,
        start: usize,
        batch: usize,
    ) -> f64 {
        runtime.block_on(async {
            let began = Instant::now();
            for step in 0..batch {
                let index = self.order[(start + step) % self.order.len()] as usize;
                black_box(service.resolve(black_box(self.hits.get(index))).await.ok());
            }
            per_call(began, batch)
        })
    }
}

fn resolve_all(
    runtime: &tokio::runtime::Runtime,
    service: &SessionService,
    tokens: &TokenTexts,
    start: usize,
    batch: usize,
) -> f64 {
    runtime.block_on(async {
        let began = Instant::now();
        for step in 0..batch {
            let text = black_box(tokens.get((start + step) % tokens.len()));
            black_box(service.resolve(text).await.ok());
        }
        per_call(began, batch)
    })
}

fn sha256_only(tokens: &TokenTexts, start: usize, batch: usize) -> f64 {
    let began = Instant::now();
    for step in 0..batch {
        let text = black_box(tokens.get((start + step) % tokens.len()));
        black_box(Sha256::digest(text.as_bytes()));
    }
    per_call(began, batch)
}

fn per_call(began: Instant, calls: usize) -> f64 {
    began.elapsed().as_nanos() as f64 / calls as f64
}
