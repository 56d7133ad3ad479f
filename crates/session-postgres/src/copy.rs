//! The warm's one read of every active identity: a binary `COPY` of three
//! columns on a connection of the driver's own, instead of keyset pages.
//!
//! A `COPY` reads the table in one pass, in whatever order it is stored,
//! with no index to walk and no statement to plan or page to ask for; a warm
//! needs every row and no order. Measured at 10 million sessions the keyset
//! pages alone took 2.2× the `COPY` (docs/BENCHMARKS.md, "The warm at
//! scale"). What it costs in exchange:
//!
//! - one snapshot for the whole read, so vacuum keeps dead rows a little
//!   longer while it runs (seconds at 10 million);
//! - no resuming: a read that fails starts over, as a failed keyset page
//!   already did (the warm as a whole is retried);
//! - no statement timeout, since the read takes as long as the table does:
//!   each chunk of rows must arrive within a read's timeout (plus the
//!   grace) instead, so a server gone silent is still given up on, and the
//!   lock wait is bounded as every call's is.
//!
//! diesel-async cannot send a `COPY`, so it goes through tokio-postgres
//! (`BinaryCopyOutStream` decodes the rows), opened by the pool's
//! connector with the same hosts, TLS and timeouts. It runs in a read-only
//! transaction of its own, whose `SET LOCAL`s end with it, so it works
//! behind a transaction pooler too.

use std::pin::Pin;
use std::time::Duration;

use futures_core::Stream;
use session_core::port::store::{IdentityPage, StoreError, StoredIdentity};
use tokio::sync::mpsc::Sender;
use tokio_postgres::binary_copy::{BinaryCopyOutRow, BinaryCopyOutStream};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use uuid::Uuid;

use crate::call::{ANSWER_GRACE, Work, millis};
use crate::store::{PgSessionStore, SESSIONS_TABLE};

/// Every active row's identity columns, in the order [`COLUMNS`] gives.
const COPY_ACTIVE_IDENTITIES: &str = "COPY (SELECT id, account_id, token_hash \
     FROM session.sessions WHERE revoked_at IS NULL) TO STDOUT (FORMAT binary)";
const COLUMNS: [Type; 3] = [Type::UUID, Type::UUID, Type::BYTEA];

/// What the read is called in its errors.
const OPERATION: &str = "read every active identity (COPY)";

/// Why the read failed.
#[derive(Debug, thiserror::Error)]
enum CopyFailed {
    #[error("{OPERATION}: no connection: {0}")]
    Connect(#[source] diesel::ConnectionError),
    #[error("{OPERATION}: {0}")]
    Database(#[source] tokio_postgres::Error),
}

impl PgSessionStore {
    /// Sends every active identity to `pages`, `page_size` rows a page; a
    /// failure is sent last.
    pub(crate) async fn copy_active_identities(
        &self,
        page_size: u32,
        pages: Sender<Result<IdentityPage, StoreError>>,
    ) {
        if let Err(err) = self
            .copy_into(
                usize::try_from(page_size.max(1)).unwrap_or(usize::MAX),
                &pages,
            )
            .await
        {
            // The receiver may be gone: then nobody needs to know.
            drop(pages.send(Err(err)).await);
        }
    }

    async fn copy_into(
        &self,
        page_size: usize,
        pages: &Sender<Result<IdentityPage, StoreError>>,
    ) -> Result<(), StoreError> {
        let limit = self.limits.timeout(Work::Read) + ANSWER_GRACE;
        let connection = self
            .connector
            .connect_driver()
            .await
            .map_err(|err| StoreError::Unavailable(Box::new(CopyFailed::Connect(err))))?;
        let client = &connection.client;
        let begin = format!(
            "BEGIN READ ONLY; SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = {}",
            millis(self.limits.lock_timeout())
        );
        within(limit, client.batch_execute(&begin)).await?;
        let stream = within(limit, client.copy_out(COPY_ACTIVE_IDENTITIES)).await?;
        let mut rows = std::pin::pin!(BinaryCopyOutStream::new(stream, &COLUMNS));
        let mut page = IdentityPage::default();
        while let Some(row) = within(limit, next(rows.as_mut())).await? {
            match identity(&row)?.into_identity(SESSIONS_TABLE) {
                Ok(identity) => page.identities.push(identity),
                Err(rejected) => page.rejected.push(rejected),
            }
            if page.identities.len() + page.rejected.len() >= page_size
                && pages.send(Ok(std::mem::take(&mut page))).await.is_err()
            {
                return Ok(());
            }
        }
        within(limit, client.batch_execute("COMMIT")).await?;
        drop(pages.send(Ok(page)).await);
        Ok(())
    }
}

/// The next row, or `None` after the last.
async fn next(
    mut rows: Pin<&mut BinaryCopyOutStream>,
) -> Result<Option<BinaryCopyOutRow>, tokio_postgres::Error> {
    std::future::poll_fn(|cx| rows.as_mut().poll_next(cx))
        .await
        .transpose()
}

/// A row's columns in the raw forms the domain checks.
fn identity(row: &BinaryCopyOutRow) -> Result<StoredIdentity, StoreError> {
    Ok(StoredIdentity {
        id: row.try_get::<Uuid>(0).map_err(database)?,
        account_id: row.try_get::<Uuid>(1).map_err(database)?,
        token_hash: row.try_get::<&[u8]>(2).map_err(database)?.to_vec(),
    })
}

/// `step`'s result, or the crate's "no answer" if `limit` passes first
/// (the connection is then dropped, and closed, with the read).
async fn within<T>(
    limit: Duration,
    step: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, step).await {
        Ok(result) => result.map_err(database),
        Err(_) => Err(crate::error::no_answer(OPERATION, limit)),
    }
}

/// A driver error: the database out of reach, cancelling or shutting down
/// (retrying later may work), or anything else.
fn database(err: tokio_postgres::Error) -> StoreError {
    let retryable = err.is_closed()
        || err.code().is_none_or(|code| {
            let class = &code.code()[..2];
            // Connection, resources, operator intervention (a cancel, a
            // shutdown), a conflict to retry; or a standby after a failover.
            matches!(class, "08" | "53" | "57" | "40")
                || *code == SqlState::READ_ONLY_SQL_TRANSACTION
        });
    if retryable {
        StoreError::Unavailable(Box::new(CopyFailed::Database(err)))
    } else {
        StoreError::Failed(Box::new(CopyFailed::Database(err)))
    }
}
