//! Sessions, their identifiers and the client metadata recorded with them.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::token::TokenHash;
use crate::validation::{Field, Reason, ValidationError};

/// A session's identifier: a UUIDv7, so ids sort by creation time and keyset
/// pagination over them walks sessions in the order they were made.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(Uuid);

impl SessionId {
    /// A new, time-ordered id.
    #[must_use]
    #[expect(
        clippy::new_without_default,
        reason = "a new id is unique: no value is the default"
    )]
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Wraps an id read back from storage or from a caller.
    #[must_use]
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The underlying UUID.
    #[must_use]
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// When the id was made, to the millisecond, from the timestamp a
    /// UUIDv7 carries: a session's creation time with no store read, in
    /// either cache mode. `None` for an id of another version (written by
    /// other code: this crate makes only UUIDv7s).
    #[must_use]
    pub fn minted_at(&self) -> Option<OffsetDateTime> {
        if self.0.get_version_num() != 7 {
            return None;
        }
        let (seconds, nanos) = self.0.get_timestamp()?.to_unix();
        let seconds = i64::try_from(seconds).ok()?;
        OffsetDateTime::from_unix_timestamp(seconds)
            .ok()
            .map(|at| at + time::Duration::nanoseconds(i64::from(nanos)))
    }
}

/// The account a session belongs to. Accounts are owned by the host
/// application; this crate only groups sessions by them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountId(Uuid);

impl AccountId {
    /// Wraps an account's UUID.
    ///
    /// # Errors
    ///
    /// The nil UUID, which is nearly always an uninitialised value, not an account.
    pub fn new(uuid: Uuid) -> Result<Self, ValidationError> {
        if uuid.is_nil() {
            return Err(ValidationError::new(Field::AccountId, Reason::NilUuid));
        }
        Ok(Self(uuid))
    }

    /// The underlying UUID.
    #[must_use]
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// Wraps a UUID that was an `AccountId` before (the compact cache keeps
    /// accounts as bytes), without checking it again.
    pub(crate) const fn from_checked(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

macro_rules! uuid_text {
    ($ty:ident, $field:expr, $parse:expr) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($ty), self.0)
            }
        }

        impl FromStr for $ty {
            type Err = ValidationError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                let uuid = Uuid::try_parse(text)
                    .map_err(|_| ValidationError::new($field, Reason::NotAUuid))?;
                $parse(uuid)
            }
        }
    };
}

uuid_text!(SessionId, Field::SessionId, |uuid| Ok(SessionId(uuid)));
uuid_text!(AccountId, Field::AccountId, AccountId::new);

/// The user agent a session was created from: at most 512 bytes of printable text.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct UserAgent(Box<str>);

impl UserAgent {
    /// The longest accepted user agent, in bytes.
    pub const MAX_LEN: usize = 512;

    /// Checks and wraps a user agent exactly as given: for values already
    /// normalised, such as stored rows. Clients' values go through
    /// [`normalize`](Self::normalize).
    ///
    /// # Errors
    ///
    /// Empty, longer than [`Self::MAX_LEN`] bytes, or containing control characters.
    pub fn new(text: impl Into<String>) -> Result<Self, ValidationError> {
        bounded_text(text.into(), Field::UserAgent, Self::MAX_LEN).map(Self)
    }

