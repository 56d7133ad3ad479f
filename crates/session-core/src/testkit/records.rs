//! A small [`RecordCache`] for tests: a bound by count, evicting the oldest
//! record held, so tests decide exactly what is evicted.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use crate::port::cache::RecordCache;
use crate::session::Session;
use crate::token::TokenHash;

/// A [`RecordCache`] of at most `capacity` records, evicting the one held
/// longest; its bytes are counted as `size_of::<Session>()` a record.
#[derive(Debug)]
pub struct FifoRecords {
    capacity: usize,
    held: Mutex<VecDeque<Arc<Session>>>,
}

impl FifoRecords {
    /// An empty cache of at most `capacity` records.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            held: Mutex::new(VecDeque::new()),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Session>>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(held: &mut VecDeque<Arc<Session>>, capacity: usize, session: Arc<Session>) {
        held.push_back(session);
        while held.len() > capacity {
            held.pop_front();
        }
    }
}

impl RecordCache for FifoRecords {
    fn get(&self, hash: &TokenHash) -> Option<Arc<Session>> {
        self.held()
            .iter()
            .find(|held| held.token_hash == *hash)
            .cloned()
    }

    fn insert(&self, session: Arc<Session>) {
        let mut held = self.held();
        held.retain(|held| held.token_hash != session.token_hash);
        Self::push(&mut held, self.capacity, session);
    }

    fn insert_if_absent(&self, session: Arc<Session>) {
        let mut held = self.held();
        if !held
            .iter()
            .any(|held| held.token_hash == session.token_hash)
        {
            Self::push(&mut held, self.capacity, session);
        }
    }

    fn remove(&self, hash: &TokenHash) {
        self.held().retain(|held| held.token_hash != *hash);
    }

    fn clear(&self) {
        self.held().clear();
    }

    fn bytes(&self) -> usize {
        self.held().len() * size_of::<Session>()
    }
}
