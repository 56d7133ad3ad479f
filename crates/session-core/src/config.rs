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

/// Sessions a maintenance batch takes at most: one store statement each.
pub const MAINTENANCE_BATCH: u32 = 1_000;

/// How far behind a stored last-seen time may be, beyond the flush
/// interval: marks are recorded to the minute, so a session seen at 10:00:59
/// is stored as seen at 10:00.
const MARK_GRAIN: Duration = Duration::from_secs(60);

/// How many times the last-seen margin (flush interval plus a minute) an
/// idle limit must be at least, so the margin is at most a tenth of it.
const IDLE_MARGIN_RATIO: u32 = 10;

/// Idle revocation: revoke active sessions not seen for [`after`](Self::after).
///
/// Made only by [`new`](Self::new), which checks that last-seen activity
/// is on and the limit is long against its flush interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleRevocation {
    after: Duration,
    margin: Duration,
    /// How often a round runs (default 10 minutes).
    pub interval: Duration,
    /// Sessions revoked per store statement (default [`MAINTENANCE_BATCH`]).
    pub batch: u32,
}

/// Why [`IdleRevocation::new`] refused its settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdleRevocationError {
    /// Last-seen activity is off, so a session in use and one never used
    /// look alike: every session would be judged by its creation time.
    #[error(
        "idle revocation needs last-seen activity: without it a session in use looks idle \
         once it is old enough"
    )]
    LastSeenOff,
    /// The limit is shorter than ten times the last-seen margin.
    #[error(
        "the idle limit must be at least {} s: ten times the last-seen flush interval plus \
         the minute marks are rounded to, by which a stored last-seen time may be behind",
        minimum.as_secs()
    )]
    TooShort {
        /// The shortest limit allowed with this flush interval.
        minimum: Duration,
    },
}

impl IdleRevocation {
    /// Idle revocation of sessions not seen for `after`, given the
    /// last-seen settings in force (`None`: last-seen activity is off).
    ///
    /// # Errors
    ///
    /// [`IdleRevocationError::LastSeenOff`] without last-seen activity;
    /// [`IdleRevocationError::TooShort`] when `after` is under ten times
    /// the flush interval plus a minute.
    pub fn new(
        after: Duration,
        last_seen: Option<&LastSeenSettings>,
    ) -> Result<Self, IdleRevocationError> {
        let last_seen = last_seen.ok_or(IdleRevocationError::LastSeenOff)?;
        let margin = Self::margin(last_seen.flush_interval);
        let minimum = margin.saturating_mul(IDLE_MARGIN_RATIO);
        if after < minimum {
            return Err(IdleRevocationError::TooShort { minimum });
        }
        Ok(Self {
            after,
            margin,
            interval: Duration::from_secs(600),
            batch: MAINTENANCE_BATCH,
        })
    }

    /// How far a stored last-seen time may be behind the last resolve:
    /// one flush interval (another instance's marks not yet written) and
    /// the minute they are rounded down to.
    #[must_use]
    pub const fn margin(flush_interval: Duration) -> Duration {
        flush_interval.saturating_add(MARK_GRAIN)
    }

    /// The limit: sessions not seen for this long are revoked.
    #[must_use]
    pub const fn after(&self) -> Duration {
        self.after
    }

    /// The cutoff at `now`: sessions last seen (or, never seen, created)
    /// before it are idle. `now` less the limit and the margin, so a
    /// session is revoked only after going unseen for the whole limit,
    /// whatever marks are not yet stored.
    #[must_use]
    pub fn cutoff(&self, now: time::OffsetDateTime) -> time::OffsetDateTime {
        now - self.after.saturating_add(self.margin)
    }
}

/// What retention does to revoked sessions, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Revoked sessions whose `revoked_at` is older than this are taken.
    pub after: Duration,
    /// Delete them, or erase their user agent and IP address.
    pub action: crate::port::store::RetentionAction,
    /// How often a round runs (default 10 minutes).
    pub interval: Duration,
    /// Sessions per store statement (default [`MAINTENANCE_BATCH`]).
    pub batch: u32,
}

impl Retention {
    /// Retention of revoked sessions older than `after`, doing `action`.
    #[must_use]
    pub const fn new(after: Duration, action: crate::port::store::RetentionAction) -> Self {
        Self {
            after,
            action,
            interval: Duration::from_secs(600),
            batch: MAINTENANCE_BATCH,
        }
    }
}
