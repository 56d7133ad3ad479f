//! How SQLite failures map onto the port's [`StoreError`].

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use session_core::port::store::StoreError;

/// SQLite's message for `SQLITE_NOTADB`. diesel exposes SQLite's message but
/// not its result code; SQLite's messages for result codes are fixed strings.
pub(crate) const NOT_A_DATABASE: &str = "file is not a database";

/// Messages of SQLite failures that can pass on their own: the file is locked
/// by another process (`SQLITE_BUSY`, after `busy_timeout`), the disk failed
/// or is full, or the file cannot be opened right now.
const TRANSIENT: [&str; 5] = [
    "database is locked",
    "database table is locked",
    "disk I/O error",
    "database or disk is full",
    "unable to open database file",
];

/// Classifies a failed statement for the caller: a duplicate token hash, a
/// store that may answer again later, or a failure retrying will not fix.
pub(crate) fn store_error(err: DieselError) -> StoreError {
    match &err {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
            if info.message().contains("sessions.token_hash") =>
        {
            StoreError::DuplicateTokenHash
        }
        DieselError::DatabaseError(_, info) if is_transient(info.message()) => {
            StoreError::Unavailable(Box::new(err))
        }
        _ => StoreError::Failed(Box::new(err)),
    }
}

/// Whether the error is SQLite saying the file is not a database.
pub(crate) fn is_not_a_database(err: &DieselError) -> bool {
    matches!(err, DieselError::DatabaseError(_, info) if info.message().starts_with(NOT_A_DATABASE))
}

fn is_transient(message: &str) -> bool {
    TRANSIENT.iter().any(|known| message.starts_with(known))
}

/// The outcome of a task on the blocking pool that did not return.
pub(crate) fn join_error(err: tokio::task::JoinError) -> StoreError {
    if err.is_cancelled() {
        // The runtime is shutting down; the operation did not run.
        StoreError::Unavailable(Box::new(err))
    } else {
        StoreError::Failed(Box::new(err))
    }
}
