DROP TRIGGER sessions_publish_truncated ON session.sessions;
DROP TRIGGER sessions_publish_revoked_by_delete ON session.sessions;
DROP TRIGGER sessions_publish_revoked_by_update ON session.sessions;
DROP TRIGGER sessions_publish_created ON session.sessions;
DROP FUNCTION session.publish_truncated();
DROP FUNCTION session.publish_revoked_by_delete();
DROP FUNCTION session.publish_revoked_by_update();
DROP FUNCTION session.publish_revoked(bytea[]);
DROP FUNCTION session.publish_created();
