-- Back to logging with the writer's privileges: a role that writes
-- session.sessions needs INSERT on session.changes again.
DROP TRIGGER sessions_refuse_identity_rewrite ON session.sessions;
DROP FUNCTION session.refuse_identity_rewrite();

GRANT EXECUTE ON FUNCTION
    session.log_inserted(), session.log_updated(), session.log_deleted(),
    session.log_truncated()
TO PUBLIC;

ALTER FUNCTION session.log_inserted() SECURITY INVOKER;
ALTER FUNCTION session.log_updated() SECURITY INVOKER;
ALTER FUNCTION session.log_deleted() SECURITY INVOKER;
ALTER FUNCTION session.log_truncated() SECURITY INVOKER;
