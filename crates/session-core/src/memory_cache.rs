//! The in-process cache: the plain concurrent hash map behind
//! [`MemoryCache`], the full-mode cache `session-app` uses by default and
//! the baseline other caches are measured against.

use std::hash::BuildHasher;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

use crate::port::cache::{CacheMode, PreparedContents, SessionCache};
use crate::session::{Session, SessionIdentity};
use crate::token::{TokenHash, TokenHashState};

const SHARDS: usize = 64;

/// [`MemoryCache`]'s next contents: its shards, built apart.
struct PreparedShards(Vec<Shard>);

impl PreparedContents for PreparedShards {
    fn insert(&mut self, session: Arc<Session>) {
        let shard = MemoryCache::shard_of(&session.token_hash);
        self.0[shard].upsert(session);
    }

    fn insert_identity(&mut self, _: SessionIdentity) {
        unreachable!("a full cache's warm reads whole sessions");
    }

    fn remove(&mut self, hash: &TokenHash) {
        self.0[MemoryCache::shard_of(hash)].remove(hash);
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

/// One shard: the cached sessions themselves, found by the token hash each
/// one holds. Storing only the `Arc` (8 bytes a slot, not a 32-byte key
/// beside it) keeps the table small: the key is already in the session.
#[derive(Default)]
struct Shard {
    sessions: HashTable<Arc<Session>>,
    /// The bytes of the records the table points to ([`record_bytes`]),
    /// kept under the shard's lock with every insert and removal.
    record_bytes: usize,
}

/// The bytes one cached record occupies: the `Arc`'s allocation (its two
/// counts and the session) and the session's text. Allocator rounding is
/// not counted.
pub(crate) fn record_bytes(session: &Session) -> usize {
    2 * size_of::<usize>()
        + size_of::<Session>()
        + session
            .metadata
            .user_agent
            .as_ref()
            .map_or(0, |a| a.as_str().len())
        + session
            .metadata
            .label
            .as_ref()
            .map_or(0, |l| l.as_str().len())
}

impl Shard {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            sessions: HashTable::with_capacity(capacity),
            record_bytes: 0,
        }
    }

    fn find(&self, hash: &TokenHash) -> Option<&Arc<Session>> {
        self.sessions
            .find(table_hash(hash), |cached| cached.token_hash == *hash)
    }

    /// Inserts or replaces the session with the same token hash.
    fn upsert(&mut self, session: Arc<Session>) {
        let key = session.token_hash;
        self.record_bytes += record_bytes(&session);
        match self.sessions.entry(
            table_hash(&key),
            |cached| cached.token_hash == key,
            |cached| table_hash(&cached.token_hash),
        ) {
            Entry::Occupied(mut cached) => {
                let old = std::mem::replace(cached.get_mut(), session);
                self.record_bytes -= record_bytes(&old);
            }
            Entry::Vacant(slot) => {
                slot.insert(session);
            }
        }
    }

    fn remove(&mut self, hash: &TokenHash) {
        if let Ok(cached) = self
            .sessions
            .find_entry(table_hash(hash), |cached| cached.token_hash == *hash)
        {
            let (old, _) = cached.remove();
            self.record_bytes -= record_bytes(&old);
        }
    }

    fn bytes(&self) -> usize {
        self.sessions.allocation_size() + self.record_bytes
    }
}

/// A [`SessionCache`] on a sharded `RwLock` over hash tables: no eviction,
/// no bookkeeping per read, every session's whole record
/// ([`CacheMode::Full`]). The cache `session-app` uses by default, and the
/// baseline other caches are benchmarked against.
pub struct MemoryCache {
    shards: Box<[RwLock<Shard>]>,
}

impl std::fmt::Debug for MemoryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryCache")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl Default for MemoryCache {
    fn default() -> Self {
        Self::new()
    }
}

/// The table hash of a token hash: its first eight bytes, already uniform.
fn table_hash(hash: &TokenHash) -> u64 {
    TokenHashState.hash_one(hash)
}

impl MemoryCache {
    /// An empty cache.
    #[must_use]
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
        }
    }

    /// Empty shards for the next contents, with room for `sessions` in all.
    fn prepared_shards(&self, sessions: usize) -> Vec<Shard> {
        (0..SHARDS)
            .map(|_| Shard::with_capacity(sessions / SHARDS + 1))
            .collect()
    }

    fn shard_of(hash: &TokenHash) -> usize {
        // Byte 8 onwards: the table itself hashes with bytes 0..8.
        usize::from(hash.as_bytes()[8]) % SHARDS
    }

    fn read(&self, hash: &TokenHash) -> RwLockReadGuard<'_, Shard> {
        self.shards[Self::shard_of(hash)]
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self, hash: &TokenHash) -> RwLockWriteGuard<'_, Shard> {
        self.shards[Self::shard_of(hash)]
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Every shard's read lock at once, so what is summed over them is one
    /// consistent snapshot.
    fn read_all(&self) -> Vec<RwLockReadGuard<'_, Shard>> {
        self.shards
            .iter()
            .map(|shard| shard.read().unwrap_or_else(PoisonError::into_inner))
            .collect()
    }
}

impl SessionCache for MemoryCache {
    fn get(&self, hash: &TokenHash) -> Option<SessionIdentity> {
        self.read(hash)
            .find(hash)
            .map(|session| SessionIdentity::from(&**session))
    }

    fn record(&self, hash: &TokenHash) -> Option<Arc<Session>> {
        self.read(hash).find(hash).cloned()
    }

    fn mode(&self) -> CacheMode {
        CacheMode::Full
    }

    fn insert(&self, session: Arc<Session>) {
        self.write(&session.token_hash).upsert(session);
    }

    fn remove(&self, hash: &TokenHash) {
        self.write(hash).remove(hash);
    }

    fn remove_many(&self, hashes: &[TokenHash]) {
        for hash in hashes {
            self.remove(hash);
        }
    }

    fn prepare_empty(&self) -> Box<dyn PreparedContents> {
        Box::new(PreparedShards(self.prepared_shards(0)))
    }

    fn prepare(&self, sessions: Vec<Arc<Session>>) -> Box<dyn PreparedContents> {
        let mut shards = self.prepared_shards(sessions.len());
        for session in sessions {
            shards[Self::shard_of(&session.token_hash)].upsert(session);
        }
        Box::new(PreparedShards(shards))
    }

    fn install(&self, contents: Box<dyn PreparedContents>) {
        let Ok(prepared) = contents.into_any().downcast::<PreparedShards>() else {
            panic!("MemoryCache::install: the contents were prepared by another cache type");
        };
        let mut fresh = prepared.0;
        // Swap every shard while holding every write lock, so no reader sees
        // a mix of old and new.
        let mut guards: Vec<_> = self
            .shards
            .iter()
            .map(|shard| shard.write().unwrap_or_else(PoisonError::into_inner))
            .collect();
        for (guard, shard) in guards.iter_mut().zip(fresh.iter_mut()) {
            std::mem::swap(&mut **guard, shard);
        }
        drop(guards);
        // The old contents are freed here, outside the locks.
        drop(fresh);
    }

    fn len(&self) -> usize {
        self.read_all()
            .iter()
            .map(|shard| shard.sessions.len())
            .sum()
    }

    fn bytes(&self) -> Option<usize> {
        let shards = self.read_all();
        Some(size_of_val(&*self.shards) + shards.iter().map(|shard| shard.bytes()).sum::<usize>())
    }
}
