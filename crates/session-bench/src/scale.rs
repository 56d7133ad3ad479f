//! The cache at scale: resident memory per session, its peak while growing,
//! and the cost of a lookup, at 1, 10 and 100 million sessions (100 million
//! in compact mode only: in full mode they would take about 20 GB).
//!
//! Each (mode, size) runs in a child process of this binary, so one
//! measurement's freed-but-kept heap cannot flatter the next. The child:
//!
//! 1. reads its resident set (`VmRSS`) with its lookup samples already
//!    allocated and touched;
//! 2. creates the sessions one at a time as the service does (a token from
//!    the OS's random source, its SHA-256) and inserts each into the cache
//!    of the mode: `CompactCache` with a `MokaRecordCache` at its default
//!    bound (64 MiB, filled by the inserts, so it is counted), or
//!    `MemoryCache` holding each `Arc<Session>`. Each token hash also goes
//!    to a scratch file, for the floor;
//! 3. reads `VmRSS` (steady) and `VmHWM` (peak during growth): bytes per
//!    session = (steady − start) / sessions, against the identity's raw
//!    size (48 B: a 16-byte hash prefix, the session id, the account id) in
//!    compact mode and the record's (176 B: `Arc<Session>` and a pointer to
//!    it) in full mode;
//! 4. builds the floor, a plain `hashbrown::HashMap` from the token hash to
//!    the session id and account id (the identity a compact lookup
//!    answers), sized for and holding the same keys, read back from the
//!    scratch file;
//! 5. times lookups in interleaved rounds, subject then floor: each lookup
//!    is `TokenHash::of_token_text` (the token's checks, then SHA-256) and a
//!    `get`, of a random sample of the sessions in random order (hit), of
//!    tokens never issued (miss), and of tokens with a wrong checksum
//!    (malformed: refused before any hashing; its floor is the SHA-256
//!    alone, which refusing must beat). The cache lookup plus the hashing,
//!    not `SessionService::resolve`: a store behind the service would hold
//!    every record, 20 GB at 100 million.
//!
//! A child also takes the mode `compact-index`, which no row uses: the
//! compact index without a record cache, for telling the two apart
//! (`session-bench __scale-child compact-index 30000000 /tmp full`).

use std::fs::File;
use std::hint::black_box;
use std::io::{BufReader, BufWriter, Read as _, Write as _};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use session_cache_moka::MokaRecordCache;
use session_core::port::cache::SessionCache;
use session_core::token::{TOKEN_LEN, TokenHash, TokenHashState};
use session_core::{
    AccountId, ClientMetadata, CompactCache, MemoryCache, Session, SessionId, SessionToken,
};
use sha2::{Digest as _, Sha256};

use crate::Context;
use crate::measure::Rounds;
use crate::report::{Figure, Row, Section, Target, Unit};
use crate::resolve::TokenTexts;

/// The first argument that makes this binary a scale child.
pub(crate) const CHILD_ARG: &str = "__scale-child";

/// (mode, sessions) measured, in order.
const RUNS: &[(&str, usize)] = &[
    ("compact", 1_000_000),
    ("map", 1_000_000),
    ("compact", 10_000_000),
    ("map", 10_000_000),
    ("compact", 100_000_000),
];
const QUICK_RUNS: &[(&str, usize)] = &[("compact", 10_000), ("map", 10_000)];
/// Hit tokens kept for the lookups: enough that their lines of the index
/// and of the floor outgrow the CPU caches.
const HIT_SAMPLE: usize = 1 << 21;
/// Unknown and malformed tokens cycled through.
const OTHER_SAMPLE: usize = 1 << 16;

/// The targets in compact mode at 100 million sessions.
const COMPACT_BYTES_TARGET: f64 = 56.0;
const MAP_BYTES_TARGET: f64 = 197.0;
const HIT_RATIO_TARGET: f64 = 1.3;
const PEAK_RATIO_TARGET: f64 = 1.25;

