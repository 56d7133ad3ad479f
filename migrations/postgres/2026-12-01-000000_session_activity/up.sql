-- When each session was last seen (resolved), to the minute: a table of its
-- own, written in batches by the last-seen flush. Not a column of
-- session.sessions: an UPDATE there fires the change-log trigger and makes a
-- new row version every follower's reasoning about the log would see, per
-- flush; a row here is nothing the change log knows of.
--
-- No foreign key: `TRUNCATE session.sessions` (which the change log reports
-- as a reload) would then need CASCADE. The triggers below remove a
-- session's activity with it instead. A flush that inserts for a session
-- deleted by other SQL in the same instant may leave a row no session has;
-- nothing reads it, since reads go by the ids of existing sessions.
CREATE TABLE session.session_activity (
    session_id   uuid        PRIMARY KEY,
    last_seen_at timestamptz NOT NULL  -- the start of a minute; only moved forward
);

CREATE FUNCTION session.activity_follows_deletes() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM session.session_activity
    WHERE session_id IN (SELECT id FROM old_rows);
    RETURN NULL;
END
$$;

CREATE FUNCTION session.activity_follows_truncates() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    TRUNCATE session.session_activity;
    RETURN NULL;
END
$$;

CREATE TRIGGER sessions_activity_deleted
    AFTER DELETE ON session.sessions
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION session.activity_follows_deletes();

CREATE TRIGGER sessions_activity_truncated
    AFTER TRUNCATE ON session.sessions
    FOR EACH STATEMENT
    EXECUTE FUNCTION session.activity_follows_truncates();
