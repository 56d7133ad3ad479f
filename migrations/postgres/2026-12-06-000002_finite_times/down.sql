ALTER TABLE session.session_activity
    DROP CONSTRAINT session_activity_last_seen_at_range;
ALTER TABLE session.sessions
    DROP CONSTRAINT sessions_revoked_at_range,
    DROP CONSTRAINT sessions_created_at_range;
