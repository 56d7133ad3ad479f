//! Maps driver and pool errors to the store port's [`StoreError`].

use std::time::Duration;

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::SimpleAsyncConnection;
use session_core::port::store::StoreError;

use crate::pool::{CheckoutError, Connection};

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

/// No working connection could be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckoutFailed {
    #[error("no database connection: {0}")]
    Pool(#[source] CheckoutError),
    #[error("no working database connection within {0:?}")]
    TimedOut(Duration),
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

/// Why a statement failed.
///
/// An error the server reports without saying what kind it is may be the
/// connection dying (an administrator's or a shutdown's "terminating
/// connection"): if the connection no longer answers, the database is out of
/// reach and the error is [`StoreError::Unavailable`].
pub(crate) async fn statement(
    operation: &'static str,
    err: DieselError,
    connection: &mut Connection,
    liveness_limit: Duration,
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
        DieselError::DatabaseError(_, _) => {
            let answers = tokio::time::timeout(liveness_limit, connection.batch_execute("SELECT 1"))
                .await
                .is_ok_and(|ping| ping.is_ok());
            if answers { failed(err) } else { unavailable(err) }
        }
        _ => failed(err),
    }
}