/// What a child reports.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Measured {
    sessions: usize,
    start: u64,
    steady: u64,
    peak: u64,
    /// Seconds the inserts took.
    growth_s: f64,
    /// Seconds the whole child took.
    total_s: f64,
    /// Median ns per lookup, by series.
    hit: f64,
    hit_floor: f64,
    miss: f64,
    miss_floor: f64,
    malformed: f64,
    malformed_floor: f64,
    /// Median subject / floor over the rounds.
    hit_ratio: f64,
    miss_ratio: f64,
    malformed_ratio: f64,
    /// jemalloc's own count at the end of growth: bytes the program
    /// allocated, and bytes of data pages it keeps resident (absent where
    /// another allocator runs). Resident beyond allocated is the
    /// allocator's: size-class rounding, free pages not yet returned.
    allocated: Option<u64>,
    allocator_resident: Option<u64>,
}

pub(crate) fn run(ctx: &Context) -> anyhow::Result<Vec<Section>> {
    let runs = if ctx.quick { QUICK_RUNS } else { RUNS };
    let exe = std::env::current_exe()?;
    let mut section = Section::new(
        "scale",
        "The cache at scale",
        "bytes: the identity's raw 48 B (compact) or the record's 176 B (map); lookups: \
         the same token checks and SHA-256, then a plain hashbrown HashMap of the same size \
         holding the same keys; malformed: the SHA-256 alone; peak: the steady state",
    );
    section.note(
        "One child process per row. Bytes per session: the whole process's VmRSS growth over \
         the inserts / sessions, the compact mode's record cache at its default 64 MiB bound \
         and counted. Peak: VmHWM over the same start. Lookups: TokenHash::of_token_text and \
         the cache's get, median ns per lookup over 11 interleaved rounds of 100,000 \
         (3 of 5,000 in quick mode), random order over 2,097,152 sampled sessions (or all, \
         if fewer).",
    );
    for &(mode, sessions) in runs {
        eprintln!("  scale: {mode}, {sessions} sessions");
        let output = Command::new(&exe)
            .args([CHILD_ARG, mode, &sessions.to_string()])
            .arg(&ctx.scratch)
            .arg(if ctx.quick { "quick" } else { "full" })
            .output()
            .context("running a scale child")?;
        if !output.status.success() {
            bail!(
                "the {mode} child at {sessions} sessions failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let line = text
            .lines()
            .last()
            .context("the scale child printed nothing")?;
        let measured: Measured = serde_json::from_str(line)?;
        rows(&mut section, mode, &measured);
    }
    Ok(vec![section])
}

fn rows(section: &mut Section, mode: &str, m: &Measured) {
    let label = format!("{mode}, {}M", m.sessions as f64 / 1e6);
    let per_session = m.steady.saturating_sub(m.start) as f64 / m.sessions as f64;
    let (raw, bytes_target) = if mode == "compact" {
        (48.0, COMPACT_BYTES_TARGET)
    } else {
        (176.0, MAP_BYTES_TARGET)
    };
    // The targets are set for 100M in compact mode and for 1M and more in
    // full mode; smaller runs report the figures alone.
    let at_target_size = if mode == "compact" {
        m.sessions >= 100_000_000
    } else {
        m.sessions >= 1_000_000
    };
    let ns = |v: f64| Figure::new(v, Unit::Nanoseconds);
    section.rows.push(
        Row::new(
            format!("{label}: resident bytes per session"),
            Figure::new(per_session, Unit::Bytes),
            Figure::new(raw, Unit::Bytes),
            per_session / raw,
        )
        .target(at_target_size.then(|| {
            Target::below(
                Figure::new(per_session, Unit::Bytes),
                // "At most": a hair over, so that the target itself passes.
                Figure::new(bytes_target + 0.05, Unit::Bytes),
            )
        }))
        .detail("growth", Figure::new(m.growth_s, Unit::Seconds))
        .detail("whole run", Figure::new(m.total_s, Unit::Seconds))
        .detail_if(
            "jemalloc: allocated",
            m.allocated.map(|b| Figure::new(b as f64, Unit::Bytes)),
        )
        .detail_if(
            "jemalloc: resident",
            m.allocator_resident
                .map(|b| Figure::new(b as f64, Unit::Bytes)),
        ),
    );
    let steady = m.steady.saturating_sub(m.start) as f64;
    let peak = m.peak.saturating_sub(m.start) as f64;
    section.rows.push(
        Row::new(
            format!("{label}: peak while growing"),
            Figure::new(peak, Unit::Bytes),
            Figure::new(steady, Unit::Bytes),
            peak / steady,
        )
        .target(
            (mode == "compact").then(|| Target::ratio_at_most(peak / steady, PEAK_RATIO_TARGET)),
        ),
    );
    section.rows.push(
        Row::new(
            format!("{label}: hit"),
            ns(m.hit),
            ns(m.hit_floor),
            m.hit_ratio,
        )
        .target(
            (mode == "compact" && m.sessions >= 100_000_000)
                .then(|| Target::ratio_at_most(m.hit_ratio, HIT_RATIO_TARGET)),
        ),
    );
    section.rows.push(Row::new(
        format!("{label}: miss"),
        ns(m.miss),
        ns(m.miss_floor),
        m.miss_ratio,
    ));
    section.rows.push(
        Row::new(
            format!("{label}: malformed"),
            ns(m.malformed),
            ns(m.malformed_floor),
            m.malformed_ratio,
        )
        .target(Some(Target::ratio_at_most(m.malformed_ratio, 1.0))),
    );
}

/// `count` texts from `from` on, cycling.
fn cycled(texts: &TokenTexts, from: usize, count: usize) -> Vec<&str> {
    (from..from + count)
        .map(|i| texts.get(i % texts.len()))
        .collect()
}

/// The floor's value: the identity a compact lookup answers.
type Identity = (uuid::Uuid, uuid::Uuid);

/// The child: measures one mode at one size and prints a JSON line.
pub(crate) fn child(args: &[String]) -> anyhow::Result<()> {
    let [mode, sessions, scratch, speed] = args else {
        bail!("a scale child takes a mode, a session count, a scratch directory and a speed");
    };
    let sessions: usize = sessions.parse()?;
    let quick = speed == "quick";
    let began = Instant::now();
    let sample = sessions.min(HIT_SAMPLE);
    let mut hits = TokenTexts::touched(sample);
    let mut misses = TokenTexts::touched(OTHER_SAMPLE);
    let mut malformed = TokenTexts::touched(OTHER_SAMPLE);
    for _ in 0..OTHER_SAMPLE {
        let token = SessionToken::generate();
        misses.push(token.expose_secret());
        // The last checksum character changed: every check passes but the last.
        let mut text = token.expose_secret().to_owned();
        let last = if text.ends_with('0') { "1" } else { "0" };
        text.replace_range(TOKEN_LEN - 1.., last);
        malformed.push(&text);
    }
    let hashes_path = Path::new(scratch).join(format!("scale-{mode}-{sessions}.hashes"));
    let mut hashes = BufWriter::new(File::create(&hashes_path)?);

    let cache: Arc<dyn SessionCache> = match mode.as_str() {
        "compact" => {
            Arc::new(CompactCache::new().with_records(Arc::new(MokaRecordCache::default())))
        }
        "map" => Arc::new(MemoryCache::new()),
        // Not a row of the section: the index alone, to tell its bytes from
        // the record cache's when a figure needs explaining.
        "compact-index" => Arc::new(CompactCache::new()),
        other => bail!("no cache mode named {other}"),
    };
    let start = status_bytes("VmRSS:")?;
    let grew = Instant::now();
    let created_at = time::OffsetDateTime::now_utc();
    // Every `every`-th session's token is kept for the hit lookups.
    let every = sessions / sample;
    for i in 0..sessions {
        let token = SessionToken::generate();
        let token_hash = token.hash();
        if i % every == 0 && hits.len() < sample {
            hits.push(token.expose_secret());
        }
        hashes.write_all(token_hash.as_bytes())?;
        cache.insert(Arc::new(Session {
            id: SessionId::new(),
            account_id: AccountId::new(uuid::Uuid::new_v4())?,
            token_hash,
            created_at,
            revocation: None,
            metadata: ClientMetadata::default(),
        }));
    }
    let growth_s = grew.elapsed().as_secs_f64();
    hashes.flush()?;
    drop(hashes);
    let steady = status_bytes("VmRSS:")?;
    let peak = status_bytes("VmHWM:")?;
    let (allocated, allocator_resident) = allocator_bytes();
    if cache.len() != sessions {
        bail!("{} sessions cached of {sessions} inserted", cache.len());
    }

    let mut floor: hashbrown::HashMap<TokenHash, Identity, TokenHashState> =
        hashbrown::HashMap::with_capacity_and_hasher(sessions, TokenHashState);
    let mut reader = BufReader::new(File::open(&hashes_path)?);
    let mut bytes = [0; TokenHash::LEN];
    for _ in 0..sessions {
        reader.read_exact(&mut bytes)?;
        let hash = TokenHash::from_bytes(bytes);
        let identity = cache
            .get(&hash)
            .context("a session inserted is not found")?;
        floor.insert(
            hash,
            (*identity.id.as_uuid(), *identity.account_id.as_uuid()),
        );
    }
    drop(reader);
    std::fs::remove_file(&hashes_path)?;

    let mut rng = fastrand::Rng::with_seed(0x5ca1_e000);
    let mut order: Vec<u32> = (0..u32::try_from(hits.len())?).collect();
    rng.shuffle(&mut order);
    let (rounds, batch) = if quick { (3, 5_000) } else { (11, 100_000) };
    let mut measured = Rounds::default();
    let mut next_hit = 0;
    for round in 0..rounds {
        let hit_batch: Vec<&str> = (0..batch)
            .map(|i| hits.get(order[(next_hit + i) % order.len()] as usize))
            .collect();
        next_hit += batch;
        let time = |texts: &[&str], lookup: &dyn Fn(&str) -> bool| {
            let started = Instant::now();
            let mut found = 0usize;
            for text in texts {
                found += usize::from(lookup(black_box(text)));
            }
            black_box(found);
            started.elapsed().as_nanos() as f64 / texts.len() as f64
        };
        let subject = |text: &str| {
            TokenHash::of_token_text(text)
                .ok()
                .and_then(|hash| cache.get(&hash))
                .is_some()
        };
        let floor_lookup = |text: &str| {
            TokenHash::of_token_text(text)
                .ok()
                .and_then(|hash| floor.get(&hash).copied())
                .is_some()
        };
        let sha = |text: &str| Sha256::digest(text.as_bytes())[0] == 0;
        let (miss_batch, malformed_batch) = (
            cycled(&misses, round * batch, batch),
            cycled(&malformed, round * batch, batch),
        );
        // Subject and floor alternate which goes first.
        for (series, texts, lookup) in [
            ("hit", &hit_batch, &subject as &dyn Fn(&str) -> bool),
            ("hit_floor", &hit_batch, &floor_lookup),
            ("miss", &miss_batch, &subject),
            ("miss_floor", &miss_batch, &floor_lookup),
            ("malformed", &malformed_batch, &subject),
            ("malformed_floor", &malformed_batch, &sha),
        ]
        .into_iter()
        .cycle()
        .skip(round % 2)
        .take(6)
        {
            measured.record(series, time(texts, lookup));
        }
    }
    let result = Measured {
        sessions,
        start,
        steady,
        peak,
        growth_s,
        total_s: began.elapsed().as_secs_f64(),
        hit: measured.median("hit"),
        hit_floor: measured.median("hit_floor"),
        miss: measured.median("miss"),
        miss_floor: measured.median("miss_floor"),
        malformed: measured.median("malformed"),
        malformed_floor: measured.median("malformed_floor"),
        hit_ratio: measured.ratio("hit", "hit_floor"),
        miss_ratio: measured.ratio("miss", "miss_floor"),
        malformed_ratio: measured.ratio("malformed", "malformed_floor"),
        allocated,
        allocator_resident,
    };
    println!("{}", serde_json::to_string(&result)?);
    drop(floor);
    drop(cache);
    Ok(())
}

/// jemalloc's `stats.allocated` and `stats.resident`, fresh; `None` where
/// it is not the allocator.
fn allocator_bytes() -> (Option<u64>, Option<u64>) {
    #[cfg(not(target_env = "msvc"))]
    {
        use tikv_jemalloc_ctl::{epoch, stats};
        if epoch::advance().is_ok() {
            let read = |value: Result<usize, _>| value.ok().and_then(|v| u64::try_from(v).ok());
            return (
                read(stats::allocated::read()),
                read(stats::resident::read()),
            );
        }
    }
    (None, None)
}

/// A size line of `/proc/self/status`, in bytes.
pub(crate) fn status_bytes(name: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .with_context(|| format!("a {name} line in /proc/self/status"))
}
