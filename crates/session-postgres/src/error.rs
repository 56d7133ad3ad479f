//! Maps driver and pool errors to the store port's [`StoreError`].

use std::time::Duration;

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use session_core::port::store::StoreError;

use crate::pool::CheckoutError;

/// The unique constraint on `token_hash` (see the first migration).
const TOKEN_HASH_KEY: &str = "sessions_token_hash_key";

/// A failed statement, named by what the store was doing.
#[derive(Debug, thiserror::Error)]
#[error("{operation}: {source}")]
pub(crate) struct OperationError {
    operation: &'static str,
    #[source]
    source: DieselError,
}

/// A statement the server did not finish in time, or never answered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TimedOut {
    /// The server cancelled it (`statement_timeout`, `lock_timeout`), or it
    /// failed only after one of them had passed.
    #[error(
        "{operation}: the database did not finish in time (statement or lock timeout): {source}"
    )]
    Cancelled {
        operation: &'static str,
        #[source]
        source: DieselError,
    },
    /// No answer came: the connection was closed.
    #[error("{operation}: no answer from the database within {limit:?}; the connection was closed")]
    NoAnswer {
        operation: &'static str,
        limit: Duration,
    },
    /// The statement ran but its transaction could not be ended: a write
    /// may or may not have been committed.
    #[error(
        "{operation}: the transaction could not be ended (a write may or may not have been \
         committed); the connection was closed"
    )]
    NotEnded { operation: &'static str },
}

/// A statement prepared in one exchange was not found in the next: its
/// connection's messages reach more than one server session.
#[derive(Debug, thiserror::Error)]
#[error(
    "{operation}: a statement this connection prepared is unknown to the server session that \
     ran it, so its messages reach more than one session: a transaction pooler (PgBouncer \
     with pool_mode = transaction) is between this service and PostgreSQL. Set the statement \
     mode to per-transaction (--pg-statements per-transaction, PgConfig::statements): {source}"
)]
pub(crate) struct PoolerSuspected {
    operation: &'static str,
    #[source]
    source: DieselError,
}

/// No working connection could be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckoutFailed {
    #[error("no database connection: {0}")]
    Pool(#[source] CheckoutError),
    #[error("no working database connection within {0:?}")]
    TimedOut(Duration),
    #[error("a new database connection could not be set up for the call: {0}")]
    Setup(#[source] DieselError),
}

/// Why obtaining a connection failed. Everything but a misbuilt pool is the
/// database being out of reach, which retrying later may fix.
pub(crate) fn checkout(err: CheckoutError) -> StoreError {
    match err {
        CheckoutError::Timeout(_) | CheckoutError::Backend(_) | CheckoutError::Closed => {
            StoreError::Unavailable(Box::new(CheckoutFailed::Pool(err)))
        }
        CheckoutError::NoRuntimeSpecified | CheckoutError::PostCreateHook(_) => {
            StoreError::Failed(Box::new(CheckoutFailed::Pool(err)))
        }
    }
}

pub(crate) fn checkout_timed_out(limit: Duration) -> StoreError {
    StoreError::Unavailable(Box::new(CheckoutFailed::TimedOut(limit)))
}

/// A connection whose call timeouts could not be set: the database is out
/// of reach, or refuses work.
pub(crate) fn setup(err: DieselError) -> StoreError {
    StoreError::Unavailable(Box::new(CheckoutFailed::Setup(err)))
}

/// A statement with no answer within its bound.
pub(crate) fn no_answer(operation: &'static str, limit: Duration) -> StoreError {
    StoreError::Unavailable(Box::new(TimedOut::NoAnswer { operation, limit }))
}

/// A statement whose transaction could not be ended.
pub(crate) fn not_ended(operation: &'static str) -> StoreError {
    StoreError::Unavailable(Box::new(TimedOut::NotEnded { operation }))
}

/// Why a statement failed.
///
/// A timeout the server enforced (its message says so in English; in any
/// language, it failed only after the shortest of its timeouts had passed:
/// `timed_out`) is [`StoreError::Unavailable`]: the statement changed
/// nothing and retrying later may work. An error the server reports
/// without saying what kind it is may also be the connection dying (an
/// administrator's or a shutdown's "terminating connection"): if the
/// connection no longer `answers`, the database is out of reach and the
/// error is [`StoreError::Unavailable`] too.
pub(crate) fn statement(
    operation: &'static str,
    err: DieselError,
    timed_out: bool,
    answers: bool,
) -> StoreError {
    let unavailable =
        |source| StoreError::Unavailable(Box::new(OperationError { operation, source }));
    let failed = |source| StoreError::Failed(Box::new(OperationError { operation, source }));
    match &err {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
            if info.constraint_name() == Some(TOKEN_HASH_KEY) =>
        {
            StoreError::DuplicateTokenHash
        }
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection
            | DatabaseErrorKind::UnableToSendCommand
            // A failover left us on a standby, or a conflict to retry.
            | DatabaseErrorKind::ReadOnlyTransaction
            | DatabaseErrorKind::SerializationFailure,
            _,
        ) => unavailable(err),
        DieselError::DatabaseError(DatabaseErrorKind::Unknown, info)
            if info.message().starts_with("prepared statement \"")
                && info.message().ends_with("\" does not exist") =>
        {
            StoreError::Failed(Box::new(PoolerSuspected {
                operation,
                source: err,
            }))
        }
        DieselError::DatabaseError(DatabaseErrorKind::Unknown, info)
            if timed_out || info.message().starts_with("canceling statement due to") =>
        {
            StoreError::Unavailable(Box::new(TimedOut::Cancelled {
                operation,
                source: err,
            }))
        }
        DieselError::DatabaseError(_, _) if !answers => unavailable(err),
        _ => failed(err),
    }
}
