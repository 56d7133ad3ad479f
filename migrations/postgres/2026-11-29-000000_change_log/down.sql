-- Back to change notifications: the previous migration's triggers.
DROP TRIGGER changes_log_emptied ON session.changes;
DROP TRIGGER sessions_log_truncated ON session.sessions;
DROP TRIGGER sessions_log_deleted ON session.sessions;
DROP TRIGGER sessions_log_updated ON session.sessions;
DROP TRIGGER sessions_log_inserted ON session.sessions;
DROP FUNCTION session.log_emptied();
DROP FUNCTION session.log_truncated();
DROP FUNCTION session.log_deleted();
DROP FUNCTION session.log_updated();
DROP FUNCTION session.log_inserted();
DROP TABLE session.change_log_state;
DROP TABLE session.changes;
ALTER TABLE session.sessions
    DROP CONSTRAINT sessions_account_id_not_nil,
    DROP CONSTRAINT sessions_label_text,
    DROP CONSTRAINT sessions_user_agent_text;
CREATE FUNCTION session.publish_created() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('session_changes', json_build_object(
        'v', 1,
        'op', 'created',
        'id', NEW.id,
        'account_id', NEW.account_id,
        'token_hash', encode(NEW.token_hash, 'hex'),
        'created_at_us', (extract(epoch FROM NEW.created_at) * 1000000)::bigint,
        'user_agent', NEW.user_agent,
        'ip', host(NEW.ip),
        'label', NEW.label)::text);
    RETURN NULL;
END
$$;

-- Sends the token hashes of sessions that stopped being active, in chunks
-- small enough for one notification each.
CREATE FUNCTION session.publish_revoked(token_hashes bytea[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    payload text;
BEGIN
    FOR payload IN
        SELECT json_build_object(
                   'v', 1,
                   'op', 'revoked',
                   'token_hashes', json_agg(encode(hash, 'hex') ORDER BY position))::text
        FROM unnest(token_hashes) WITH ORDINALITY AS revoked(hash, position)
        GROUP BY (position - 1) / 100
        ORDER BY (position - 1) / 100
    LOOP
        PERFORM pg_notify('session_changes', payload);
    END LOOP;
END
$$;

-- Once per statement, so a revoke-all of thousands of sessions is a few
-- notifications, not thousands. Only rows that went from active to revoked
-- count: revoking a revoked session changes nothing and publishes nothing.
-- A set difference rather than a join of the two transition tables: PL/pgSQL
-- keeps the plan made for the first, one-row call, and a nested-loop join
-- reused for a revoke-all of thousands takes seconds.
CREATE FUNCTION session.publish_revoked_by_update() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    token_hashes bytea[];
BEGIN
    SELECT array_agg(token_hash ORDER BY id) INTO token_hashes
    FROM (
        SELECT id, token_hash FROM new_rows WHERE revoked_at IS NOT NULL
        EXCEPT
        SELECT id, token_hash FROM old_rows WHERE revoked_at IS NOT NULL
    ) AS newly_revoked;
    IF token_hashes IS NOT NULL THEN
        PERFORM session.publish_revoked(token_hashes);
    END IF;
    RETURN NULL;
END
$$;

-- The store never deletes, but a deleted active session is as gone as a
-- revoked one, and a cache that kept it would keep accepting its token.
CREATE FUNCTION session.publish_revoked_by_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    token_hashes bytea[];
BEGIN
    SELECT array_agg(token_hash ORDER BY id) INTO token_hashes
    FROM old_rows
    WHERE revoked_at IS NULL;
    IF token_hashes IS NOT NULL THEN
        PERFORM session.publish_revoked(token_hashes);
    END IF;
    RETURN NULL;
END
$$;

-- TRUNCATE fires no row trigger and has no transition table, so which
-- sessions went is unknown: listeners are told to load everything again.
CREATE FUNCTION session.publish_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('session_changes', json_build_object('v', 1, 'op', 'truncated')::text);
    RETURN NULL;
END
$$;

-- A session inserted already revoked was never active: nothing to publish.
CREATE TRIGGER sessions_publish_created
    AFTER INSERT ON session.sessions
    FOR EACH ROW WHEN (NEW.revoked_at IS NULL)
    EXECUTE FUNCTION session.publish_created();

CREATE TRIGGER sessions_publish_revoked_by_update
    AFTER UPDATE ON session.sessions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION session.publish_revoked_by_update();

CREATE TRIGGER sessions_publish_revoked_by_delete
    AFTER DELETE ON session.sessions
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION session.publish_revoked_by_delete();

CREATE TRIGGER sessions_publish_truncated
    AFTER TRUNCATE ON session.sessions
    FOR EACH STATEMENT
    EXECUTE FUNCTION session.publish_truncated();
