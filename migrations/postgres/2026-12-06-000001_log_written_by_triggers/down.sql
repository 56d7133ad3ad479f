-- Back to logging with the writer's privileges: a role that writes
-- session.sessions needs INSERT on session.changes again.
DROP TRIGGER sessions_refuse_identity_rewrite ON session.sessions;
DROP FUNCTION session.refuse_identity_rewrite();

GRANT EXECUTE ON FUNCTION
    session.log_inserted(), session.log_updated(), session.log_deleted(),
    session.log_truncated()
TO PUBLIC;

-- As 2026-11-30-000000_wake_after_commit left it: metadata rewrites unlogged.
CREATE OR REPLACE FUNCTION session.log_updated() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
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

ALTER FUNCTION session.log_inserted() SECURITY INVOKER;
ALTER FUNCTION session.log_deleted() SECURITY INVOKER;
ALTER FUNCTION session.log_truncated() SECURITY INVOKER;
