-- Back to notifying from inside the writing transaction.

CREATE OR REPLACE FUNCTION session.log_inserted() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO session.changes (kind, token_hash)
    SELECT 'c', token_hash FROM new_rows WHERE revoked_at IS NULL ORDER BY id;
    IF FOUND THEN
        PERFORM pg_notify('session_changes', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION session.log_updated() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    logged boolean;
BEGIN
    INSERT INTO session.changes (kind, token_hash)
    SELECT 'r', token_hash FROM (
        SELECT id, token_hash FROM old_rows WHERE revoked_at IS NULL
        EXCEPT
        SELECT id, token_hash FROM new_rows WHERE revoked_at IS NULL
    ) AS left_active ORDER BY id;
    logged := FOUND;
    INSERT INTO session.changes (kind, token_hash)
    SELECT 'c', token_hash FROM (
        SELECT id, token_hash FROM new_rows WHERE revoked_at IS NULL
        EXCEPT
        SELECT id, token_hash FROM old_rows WHERE revoked_at IS NULL
    ) AS became_active ORDER BY id;
    IF logged OR FOUND THEN
        PERFORM pg_notify('session_changes', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION session.log_deleted() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO session.changes (kind, token_hash)
    SELECT 'r', token_hash FROM old_rows WHERE revoked_at IS NULL ORDER BY id;
    IF FOUND THEN
        PERFORM pg_notify('session_changes', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION session.log_truncated() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO session.changes (kind) VALUES ('t');
    PERFORM pg_notify('session_changes', '');
    RETURN NULL;
END
$$;
