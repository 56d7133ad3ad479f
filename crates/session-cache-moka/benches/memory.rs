//! Resident memory per cached session, for `MokaSessionCache` and for
//! session-core's plain sharded hash map (`MemoryCache`), at 1,000,000
//! sessions (20,000 with `SESSION_BENCH_QUICK=1`).
//!
//! Each cache is measured in a fresh child process of this binary, so one
//! measurement's freed-but-kept heap cannot flatter the next. A child reads
//! its resident set size (`VmRSS`) three times:
//!
//! 1. at start;
//! 2. after building the sessions: `Vec<Arc<Session>>` with no metadata, so
//!    one session costs its `Arc` allocation plus an 8-byte slot in the vector;
//! 3. after warming the cache with `replace_all` from a copy of that vector
//!    (the copy is consumed and freed by the warm).
//!
//! "cache overhead" is (3 - 2) / sessions: everything the cache adds, beyond
//! the sessions it shares with the caller. "session" is (2 - 1) / sessions.
//! Their sum is what one cached session costs in all.
//!
//! session-core's `CompactCache` shares nothing with the caller (its index
//! holds no `Arc<Session>`), so it is measured apart: sessions are made one
//! at a time and inserted (each freed at once, its memory reused by the
//! next), the index growing segment by segment as in service. Its "total"
//! is the growth of the resident set over the whole run, and "peak" the
//! high-water mark (`VmHWM`) over the end: what growth costs beyond the
//! steady state. Its record cache is left out (it is bounded: its bound is
//! added once, whatever the count).

use std::process::Command;
use std::sync::Arc;

use session_cache_moka::MokaSessionCache;
use session_core::port::cache::SessionCache;
use session_core::testkit::{account, epoch, session_at};
use session_core::{CompactCache, MemoryCache, Session};

/// Set in a child process: which cache to measure.
const SUBJECT_ENV: &str = "SESSION_MEMORY_BENCH_SUBJECT";
/// Set in a child process: how many sessions to cache.
const COUNT_ENV: &str = "SESSION_MEMORY_BENCH_COUNT";

const PLAIN: &str = "plain-map";
const MOKA: &str = "moka";
const COMPACT: &str = "compact";

fn main() {
    // Cargo passes `--bench` and criterion's flags; this target reads none.
    match std::env::var(SUBJECT_ENV) {
        Ok(subject) => measure(&subject),
        Err(_) => compare(),
    }
}

fn compare() {
    let quick = std::env::var("SESSION_BENCH_QUICK").is_ok_and(|v| v == "1");
    let count: usize = if quick { 20_000 } else { 1_000_000 };
    let exe = std::env::current_exe().expect("the path of this benchmark binary");
    let run = |subject: &str| {
        let output = Command::new(&exe)
            .env(SUBJECT_ENV, subject)
            .env(COUNT_ENV, count.to_string())
            .output()
            .expect("running a memory measurement in a child process");
        assert!(
            output.status.success(),
            "the {subject} measurement failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let compact = run(COMPACT);
    let results: Vec<(&str, Usage)> = [PLAIN, MOKA]
        .into_iter()
        .map(|subject| {
            let usage = Usage::parse(&run(subject))
                .unwrap_or_else(|| panic!("the {subject} measurement printed no result"));
            (subject, usage)
        })
        .collect();

    let baseline = results[0].1;
    println!();
    println!("Resident memory per cached session at {count} sessions; ratio = subject / {PLAIN}");
    println!(
        "{:>10} {:>16} {:>7} {:>10} {:>12} {:>7}",
        "cache", "cache overhead", "ratio", "session", "total", "ratio"
    );
    for (subject, usage) in &results {
        let per = |bytes: u64| bytes as f64 / count as f64;
        let (overhead, session) = (per(usage.cache), per(usage.sessions));
        let total = overhead + session;
        println!(
            "{subject:>10} {overhead:>14.1} B {:>6.2}x {session:>8.1} B {total:>10.1} B {:>6.2}x",
            overhead / per(baseline.cache),
            total / (per(baseline.cache) + per(baseline.sessions)),
        );
    }
    let (total, peak) = Usage::parse_compact(&compact).expect("the compact measurement's result");
    let total = total as f64 / count as f64;
    println!(
        "{COMPACT:>10} {total:>14.1} B {:>6} {:>10} {total:>10.1} B {:>6.2}x  peak/steady {:.3}",
        "",
        "",
        total / (per_session(baseline, count)),
        peak as f64 / count as f64 / total,
    );
}

fn per_session(usage: Usage, count: usize) -> f64 {
    (usage.cache + usage.sessions) as f64 / count as f64
}

/// Resident bytes added by the sessions and by the cache, in one process.
#[derive(Clone, Copy)]
struct Usage {
    sessions: u64,
    cache: u64,
}

impl Usage {
    fn print(self) {
        println!("sessions={} cache={}", self.sessions, self.cache);
    }

    /// The compact child's line: resident growth at the end, and at its peak.
    fn parse_compact(text: &str) -> Option<(u64, u64)> {
        let line = text.lines().find(|line| line.starts_with("compact="))?;
        let mut fields = line
            .split(' ')
            .map(|field| field.split_once('=')?.1.parse().ok());
        Some((fields.next()??, fields.next()??))
    }

    fn parse(text: &str) -> Option<Self> {
        let line = text.lines().find(|line| line.starts_with("sessions="))?;
        let mut fields = line
            .split(' ')
            .map(|field| field.split_once('=')?.1.parse().ok());
        Some(Self {
            sessions: fields.next()??,
            cache: fields.next()??,
        })
    }
}

fn measure(subject: &str) {
    let count: usize = std::env::var(COUNT_ENV)
        .ok()
        .and_then(|count| count.parse().ok())
        .expect("the child's session count");
    if subject == COMPACT {
        return measure_compact(count);
    }
    let start = resident_bytes();
    let mut sessions: Vec<Arc<Session>> = Vec::with_capacity(count);
    sessions.extend((0..count).map(|_| Arc::new(session_at(account(), epoch()).1)));
    let built = resident_bytes();
    let cache: Box<dyn SessionCache> = match subject {
        PLAIN => Box::new(MemoryCache::new()),
        MOKA => Box::new(MokaSessionCache::new()),
        other => panic!("no cache named {other}"),
    };
    cache.replace_all(sessions.clone());
    let warmed = resident_bytes();
    assert_eq!(cache.len(), count, "the warm lost sessions");
    Usage {
        sessions: built.saturating_sub(start),
        cache: warmed.saturating_sub(built),
    }
    .print();
    drop(cache);
    drop(sessions);
}

fn measure_compact(count: usize) {
    let start = resident_bytes();
    let cache = CompactCache::new();
    for _ in 0..count {
        cache.insert(Arc::new(session_at(account(), epoch()).1));
    }
    let end = resident_bytes();
    let peak = status_bytes("VmHWM:");
    assert_eq!(cache.len(), count, "the inserts lost sessions");
    eprintln!(
        "compact: {:.1} B a session as allocated",
        cache.bytes().unwrap_or(0) as f64 / count as f64
    );
    println!(
        "compact={} peak={}",
        end.saturating_sub(start),
        peak.saturating_sub(start)
    );
}

/// This process's resident set size, from `/proc/self/status`.
fn resident_bytes() -> u64 {
    status_bytes("VmRSS:")
}

/// A size line of `/proc/self/status`, in bytes.
fn status_bytes(name: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("a {name} line in /proc/self/status"))
}
