//! Listing an account's sessions, newest first, a page at a time: what a
//! host asks for and gets back, and what a store builds.

use time::OffsetDateTime;

use crate::port::store::InvalidRow;
use crate::session::{Session, SessionId};

/// Which of an account's sessions to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListScope {
    /// Only sessions that are still active.
    #[default]
    Active,
    /// Active and revoked sessions.
    IncludeRevoked,
}

/// A place in an account's newest-first list: the page that starts here
/// holds the sessions strictly older than this one, by `(created_at, id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListPosition {
    /// The `created_at` of the last session of the previous page.
    pub created_at: OffsetDateTime,
    /// Its id, which orders sessions created at the same instant.
    pub id: SessionId,
}

impl ListPosition {
    /// The position just after `session`.
    #[must_use]
    pub fn after(session: &Session) -> Self {
        Self {
            created_at: session.created_at,
            id: session.id,
        }
    }
}

/// How many sessions one page of a list holds at most: 1 to
/// [`PageLimit::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PageLimit(u32);

impl PageLimit {
    /// The page size when the caller gives none.
    pub const DEFAULT: Self = Self(50);
    /// The largest page: bounds what one request makes the store read and
    /// the service hold.
    pub const MAX: Self = Self(200);

    /// `limit`, if it is within 1 to [`PageLimit::MAX`].
    #[must_use]
    pub const fn new(limit: u32) -> Option<Self> {
        if limit >= 1 && limit <= Self::MAX.0 {
            Some(Self(limit))
        } else {
            None
        }
    }

    /// The bound, as a number of sessions.
    #[must_use]
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl Default for PageLimit {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Which page of a list to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageRequest {
    /// Where the page starts; `None` for the newest session.
    pub after: Option<ListPosition>,
    /// The most sessions the page holds.
    pub limit: PageLimit,
}

/// One page of an account's sessions:
/// [`SessionService::list`](crate::SessionService::list) returns it, and a
/// [`SessionStore::list_for_account`](crate::port::store::SessionStore::list_for_account)
/// builds it.
#[derive(Debug, Default)]
pub struct AccountPage {
    /// The sessions, newest first.
    pub sessions: Vec<Session>,
    /// Rows of the page the domain rejects, left out of `sessions` (always
    /// empty from the service, which logs and counts them).
    pub rejected: Vec<InvalidRow>,
    /// Where the next page starts (after the last row of this one, valid or
    /// not), or `None` when no row follows.
    pub next: Option<ListPosition>,
}

impl AccountPage {
    /// The page from rows read newest first after the requested position,
    /// at most `limit` + 1 of them, each with its position and what the
    /// domain made of it: the one rule every store pages by. Rows past
    /// `limit` only tell that another page follows.
    pub fn from_rows(
        rows: impl IntoIterator<Item = (ListPosition, Result<Session, InvalidRow>)>,
        limit: PageLimit,
    ) -> Self {
        let mut page = Self::default();
        let mut last = None;
        for (read, (position, row)) in rows.into_iter().enumerate() {
            if read == limit.get() as usize {
                page.next = last;
                break;
            }
            last = Some(position);
            match row {
                Ok(session) => page.sessions.push(session),
                Err(invalid) => page.rejected.push(invalid),
            }
        }
        page
    }
}
