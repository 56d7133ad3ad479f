//! PostgreSQL directly through the store's own driver (diesel-async on
//! tokio-postgres): the floors the store is measured against, and a fast
//! bulk load.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use ipnet::IpNet;
use session_postgres::sessions;
use time::OffsetDateTime;
use tokio_postgres::NoTls;
use uuid::Uuid;

/// A row as the store inserts it: every column bound, so the statement is
/// the store's own.
#[derive(Insertable)]
#[diesel(table_name = sessions)]
struct NewRow<'a> {
    id: Uuid,
    account_id: Uuid,
    token_hash: &'a [u8],
    created_at: OffsetDateTime,
    revoked_at: Option<OffsetDateTime>,
    user_agent: Option<&'a str>,
    ip: Option<IpNet>,
    label: Option<&'a str>,
}

/// A connection of the floor: the driver without a pool.
pub(crate) async fn connect(url: &str) -> anyhow::Result<AsyncPgConnection> {
    Ok(AsyncPgConnection::establish(url).await?)
}

/// The single-row INSERT the store issues for a new session without
/// metadata, with a fresh id, account and hash.
pub(crate) async fn insert_one(
    connection: &mut AsyncPgConnection,
    rng: &mut fastrand::Rng,
) -> anyhow::Result<()> {
    let mut hash = [0u8; 32];
    rng.fill(&mut hash);
    diesel::insert_into(sessions::table)
        .values(NewRow {
            id: Uuid::now_v7(),
            account_id: Uuid::new_v4(),
            token_hash: &hash,
            created_at: OffsetDateTime::now_utc(),
            revoked_at: None,
            user_agent: None,
            ip: None,
            label: None,
        })
        .execute(connection)
        .await?;
    Ok(())
}

/// Every column of a row, decoded.
type Columns = (
    Uuid,
    Uuid,
    Vec<u8>,
    OffsetDateTime,
    Option<OffsetDateTime>,
    Option<String>,
    Option<IpNet>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// The point read a service without a cache would make for every token:
/// the active session with this hash (by the table's unique index on the
/// hash), every column decoded, as the store's `find_active_by_hash` reads
/// it. Whether there is one.
pub(crate) async fn find_active_by_hash(
    connection: &mut AsyncPgConnection,
    hash: &[u8],
) -> anyhow::Result<bool> {
    let row: Option<Columns> = sessions::table
        .filter(sessions::token_hash.eq(hash))
        .filter(sessions::revoked_at.is_null())
        .select(sessions::all_columns)
        .get_result(connection)
        .await
        .optional()?;
    Ok(row.is_some())
}

/// Reads every active row, in pages of `page` by keyset over the id as the
/// warm does, decoding the columns but building no session; returns the
/// number of rows.
pub(crate) async fn read_active(url: &str, page: i64) -> anyhow::Result<usize> {
    let mut connection = connect(url).await?;
    let mut after: Option<Uuid> = None;
    let mut read = 0;
    loop {
        let active = sessions::table
            .filter(sessions::revoked_at.is_null())
            .order(sessions::id.asc())
            .limit(page)
            .select(sessions::all_columns);
        let rows: Vec<Columns> = match after {
            None => active.load(&mut connection).await?,
            Some(after) => {
                active
                    .filter(sessions::id.gt(after))
                    .load(&mut connection)
                    .await?
            }
        };
        read += rows.len();
        match rows.last() {
            Some(last) if i64::try_from(rows.len())? == page => after = Some(last.0),
            _ => return Ok(read),
        }
    }
}

/// Connections of the database listening for the change log's wake-ups.
pub(crate) async fn listening(client: &tokio_postgres::Client) -> anyhow::Result<i64> {
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND query = $1",
            &[&format!("LISTEN {}", session_postgres::CHANGES_CHANNEL)],
        )
        .await?;
    Ok(row.get(0))
}

/// [`listening`], on a connection of its own.
pub(crate) async fn listening_connections(url: &str) -> anyhow::Result<i64> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    let driver = tokio::spawn(connection);
    let listening = listening(&client).await;
    drop(client);
    driver.await??;
    listening
}

/// The id [`bulk_load`] gives its `i`th session (from 1).
pub(crate) fn bulk_loaded_id(i: usize) -> session_core::SessionId {
    // 00000000-0000-7000-8000-<i as 12 hex digits>, as the load writes it.
    let uuid = Uuid::from_u128((0x7000 << 64) | (0x8000 << 48) | i as u128);
    session_core::SessionId::from_uuid(uuid)
}

/// Loads `count` active sessions in one statement on the server: distinct
/// ids in increasing order (keyset paging needs no more), random accounts,
/// distinct 32-byte hashes. The table's triggers are off meanwhile: nobody
/// listens yet, and a notification per row would only slow the load. Then
/// analyzes the table, as autovacuum would have by the time a service
/// restarts.
pub(crate) async fn bulk_load(url: &str, count: usize) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    let driver = tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "BEGIN; \
             ALTER TABLE session.sessions DISABLE TRIGGER USER; \
             INSERT INTO session.sessions (id, account_id, token_hash, created_at) \
             SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, \
                    gen_random_uuid(), sha256(int8send(i)), now() \
             FROM generate_series(1, {count}) AS i; \
             ALTER TABLE session.sessions ENABLE TRIGGER USER; \
             COMMIT;"
        ))
        .await?;
    // On its own: VACUUM cannot run inside a transaction.
    client
        .batch_execute("VACUUM ANALYZE session.sessions")
        .await?;
    drop(client);
    driver.await??;
    Ok(())
}
