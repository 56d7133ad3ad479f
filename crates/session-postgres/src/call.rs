//! One store call, bounded from checkout to answer: a connection from the
//! pool with the call's timeouts set on it (which also proves it alive),
//! the statement within its timeout plus a grace, and, per transaction, the
//! `COMMIT` or `ROLLBACK` that ends it.
//!
//! Each call does the same three steps, in this order:
//!
//! ```text
//! let mut connection = self.connection(Work::Write).await?;
//! let outcome = self.bounded(Work::Write, statement.execute(&mut connection)).await;
//! self.finish("what the call does", outcome, connection).await
//! ```

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use diesel::QueryResult;
use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};
use session_core::port::store::StoreError;
use tokio::time::Instant;

use crate::change_log::Wake;
use crate::config::Statements;
use crate::error;
use crate::pool::Connection;
use crate::store::PgSessionStore;

/// How long the store waits for an answer past a statement's own timeout
/// before it takes the server or the network to be gone and closes the
/// connection: a server that cancelled the statement says so at once, so
/// only a silence lasts this long.
pub(crate) const ANSWER_GRACE: Duration = Duration::from_secs(1);

/// What a call does, which decides its statement timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Work {
    /// Reads: lookups, lists, the warm's pages, the change log, health.
    Read,
    /// Writes: insert, revocations, last-seen marks, pruning.
    Write,
}

/// The bounds of every call, and the SQL that sets them on a connection.
#[derive(Debug)]
pub(crate) struct Limits {
    pub(crate) statements: Statements,
    read_timeout: Duration,
    write_timeout: Duration,
    lock_timeout: Duration,
    /// Sent at checkout before a read: the timeouts (and, per transaction, `BEGIN`).
    read_setup: String,
    /// Sent at checkout before a write, by whether its commit wakes the
    /// change log's readers ([`WAKE_AT_COMMIT`]): the timeouts and that setting.
    write_setup: [String; 2],
    /// Sent at checkout before a write of several statements: always in a
    /// transaction, whatever `statements` says.
    write_transaction_setup: [String; 2],
}

/// The server setting that makes a transaction's first change-log entry
/// that takes something away (a revocation, a truncation, a not-before
/// mark) send the `NOTIFY` that wakes the log's readers, at its commit
/// (migration `2026-12-07-000003_wake_at_commit`). Every write sets it, `on` or `off`,
/// in its checkout's round trip, so a value left on a pooled connection
/// never decides.
pub(crate) const WAKE_AT_COMMIT: &str = "session.wake_at_commit";

impl Limits {
    pub(crate) fn new(
        statements: Statements,
        read_timeout: Duration,
        write_timeout: Duration,
        lock_timeout: Duration,
    ) -> Self {
        // Per transaction, `SET LOCAL` ends with it, so nothing is left on a
        // server session a pooler hands to others; on a connection of its
        // own, a plain `SET` stays until the next call sets it again.
        let setup = |statement: Duration, transaction: bool, wake: Option<bool>| {
            let (begin, set) = if transaction {
                ("BEGIN; ", "SET LOCAL")
            } else {
                ("", "SET")
            };
            let wake = wake.map_or(String::new(), |wake| {
                format!(
                    "; {set} {WAKE_AT_COMMIT} = {}",
                    if wake { "on" } else { "off" }
                )
            });
            format!(
                "{begin}{set} statement_timeout = {}; {set} lock_timeout = {}{wake}",
                millis(statement),
                millis(lock_timeout)
            )
        };
        let per_transaction = statements == Statements::PerTransaction;
        let write = |transaction: bool| {
            [false, true].map(|wake| setup(write_timeout, transaction, Some(wake)))
        };
        Self {
            statements,
            read_setup: setup(read_timeout, per_transaction, None),
            write_setup: write(per_transaction),
            write_transaction_setup: write(true),
            read_timeout,
            write_timeout,
            lock_timeout,
        }
    }

    /// The statement timeout of `work`.
    pub(crate) const fn timeout(&self, work: Work) -> Duration {
        match work {
            Work::Read => self.read_timeout,
            Work::Write => self.write_timeout,
        }
    }

    /// How long a statement may wait for a lock.
    pub(crate) const fn lock_timeout(&self) -> Duration {
        self.lock_timeout
    }

    /// The shortest time after which the server itself cancels a statement
    /// of `work`: an error that took this long is taken as a timeout.
    fn first_cancel(&self, work: Work) -> Duration {
        self.timeout(work).min(self.lock_timeout)
    }

    fn setup(&self, work: Work, transaction: bool, wake_at_commit: bool) -> &str {
        let wake = usize::from(wake_at_commit);
        match work {
            Work::Write if transaction => &self.write_transaction_setup[wake],
            Work::Read => &self.read_setup,
            Work::Write => &self.write_setup[wake],
        }
    }
}

