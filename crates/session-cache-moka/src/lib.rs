//! Session caches on [moka](https://docs.rs/moka)'s concurrent cache:
//! [`MokaSessionCache`], a full-mode [`SessionCache`], and
//! [`MokaRecordCache`], the bounded [`RecordCache`] of whole records beside
//! session-core's `CompactCache`.
//!
//! [`MokaSessionCache`] keeps every active session keyed by its [`TokenHash`],
//! with no time-to-live, no time-to-idle and no size bound: a miss means "no
//! such active session", so an evicted entry would log a user out.
//!
//! # Re-warming
//!
//! The contents live in a *generation*: one moka cache plus its exact count.
//! [`prepare`](SessionCache::prepare) fills a new generation off to the side
//! (it can still be changed), and [`install`](SessionCache::install)
//! publishes it with one atomic pointer swap. Until the swap, every reader
//! sees the old contents, whole; after it, the new contents, whole.
//! No reader ever sees a partly filled generation, and [`len`](SessionCache::len)
//! always answers for the same generation that lookups do.
//!
//! A write (`insert`, `remove`, or a whole `remove_many` batch) applies to
//! the one generation that was current when it started. One that starts after
//! `replace_all` returned applies on top of the new contents. One that
//! overlaps the swap may land on the old generation and vanish with it, exactly
//! as if it had run just before the install; no other outcome is possible.
//! A caller that must keep writes made while a warm was loading applies them
//! to the prepared generation before installing it, and orders its writes
//! against the install, as `SessionService` does.
//!
//! # Exact count
//!
//! moka's own `entry_count` is an estimate until its pending maintenance runs.
//! Each generation instead keeps its own counter, changed only inside moka's
//! per-key compute section: the decision "this key was absent, count it" and
//! the write that makes it present happen under the same per-key lock, so the
//! counter is exact whenever no write is in flight and never goes negative.

mod records;

pub use records::MokaRecordCache;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::{fmt, thread};

use arc_swap::ArcSwap;
use moka::ops::compute::Op;
use moka::policy::EvictionPolicy;
use session_core::port::cache::{CacheMode, PreparedContents, SessionCache};
use session_core::token::{TokenHash, TokenHashState};
use session_core::{Session, SessionIdentity};

#[cfg(doc)]
use session_core::port::cache::RecordCache;

/// A [`SessionCache`] on `moka::sync::Cache`, keyed by token hash, evicting
/// nothing, whose contents are replaced whole and atomically on each warm.
///
/// Lookups return the cached `Arc<Session>` itself, so a hit copies no string.
/// See the [crate documentation](crate) for what readers see during a
/// re-warm and how the count stays exact.
pub struct MokaSessionCache {
    current: ArcSwap<Generation>,
}

impl MokaSessionCache {
    /// An empty cache.
    #[must_use]
    pub fn new() -> Self {
        Self {
            current: ArcSwap::from_pointee(Generation::with_capacity(0)),
        }
    }
}

impl Default for MokaSessionCache {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MokaSessionCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MokaSessionCache")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl SessionCache for MokaSessionCache {
    fn get(&self, hash: &TokenHash) -> Option<SessionIdentity> {
        self.current
            .load()
            .sessions
            .get(hash)
            .map(|session| SessionIdentity::from(&*session))
    }

    fn record(&self, hash: &TokenHash) -> Option<Arc<Session>> {
        self.current.load().sessions.get(hash)
    }

    fn mode(&self) -> CacheMode {
        CacheMode::Full
    }

    fn insert(&self, session: Arc<Session>) {
        self.current.load().insert(session);
    }

    fn remove(&self, hash: &TokenHash) {
        self.current.load().remove(hash);
    }

    fn remove_many(&self, hashes: &[TokenHash]) {
        let generation = self.current.load();
        for hash in hashes {
            generation.remove(hash);
        }
    }

    fn prepare_empty(&self) -> Box<dyn PreparedContents> {
        Box::new(PreparedGeneration(Generation::with_capacity(0)))
    }