    /// A user agent as a client or gateway sends it, made storable: every
    /// run of whitespace (tabs, line breaks and other Unicode whitespace
    /// included) becomes one space, leading and trailing whitespace goes,
    /// and text past [`Self::MAX_LEN`] bytes is cut at a character boundary.
    /// Nothing left means no user agent: `Ok(None)`.
    ///
    /// A user agent is metadata a login should not fail over, so only what
    /// no client legitimately sends is refused: control characters that are
    /// not whitespace (NUL, escape, delete and the like), which break logs
    /// and terminals and which PostgreSQL cannot store (NUL). They are
    /// refused rather than dropped because their presence means the value
    /// is not a user agent at all.
    ///
    /// # Errors
    ///
    /// A control character that is not whitespace, anywhere in `text`.
    pub fn normalize(text: &str) -> Result<Option<Self>, ValidationError> {
        if text.chars().any(|c| c.is_control() && !c.is_whitespace()) {
            return Err(ValidationError::new(
                Field::UserAgent,
                Reason::ControlCharacter,
            ));
        }
        let mut normal = String::with_capacity(text.len().min(Self::MAX_LEN + 1));
        for word in text.split_whitespace() {
            if normal.len() >= Self::MAX_LEN {
                break;
            }
            if !normal.is_empty() {
                normal.push(' ');
            }
            normal.push_str(word);
        }
        if normal.len() > Self::MAX_LEN {
            let mut end = Self::MAX_LEN;
            while !normal.is_char_boundary(end) {
                end -= 1;
            }
            normal.truncate(end);
            normal.truncate(normal.trim_end().len());
        }
        if normal.is_empty() {
            return Ok(None);
        }
        Self::new(normal).map(Some)
    }

    /// The user agent text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A label the client gave the session (for example a device name): at most
/// 128 bytes of printable text.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Label(Box<str>);

impl Label {
    /// The longest accepted label, in bytes.
    pub const MAX_LEN: usize = 128;

    /// Checks and wraps a label.
    ///
    /// # Errors
    ///
    /// Empty, longer than [`Self::MAX_LEN`] bytes, or containing control characters.
    pub fn new(text: impl Into<String>) -> Result<Self, ValidationError> {
        bounded_text(text.into(), Field::Label, Self::MAX_LEN).map(Self)
    }

