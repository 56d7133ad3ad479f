-- Instants the domain can hold, in the schema too: years 0001 to 9999, UTC,
-- as microseconds since 1970-01-01T00:00:00Z from -62135596800000000
-- (0001-01-01T00:00:00Z) to 253402300799999999 (9999-12-31T23:59:59.999999Z);
-- session_core::port::store::stored_instant says why those. The same
-- bounds as PostgreSQL's checks (migration 2026-12-06-000002_finite_times).
--
-- Triggers, not CHECKs: SQLite adds a CHECK only by rebuilding the table.
-- Like PostgreSQL's NOT VALID checks they refuse new values and leave rows
-- already stored alone (readers skip and count any the domain rejects);
-- unlike them, an UPDATE is checked only for the column it sets, so a
-- revocation of such a row still succeeds. NULL passes: NOT BETWEEN is NULL.
CREATE TRIGGER sessions_times_in_range_on_insert
BEFORE INSERT ON sessions
WHEN NEW.created_at NOT BETWEEN -62135596800000000 AND 253402300799999999
  OR NEW.revoked_at NOT BETWEEN -62135596800000000 AND 253402300799999999
BEGIN
    SELECT RAISE(ABORT, 'sessions: created_at and revoked_at must be in years 0001 to 9999');
END;

CREATE TRIGGER sessions_created_at_in_range_on_update
BEFORE UPDATE OF created_at ON sessions
WHEN NEW.created_at NOT BETWEEN -62135596800000000 AND 253402300799999999
BEGIN
    SELECT RAISE(ABORT, 'sessions: created_at must be in years 0001 to 9999');
END;

CREATE TRIGGER sessions_revoked_at_in_range_on_update
BEFORE UPDATE OF revoked_at ON sessions
WHEN NEW.revoked_at NOT BETWEEN -62135596800000000 AND 253402300799999999
BEGIN
    SELECT RAISE(ABORT, 'sessions: revoked_at must be in years 0001 to 9999');
END;

CREATE TRIGGER session_activity_last_seen_at_in_range_on_insert
BEFORE INSERT ON session_activity
WHEN NEW.last_seen_at NOT BETWEEN -62135596800000000 AND 253402300799999999
BEGIN
    SELECT RAISE(ABORT, 'session_activity: last_seen_at must be in years 0001 to 9999');
END;

CREATE TRIGGER session_activity_last_seen_at_in_range_on_update
BEFORE UPDATE OF last_seen_at ON session_activity
WHEN NEW.last_seen_at NOT BETWEEN -62135596800000000 AND 253402300799999999
BEGIN
    SELECT RAISE(ABORT, 'session_activity: last_seen_at must be in years 0001 to 9999');
END;
