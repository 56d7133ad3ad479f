-- The change log is written by its triggers alone, and what it cannot
-- express is refused.
--
-- Until now the triggers logged with the privileges of whoever wrote
-- session.sessions, so the service's role needed INSERT on session.changes,
-- and with it (for pruning) DELETE: that role could delete the entry of a
-- revocation and hide it from every cache, or insert entries of its own. The
-- logging functions now run as their owner, the role that ran the
-- migrations and owns the log, so a writer needs no privilege on the log at
-- all, and reading it takes SELECT alone.
--
-- Each function keeps the search_path the earlier migrations pinned
-- (pg_catalog, then pg_temp, which is searched last and never for functions
-- or operators), and names every table of ours with its schema, so running
-- as the owner lends the owner's rights to no object a caller could place on
-- the path. Running as the owner costs nothing measurable: a function with
-- a pinned search_path is already called through the wrapper that switches
-- the user, once per statement. Their bodies, and the columns they insert,
-- stay as 2026-11-30-000000_wake_after_commit left them; only log_updated
-- changes (see below).

ALTER FUNCTION session.log_inserted() SECURITY DEFINER;
ALTER FUNCTION session.log_deleted() SECURITY DEFINER;
ALTER FUNCTION session.log_truncated() SECURITY DEFINER;

-- Rows that left the active set are logged 'r'. Rows active after the
-- update that were not active before, or whose user agent, IP or label
-- changed, are logged 'c': the reader joins the row as it is then and the
-- caches replace what they held for that hash, so metadata rewritten by
-- other SQL does not stay stale in them. One set difference over the whole
-- row's cached part does both, and an update that changes nothing a cache
-- holds (a revocation of an already revoked row, a label set to itself)
-- logs nothing. Set differences rather than joins of the two transition
-- tables: PL/pgSQL keeps the plan made for the first, one-row call, and a
-- nested-loop join reused for a revoke-all of thousands takes seconds.
--
-- With the trigger below, id and token_hash never change and no row becomes
-- active again, so 'c' now means a metadata rewrite; comparing by (id,
-- token_hash) still keeps the log right if that trigger is ever disabled.
CREATE OR REPLACE FUNCTION session.log_updated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO session.changes (kind, token_hash)
    SELECT 'r', token_hash FROM (
        SELECT id, token_hash FROM old_rows WHERE revoked_at IS NULL
        EXCEPT
        SELECT id, token_hash FROM new_rows WHERE revoked_at IS NULL
    ) AS left_active ORDER BY id;
    INSERT INTO session.changes (kind, token_hash)
    SELECT 'c', token_hash FROM (
        SELECT id, token_hash, user_agent, ip, label FROM new_rows WHERE revoked_at IS NULL
        EXCEPT
        SELECT id, token_hash, user_agent, ip, label FROM old_rows WHERE revoked_at IS NULL
    ) AS active_and_changed ORDER BY id;
    RETURN NULL;
END
$$;

-- A trigger function cannot be called directly ("trigger functions can only
-- be called as triggers"), and firing a trigger checks no EXECUTE privilege,
-- so the service's writes need none. But CREATE TRIGGER does check it, and
-- every role holds EXECUTE through PUBLIC by default: a role with USAGE on
-- the schema could attach these functions to a table of its own (a
-- temporary one needs no other grant) and, now that they run as the owner,
-- write 'c', 'r' or 't' entries through them at will. So only the owner
-- may use them.
REVOKE EXECUTE ON FUNCTION
    session.log_inserted(), session.log_updated(), session.log_deleted(),
    session.log_truncated()
FROM PUBLIC;

-- A session's identity is fixed at creation. The log names a session by its
-- token hash alone, so a rewritten id, account or creation time is logged
-- as nothing: every cache keeps answering with the old values, and a
-- revoke-all of the old account misses the session. A rewritten token hash
-- is logged (the old one revoked, the new one created), but it hands an
-- existing session, its id and its history to the holder of another token.
-- A revocation is final (the column is "set once, never rewritten"):
-- undoing one would bring back a token every cache and tombstone has let
-- go. So an UPDATE that changes id, account_id, token_hash or created_at,
-- or a revoked_at once set, is refused, whoever runs it. The store only
-- ever sets revoked_at where it is NULL. The caller's privileges suffice:
-- the function only raises.
CREATE FUNCTION session.refuse_identity_rewrite() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS DISTINCT FROM OLD.revoked_at THEN
        RAISE EXCEPTION 'session % is revoked, and a revocation is never undone or rewritten',
                OLD.id
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'sessions_revoked_at_set_once',
                  SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME, COLUMN = 'revoked_at',
                  HINT = 'Create a new session instead.';
    END IF;
    RAISE EXCEPTION 'session %: its % cannot be rewritten', OLD.id,
            array_to_string(ARRAY[
                CASE WHEN NEW.id IS DISTINCT FROM OLD.id THEN 'id' END,
                CASE WHEN NEW.account_id IS DISTINCT FROM OLD.account_id THEN 'account_id' END,
                CASE WHEN NEW.token_hash IS DISTINCT FROM OLD.token_hash THEN 'token_hash' END,
                CASE WHEN NEW.created_at IS DISTINCT FROM OLD.created_at THEN 'created_at' END
            ], ', ')
        USING ERRCODE = 'check_violation',
              CONSTRAINT = 'sessions_identity_unchanged',
              SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME,
              HINT = 'Revoke the session and create a new one.';
END
$$;

-- The WHEN clause keeps the function out of every allowed update (a
-- revoke-all of thousands evaluates only the condition per row).
CREATE TRIGGER sessions_refuse_identity_rewrite
    BEFORE UPDATE ON session.sessions
    FOR EACH ROW
    WHEN (NEW.id IS DISTINCT FROM OLD.id
       OR NEW.account_id IS DISTINCT FROM OLD.account_id
       OR NEW.token_hash IS DISTINCT FROM OLD.token_hash
       OR NEW.created_at IS DISTINCT FROM OLD.created_at
       OR (OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS DISTINCT FROM OLD.revoked_at))
    EXECUTE FUNCTION session.refuse_identity_rewrite();
