//! SQLite directly through the store's own driver (diesel on the bundled
//! SQLite): the floors the store is measured against, and a fast bulk load.

use std::path::Path;

use anyhow::Context as _;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use session_core::token::TokenHash;
use session_sqlite::sessions;

/// A row as the store inserts it: every column bound, so the statement is
/// the store's own.
#[derive(Insertable)]
#[diesel(table_name = sessions)]
struct NewRow {
    id: Vec<u8>,
    account_id: Vec<u8>,
    token_hash: Vec<u8>,
    created_at: i64,
    revoked_at: Option<i64>,
    user_agent: Option<String>,
    ip: Option<String>,
    label: Option<String>,
}

/// The columns a bulk-loaded row sets; the others stay NULL.
#[derive(Insertable)]
#[diesel(table_name = sessions)]
struct LoadedRow {
    id: Vec<u8>,
    account_id: Vec<u8>,
    token_hash: Vec<u8>,
    created_at: i64,
}

/// Opens a connection to a file the store has created and migrated, with
/// the store's writer settings: write-ahead log (kept in the file), every
/// commit synced (`synchronous = FULL`), the same busy timeout.
pub(crate) fn connect(path: &Path) -> anyhow::Result<SqliteConnection> {
    let url = path
        .to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))?;
    let mut connection = SqliteConnection::establish(url)?;
    connection.batch_execute(
        "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; \
         PRAGMA synchronous = FULL; PRAGMA fullfsync = ON;",
    )?;
    Ok(connection)
}

/// The single-row INSERT the store issues for a new session without
/// metadata, with a fresh id, account and hash; its own transaction.
pub(crate) fn insert_one(
    connection: &mut SqliteConnection,
    rng: &mut fastrand::Rng,
) -> anyhow::Result<()> {
    let mut hash = vec![0u8; 32];
    rng.fill(&mut hash);
    diesel::insert_into(sessions::table)
        .values(&NewRow {
            id: uuid::Uuid::now_v7().as_bytes().to_vec(),
            account_id: uuid::Uuid::new_v4().as_bytes().to_vec(),
            token_hash: hash,
            created_at: now_micros(),
            revoked_at: None,
            user_agent: None,
            ip: None,
            label: None,
        })
        .execute(connection)?;
    Ok(())
}

/// Loads active sessions with these token hashes (fresh ids, random
/// accounts) in one transaction, in multi-row statements.
pub(crate) fn bulk_load(
    path: &Path,
    hashes: impl Iterator<Item = TokenHash>,
) -> anyhow::Result<()> {
    // Four values per row, well under SQLite's limit of bound values per statement.
    const ROWS_PER_STATEMENT: usize = 2_000;
    let mut connection = connect(path)?;
    // A load nobody else reads, of millions of rows in one transaction:
    // without a journal or syncs, and with a page cache that holds the
    // indexes (random hashes and accounts touch every page of theirs), it
    // takes minutes instead of the better part of an hour at 10 million.
    // The file is put back in WAL mode, as the store keeps it, after.
    connection.batch_execute(
        "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -2097152;",
    )?;
    let created_at = now_micros();
    let mut hashes = hashes.peekable();
    connection.immediate_transaction(|connection| {
        while hashes.peek().is_some() {
            let rows: Vec<LoadedRow> = hashes
                .by_ref()
                .take(ROWS_PER_STATEMENT)
                .map(|hash| LoadedRow {
                    id: uuid::Uuid::now_v7().as_bytes().to_vec(),
                    account_id: uuid::Uuid::new_v4().as_bytes().to_vec(),
                    token_hash: hash.as_bytes().to_vec(),
                    created_at,
                })
                .collect();
            diesel::insert_into(sessions::table)
                .values(&rows)
                .execute(connection)?;
        }
        Ok::<(), diesel::result::Error>(())
    })?;
    connection.batch_execute("PRAGMA journal_mode = WAL; ANALYZE;")?;
    Ok(())
}

/// Reads every active row, in pages of `page` by keyset over the id as the
/// warm does, decoding the columns but building no session; returns the
/// number of rows.
pub(crate) fn read_active(path: &Path, page: i64) -> anyhow::Result<usize> {
    type Columns = (
        Vec<u8>,
        Vec<u8>,
        Vec<u8>,
        i64,
        Option<i64>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let mut connection = connect(path)?;
    let mut after: Option<Vec<u8>> = None;
    let mut read = 0;
    loop {
        let mut query = sessions::table
            .filter(sessions::revoked_at.is_null())
            .select(sessions::all_columns)
            .order(sessions::id.asc())
            .limit(page)
            .into_boxed();
        if let Some(after) = after.take() {
            query = query.filter(sessions::id.gt(after));
        }
        let rows: Vec<Columns> = query.load(&mut connection)?;
        read += rows.len();
        match rows.last() {
            Some(last) if i64::try_from(rows.len())? == page => after = Some(last.0.clone()),
            _ => return Ok(read),
        }
    }
}

/// Now as the store keeps instants: microseconds since the Unix epoch.
fn now_micros() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000).unwrap_or(0)
}

/// Random token hashes, for sessions nobody will resolve.
pub(crate) fn random_hashes(count: usize, seed: u64) -> impl Iterator<Item = TokenHash> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..count).map(move |_| {
        let mut bytes = [0u8; 32];
        rng.fill(&mut bytes);
        TokenHash::from_bytes(bytes)
    })
}