    /// The label text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! text_debug {
    ($ty:ident) => {
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

text_debug!(UserAgent);
text_debug!(Label);

/// Why a session was revoked: one of the built-in reasons ([`LOGOUT`],
/// [`ADMIN`], [`IDLE`], [`LIMIT`]) or one a host names for its own flows,
/// such as `password_change`.
///
/// Every reason, built-in or not, is a lowercase identifier: a letter `a`
/// to `z`, then up to 31 of `a` to `z`, `0` to `9` and `_` ([`PATTERN`],
/// at most [`MAX_LEN`] bytes). The grammar is strict because a reason
/// travels where free text is a hazard: log lines and span attributes
/// (no spaces, quotes or control characters to forge or break a line),
/// metrics labels (a short identifier, one series per reason a host
/// defines), HTTP query strings and headers (nothing to escape), and the
/// SQL schemas, which enforce the same grammar with a `CHECK`. Upper case
/// is refused rather than folded, so a reason has one spelling.
///
/// [`LOGOUT`]: Self::LOGOUT
/// [`ADMIN`]: Self::ADMIN
/// [`IDLE`]: Self::IDLE
/// [`LIMIT`]: Self::LIMIT
/// [`PATTERN`]: Self::PATTERN
/// [`MAX_LEN`]: Self::MAX_LEN
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RevocationReason(Cow<'static, str>);

impl RevocationReason {
    /// The holder logged out: the HTTP API's default.
    pub const LOGOUT: Self = Self(Cow::Borrowed("logout"));
    /// An operator or an administrator revoked it.
    pub const ADMIN: Self = Self(Cow::Borrowed("admin"));
    /// It was not used for longer than the host allows.
    pub const IDLE: Self = Self(Cow::Borrowed("idle"));
    /// Its account reached the most sessions it may hold, and this one made room.
    pub const LIMIT: Self = Self(Cow::Borrowed("limit"));

    /// The built-in reasons, in the order above.
    pub const BUILT_IN: [Self; 4] = [Self::LOGOUT, Self::ADMIN, Self::IDLE, Self::LIMIT];

    /// The longest reason, in bytes (every byte is ASCII).
    pub const MAX_LEN: usize = 32;

    /// The grammar of every reason as a regular expression, for schemas
    /// (OpenAPI, SQL `CHECK`s) that state it; [`new`](Self::new) is the
    /// check itself.
    pub const PATTERN: &'static str = "^[a-z][a-z0-9_]{0,31}$";

    /// Checks and wraps a reason: a built-in one by its name, or one of the
    /// caller's own in the same grammar.
    ///
    /// # Errors
    ///
    /// Empty, longer than [`Self::MAX_LEN`] bytes, or not a lowercase
    /// identifier (see the type's docs). The error never holds the text.
    pub fn new(text: impl Into<String>) -> Result<Self, ValidationError> {
        let text = identifier(text.into(), Field::RevocationReason)?;
        Ok(Self::BUILT_IN
            .into_iter()
            .find(|built_in| built_in.as_str() == text)
            .unwrap_or(Self(Cow::Owned(text))))
    }

    /// Whether this is one of [`Self::BUILT_IN`].
    #[must_use]
    pub fn is_built_in(&self) -> bool {
        Self::BUILT_IN.contains(self)
    }

    /// The reason's text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RevocationReason {
    type Err = ValidationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::new(text)
    }
}

text_debug!(RevocationReason);

/// Text checked against the identifier grammar of [`RevocationReason`] and
/// [`Revoker`]: a letter `a` to `z`, then up to 31 of `a` to `z`, `0` to
/// `9` and `_`.
fn identifier(text: String, field: Field) -> Result<String, ValidationError> {
    if text.is_empty() {
        return Err(ValidationError::new(field, Reason::Empty));
    }
    if text.len() > RevocationReason::MAX_LEN {
        return Err(ValidationError::new(
            field,
            Reason::TooLong {
                max: RevocationReason::MAX_LEN,
                actual: text.len(),
            },
        ));
    }
    let mut bytes = text.bytes();
    let first_is_letter = bytes.next().is_some_and(|b| b.is_ascii_lowercase());
    let rest_is_identifier =
        bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !(first_is_letter && rest_is_identifier) {
        return Err(ValidationError::new(field, Reason::NotAnIdentifier));
    }
    Ok(text)
}

/// Who revoked a session: the name of the API key that asked for it. In
/// the grammar of [`RevocationReason`] ([`PATTERN`](Self::PATTERN)), for
/// the same reasons: it goes into logs, span attributes and SQL `CHECK`s.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Revoker(Cow<'static, str>);

impl Revoker {
    /// The name of every key given without one (a lone key, or a key file
    /// of bare keys), which holds every scope.
    pub const DEFAULT: Self = Self(Cow::Borrowed("default"));

    /// The longest name, in bytes.
    pub const MAX_LEN: usize = RevocationReason::MAX_LEN;

    /// The grammar, as [`RevocationReason::PATTERN`].
    pub const PATTERN: &'static str = RevocationReason::PATTERN;

    /// Checks and wraps a name.
    ///
    /// # Errors
    ///
    /// As [`RevocationReason::new`], naming the field `revoked_by`; the
    /// error never holds the text.
    pub fn new(text: impl Into<String>) -> Result<Self, ValidationError> {
        let text = identifier(text.into(), Field::RevokedBy)?;
        Ok(if text == Self::DEFAULT.as_str() {
            Self::DEFAULT
        } else {
            Self(Cow::Owned(text))
        })
    }

    /// The name's text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Revoker {
    type Err = ValidationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::new(text)
    }
}

text_debug!(Revoker);

fn bounded_text(text: String, field: Field, max: usize) -> Result<Box<str>, ValidationError> {
    if text.is_empty() {
        return Err(ValidationError::new(field, Reason::Empty));
    }
    if text.len() > max {
        return Err(ValidationError::new(
            field,
            Reason::TooLong {
                max,
                actual: text.len(),
            },
        ));
    }
    // Control characters break log lines and terminals, and NUL cannot be stored in PostgreSQL.
    if text.chars().any(char::is_control) {
        return Err(ValidationError::new(field, Reason::ControlCharacter));
    }
    Ok(text.into_boxed_str())
}

/// What the client told us about itself when the session was created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientMetadata {
    /// The client's user agent.
    pub user_agent: Option<UserAgent>,
    /// The client's IP address.
    pub ip: Option<IpAddr>,
    /// A name for the session chosen by the client or the host application.
    pub label: Option<Label>,
}

/// A login session. Active until it is revoked; sessions never expire by
/// time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The session's id.
    pub id: SessionId,
    /// The account the session logs in.
    pub account_id: AccountId,
    /// The SHA-256 of the session's token.
    pub token_hash: TokenHash,
    /// When the session was created, with microsecond precision.
    pub created_at: OffsetDateTime,
    /// How the session ended, if it was revoked; `None` while active.
    /// Boxed: the sessions a cache holds are all active, and each pays a
    /// pointer for this (8 bytes), not the 64 its fields take inline.
    pub revocation: Option<Box<RevocationDetails>>,
    /// Client metadata recorded at creation.
    pub metadata: ClientMetadata,
}

