-- Wake readers after the write commits, not from inside it.
--
-- A transaction that sent NOTIFY takes, at commit, a lock PostgreSQL holds
-- for the whole server until the transaction ends, across its WAL flush:
-- every write paid for it, notifying commits could not share a flush, and
-- creates ran at 0.35 of a plain INSERT on a durable server
-- (docs/BENCHMARKS.md). The triggers now only log; the store that wrote
-- sends one NOTIFY after its commit, coalesced, from a statement of its own.
-- A write made by other SQL wakes no one: readers find it at their next poll.

CREATE OR REPLACE FUNCTION session.log_inserted() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO session.changes (kind, token_hash)
    SELECT 'c', token_hash FROM new_rows WHERE revoked_at IS NULL ORDER BY id;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION session.log_updated() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO session.changes (kind, token_hash)
    SELECT 'r', token_hash FROM (
        SELECT id, token_hash FROM old_rows WHERE revoked_at IS NULL
        EXCEPT
        SELECT id, token_hash FROM new_rows WHERE revoked_at IS NULL
    ) AS left_active ORDER BY id;
    INSERT INTO session.changes (kind, token_hash)
    SELECT 'c', token_hash FROM (
        SELECT id, token_hash FROM new_rows WHERE revoked_at IS NULL
        EXCEPT
        SELECT id, token_hash FROM old_rows WHERE revoked_at IS NULL
    ) AS became_active ORDER BY id;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION session.log_deleted() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO session.changes (kind, token_hash)
    SELECT 'r', token_hash FROM old_rows WHERE revoked_at IS NULL ORDER BY id;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION session.log_truncated() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO session.changes (kind) VALUES ('t');
    RETURN NULL;
END
$$;
