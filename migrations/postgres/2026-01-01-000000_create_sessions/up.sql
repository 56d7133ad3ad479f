-- The tables live in their own schema so they can share the host application's database.
CREATE SCHEMA IF NOT EXISTS session;

-- One row per issued session. Only the SHA-256 of the token is stored, never the token.
CREATE TABLE session.sessions (
    id         uuid        PRIMARY KEY, -- UUIDv7: sorts by creation time
    account_id uuid        NOT NULL,
    token_hash bytea       NOT NULL,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz,             -- NULL while active; set once, never rewritten
    user_agent text,
    ip         inet,
    label      text,
    -- Also the index that resolves a token hash to its session.
    CONSTRAINT sessions_token_hash_key UNIQUE (token_hash),
    CONSTRAINT sessions_token_hash_length CHECK (octet_length(token_hash) = 32),
    -- The same limits the domain enforces, so no other writer can store what it would reject.
    CONSTRAINT sessions_user_agent_length CHECK (octet_length(user_agent) BETWEEN 1 AND 512),
    CONSTRAINT sessions_label_length CHECK (octet_length(label) BETWEEN 1 AND 128)
);

-- An account's sessions, newest first: listing and revoke-all.
CREATE INDEX sessions_account_created_idx
    ON session.sessions (account_id, created_at DESC, id DESC);

-- Active sessions in id order: warming walks it a page at a time, and it holds
-- only active rows, so revoked history does not slow warming down.
CREATE INDEX sessions_active_id_idx
    ON session.sessions (id)
    WHERE revoked_at IS NULL;
