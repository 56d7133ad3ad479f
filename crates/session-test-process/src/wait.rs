//! The one bounded wait: a poll loop with a deadline and a message.

use std::fmt;
use std::time::{Duration, Instant};

/// The pause between two polls: 1 ms at first, so what happens at once is
/// seen at once, doubling up to this, so a long wait costs little.
const LONGEST_PAUSE: Duration = Duration::from_millis(10);

/// A wait that ran out: what was awaited, and for how long.
#[derive(Clone, PartialEq, Eq)]
pub struct TimedOut {
    what: String,
    within: Duration,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: still not after {:?}", self.what, self.within)
    }
}

// The message as is, so `unwrap` and `expect` print a sentence.
impl fmt::Debug for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for TimedOut {}

/// Polls `done` until it returns true, for at most `within`; the thread
/// sleeps between polls. For waiting on other processes; from async code,
/// where the awaited change may need the caller's runtime, use
/// [`until_async`].
///
/// `within` is a bound on a wait, never a timing assertion: make it
/// generous.
///
/// # Errors
///
/// [`TimedOut`], naming `what` (a clause: "the server stops"), if `done`
/// never returned true.
pub fn until(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Result<(), TimedOut> {
    let mut polls = Polls::new(within);
    loop {
        if done() {
            return Ok(());
        }
        std::thread::sleep(polls.next_pause(what)?);
    }
}

/// [`until`] for async code: `done` is awaited, and the task sleeps on
/// Tokio's timer between polls, so the caller's runtime runs meanwhile.
///
/// # Errors
///
/// As [`until`].
///
/// # Panics
///
/// Outside a Tokio runtime with its timer enabled.
pub async fn until_async(
    what: &str,
    within: Duration,
    mut done: impl AsyncFnMut() -> bool,
) -> Result<(), TimedOut> {
    let mut polls = Polls::new(within);
    loop {
        if done().await {
            return Ok(());
        }
        tokio::time::sleep(polls.next_pause(what)?).await;
    }
}

/// The pauses of one wait.
struct Polls {
    started: Instant,
    within: Duration,
    pause: Duration,
}

impl Polls {
    fn new(within: Duration) -> Self {
        Self {
            started: Instant::now(),
            within,
            pause: Duration::from_millis(1),
        }
    }

    /// The pause before the next poll, or the error once the time is up.
    fn next_pause(&mut self, what: &str) -> Result<Duration, TimedOut> {
        if self.started.elapsed() >= self.within {
            return Err(TimedOut {
                what: what.to_owned(),
                within: self.within,
            });
        }
        let pause = self.pause;
        self.pause = (self.pause * 2).min(LONGEST_PAUSE);
        Ok(pause)
    }
}