/// When, why and by whom a session was revoked: all set in the one write
/// that revoked it, and never changed after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationDetails {
    /// When the session was revoked.
    pub at: OffsetDateTime,
    /// Why. `None` for sessions revoked before reasons were recorded
    /// (their stored reason is null; the API shows it as null).
    pub reason: Option<RevocationReason>,
    /// Who: the name of the API key that asked. `None` for a revocation no
    /// key made (an embedding host's own call, an eviction for the limit,
    /// an API without keys) or made before this was recorded.
    pub by: Option<Revoker>,
}

impl RevocationDetails {
    /// The revocation of stored columns: `None` when `at` is (an active
    /// session), whatever the other two hold.
    #[must_use]
    pub fn of(
        at: Option<OffsetDateTime>,
        reason: Option<RevocationReason>,
        by: Option<Revoker>,
    ) -> Option<Box<Self>> {
        at.map(|at| Box::new(Self { at, reason, by }))
    }
}

impl Session {
    /// Whether the session can still be used.
    #[must_use]
    pub const fn is_active(&self) -> bool {
        self.revocation.is_none()
    }

    /// When the session was revoked, if it was.
    #[must_use]
    pub fn revoked_at(&self) -> Option<OffsetDateTime> {
        self.revocation.as_ref().map(|revocation| revocation.at)
    }

    /// Why the session was revoked, if it was and the reason is known.
    #[must_use]
    pub fn revocation_reason(&self) -> Option<&RevocationReason> {
        self.revocation.as_ref()?.reason.as_ref()
    }

    /// Who revoked the session, if it was revoked by an API key.
    #[must_use]
    pub fn revoked_by(&self) -> Option<&Revoker> {
        self.revocation.as_ref()?.by.as_ref()
    }
}

/// Who an active session is: what resolving its token answers in every
/// cache mode, and all a gateway or a request extractor needs.
///
/// A [`SessionCache`](crate::port::cache::SessionCache) answers lookups
/// with it, in full mode from the cached record and in compact mode from its
/// index, which holds nothing else. The whole [`Session`] (created at, user
/// agent, IP, label) is one call away:
/// [`SessionService::session`](crate::SessionService::session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionIdentity {
    /// The session's id.
    pub id: SessionId,
    /// The account the session logs in.
    pub account_id: AccountId,
    /// The SHA-256 of the session's token: the key under which
    /// [`SessionService::session`](crate::SessionService::session) finds the
    /// whole record in memory, without asking the store by id.
    pub token_hash: TokenHash,
}

impl From<&Session> for SessionIdentity {
    fn from(session: &Session) -> Self {
        Self {
            id: session.id,
            account_id: session.account_id,
            token_hash: session.token_hash,
        }
    }
}