/// Whole milliseconds, at least 1 (0 would mean no timeout to PostgreSQL).
pub(crate) fn millis(duration: Duration) -> u128 {
    duration.as_millis().max(1)
}

/// A connection checked out for one call. Dropped before
/// [`finish`](PgSessionStore::finish) ends it (a caller gone mid-call), a
/// connection with a transaction still open is closed, never handed to the
/// next call, whose `COMMIT` would otherwise end this one's work too.
pub(crate) struct Checkout {
    /// `None` only once [`close`](Self::close) or [`release`](Self::release) took it.
    connection: Option<Connection>,
    in_transaction: bool,
    /// Where [`release`](Self::release) keeps the connection instead of
    /// returning it to the pool: the change log's reader's own.
    home: Option<KeptConnection>,
}

/// A connection kept out of the pool between calls; see
/// [`PgSessionStore::log_connection`].
pub(crate) type KeptConnection = Arc<Mutex<Option<Connection>>>;

fn kept(slot: &Mutex<Option<Connection>>) -> MutexGuard<'_, Option<Connection>> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Checkout {
    fn connection(&mut self) -> &mut Connection {
        self.connection
            .as_mut()
            .unwrap_or_else(|| unreachable!("a checkout is used only until it is let go"))
    }

    /// Closes the connection instead of returning it to the pool: it may be
    /// mid-reply, or in a transaction that could not be ended.
    fn close(mut self) {
        if let Some(connection) = self.connection.take() {
            drop(Connection::take(connection));
        }
    }

    /// Returns the connection to the pool, or to its home.
    fn release(mut self) {
        self.in_transaction = false;
        let connection = self.connection.take();
        if let Some(home) = self.home.take() {
            *kept(&home) = connection;
        }
    }
}

impl Deref for Checkout {
    type Target = AsyncPgConnection;

    fn deref(&self) -> &AsyncPgConnection {
        self.connection
            .as_ref()
            .unwrap_or_else(|| unreachable!("a checkout is used only until it is let go"))
    }
}

impl DerefMut for Checkout {
    fn deref_mut(&mut self) -> &mut AsyncPgConnection {
        self.connection()
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if self.in_transaction
            && let Some(connection) = self.connection.take()
        {
            drop(Connection::take(connection));
        }
    }
}

/// A statement's result within its bound, or none if the bound passed first.
pub(crate) struct Outcome<T> {
    work: Work,
    answer: Option<QueryResult<T>>,
    took: Duration,
}

impl PgSessionStore {
    /// A working connection from the pool, within the checkout timeout,
    /// with `work`'s timeouts set on it and, per transaction, a transaction
    /// begun. The round trip that sets them also proves a pooled connection
    /// alive: one the server closed while it sat in the pool (a restart, a
    /// failover, `pg_terminate_backend`), or that no longer answers, is
    /// dropped and another taken, so the call does not fail for it.
    pub(crate) async fn connection(&self, work: Work) -> Result<Checkout, StoreError> {
        let per_transaction = self.limits.statements == Statements::PerTransaction;
        self.checkout(work, per_transaction, false).await
    }

    /// As [`connection`](Self::connection) for a write that may revoke,
    /// with the [`Wake`] that says who wakes the log's readers once it
    /// commits: its own commit when no other such write of this store is in
    /// flight, else the store's coalesced wake-up. Keep the `Wake` until the
    /// call is finished, and call [`Wake::changed`] if it changed anything.
    pub(crate) async fn change(&self) -> Result<(Checkout, Wake), StoreError> {
        let per_transaction = self.limits.statements == Statements::PerTransaction;
        let wake = self.waker.writing();
        let checkout = self
            .checkout(Work::Write, per_transaction, wake.at_commit())
            .await?;
        Ok((checkout, wake))
    }

    /// As [`change`](Self::change), with a write transaction begun whatever
    /// the statement mode: for a write of several statements, which
    /// [`finish`](Self::finish) commits together or rolls back.
    pub(crate) async fn change_transaction(&self) -> Result<(Checkout, Wake), StoreError> {
        let wake = self.waker.writing();
        let checkout = self.checkout(Work::Write, true, wake.at_commit()).await?;
        Ok((checkout, wake))
    }

    async fn checkout(
        &self,
        work: Work,
        transaction: bool,
        wake_at_commit: bool,
    ) -> Result<Checkout, StoreError> {
        let deadline = Instant::now() + self.checkout_timeout;
        loop {
            let mut connection = match tokio::time::timeout_at(deadline, self.pool.get()).await {
                Ok(Ok(connection)) => connection,
                Ok(Err(err)) => return Err(error::checkout(err)),
                Err(_) => return Err(error::checkout_timed_out(self.checkout_timeout)),
            };
            let reused = deadpool::managed::Object::metrics(&connection).recycle_count > 0;
            let limit = self
                .connect_timeout
                .min(deadline.saturating_duration_since(Instant::now()));
            let set = tokio::time::timeout(
                limit,
                connection.batch_execute(self.limits.setup(work, transaction, wake_at_commit)),
            )
            .await;
            match set {
                Ok(Ok(())) => {
                    return Ok(Checkout {
                        connection: Some(connection),
                        in_transaction: transaction,
                        home: None,
                    });
                }
                Ok(Err(err)) => {
                    drop(Connection::take(connection));
                    if !reused || Instant::now() >= deadline {
                        return Err(error::setup(err));
                    }
                }
                Err(_) => {
                    drop(Connection::take(connection));
                    if !reused || Instant::now() >= deadline {
                        return Err(error::checkout_timed_out(self.checkout_timeout));
                    }
                }
            }
        }
    }

