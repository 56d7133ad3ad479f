//! Why an input is not a valid domain value: the error every constructor
//! of a checked field returns ([`Label::new`](crate::Label::new),
//! [`AccountId::new`](crate::AccountId::new), the ids' `FromStr`, ...), and
//! [`parse_ip`] for a client's address.

use std::fmt;
use std::net::IpAddr;

/// An input that does not make a valid domain value. Names the field and never
/// echoes the input, which may be secret or hostile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ValidationError {
    /// The field that was rejected.
    pub field: Field,
    /// Why it was rejected.
    pub reason: Reason,
}

impl ValidationError {
    /// Builds an error for `field`.
    #[must_use]
    pub const fn new(field: Field, reason: Reason) -> Self {
        Self { field, reason }
    }
}

/// A field of the session model that can be rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Field {
    /// [`SessionId`](crate::SessionId).
    SessionId,
    /// [`AccountId`](crate::AccountId).
    AccountId,
    /// [`UserAgent`](crate::UserAgent).
    UserAgent,
    /// The client IP address.
    Ip,
    /// [`Label`](crate::Label).
    Label,
    /// A session's `created_at`, as a store holds it.
    CreatedAt,
    /// A session's `revoked_at`, as a store holds it.
    RevokedAt,
    /// [`RevocationReason`](crate::RevocationReason): why a session was revoked.
    RevocationReason,
    /// [`Revoker`](crate::Revoker): who revoked a session (an API key's name).
    RevokedBy,
    /// The "not before" mark, as a store holds it or a client gives it.
    NotBefore,
}

impl Field {
    /// The field's name as clients spell it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::SessionId => "session_id",
            Self::AccountId => "account_id",
            Self::UserAgent => "user_agent",
            Self::Ip => "ip",
            Self::Label => "label",
            Self::CreatedAt => "created_at",
            Self::RevokedAt => "revoked_at",
            Self::RevocationReason => "reason",
            Self::RevokedBy => "revoked_by",
            Self::NotBefore => "not_before",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a field was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Reason {
    /// The text is empty; omit the field instead.
    #[error("must not be empty (omit the field instead)")]
    Empty,
    /// The text is longer than allowed.
    #[error("must be at most {max} bytes, got {actual}")]
    TooLong {
        /// The limit in bytes.
        max: usize,
        /// The length received.
        actual: usize,
    },
    /// The text contains a control character.
    #[error("must not contain control characters")]
    ControlCharacter,
    /// The text is not a UUID.
    #[error("must be a UUID")]
    NotAUuid,
    /// The UUID is the nil UUID.
    #[error("must not be the nil UUID")]
    NilUuid,
    /// The text is not an IPv4 or IPv6 address.
    #[error("must be an IPv4 or IPv6 address")]
    NotAnIpAddress,
    /// Stored text is not valid UTF-8 (a database in `SQL_ASCII`, or SQLite,
    /// holds whatever bytes it was given).
    #[error("must be UTF-8 text")]
    NotUtf8,
    /// A stored instant is outside the range the domain accepts (see
    /// [`stored_instant`](crate::port::store::stored_instant)), or infinite.
    #[error("must be an instant from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z")]
    InstantOutOfRange,
    /// The text is not a lowercase identifier: the grammar of
    /// [`RevocationReason::new`](crate::RevocationReason::new) and
    /// [`Revoker::new`](crate::Revoker::new).
    #[error("must be a lowercase identifier: a letter a-z, then up to 31 of a-z, 0-9 and _")]
    NotAnIdentifier,
    /// A stored revocation reason on a session that is not revoked.
    #[error("must be null while the session is active")]
    ReasonWithoutRevocation,
}

/// Parses a client IP address, naming the field on failure.
///
/// # Errors
///
/// The text is not an IPv4 or IPv6 address.
pub fn parse_ip(text: &str) -> Result<IpAddr, ValidationError> {
    text.parse::<IpAddr>()
        // An IPv4 client seen through an IPv6 socket is still an IPv4 client.
        .map(|ip| ip.to_canonical())
        .map_err(|_| ValidationError::new(Field::Ip, Reason::NotAnIpAddress))
}
