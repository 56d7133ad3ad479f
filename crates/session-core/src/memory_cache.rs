//! The in-process cache: the plain concurrent hash map behind
//! [`MemoryCache`], the production cache and the baseline other caches are
//! measured against.

use std::hash::BuildHasher;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

use crate::port::cache::{PreparedContents, SessionCache};
use crate::session::Session;
use crate::token::{TokenHash, TokenHashState};

const SHARDS: usize = 64;

/// [`MemoryCache`]'s next contents: its shards, built apart.
struct PreparedShards(Vec<Shard>);

impl PreparedContents for PreparedShards {
    fn insert(&mut self, session: Arc<Session>) {
        let shard = MemoryCache::shard_of(&session.token_hash);
        upsert(&mut self.0[shard], session);
    }

    fn remove(&mut self, hash: &TokenHash) {
        let shard = &mut self.0[MemoryCache::shard_of(hash)];
        if let Ok(cached) = shard.find_entry(table_hash(hash), |cached| cached.token_hash == *hash)
        {
            cached.remove();
        }
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

/// One shard: the cached sessions themselves, found by the token hash each
/// one holds. Storing only the `Arc` (8 bytes a slot, not a 32-byte key
/// beside it) keeps the table small: the key is already in the session.
type Shard = HashTable<Arc<Session>>;

/// A [`SessionCache`] on a sharded `RwLock` over hash tables: no eviction,
/// no bookkeeping per read. The cache `session-app` uses by default, and the
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

/// Inserts or replaces the session with the same token hash.
fn upsert(shard: &mut Shard, session: Arc<Session>) {
    let key = session.token_hash;
    match shard.entry(
        table_hash(&key),
        |cached| cached.token_hash == key,
        |cached| table_hash(&cached.token_hash),
    ) {
        Entry::Occupied(mut cached) => *cached.get_mut() = session,
        Entry::Vacant(slot) => {
            slot.insert(session);
        }
    }
}

impl MemoryCache {
    /// An empty cache.
    #[must_use]
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
        }
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
}

impl SessionCache for MemoryCache {
    fn get(&self, hash: &TokenHash) -> Option<Arc<Session>> {
        self.read(hash)
            .find(table_hash(hash), |cached| cached.token_hash == *hash)
            .cloned()
    }

    fn insert(&self, session: Arc<Session>) {
        let mut shard = self.write(&session.token_hash);
        upsert(&mut shard, session);
    }

    fn remove(&self, hash: &TokenHash) {
        let mut shard = self.write(hash);
        if let Ok(cached) = shard.find_entry(table_hash(hash), |cached| cached.token_hash == *hash)
        {
            cached.remove();
        }
    }

    fn remove_many(&self, hashes: &[TokenHash]) {
        for hash in hashes {
            self.remove(hash);
        }
    }

    fn prepare(&self, sessions: Vec<Arc<Session>>) -> Box<dyn PreparedContents> {
        let mut shards: Vec<Shard> = (0..SHARDS)
            .map(|_| Shard::with_capacity(sessions.len() / SHARDS + 1))
            .collect();
        for session in sessions {
            upsert(&mut shards[Self::shard_of(&session.token_hash)], session);
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
        // Hold every read lock at once so the count is one consistent snapshot.
        let guards: Vec<_> = self
            .shards
            .iter()
            .map(|shard| shard.read().unwrap_or_else(PoisonError::into_inner))
            .collect();
        guards.iter().map(|shard| shard.len()).sum()
    }
}
