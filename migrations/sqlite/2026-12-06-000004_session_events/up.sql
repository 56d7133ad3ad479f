-- The events feed (session_core::port::events): one row per session
-- created and per session revoked, written by triggers in the transaction
-- that writes the session, whatever SQL writes it.
--
--   position    INTEGER PRIMARY KEY AUTOINCREMENT: SQLite has one writer at
--               a time, so positions are taken in commit order, and
--               AUTOINCREMENT never hands out a position again, even after
--               the newest events are pruned. A rolled-back write takes
--               none (sqlite_sequence is rolled back with it).
--   kind        'created' or 'revoked'.
--   session_id, the session's and account's 16 bytes, as in sessions.
--   account_id
--   at          created_at or revoked_at, microseconds as in sessions.
--   reason      the revocation reason; NULL for a creation.
--
-- Never a token or a token hash.
CREATE TABLE session_events (
    position    INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT    NOT NULL CHECK (kind IN ('created', 'revoked')),
    session_id  BLOB    NOT NULL CHECK (length(session_id) = 16),
    account_id  BLOB    NOT NULL CHECK (length(account_id) = 16),
    at          INTEGER NOT NULL,
    reason      TEXT
) STRICT;

-- The feed's state, one row: its history (a random id chosen once, so a
-- cursor of another database is refused rather than answered with other
-- events under the same positions) and the newest position pruned (a
-- cursor before it may have lost events).
CREATE TABLE session_event_log (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    history         INTEGER NOT NULL,
    pruned_through  INTEGER NOT NULL DEFAULT 0
) STRICT;
INSERT INTO session_event_log (id, history) VALUES (1, random());

CREATE TRIGGER session_events_created AFTER INSERT ON sessions
WHEN NEW.revoked_at IS NULL
BEGIN
    INSERT INTO session_events (kind, session_id, account_id, at)
    VALUES ('created', NEW.id, NEW.account_id, NEW.created_at);
END;

CREATE TRIGGER session_events_revoked AFTER UPDATE OF revoked_at ON sessions
WHEN OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL
BEGIN
    INSERT INTO session_events (kind, session_id, account_id, at, reason)
    VALUES ('revoked', NEW.id, NEW.account_id, NEW.revoked_at, NEW.revocation_reason);
END;
