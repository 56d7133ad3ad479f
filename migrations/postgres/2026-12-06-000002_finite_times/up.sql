-- Instants the domain can hold, in the schema too: years 0001 to 9999, UTC
-- (session_core::port::store::stored_instant says why those). PostgreSQL
-- also stores 'infinity', '-infinity' and years from 4713 BC to 294276,
-- which no reader can turn into a session: refused here, so another writer
-- cannot store them. Comparisons with an infinity are false, so the
-- infinities fail these checks; NULL (an active session's revoked_at)
-- passes.
--
-- NOT VALID, like the checks of 2026-11-29-000000_change_log: rows already
-- stored are not re-checked here (readers skip and count any the domain
-- rejects), but every new row version is, so an UPDATE of such a row, a
-- revocation included, is refused until the row is repaired or deleted.
ALTER TABLE session.sessions
    ADD CONSTRAINT sessions_created_at_range CHECK (
        created_at BETWEEN '0001-01-01 00:00:00+00' AND '9999-12-31 23:59:59.999999+00'
    ) NOT VALID,
    ADD CONSTRAINT sessions_revoked_at_range CHECK (
        revoked_at BETWEEN '0001-01-01 00:00:00+00' AND '9999-12-31 23:59:59.999999+00'
    ) NOT VALID;

ALTER TABLE session.session_activity
    ADD CONSTRAINT session_activity_last_seen_at_range CHECK (
        last_seen_at BETWEEN '0001-01-01 00:00:00+00' AND '9999-12-31 23:59:59.999999+00'
    ) NOT VALID;
