//! Columns read in raw forms any stored value fits, so a value the domain
//! rejects reaches [`StoredSession::into_session`] (and is skipped and
//! counted there) instead of failing the whole read: diesel's
//! `OffsetDateTime` refuses `'infinity'` and years past 9999, and text that
//! is not UTF-8 (which a `SQL_ASCII` database holds) fails at the server,
//! which checks every text value it sends a UTF-8 client.
//!
//! [`StoredSession::into_session`]: session_core::port::store::StoredSession::into_session

use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz};

/// Microseconds from PostgreSQL's epoch (2000-01-01T00:00:00Z) to the Unix
/// epoch's: what is added to a `timestamptz` to make it Unix microseconds.
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// A `timestamptz` as PostgreSQL sends it: microseconds since
/// 2000-01-01T00:00:00Z, `i64::MAX` for `'infinity'` and `i64::MIN` for
/// `'-infinity'`. Any value decodes. Public only to the `fuzzing` feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromSqlRow, AsExpression)]
#[diesel(sql_type = Timestamptz)]
pub struct RawInstant(pub i64);

impl RawInstant {
    /// Microseconds since 1970-01-01T00:00:00Z (UTC), as
    /// [`StoredSession`](session_core::port::store::StoredSession) takes
    /// instants. Saturating, never wrapping: `'infinity'` stays `i64::MAX`,
    /// `'-infinity'` stays near `i64::MIN`, both far outside the domain's
    /// range, so they are rejected there.
    #[must_use]
    pub const fn unix_micros(self) -> i64 {
        self.0.saturating_add(PG_EPOCH_UNIX_MICROS)
    }

    /// The `timestamptz` of `micros` microseconds since the Unix epoch,
    /// saturating as [`unix_micros`](Self::unix_micros) does.
    #[must_use]
    pub const fn from_unix_micros(micros: i64) -> Self {
        Self(micros.saturating_sub(PG_EPOCH_UNIX_MICROS))
    }
}

impl FromSql<Timestamptz, Pg> for RawInstant {
    fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
        <i64 as FromSql<BigInt, Pg>>::from_sql(value).map(Self)
    }
}

impl ToSql<Timestamptz, Pg> for RawInstant {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <i64 as ToSql<BigInt, Pg>>::to_sql(&self.0, out)
    }
}

diesel::define_sql_function! {
    /// `convert_to(text, encoding)`: the text's bytes in `encoding`. With
    /// [`AS_STORED`], the bytes as stored, neither converted nor checked, as
    /// `bytea`, which the server sends as it is.
    fn convert_to(
        string: Nullable<Text>,
        dest_encoding: Text,
    ) -> Nullable<diesel::sql_types::Bytea>;
}

/// The encoding [`convert_to()`] leaves text in as stored: PostgreSQL
/// converts nothing to or from `SQL_ASCII`.
pub(crate) const AS_STORED: &str = "SQL_ASCII";