    fn prepare(&self, sessions: Vec<Arc<Session>>) -> Box<dyn PreparedContents> {
        Box::new(PreparedGeneration(Generation::filled(sessions)))
    }

    fn install(&self, contents: Box<dyn PreparedContents>) {
        let Ok(prepared) = contents.into_any().downcast::<PreparedGeneration>() else {
            panic!("MokaSessionCache::install: the contents were prepared by another cache type");
        };
        let fresh = prepared.0;
        // Changes made after the fill leave maintenance pending; settle it
        // here rather than on the first lookups.
        fresh.sessions.run_pending_tasks();
        drop_here(self.current.swap(Arc::new(fresh)));
    }

    fn len(&self) -> usize {
        self.current.load().len.load(Ordering::Acquire)
    }
}

/// A generation built by [`SessionCache::prepare`], not yet published.
struct PreparedGeneration(Generation);

impl PreparedContents for PreparedGeneration {
    fn insert(&mut self, session: Arc<Session>) {
        self.0.insert(session);
    }

    fn insert_identity(&mut self, _: SessionIdentity) {
        unreachable!("a full cache's warm reads whole sessions");
    }

    fn remove(&mut self, hash: &TokenHash) {
        self.0.remove(hash);
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

/// Frees a replaced generation on the calling (warming) thread.
///
/// A call that loaded the old generation just before the swap still holds it
/// for the length of one moka operation. If a lookup dropped the last
/// reference, it would free a million entries on a request's hot path; waiting
/// out those calls keeps that work here.
fn drop_here(mut generation: Arc<Generation>) {
    loop {
        match Arc::try_unwrap(generation) {
            Ok(owned) => return drop(owned),
            Err(shared) => {
                generation = shared;
                thread::yield_now();
            }
        }
    }
}

/// One complete set of cached sessions and its exact size.
struct Generation {
    sessions: moka::sync::Cache<TokenHash, Arc<Session>, TokenHashState>,
    /// Exact number of entries in `sessions`; see the crate documentation.
    len: AtomicUsize,
}

impl Generation {
    fn with_capacity(capacity: usize) -> Self {
        let sessions = moka::sync::Cache::builder()
            // No `max_capacity`, `time_to_live` or `time_to_idle`: entries stay
            // until removed. LRU, because TinyLFU's admission filter has no use
            // in a cache that never evicts.
            .eviction_policy(EvictionPolicy::lru())
            .initial_capacity(capacity)
            // Token hashes are SHA-256 output: their first bytes already are a
            // uniform hash, so SipHash over them would be wasted work.
            .build_with_hasher(TokenHashState);
        Self {
            sessions,
            len: AtomicUsize::new(0),
        }
    }

    /// A generation holding exactly `sessions` (the last one wins for a
    /// repeated hash), with moka's bookkeeping settled so the first lookups
    /// after publication do not pay for the fill.
    fn filled(sessions: Vec<Arc<Session>>) -> Self {
        let generation = Self::with_capacity(sessions.len());
        // Nobody else sees this generation yet, so a plain check-then-insert
        // counts exactly and skips the per-key locking of `insert`.
        let mut len = 0;
        for session in sessions {
            if !generation.sessions.contains_key(&session.token_hash) {
                len += 1;
            }
            generation.sessions.insert(session.token_hash, session);
        }
        generation.len.store(len, Ordering::Release);
        generation.sessions.run_pending_tasks();
        generation
    }

    fn insert(&self, session: Arc<Session>) {
        self.sessions
            .entry(session.token_hash)
            .and_compute_with(|existing| {
                if existing.is_none() {
                    self.len.fetch_add(1, Ordering::AcqRel);
                }
                Op::Put(session)
            });
    }

    fn remove(&self, hash: &TokenHash) {
        self.sessions
            .entry_by_ref(hash)
            .and_compute_with(|existing| {
                if existing.is_some() {
                    self.len.fetch_sub(1, Ordering::AcqRel);
                    Op::Remove
                } else {
                    Op::Nop
                }
            });
    }
}
