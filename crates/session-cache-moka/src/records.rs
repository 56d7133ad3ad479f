//! [`MokaRecordCache`]: whole session records, bounded by their bytes.

use std::fmt;
use std::sync::Arc;

use moka::ops::compute::Op;
use session_core::Session;
use session_core::port::cache::RecordCache;
use session_core::token::{TokenHash, TokenHashState};

/// The bytes moka spends on an entry beyond the record itself: its key, its
/// hash table slot, its place in the access-order queue and the frequency
/// sketch. Measured with `benches/memory.rs` (the unbounded cache's 337 B a
/// million entries, plus the sketch's 8), so the bound and
/// [`RecordCache::bytes`] count what the process really holds.
pub(crate) const ENTRY_OVERHEAD: u32 = 345;

/// The bytes one record weighs: the `Arc`'s allocation (two counts and the
/// session), its text, and [`ENTRY_OVERHEAD`].
fn weight(session: &Session) -> u32 {
    let text = session
        .metadata
        .user_agent
        .as_ref()
        .map_or(0, |a| a.as_str().len())
        + session
            .metadata
            .label
            .as_ref()
            .map_or(0, |l| l.as_str().len());
    let bytes = 2 * size_of::<usize>() + size_of::<Session>() + text;
    // At most 16 + 176 + 640 bytes: it fits.
    u32::try_from(bytes)
        .unwrap_or(u32::MAX)
        .saturating_add(ENTRY_OVERHEAD)
}

/// A [`RecordCache`] on `moka::sync::Cache`: at most `max_bytes` of whole
/// records (each weighed as the record, its text and moka's own entry), the
/// least likely to be asked for again evicted first (TinyLFU).
///
/// Eviction is what it is for: a compact cache's index decides whether a
/// session is active, and a record not held here is read from the store.
pub struct MokaRecordCache {
    records: moka::sync::Cache<TokenHash, Arc<Session>, TokenHashState>,
    max_bytes: u64,
}

impl MokaRecordCache {
    /// The default bound: 64 MiB, about 120,000 records without text.
    pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

    /// An empty cache of at most `max_bytes` bytes of records.
    #[must_use]
    pub fn new(max_bytes: u64) -> Self {
        let records = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_, session: &Arc<Session>| weight(session))
            // Token hashes are SHA-256 output: already a uniform hash.
            .build_with_hasher(TokenHashState);
        Self { records, max_bytes }
    }

    /// Runs moka's pending maintenance (evictions past the bound, the
    /// weighted size), which it otherwise runs every few writes: tests call
    /// it before reading [`RecordCache::bytes`].
    pub fn run_pending_tasks(&self) {
        self.records.run_pending_tasks();
    }

    /// The most bytes of records held, as [`new`](Self::new) was given.
    #[must_use]
    pub const fn max_bytes(&self) -> u64 {
        self.max_bytes
    }
}

impl Default for MokaRecordCache {
    fn default() -> Self {
        Self::new(Self::DEFAULT_MAX_BYTES)
    }
}

impl fmt::Debug for MokaRecordCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MokaRecordCache")
            .field("max_bytes", &self.max_bytes)
            .field("bytes", &self.records.weighted_size())
            .finish_non_exhaustive()
    }
}

impl RecordCache for MokaRecordCache {
    fn get(&self, hash: &TokenHash) -> Option<Arc<Session>> {
        self.records.get(hash)
    }

    fn insert(&self, session: Arc<Session>) {
        self.records.insert(session.token_hash, session);
    }

    fn insert_if_absent(&self, session: Arc<Session>) {
        // Under moka's per-key lock: a write's record inserted meanwhile is
        // kept.
        self.records
            .entry(session.token_hash)
            .and_compute_with(|held| match held {
                Some(_) => Op::Nop,
                None => Op::Put(session),
            });
    }

    fn remove(&self, hash: &TokenHash) {
        self.records.invalidate(hash);
    }

    fn clear(&self) {
        self.records.invalidate_all();
    }

    fn bytes(&self) -> usize {
        usize::try_from(self.records.weighted_size()).unwrap_or(usize::MAX)
    }
}
