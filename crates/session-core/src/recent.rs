//! A bounded memory of recent token hashes, for a cache shared with other
//! processes: the tombstones of recently revoked sessions, and hashes a
//! miss found absent.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::token::{TokenHash, TokenHashState};

/// A bounded set of token hashes, forgetting the oldest first, and (with a
/// time to live) any older than that.
#[derive(Debug)]
pub(crate) struct RecentHashes {
    members: HashSet<TokenHash, TokenHashState>,
    order: VecDeque<(TokenHash, Instant)>,
    capacity: usize,
    ttl: Option<Duration>,
}

impl RecentHashes {
    pub(crate) fn new(capacity: usize, ttl: Option<Duration>) -> Self {
        Self {
            members: HashSet::with_hasher(TokenHashState),
            order: VecDeque::new(),
            capacity,
            ttl,
        }
    }

    pub(crate) fn insert(&mut self, hash: TokenHash, now: Instant) {
        if self.capacity == 0 {
            return;
        }
        self.expire(now);
        if self.members.insert(hash) {
            self.order.push_back((hash, now));
        }
        while self.order.len() > self.capacity {
            self.pop_oldest();
        }
    }

    pub(crate) fn contains(&mut self, hash: &TokenHash, now: Instant) -> bool {
        self.expire(now);
        self.members.contains(hash)
    }

    pub(crate) fn remove(&mut self, hash: &TokenHash) {
        // The queue entry stays until it ages out; `pop_oldest` tolerates it.
        self.members.remove(hash);
    }

    fn expire(&mut self, now: Instant) {
        let Some(ttl) = self.ttl else { return };
        while let Some((_, at)) = self.order.front() {
            if now.saturating_duration_since(*at) < ttl {
                break;
            }
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((hash, _)) = self.order.pop_front() {
            self.members.remove(&hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: u8) -> TokenHash {
        TokenHash::from_bytes([n; 32])
    }

    #[test]
    fn recent_hashes_forget_the_oldest_beyond_capacity() {
        let now = Instant::now();
        let mut recent = RecentHashes::new(2, None);
        recent.insert(hash(1), now);
        recent.insert(hash(2), now);
        recent.insert(hash(1), now);
        assert!(recent.contains(&hash(1), now) && recent.contains(&hash(2), now));
        recent.insert(hash(3), now);
        assert!(!recent.contains(&hash(1), now));
        assert!(recent.contains(&hash(2), now) && recent.contains(&hash(3), now));
    }

    #[test]
    fn recent_hashes_forget_after_their_ttl() {
        let start = Instant::now();
        let mut recent = RecentHashes::new(10, Some(Duration::from_secs(60)));
        recent.insert(hash(1), start);
        recent.insert(hash(2), start + Duration::from_secs(30));
        assert!(recent.contains(&hash(1), start + Duration::from_secs(59)));
        assert!(!recent.contains(&hash(1), start + Duration::from_secs(60)));
        assert!(recent.contains(&hash(2), start + Duration::from_secs(60)));
    }
}