    /// A connection for the change log's reads, and whether it was kept
    /// from the previous read.
    ///
    /// The follower reads every few milliseconds while writes arrive, and
    /// setting the timeouts at each checkout was a round trip of every
    /// propagation. With cached statements (connections of the service's
    /// own), a read's connection is kept out of the pool for the next read,
    /// its timeouts still set (only reads use it); one the driver knows
    /// closed is dropped and another checked out, and a read that fails on
    /// a kept connection is the caller's to retry on a new one. So the
    /// follower holds one of the pool's connections while it runs. Per
    /// transaction (behind a pooler), every read checks out as any call,
    /// since its timeouts end with its transaction.
    pub(crate) async fn log_connection(&self) -> Result<(Checkout, bool), StoreError> {
        if self.limits.statements != Statements::Cached {
            return Ok((self.connection(Work::Read).await?, false));
        }
        let home = Some(Arc::clone(&self.log_reader));
        let taken = kept(&self.log_reader).take();
        if let Some(mut connection) = taken {
            if !diesel_async::pooled_connection::PoolableConnection::is_broken(&mut *connection) {
                let checkout = Checkout {
                    connection: Some(connection),
                    in_transaction: false,
                    home,
                };
                return Ok((checkout, true));
            }
            drop(Connection::take(connection));
        }
        let mut checkout = self.checkout(Work::Read, false, false).await?;
        checkout.home = home;
        Ok((checkout, false))
    }

    /// Whether the change log's reader holds a connection now.
    pub(crate) fn log_connection_kept(&self) -> bool {
        kept(&self.log_reader).is_some()
    }

    /// Runs `statement` for at most `work`'s statement timeout plus
    /// [`ANSWER_GRACE`]. The server cancels it at its timeout; the grace is
    /// for a server or network that has gone silent and cannot say so.
    pub(crate) async fn bounded<T>(
        &self,
        work: Work,
        statement: impl Future<Output = QueryResult<T>>,
    ) -> Outcome<T> {
        let started = Instant::now();
        let limit = self.limits.timeout(work) + ANSWER_GRACE;
        let answer = tokio::time::timeout(limit, statement).await.ok();
        Outcome {
            work,
            answer,
            took: started.elapsed(),
        }
    }

    /// Ends the call: commits (per transaction) and returns the value, or
    /// maps the failure, named by `operation`. A connection that did not
    /// answer in time, or whose transaction could not be ended, is closed
    /// (it may be mid-reply); any other goes back to the pool.
    pub(crate) async fn finish<T>(
        &self,
        operation: &'static str,
        outcome: Outcome<T>,
        mut checkout: Checkout,
    ) -> Result<T, StoreError> {
        let Outcome { work, answer, took } = outcome;
        let per_transaction = checkout.in_transaction;
        match answer {
            None => {
                checkout.close();
                Err(error::no_answer(
                    operation,
                    self.limits.timeout(work) + ANSWER_GRACE,
                ))
            }
            Some(Ok(value)) => {
                if per_transaction && !self.end(&mut checkout, "COMMIT").await {
                    checkout.close();
                    // A write may have committed or not: the caller must not
                    // take it as done, and retrying is safe for every write.
                    return Err(error::not_ended(operation));
                }
                checkout.release();
                Ok(value)
            }
            Some(Err(err)) => {
                let timed_out = took >= self.limits.first_cancel(work);
                // Per transaction, the rollback ends the failed transaction
                // and proves the connection alive; otherwise a round trip does.
                let check = if per_transaction {
                    "ROLLBACK"
                } else {
                    "SELECT 1"
                };
                let answers = self.end(&mut checkout, check).await;
                if answers {
                    checkout.release();
                } else {
                    checkout.close();
                }
                Err(error::statement(operation, err, timed_out, answers))
            }
        }
    }

    /// Runs `sql` (ending the transaction, or checking the connection)
    /// within the connect timeout; whether it answered without error.
    async fn end(&self, checkout: &mut Checkout, sql: &str) -> bool {
        tokio::time::timeout(
            self.connect_timeout,
            checkout.connection().batch_execute(sql),
        )
        .await
        .is_ok_and(|done| done.is_ok())
    }
}
