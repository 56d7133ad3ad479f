//! What [`SessionServiceBuilder`](crate::SessionServiceBuilder) takes beyond
//! durations and sizes: last-seen activity and the per-account session
//! limit. Operators tune these; the defaults suit a host.

use std::time::Duration;

/// How last-seen activity is kept, when it is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastSeenSettings {
    /// Marks waiting for the next flush at most; beyond it, marks are
    /// dropped and counted (default 65,536: about 1.5 MiB).
    pub queue_capacity: usize,
    /// How often the [`BackgroundTasks`](crate::BackgroundTasks) write the
    /// queued marks (default 10 s). The current minute is refreshed every
    /// second regardless.
    pub flush_interval: Duration,
}

impl Default for LastSeenSettings {
    fn default() -> Self {
        Self {
            queue_capacity: 65_536,
            flush_interval: Duration::from_secs(10),
        }
    }
}

/// A cap on the active sessions of one account (off unless given to
/// [`SessionServiceBuilder::session_limit`](crate::SessionServiceBuilder::session_limit)).
///
/// The store enforces it in the transaction that inserts the new session,
/// serialized per account, so concurrent logins of one account on several
/// instances never leave more than [`max`](Self::max) active sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimit {
    /// The most active sessions an account may hold, the new one included.
    pub max: std::num::NonZeroU32,
    /// What a login that would pass `max` does.
    pub policy: LimitPolicy,
}

/// What a login does when its account already holds
/// [`SessionLimit::max`] active sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LimitPolicy {
    /// Revoke the least recently seen sessions (by last-seen time, a
    /// session never seen counting as seen when created; ties by creation
    /// time, then id) with reason
    /// [`LIMIT`](crate::RevocationReason::LIMIT), in the same transaction
    /// as the insert, until the new one fits. The default.
    #[default]
    EvictLeastRecentlySeen,
    /// Refuse the login
    /// ([`Error::SessionLimitReached`](crate::Error::SessionLimitReached));
    /// nothing changes.
    Refuse,
}

impl LimitPolicy {
    /// The policy's name, as the command line spells it.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::EvictLeastRecentlySeen => "evict-least-recently-seen",
            Self::Refuse => "refuse",
        }
    }
}
