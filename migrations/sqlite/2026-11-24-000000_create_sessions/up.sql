-- Sessions in SQLite: the same columns and meaning as the PostgreSQL schema,
-- in SQLite's types. STRICT makes SQLite enforce the declared column types
-- instead of storing whatever it is given.
--
--   id, account_id  16-byte BLOBs, the UUID's bytes in big-endian order, so
--                   SQLite's memcmp ordering is UUID order; for UUIDv7 session
--                   ids that is creation order, which keyset paging relies on.
--   token_hash      the 32-byte SHA-256 of the token; never the token itself.
--   created_at,     INTEGER microseconds since 1970-01-01T00:00:00Z (UTC):
--   revoked_at      compact, exact at the precision every store keeps, and
--                   ordered like the instants they stand for.
--   ip              TEXT, the address in its canonical text form.
--   user_agent,     TEXT; the byte limits mirror session-core's validation.
--   label
CREATE TABLE sessions (
    id          BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    account_id  BLOB    NOT NULL CHECK (length(account_id) = 16),
    token_hash  BLOB    NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER,
    user_agent  TEXT    CHECK (length(CAST(user_agent AS BLOB)) BETWEEN 1 AND 512),
    ip          TEXT    CHECK (length(ip) BETWEEN 2 AND 45),
    label       TEXT    CHECK (length(CAST(label AS BLOB)) BETWEEN 1 AND 128)
) STRICT;

-- Lookup by hash is served by the UNIQUE constraint's index.

-- An account's sessions, newest first.
CREATE INDEX sessions_account_newest_first
    ON sessions (account_id, created_at DESC, id DESC);

-- Active sessions in id order, for warming the cache page by page.
CREATE INDEX sessions_active_by_id
    ON sessions (id) WHERE revoked_at IS NULL;
