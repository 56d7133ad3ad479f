//! Bookkeeping for a cache shared with other processes: a bounded memory of
//! recent token hashes (unknown ones, and revoked ones) and a rate limit on
//! the store reads that cache misses cause.

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

/// A token bucket: `burst` tokens, refilled at `rate` per second.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    pub(crate) fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: rate.max(0.0),
            burst,
            tokens: burst,
            last: None,
        }
    }

    /// Takes one token if there is one.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let refill = now.saturating_duration_since(last).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + refill).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
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
        recent.remove(&hash(2));
        assert!(!recent.contains(&hash(2), start + Duration::from_secs(61)));
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 5);
        assert_eq!((0..20).filter(|_| bucket.try_take(start)).count(), 5);
        let later = start + Duration::from_millis(500);
        assert_eq!((0..20).filter(|_| bucket.try_take(later)).count(), 5);
        let much_later = later + Duration::from_secs(60);
        assert_eq!(
            (0..20).filter(|_| bucket.try_take(much_later)).count(),
            5,
            "capped at the burst"
        );
    }
}
