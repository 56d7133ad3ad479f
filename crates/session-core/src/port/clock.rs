//! The time port, so tests set the time instead of sleeping.

use std::fmt;
use std::sync::Mutex;
use std::time::Instant;

use time::{Duration, OffsetDateTime};

/// Tells the current time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time in UTC, for timestamps.
    fn now(&self) -> OffsetDateTime;

    /// A monotonic instant, for rates and ages that must not jump with the wall clock.
    fn monotonic(&self) -> Instant {
        Instant::now()
    }
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that moves only when told to, for tests. Its monotonic instant
/// moves with it, by the same amount.
#[derive(Debug)]
pub struct ManualClock {
    state: Mutex<ManualState>,
    origin: Instant,
}

#[derive(Debug)]
struct ManualState {
    now: OffsetDateTime,
    elapsed: std::time::Duration,
}

impl ManualClock {
    /// A clock stopped at `start`.
    #[must_use]
    pub fn new(start: OffsetDateTime) -> Self {
        Self {
            state: Mutex::new(ManualState {
                now: start,
                elapsed: std::time::Duration::ZERO,
            }),
            origin: Instant::now(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ManualState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Moves the clock forward by `by` (a negative `by` moves only the wall clock back).
    pub fn advance(&self, by: Duration) {
        let mut state = self.state();
        state.now += by;
        if by.is_positive() {
            state.elapsed += by.unsigned_abs();
        }
    }

    /// Sets the wall-clock time to `to`; the monotonic instant stays.
    pub fn set(&self, to: OffsetDateTime) {
        self.state().now = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        self.state().now
    }

    fn monotonic(&self) -> Instant {
        self.origin + self.state().elapsed
    }
}

/// Truncates to whole microseconds, the precision every store keeps, so a
/// session read back equals the one that was written.
pub(crate) fn to_micros(at: OffsetDateTime) -> OffsetDateTime {
    let nanos = at.nanosecond();
    at.replace_nanosecond(nanos - nanos % 1_000).unwrap_or(at)
}
