-- A change log in place of change notifications.
--
-- Every change to the set of active sessions is written to session.changes
-- by triggers, in the writing transaction, so it commits or rolls back with
-- the write. Followers read the log from a cursor; NOTIFY only wakes them,
-- with an empty payload they never read. PostgreSQL has no privileges on
-- NOTIFY, so anything a notification says could come from any role; a row
-- in this table can come only from a role with INSERT on it.
--
-- Ordering. Each row is stamped with its transaction's id (xid8) and read
-- in (xid, seq) order, and a reader takes as final only rows below the
-- oldest transaction still running, pg_snapshot_xmin(pg_current_snapshot()),
-- read in the same statement: every transaction below it has committed or
-- rolled back, so no row can appear there later. A sequence alone is not
-- enough: it is taken at insert, not at commit, so a slow transaction can
-- commit a row behind a cursor that already passed it.
--
-- Every function pins its search_path, so a role that can create objects
-- in a schema earlier on a caller's path cannot substitute its own.

DROP TRIGGER sessions_publish_truncated ON session.sessions;
DROP TRIGGER sessions_publish_revoked_by_delete ON session.sessions;
DROP TRIGGER sessions_publish_revoked_by_update ON session.sessions;
DROP TRIGGER sessions_publish_created ON session.sessions;
DROP FUNCTION session.publish_truncated();
DROP FUNCTION session.publish_revoked_by_delete();
DROP FUNCTION session.publish_revoked_by_update();
DROP FUNCTION session.publish_revoked(bytea[]);
DROP FUNCTION session.publish_created();

-- The domain's rules, in the schema too, so another writer cannot store a
-- session the domain would refuse: no control characters (Unicode's Cc,
-- U+0001-U+001F and U+007F-U+009F; text cannot hold U+0000) in the user
-- agent or the label, no nil account. NOT VALID: rows already stored are
-- not re-checked here; readers skip any the domain rejects.
ALTER TABLE session.sessions
    ADD CONSTRAINT sessions_user_agent_text CHECK (user_agent !~ '[\x01-\x1f\x7f-\x9f]') NOT VALID,
    ADD CONSTRAINT sessions_label_text CHECK (label !~ '[\x01-\x1f\x7f-\x9f]') NOT VALID,
    ADD CONSTRAINT sessions_account_id_not_nil
        CHECK (account_id <> '00000000-0000-0000-0000-000000000000') NOT VALID;

CREATE TABLE session.changes (
    xid         xid8        NOT NULL DEFAULT pg_current_xact_id(),
    seq         bigint      GENERATED ALWAYS AS IDENTITY,
    -- 'c': the session with this hash became active; 'r': it stopped being
    -- active; 't': the sessions table was truncated, reload everything.
    kind        "char"      NOT NULL,
    token_hash  bytea,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (xid, seq),
    CONSTRAINT changes_kind CHECK (kind IN ('c', 'r', 't')),
    CONSTRAINT changes_token_hash CHECK (
        CASE kind WHEN 't' THEN token_hash IS NULL ELSE octet_length(token_hash) = 32 END)
);

-- Pruning finds old entries by age.
CREATE INDEX changes_recorded_at_idx ON session.changes (recorded_at);

-- How far the log has been pruned: entries of transactions up to
-- `pruned_through` may be gone, so a cursor there must load everything again.
CREATE TABLE session.change_log_state (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    pruned_through xid8    NOT NULL
);
INSERT INTO session.change_log_state (pruned_through) VALUES ('0');

CREATE FUNCTION session.log_inserted() RETURNS trigger
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

-- Rows that left or joined the active set. A set difference rather than a
-- join of the two transition tables: PL/pgSQL keeps the plan made for the
-- first, one-row call, and a nested-loop join reused for a revoke-all of
-- thousands takes seconds. An UPDATE that rewrites a token hash is its old
-- hash revoked and its new one created.
CREATE FUNCTION session.log_updated() RETURNS trigger
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

-- The store never deletes, but a deleted active session is as gone as a
-- revoked one, and a cache that kept it would keep accepting its token.
CREATE FUNCTION session.log_deleted() RETURNS trigger
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

-- TRUNCATE fires no row trigger and has no transition table, so which
-- sessions went is unknown: readers load everything again.
CREATE FUNCTION session.log_truncated() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO session.changes (kind) VALUES ('t');
    PERFORM pg_notify('session_changes', '');
    RETURN NULL;
END
$$;

-- Emptying the log itself loses rows some reader has not read: every
-- cursor before this transaction expires.
CREATE FUNCTION session.log_emptied() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE session.change_log_state SET pruned_through = pg_current_xact_id();
    RETURN NULL;
END
$$;

CREATE TRIGGER sessions_log_inserted
    AFTER INSERT ON session.sessions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION session.log_inserted();

CREATE TRIGGER sessions_log_updated
    AFTER UPDATE ON session.sessions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION session.log_updated();

CREATE TRIGGER sessions_log_deleted
    AFTER DELETE ON session.sessions
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION session.log_deleted();

CREATE TRIGGER sessions_log_truncated
    AFTER TRUNCATE ON session.sessions
    FOR EACH STATEMENT
    EXECUTE FUNCTION session.log_truncated();

CREATE TRIGGER changes_log_emptied
    AFTER TRUNCATE ON session.changes
    FOR EACH STATEMENT
    EXECUTE FUNCTION session.log_emptied();
