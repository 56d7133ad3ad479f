-- When each session was last seen (resolved), to the minute: a table of its
-- own, written in batches by the last-seen flush, so recording activity
-- never rewrites a session row.
--
--   session_id    the session's id, as in sessions.id.
--   last_seen_at  INTEGER microseconds since 1970-01-01T00:00:00Z (UTC), the
--                 start of the minute; only ever moved forward.
CREATE TABLE session_activity (
    session_id    BLOB    NOT NULL PRIMARY KEY CHECK (length(session_id) = 16),
    last_seen_at  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- A deleted session takes its activity with it. A trigger rather than a
-- foreign key, which SQLite enforces only with PRAGMA foreign_keys on.
CREATE TRIGGER session_activity_follows_deletes AFTER DELETE ON sessions
BEGIN
    DELETE FROM session_activity WHERE session_id = OLD.id;
END;
